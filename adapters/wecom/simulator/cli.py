"""`finflow wecom simulator`: the simulated WeCom as its own process, and the in-process one `finflow up` starts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

import click

from adapters.wecom.simulator.org import demo_org
from adapters.wecom.simulator.server import Simulator


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8010, show_default=True, type=click.IntRange(0, 65535))
@click.option("--callback-url", default="http://127.0.0.1:8000/wecom/callback", show_default=True,
              help="finflow's /wecom/callback, where clicks and contact changes are sent")
@click.option("--org", "org_source", default="demo", show_default=True,
              help="'demo' (finflow's demo company) or a JSON file in WeCom's shapes")
@click.option("--rate-limit", type=click.IntRange(1), default=None, help="message/send per second before 45009")
def simulator(host: str, port: int, callback_url: str, org_source: str, rate_limit: int | None) -> None:
    """Serve a simulated WeCom until Ctrl-C and print the settings that point finflow at it."""
    sim = Simulator(_org(org_source), callback_url=callback_url, host=host, port=port,
                    rate_limit_per_second=rate_limit)
    for name, value in sim.config(os.environ.get("FINFLOW_PUBLIC_URL", "http://127.0.0.1:8000")).env().items():
        click.echo(f"export {name}={value}")
    click.echo(f"WeCom simulator on {sim.url}/ (every user's WeCom inbox)")
    with contextlib.suppress(KeyboardInterrupt):
        sim.server.serve_forever()


def _org(source: str) -> dict:
    if source == "demo":
        return demo_org()
    path = Path(source)
    if not path.is_file():
        raise click.BadParameter(f"{source} is neither 'demo' nor a file", param_hint="--org")
    try:
        org = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise click.BadParameter(f"{source} is not JSON: {exc}", param_hint="--org") from exc
    shaped = isinstance(org, dict) and all(isinstance(org.get(k), list) for k in ("departments", "users"))
    if not shaped:
        raise click.BadParameter("the org needs 'departments' and 'users' lists", param_hint="--org")
    return org


def start_for_demo(finflow_port: int) -> Simulator | None:
    """`finflow up` without a real corp: a simulator with the demo company on FINFLOW_WECOM_SIM_PORT (8010),
    and this process's FINFLOW_WECOM_* pointed at it. None when a corp is configured or FINFLOW_WECOM_SIM=0."""
    if os.environ.get("FINFLOW_WECOM_CORP_ID") or os.environ.get("FINFLOW_WECOM_SIM", "1") == "0":
        return None
    port = int(os.environ.get("FINFLOW_WECOM_SIM_PORT", "8010"))
    finflow = f"http://127.0.0.1:{finflow_port}"
    sim = Simulator(demo_org(), callback_url=f"{finflow}/wecom/callback", port=port)
    os.environ.update(sim.config(os.environ.get("FINFLOW_PUBLIC_URL", finflow)).env())
    threading.Thread(target=sim.server.serve_forever, daemon=True, name="wecom-simulator").start()
    return sim
