"""The org model: demo company completeness, and inactive people never assigned and unable to act."""

import pytest
from sqlalchemy import func, select, update

from engine.db import transaction
from engine.errors import InvalidInput
from engine.models import Department, User, UserRole
from engine.org.directory import ROLES
from engine.services.auth import issue_token
from tests.helpers import claim, events, instance, ready, start


def test_demo_company_has_departments_people_and_every_role():
    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(Department)) >= 5
        assert session.scalar(select(func.count()).select_from(User)) >= 30
        active_roles = set(session.scalars(select(UserRole.role_id).join(User, User.id == UserRole.user_id)
                                           .where(User.active.is_(True))))
    assert active_roles == set(ROLES)


def deactivate(user_id: str) -> None:
    with transaction() as session:
        session.execute(update(User).where(User.id == user_id).values(active=False))


def test_inactive_user_is_never_a_candidate():
    deactivate("zhuwei")  # one of the accountants leaves
    iid = start("reimbursement", "suxiaoyun", claim())
    from tests.helpers import act

    act(iid, "manager_approval")
    assert "zhuwei" not in ready(iid)[0].candidates and ready(iid)[0].candidates


def test_nobody_to_assign_fails_the_instance_with_a_recorded_reason():
    deactivate("guoxin")  # the applicant's only manager
    iid = start("reimbursement", "suxiaoyun", claim())
    failed = instance(iid)
    assert failed.status == "failed" and failed.error["node_id"] == "manager_approval"
    assert "审批人为空" in failed.error["message"]
    assert [e.type for e in events(iid)][-1] == "instance.failed"


def test_inactive_user_cannot_act_even_with_a_token(as_user):
    client = as_user("guoxin")
    task = as_user("suxiaoyun").post("/api/v1/instances", json={"process_key": "reimbursement",
                                                                 "data": claim()}).json["current_tasks"][0]
    deactivate("guoxin")
    response = client.post(f"/api/v1/tasks/{task['id']}/complete", json={"action": "approve"})
    assert response.status_code == 401 and "停用" in response.json["error"]["message"]
    with transaction() as session, pytest.raises(InvalidInput, match="已停用"):
        issue_token(session, "wulei", "test")  # the demo company's leaver gets no token at all
