"""Administration of access: roles with their actions and data scopes, a user's roles, deactivation,
and the security log (grants, revocations, views and exports) for administrators and auditors."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import StrictSchema
from engine.models import Role
from engine.services import access, org, security_log

blp = Blueprint("security", __name__, description="Roles, data scopes, users' roles and the security log")
NOT_ADMIN = {403: "The caller is not an administrator"}


class RoleSchema(Schema):
    id = fields.String()
    name = fields.String()
    actions = fields.List(fields.String(), metadata={"description": f"of {list(access.ACTIONS)}"})
    scopes = fields.Dict(keys=fields.String(), values=fields.String(),
                         metadata={"description": f"process key or * → one of {list(access.SCOPES)}"})


class RoleListSchema(Schema):
    items = fields.List(fields.Nested(RoleSchema))


class RoleScopesSchema(StrictSchema):
    scopes = fields.Dict(keys=fields.String(validate=validate.Length(1, 64)),
                         values=fields.String(validate=validate.OneOf(access.SCOPES)), required=True)


class UserRolesSchema(StrictSchema):
    roles = fields.List(fields.String(validate=validate.Length(1, 32)), required=True,
                        validate=validate.Length(max=20))


class UserRolesResultSchema(Schema):
    user_id = fields.String()
    roles = fields.List(fields.String())


class DeactivateSchema(StrictSchema):
    reason = fields.String(load_default="管理员停用", validate=validate.Length(1, 255))


class DeactivatedSchema(Schema):
    user_id = fields.String()
    tasks_released = fields.Integer()
    tokens_revoked = fields.Integer()
    sessions_revoked = fields.Integer()


class SecurityEventArgsSchema(StrictSchema):
    kind = fields.String(load_default=None, validate=validate.Length(1, 48))
    subject_type = fields.String(load_default=None, validate=validate.Length(1, 32))
    subject_id = fields.String(load_default=None, validate=validate.Length(1, 128))
    actor = fields.String(load_default=None, validate=validate.Length(1, 64))
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class SecurityEventSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    at = fields.DateTime()
    actor_id = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    client_ip = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    subject_type = fields.String(allow_none=True)
    subject_id = fields.String(allow_none=True)
    details = fields.Dict()


class SecurityEventListSchema(Schema):
    items = fields.List(fields.Nested(SecurityEventSchema))


def _roles(session) -> list[dict]:
    scopes = access.role_scopes(session)
    return [{"id": role.id, "name": role.name, "actions": sorted(access.ROLE_ACTIONS.get(role.id, ())),
             "scopes": scopes.get(role.id, {})} for role in session.query(Role).order_by(Role.id)]


@blp.route("/admin/roles")
@blp.response(200, RoleListSchema)
@errors(blp, NOT_ADMIN)
@authenticated
def list_roles(session, user):
    """Every role with the actions it grants and how far it sees, per process."""
    access.require(user, "administer", "仅管理员可以查看角色配置")
    return {"items": _roles(session)}


@blp.route("/admin/roles/<key(32):role>/scopes", methods=["PUT"])
@blp.arguments(RoleScopesSchema)
@blp.response(200, RoleSchema)
@errors(blp, {**NOT_ADMIN, 422: "Unknown role or scope"})
@command(RoleSchema)
def set_scopes(body, role, session, user, actor):
    """Replace a role's data scopes; the change (before and after) goes to the security log."""
    access.require(user, "administer", "仅管理员可以修改数据范围")
    access.set_role_scopes(session, actor, role, body["scopes"])
    return next(r for r in _roles(session) if r["id"] == role)


@blp.route("/admin/users/<key(64):user_id>/roles", methods=["PUT"])
@blp.arguments(UserRolesSchema)
@blp.response(200, UserRolesResultSchema)
@errors(blp, {**NOT_ADMIN, 422: "Unknown user or role"})
@command(UserRolesResultSchema)
def set_roles(body, user_id, session, user, actor):
    """Replace a user's roles; each grant and revocation goes to the security log."""
    access.require(user, "administer", "仅管理员可以修改用户角色")
    return {"user_id": user_id, "roles": access.set_user_roles(session, actor, user_id, body["roles"])}


@blp.route("/admin/users/<key(64):user_id>/deactivate", methods=["POST"])
@blp.arguments(DeactivateSchema)
@blp.response(200, DeactivatedSchema)
@errors(blp, {**NOT_ADMIN, 404: "No such user"})
@command(DeactivatedSchema)
def deactivate(body, user_id, session, user, actor):
    """Deactivate a user at once: sessions and tokens revoked, open tasks moved to each node's fallback."""
    access.require(user, "administer", "仅管理员可以停用用户")
    return org.deactivate_user(session, actor, user_id, body["reason"])


@blp.route("/admin/security-events")
@blp.arguments(SecurityEventArgsSchema, location="query")
@blp.response(200, SecurityEventListSchema)
@errors(blp, {403: "The caller is neither an administrator nor an auditor"})
@authenticated
def list_security_events(args, session, user):
    """The security log, newest first: grants, revocations, deactivations, views, exports, second factors."""
    if not (access.may(user, "administer") or access.may(user, "audit")):
        access.require(user, "audit", "仅管理员和审计员可以查看安全日志")
    return {"items": security_log.events(session, kind=args["kind"], subject_type=args["subject_type"],
                                         subject_id=args["subject_id"], actor_id=args["actor"], limit=args["limit"])}
