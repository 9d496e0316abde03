"""finflow's app served by waitress on a free 127.0.0.1 port, in a thread of the test process (so the
test's environment settings apply), for tests that need real HTTP: browsers, simulators calling back,
schemathesis, health probes beside a busy server.

Stopping is done from waitress's own loop (through its trigger), never by closing the server from the
test's thread: waitress closes its trigger pipe by file descriptor number, and a close racing the loop
can hit a descriptor the next test's server has been given meanwhile (seen as EBADF in a later teardown).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from waitress import wasyncore
from waitress.server import create_server

from api import create_app

READY_SECONDS = 10.0


@contextmanager
def serving(threads: int = 4, *, app=None) -> Iterator[str]:
    """Serve `app` (default: a fresh create_app()) and yield its base URL once /api/v1/health answers."""
    server = create_server(app or create_app(), host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, name="waitress-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    try:
        _wait_healthy(url)
        yield url
    finally:
        # Run by the loop: every channel closed (kept-alive client connections too), so the loop ends.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
    assert not thread.is_alive(), "the test server did not stop"


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the test server at {url} did not answer /api/v1/health")
        time.sleep(0.05)
