"""The process designer's pages (流程设计器): GET /designer (every process, its versions, who deployed them,
when, how many instances run on each) and GET /designer/<key>/<version> (that version in the bpmn-js
modeler, with finflow's own properties panel, 校验, 对比 and 部署).

The page holds no rules of its own: 校验 posts the files to POST /api/v1/definitions/validate and 部署 to
POST /api/v1/definitions — the deploy API's validation and its role check (designer or admin) — with the
session cookie and its CSRF token. Anyone logged in may look; the deploy button is only shown to, and
the API only accepts it from, designers and admins.
"""

from __future__ import annotations

from flask import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.web import blp
from api.web.pages import error_page, page
from api.web.summary import local_time, names
from api.web.views import Login, with_user
from engine.errors import FinflowError
from engine.models import Instance, ProcessVersion, User
from engine.services import deployments

DESIGN_ROLES = frozenset(deployments.DESIGNER_ROLES)


@blp.get("/designer")
@with_user()
def designer_home(session: Session, user: User, login: Login) -> Response:
    running = dict(session.execute(select(Instance.version_id, func.count()).where(Instance.status == "running")
                                   .group_by(Instance.version_id)).all())
    processes = []
    for definition in deployments.list_definitions(session):
        versions = deployments.list_versions(session, definition.key)
        who = names(session, {v.deployed_by for v in versions})
        processes.append({"key": definition.key, "name": definition.name, "versions": [
            {"version": v.version, "deployed_by": who.get(v.deployed_by, v.deployed_by or "命令行"),
             "deployed_at": local_time(v.deployed_at), "running": running.get(v.id, 0)}
            for v in sorted(versions, key=lambda v: -v.version)]})
    return page("designer_home.html", processes=processes, can_deploy=bool(user.role_ids & DESIGN_ROLES),
                csrf=login.csrf)


@blp.get("/designer/<key>/<int:version>")
@with_user()
def designer_edit(session: Session, user: User, login: Login, key: str, version: int) -> Response:
    try:
        found = deployments.get_version(session, key[:64], version)
    except FinflowError as exc:
        return error_page("流程不存在", exc.message, exc.status)
    previous = session.scalar(select(ProcessVersion).where(ProcessVersion.process_key == found.process_key,
                                                           ProcessVersion.version < found.version)
                              .order_by(ProcessVersion.version.desc()).limit(1))
    editor = {"key": found.process_key, "version": found.version, "bpmn_file": found.bpmn_file,
              "files": found.files, "previous": previous.files.get(previous.bpmn_file) if previous else None,
              "previous_version": previous.version if previous else None}
    return page("designer_edit.html", scripts=True, version=found, editor=editor, csrf=login.csrf,
                can_deploy=bool(user.role_ids & DESIGN_ROLES))
