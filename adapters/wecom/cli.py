"""`finflow wecom …`: the WeCom simulator for demos and tests, and org sync from WeCom."""

from __future__ import annotations

import click


@click.group()
def wecom() -> None:
    """WeCom (企业微信): simulator, org sync."""


def _add_commands() -> None:
    from adapters.wecom.simulator.cli import simulator
    from adapters.wecom.sync_cli import sync

    wecom.add_command(simulator)
    wecom.add_command(sync)


_add_commands()
