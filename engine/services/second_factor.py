"""A second factor (TOTP, RFC 6238 with pyotp) for sensitive actions: approving a large payment, changing
a payee's bank account (engine.services.second_factor_policy says when). A stolen session, token or an
unlocked phone with WeCom open is then not enough to move money.

Enrolment: `enroll` makes a secret, stored sealed (engine.crypto, purpose "totp") and shown once as an
otpauth:// URI; `confirm` with a first valid code turns it on. `require` checks a code: ±1 timestep
(30 s) of clock drift, and no code accepted twice (the last accepted timestep is kept on the user), so a
code read over a shoulder or replayed from a log cannot be used again.

Failures are counted in `second_factor_attempts` (5 within 15 minutes: 429 until the oldest leaves the
window) and every failure and success goes to the security log. A refusal raises, and the raise rolls the
command's transaction back, so `require` never writes a failure itself: the refusal carries it
(`exc.failure`) and whoever ran the transaction records it afterwards with `record_refusal`, in a
transaction of its own (the API's views, the approver page). One design for both databases: on SQLite
the command's transaction holds the write lock from its first statement (BEGIN IMMEDIATE), so a second
write transaction opened inside it would wait for itself. A success is written in the command's own
transaction and commits with the action: a command refused later for another reason leaves the code unused.
"""

from __future__ import annotations

import hmac
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import clock, crypto
from engine.db import database_url, transaction
from engine.errors import Conflict, Forbidden, NotFound, TooManyRequests
from engine.history import Actor
from engine.models import SecondFactorAttempt, User
from engine.services import security_log
from engine.services.second_factor_policy import Need

WINDOW = timedelta(minutes=15)
MAX_FAILURES = 5
ISSUER = "finflow"
SEAL_PURPOSE = "totp"
HEADER = "X-Finflow-OTP"
ENROLL_PATH = "/api/v1/me/second-factor"
CODE = re.compile(r"^[0-9]{6}$")
PERSON_CHANNELS = frozenset({"web", "wecom", "oa"})  # always a person: checked whatever the caller passes


class InProcess:
    def __repr__(self) -> str:
        return "IN_PROCESS"


# complete_task's default `otp`: a caller inside finflow that no person drives (the demo driver, benchmarks,
# tests' helpers). The REST API passes its header (None when absent); web, WeCom and OA are checked by channel.
IN_PROCESS: Final = InProcess()


@dataclass(frozen=True)
class Failure:
    """A refused code, to be recorded once the refused command's transaction is gone."""

    user_id: str
    actor: Actor
    purpose: str
    reason: str  # wrong_code | reused_code | malformed_code | rate_limited
    counted: bool  # whether it counts towards the limit (a refusal for being limited does not)
    details: dict[str, Any] = field(default_factory=dict)
    database_url: str | None = None


class SecondFactorRequired(Forbidden):
    code = "second_factor_required"


class SecondFactorNotEnrolled(Forbidden):
    code = "second_factor_not_enrolled"


class SecondFactorInvalid(Forbidden):
    code = "second_factor_invalid"
    failure: Failure | None = None


class TooManySecondFactorAttempts(TooManyRequests):
    code = "too_many_second_factor_attempts"
    failure: Failure | None = None


def checked(actor: Actor, otp: str | None | InProcess) -> bool:
    """Whether a command with this actor and `otp` argument is checked at all (see IN_PROCESS)."""
    return otp is not IN_PROCESS or actor.channel in PERSON_CHANNELS


def guard(session: Session, actor: Actor, need: Need | None, otp: str | None | InProcess) -> None:
    """complete_task's gate: nothing when nothing is sensitive, else `require` for the acting user."""
    if need is None or not checked(actor, otp):
        return
    user = session.get(User, actor.user_id)
    code = None if isinstance(otp, InProcess) else otp
    require(session, user, actor, need.purpose, code, summary=need.summary, **need.details)


def require(session: Session, user: User, actor: Actor, purpose: str, code: str | None, *,
            summary: str = "该操作", **details: Any) -> None:
    """Pass, or raise why not: 403 second_factor_not_enrolled / _required / _invalid, 429 when limited.
    `details` (amount and threshold, the changed fields …) go into the refusal and the security log."""
    why = {"purpose": purpose, **details}
    locked = _locked(session, user.id)
    if not enabled(locked):
        raise SecondFactorNotEnrolled(f"{summary}，需要动态验证码，但您尚未启用动态验证码：请先启用",
                                      {**why, "enroll": ENROLL_PATH})
    if not code:
        raise SecondFactorRequired(f"{summary}，需要动态验证码：请输入验证器上的 6 位动态验证码",
                                   {**why, "header": HEADER})
    _verify(session, locked, actor, purpose, code, crypto.unseal(locked.totp_secret, SEAL_PURPOSE), why)


def enabled(user: User) -> bool:
    return user.totp_secret is not None and user.totp_confirmed_at is not None


def status(user: User) -> dict[str, Any]:
    """What the caller may know of their own second factor (never the secret)."""
    return {"enabled": enabled(user), "pending": user.totp_secret is not None and user.totp_confirmed_at is None,
            "confirmed_at": user.totp_confirmed_at}


def enroll(session: Session, user: User, actor: Actor) -> dict[str, str]:
    """A new secret for `user`, sealed; returned once as {otpauth_uri, secret}. Until `confirm` it is only
    pending, and enrolling again replaces it. An enabled factor is not replaced this way: that would let
    whoever holds the session swap the phone without a code (`disable` first, which needs one)."""
    locked = _locked(session, user.id)
    if enabled(locked):
        raise Conflict("已启用动态验证码：如需更换，请先停用（需要当前验证码）", {"enabled": True},
                       code="second_factor_enabled")
    secret = pyotp.random_base32()
    locked.totp_secret, locked.totp_confirmed_at, locked.totp_last_step = crypto.seal(secret, SEAL_PURPOSE), None, None
    security_log.record(session, "second_factor.enrolment_started", actor, "user", user.id)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.id, issuer_name=ISSUER)
    return {"otpauth_uri": uri, "secret": secret}


def confirm(session: Session, user: User, actor: Actor, code: str) -> User:
    """The first valid code of a pending enrolment turns the second factor on."""
    locked = _locked(session, user.id)
    if enabled(locked):
        raise Conflict("动态验证码已启用", {"enabled": True}, code="second_factor_enabled")
    if locked.totp_secret is None:
        raise SecondFactorNotEnrolled("尚未开始启用动态验证码：请先获取密钥", {"purpose": "confirm",
                                                                            "enroll": ENROLL_PATH})
    _verify(session, locked, actor, "confirm", code, crypto.unseal(locked.totp_secret, SEAL_PURPOSE),
            {"purpose": "confirm"})
    locked.totp_confirmed_at = clock.now()
    security_log.record(session, "second_factor.enabled", actor, "user", user.id)
    return locked


def disable(session: Session, user: User, actor: Actor, code: str | None) -> User:
    """Turn the second factor off: only with a valid current code (a session alone must not do it)."""
    require(session, user, actor, "disable", code, summary="停用动态验证码")
    locked = _locked(session, user.id)
    locked.totp_secret = locked.totp_confirmed_at = locked.totp_last_step = None
    security_log.record(session, "second_factor.disabled", actor, "user", user.id)
    return locked


def reset(session: Session, user_id: str, actor: Actor) -> bool:
    """An administrator's reset (a lost phone): the user enrols again. Whether there was anything to reset."""
    locked = session.get(User, user_id, with_for_update=True)
    if locked is None:
        raise NotFound(f"用户 {user_id} 不存在", {"user_id": user_id})
    had = locked.totp_secret is not None
    locked.totp_secret = locked.totp_confirmed_at = locked.totp_last_step = None
    security_log.record(session, "second_factor.reset", actor, "user", user_id, had_second_factor=had)
    return had


def record_refusal(refusal: BaseException) -> bool:
    """Record the failed attempt a refusal carries, in a transaction of its own; call it once the refused
    command's transaction has rolled back. Whether there was one to record (a missing code is not)."""
    failure = getattr(refusal, "failure", None)
    if not isinstance(failure, Failure):
        return False
    with transaction(failure.database_url) as session:
        record_failure(session, failure)
    return True


def record_failure(session: Session, failure: Failure) -> None:
    if failure.counted:
        session.add(SecondFactorAttempt(user_id=failure.user_id, at=clock.now(), succeeded=False,
                                        purpose=failure.purpose[:32], client_ip=failure.actor.client_ip))
    security_log.record(session, "second_factor.failed", failure.actor, "user", failure.user_id,
                        **{**failure.details, "purpose": failure.purpose, "reason": failure.reason})


def _verify(session: Session, user: User, actor: Actor, purpose: str, code: str, secret: str,
            why: dict[str, Any]) -> None:
    now = clock.now()
    failures = _recent_failures(session, user.id, now)

    def failure(reason: str, counted: bool) -> Failure:
        return Failure(user.id, actor, purpose, reason, counted, why, database_url(session))

    if len(failures) >= MAX_FAILURES:
        retry_after = _retry_after(failures, now)
        limited = TooManySecondFactorAttempts(
            f"动态验证码错误次数过多，请 {math.ceil(retry_after / 60)} 分钟后再试", retry_after, why)
        limited.failure = failure("rate_limited", False)
        raise limited
    step = _matching_step(secret, code.strip(), now)
    reused = step is not None and user.totp_last_step is not None and step <= user.totp_last_step
    if step is None or reused:
        reason = "reused_code" if reused else "wrong_code" if CODE.fullmatch(code.strip()) else "malformed_code"
        message = "该动态验证码已使用过，请等待验证器显示新的验证码" if reused else "动态验证码错误"
        invalid = SecondFactorInvalid(message, {**why, "reason": reason,
                                                "attempts_left": max(0, MAX_FAILURES - len(failures) - 1)})
        invalid.failure = failure(reason, True)
        raise invalid
    user.totp_last_step = step
    session.add(SecondFactorAttempt(user_id=user.id, at=now, succeeded=True, purpose=purpose[:32],
                                    client_ip=actor.client_ip))
    security_log.record(session, "second_factor.passed", actor, "user", user.id, **why)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The timestep (now ±1) whose code is `code`; each compared in constant time."""
    if not CODE.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    matched = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step if matched is None else max(matched, step)
    return matched


def _recent_failures(session: Session, user_id: str, now: datetime) -> list[datetime]:
    return list(session.scalars(select(SecondFactorAttempt.at).where(
        SecondFactorAttempt.user_id == user_id, SecondFactorAttempt.succeeded.is_(False),
        SecondFactorAttempt.at > now - WINDOW).order_by(SecondFactorAttempt.at)))


def _retry_after(failures: list[datetime], now: datetime) -> int:
    """Seconds until fewer than MAX_FAILURES failures are left in the window."""
    frees_at = failures[len(failures) - MAX_FAILURES] + WINDOW
    return max(1, math.ceil((frees_at - now).total_seconds()))


def _locked(session: Session, user_id: str) -> User:
    """The user row, locked for this transaction and read fresh: two commands with one code do not both pass."""
    return session.get(User, user_id, with_for_update=True, populate_existing=True)
