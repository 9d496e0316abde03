"""`finflow secrets`: seal a value for the environment, rotate FINFLOW_SECRET_KEY, check what is stored.

What finflow stores sealed (engine.crypto): webhook secrets (event_subscriptions.secret) and, once the
column exists, users' TOTP seeds (users.totp_secret); OA and WeCom credentials cached in Redis. `rotate`
reseals the stored ones with the first key in one transaction (nothing changes when one does not open)
and drops the cached ones, which are fetched again. `check` opens every stored one and every sealed
FINFLOW_WECOM_* / FINFLOW_OA_* setting, and exits 1 naming those that do not open.

The adapters' models are imported on call, as engine.cli does: the CLI is a composition root, the engine
proper never imports adapters.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
from redis.exceptions import RedisError
from sqlalchemy import inspect, select, update
from sqlalchemy.orm import Session

from engine import crypto
from engine.db import transaction

PURPOSES = ("webhook", "wecom", "oa", "totp")
SETTINGS = {"FINFLOW_WECOM_SECRET": "wecom", "FINFLOW_WECOM_TOKEN": "wecom", "FINFLOW_WECOM_AES_KEY": "wecom",
            "FINFLOW_OA_SECRET": "oa", "FINFLOW_OA_SPK": "oa", "FINFLOW_OA_CALLBACK_SECRET": "oa"}


@dataclass(frozen=True)
class Stored:
    """A column holding sealed secrets: `attribute` of `model`, sealed for `purpose`."""

    model: Any
    attribute: Any
    purpose: str

    @property
    def label(self) -> str:
        return f"{self.model.__tablename__}.{self.attribute.property.columns[0].name}"

    def rows(self, session: Session) -> Iterator[tuple[Any, str]]:
        """(primary key, sealed value) of every row that holds one."""
        key = inspect(self.model).primary_key[0]
        yield from session.execute(select(key, self.attribute).where(self.attribute.is_not(None)).order_by(key))

    def write(self, session: Session, key: Any, value: str) -> None:
        pk = inspect(self.model).primary_key[0]
        session.execute(update(self.model).where(pk == key).values({self.attribute: value}))


def stored() -> list[Stored]:
    """Every column finflow keeps sealed secrets in; users.totp_secret only once the model has it."""
    from adapters.events.models import SECRET_PURPOSE, EventSubscription
    from engine.models import User

    columns = [Stored(EventSubscription, EventSubscription.sealed_secret, SECRET_PURPOSE)]
    totp = getattr(User, "totp_secret", None)
    if totp is not None:
        columns.append(Stored(User, totp, "totp"))
    return columns


def survey(session: Session) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """One line per stored secret that does not open with the configured keys (empty: all open), and per
    column how many secrets it holds and how many of them are sealed with an older key."""
    problems, counts = [], {}
    for column in stored():
        total = older = 0
        for key, value in column.rows(session):
            total += 1
            try:
                crypto.unseal(value, column.purpose)
            except crypto.SecretKeyError as exc:
                problems.append(f"{column.label} {key}: {exc}")
                continue
            older += not crypto.sealed_with_newest(value, column.purpose)
        counts[column.label] = (total, older)
    return problems, counts


def reseal_all(session: Session) -> dict[str, int]:
    """Reseal every stored secret with the newest key; per column, how many. SecretKeyError (and nothing
    written, when the caller's transaction rolls back) if one does not open."""
    counts = {}
    for column in stored():
        rows = list(column.rows(session))
        for key, value in rows:
            column.write(session, key, crypto.reseal(value, column.purpose))
        counts[column.label] = len(rows)
    return counts


def drop_cached_credentials() -> int:
    """Drop the OA registrations and tokens and the WeCom access tokens cached in Redis."""
    from adapters.oa import weaver
    from adapters.wecom import client
    from engine.outbox.dispatch import connection, redis_url

    redis = connection(redis_url())
    return weaver.drop_cached_credentials(redis) + client.drop_cached_credentials(redis)


def unopened_settings() -> list[str]:
    """The sealed FINFLOW_WECOM_* / FINFLOW_OA_* variables (and OA key file) that do not open."""
    values = {name: (os.environ.get(name), purpose) for name, purpose in SETTINGS.items()}
    key_file = os.environ.get("FINFLOW_OA_PRIVATE_KEY_FILE")
    if key_file:
        try:
            with open(key_file, encoding="ascii", errors="replace") as f:
                values["FINFLOW_OA_PRIVATE_KEY_FILE"] = (f.read().strip(), "oa")
        except OSError:
            pass  # unreadable: the OA adapter reports it
    problems = []
    for name, (value, purpose) in values.items():
        try:
            crypto.setting(value, purpose, name)
        except crypto.SecretKeyError as exc:
            problems.append(str(exc))
    return problems


@click.group("secrets")
def secrets_group() -> None:
    """Secrets at rest (FINFLOW_SECRET_KEY): seal a value, rotate the key, check what is stored."""


@secrets_group.command("seal")
@click.option("--for", "purpose", type=click.Choice(PURPOSES), required=True,
              help="what the value is for: a sealed value opens only for its purpose")
def seal_command(purpose: str) -> None:
    """Print a secret sealed, `enc:v1:…`, to paste into the environment.

    The secret is read from stdin (e.g. `< key.pem`), or asked for without echo on a terminal; it is
    sealed with the first key of FINFLOW_SECRET_KEY.
    """
    if sys.stdin.isatty():
        value = click.prompt("secret", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read().strip()
    if not value:
        raise click.UsageError("no secret given on stdin")
    click.echo(crypto.seal(value, purpose))


@secrets_group.command("rotate")
def rotate_command() -> None:
    """Reseal every stored secret with the first key of FINFLOW_SECRET_KEY.

    Run with the new key first and the old one after it (FINFLOW_SECRET_KEY=new,old); once it and
    `finflow secrets check` pass, drop the old key. Nothing is written if a secret does not open.
    Cached OA and WeCom credentials are dropped from Redis and fetched again.
    """
    with transaction(readonly=True) as session:
        problems, _ = survey(session)
    if problems:
        _fail(problems, "nothing was resealed")
    with transaction() as session:
        counts = reseal_all(session)
    for label, count in counts.items():
        click.echo(f"{label}: {count} resealed")
    try:
        click.echo(f"redis: {drop_cached_credentials()} cached OA/WeCom credential(s) dropped")
    except (RedisError, OSError) as exc:
        click.echo(f"warning: cached OA/WeCom credentials not dropped ({exc}); they are fetched again when "
                   "they no longer open", err=True)


@secrets_group.command("check")
def check_command() -> None:
    """Check that every stored secret and sealed setting opens with FINFLOW_SECRET_KEY (exit 1 otherwise).

    Also tells how many are still sealed with an older key (rotate before dropping it).
    """
    try:
        crypto.seal("", "check")  # the keys themselves are usable
    except crypto.SecretKeyError as exc:
        _fail([str(exc)], "no secret can be opened")
    with transaction(readonly=True) as session:
        problems, counts = survey(session)
    problems += unopened_settings()
    if problems:
        _fail(problems, "do not open with FINFLOW_SECRET_KEY")
    for label, (total, older) in counts.items():
        note = f" ({older} sealed with an older key: run `finflow secrets rotate`)" if older else ""
        click.echo(f"{label}: {total} open{note}")
    click.echo("every stored secret opens")


def _fail(problems: list[str], summary: str) -> None:
    for line in problems:
        click.echo(f"error: {line}", err=True)
    click.echo(f"{len(problems)} secret(s): {summary}", err=True)
    sys.exit(1)
