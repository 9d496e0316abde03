"""finflow events benchmark: engine events published as CloudEvents to a RabbitMQ exchange and to a
webhook by 1 and 2 `finflow worker --queues events` processes, per second and from commit to delivery.

    python bench/events_bench.py [--events N] [--commands N] [--rate R] [--workers 1,2]
                                 [--targets rabbitmq,webhook]

The publisher is the shipped one: adapters/events (subscription `events.publish`, queue `events`,
delivered by engine/outbox/stream.py), for reimbursements driven through the service layer on
PostgreSQL, with real Redis, a real RabbitMQ broker (publisher confirms, a durable queue consuming the
exchange) and a real HTTP receiver. Figures are printed, never asserted. See bench/README.md ("Events
benchmark").
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("FINFLOW_EVENTS_BENCH_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/finflow_events_bench")
REDIS_URL = os.environ.get("FINFLOW_EVENTS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
AMQP_URL = os.environ.get("FINFLOW_EVENTS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
EXCHANGE = "finflow.bench"
CONSUMER_QUEUE = "finflow.bench.consumer"
# The receivers are this script run again (--receiver); they share the parent's directory.
WORKDIR = Path(os.environ.get("FINFLOW_EVENTS_BENCH_DIR") or tempfile.mkdtemp(prefix="finflow-events-bench-"))
os.environ["FINFLOW_EVENTS_BENCH_DIR"] = str(WORKDIR)
# The engine (and the workers, which inherit this environment) must use the bench's database and Redis.
os.environ["FINFLOW_DATA_DIR"] = str(WORKDIR)

import common  # noqa: E402 (bench/, the script's directory, is on sys.path)
import pika  # noqa: E402
import redis  # noqa: E402
import rq  # noqa: E402
import sqlalchemy  # noqa: E402
from common import (  # noqa: E402
    drive_paced,
    fresh_database,
    header,
    jobs_held_back,
    listening_workers,
    percentile,
    postgres_version,
    spread,
    start_worker,
    stop_processes,
    use_services,
    wait_until,
    worker_env,
)
from sqlalchemy import func, select, update  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

import adapters  # noqa: E402
from adapters.events import SUBSCRIPTION  # noqa: E402
from adapters.events import subscriptions as event_subscriptions  # noqa: E402
from engine.db import transaction  # noqa: E402
from engine.outbox.models import OutboxMessage  # noqa: E402
from engine.outbox.sweeper import sweep  # noqa: E402

WARMUP_COMMANDS = 8  # per worker, before each latency run
RECEIPT_GRACE = 30.0  # seconds the consumer may lag behind the last confirm before ids count as missing


_T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _T0:5.0f} s] {message}", file=sys.stderr, flush=True)


# -- receivers (child processes: `events_bench.py --receiver webhook|rabbitmq`) ----------------------


class _Ids:
    """Appends each received event id to a file, one per line, flushed at once (the bench reads it)."""

    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the process's life)
        self.lock = threading.Lock()

    def add(self, event_id: str) -> None:
        with self.lock:
            self.file.write(event_id + "\n")
            self.file.flush()


def receive_webhook(ids_path: Path) -> None:
    """A ThreadingHTTPServer on 127.0.0.1 answering 200 (empty body, keep-alive) to every POST; prints its port."""
    ids = _Ids(ids_path)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (http.server's spelling)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ids.add(self.headers.get("X-Finflow-Event-Id") or "?")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def receive_rabbitmq(ids_path: Path, url: str) -> None:
    """A consumer of a durable queue bound to the bench exchange with '#' (auto-ack); prints "ready"."""
    ids = _Ids(ids_path)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    # Durable like a real consumer's queue, so confirms wait for the broker to write persistent messages;
    # the broker deletes it 10 minutes after its last consumer left, should the bench not.
    channel.queue_declare(CONSUMER_QUEUE, durable=True, arguments={"x-expires": 600_000})
    channel.queue_bind(CONSUMER_QUEUE, EXCHANGE, routing_key="#")
    channel.queue_purge(CONSUMER_QUEUE)
    channel.basic_consume(CONSUMER_QUEUE, lambda ch, method, properties, body: ids.add(properties.message_id or "?"),
                          auto_ack=True)
    print("ready", flush=True)
    channel.start_consuming()


class Receiver:
    def __init__(self, kind: str, amqp_url: str):
        self.kind = kind
        self.ids_path = WORKDIR / f"received-{kind}.txt"
        self.ids_path.touch()
        with open(WORKDIR / f"receiver-{kind}.log", "ab") as err:
            self.process = subprocess.Popen([sys.executable, __file__, "--receiver", kind, "--amqp-url", amqp_url],
                                            cwd=ROOT, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        _CHILDREN.append(self.process)
        first = self.process.stdout.readline().decode().strip()
        if not first:
            raise SystemExit(f"the {kind} receiver did not start; see {WORKDIR}/receiver-{kind}.log")
        self.port = int(first) if kind == "webhook" else None

    def offset(self) -> int:
        return self.ids_path.stat().st_size

    def received(self, offset: int) -> list[str]:
        with open(self.ids_path, encoding="utf-8") as f:
            f.seek(offset)
            return [line for line in f.read().splitlines() if line]

    def stop(self) -> None:
        _stop(self.process)


_CHILDREN: list[subprocess.Popen] = []  # every worker and receiver started; all are stopped at exit


def _stop(process: subprocess.Popen) -> None:
    if process in _CHILDREN:
        _CHILDREN.remove(process)
    stop_processes([process])


# -- set-up -----------------------------------------------------------------------------------------


def subscribe(url: str, kind: str, destination: str) -> str:
    """One subscription to every event ("*"), checked (probed) and created as the API does; its id."""
    body = {"name": f"bench {kind}", "kind": kind, "url": destination, "event_types": ["*"]}
    if kind == "rabbitmq":
        body["exchange"] = EXCHANGE
    with transaction(url) as session:
        spec = event_subscriptions.check(session, body)
        subscription, _ = event_subscriptions.create(session, spec, "bench")
        return subscription.id


def unsubscribe(url: str, subscription_id: str) -> None:
    with transaction(url) as session:
        event_subscriptions.delete(session, subscription_id)


# -- driving commands -------------------------------------------------------------------------------


class Driver(common.Driver):
    """The shared driver (bench/common.py), with the next task read afterwards in a read-only transaction,
    so the command's own transaction is only the command. An instance is driven to completion before the
    next one starts."""

    tasks_apart = True


# -- workers ----------------------------------------------------------------------------------------


class Workers:
    def __init__(self, count: int, url: str, redis_url: str, sweep_interval: float, label: str):
        env = worker_env(url, redis_url, FINFLOW_SWEEP_INTERVAL=f"{sweep_interval:g}")
        self.processes: list[subprocess.Popen] = []
        self.logs = [WORKDIR / f"worker-{label}-{i}.log" for i in range(count)]
        for path in self.logs:
            self.processes.append(start_worker(["--queues", "events"], env, path))
            _CHILDREN.append(self.processes[-1])
        self.redis = redis.Redis.from_url(redis_url)
        if not wait_for(self.idle, f"{count} worker(s) to listen", 60):
            raise SystemExit(f"the workers did not start; see their logs in {WORKDIR}")

    def idle(self) -> bool:
        """Every worker listening with no job, and nothing queued on `events`."""
        listening = listening_workers(self.redis, {p.pid for p in self.processes})
        return listening == len(self.processes) and not self.redis.llen("rq:queue:events")

    def stop(self) -> None:
        for process in self.processes:
            _stop(process)

    def problems(self) -> list[str]:
        """Lines of the workers' logs that report a warning, an error or a traceback."""
        found = []
        for path in self.logs:
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if any(word in line for word in ("WARNING", "ERROR", "Traceback", "CRITICAL")):
                    found.append(f"{path.name}: {line.strip()}")
        return found


def wait_for(predicate: Callable[[], object], what: str, timeout: float) -> bool:
    if wait_until(predicate, timeout):
        return True
    log(f"  timed out after {timeout:g} s waiting for {what}")
    return False


def event_rows(url: str, first_id: int = 0, last_id: int | None = None):
    """The events.publish outbox rows with first_id < id <= last_id."""
    o = OutboxMessage
    stmt = select(o.id, o.instance_id, o.event_seq, o.status, o.created_at, o.done_at, o.attempts).where(
        o.subscription == SUBSCRIPTION, o.id > first_id)
    if last_id is not None:
        stmt = stmt.where(o.id <= last_id)
    with transaction(url, readonly=True) as session:
        return session.execute(stmt.order_by(o.id)).all()


def done_count(url: str, first_id: int, last_id: int) -> int:
    o = OutboxMessage
    with transaction(url, readonly=True) as session:
        return session.scalar(select(func.count()).where(o.subscription == SUBSCRIPTION, o.id > first_id,
                                                         o.id <= last_id, o.status == "done")) or 0


def row_count(url: str) -> int:
    with transaction(url, readonly=True) as session:
        return session.scalar(select(func.count()).where(OutboxMessage.subscription == SUBSCRIPTION)) or 0


def max_id(url: str) -> int:
    with transaction(url, readonly=True) as session:
        return session.scalar(select(func.max(OutboxMessage.id))) or 0


def check_receipt(receiver: Receiver, offset: int, rows) -> dict[str, int]:
    """Whether the receiver got every delivered event id at least once (waits for a lagging consumer)."""
    expected = {f"{r.instance_id}.{r.event_seq}" for r in rows if r.status == "done"}
    got: list[str] = []

    def complete() -> bool:
        got[:] = receiver.received(offset)
        return expected <= set(got)

    wait_for(complete, f"the {receiver.kind} receiver to get {len(expected)} ids", RECEIPT_GRACE)
    seen = set(got)
    return {"expected": len(expected), "received": len(expected & seen), "duplicates": len(got) - len(seen),
            "unexpected": len(seen - expected)}


# -- the two measurements ---------------------------------------------------------------------------


def build_backlog(url: str, events: int, instances: int | None) -> int:
    """Whole instances until at least `events` events.publish rows exist (or `instances` instances
    completed), with their jobs held back (the throughput runs enqueue them themselves, all at once);
    returns the last outbox id of the backlog."""
    with jobs_held_back():
        driver, started = Driver(url), 0
        while True:
            if not driver.open:  # between instances
                if (started >= instances) if instances else (row_count(url) >= events):
                    break
                started += 1
            driver.step()
    return max_id(url)


def reset_backlog(url: str, last_id: int, target: str) -> None:
    """Every backlog row pending again, never attempted, addressed to `target`."""
    o = OutboxMessage
    now = datetime.now(UTC)
    with transaction(url) as session:
        session.execute(update(o).where(o.subscription == SUBSCRIPTION, o.id <= last_id).values(
            target=target, status="pending", attempts=0, done_at=None, last_error=None, claimed_until=None,
            dispatched_at=None, next_attempt_at=now))  # undispatched: the sweeper's to hand over


def throughput(url: str, args, receiver: Receiver, target: str, last_id: int, count: int) -> dict:
    redis.Redis.from_url(args.redis_url).delete("rq:queue:events")
    workers = Workers(count, url, args.redis_url, args.sweep_interval, f"{receiver.kind}-throughput-{count}")
    try:
        offset = receiver.offset()
        started = datetime.now(UTC)
        # Reset only now that the workers listen: their own start-up sweep would otherwise take the backlog.
        reset_backlog(url, last_id, target)
        rows = event_rows(url, 0, last_id)
        sweep(url)  # as after an outage: the sweeper hands the backlog over, one job per instance stream
        drained = wait_for(lambda: done_count(url, 0, last_id) == len(rows), "the backlog to drain", args.timeout)
        result = summarize(url, 0, last_id)
        result["receipt"] = check_receipt(receiver, offset, event_rows(url, 0, last_id))
    finally:
        workers.stop()
    result["problems"] = workers.problems()
    result["drained"] = drained
    last_done = result.pop("last_done")
    seconds = (last_done - started).total_seconds() if last_done else float("nan")
    result.update(seconds=seconds, per_second=result["done"] / seconds if last_done else float("nan"))
    return result


def latency(url: str, args, receiver: Receiver, count: int) -> dict:
    redis.Redis.from_url(args.redis_url).delete("rq:queue:events")
    workers = Workers(count, url, args.redis_url, args.sweep_interval, f"{receiver.kind}-latency-{count}")
    try:
        warm_from = max_id(url)
        warmup = Driver(url)  # untimed: the workers' first jobs open connections and fill caches
        for _ in range(WARMUP_COMMANDS * count):
            warmup.step()
        warm_to = max_id(url)
        wait_for(lambda: done_count(url, warm_from, warm_to) == len(event_rows(url, warm_from, warm_to)),
                 "the warm-up events", args.timeout)
        wait_for(workers.idle, "the warm-up's remaining jobs", args.timeout)  # so the first command waits for none
        first_id, offset = max_id(url), receiver.offset()
        driver = Driver(url)
        drive_seconds = drive_paced(driver, args.commands, args.rate)
        last_id = max_id(url)
        total = len(event_rows(url, first_id, last_id))
        drained = wait_for(lambda: done_count(url, first_id, last_id) == total, "the events to be delivered",
                           args.timeout)
        result = summarize(url, first_id, last_id)
        rows = event_rows(url, first_id, last_id)
        result["receipt"] = check_receipt(receiver, offset, rows)
    finally:
        workers.stop()
    before, after = [], []  # record → commit, commit → settled
    for r in rows:
        committed = driver.commit_time(r.instance_id, r.event_seq)
        if committed is not None and r.done_at is not None:
            before.append((committed - r.created_at.timestamp()) * 1000)
            after.append((r.done_at.timestamp() - committed) * 1000)
    result.update(to_commit_p50=percentile(before, 50), from_commit_p50=percentile(after, 50),
                  from_commit_p99=percentile(after, 99))
    result.pop("last_done")
    result.update(problems=workers.problems(), drained=drained, commands=args.commands,
                  achieved_rate=args.commands / drive_seconds)
    return result


def summarize(url: str, first_id: int, last_id: int) -> dict:
    rows = event_rows(url, first_id, last_id)
    done = [r for r in rows if r.status == "done"]
    samples = [(r.done_at - r.created_at).total_seconds() * 1000 for r in done]
    return {"events": len(rows), "done": len(done), "pending": sum(r.status == "pending" for r in rows),
            "dead": sum(r.status == "dead" for r in rows), "retried": sum(r.attempts > 1 for r in rows),
            "last_done": max((r.done_at for r in done), default=None), **spread(samples)}


# -- main -------------------------------------------------------------------------------------------


def receiver_main(kind: str, amqp_url: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ids = WORKDIR / f"received-{kind}.txt"
    if kind == "webhook":
        receive_webhook(ids)
    else:
        receive_rabbitmq(ids, amqp_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500,
                        help="events in the throughput backlog (whole instances, about 22 events each)")
    parser.add_argument("--instances", type=int, default=None,
                        help="instances in the throughput backlog instead of --events")
    parser.add_argument("--commands", type=int, default=40, help="commands driven in each latency run")
    parser.add_argument("--rate", type=float, default=4.0, help="commands per second in the latency runs")
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    parser.add_argument("--targets", default="rabbitmq,webhook", help="rabbitmq and/or webhook, comma-separated")
    parser.add_argument("--sweep-interval", type=float, default=10.0,
                        help="the workers' FINFLOW_SWEEP_INTERVAL (seconds)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a run's events to be delivered before reporting them stuck")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--amqp-url", default=AMQP_URL)
    parser.add_argument("--receiver", choices=("webhook", "rabbitmq"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main(args.receiver, args.amqp_url)
        return
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"rabbitmq", "webhook"}:
        raise SystemExit("--targets: use rabbitmq and/or webhook")

    url, redis_version = use_services(args.pg_url, args.redis_url, flush=True)  # this bench's own database number
    rabbit_version = "-"
    if "rabbitmq" in targets:
        try:
            probe = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise SystemExit(f"RabbitMQ at {args.amqp_url} is not usable ({type(exc).__name__} {exc})") from None
        props = probe._impl.server_properties or {}
        rabbit_version = (props.get("version") or props.get(b"version") or b"?")
        rabbit_version = rabbit_version.decode() if isinstance(rabbit_version, bytes) else str(rabbit_version)
        probe.close()
    log(f"setting up {make_url(url).render_as_string(hide_password=True)} and {args.redis_url}")
    fresh_database(url, "events")
    adapters.load_all()
    pg_version = postgres_version(url)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    receivers: dict[str, Receiver] = {}
    results: list[tuple[str, int, dict, dict]] = []
    try:
        for kind in targets:
            receivers[kind] = Receiver(kind, args.amqp_url)
        subscription_ids: dict[str, str] = {}
        for kind in targets:
            destination = args.amqp_url if kind == "rabbitmq" else f"http://127.0.0.1:{receivers[kind].port}/events"
            subscription_ids[kind] = subscribe(url, kind, destination)
            if kind == targets[0]:
                size = f"{args.instances} instances" if args.instances else f"{args.events} events"
                log(f"building a backlog of {size} (subscription {kind})")
                t0 = time.perf_counter()
                backlog_last = build_backlog(url, args.events, args.instances)
                log(f"  {len(event_rows(url, 0, backlog_last))} events in {time.perf_counter() - t0:.1f} s")
            through = {}
            for count in worker_counts:
                log(f"{kind} throughput: backlog, {count} worker(s)")
                through[count] = throughput(url, args, receivers[kind], subscription_ids[kind], backlog_last, count)
                report_run(through[count])
            for count in worker_counts:
                log(f"{kind} latency: {args.commands} commands at {args.rate:g}/s, {count} worker(s)")
                paced = latency(url, args, receivers[kind], count)
                report_run(paced)
                results.append((kind, count, through[count], paced))
            unsubscribe(url, subscription_ids[kind])
    finally:
        for process in list(_CHILDREN):
            _stop(process)
        if "rabbitmq" in receivers:
            try:
                cleanup = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
                cleanup.channel().queue_delete(CONSUMER_QUEUE)
                cleanup.close()
            except (pika.exceptions.AMQPError, OSError):
                pass

    print(header("finflow events benchmark", [("rq", rq.__version__), ("redis-py", redis.__version__),
                                              ("pika", pika.__version__), ("SQLAlchemy", sqlalchemy.__version__),
                                              ("PostgreSQL", pg_version), ("Redis", redis_version),
                                              ("RabbitMQ", rabbit_version)]))
    print("events.publish: one CloudEvent per history event to one subscription to \"*\"; latency = outbox "
          "done_at (delivery settled after the broker confirm / the webhook's 2xx) − created_at (the command, "
          "just before its commit)\n")
    print("throughput: a backlog of events handed over by the sweeper, drained by N workers; "
          f"latency: commands paced at {args.rate:g}/s with N workers running")
    print(f"{'target':<9} {'workers':>7}  {'events':>6}  {'seconds':>7}  {'events/s':>8}  |  {'events':>6}  "
          f"{'cmd/s':>5}  {'p50 ms':>6}  {'p90 ms':>6}  {'p99 ms':>6}  {'max ms':>7}")
    for kind, count, t, p in results:
        print(f"{kind:<9} {count:>7}  {t['done']:>6}  {t['seconds']:>7.2f}  {t['per_second']:>8.0f}  |  "
              f"{p['done']:>6}  {p['achieved_rate']:>5.1f}  {p['p50']:>6.1f}  {p['p90']:>6.1f}  {p['p99']:>6.1f}  "
              f"{p['max']:>7.1f}")
    print()
    for kind, count, t, p in results:
        for label, r in (("throughput", t), ("latency", p)):
            receipt = r["receipt"]
            note = "" if r["drained"] else f"; NOT DRAINED: {r['pending']} pending, {r['dead']} dead"
            split = (f"; record → commit p50 {r['to_commit_p50']:.1f} ms, commit → settled p50 "
                     f"{r['from_commit_p50']:.1f} ms, p99 {r['from_commit_p99']:.1f} ms"
                     if "to_commit_p50" in r else "")
            print(f"{kind} {label}, {count} worker(s): received {receipt['received']} of {receipt['expected']} ids "
                  f"({receipt['duplicates']} duplicates); {r['retried']} rows retried; "
                  f"{len(r['problems'])} warning/error log lines{split}{note}")
    problems = [line for _, _, t, p in results for line in t["problems"] + p["problems"]]
    if problems:
        print("\nworker log lines with a warning or an error (first 20):")
        for line in problems[:20]:
            print(f"  {line}")
    log(f"worker logs: {WORKDIR}")


def report_run(result: dict) -> None:
    receipt = result["receipt"]
    log(f"  {result['done']} of {result['events']} events done ({result['pending']} pending, {result['dead']} dead), "
        f"received {receipt['received']} of {receipt['expected']} ids ({receipt['duplicates']} duplicates)"
        + (f", {result['per_second']:.0f} events/s" if "per_second" in result else
           f", p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms (record → commit p50 "
           f"{result['to_commit_p50']:.1f} ms; commit → settled p50 {result['from_commit_p50']:.1f} ms, "
           f"p99 {result['from_commit_p99']:.1f} ms)"))
    for line in result["problems"][:5]:
        log(f"  worker log: {line}")


if __name__ == "__main__":
    main()
