"""Fixtures for the WeCom tests: the simulator on a free port with the demo company, finflow pointed at it,
and (when a test needs callbacks or the approver page) finflow's HTTP server on another free port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

import adapters
from adapters.wecom.config import WeComConfig
from adapters.wecom.simulator import Simulator
from tests.live_server import serving


@dataclass
class WeComTestbed:
    sim: Simulator
    config: WeComConfig
    finflow_url: str | None = None  # set by live_finflow

    def click(self, userid: str, task_id: str, key: str, **kwargs) -> httpx.Response:
        return self.sim.click(userid, task_id, key, **kwargs)


def point_finflow_at(monkeypatch: pytest.MonkeyPatch, config: WeComConfig) -> None:
    for name, value in config.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def wecom(monkeypatch: pytest.MonkeyPatch) -> Iterator[WeComTestbed]:
    """A started simulator with the demo org; FINFLOW_WECOM_* point finflow at it for this test."""
    adapters.load_all()  # the WeCom subscription must be known to the commands the test runs
    sim = Simulator()
    sim.start()
    bed = WeComTestbed(sim, sim.config("http://127.0.0.1:9"))
    point_finflow_at(monkeypatch, bed.config)
    yield bed
    sim.stop()


@pytest.fixture
def live_finflow(wecom: WeComTestbed, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """finflow's app under waitress on a free port; the simulator's callbacks and the cards' links go there."""
    with serving(threads=8) as url:
        wecom.config = wecom.sim.config(url)
        wecom.finflow_url, wecom.sim.callback_url = url, f"{url}/wecom/callback"
        point_finflow_at(monkeypatch, wecom.config)
        yield url
