"""`finflow wecom …`: the WeCom simulator for demos and tests, and org sync from WeCom."""

from __future__ import annotations

import click


@click.group()
def wecom() -> None:
    """WeCom (企业微信): simulator, org sync."""
