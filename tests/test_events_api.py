"""The event subscriptions API: bad input is a 422 naming the field with nothing created, only
administrators manage subscriptions, and pause / resume / delete do what an integrator expects."""

from __future__ import annotations

import pika
import pytest

from tests import events_support, outbox_support
from tests.events_support import AMQP_URL, assert_complete_and_ordered, closed_port, deliveries, settle
from tests.helpers import act, claim, ready_nodes, start

embedded = outbox_support.embedded
events_out = events_support.events_out
receiver = events_support.receiver
pytestmark = pytest.mark.usefixtures("events_out", "embedded")
ADMIN, EMPLOYEE = "zhangwei", "suxiaoyun"
PATH = "/api/v1/event-subscriptions"


def body(**overrides):
    return {"name": "ERP 总账", "kind": "webhook", "url": "http://127.0.0.1:1/", "event_types": ["task.*"],
            **overrides}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"url": "ftp://127.0.0.1/events"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://[::1/events"}, "url"),
    ({"url": "http://127.0.0.1:99999/events"}, "url"),
    ({"url": f"http://127.0.0.1:{closed_port()}/hook"}, "url"),
    ({"event_types": ["task.compleeted"]}, "event_types"),
    ({"event_types": ["task.*", "DROP TABLE"]}, "event_types"),
    ({"event_types": []}, "event_types"),
    ({"process_keys": ["reimbursement", "travel"]}, "process_keys"),
    ({"kind": "kafka"}, "kind"),
    ({"kind": "rabbitmq", "url": AMQP_URL, "exchange": "has space"}, "exchange"),
    ({"kind": "rabbitmq", "url": AMQP_URL, "exchange": "amq.topic"}, "exchange"),
    ({"kind": "rabbitmq", "url": AMQP_URL, "exchange": None}, "exchange"),
    ({"kind": "rabbitmq", "url": "http://127.0.0.1:5672/", "exchange": "finflow.events"}, "url"),
    ({"kind": "rabbitmq", "url": "amqp://[bad/%2F", "exchange": "finflow.events"}, "url"),
    ({"kind": "rabbitmq", "url": f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F", "exchange": "x"}, "url"),
    ({"kind": "rabbitmq", "url": "amqp://guest:wrong@127.0.0.1:5672/%2F", "exchange": "finflow.x"}, "url"),
])
def test_bad_subscriptions_are_refused_naming_the_field_and_nothing_is_created(app, as_user, receiver, overrides,
                                                                                field):
    admin = as_user(ADMIN)
    response = admin.post(PATH, json=body(**{"url": receiver.url, **overrides}))

    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert field in str(error["details"]) and error["message"]
    assert admin.get(PATH).get_json()["items"] == []


def test_only_administrators_manage_subscriptions(app, as_user, receiver):
    employee = as_user(EMPLOYEE)
    assert employee.post(PATH, json=body(url=receiver.url)).status_code == 403
    assert employee.get(PATH).status_code == 403
    created = as_user(ADMIN).post(PATH, json=body(url=receiver.url)).get_json()
    assert employee.post(f"{PATH}/{created['id']}/pause").status_code == 403
    assert employee.get(f"{PATH}/{created['id']}/deliveries").status_code == 403
    assert receiver.requests == []  # a refused caller does not make finflow connect anywhere either


def test_create_returns_the_secret_once_and_lists_with_counts(app, as_user, receiver):
    admin = as_user(ADMIN)
    created = admin.post(PATH, json=body(url=receiver.url, process_keys=["payment"],
                                         event_types=["com.finflow.instance.completed", "task.*"]))
    assert created.status_code == 201
    item = created.get_json()
    assert len(item["secret"]) >= 32 and item["status"] == "active"
    assert item["event_types"] == ["instance.completed", "task.*"] and item["process_keys"] == ["payment"]
    [listed] = admin.get(PATH).get_json()["items"]
    assert "secret" not in listed and listed["deliveries"] == {"pending": 0, "failing": 0, "done": 0, "dead": 0,
                                                                "dropped": 0}
    assert admin.get(f"{PATH}/nope").status_code == 404


def test_rabbitmq_password_is_never_shown(app, as_user):
    events_support.require_rabbitmq()
    admin = as_user(ADMIN)
    created = admin.post(PATH, json=body(kind="rabbitmq", url=AMQP_URL, exchange="finflow.test.api"))
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["url"] == "amqp://guest:***@127.0.0.1:5672/%2F"
    assert created.get_json()["secret"] is None


def test_paused_subscription_keeps_events_and_sends_them_in_order_on_resume(app, as_user, receiver):
    admin = as_user(ADMIN)
    target = admin.post(PATH, json=body(url=receiver.url, event_types=["*"])).get_json()["id"]
    assert admin.post(f"{PATH}/{target}/pause").get_json()["status"] == "paused"
    assert admin.post(f"{PATH}/{target}/pause").status_code == 409

    instance_id = start("reimbursement", "suxiaoyun", claim())
    act(instance_id, ready_nodes(instance_id)[0])
    settle()
    assert receiver.requests == [] and {d.status for d in deliveries(target)} == {"pending"}

    resumed = admin.post(f"{PATH}/{target}/resume").get_json()
    assert resumed["status"] == "active" and resumed["deliveries"]["pending"] == len(deliveries(target))
    settle()
    assert {d.status for d in deliveries(target)} == {"done"}
    assert_complete_and_ordered(receiver.events())


def test_delete_drops_undelivered_events_and_keeps_the_records(app, as_user, receiver):
    admin = as_user(ADMIN)
    target = admin.post(PATH, json=body(url=receiver.url)).get_json()["id"]
    admin.post(f"{PATH}/{target}/pause")
    instance_id = start("reimbursement", "suxiaoyun", claim())
    act(instance_id, ready_nodes(instance_id)[0])

    assert admin.delete(f"{PATH}/{target}").get_json()["status"] == "deleted"
    assert admin.get(f"{PATH}/{target}").status_code == 404
    assert admin.get(PATH).get_json()["items"] == []
    assert deliveries(target) and {d.status for d in deliveries(target)} == {"dropped"}
    records = admin.get(f"{PATH}/{target}/deliveries").get_json()
    assert records["meta"]["total"] == len(deliveries(target)) and records["items"][0]["status"] == "dropped"
    act(instance_id, ready_nodes(instance_id)[0])  # later events are not recorded for it at all
    settle()
    assert receiver.requests == [] and {d.status for d in deliveries(target)} == {"dropped"}


def test_an_exchange_of_another_type_is_refused_naming_the_exchange(app, as_user):
    events_support.require_rabbitmq()
    channel = pika.BlockingConnection(pika.URLParameters(AMQP_URL)).channel()
    channel.exchange_declare("finflow.test.direct", exchange_type="direct", durable=True)
    try:
        response = as_user(ADMIN).post(PATH, json=body(kind="rabbitmq", url=AMQP_URL,
                                                       exchange="finflow.test.direct"))
        assert response.status_code == 422
        assert "PRECONDITION_FAILED" in str(response.get_json()["error"]["details"]["fields"]["exchange"])
    finally:
        channel.exchange_delete("finflow.test.direct")
        channel.connection.close()
