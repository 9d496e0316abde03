"""API tokens: scoped, expiring, revocable, listed without secrets; deactivation ends every login at once."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select

from engine import clock
from engine.cli import main as cli_main
from engine.db import transaction
from engine.models import ApiToken, HistoryEvent, SecurityEvent, WebSession
from engine.services import sessions
from engine.services.auth import hash_token, issue_token
from tests.helpers import claim, ready, start


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_read_only_token_reads_but_cannot_decide(app, as_user):
    iid = start("reimbursement", "suxiaoyun", claim("办公", 500))
    task = ready(iid)[0]
    approver = as_user(task.candidates[0])
    made = approver.post("/api/v1/tokens", json={"label": "报表系统", "scopes": ["read"], "expires_in_days": 30})
    assert made.status_code == 201 and made.json["token"].startswith("ff_") and made.json["scopes"] == ["read"]
    client = app.test_client()
    reader = _bearer(made.json["token"])
    assert client.get(f"/api/v1/instances/{iid}", headers=reader).status_code == 200
    refused = client.post(f"/api/v1/tasks/{task.id}/complete", headers=reader, json={"action": "approve"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "insufficient_scope"
    assert refused.json["error"]["details"]["required_scope"] == "approve"
    assert ready(iid)[0].id == task.id  # still open
    assert client.get("/api/v1/admin/roles", headers=reader).status_code == 403  # administration needs admin


def test_a_token_never_grants_more_than_the_users_roles(app, as_user):
    made = as_user("suxiaoyun").post("/api/v1/tokens", json={"scopes": ["admin"]})
    assert made.status_code == 201
    answer = app.test_client().get("/api/v1/admin/roles", headers=_bearer(made.json["token"]))
    assert answer.status_code == 403 and answer.json["error"]["code"] == "forbidden"


def test_unknown_scopes_and_lifetimes_are_named(as_user):
    api = as_user("suxiaoyun")
    for body, field in (({"scopes": ["root"]}, "scopes"), ({"expires_in_days": 0}, "expires_in_days"),
                        ({"expires_in_days": 10_000}, "expires_in_days"), ({"lable": "x"}, "lable")):
        answer = api.post("/api/v1/tokens", json=body)
        assert answer.status_code == 422 and field in str(answer.json["error"]["details"]), body


def test_tokens_expire(app):
    with transaction() as session:
        token = issue_token(session, "suxiaoyun", "short", expires_in_days=1)
    client = app.test_client()
    assert client.get("/api/v1/me", headers=_bearer(token)).status_code == 200
    clock.advance(timedelta(days=1, seconds=1))
    expired = client.get("/api/v1/me", headers=_bearer(token))
    assert expired.status_code == 401 and expired.json["error"]["code"] == "token_expired"


def test_list_shows_no_secret_and_records_last_use(app, as_user):
    api = as_user("suxiaoyun")
    api.get("/api/v1/me")
    listed = api.get("/api/v1/tokens").json["items"]
    assert len(listed) == 1 and listed[0]["status"] == "active" and listed[0]["last_used_at"]
    assert listed[0]["last_used_ip"] == "127.0.0.1"
    assert not {"token", "token_hash"} & set(listed[0])
    with transaction() as session:
        stored = session.scalars(select(ApiToken.token_hash)).all()
    assert all(len(h) == 64 for h in stored) and api.headers["Authorization"][7:] not in str(stored)


def test_revoke_by_api_and_cli_works_at_once_and_others_tokens_are_404(app, as_user):
    owner, other, admin = as_user("suxiaoyun"), as_user("zhoujie"), as_user("zhangwei")
    extra = owner.post("/api/v1/tokens", json={"label": "脚本"}).json
    assert other.delete(f"/api/v1/tokens/{extra['id']}").status_code == 404  # not theirs: as if absent
    assert other.get("/api/v1/tokens?user=suxiaoyun").status_code == 404
    revoked = owner.delete(f"/api/v1/tokens/{extra['id']}")
    assert revoked.status_code == 200 and revoked.json["status"] == "revoked"
    answer = app.test_client().get("/api/v1/me", headers=_bearer(extra["token"]))
    assert answer.status_code == 401 and answer.json["error"]["code"] == "token_revoked"
    assert {t["id"] for t in admin.get("/api/v1/tokens?user=suxiaoyun").json["items"]} >= {extra["id"]}
    own_id = owner.get("/api/v1/tokens").json["items"][0]["id"]
    result = CliRunner().invoke(cli_main, ["token", "revoke", str(own_id)])
    assert result.exit_code == 0 and "revoked" in result.output
    assert owner.get("/api/v1/me").status_code == 401
    listing = CliRunner().invoke(cli_main, ["token", "list", "suxiaoyun"])
    assert listing.exit_code == 0 and listing.output.count("revoked") == 2 and "ff_" not in listing.output
    with transaction() as session:
        kinds = session.scalars(select(SecurityEvent.kind).where(SecurityEvent.kind.like("token.%"))).all()
    assert kinds.count("token.revoked") == 2 and "token.issued" in kinds


def test_cli_issues_scoped_expiring_tokens_and_refuses_bad_arguments(app):
    made = CliRunner().invoke(cli_main, ["token", "create", "suxiaoyun", "--scope", "read", "--expires-in-days", "7"])
    assert made.exit_code == 0
    token = made.output.split()[1]
    with transaction() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        assert row.scopes == ["read"] and (row.expires_at - row.created_at) == timedelta(days=7)
    bad = CliRunner().invoke(cli_main, ["token", "create", "suxiaoyun", "--scope", "everything"])
    assert bad.exit_code != 0 and "everything" in bad.output
    assert CliRunner().invoke(cli_main, ["token", "create", "suxiaoyun", "--expires-in-days", "0"]).exit_code == 2


def test_deactivation_ends_sessions_and_tokens_and_moves_open_tasks(app, as_user):
    iid = start("reimbursement", "suxiaoyun", claim("办公", 500))
    task = ready(iid)[0]
    approver = task.candidates[0]
    api = as_user(approver)
    with transaction() as session:
        cookie = sessions.create_session(session, approver, "password", "10.0.0.9", "test")
    assert api.get("/api/v1/me").status_code == 200
    assert as_user("suxiaoyun").post(f"/api/v1/admin/users/{approver}/deactivate", json={}).status_code == 403
    answer = as_user("zhangwei").post(f"/api/v1/admin/users/{approver}/deactivate", json={"reason": "离职"})
    assert answer.status_code == 200, answer.json
    assert answer.json == {"user_id": approver, "tasks_released": 1, "tokens_revoked": 1, "sessions_revoked": 1}
    assert api.get("/api/v1/me").status_code == 401
    with transaction() as session:
        assert sessions.resolve(session, cookie) is None
        assert session.get(WebSession, hash_token(cookie)).revoked_at is not None
        moved = session.scalars(select(HistoryEvent).where(HistoryEvent.instance_id == iid,
                                                           HistoryEvent.type == "task.reassigned")).all()
    assert len(moved) == 1 and moved[0].payload["user"] == approver and moved[0].payload["reason"] == "离职"
    now_ready = ready(iid)
    assert now_ready and approver not in now_ready[0].candidates
    unknown = as_user("zhangwei").post("/api/v1/admin/users/nobody/deactivate", json={})
    assert unknown.status_code == 404
