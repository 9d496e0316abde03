from __future__ import annotations

from flask_smorest import Blueprint
from sqlalchemy import text

from api.context import authenticated
from api.schemas import UserSchema
from engine.db import transaction

blp = Blueprint("health", __name__, description="Liveness and the caller's identity")


@blp.route("/health")
@blp.doc(security=[])
def health():
    """Liveness: the API answers and the database responds."""
    with transaction(readonly=True) as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok", "database": "ok"}


@blp.route("/me")
@blp.response(200, UserSchema)
@authenticated
def me(session, user):
    """The user the bearer token belongs to."""
    return {name: getattr(user, name) for name in UserSchema().fields if name != "roles"} | {
        "roles": sorted(user.role_ids)}
