"""The tamper-evident audit trail: every history row is hash-chained per instance, each day is anchored,
`verify` finds the first broken link (edited, deleted, or rewritten with the algorithm known), and
archiving old finished instances keeps chains, anchors and the timeline intact."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text

from engine import clock
from engine.audit import anchors, chain
from engine.audit.archive import ARCHIVED_STATE, archive
from engine.audit.verify import verify
from engine.cli import main
from engine.db import transaction
from engine.errors import Conflict, InvalidInput
from engine.history import Actor
from engine.models import AuditAnchor, HistoryArchive, HistoryEvent
from engine.services.instances import record_integration_incident
from tests.helpers import act, claim, events, instance, ready, start

STARTER = "suxiaoyun"
MIGRATION = Path(__file__).resolve().parent.parent / "engine/migrations/versions/0009_audit_chain.py"


def reimbursed(amount: int = 8000) -> str:
    """A 差旅 claim run to its end: manager, director, finance, cashier."""
    iid = start("reimbursement", STARTER, claim("差旅", amount))
    while ready(iid):
        act(iid, ready(iid)[0].node_id)
    assert instance(iid).status == "completed"
    return iid


def sql(statement: str, **params) -> None:
    """What someone with database access does behind the engine's back."""
    with transaction() as session:
        session.execute(text(statement), params)


def kinds(report, instance_id: str) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in report.for_instance(instance_id)]


def anchored_tomorrow() -> list[AuditAnchor]:
    """Move to the next day (past the settling time) and anchor every day so far."""
    clock.advance(timedelta(days=1, hours=1))
    return anchors.compute_missing()


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_hash_of_the_written_row_equals_the_hash_of_the_row_read_back():
    at = datetime(2026, 12, 3, 11, 22, 33, 456789, tzinfo=UTC)
    written = {"instance_id": "i", "seq": 1, "type": "t", "at": at, "actor_id": None, "channel": "api",
               "client_ip": None, "user_agent": None, "task_id": None, "node_id": None,
               "payload": {"amount": Decimal("8000.00"), "on": at, "名称": "差旅", "nested": {"b": 1, "a": [1.5]}}}
    read_back = {**written, "at": at.replace(tzinfo=None),
                 "payload": {"nested": {"a": [1.5], "b": 1}, "名称": "差旅", "on": at.isoformat(), "amount": "8000.00"}}
    assert chain.event_hash(chain.GENESIS, written) == chain.event_hash(chain.GENESIS, read_back)
    assert chain.event_hash(chain.GENESIS, written) != chain.event_hash(chain.GENESIS, {**written, "actor_id": ""})


def test_a_normal_reimbursement_verifies_clean():
    iid = reimbursed()
    history = events(iid)
    previous = chain.GENESIS
    for event in history:
        assert event.hash == chain.event_hash(previous, chain.fields_of(event))
        previous = event.hash
    assert instance(iid).chain_head == previous
    report = verify()
    assert report.ok, report.problems
    assert (report.instances, report.events) == (1, len(history))
    result = cli("audit", "verify")
    assert result.exit_code == 0
    assert f"checked 1 instance(s), {len(history)} event(s), 0 anchor(s)" in result.output


def test_an_edited_payload_is_found_at_its_instance_and_seq():
    iid, other = reimbursed(), reimbursed(9000)
    sql("UPDATE history_events SET payload = :payload WHERE instance_id = :iid AND seq = 3",
        payload='{"comment": "改过了"}', iid=iid)
    report = verify()
    assert kinds(report, iid) == [("hash_mismatch", 3)]
    assert report.for_instance(other) == []
    result = cli("audit", "verify")
    assert result.exit_code == 1
    assert f"instance {iid} seq 3: hash_mismatch" in result.output


def test_an_edited_actor_is_found_too():
    iid = reimbursed()
    seq = next(e.seq for e in events(iid) if e.type == "task.completed")
    sql("UPDATE history_events SET actor_id = 'someone_else' WHERE instance_id = :iid AND seq = :seq", iid=iid, seq=seq)
    assert kinds(verify(), iid) == [("hash_mismatch", seq)]


def test_a_deleted_row_is_found():
    iid = reimbursed()
    last = instance(iid).last_seq
    sql("DELETE FROM history_events WHERE instance_id = :iid AND seq = 5", iid=iid)
    assert kinds(verify(), iid) == [("seq_gap", 5)]
    sql("DELETE FROM history_events WHERE instance_id = :iid AND seq > 4", iid=iid)  # the whole tail
    assert kinds(verify(), iid) == [("last_seq_mismatch", 5)]
    assert instance(iid).last_seq == last


def test_an_edited_chain_head_is_found():
    iid = reimbursed()
    sql("UPDATE instances SET chain_head = :head WHERE id = :iid", head="f" * 64, iid=iid)
    assert kinds(verify(), iid) == [("chain_head_mismatch", instance(iid).last_seq)]


def recompute_chain(iid: str) -> None:
    """The attacker who knows the algorithm: rehash the instance's rows after the edit, fix its head."""
    with transaction() as session:
        previous = chain.GENESIS
        for event in session.scalars(select(HistoryEvent).where(HistoryEvent.instance_id == iid)
                                     .order_by(HistoryEvent.seq)):
            previous = chain.event_hash(previous, chain.fields_of(event))
            session.execute(text("UPDATE history_events SET hash = :h WHERE id = :id"), {"h": previous, "id": event.id})
        session.execute(text("UPDATE instances SET chain_head = :h, last_seq = (SELECT count(*) FROM history_events "
                             "WHERE instance_id = :iid) WHERE id = :iid"), {"h": previous, "iid": iid})


def test_an_edit_with_the_chain_recomputed_is_caught_by_the_day_anchor():
    iid, other = reimbursed(), reimbursed(9000)
    made = anchored_tomorrow()
    assert made and sum(a.events for a in made) == len(events(iid)) + len(events(other))
    assert anchors.compute_missing() == []  # nothing left to do: the periodic check is a no-op
    assert verify().ok
    edited = events(iid)[2]
    sql("UPDATE history_events SET payload = :payload WHERE id = :id", payload='{"comment": "改过了"}', id=edited.id)
    recompute_chain(iid)
    report = verify()
    assert report.for_instance(iid) == []  # the chain itself looks fine now
    day = anchors.local_day(edited.at)
    assert [(p.kind, p.day) for p in report.problems] == [("anchor_digest_mismatch", day)]
    assert cli("audit", "verify").exit_code == 1


def test_a_deletion_with_the_chain_recomputed_is_caught_by_the_anchor_count():
    iid = reimbursed()
    anchored_tomorrow()
    last = events(iid)[-1]
    sql("DELETE FROM history_events WHERE id = :id", id=last.id)
    recompute_chain(iid)
    report = verify()
    assert report.for_instance(iid) == []
    assert [p.kind for p in report.problems] == ["anchor_count_mismatch"]


def test_anchors_cover_every_day_and_chain_to_each_other():
    iid = reimbursed()
    clock.advance(timedelta(days=3, hours=1))
    result = cli("audit", "anchor")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 3
    with transaction() as session:
        rows = anchors.all_anchors(session)
    assert [f"{a.day.isoformat()} {a.events:>8} {a.digest}" for a in rows] == lines
    assert rows[0].previous == chain.GENESIS and all(b.previous == a.digest for a, b in pairwise(rows))
    assert sum(a.events for a in rows) == len(events(iid))
    assert [a.events for a in rows[-2:]] == [0, 0]  # quiet days are anchored too
    assert rows[-1].day == anchors.last_complete_day()
    sql("DELETE FROM audit_anchors WHERE day = :day", day=rows[1].day)
    assert "anchor_missing" in [p.kind for p in verify().problems]


def test_archive_refuses_less_than_180_days(monkeypatch):
    with pytest.raises(InvalidInput, match="180"):
        archive(older_than_days=179)
    monkeypatch.setenv("FINFLOW_HISTORY_RETENTION_DAYS", "90")
    with pytest.raises(InvalidInput, match="180"):
        archive()
    result = CliRunner().invoke(main, ["audit", "archive", "--older-than-days", "30"])
    assert result.exit_code == 1 and "at least 180 days" in result.output


def test_archiving_an_old_finished_instance_keeps_chain_anchors_and_timeline(as_user):
    old = reimbursed()
    running = start("reimbursement", STARTER, claim())
    history = [(e.seq, e.type, e.hash) for e in events(old)]
    clock.advance(timedelta(days=181))
    anchors.compute_missing()
    assert archive(dry_run=True).instances == 1
    assert cli("audit", "archive", "--dry-run").output.startswith("would archive 1 instance(s), "
                                                                   f"{len(history)} history event(s)")
    assert archive(older_than_days=200).instances == 0  # not old enough for that
    result = archive()
    assert (result.instances, result.events) == (1, len(history))
    assert archive().instances == 0  # a rerun finds nothing left

    with transaction() as session:
        live = session.scalar(select(func.count()).where(HistoryEvent.instance_id == old))
        kept = [(e.seq, e.type, e.hash) for e in session.scalars(
            select(HistoryArchive).where(HistoryArchive.instance_id == old).order_by(HistoryArchive.seq))]
    assert live == 0 and kept == history
    archived = instance(old)
    assert archived.archived_at is not None and archived.state == ARCHIVED_STATE
    assert instance(running).archived_at is None and events(running)

    report = verify()
    assert report.ok, report.problems
    assert report.events == len(history) + len(events(running)) and report.anchors >= 181

    timeline = as_user(STARTER).get(f"/api/v1/instances/{old}/history")
    assert timeline.status_code == 200
    assert [(e["seq"], e["type"]) for e in timeline.json["events"]] == [(s, t) for s, t, _ in history]

    with transaction() as session, pytest.raises(Conflict, match="归档"):
        record_integration_incident(session, Actor("oa"), old, "oa", "late", "an incident after archiving")

    sql("UPDATE history_archive SET payload = '{}' WHERE instance_id = :iid AND seq = 2", iid=old)
    assert kinds(verify(), old) == [("hash_mismatch", 2)]  # archived history is verified like live history


def test_the_migration_backfills_chains_of_existing_history():
    iid, other = reimbursed(), reimbursed(9000)
    expected = {e.id: e.hash for e in events(iid) + events(other)}
    sql("UPDATE history_events SET hash = 'x'")
    sql("UPDATE instances SET chain_head = NULL")
    spec = importlib.util.spec_from_file_location("migration_0009", MIGRATION)
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    with transaction() as session:
        migration._backfill_chains(session.connection())
    assert {e.id: e.hash for e in events(iid) + events(other)} == expected
    assert verify().ok
