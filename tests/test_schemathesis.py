"""schemathesis against a live server: no input is a server error, every answer matches the document.

The API runs under waitress on a free port in this process, against the test database with the demo
company and processes the fixtures load. schemathesis (its CLI, in a subprocess) reads the served
OpenAPI document, then runs the coverage, fuzzing and stateful phases with a bounded number of cases per
operation, once as an administrator (zhangwei) and once as an employee (suxiaoyun), with a fixed seed so
a failure can be reproduced.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.db import transaction
from engine.services.auth import issue_token
from tests.live_server import serving

ST = Path(sys.executable).with_name("st")
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
# fuzzing: 10 cases per operation; stateful: 80 scenarios of up to 8 linked calls (start → read → act …);
# coverage: the boundary cases schemathesis derives from each schema
CONFIG = """
[generation]
max-examples = 10

[phases.stateful]
max-steps = 8

[phases.stateful.generation]
max-examples = 80
"""
RUN_TIMEOUT = 80  # seconds per run: a hang fails the test instead of the suite


@pytest.fixture
def live_api() -> Iterator[str]:
    """The API on 127.0.0.1:<free port>, served by waitress in a thread; stopped after the test."""
    with serving(threads=4) as url:
        yield f"{url}/api/v1"


def _token(user_id: str) -> str:
    with transaction() as session:
        return issue_token(session, user_id, "schemathesis")


def _run_schemathesis(base: str, token: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    command = [str(ST), "--config-file", str(config), "run", f"{base}/openapi.json", "--checks", CHECKS,
               "--phases", "coverage,fuzzing,stateful", "--seed", "20261123", "--generation-database", "none",
               "--continue-on-failure", "--header", f"Authorization: Bearer {token}", "--workers", "1",
               "--request-timeout", "20", "--no-color"]
    return subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})


@pytest.mark.parametrize("user_id", ["zhangwei", "suxiaoyun"])
def test_no_server_error_and_every_response_as_documented(live_api, tmp_path, user_id):
    started = time.monotonic()
    result = _run_schemathesis(live_api, _token(user_id), tmp_path)
    report = result.stdout[-20000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", result.stdout).groups())
    assert generated == passed > 1000, report  # it really ran, and every case passed every check
    assert time.monotonic() - started < RUN_TIMEOUT
