"""finflow HTTP load benchmark: gunicorn (`finflow serve --processes N`) on PostgreSQL under 8 / 32 / 64
concurrent clients doing "start a reimbursement + 3 completions", beside the health endpoint on the same
server, then a cProfile of one API process serving the same flow.

    python bench/http_bench.py [--workers 2,4] [--clients 1,2,4,8,32,64] [--seconds 6] [--rounds 2]

Real parts: PostgreSQL (its own bench database, rebuilt), a private redis-server started by the bench,
gunicorn's gthread workers, and a load client in a separate process (threads + httpx, keep-alive, one
closed loop per client). Figures are printed, never asserted; the bench exits non-zero only when a call
answers something unexpected. See bench/README.md ("HTTP load benchmark").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("FINFLOW_HTTP_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_http_bench")
STARTER = "suxiaoyun"
EXPECTED_PATH = ["manager_approval", "finance_review", "cashier_payment"]
FLOW_KINDS = ("start", "complete")
CLIENT_TIMEOUT = 60.0  # seconds one call may take before the client counts it as an error


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# == the load client (its own process: `--client`, a JSON spec on stdin, a JSON result on stdout) ========
# It imports httpx and the standard library only, so its start-up and CPU stay small and apart from the
# server's; every client thread runs one closed loop (the next call once the previous one answered).


class Load:
    """One run of `clients` threads against `base` for `warmup` + `seconds`. A call counts when it ends
    inside the measured window; `rate` (flows/s) turns the closed loop into a paced one."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.samples: dict[str, list[float]] = {"start": [], "complete": [], "health": []}
        self.errors: list[str] = []
        self.error_count = 0
        self.flows = 0
        self.all_calls = 0  # answered calls in the warm-up and the window: what the server's CPU was spent on
        self.invoices = itertools.count(1)
        self.paced = itertools.count()
        self.lock = threading.Lock()
        now = time.monotonic()
        self.t0 = now
        self.measure_from = now + spec["warmup"]
        self.stop_at = self.measure_from + spec["seconds"]

    def run(self) -> dict[str, Any]:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.spec["clients"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.stop_at - time.monotonic() + CLIENT_TIMEOUT + 5)
        return {"samples": self.samples, "errors": self.errors[:20], "error_count": self.error_count,
                "flows": self.flows, "all_calls": self.all_calls, "window": self.spec["seconds"],
                "client_cpu": time.process_time()}

    def _loop(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)  # one keep-alive connection each
        with httpx.Client(base_url=self.spec["base"], timeout=CLIENT_TIMEOUT, limits=limits) as http:
            while time.monotonic() < self.stop_at:
                try:
                    if self.spec["mode"] == "health":
                        self._call(http, "health", "GET", "/api/v1/health", None, None, 200)
                    elif self._wait_for_slot():
                        self._flow(http)
                except Exception as exc:  # every failure is counted; the first few are reported
                    with self.lock:
                        self.error_count += 1
                        self.errors.append(repr(exc)[:400])

    def _wait_for_slot(self) -> bool:
        """Closed loop: go at once. Paced: sleep until this flow's turn (flow k starts at k / rate)."""
        rate = self.spec.get("rate")
        if not rate:
            return True
        at = self.t0 + next(self.paced) / rate
        if at >= self.stop_at:
            time.sleep(max(0.0, self.stop_at - time.monotonic()))
            return False
        time.sleep(max(0.0, at - time.monotonic()))
        return True

    def _flow(self, http) -> None:
        """Start a reimbursement of 1,200, then complete each next task as its first candidate."""
        body = {"process_key": "reimbursement", "data": self._claim()}
        instance = self._call(http, "start", "POST", "/api/v1/instances", STARTER, body, 201)
        path = []
        while instance is not None and instance["current_tasks"]:
            task = instance["current_tasks"][0]
            path.append(task["node_id"])
            done = self._call(http, "complete", "POST", f"/api/v1/tasks/{task['id']}/complete",
                              task["candidates"][0], {"action": "approve", "comment": "同意", "form_data": {}}, 200)
            instance = None if done is None else done["instance"]
        if instance is None:
            return  # the window closed mid-flow
        if instance["status"] != "completed" or path != EXPECTED_PATH:
            raise RuntimeError(f"unexpected end {instance['status']} after {path}")
        with self.lock:
            self.flows += 1

    def _claim(self) -> dict[str, Any]:
        number = f"{self.spec['invoice_prefix']}{next(self.invoices):08d}"
        invoice = {"number": number, "amount": 1200, "date": self.spec["invoice_date"]}
        return {"category": "办公", "amount": 1200, "reason": "采购办公用品", "invoices": [invoice]}

    def _call(self, http, kind: str, method: str, path: str, user: str | None, body: dict | None,
              expect: int) -> dict[str, Any] | None:
        """One call, timed; None once the window has closed (the flow stops there)."""
        if time.monotonic() >= self.stop_at:
            return None
        headers = {"Authorization": f"Bearer {self.spec['tokens'][user]}"} if user else {}
        began = time.perf_counter()
        response = http.request(method, path, json=body, headers=headers)
        elapsed = time.perf_counter() - began
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        with self.lock:
            self.all_calls += 1
        if self.measure_from <= time.monotonic() <= self.stop_at:
            self.samples[kind].append(elapsed * 1000)
        return response.json()


def client_main() -> None:
    json.dump(Load(json.load(sys.stdin)).run(), sys.stdout)


# == the profiled server (its own process: `--profiled-server PORT OUT`) ================================


def profiled_server_main(port: int, out: Path) -> None:
    """One API process (waitress, one thread, so requests are profiled one at a time) with every request
    under a shared cProfile; SIGTERM writes the stats and the per-request wall and CPU times to `out`."""
    import cProfile

    from waitress import serve

    from api import create_app
    from engine import heap

    app = create_app()
    heap.settle()
    profiler = cProfile.Profile()
    times: dict[str, float] = {"requests": 0, "wall": 0.0, "cpu": 0.0}

    def profiled(environ, start_response):
        wall, cpu = time.perf_counter(), time.thread_time()
        profiler.enable()
        try:
            return [b"".join(app(environ, start_response))]  # the response body is built inside the profile
        finally:
            profiler.disable()
            times["requests"] += 1
            times["wall"] += time.perf_counter() - wall
            times["cpu"] += time.thread_time() - cpu

    def dump(*_: object) -> None:
        profiler.dump_stats(str(out))
        Path(f"{out}.json").write_text(json.dumps(times))
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    serve(profiled, host="127.0.0.1", port=port, threads=1, _quiet=True)


# == the orchestrator ===================================================================================


class PrivateRedis:
    """A redis-server on a free port in the bench's directory, without persistence: the bench never needs
    to flush (or even look at) a Redis it did not start."""

    def __init__(self, directory: Path):
        import common

        self.port = common.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        with open(directory / "redis.log", "ab") as out:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(directory)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def wait_healthy(base: str, process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before answering")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what} at {base}")


def process_cpu(pid: int) -> float:
    """utime + stime of a process in seconds, threads included (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    with contextlib.suppress(FileNotFoundError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU since boot, for the share of the machine a run kept busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Gunicorn:
    """`finflow serve --processes N` in a session of its own; `cpu()` is its workers' CPU so far."""

    def __init__(self, processes: int, threads: int, env: dict[str, str], workdir: Path):
        import common

        self.processes = processes
        self.base = f"http://127.0.0.1:{common.free_port()}"
        port = self.base.rsplit(":", 1)[1]
        with open(workdir / f"gunicorn-{processes}.log", "ab") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "finflow"), "serve", "--host", "127.0.0.1", "--port", port,
                 "--processes", str(processes), "--threads", str(threads)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_healthy(self.base, self.process, f"gunicorn with {processes} workers")
        deadline = time.monotonic() + 60
        while len(children(self.process.pid)) < processes and time.monotonic() < deadline:
            time.sleep(0.2)

    def cpu(self) -> float:
        return sum(process_cpu(pid) for pid in children(self.process.pid))

    def stop(self) -> None:
        import common

        common.stop_processes([self.process])


@dataclass
class Run:
    """One client run's figures: calls per kind in the window, server CPU and machine busy share."""

    samples: dict[str, list[float]]
    window: float
    server_cpu: float  # seconds of the gunicorn workers' CPU over the whole run
    client_cpu: float  # seconds of the load client's CPU
    all_calls: int  # calls answered over the whole run (warm-up included), which both CPU figures cover
    busy: float
    flows: int

    @property
    def calls(self) -> int:
        return sum(len(self.samples[k]) for k in FLOW_KINDS) or len(self.samples["health"])

    @property
    def rate(self) -> float:
        return self.calls / self.window


@dataclass
class Level:
    """Every round of one (workers, clients) pair: the flow runs and the health runs."""

    workers: int
    clients: int
    flow: list[Run] = field(default_factory=list)
    health: list[Run] = field(default_factory=list)

    def samples(self, kind: str) -> list[float]:
        return [s for run in self.flow for s in run.samples[kind]]

    def rate(self, runs: list[Run]) -> float:
        return sum(r.calls for r in runs) / sum(r.window for r in runs) if runs else float("nan")

    @property
    def flow_rate(self) -> float:
        return self.rate(self.flow)

    @property
    def health_rate(self) -> float:
        return self.rate(self.health)

    @property
    def p99(self) -> float:
        import common

        return common.percentile(self.samples("start") + self.samples("complete"), 99)


class Bench:
    """Everything one run shares: the database, tokens, Redis, the work directory and the options."""

    def __init__(self, args: argparse.Namespace, workdir: Path, url: str, redis_url: str, tokens: dict[str, str]):
        self.args = args
        self.workdir = workdir
        self.url = url
        self.redis_url = redis_url
        self.tokens = tokens
        self.launches = itertools.count()
        self.failures: list[str] = []
        self.started_at = time.time()

    def client(self, base: str, mode: str, clients: int, seconds: float, rate: float | None = None,
               warmup: float | None = None) -> dict[str, Any]:
        """Run the load client process once and return what it measured."""
        from datetime import timedelta

        from engine.finance.invoices import today

        launch = next(self.launches)
        spec = {"base": base, "mode": mode, "clients": clients, "seconds": seconds, "rate": rate,
                "warmup": self.args.warmup if warmup is None else warmup, "tokens": self.tokens,
                # 20-digit invoice numbers unique over the run: start time, launch number, counter
                "invoice_prefix": f"{int(self.started_at) % 10**10:010d}{launch % 100:02d}",
                "invoice_date": (today() - timedelta(days=1)).isoformat()}
        done = subprocess.run([sys.executable, __file__, "--client"], input=json.dumps(spec), text=True,
                              capture_output=True, cwd=ROOT, timeout=seconds + spec["warmup"] + CLIENT_TIMEOUT + 60)
        if done.returncode != 0:
            raise SystemExit(f"the load client failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout)
        if result["error_count"]:
            self.failures.append(f"{mode} x{clients} on {base}: {result['error_count']} errors, e.g. "
                                 f"{result['errors'][:3]}")
        return result

    def measured(self, server: Gunicorn, mode: str, clients: int, seconds: float,
                 rate: float | None = None) -> Run:
        """A client run with the server's CPU and the machine's busy share over it (warm-up included)."""
        cpu0, (busy0, total0) = server.cpu(), machine_busy()
        result = self.client(server.base, mode, clients, seconds, rate)
        busy1, total1 = machine_busy()
        return Run(result["samples"], result["window"], server.cpu() - cpu0, result["client_cpu"],
                   result["all_calls"], (busy1 - busy0) / max(1, total1 - total0), result["flows"])


def measure_server(bench: Bench, workers: int) -> tuple[list[Level], Run | None, float | None]:
    """Every client level for `rounds` interleaved rounds on one gunicorn, then a paced run at half the
    saturation rate found; returns the levels, the paced run and its rate."""
    args = bench.args
    import common

    env = common.worker_env(bench.url, bench.redis_url)
    server = Gunicorn(workers, args.threads, env, bench.workdir)
    try:
        log(f"[{workers} workers] warming up ...")
        bench.client(server.base, "flow", max(workers * 2, 4), seconds=args.warmup * 2, warmup=0)
        levels = [Level(workers, c) for c in args.clients]
        for round_ in range(args.rounds):
            for level in levels:
                log(f"[{workers} workers] round {round_ + 1}/{args.rounds}: {level.clients} clients")
                level.flow.append(bench.measured(server, "flow", level.clients, args.seconds))
                level.health.append(bench.measured(server, "health", level.clients, args.health_seconds))
        knee = saturation(levels)
        rate = None if knee is None else knee.flow_rate / 2
        paced = None
        if rate:
            log(f"[{workers} workers] paced at {rate:.0f} requests/s (half the saturation rate)")
            paced = bench.measured(server, "flow", max(args.clients), args.seconds * 2, rate=rate / 4)
        return levels, paced, rate
    finally:
        server.stop()


def saturation(levels: list[Level]) -> Level | None:
    """The client count after which throughput stops rising (< 5 % more) while p99 climbs; the last level
    if throughput still rose at the end (the point lies beyond it), None when nothing was measured."""
    ordered = sorted(levels, key=lambda lv: lv.clients)
    for level, after in itertools.pairwise(ordered):
        if after.flow_rate < level.flow_rate * 1.05 and after.p99 > level.p99:
            return level
    return ordered[-1] if ordered else None


# -- the report -------------------------------------------------------------------------------------


def span(values: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}" if values else "-"


def level_table(levels: list[Level]) -> str:
    import common

    head = (f"{'workers':>7} {'clients':>7} {'req/s':>6} {'rounds':>9} {'start p50/p99 ms':>17} "
            f"{'complete p50/p99':>17} {'health/s':>8} {'÷ health':>8} {'rounds':>10} {'CPU ms/req srv/cli':>18} "
            f"{'CPUs busy':>9}")
    lines = [head, "-" * len(head)]
    for lv in levels:
        start, complete = lv.samples("start"), lv.samples("complete")
        ratios = [f.rate / h.rate for f, h in zip(lv.flow, lv.health, strict=True) if h.rate]
        calls = max(1, sum(r.all_calls for r in lv.flow))
        cpu = sum(r.server_cpu for r in lv.flow) / calls * 1000
        client = sum(r.client_cpu for r in lv.flow) / calls * 1000
        busy = sum(r.busy for r in lv.flow) / len(lv.flow) * 100
        lines.append(
            f"{lv.workers:>7} {lv.clients:>7} {lv.flow_rate:>6.1f} {span([r.rate for r in lv.flow]):>9} "
            f"{common.percentile(start, 50):>7.0f} / {common.percentile(start, 99):<7.0f} "
            f"{common.percentile(complete, 50):>7.0f} / {common.percentile(complete, 99):<7.0f} "
            f"{lv.health_rate:>8.0f} {lv.flow_rate / lv.health_rate:>8.2f} {span(ratios, '{:.2f}'):>10} "
            f"{cpu:>6.1f} / {client:<4.1f} {busy:>8.0f}%")
    return "\n".join(lines)


def saturation_lines(by_workers: dict[int, tuple[list[Level], Run | None, float | None]]) -> str:
    import common

    lines = []
    for workers, (levels, paced, rate) in by_workers.items():
        knee = saturation(levels)
        if knee is None:
            continue
        beyond = " (still rising: the point lies beyond)" if knee.clients == max(lv.clients for lv in levels) else ""
        lines.append(f"{workers} workers: saturation at {knee.clients} clients, {knee.flow_rate:.1f} requests/s "
                     f"(p99 {knee.p99:.0f} ms){beyond}")
        if paced is not None:
            start, complete = paced.samples["start"], paced.samples["complete"]
            lines.append(f"  paced at half that ({rate:.1f} requests/s asked, {paced.rate:.1f} done): "
                         f"start p50 {common.percentile(start, 50):.0f} / p99 {common.percentile(start, 99):.0f} ms, "
                         f"complete p50 {common.percentile(complete, 50):.0f} / p99 "
                         f"{common.percentile(complete, 99):.0f} ms (goal p99 < 50 ms), "
                         f"CPUs {paced.busy * 100:.0f} % busy")
    return "\n".join(lines)


# -- the profile ------------------------------------------------------------------------------------

# Where own (tottime) time goes, by the file a function lives in: the first pattern that matches wins.
AREAS = (("SQL: psycopg (driver, waiting on PostgreSQL)", ("/psycopg/", "/psycopg_binary/", "psycopg_pool")),
         ("SQL: SQLAlchemy (Core + ORM)", ("/sqlalchemy/",)),
         ("serialization: marshmallow / webargs / flask-smorest", ("/marshmallow/", "/webargs/", "/flask_smorest/",
                                                                   "/apispec/")),
         ("JSON (json, jsonschema)", ("/json/", "/jsonschema/", "/referencing/", "api/jsonio.py")),
         ("Flask / Werkzeug", ("/flask/", "/werkzeug/", "/flask_limiter/", "/limits/")),
         ("HTTP server (waitress)", ("/waitress/",)),
         ("SpiffWorkflow", ("/SpiffWorkflow/",)),
         ("script sandbox (RestrictedPython)", ("/RestrictedPython/", "script_engine.py")),
         ("Redis / rq (outbox hand-over)", ("/redis/", "/rq/")),
         ("logging", ("/logging/",)),
         ("finflow engine", ("/engine/",)),
         ("finflow api", ("/api/",)),
         ("finflow adapters", ("/adapters/",)))

# Functions whose cumulative time answers the lead's questions, by (file suffix, function name).
NAMED = (("auth: token lookup (authenticate_token)", "engine/services/auth.py", "authenticate_token"),
         ("auth: caller() incl. scope check", "api/context.py", "caller"),
         ("command: start_instance", "engine/services/instances.py", "start_instance"),
         ("command: complete_task", "engine/services/tasks.py", "complete_task"),
         ("response: instance_detail (view model)", "api/routes/instances.py", "instance_detail"),
         ("response: marshmallow Schema.dump", "marshmallow/schema.py", "dump"),
         ("request: body parsing (webargs parse)", "webargs/core.py", "parse"),
         ("response: jsonify", "flask/json/__init__.py", "jsonify"),
         ("transaction commit (Session.commit)", "sqlalchemy/orm/session.py", "commit"),
         ("SQL: psycopg Cursor.execute", "psycopg/cursor.py", "execute"),
         ("SQL: psycopg Cursor.executemany", "psycopg/cursor.py", "executemany"),
         ("outbox: dispatch to Redis", "engine/outbox/dispatch.py", "dispatch"),
         ("history: record", "engine/history.py", "record"),
         ("state: dump_state", "engine/runner/state.py", "dump_state"),
         ("state: load_state", "engine/runner/state.py", "load_state"),
         ("logging: Logger._log", "logging/__init__.py", "_log"))


def profile(bench: Bench) -> str:
    """cProfile of one API process serving the flow from `--profile-clients` clients; returns the report."""
    import io
    import pstats

    import common

    out = bench.workdir / "api.prof"
    port = common.free_port()
    env = common.worker_env(bench.url, bench.redis_url)
    with open(bench.workdir / "profiled.log", "ab") as errors:
        server = subprocess.Popen([sys.executable, __file__, "--profiled-server", str(port), str(out)], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, server, "the profiled API process")
        log(f"[profile] one API process, {bench.args.profile_clients} clients, {bench.args.profile_seconds:.0f} s ...")
        result = bench.client(base, "flow", bench.args.profile_clients, bench.args.profile_seconds, warmup=2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    times = json.loads(Path(f"{out}.json").read_text())
    stats = pstats.Stats(str(out))
    text = io.StringIO()
    stats.stream = text
    stats.sort_stats("cumulative").print_stats(20)
    own = io.StringIO()
    stats.stream = own
    stats.sort_stats("tottime").print_stats(15)
    calls = sum(len(result["samples"][k]) for k in FLOW_KINDS)
    n = max(1, times["requests"])
    head = (f"cProfile, one API process (waitress, 1 thread), {bench.args.profile_clients} clients: "
            f"{times['requests']:.0f} requests profiled ({calls} in the measured window), per request "
            f"{times['wall'] / n * 1000:.1f} ms wall under the profiler, of which {times['cpu'] / n * 1000:.1f} ms "
            f"CPU of the serving thread (the rest waits on PostgreSQL and Redis)")
    return "\n\n".join([head, area_table(stats, n), named_table(stats, n),
                        "top 20 by cumulative time:\n" + trim_stats(text.getvalue()),
                        "top 15 by own time:\n" + trim_stats(own.getvalue())])


def area_table(stats, requests: int) -> str:
    total = sum(tt for _, _, tt, _, _ in stats.stats.values()) or 1.0
    by_area: dict[str, float] = {}
    for (filename, _, _), (_, _, tt, _, _) in stats.stats.items():
        by_area[area_of(filename)] = by_area.get(area_of(filename), 0.0) + tt
    lines = [f"{'where own time goes (tottime)':<55} {'ms/req':>7} {'share':>6}"]
    for name, seconds in sorted(by_area.items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<55} {seconds / requests * 1000:>7.2f} {seconds / total * 100:>5.1f}%")
    return "\n".join(lines)


def area_of(filename: str) -> str:
    for name, patterns in AREAS:
        if any(p in filename for p in patterns):
            return name
    return "Python built-ins and other libraries" if filename.startswith(("~", "<")) or "/lib/" in filename \
        else "other"


def named_table(stats, requests: int) -> str:
    total = sum(tt for _, _, tt, _, _ in stats.stats.values()) or 1.0
    lines = [f"{'named functions (cumulative)':<55} {'ms/req':>7} {'share':>6} {'calls/req':>9} {'ms/call':>7}"]
    for label, suffix, name in NAMED:
        found = [(nc, ct) for (filename, _, func), (_, nc, _, ct, _) in stats.stats.items()
                 if func == name and filename.endswith(suffix)]
        if found:
            calls, cumulative = sum(c for c, _ in found), max(ct for _, ct in found)
            lines.append(f"{label:<55} {cumulative / requests * 1000:>7.2f} {cumulative / total * 100:>5.1f}% "
                         f"{calls / requests:>9.1f} {cumulative / max(1, calls) * 1000:>7.2f}")
    return "\n".join(lines)


def trim_stats(text: str) -> str:
    """pstats' listing without its preamble, with long paths cut to what follows site-packages or the checkout."""
    body = text[text.find("   ncalls"):] if "   ncalls" in text else text
    return body.replace(str(ROOT) + "/", "").replace(
        str(Path(sys.executable).resolve().parent.parent), "").rstrip()


# -- main -------------------------------------------------------------------------------------------


def issue_tokens() -> dict[str, str]:
    from sqlalchemy import select

    from engine.db import transaction
    from engine.models import User
    from engine.services.auth import issue_token

    with transaction() as session:
        users = list(session.scalars(select(User.id).where(User.active.is_(True))))
        return {user: issue_token(session, user, "http bench") for user in users}


def numbers(raw: str) -> list[int]:
    """A comma-separated option such as 8,32,64."""
    return [int(x) for x in raw.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=numbers, default=[2, 4], help="gunicorn worker counts (default 2,4)")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker (default 8)")
    parser.add_argument("--clients", type=numbers, default=[1, 2, 4, 8, 32, 64],
                        help="concurrent client counts (default 1,2,4,8,32,64: below 8 to find the saturation point)")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per flow run (default 6)")
    parser.add_argument("--health-seconds", type=float, default=3.0, help="measured seconds per health run")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the client levels")
    parser.add_argument("--profile-clients", type=int, default=4)
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--pg-url", default=PG_URL, help="bench database, rebuilt (default $FINFLOW_HTTP_BENCH_PG_URL, "
                                                         "else .../finflow_http_bench)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profiled-server", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args()


def orchestrate(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="finflow-http-bench-"))
    os.environ["FINFLOW_DATA_DIR"] = str(workdir)  # before common, which imports the engine's configuration
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import common
    import gunicorn

    import adapters  # every model, so the bench database's schema is dropped whole

    adapters.load_all()
    redis_server = PrivateRedis(workdir)
    try:
        common.wait_until(lambda: redis_server.process.poll() is None and _pings(redis_server.url), 10)
        url, redis_version = common.use_services(args.pg_url, redis_server.url)
        common.fresh_database(url, "HTTP")
        bench = Bench(args, workdir, url, redis_server.url, issue_tokens())
        by_workers = {workers: measure_server(bench, workers) for workers in args.workers}
        print(common.header("finflow HTTP load benchmark",
                            [("PostgreSQL", common.postgres_version(url)), ("Redis", redis_version),
                             ("gunicorn", gunicorn.__version__)]))
        print(f"flow: start a reimbursement of 1,200 + 3 completions; gthread, {args.threads} threads per worker; "
              f"{args.rounds} rounds × {args.seconds:.0f} s flow + {args.health_seconds:.0f} s health per level; "
              f"no `finflow worker` running (side-effect jobs wait in Redis)\n")
        print(level_table([lv for levels, _, _ in by_workers.values() for lv in levels]))
        print("\n" + saturation_lines(by_workers))
        if not args.no_profile:
            print("\n" + profile(bench))
        if bench.failures:
            print("\nFAILED calls:\n" + "\n".join(bench.failures))
            return 1
        return 0
    finally:
        redis_server.stop()


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def main() -> None:
    args = parse_args()
    if args.client:
        client_main()
    elif args.profiled_server:
        sys.path.insert(0, str(ROOT))
        profiled_server_main(int(args.profiled_server[0]), Path(args.profiled_server[1]))
    else:
        sys.exit(orchestrate(args))


if __name__ == "__main__":
    main()
