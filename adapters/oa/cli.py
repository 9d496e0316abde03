"""`finflow oa …`: reconciliation, user links, a poll now, and the E9 simulator for demos."""

from __future__ import annotations

import json
from pathlib import Path

import click

from adapters.oa.config import OAConfig

LABELS = {"missing_request": "缺少 OA 请求", "node_mismatch": "节点不一致", "status_mismatch": "状态不一致",
          "finflow_only": "仅 finflow 有的决定", "oa_only": "仅 OA 有的决定"}


@click.group()
def oa() -> None:
    """OA (泛微 E9): reconciliation, user links, simulator."""


def _config() -> OAConfig:
    try:
        config = OAConfig.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if config is None:
        raise click.ClickException("OA 未配置：请设置 FINFLOW_OA_BASE_URL 等（见 README 的 OA 一节）")
    return config


@oa.command("reconcile")
@click.option("--fix", is_flag=True, help="replay what is safely replayable (undelivered rows, closing ended twins, "
                                           "decisions in OA's log)")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="also write the report as JSON to this file ('-': standard output only)")
def reconcile_command(fix: bool, json_file: Path | None) -> None:
    """Compare every open instance with its OA twin; print a table of what differs."""
    from adapters.oa import reconcile

    _config()
    report = reconcile.reconcile(fix=fix)
    data = {"run_id": report.run_id, "fix": fix, "counts": report.counts, "seconds": round(report.seconds, 3),
            "findings": report.findings}
    if json_file is not None and str(json_file) == "-":
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        return
    click.echo(render(report))
    if json_file is not None:
        json_file.write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        click.echo(f"JSON report: {json_file}")


def render(report) -> str:
    lines = [f"{'实例':<38}{'单号':<22}{'问题':<16}{'已修复':<8}说明"]
    lines += [f"{f['instance_id']:<38}{(f['business_key'] or ''):<22}{LABELS[f['kind']]:<16}"
              f"{'是' if f['fixed'] else '否':<8}{f['detail']}" for f in report.findings]
    counts = report.counts
    summary = "，".join(f"{LABELS[k]} {counts[k]}" for k in LABELS)
    lines.append(f"共检查 {counts['checked']} 个实例，用时 {report.seconds:.2f} 秒：{summary}；"
                 f"已修复 {counts['fixed']}")
    return "\n".join(lines)


@oa.command("users")
@click.option("--sync", "sync_", is_flag=True, help="link every finflow user whose id is an OA login name (E9 HRM)")
@click.option("--link", "links", multiple=True, metavar="USER=OA_ID", help="link one finflow user to an OA user id")
def users_command(sync_: bool, links: tuple[str, ...]) -> None:
    """Link finflow users to OA users (a decision by an unlinked OA user is refused)."""
    from adapters.oa import users
    from engine.db import transaction
    from engine.models import User

    if not sync_ and not links:
        raise click.UsageError("give --sync or at least one --link USER=OA_ID")
    parsed = []
    for item in links:
        user, sep, oa_id = item.partition("=")
        if not sep or not user.strip() or not oa_id.strip():
            raise click.BadParameter(f"{item!r} is not USER=OA_ID", param_hint="--link")
        parsed.append((user.strip(), oa_id.strip()))
    with transaction() as session:
        unknown = [u for u, _ in parsed if session.get(User, u) is None]
        if unknown:
            raise click.BadParameter(f"no finflow user {', '.join(unknown)}", param_hint="--link")
        for user, oa_id in parsed:
            users.link(session, user, oa_id)
    if parsed:
        click.echo(f"已关联 {len(parsed)} 个用户")
    if sync_:
        report = users.sync_links(_config())
        click.echo(f"OA 用户 {report['oa_users']} 个；新关联 {len(report['linked'])} 个，"
                   f"已关联 {report['already_linked']} 个")
        if report["finflow_users_without_oa_user"]:
            click.echo("没有对应 OA 用户的 finflow 用户：" + "、".join(report["finflow_users_without_oa_user"]))


@oa.command("poll")
def poll_command() -> None:
    """Read the open requests' logs from OA now and apply decisions finflow missed."""
    from adapters.oa import poller

    _config()
    counts = poller.poll(limit=100000)
    click.echo(f"读取 {counts['requests']} 个 OA 请求，新决定 {counts['new']} 条，读取失败 {counts['failed']} 个")


def _add_commands() -> None:
    from adapters.oa.simulator.cli import simulator

    oa.add_command(simulator)


_add_commands()
