"""`finflow user second-factor reset <user>`: an administrator's way back in for someone who lost the
phone with their authenticator app. The user then enrols again (POST /api/v1/me/second-factor); until
then the sensitive actions refuse them (second_factor_not_enrolled). Recorded in the security log with
the CLI as the actor, since the shell has no finflow identity.
"""

from __future__ import annotations

import click

from engine.db import transaction
from engine.history import Actor

CLI_ACTOR = Actor(user_id=None, channel="cli", user_agent="finflow cli")


@click.group("user")
def user_group() -> None:
    """Users' own settings an administrator may need to reset."""


@user_group.group("second-factor")
def second_factor_group() -> None:
    """The TOTP second factor for sensitive actions (large payments, payee bank accounts)."""


@second_factor_group.command("reset")
@click.argument("user_id")
def reset(user_id: str) -> None:
    """Remove USER_ID's second factor (they enrol again); recorded in the security log."""
    from engine.services import second_factor

    with transaction() as session:
        had = second_factor.reset(session, user_id, CLI_ACTOR)
    click.echo(f"second factor of {user_id} reset" if had else f"{user_id} had no second factor (reset recorded)")
