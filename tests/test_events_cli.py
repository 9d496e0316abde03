"""`finflow events`: create (checked and probed, the webhook secret shown once), list, pause, resume,
delete, deliveries and retry, against the real test database, a real HTTP receiver and the real RabbitMQ;
bad arguments are one clear error naming the field and leave nothing behind."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pika
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select, update

from adapters.events import SUBSCRIPTION
from adapters.events.models import EventSubscription
from engine.cli import main
from engine.db import transaction
from engine.outbox.dispatch import drain_background
from engine.outbox.models import OutboxMessage
from tests import events_support, outbox_support
from tests.events_support import closed_port
from tests.helpers import claim, start

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
EXCHANGE = "finflow.test.cli"


# fixtures from the support modules, found by pytest under these names
embedded = outbox_support.embedded
receiver = events_support.receiver
pytestmark = pytest.mark.usefixtures("embedded")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["events", *args])


def create_webhook(url: str, *extra: str) -> tuple[str, str]:
    """Create through the CLI; returns (subscription id, whole output)."""
    result = run("create", "--kind", "webhook", "--name", "报销通知", "--url", url, *extra)
    assert result.exit_code == 0, result.output
    return re.search(r"event subscription (\S+) created", result.output).group(1), result.output


def stored() -> list[EventSubscription]:
    with transaction(readonly=True) as session:
        return list(session.scalars(select(EventSubscription)))


def rows_of(subscription_id: str) -> list[OutboxMessage]:
    with transaction(readonly=True) as session:
        return list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.subscription == SUBSCRIPTION, OutboxMessage.target == subscription_id)
            .order_by(OutboxMessage.id)))


def test_create_webhook_prints_the_secret_once_and_list_never(receiver):
    subscription_id, output = create_webhook(receiver.url, "--process", "reimbursement",
                                             "--type", "task.*", "--type", "com.finflow.instance.completed")

    secret = re.search(r"^secret: (\S+)$", output, re.MULTILINE).group(1)
    assert "will not be shown again" in output
    [subscription] = stored()
    assert (subscription.id, subscription.secret, subscription.status) == (subscription_id, secret, "active")
    assert subscription.event_types == ["task.*", "instance.completed"]

    listed = run("list")
    assert listed.exit_code == 0, listed.output
    line = next(line for line in listed.output.splitlines() if line.startswith(subscription_id))
    assert secret not in listed.output
    for part in ("active", "webhook", "报销通知", receiver.url, "exchange=-", "types=task.*,instance.completed",
                 "processes=reimbursement", "pending=0 failing=0 dead=0"):
        assert part in line
    assert listed.output.rstrip().endswith("1 subscription(s)")
    assert "events" in CliRunner().invoke(main, ["--help"]).output


@pytest.mark.parametrize(("change", "field"), [
    (["--process", "reimbursement", "--process", "nosuch"], "process_keys"),
    (["--type", "task.finished"], "event_types"),
    (["--type", "Task.Completed!"], "event_types"),
    (["--url", "ftp://127.0.0.1/events"], "url"),
    (["--url", "http://127.0.0.1:{closed}/hook"], "url"),
    (["--exchange", "finflow.events"], "exchange"),
    (["--name", "   "], "name"),
])
def test_a_bad_creation_names_the_field_and_creates_nothing(receiver, change, field):
    base = ["--kind", "webhook", "--name", "坏订阅", "--url", receiver.url]
    types = [] if "--type" in change else ["--type", "task.*"]
    change = [value.format(closed=closed_port()) for value in change]  # a later --url or --name wins
    result = run("create", *base, *types, *change)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and field in result.output
    assert "Traceback" not in result.output
    assert stored() == []


def test_bad_create_options_are_usage_errors(receiver):
    bad_kind = run("create", "--kind", "kafka", "--name", "x", "--url", receiver.url, "--type", "*")
    assert bad_kind.exit_code == 2 and "kafka" in bad_kind.output
    no_type = run("create", "--kind", "webhook", "--name", "x", "--url", receiver.url)
    assert no_type.exit_code == 2 and "--type" in no_type.output
    assert stored() == []


def test_pause_resume_and_delete_change_the_status(receiver):
    subscription_id, _ = create_webhook(receiver.url, "--type", "*")

    paused = run("pause", subscription_id)
    assert paused.exit_code == 0 and paused.output.strip().endswith(f"{subscription_id} paused")
    again = run("pause", subscription_id)
    assert again.exit_code == 1 and again.output.startswith("error: ") and "paused" in again.output
    resumed = run("resume", subscription_id)
    assert resumed.exit_code == 0 and resumed.output.strip().endswith(f"{subscription_id} active")
    deleted = run("delete", subscription_id)
    assert deleted.exit_code == 0 and deleted.output.strip().endswith(f"{subscription_id} deleted")

    assert subscription_id not in run("list").output
    everything = run("list", "--all")
    assert everything.exit_code == 0
    assert re.search(rf"^{subscription_id}\s+deleted\s+webhook", everything.output, re.MULTILINE)
    for command in ("pause", "resume", "delete"):
        gone = run(command, subscription_id)
        assert gone.exit_code == 1 and subscription_id in gone.output, (command, gone.output)
    unknown = run("pause", "no-such-subscription")
    assert unknown.exit_code == 1 and "no-such-subscription" in unknown.output


def test_deliveries_and_retry_of_dead_deliveries(receiver):
    subscription_id, _ = create_webhook(receiver.url, "--process", "reimbursement", "--type", "*")
    assert run("pause", subscription_id).exit_code == 0  # its events wait: the rows stay pending
    instance_id = start("reimbursement", "suxiaoyun", claim())
    assert drain_background()
    rows = rows_of(subscription_id)
    assert rows and {r.status for r in rows} == {"pending"} and not receiver.requests

    listed = run("deliveries", subscription_id)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[-1] == f"{len(rows)} of {len(rows)} deliveries"
    newest = lines[0].split()
    assert newest[:2] == [str(rows[-1].id), "pending"] and instance_id in newest
    assert any("instance.started" in line and "event=1" in line and "stream=1" in line for line in lines)
    assert f"pending={len(rows)} failing=0 dead=0" in run("list").output

    kill(subscription_id, "HTTP 500 from the receiver\nsecond line of the error")
    dead = run("deliveries", subscription_id, "--status", "dead", "--limit", "2")
    assert dead.exit_code == 0 and dead.output.splitlines()[-1] == f"2 of {len(rows)} deliveries"
    assert "HTTP 500 from the receiver" in dead.output and "second line" not in dead.output
    assert run("deliveries", subscription_id, "--status", "pending").output.strip() == "0 of 0 deliveries"
    assert f"pending=0 failing=0 dead={len(rows)}" in run("list").output

    retried = run("retry", subscription_id, "--all-dead")
    assert retried.exit_code == 0, retried.output
    assert retried.output.startswith(f"{len(rows)} deliveries queued again: {rows[0].id}, ")
    assert drain_background()
    assert [(r.status, r.attempts) for r in rows_of(subscription_id)] == [("pending", 0)] * len(rows)
    assert run("retry", subscription_id, "--all-dead").output.strip() == "0 deliveries queued again"

    kill(subscription_id, "HTTP 500")
    one = run("retry", subscription_id, str(rows[0].id))
    assert one.exit_code == 0 and one.output.strip() == f"1 deliveries queued again: {rows[0].id}"
    assert [r.status for r in rows_of(subscription_id)] == ["pending"] + ["dead"] * (len(rows) - 1)

    resumed = run("resume", subscription_id)  # waits for the background sends before returning
    assert resumed.exit_code == 0, resumed.output
    assert rows_of(subscription_id)[0].status == "done" and receiver.requests


def test_bad_retry_and_deliveries_arguments(receiver):
    subscription_id, _ = create_webhook(receiver.url, "--type", "*")
    other_id, _ = create_webhook(receiver.url, "--type", "*")
    assert run("pause", other_id).exit_code == 0
    start("reimbursement", "suxiaoyun", claim())
    assert drain_background()
    foreign = rows_of(other_id)[0].id

    neither = run("retry", subscription_id)
    assert neither.exit_code == 2 and "--all-dead" in neither.output
    both = run("retry", subscription_id, "1", "--all-dead")
    assert both.exit_code == 2 and "--all-dead" in both.output
    not_a_number = run("retry", subscription_id, "abc")
    assert not_a_number.exit_code == 2 and "abc" in not_a_number.output
    not_dead = run("retry", other_id, str(foreign))
    assert not_dead.exit_code == 1 and "pending" in not_dead.output
    kill(other_id, "HTTP 500")
    not_theirs = run("retry", subscription_id, str(foreign))
    assert not_theirs.exit_code == 1 and str(foreign) in not_theirs.output and subscription_id in not_theirs.output
    missing = run("retry", subscription_id, "999999")
    assert missing.exit_code == 1 and "999999" in missing.output
    assert {r.status for r in rows_of(other_id)} == {"dead"}  # nothing was queued by the failed retries

    bad_status = run("deliveries", subscription_id, "--status", "lost")
    assert bad_status.exit_code == 2 and "lost" in bad_status.output
    assert run("deliveries", subscription_id, "--limit", "0").exit_code == 2
    unknown = run("deliveries", "no-such-subscription")
    assert unknown.exit_code == 1 and "no-such-subscription" in unknown.output


def kill(subscription_id: str, error: str) -> None:
    """Make the subscription's deliveries dead, as the retry policy does when it gives up."""
    with transaction() as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.subscription == SUBSCRIPTION,
                                                    OutboxMessage.target == subscription_id)
                        .values(status="dead", attempts=8, last_error=error, claimed_until=None))


@pytest.fixture
def broker() -> Iterator[None]:
    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?socket_timeout=2&connection_attempts=1")).close()
    except Exception as exc:  # any failure to connect means: no broker here
        pytest.skip(f"RabbitMQ is not reachable at 127.0.0.1:5672: {exc!r}")
    yield
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().exchange_delete(EXCHANGE)
    connection.close()


def test_create_rabbitmq_subscription_against_the_real_broker(broker):
    result = run("create", "--kind", "rabbitmq", "--name", "财务总线", "--url", AMQP_URL, "--exchange", EXCHANGE,
                 "--type", "instance.*")
    assert result.exit_code == 0, result.output
    assert "secret" not in result.output
    subscription_id = re.search(r"event subscription (\S+) created", result.output).group(1)
    [subscription] = stored()
    assert (subscription.id, subscription.exchange, subscription.secret) == (subscription_id, EXCHANGE, None)

    listed = run("list").output
    assert "amqp://guest:***@127.0.0.1:5672/%2F" in listed and "guest:guest" not in listed
    assert f"exchange={EXCHANGE}" in listed and "processes=*" in listed


@pytest.mark.parametrize("exchange", ["amq.bad", "has space", None])
def test_a_bad_exchange_is_named(exchange):
    extra = ["--exchange", exchange] if exchange else []
    result = run("create", "--kind", "rabbitmq", "--name", "财务总线", "--url", AMQP_URL, *extra, "--type", "*")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "exchange" in result.output
    with transaction(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(EventSubscription)) == 0
