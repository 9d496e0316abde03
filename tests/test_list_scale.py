"""Lists that do not grow with the tables (issue 19): the scoped instance list, the to-do list, the timeline
and the searches answer the same rows as the one-WHERE-clause rule (engine.services.access.visible) for
every role, and on PostgreSQL, with tens of thousands of seeded instances, their plans read indexes only —
no sequential scan on instances, tasks, task_candidates or history_events."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from engine.db import get_engine, is_postgres, transaction
from engine.history import Actor
from engine.models import Instance, Task, TaskCandidate, User
from engine.services import access, queries
from engine.services.instances import copy_instance
from engine.services.tasks import complete_task
from tests.helpers import claim, contract, payment, ready, start

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

BIG_TABLES = ("instances", "tasks", "task_candidates", "history_events")
VIEWERS = {"suxiaoyun": "employee", "zhoujie": "employee", "sunpeng": "manager", "huangmin": "director",
           "zhaoqiang": "director", "yangxue": "finance", "linna": "cashier", "chenjing": "legal",
           "fengli": "auditor", "guoxin": "manager (approver of the claims)", "jiangtao": "employee (copied)"}


def _rule(session, viewer: User, **criteria) -> list[str]:
    """The instance ids the data-scope rule allows, newest first: the list as it was before issue 19."""
    stmt = access.scope_instances(session, queries.instance_filter(**criteria), viewer)
    return list(session.scalars(stmt.with_only_columns(Instance.id).order_by(*queries.NEWEST)))


def _listed(session, viewer: User, per_page: int, **criteria) -> tuple[list[str], list[queries.Page]]:
    pages, found = [], []
    for number in range(1, 200):
        page = queries.search_instances(session, viewer, page=number, per_page=per_page, **criteria)
        pages.append(page)
        found += [i.id for i in page.items]
        if len(page.items) < per_page:
            return found, pages
    raise AssertionError("more pages than expected")


@pytest.fixture
def world():
    """Claims, a payment and a contract across departments; some approved, one copied (抄送) to jiangtao."""
    ids = [start("reimbursement", "suxiaoyun", claim("办公", 800 + i)) for i in range(4)]
    ids += [start("payment", "zhoujie", payment(20000, "SALES-TRAVEL-2026")),
            start("contract", "tangjie", contract(90000)), start("reimbursement", "zhoujie", claim("差旅", 2600))]
    for iid in ids[:2]:  # the first approval: completed tasks in the history
        task = ready(iid)[0]
        with transaction() as session:
            complete_task(session, Actor(task.candidates[0], "test"), task.id, "approve", "同意", {})
    with transaction() as session:
        copy_instance(session, Actor("suxiaoyun", "test"), ids[2], ["jiangtao"], "请知悉")
    return ids


@pytest.mark.parametrize("viewer", sorted(VIEWERS))
def test_every_page_holds_what_the_rule_allows_in_order(world, viewer):
    with transaction(readonly=True) as session:
        user = session.get(User, viewer)
        expected = _rule(session, user)
        for per_page in (1, 2, 100):
            found, pages = _listed(session, user, per_page)
            assert found == expected, VIEWERS[viewer]
            assert {p.total for p in pages} == {len(expected)} and not any(p.total_estimated for p in pages)
        for criteria in ({"status": "running"}, {"process_key": "reimbursement"}, {"approver": "guoxin"},
                         {"starter": "suxiaoyun"}):
            assert _listed(session, user, 2, **criteria)[0] == _rule(session, user, **criteria), criteria


@pytest.mark.parametrize("viewer", sorted(VIEWERS))
def test_task_lists_keep_the_scope_and_mine_is_the_open_work(world, viewer):
    with transaction(readonly=True) as session:
        user = session.get(User, viewer)
        seen = set(_rule(session, user))
        tasks = queries.list_tasks(session, user, per_page=200)
        every = session.scalars(select(Task).where(Task.instance_id.in_(seen or {""}))).all()
        assert {t.id for t in tasks.items} == {t.id for t in every} and tasks.total == len(every)
        held = session.scalars(select(Task).join(TaskCandidate, TaskCandidate.task_id == Task.id)
                               .where(TaskCandidate.user_id == viewer)).all()
        mine = queries.list_tasks(session, user, mine=True, per_page=200)
        assert {t.id for t in mine.items} == {t.id for t in held if t.status in queries.OPEN}
        done = queries.list_tasks(session, user, mine=True, status="completed", per_page=200)
        assert {t.id for t in done.items} == {t.id for t in held if t.status == "completed"}


def test_a_long_list_is_counted_up_to_the_cap(world, monkeypatch):
    monkeypatch.setattr(queries, "COUNT_CAP", 3)
    with transaction(readonly=True) as session:
        auditor = session.get(User, "fengli")
        first = queries.search_instances(session, auditor, per_page=2)
        assert (first.total, first.total_estimated, first.meta["total_estimated"]) == (3, True, True)
        deep = queries.search_instances(session, auditor, page=3, per_page=2)  # the count reaches the page
        assert (deep.total, deep.total_estimated, len(deep.items)) == (6, True, 2)
        last = queries.search_instances(session, auditor, page=4, per_page=2)
        assert (last.total, last.total_estimated, len(last.items)) == (len(world), False, 1)


# -- PostgreSQL at scale -------------------------------------------------------------------------------

pg_only = pytest.mark.skipif(os.environ.get("FINFLOW_TEST_DB", "sqlite") != "postgres",
                             reason="plans and COPY seeding are PostgreSQL's (FINFLOW_TEST_DB=postgres)")


@pytest.fixture
def seeded(db):
    """20,000 seeded instances, about 200,000 history events (bench/seed_history.py's seed(), COPY) on top
    of the demo org, analysed."""
    import seed_history

    report = seed_history.seed(db, 20_000, 200_000, days=400)
    assert report.instances == 20_000 and report.events > 150_000
    return report


def _plans(session, call) -> list[str]:
    """EXPLAIN of every statement `call` runs on the big tables."""
    grabbed = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith("EXPLAIN") and any(t in statement for t in BIG_TABLES):
            grabbed.append((statement, parameters))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return ["\n".join(r[0] for r in session.connection().exec_driver_sql("EXPLAIN " + s, p)) for s, p in grabbed]


def _assert_no_seq_scan(session, name, call) -> None:
    for plan in _plans(session, call):
        scans = [line.strip() for line in plan.splitlines()
                 if any(f"Seq Scan on {table} " in line + " " for table in BIG_TABLES)]
        assert not scans, f"{name}: {scans}\n{plan}"


@pg_only
def test_at_scale_pages_match_the_rule_and_plans_read_indexes(seeded):
    """One seeded database (seeding is most of this test's time), every role and every read on it."""
    with transaction(readonly=True) as session:
        assert is_postgres(session)
        for viewer in ("suxiaoyun", "sunpeng", "huangmin", "yangxue", "fengli"):
            _check_role(session, session.get(User, viewer))
        _check_history_reads(session, session.get(User, "fengli"))


def _check_role(session, user: User) -> None:
    expected = _rule(session, user)
    for number in (1, 3):
        page = queries.search_instances(session, user, page=number, per_page=20)
        assert [i.id for i in page.items] == expected[(number - 1) * 20:number * 20], user.id
        if not page.total_estimated:
            assert page.total == len(expected), user.id
        elif page.total == queries.COUNT_CAP:
            assert len(expected) > queries.COUNT_CAP, user.id
    mine = queries.list_tasks(session, user, mine=True)
    held_open = session.scalar(select(func.count()).select_from(Task).join(
        TaskCandidate, TaskCandidate.task_id == Task.id).where(TaskCandidate.user_id == user.id,
                                                               Task.status.in_(queries.OPEN)))
    assert mine.total == held_open
    _assert_no_seq_scan(session, f"instance list of {user.id}", lambda: queries.search_instances(session, user))
    _assert_no_seq_scan(session, f"to-do list of {user.id}", lambda: queries.list_tasks(session, user, mine=True))


def _check_history_reads(session, auditor: User) -> None:
    sample = session.scalar(select(Instance).where(Instance.status == "completed").offset(777).limit(1))
    moment = sample.started_at
    reads = {
        "timeline": lambda: queries.history(session, auditor, sample.id),
        "business key": lambda: queries.search_instances(session, auditor, business_key=sample.business_key),
        "applicant": lambda: queries.search_instances(session, auditor, starter=sample.starter_id),
        "date range": lambda: queries.search_instances(session, auditor, started_from=moment - timedelta(days=7),
                                                       started_to=moment),
        "status": lambda: queries.search_instances(session, auditor, status="withdrawn"),
        "approver": lambda: queries.search_instances(session, auditor, approver="sunpeng"),
    }
    for name, call in reads.items():
        _assert_no_seq_scan(session, name, call)
    assert [e.seq for e in queries.history(session, auditor, sample.id)] == list(range(1, sample.last_seq + 1))
    found = queries.search_instances(session, auditor, business_key=sample.business_key)
    assert [i.id for i in found.items] == [sample.id] and found.total == 1
