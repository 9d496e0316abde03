"""Events out to the real RabbitMQ: every event of the three processes arrives once per id, in order per
instance, with the documented attributes; a broker outage delays events but loses none and refuses no
approval."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from adapters.events.catalog import EVENT_TYPES
from engine.demo.driver import drive
from engine.demo.scenarios import SCENARIOS
from tests import events_support, outbox_support
from tests.events_support import (
    AMQP_URL,
    RabbitConsumer,
    assert_complete_and_ordered,
    deliveries,
    history_by_instance,
    rabbitmq_up,
    rabbitmqctl,
    require_rabbitmq,
    settle,
    subscribe,
)
from tests.outbox_support import wait_for

# fixtures from the support modules, found by pytest under these names
embedded = outbox_support.embedded
private_redis = outbox_support.private_redis
redis_url = outbox_support.redis_url
workers = outbox_support.workers
events_out = events_support.events_out


pytestmark = pytest.mark.usefixtures("events_out")


@pytest.fixture
def consumer():
    require_rabbitmq()
    name = f"finflow.test.{uuid.uuid4().hex[:8]}"
    queue = RabbitConsumer(name, name + ".all")
    yield queue
    if rabbitmq_up():
        queue.delete()


def test_every_event_of_the_three_processes_arrives_once_in_order_with_its_attributes(embedded, consumer):
    subscribe("rabbitmq", AMQP_URL, exchange=consumer.exchange)
    results = [drive(scenario) for scenario in SCENARIOS]
    settle()

    assert {r.status for r in results} == {"completed"}
    events = consumer.wait_for_events(len(deliveries()))
    messages = consumer.messages
    assert len({e["id"] for e in events}) == len(events)  # nothing doubled on a healthy broker
    assert_complete_and_ordered(events)
    assert {d.status for d in deliveries()} == {"done"}

    properties, routing_key, event = next(m for m in messages if m[2]["type"] == "com.finflow.task.completed")
    assert properties.delivery_mode == 2 and properties.message_id == event["id"]
    assert properties.content_type.startswith("application/cloudevents+json")
    assert routing_key == f"{event['data']['process_key']}.task.completed"
    assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
    assert event["source"] == f"/finflow/finflow/instances/{event['partitionkey']}"
    assert event["subject"] == event["data"]["business_key"] and event["subject"]
    assert event["data"]["action"] in ("approve", "reject", "submit") and event["data"]["node_name"]
    assert event["data"]["actor_id"] and event["data"]["process_version"] == 1
    assert Decimal(event["data"]["amount"]) > 0 and event["data"]["amount"].count(".") == 1  # exact, as a string

    types = {e["type"].removeprefix("com.finflow.") for e in events}
    assert {"dmn.decision", "service.completed", "gateway.decision", "instance.completed", "task.assigned"} <= types
    assert types <= set(EVENT_TYPES)  # the catalogue names everything the engine records
    processes = {e["data"]["process_key"] for e in events}
    assert processes == {"reimbursement", "payment", "contract"}


def test_filters_by_process_and_type_and_numbers_the_filtered_stream_without_gaps(embedded, consumer):
    subscribe("rabbitmq", AMQP_URL, exchange=consumer.exchange, process_keys=["payment"],
              event_types=["task.completed", "instance.*"])
    for scenario in SCENARIOS[:6]:
        drive(scenario)
    settle()
    events = consumer.wait_for_events(len(deliveries()))
    assert events and {e["data"]["process_key"] for e in events} == {"payment"}
    assert {e["type"] for e in events} <= {"com.finflow.task.completed", "com.finflow.instance.started",
                                           "com.finflow.instance.completed", "com.finflow.instance.withdrawn",
                                           "com.finflow.instance.cancelled", "com.finflow.instance.failed",
                                           "com.finflow.instance.cc"}
    for instance_id in {e["partitionkey"] for e in events}:
        mine = [e for e in events if e["partitionkey"] == instance_id]
        assert [e["streamseq"] for e in mine] == list(range(1, len(mine) + 1))
        seqs = [e["instanceseq"] for e in mine]
        assert seqs == sorted(seqs) and len(seqs) < len(history_by_instance()[instance_id])


def test_broker_stopped_while_approvals_continue_every_event_arrives_after_it_returns(
        redis_url, workers, consumer):
    worker_env = {"FINFLOW_OUTBOX_BASE_DELAY": "0.2", "FINFLOW_OUTBOX_MAX_DELAY": "2",
                  "FINFLOW_OUTBOX_MAX_ATTEMPTS": "1000", "FINFLOW_SWEEP_INTERVAL": "0.5"}
    subscribe("rabbitmq", AMQP_URL, exchange=consumer.exchange)
    workers.start(redis_url, "--queues", "events", env=worker_env)
    drive(SCENARIOS[0])
    wait_for(lambda: {d.status for d in deliveries()} == {"done"}, message="the first instance's events")

    rabbitmqctl("stop_app")
    try:
        results = [drive(scenario) for scenario in SCENARIOS[1:8]]  # approvals while the broker is down
        assert {r.status for r in results} == {"completed"}
        errors = wait_for(lambda: {d.last_error for d in deliveries() if d.last_error}, message="a failed publish")
        assert all("RabbitMQ unavailable" in error for error in errors), errors
    finally:
        rabbitmqctl("start_app")
    wait_for(rabbitmq_up, timeout=60, message="RabbitMQ back")

    wait_for(lambda: {d.status for d in deliveries()} == {"done"}, timeout=90,
             message=f"the outbox to drain after the outage\n{workers.logs()}")
    events = consumer.wait_for_events(len(deliveries()))
    assert_complete_and_ordered(events)


def test_a_worker_killed_after_the_broker_confirmed_but_before_recording_resends_the_same_id(
        redis_url, workers, consumer, tmp_path):
    worker_env = {"FINFLOW_PLUGINS": "tests.plugins_crash", "FINFLOW_OUTBOX_LEASE": "2",
                  "FINFLOW_SWEEP_INTERVAL": "0.5"}
    subscribe("rabbitmq", AMQP_URL, exchange=consumer.exchange)
    first = workers.start(redis_url, "--queues", "events", env=worker_env)
    drive(SCENARIOS[0])
    wait_for(lambda: first.poll() is not None, message=f"the worker to die after publishing\n{workers.logs()}")
    assert first.returncode == -9
    lost = (tmp_path / "crashed-after-publish").read_text()

    workers.start(redis_url, "--queues", "events", env=worker_env)
    wait_for(lambda: {d.status for d in deliveries()} == {"done"}, message=f"delivery\n{workers.logs()}")
    events = consumer.wait_for_events(len(deliveries()))
    assert [e["id"] for e in events].count(lost) == 2  # published, confirmed, lost by the crash, sent again
    assert_complete_and_ordered(events)
