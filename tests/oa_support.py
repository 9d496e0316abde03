"""Fixtures for the OA tests: the E9 simulator on a free port with the demo workflows, finflow's HTTP server
(the simulated node Action calls /oa/callback there), FINFLOW_OA_* pointed at both and the demo users linked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import adapters
from adapters.oa.config import OAConfig
from adapters.oa.models import OADecision, OARequest, OASubmission
from adapters.oa.simulator import OASimulator
from adapters.oa.simulator.cli import DEMO_SECRET, demo_env
from adapters.oa.users import oa_user_of, sync_links
from engine import clock
from engine.db import transaction
from engine.outbox import dispatch, sweeper
from tests.live_server import serving


@dataclass
class OATestbed:
    sim: OASimulator
    url: str  # finflow

    def twin(self, instance_id: str) -> OARequest:
        with transaction() as session:
            row = session.get(OARequest, instance_id)
            assert row is not None, f"instance {instance_id} has no OA twin"
            session.expunge(row)
            return row

    def node(self, instance_id: str) -> str:
        return self.sim.node_of(self.twin(instance_id).request_id)

    def oa_user(self, user_id: str) -> str:
        with transaction() as session:
            return oa_user_of(session, user_id)

    def submissions(self, instance_id: str) -> list[OASubmission]:
        with transaction() as session:
            rows = list(session.scalars(select(OASubmission).where(OASubmission.instance_id == instance_id)
                                        .order_by(OASubmission.id)))
            session.expunge_all()
            return rows

    def decisions(self, instance_id: str | None = None) -> list[OADecision]:
        with transaction() as session:
            query = select(OADecision).order_by(OADecision.id)
            if instance_id:
                query = query.where(OADecision.instance_id == instance_id)
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows

    def retry_due(self, after: timedelta = timedelta(hours=2)) -> None:
        """Let backoffs pass and run what is due, as the sweeper thread would."""
        clock.advance(after)
        sweeper.sweep()
        dispatch.drain_background()

    def settle(self, seconds: float = 5.0) -> None:
        """Wait for the callbacks the simulator fires in the background to be answered."""
        deadline = time.monotonic() + seconds
        while self.sim.callbacks_in_flight() and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="session")
def oa_key_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("oa") / "client-key.pem"


@pytest.fixture
def oa(monkeypatch: pytest.MonkeyPatch, oa_key_file: Path) -> Iterator[OATestbed]:
    adapters.load_all()
    with serving(threads=8) as url:
        sim = OASimulator(callback_url=f"{url}/oa/callback", callback_secret=DEMO_SECRET)
        sim.start()
        for name, value in demo_env(sim, oa_key_file, url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("FINFLOW_OA_POLL_SECONDS", "0")
        monkeypatch.setenv("FINFLOW_OA_RECONCILE_HOUR", "off")
        monkeypatch.setenv("FINFLOW_OA_TIMEOUT", "2")
        monkeypatch.setenv("FINFLOW_QUIET_HOURS", "off")
        sync_links(OAConfig.from_env())
        bed = OATestbed(sim, url)
        try:
            yield bed
            bed.settle()
        finally:
            sim.stop()
