"""The caller's own second factor (TOTP): status, enrol (the secret shown once), confirm, disable; and
how a command's code arrives (`X-Finflow-OTP`) and its failures get recorded.

A refused code raises inside the command's transaction, which then rolls back; `records_failures` sits
outside `command` and records the failed attempt after that rollback, in a transaction of its own
(engine.services.second_factor explains why it cannot be written earlier).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import request
from marshmallow import Schema, fields, validate

from api.context import authenticated, command
from api.openapi import errors
from api.parsing import Blueprint
from api.schemas import StrictSchema
from engine.errors import InvalidInput
from engine.services import second_factor
from engine.services.second_factor import HEADER, SecondFactorInvalid, TooManySecondFactorAttempts

blp = Blueprint("second_factor", __name__, description="The caller's second factor (TOTP) for sensitive actions")

OTP_PARAMETER = {
    "in": "header", "name": HEADER, "required": False, "schema": {"type": "string", "maxLength": 16},
    "description": "The 6-digit code of the caller's authenticator app (TOTP). Needed to approve a task whose "
                   "amount is above FINFLOW_SECOND_FACTOR_AMOUNT, or to change a form field marked "
                   "`x-second-factor` (the payee's bank account); without it such a command is a 403 "
                   "`second_factor_required`. A code works once.",
}
CODE_REFUSALS = {403: "No second factor enrolled, no code, or a wrong or already used code "
                      "(`second_factor_not_enrolled`, `second_factor_required`, `second_factor_invalid`)",
                 429: "Too many wrong codes in 15 minutes (`too_many_second_factor_attempts`); see `Retry-After`"}


def otp_header() -> str | None:
    """The code sent with this request, if any (the engine never reads requests: views pass it on)."""
    value = request.headers.get(HEADER)
    return value.strip()[:16] if value is not None and value.strip() else None


def takes_otp(view: Callable[..., Any]) -> Callable[..., Any]:
    """Document the header on an operation that reads it."""
    return blp.doc(parameters=[OTP_PARAMETER])(view)


def records_failures(view: Callable[..., Any]) -> Callable[..., Any]:
    """Outside `command`: a wrong code's attempt is recorded after the command's rollback, then the
    refusal answers as usual (403 or 429)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except (SecondFactorInvalid, TooManySecondFactorAttempts) as refusal:
            second_factor.record_refusal(refusal)
            raise

    return wrapper


class SecondFactorStatusSchema(Schema):
    enabled = fields.Boolean(metadata={"description": "sensitive actions accept this user's codes"})
    pending = fields.Boolean(metadata={"description": "enrolled, waiting for the first code (confirm)"})
    confirmed_at = fields.DateTime(allow_none=True)


class EnrolmentSchema(Schema):
    otpauth_uri = fields.String(metadata={"description": "otpauth://totp/… for an authenticator app (QR code)"})
    secret = fields.String(metadata={"description": "the same secret in base32, to type in; shown this once"})


class ConfirmSchema(StrictSchema):
    code = fields.String(required=True, validate=validate.Regexp(r"^[0-9]{6}$", error="must be 6 digits"))


@blp.route("/me/second-factor")
@blp.response(200, SecondFactorStatusSchema)
@authenticated
def get_status(session, user):
    """Whether the caller's second factor is on (never the secret)."""
    return second_factor.status(user)


@blp.route("/me/second-factor", methods=["POST"])
@blp.response(201, EnrolmentSchema)
@errors(blp, {409: "A second factor is already enabled: disable it first (needs a code)"})
@command(EnrolmentSchema, status=201)
def enroll(session, user, actor):
    """Start enrolling: a new secret, shown in this response only; `confirm` with a first code turns it on.
    Calling again before confirming replaces the pending secret. No Idempotency-Key: a replay would have to
    store the secret in the clear, and enrolling again is harmless anyway."""
    if request.headers.get("Idempotency-Key") is not None:
        reason = "not accepted here: the secret is never stored in the clear for a replay"
        raise InvalidInput("启用动态验证码不接受 Idempotency-Key（密钥不会被保存以供重放）：重试请直接再次调用",
                           {"fields": {"Idempotency-Key": [reason]}})
    return second_factor.enroll(session, user, actor)


@blp.route("/me/second-factor/confirm", methods=["POST"])
@blp.arguments(ConfirmSchema)
@blp.response(200, SecondFactorStatusSchema)
@errors(blp, {**CODE_REFUSALS, 409: "Already enabled"})
@records_failures
@command(SecondFactorStatusSchema)
def confirm(body, session, user, actor):
    """Turn the second factor on with the first code the authenticator app shows."""
    return second_factor.status(second_factor.confirm(session, user, actor, body["code"]))


@blp.route("/me/second-factor", methods=["DELETE"])
@blp.response(200, SecondFactorStatusSchema)
@errors(blp, CODE_REFUSALS)
@takes_otp
@records_failures
@command(SecondFactorStatusSchema)
def disable(session, user, actor):
    """Turn the second factor off; needs a valid current code in `X-Finflow-OTP`."""
    return second_factor.status(second_factor.disable(session, user, actor, otp_header()))
