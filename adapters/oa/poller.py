"""Reading open requests back from OA, so a decision whose callback never arrived is applied all the same.

Every worker's sweep (engine.events.every_sweep) checks whether a poll is due — one Redis `SET NX EX` per
FINFLOW_OA_POLL_SECONDS, so N workers poll once between them — and queues `poll` on the `sync` queue. A poll
reads the sign-off log of the open twins least recently polled (a batch per run) and stores each decision
line as a decision keyed by its log id (what a callback with that logid already stored is not stored
again), then applies what is new through the callback's own path. The sweep also re-applies decisions left
`received` by a process that died, and runs the nightly reconciliation when it is due.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from sqlalchemy import select

from adapters.oa import inbound
from adapters.oa.config import OAConfig
from adapters.oa.models import OARequest
from adapters.oa.system import OAError, system
from engine import clock
from engine.db import transaction
from engine.outbox import dispatch

log = logging.getLogger("finflow.oa.poller")
POLL_FLAG = "finflow:oa:poll-due"
POLL_JOB = "adapters.oa.poller.poll"
BATCH = 200
OPEN_STATES = ("pending", "synced", "retrying", "mismatch", "failed")


def register() -> None:
    from engine import events

    events.every_sweep("oa.poll", sweep)


def sweep(database_url: str | None = None) -> None:
    """Cheap unless something is due: queue a poll once per interval, apply stale decisions, reconcile nightly."""
    try:
        config = OAConfig.from_env()
    except ValueError:
        return
    if config is None:
        return
    inbound.apply_stale(database_url)
    if config.poll_seconds:
        try:
            due = dispatch.connection(dispatch.redis_url()).set(POLL_FLAG, "1", nx=True, ex=config.poll_seconds)
            if due:
                dispatch.run_job("sync", POLL_JOB, db_url=database_url)
        except (RedisError, OSError) as exc:
            log.warning("oa poll: could not queue the poll (next sweep tries again): %s", exc)
    from adapters.oa import reconcile

    reconcile.run_nightly_if_due(database_url)


def poll(database_url: str | None = None, limit: int = BATCH) -> dict[str, int]:
    """Read the logs of up to `limit` open twins; returns how many requests were read and decisions found."""
    config = OAConfig.from_env()
    if config is None:
        return {"requests": 0, "new": 0, "failed": 0}
    with transaction(database_url, readonly=True) as session:
        twins = session.execute(select(OARequest.instance_id, OARequest.request_id, OARequest.creator).where(
            OARequest.state.in_(OPEN_STATES), OARequest.request_id.is_not(None))
            .order_by(OARequest.polled_at.is_not(None), OARequest.polled_at).limit(limit)).all()
    client, counts = system(config), {"requests": 0, "new": 0, "failed": 0}
    for instance_id, request_id, creator in twins:
        try:
            counts["new"] += read_back(client, request_id, creator, database_url)
            counts["requests"] += 1
        except OAError as exc:  # one request OA cannot show must not stop the others
            counts["failed"] += 1
            log.warning("oa poll: request %s (instance %s): %s", request_id, instance_id, exc)
        with transaction(database_url) as session:
            session.get(OARequest, instance_id).polled_at = clock.now()
    return counts


def read_back(client, request_id: str, creator: str | None, database_url: str | None, source: str = "poll") -> int:
    """Store and apply the decision lines of one request's log not seen before; how many were new."""
    new = 0
    for entry in client.logs(creator or "1", request_id):
        if entry.action not in inbound.ACTIONS:
            continue
        decision_id, is_new = inbound.store({
            "dedupe_key": f"log:{request_id}:{entry.log_id}", "source": source, "request_id": request_id,
            "oa_node": entry.node_id, "oa_user": entry.operator_id, "action": entry.action,
            "remark": entry.remark, "log_id": entry.log_id, "client_ip": None}, database_url)
        if is_new:
            new += 1
            inbound.apply(decision_id, database_url)
    return new
