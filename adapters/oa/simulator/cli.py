"""`finflow oa simulator`: the simulated E9 as its own process, and the in-process one `finflow up` starts."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters.oa.simulator.server import OASimulator

DEMO_SECRET = "demo-oa-callback-secret"


def demo_env(sim: OASimulator, key_file: Path, finflow_url: str) -> dict[str, str]:
    """The FINFLOW_OA_* settings that point finflow at `sim` (its key pair made once, in the data folder)."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
    return {"FINFLOW_OA_BASE_URL": sim.url, "FINFLOW_OA_APPID": sim.appid,
            "FINFLOW_OA_PRIVATE_KEY_FILE": str(key_file), "FINFLOW_OA_CALLBACK_SECRET": sim.callback_secret}


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8020, show_default=True, type=click.IntRange(0, 65535))
@click.option("--callback-url", default="http://127.0.0.1:8000/oa/callback", show_default=True,
              help="finflow's /oa/callback, which the simulated node Action calls")
@click.option("--secret", default=DEMO_SECRET, show_default=True, help="the callback's HMAC secret")
def simulator(host: str, port: int, callback_url: str, secret: str) -> None:
    """Serve a simulated 泛微 E9 until Ctrl-C and print the settings that point finflow at it."""
    sim = OASimulator(callback_url=callback_url, callback_secret=secret, host=host, port=port)
    key_file = Path(os.environ.get("FINFLOW_DATA_DIR", "var")) / "oa-client-key.pem"
    for name, value in demo_env(sim, key_file, callback_url).items():
        click.echo(f"export {name}={value}")
    click.echo(f"E9 simulator on {sim.url}/ (requests and their current nodes; approve a node \"in OA\")")
    with contextlib.suppress(KeyboardInterrupt):
        sim.server.serve_forever()


def start_for_demo(finflow_port: int) -> OASimulator | None:
    """`finflow up` without a real OA: an E9 simulator with the demo workflows on FINFLOW_OA_SIM_PORT (8020),
    this process's FINFLOW_OA_* pointed at it and the demo users linked. None when an OA is configured or
    FINFLOW_OA_SIM=0."""
    if os.environ.get("FINFLOW_OA_BASE_URL") or os.environ.get("FINFLOW_OA_SIM", "1") == "0":
        return None
    from adapters.oa.config import OAConfig
    from adapters.oa.users import sync_links

    finflow = f"http://127.0.0.1:{finflow_port}"
    sim = OASimulator(callback_url=f"{finflow}/oa/callback", callback_secret=DEMO_SECRET,
                      port=int(os.environ.get("FINFLOW_OA_SIM_PORT", "8020")))
    key_file = Path(os.environ.get("FINFLOW_DATA_DIR", "var")) / "oa-client-key.pem"
    os.environ.update(demo_env(sim, key_file, finflow))
    threading.Thread(target=sim.server.serve_forever, daemon=True, name="oa-simulator").start()
    sync_links(OAConfig.from_env())
    return sim
