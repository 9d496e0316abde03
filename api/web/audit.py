"""The auditor's pages (审计): GET /audit (search), /audit/export.csv, /audit/instances/<id> (the diagram
with the path taken and the full timeline), /audit/processes/<key>/<version> (statistics and heatmap).
Read-only by construction: no route here changes anything.

Open to the auditor and admin roles; what they find is what engine.services.queries lets them see
(the same data scope as the REST API's GET /instances).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from urllib.parse import urlencode

from flask import Response, request, stream_with_context
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from api.context import note_instance_access, request_actor
from api.schemas import InstanceSearchArgsSchema
from api.web import blp
from api.web.pages import error_page, page
from api.web.summary import audit_timeline, human_seconds, local_time, names, status_text
from api.web.views import ID_CHARS, Login, with_user
from engine.db import transaction
from engine.errors import FinflowError
from engine.finance.money import yuan
from engine.models import Instance, ProcessVersion, User
from engine.services import access, disclosure, security_log
from engine.services.deployments import get_version, list_versions, model_for
from engine.services.progress import instance_progress
from engine.services.queries import get_instance, instance_filter, scope_instances, search_instances
from engine.services.statistics import version_statistics

AUDIT_ROLES = access.roles_granting("audit")
SEARCH_FIELDS = ("business_key", "process_key", "starter", "approver", "amount_min", "amount_max", "status",
                 "started_from", "started_to")
EXPORT_BATCH = 500


auditor = with_user(AUDIT_ROLES, "审计页面仅向审计员和管理员开放。")


def _criteria() -> tuple[dict, dict[str, list[str]]]:
    """The search form's fields, parsed by the REST API's own schema; (criteria, errors)."""
    raw = {k: v.strip() for k, v in request.args.items() if k in (*SEARCH_FIELDS, "page") and v.strip()}
    try:
        return InstanceSearchArgsSchema().load(raw), {}
    except ValidationError as exc:
        return {}, exc.messages


@blp.get("/audit")
@auditor
def audit_search(session: Session, user: User, login: Login) -> Response:
    criteria, errors = _criteria()
    found = None if errors else search_instances(session, user, **{"per_page": 20, **criteria})
    rows = _rows(session, found.items, user) if found else []
    query = urlencode([(k, request.args[k]) for k in SEARCH_FIELDS if request.args.get(k)])
    return page("audit_search.html", args=request.args, errors=errors, found=found, rows=rows, query=query,
                csrf=login.csrf)


@blp.get("/audit/export.csv")
@auditor
def export_csv(session: Session, user: User, login: Login) -> Response:
    criteria, errors = _criteria()
    if errors:
        return error_page("无法导出", "查询条件有误：" + "；".join(f"{k} {v[0]}" for k, v in errors.items()), 422)
    criteria.pop("page", None)
    criteria.pop("per_page", None)
    stmt = scope_instances(session, instance_filter(**criteria), user).order_by(Instance.started_at.desc(),
                                                                                Instance.id)
    security_log.record_access("instances.exported", request_actor(user), "export", None, format="csv",
                               criteria={k: str(v) for k, v in criteria.items()})
    def lines() -> Iterator[str]:  # streamed in batches, in a transaction of its own (the view's has ended)
        yield "\ufeff"  # Excel opens UTF-8 with a BOM as UTF-8
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["业务单号", "流程", "标题", "申请人", "金额", "状态", "发起时间", "结束时间", "实例ID"])
        with transaction(readonly=True) as export:
            offset = 0
            while batch := list(export.scalars(stmt.limit(EXPORT_BATCH).offset(offset))):
                for row in _rows(export, batch, user):
                    writer.writerow([row["business_key"], row["process"], row["title"], row["applicant"],
                                     row["amount_plain"], row["status"], row["started"], row["ended"], row["id"]])
                yield out.getvalue()
                out.seek(0)
                out.truncate()
                offset += EXPORT_BATCH

    response = Response(stream_with_context(lines()), mimetype="text/csv")
    response.headers["Content-Disposition"] = "attachment; filename=finflow-instances.csv"
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.get("/audit/instances/<instance_id>")
@auditor
def audited_instance(session: Session, user: User, login: Login, instance_id: str) -> Response:
    try:
        instance = get_instance(session, user, instance_id[:ID_CHARS])
    except FinflowError as exc:  # not found, or outside the auditor's scope: a page, never a 5xx
        return error_page("无法查看", exc.message, exc.status)
    note_instance_access(user, instance.id, "audit.page")
    model = model_for(session, instance.version_id)
    version = session.get(ProcessVersion, instance.version_id)
    progress = instance_progress(session, instance, model)
    node_names = {node_id: node.name for node_id, node in model.nodes.items()}
    timeline = audit_timeline(session, instance.id, node_names)
    summary = _rows(session, [instance], user)[0]
    shown = progress.as_dict()
    for node in shown["completed"]:
        node["duration"] = human_seconds(node["seconds"]) if node["seconds"] else ""
    diagram = {"bpmn": version.files.get(model.bpmn_file or "", ""), "progress": shown}
    return page("audit_instance.html", scripts=True, instance=instance, summary=summary, version=version,
                timeline=timeline, kinds=sorted({row.kind for row in timeline}), diagram=diagram, csrf=login.csrf)


@blp.get("/audit/processes/<key>/<int:version>")
@auditor
def version_stats(session: Session, user: User, login: Login, key: str, version: int) -> Response:
    try:
        found = get_version(session, key[:64], version)
    except FinflowError as exc:
        return error_page("流程不存在", exc.message, exc.status)
    model = model_for(session, found.id)
    stats = version_statistics(session, found.id, model)
    nodes = sorted((n for n in stats.nodes.values() if n.instances or n.waiting),
                   key=lambda n: -(n.average_seconds or 0))
    heat = {"bpmn": found.files.get(found.bpmn_file, ""),
            "nodes": {n.node_id: {"tokens": n.tokens, "instances": n.instances, "waiting": n.waiting}
                      for n in stats.nodes.values()}, "flows": stats.flows}
    return page("audit_stats.html", scripts=True, version=found, stats=stats, nodes=nodes, heat=heat,
                csrf=login.csrf, versions=list_versions(session, found.process_key), seconds=human_seconds)



def _rows(session: Session, instances: list[Instance], viewer: User) -> list[dict]:
    who = names(session, {i.starter_id for i in instances})
    process_names = {}
    for instance in instances:
        if instance.version_id not in process_names:
            process_names[instance.version_id] = model_for(session, instance.version_id).name
    return [_row(i, process_names[i.version_id], who, disclosure.for_viewer(session, viewer, i)) for i in instances]


def _row(i: Instance, process: str, who: dict[str, str], disclosed: disclosure.Disclosure) -> dict:
    amount = None if disclosed.hides_amount else i.amount
    masked = disclosed.amount(i.amount) if disclosed.hides_amount else None
    return {"id": i.id, "business_key": i.business_key or "", "process": process,
            "title": i.title or "", "applicant": who.get(i.starter_id, i.starter_id),
            "amount": masked or (yuan(amount) if amount is not None else ""),
            "amount_plain": masked or (f"{amount:.2f}" if amount is not None else ""), "status": status_text(i),
            "started": local_time(i.started_at), "ended": local_time(i.ended_at)}
