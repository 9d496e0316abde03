"""Running the WSGI app: waitress in this process, or gunicorn's pre-forked processes on one port.

Every API process is stateless (the database and Redis hold everything), so N processes on one host
behave like N hosts behind a load balancer. The app is built in each process after the fork, never
before: a database pool or Redis connection must not be shared across processes.
"""

from __future__ import annotations

from typing import Any

import click


def serve_one(host: str, port: int, *, threads: int) -> None:
    """waitress in this process; in embedded mode (no REDIS_URL) also the sweeper (retries, timers)."""
    from waitress import serve

    from api import create_app
    from engine import heap
    from engine.outbox.dispatch import redis_url
    from engine.outbox.sweeper import SweeperThread
    from engine.outbox.worker import periodic

    app = create_app()
    heap.settle()
    sweeper = None
    if redis_url() is None:  # embedded mode: no worker runs retries or timers, so this process does
        sweeper = SweeperThread(work=periodic())
        sweeper.start()
        click.echo("embedded mode (no REDIS_URL): side effects and timers run in this process")
    try:
        serve(app, host=host, port=port, threads=threads)
    finally:
        if sweeper is not None:
            sweeper.stop()


def serve_processes(host: str, port: int, *, processes: int, threads: int) -> None:
    """gunicorn: one arbiter, `processes` forked workers with `threads` threads each, sharing the port."""
    from gunicorn.app.base import BaseApplication

    class _Application(BaseApplication):
        def load_config(self) -> None:
            options: dict[str, Any] = {"bind": f"{host}:{port}", "workers": processes, "threads": threads,
                                       "worker_class": "gthread", "accesslog": None, "graceful_timeout": 10,
                                       "control_socket_disable": True}
            for key, value in options.items():
                if key in self.cfg.settings:  # control_socket_disable: gunicorn 24+
                    self.cfg.set(key, value)

        def load(self):
            from api import create_app
            from engine import heap

            app = create_app()  # in the forked worker
            heap.settle()
            return app

    _Application().run()
