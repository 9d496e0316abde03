"""站内通知: who is told what along a process, the caller's own inbox, reading, and redelivery."""

from __future__ import annotations

from sqlalchemy import func, select

from adapters.inbox.handlers import notify
from adapters.inbox.models import Notification
from engine.db import transaction
from engine.outbox.delivery import deliver, message
from engine.outbox.models import OutboxMessage
from tests import outbox_support
from tests.helpers import act, claim, start
from tests.outbox_support import outbox_rows

# fixtures from tests/outbox_support.py, found by pytest under these names
embedded = outbox_support.embedded


def titles(client, **query) -> list[str]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return [n["title"] for n in client.get(f"/api/v1/notifications?{params}").json["items"]]


def test_a_reimbursement_told_through_notifications(embedded, as_user):
    applicant = as_user("suxiaoyun")
    body = {"process_key": "reimbursement", "business_key": "BX-INBOX-1",
            "data": claim(category="差旅", amount=8000, reason="上海客户拜访")}
    instance_id = applicant.post("/api/v1/instances", json=body).json["id"]
    assert titles(as_user("guoxin")) == ["待审批：费用报销 BX-INBOX-1"]
    act(instance_id, "manager_approval", comment="同意")
    assert titles(as_user("huangmin")) == ["待审批：费用报销 BX-INBOX-1"]  # > 5,000: the department head
    act(instance_id, "director_approval", action="reject", comment="请补充发票")
    news = applicant.get("/api/v1/notifications").json["items"]
    assert [n["title"] for n in news] == ["待审批：费用报销 BX-INBOX-1",  # newest first: the revise task
                                          "部门负责人审批已驳回：费用报销 BX-INBOX-1",
                                          "直属上级审批已同意：费用报销 BX-INBOX-1"]
    assert news[1]["body"] == "黄敏已驳回「部门负责人审批」，意见：请补充发票" and news[1]["kind"] == "task.completed"
    assert news[0]["body"] == "申请人修改（上海客户拜访）" and news[0]["kind"] == "task.assigned"

    act(instance_id, "applicant_revise", action="submit", form={"amount": 8000})  # the applicant's own step: no news
    assert len(applicant.get("/api/v1/notifications").json["items"]) == len(news)
    for node in ("manager_approval", "director_approval", "finance_review", "cashier_payment"):
        act(instance_id, node)
    assert titles(applicant)[0] == "审批通过：费用报销 BX-INBOX-1"


def test_unread_read_and_pagination(embedded, as_user):
    manager = as_user("guoxin")
    for i in range(3):
        as_user("suxiaoyun").post("/api/v1/instances", json={"process_key": "reimbursement",
                                                             "business_key": f"BX-PAGE-{i}", "data": claim()})
    page = manager.get("/api/v1/notifications?per_page=2").json
    assert [n["title"] for n in page["items"]] == ["待审批：费用报销 BX-PAGE-2", "待审批：费用报销 BX-PAGE-1"]
    assert page["meta"] == {"total": 3, "page": 1, "per_page": 2, "unread": 3}
    newest = page["items"][0]["id"]

    read = manager.post(f"/api/v1/notifications/{newest}/read")
    assert read.status_code == 200 and read.json["read_at"] is not None
    again = manager.post(f"/api/v1/notifications/{newest}/read")
    assert again.status_code == 200 and again.json["read_at"] == read.json["read_at"]  # the first read time stays
    unread = manager.get("/api/v1/notifications?unread=true").json
    assert unread["meta"]["total"] == 2 and unread["meta"]["unread"] == 2 and newest not in [
        n["id"] for n in unread["items"]]
    assert manager.get("/api/v1/notifications?page=2&per_page=2").json["items"][0]["title"].endswith("BX-PAGE-0")


def test_nobody_reads_or_marks_anyone_elses_notifications(embedded, as_user):
    as_user("suxiaoyun").post("/api/v1/instances", json={"process_key": "reimbursement", "data": claim()})
    [mine] = as_user("guoxin").get("/api/v1/notifications").json["items"]
    other = as_user("huangmin")
    assert other.get("/api/v1/notifications").json["items"] == []
    stolen = other.post(f"/api/v1/notifications/{mine['id']}/read")
    assert stolen.status_code == 404 and stolen.json["error"]["code"] == "not_found"
    assert other.post("/api/v1/notifications/999999/read").status_code == 404
    anonymous = other.client.get("/api/v1/notifications")
    assert anonymous.status_code == 401 and anonymous.json["error"]["code"] == "unauthorized"
    assert as_user("guoxin").get("/api/v1/notifications?unread=true").json["meta"]["total"] == 1
    assert other.get("/api/v1/notifications?unread=maybe").status_code == 422


def test_redelivery_adds_nothing(embedded, as_user):
    as_user("suxiaoyun")  # create_app: the inbox is subscribed
    start("reimbursement", "suxiaoyun", claim())
    [assigned] = [r for r in outbox_rows() if r.event_type == "task.assigned"]
    assert assigned.status == "done"
    assert deliver(assigned.id) == "done"  # a duplicate job finds the row done
    with transaction() as session:  # and the handler itself ignores a message it already handled
        notify(session, message(session.get(OutboxMessage, assigned.id)))
    with transaction(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Notification)) == 1


def test_operations_notify_the_people_they_concern(as_user):
    from tests.helpers import claim, ready

    applicant = as_user("suxiaoyun")
    iid = applicant.post("/api/v1/instances", json={"process_key": "reimbursement", "data": claim()}).json["id"]
    task = ready(iid)[0]
    as_user("guoxin").post(f"/api/v1/tasks/{task.id}/transfer", json={"to": "huangmin", "reason": "出差"})
    applicant.post(f"/api/v1/instances/{iid}/urge", json={"message": "请尽快"})
    applicant.post(f"/api/v1/instances/{iid}/cc", json={"users": ["fengli"]})
    titles = [n["title"] for n in as_user("huangmin").get("/api/v1/notifications").json["items"]]
    assert any(t.startswith("转办给您：费用报销") for t in titles)
    assert any(t.startswith("申请人催办：费用报销") for t in titles)
    copied = [n["title"] for n in as_user("fengli").get("/api/v1/notifications").json["items"]]
    assert any(t.startswith("抄送给您：费用报销") for t in copied)
