"""API tokens of the caller: list (never the secrets), issue (the secret shown once), revoke.

An administrator may list and revoke anyone's (`?user=`); everyone else sees only their own, and
another user's token id answers 404 as if it did not exist.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import StrictSchema
from engine.errors import NotFound
from engine.services import access, auth

blp = Blueprint("tokens", __name__, description="API tokens: scoped, expiring, revocable")


class TokenSchema(Schema):
    id = fields.Integer()
    user_id = fields.String()
    label = fields.String()
    scopes = fields.List(fields.String(), metadata={"description": f"any of {sorted(auth.SCOPES)}; * = all"})
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)
    last_used_ip = fields.String(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)
    status = fields.String(metadata={"description": "active | expired | revoked"})


class TokenListSchema(Schema):
    items = fields.List(fields.Nested(TokenSchema))


class TokenCreatedSchema(TokenSchema):
    token = fields.String(metadata={"description": "the secret: shown in this response only"})


class TokenCreateSchema(StrictSchema):
    label = fields.String(load_default="", validate=validate.Length(max=128))
    scopes = fields.List(fields.String(validate=validate.OneOf([*auth.SCOPES, auth.ALL_SCOPES])), load_default=list,
                         metadata={"description": "operations the token may be used for; [] = all"})
    expires_in_days = fields.Integer(load_default=None, allow_none=True,
                                     validate=validate.Range(1, auth.MAX_DAYS))


class TokenListArgsSchema(StrictSchema):
    user = fields.String(load_default=None, validate=validate.Length(1, 64),
                         metadata={"description": "administrators: another user's tokens"})


@blp.route("/tokens")
@blp.arguments(TokenListArgsSchema, location="query")
@blp.response(200, TokenListSchema)
@errors(blp, {404: "Another user's tokens (administrators only)"})
@authenticated
def list_tokens(args, session, user):
    """The caller's tokens, oldest first, without their secrets."""
    owner = args["user"] or user.id
    if owner != user.id and not access.may(user, "administer"):
        raise NotFound(f"用户 {owner} 不存在", {"user": owner})
    return {"items": auth.list_tokens(session, owner)}


@blp.route("/tokens", methods=["POST"])
@blp.arguments(TokenCreateSchema)
@blp.response(201, TokenCreatedSchema)
@errors(blp, {422: "Unknown scope or a lifetime out of range"})
@command(TokenCreatedSchema, status=201)
def create_token(body, session, user, actor):
    """A new token for the caller, narrowed to `scopes`; the secret is in this response only."""
    row, secret = auth.issue(session, user.id, body["label"], scopes=body["scopes"],
                             expires_in_days=body["expires_in_days"], actor=actor)
    row.token = secret
    return row


@blp.route("/tokens/<rowid:token_id>", methods=["DELETE"])
@blp.response(200, TokenSchema)
@errors(blp, {404: "No such token of the caller's"})
@command(TokenSchema)
def revoke_token(token_id, session, user, actor):
    """Revoke a token at once; revoking again is a no-op."""
    return auth.revoke(session, actor, token_id, caller=user)
