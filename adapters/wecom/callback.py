"""`/wecom/callback`: WeCom's URL verification and event POSTs, acknowledged at once, applied later.

WeCom waits 5 s for an answer and retries a callback up to 3 times, so this view does only what it must
before answering: verify and decrypt (crypto.MsgCrypt.open), store the event once (`wecom_callbacks`,
unique dedupe key: a retry inserts nothing), hand its id to the `channels` queue, answer 200 "". The
engine never runs here. Whatever goes wrong (forged, tampered, stale, oversized, malformed, a database
or Redis failure) is logged in one line and answered 200 with an empty body: WeCom gets nothing to
retry against, and nothing is applied. A row whose job was lost stays `received`; `requeue_stale` (a
periodic job) hands it over again.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from flask import Blueprint, Response, abort, request
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from adapters.wecom.config import WeComConfig
from adapters.wecom.crypto import MAX_BODY, CallbackRejected, MsgCrypt, fields
from adapters.wecom.models import WeComCallback
from engine import clock
from engine.db import is_postgres, transaction
from engine.outbox import dispatch

log = logging.getLogger("finflow.wecom.callback")
blp = Blueprint("wecom_callback", __name__)
QUEUE = "channels"
JOB = "adapters.wecom.inbound.apply"
REQUEUE_AFTER = timedelta(seconds=30)
CLICK_KEYS = ("FromUserName", "CreateTime", "TaskId", "EventKey")


def _config() -> WeComConfig:
    try:
        config = WeComConfig.from_env()
    except ValueError as exc:
        log.error("wecom callback: configuration is incomplete: %s", exc)
        config = None
    if config is None:
        abort(404)
    return config


def _crypt(config: WeComConfig) -> MsgCrypt:
    return MsgCrypt(config.token, config.aes_key, config.corp_id)


@blp.get("/wecom/callback")
def verify_url() -> Response:
    """The GET WeCom sends when the callback URL is saved: the decrypted echostr, or 403."""
    config = _config()
    args = request.args
    try:
        echo = _crypt(config).verify_url(args.get("msg_signature"), args.get("timestamp"), args.get("nonce"),
                                         args.get("echostr"))
    except CallbackRejected as exc:
        log.warning("wecom callback: URL verification refused from %s: %s", request.remote_addr, exc)
        return Response(f"refused: {exc}"[:200], status=403, mimetype="text/plain")
    return Response(echo, mimetype="text/plain")


@blp.post("/wecom/callback")
def receive() -> Response:
    """An event POST: verify, store once, queue, answer 200 "" — never anything else."""
    config = _config()
    try:
        if (request.content_length or 0) > MAX_BODY:
            raise CallbackRejected(f"body of {request.content_length} bytes is too large")
        body = request.stream.read(MAX_BODY + 1)
        args = request.args
        event = fields(_crypt(config).open(body, args.get("msg_signature"), args.get("timestamp"), args.get("nonce")))
        callback_id = _store(event, request.remote_addr)
    except CallbackRejected as exc:
        log.warning("wecom callback: rejected from %s: %s", request.remote_addr, exc)
    except Exception:  # the database or anything else: WeCom must still get its quick, empty answer
        log.exception("wecom callback: failed to accept a callback from %s", request.remote_addr)
    else:
        if callback_id is not None:
            hand_over(callback_id)
    return Response("", status=200, mimetype="text/plain")


def kind_of(event: dict[str, str]) -> str:
    if event.get("MsgType") == "event" and event.get("Event") in ("template_card_event", "change_contact"):
        return event["Event"]
    return "other"


def dedupe_key(event: dict[str, str]) -> str:
    """What identifies an event across WeCom's retries: a click's user, time, card and button; for
    anything else every field (a retry is byte-for-byte the same event)."""
    if kind_of(event) == "template_card_event":
        parts = [event.get(k, "") for k in CLICK_KEYS]
    else:
        parts = [f"{k}={v}" for k, v in sorted(event.items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _store(event: dict[str, str], client_ip: str | None) -> int | None:
    """Insert the event once; the new row's id, or None when it was already there (a retry). The
    sender's address travels in the payload as `_client_ip` (history records where a click came from)."""
    values = {"dedupe_key": dedupe_key(event), "kind": kind_of(event),
              "from_user": (event.get("FromUserName") or "")[:64] or None,
              "payload": {**event, "_client_ip": client_ip},
              "status": "received", "attempts": 0, "received_at": clock.now()}
    with transaction() as session:
        statement = _insert_ignoring_duplicates(session).values(**values).returning(WeComCallback.id)
        return session.execute(statement).scalar()


def _insert_ignoring_duplicates(session: Session):
    table = WeComCallback.__table__
    if is_postgres(session):
        return pg_insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    if session.get_bind().dialect.name == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return insert(table)


def hand_over(callback_id: int, database_url: str | None = None) -> bool:
    """Queue the job that applies a stored callback; False (logged) when the queue refused it."""
    try:
        dispatch.run_job(QUEUE, JOB, callback_id, db_url=database_url)
    except Exception as exc:  # Redis down: the row stays received and requeue_stale retries it
        log.warning("wecom callback %s: could not queue it, left for the periodic re-queue: %s", callback_id, exc)
        return False
    return True


def register() -> None:
    """The periodic re-queue, in every worker and the embedded API process (called from the adapter's load())."""
    from engine import events

    events.every_sweep("wecom.callbacks_requeue", requeue_stale)


def requeue_stale(database_url: str | None = None) -> int:
    """Hand over again callbacks still `received` ~30 s after they came in (their job was lost: Redis
    down at the time, a worker killed). Applying is idempotent, so a late duplicate job is harmless."""
    cutoff = clock.now() - REQUEUE_AFTER
    with transaction(database_url, readonly=True) as session:
        ids = list(session.scalars(select(WeComCallback.id).where(
            WeComCallback.status == "received", WeComCallback.received_at < cutoff)
            .order_by(WeComCallback.id).limit(500)))
    return sum(hand_over(i, database_url) for i in ids)
