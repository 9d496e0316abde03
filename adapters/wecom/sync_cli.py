"""`finflow wecom sync [--dry-run]`: a full org sync from WeCom now, with a progress bar and the report."""

from __future__ import annotations

import sys
from typing import Any

import click

from adapters.wecom.org_apply import CHANGE_KEYS, REPORT_KEYS

LABELS = {"departments_created": "新建部门", "departments_updated": "更新部门", "departments_removed": "删除部门",
          "departments_kept": "保留部门（企业微信已无，但仍有人员、下级或预算）", "users_created": "新建用户",
          "users_updated": "更新用户", "users_deactivated": "停用用户", "users_reactivated": "重新启用用户",
          "tasks_reassigned": "转交待办"}


@click.command("sync")
@click.option("--dry-run", is_flag=True, help="fetch and compute the report, change nothing")
def sync(dry_run: bool) -> None:
    """Full org sync from WeCom (departments, users, managers); all or nothing."""
    from adapters.wecom import sync as org_sync

    bar: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(click.progressbar(length=total, label="读取企业微信部门成员", file=sys.stderr))
            bar[0].__enter__()
        bar[0].update(1)

    try:
        report = org_sync.full_sync(progress=progress, dry_run=dry_run)
    except org_sync.NotConfigured as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"组织同步失败，未做任何修改：{type(exc).__name__}: {exc}") from exc
    finally:
        if bar:
            bar[0].__exit__(None, None, None)
    click.echo(render(report, dry_run))


def render(report: dict[str, list], dry_run: bool) -> str:
    """The report as lines: one per kind of change, with who or what."""
    lines = ["组织同步（试运行，未做修改）：" if dry_run else "组织同步完成："]
    for key in REPORT_KEYS:
        items = report.get(key, [])
        shown = [f"{t['user']}→{','.join(t['candidates']) or '关闭'}" if isinstance(t, dict) else str(t)
                 for t in items]
        lines.append(f"  {LABELS[key]}: {len(items)}" + (f"  ({', '.join(shown)})" if shown else ""))
    if not any(report.get(key) for key in CHANGE_KEYS):
        lines.append("  无变化")
    return "\n".join(lines)
