"""`finflow events`: manage event subscriptions (webhooks, RabbitMQ exchanges) from the command line.

A thin layer over adapters.events.subscriptions, as the API is: the service validates and probes, this
module only turns options into a body and rows into lines. Errors the service raises (FinflowError) are
printed by the `finflow` group as `error: …` with the field named, exit 1; bad options are click's usage
errors, exit 2. The group reaches `finflow` through adapters.cli_commands, so the engine never imports it.

In embedded mode (no REDIS_URL) the sends that `resume` and `retry` queue run on a background thread of
this process; those commands wait for them before returning, so they are not cut off when the command exits.
"""

from __future__ import annotations

import click

from adapters.events import subscriptions, urls
from adapters.events.models import KINDS, EventSubscription
from engine.db import transaction
from engine.outbox.dispatch import drain_background
from engine.outbox.models import OutboxMessage


@click.group("events")
def events() -> None:
    """Event subscriptions: CloudEvents to webhooks and RabbitMQ."""


@events.command("create")
@click.option("--kind", required=True, type=click.Choice(KINDS))
@click.option("--name", required=True)
@click.option("--url", required=True, help="http(s) URL of a webhook, or amqp(s)://user:password@host/vhost")
@click.option("--exchange", help="rabbitmq: the durable topic exchange to publish to (declared if missing)")
@click.option("--process", "process_keys", multiple=True, help="repeatable; none = every process")
@click.option("--type", "event_types", multiple=True, required=True,
              help="repeatable event type pattern, e.g. task.completed, task.*, *")
def create(kind: str, name: str, url: str, exchange: str | None, process_keys: tuple[str, ...],
           event_types: tuple[str, ...]) -> None:
    """Create a subscription.

    The body is checked and the destination probed first (nothing is written if it does not accept a
    connection); a webhook's signing secret is printed here only.
    """
    body = {"kind": kind, "name": name, "url": url, "exchange": exchange, "process_keys": list(process_keys),
            "event_types": list(event_types)}
    with transaction(readonly=True) as session:  # checks and probes; nothing is written yet
        spec = subscriptions.check(session, body)
    with transaction() as session:
        subscription, secret = subscriptions.create(session, spec, None)
    click.echo(f"event subscription {subscription.id} created ({subscription.kind} {subscription.name})")
    if secret is not None:
        click.echo(f"secret: {secret}")
        click.echo("store the secret now (it signs every request: X-Finflow-Signature); it will not be shown again")


@events.command("list")
@click.option("--all", "include_deleted", is_flag=True, help="include deleted subscriptions")
def list_subscriptions(include_deleted: bool) -> None:
    """List subscriptions and their delivery counts.

    Oldest first, one line each, with the pending, failing and dead deliveries; URLs without passwords.
    """
    with transaction(readonly=True) as session:
        found = subscriptions.list_all(session, include_deleted)
        counts = subscriptions.counts(session, [s.id for s in found])
    for subscription in found:
        click.echo(subscription_line(subscription, counts[subscription.id]))
    click.echo(f"{len(found)} subscription(s)")


@events.command("pause")
@click.argument("subscription_id")
def pause(subscription_id: str) -> None:
    """Stop sending (events are kept for resume).

    Events are still recorded for the subscription and go out, in order, on resume.
    """
    with transaction() as session:
        subscription = subscriptions.pause(session, subscription_id)
    _report_status(subscription)


@events.command("resume")
@click.argument("subscription_id")
def resume(subscription_id: str) -> None:
    """Send again, the waiting events first."""
    with transaction() as session:
        subscription = subscriptions.resume(session, subscription_id)
    _report_status(subscription)
    _wait_for_sends()


@events.command("delete")
@click.argument("subscription_id")
def delete(subscription_id: str) -> None:
    """Stop for good (undelivered events dropped).

    The delivery records stay, and `list --all` still shows the subscription.
    """
    with transaction() as session:
        subscription = subscriptions.delete(session, subscription_id)
    _report_status(subscription)


@events.command("deliveries")
@click.argument("subscription_id")
@click.option("--status", type=click.Choice(subscriptions.DELIVERY_FILTERS),
              help="failing = still pending after a failed attempt")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def deliveries(subscription_id: str, status: str | None, limit: int) -> None:
    """List a subscription's deliveries.

    Its outbox rows, newest first, with the first line of each one's last error.
    """
    with transaction(readonly=True) as session:
        rows, total = subscriptions.deliveries(session, subscription_id, status, per_page=limit)
    for row in rows:
        click.echo(delivery_line(row))
    click.echo(f"{len(rows)} of {total} deliveries")


@events.command("retry")
@click.argument("subscription_id")
@click.argument("delivery_ids", nargs=-1, type=click.IntRange(min=1))
@click.option("--all-dead", is_flag=True, help="retry every dead delivery of the subscription")
def retry(subscription_id: str, delivery_ids: tuple[int, ...], all_dead: bool) -> None:
    """Send dead deliveries again.

    The ones given, or every dead one with --all-dead; all are queued, or none (any error stops them all).
    """
    if bool(delivery_ids) == all_dead:
        raise click.UsageError("give either delivery ids or --all-dead (exactly one of the two)")
    with transaction() as session:
        if all_dead:
            ids = subscriptions.retry_dead(session, subscription_id)
        else:
            ids = [subscriptions.retry(session, subscription_id, i).id for i in delivery_ids]
    click.echo(f"{len(ids)} deliveries queued again" + (f": {', '.join(map(str, ids))}" if ids else ""))
    _wait_for_sends()


def subscription_line(subscription: EventSubscription, counts: dict[str, int]) -> str:
    """One subscription on one line; the URL without its password (the secret is never listed)."""
    s = subscription
    return (f"{s.id}  {s.status:<7}  {s.kind:<8}  {s.name}  {urls.mask(s.url)}  "
            f"exchange={s.exchange or '-'}  types={','.join(s.event_types)}  "
            f"processes={','.join(s.process_keys or []) or '*'}  "
            f"pending={counts['pending']} failing={counts['failing']} dead={counts['dead']}")


def delivery_line(row: OutboxMessage) -> str:
    """One delivery on one line, with the first line of its last error (the full text is in the API)."""
    error = (row.last_error or "").split("\n")[0][:120]
    return (f"{row.id:>8}  {row.status:<7}  {row.event_type:<24}  {row.instance_id}  event={row.event_seq}  "
            f"stream={row.stream_seq}  attempts={row.attempts}  next={row.next_attempt_at:%Y-%m-%d %H:%M:%S}  "
            f"{error}").rstrip()


def _report_status(subscription: EventSubscription) -> None:
    click.echo(f"event subscription {subscription.id} {subscription.status}")


def _wait_for_sends() -> None:
    """Embedded mode: let the background sends this command queued finish before the process exits
    (with Redis, workers send and there is nothing to wait for)."""
    if not drain_background():
        click.echo("some sends did not finish in time; `finflow outbox sweep` or a running server sends them later",
                   err=True)
