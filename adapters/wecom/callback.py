"""`/wecom/callback`: WeCom's URL verification and event POSTs, acknowledged at once, applied later.

WeCom waits 5 s for an answer and retries a callback up to 3 times, so this view does only what it must
before answering: verify and decrypt (crypto.MsgCrypt.open), store the event once (`wecom_callbacks`,
unique dedupe key: a retry inserts nothing), wake the hand-over, answer 200 "". The engine never runs
here. Whatever goes wrong (forged, tampered, stale, oversized, malformed, a database or Redis failure) is
logged in one line and answered 200 with an empty body: WeCom gets nothing to retry against, and nothing
is applied.

The row is committed before the answer, so an acknowledged click is never only in memory or in Redis.
Waking costs one Redis SET: the hand-over job (`hand_over_received`, queued at most once at a time) marks
the `received` rows `queued` and queues one apply job each on the `channels` queue, named after the row.
A burst of clicks thus costs the endpoint an insert and a SET each, not an rq enqueue each. Nothing is
lost when a job is: `requeue_stale` (periodic) wakes the hand-over for rows still `received`, and queues
again the rows `queued` whose job is gone or failed.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from flask import Blueprint, Response, abort, request
from redis.exceptions import RedisError
from sqlalchemy import select, update

from adapters.wecom.config import WeComConfig
from adapters.wecom.crypto import MAX_BODY, CallbackRejected, MsgCrypt, fields
from adapters.wecom.models import WeComCallback
from engine import clock
from engine.db import get_engine, insert_ignoring_duplicates, transaction
from engine.outbox import dispatch

log = logging.getLogger("finflow.wecom.callback")
blp = Blueprint("wecom_callback", __name__)
QUEUE = "channels"
APPLY_JOB = "adapters.wecom.inbound.apply"
HAND_OVER_JOB = "adapters.wecom.callback.hand_over_received"
WAKE_FLAG = "finflow:wecom:callbacks:hand-over"
HAND_OVER_BATCH = 200
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
        stored = _store(event, request.remote_addr)
    except CallbackRejected as exc:
        log.warning("wecom callback: rejected from %s: %s", request.remote_addr, exc)
    except Exception:  # the database or anything else: WeCom must still get its quick, empty answer
        log.exception("wecom callback: failed to accept a callback from %s", request.remote_addr)
    else:
        if stored:
            wake()
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


def _store(event: dict[str, str], client_ip: str | None, database_url: str | None = None) -> bool:
    """Insert the event once; False when it was already there (a retry). A Core statement on a pooled
    connection, not an ORM session: this runs for every click of a burst. The sender's address travels
    in the payload as `_client_ip` (history records where a click came from)."""
    values = {"dedupe_key": dedupe_key(event), "kind": kind_of(event),
              "from_user": (event.get("FromUserName") or "")[:64] or None,
              "payload": {**event, "_client_ip": client_ip},
              "status": "received", "attempts": 0, "received_at": clock.now()}
    with get_engine(database_url).begin() as connection:
        statement = insert_ignoring_duplicates(connection, WeComCallback.__table__, ["dedupe_key"]).values(
            **values).returning(WeComCallback.id)
        return connection.execute(statement).scalar() is not None


def wake(database_url: str | None = None) -> bool:
    """Have the hand-over job run soon (one SET when it is already pending); False (logged) when Redis
    refused: the rows stay `received` and requeue_stale wakes it later."""
    try:
        dispatch.run_job_once(QUEUE, HAND_OVER_JOB, WAKE_FLAG, db_url=database_url)
    except (RedisError, OSError) as exc:
        log.warning("wecom callbacks: could not wake the hand-over, left for the periodic re-queue: %s", exc)
        return False
    return True


def hand_over_received(database_url: str | None = None) -> int:
    """The hand-over job: mark `received` rows `queued` and queue an apply job for each, a batch at a
    time, until none is left; how many were handed over. Several runs at once take different rows (SKIP
    LOCKED). A failure to queue leaves its batch `queued` without jobs, for requeue_stale."""
    handed = 0
    while True:
        with transaction(database_url) as session:
            ids = list(session.scalars(
                select(WeComCallback.id).where(WeComCallback.status == "received").order_by(WeComCallback.id)
                .limit(HAND_OVER_BATCH).with_for_update(skip_locked=True)))
            if ids:
                session.execute(update(WeComCallback).where(WeComCallback.id.in_(ids)).values(status="queued"))
        if not ids:
            return handed
        _queue_apply(ids, database_url)
        handed += len(ids)


def apply_job_id(callback_id: int) -> str:
    return f"wecom-callback-{callback_id}"


def _queue_apply(ids: list[int], database_url: str | None) -> None:
    dispatch.run_jobs(QUEUE, APPLY_JOB, [(apply_job_id(i), (i,)) for i in ids], db_url=database_url)


def register() -> None:
    """The periodic re-queue, in every worker and the embedded API process (called from the adapter's load())."""
    from engine import events

    events.every_sweep("wecom.callbacks_requeue", requeue_stale)


def requeue_stale(database_url: str | None = None) -> int:
    """Hand over again what a lost job left behind, ~30 s after it came in: rows still `received` (the
    wake-up was lost: Redis down at the time) and rows `queued` whose apply job is gone or failed (a worker
    killed). A row whose job is only waiting in a long queue is left alone. Applying is idempotent, so a
    late duplicate is harmless. Returns how many rows were handed over again."""
    cutoff = clock.now() - REQUEUE_AFTER
    with transaction(database_url, readonly=True) as session:
        stale = dict(session.execute(select(WeComCallback.id, WeComCallback.status).where(
            WeComCallback.status.in_(("received", "queued")), WeComCallback.received_at < cutoff)
            .order_by(WeComCallback.id).limit(500)).all())
    try:
        queued = [i for i, status in stale.items() if status == "queued"]
        waiting = dispatch.jobs_on_their_way([apply_job_id(i) for i in queued])
        lost = [i for i in queued if apply_job_id(i) not in waiting]
        if lost:
            _queue_apply(lost, database_url)
    except (RedisError, OSError) as exc:
        log.warning("wecom callbacks: could not re-queue lost jobs (next sweep tries again): %s", exc)
        return 0
    received = len(stale) - len(queued)
    return len(lost) + (received if received and wake(database_url) else 0)
