"""The `finflow` command: set up the database, load the org, deploy processes, issue tokens, serve, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from engine.audit.cli import audit
from engine.budget_cli import budget
from engine.crypto import SecretKeyError
from engine.db import transaction
from engine.errors import FinflowError
from engine.events import QUEUES
from engine.history import Actor
from engine.outbox.models import STATUSES as OUTBOX_STATUSES
from engine.secrets_cli import secrets_group
from engine.status_cli import status
from engine.user_cli import user_group

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROCESSES = ROOT / "processes"
CLI_ACTOR = Actor(user_id=None, channel="cli")


class FinflowGroup(click.Group):
    """Print engine errors, and keys that do not open what is stored, as one clear line and exit 1 instead
    of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FinflowError as exc:
            click.echo(f"error: {exc.message}", err=True)
            for key, value in exc.details.items():
                click.echo(f"  {key}: {value}", err=True)
            sys.exit(1)
        except SecretKeyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=FinflowGroup)
def main() -> None:
    """finflow — finance approval BPM (报销 / 付款 / 合同)."""
    _load_adapters()


def _load_adapters() -> None:
    """Subscribe the adapters, as create_app does: a process that records events without them would
    silently promise no side effects, and embedded delivery (outbox retry/sweep) needs their handlers.
    The CLI is a composition root like the API; the engine proper never imports adapters."""
    import adapters

    adapters.load_all()


@main.command()
def init() -> None:
    """Create or upgrade the database schema (Alembic migrations)."""
    from engine.migrate import upgrade

    upgrade()
    click.echo("database is at the latest schema")


@main.command("load-demo")
def load_demo() -> None:
    """Load the demo company: departments, people, roles, groups and budgets."""
    from engine.org.directory import load_demo_org

    with transaction() as session:
        counts = load_demo_org(session)
    click.echo("demo org loaded: " + ", ".join(f"{v} {k}" for k, v in counts.items()))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
def deploy(paths: tuple[Path, ...]) -> None:
    """Deploy BPMN/DMN/form files or directories (default: the shipped processes/).

    Prints one line per process version, then a `warning:` line (on stderr) for each file or part of a
    file that was not deployed, e.g. a decision no process uses.
    """
    from engine.services.deployments import deploy as deploy_files

    files: dict[str, str] = {}
    for path in paths or (DEFAULT_PROCESSES,):
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            if file.is_file() and file.suffix in (".bpmn", ".dmn", ".json"):
                files[str(file)] = file.read_text(encoding="utf-8")  # two files named alike are refused
    if not files:
        raise click.BadParameter("no .bpmn, .dmn or .json files found", param_hint="PATHS")
    with transaction() as session:
        results = deploy_files(session, files, CLI_ACTOR)
    for result in results:
        state = "deployed" if result.created else "unchanged"
        click.echo(f"{result.version.process_key} v{result.version.version} {state}")
    for warning in results.warnings:
        click.echo(f"warning: {warning.file}: {warning.message}", err=True)


@main.command("create-user")
@click.option("--id", "user_id", required=True)
@click.option("--name", required=True)
@click.option("--department", required=True)
@click.option("--manager")
@click.option("--role", "roles", multiple=True, help="repeatable; employee is always added")
def create_user(user_id: str, name: str, department: str, manager: str | None, roles: tuple[str, ...]) -> None:
    """Create (or update) a user."""
    from engine.models import Department
    from engine.org.directory import load_org

    with transaction() as session:
        dept = session.get(Department, department)
        if dept is None:
            raise FinflowError(f"department '{department}' does not exist")
        load_org(session, {"departments": [{"id": dept.id, "name": dept.name, "parent": dept.parent_id,
                                            "head": dept.head_id}],
                           "users": [{"id": user_id, "name": name, "department": department, "manager": manager,
                                      "roles": sorted({"employee", *roles})}]})
    click.echo(f"user {user_id} saved")


@main.group()
def token() -> None:
    """API tokens: issue, list, revoke (scoped, expiring; stored as SHA-256)."""


@token.command("create")
@click.argument("user_ids", nargs=-1, required=True)
@click.option("--label", default="cli")
@click.option("--scope", "scopes", multiple=True, help="repeatable: read, start, approve, design, admin, account")
@click.option("--expires-in-days", type=click.IntRange(1, 730), default=None, help="default FINFLOW_TOKEN_DAYS or 90")
def token_create(user_ids: tuple[str, ...], label: str, scopes: tuple[str, ...], expires_in_days: int | None) -> None:
    """Issue a token for each user and print `user token` lines (shown once, stored hashed)."""
    from engine.services.auth import issue_token

    with transaction() as session:
        for user_id in user_ids:
            secret = issue_token(session, user_id, label, scopes=list(scopes), expires_in_days=expires_in_days)
            click.echo(f"{user_id} {secret}")


@token.command("list")
@click.argument("user_id")
def token_list(user_id: str) -> None:
    """A user's tokens: id, status, scopes, expiry, last use (never the secrets)."""
    from engine.services.auth import list_tokens

    with transaction(readonly=True) as session:
        for t in list_tokens(session, user_id):
            used = f"{t.last_used_at:%Y-%m-%d %H:%M} from {t.last_used_ip}" if t.last_used_at else "never used"
            click.echo(f"{t.id}  {t.status:<7}  {','.join(t.scopes):<20}  expires {t.expires_at:%Y-%m-%d}  {used}"
                       f"  {t.label}")


@token.command("revoke")
@click.argument("token_ids", nargs=-1, required=True, type=int)
def token_revoke(token_ids: tuple[int, ...]) -> None:
    """Revoke tokens by id at once (`finflow token list USER` shows the ids)."""
    from engine.services.auth import revoke

    with transaction() as session:
        for token_id in token_ids:
            revoke(session, Actor(None, "cli"), token_id)
            click.echo(f"token {token_id} revoked")


@main.command()
@click.option("--host", default=lambda: os.environ.get("FINFLOW_HOST", "127.0.0.1"))
@click.option("--port", default=lambda: int(os.environ.get("FINFLOW_PORT", "8000")), type=click.IntRange(1, 65535))
@click.option("--threads", default=8, type=click.IntRange(1, 64), help="threads per process")
@click.option("--processes", default=1, type=click.IntRange(1, 64),
              help="API processes on one port (gunicorn); more than one needs REDIS_URL")
def serve(host: str, port: int, threads: int, processes: int) -> None:
    """Serve the REST API: waitress in this process, or several processes behind one port (gunicorn).

    One Python process runs one thread at a time, so a burst of cheap requests (WeCom callbacks) is bound
    by one core; more processes share the load the way N hosts do in production."""
    from engine.outbox.dispatch import redis_url

    if processes > 1 and redis_url() is None:
        raise click.UsageError("--processes above 1 needs REDIS_URL: in embedded mode side effects and timers "
                               "run inside the one API process")
    click.echo(f"finflow API on http://{host}:{port}/api/v1 (OpenAPI: /api/v1/openapi.json)")
    if processes > 1:
        from api.serving import serve_processes

        serve_processes(host, port, processes=processes, threads=threads)
    else:
        from api.serving import serve_one

        serve_one(host, port, threads=threads)


@main.command()
def demo() -> None:
    """Drive all three processes through every branch and print a summary."""
    from engine.demo.driver import drive
    from engine.demo.scenarios import SCENARIOS

    failures = 0
    for scenario in SCENARIOS:
        result = drive(scenario)
        failures += result.status != "completed"
        outcome = {"approved": "通过", "rejected": "驳回", None: "-"}[result.outcome]
        click.echo(f"{scenario.title:<44} {result.status:<10} {outcome:<4} {' → '.join(result.path)}")
    click.echo(f"{len(SCENARIOS)} scenarios, {len(SCENARIOS) - failures} completed")
    if failures:
        sys.exit(1)


@main.command()
@click.option("--serve/--no-serve", "then_serve", default=True)
@click.pass_context
def up(ctx: click.Context, then_serve: bool) -> None:
    """Everything for a first run: schema, demo org, processes, demo tokens, then serve."""
    ctx.invoke(init)
    ctx.invoke(load_demo)
    ctx.invoke(deploy, paths=())
    tokens = Path(os.environ.get("FINFLOW_DATA_DIR", "var")) / "demo-tokens.txt"
    tokens.parent.mkdir(parents=True, exist_ok=True)
    lines = _demo_tokens()
    tokens.write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo(f"{len(lines)} demo API tokens written to {tokens}, one `user token` per line (e.g. {lines[0]})")
    password = os.environ.get("FINFLOW_DEMO_PASSWORD", DEMO_PASSWORD)
    click.echo(f"web pages: log in as any demo user with the password {password!r} "
               f"({_demo_passwords(password)} set now; a password set before is kept)")
    base = f"http://{os.environ.get('FINFLOW_HOST', '127.0.0.1')}:{os.environ.get('FINFLOW_PORT', '8000')}"
    for path, what in (("/m/", "审批 (approvers, mobile)"), ("/designer", "流程设计器 (designers: luyao)"),
                       ("/audit", "审计 (auditors: fengli)"), ("/login", "login")):
        click.echo(f"  {base}{path}  {what}")
    if then_serve:
        _start_simulators()
        ctx.invoke(serve)


def _start_simulators() -> None:
    """Without a real WeCom corp or OA configured, the demo gets simulated ones (adapters/*/simulator)."""
    from adapters.oa.simulator.cli import start_for_demo as start_oa
    from adapters.wecom.simulator.cli import start_for_demo as start_wecom

    port = int(os.environ.get("FINFLOW_PORT", "8000"))
    if (wecom := start_wecom(port)) is not None:
        click.echo(f"WeCom simulator: {wecom.url}/ (每个演示用户的企业微信消息：卡片、催办、结果)")
    if (oa := start_oa(port)) is not None:
        click.echo(f"E9 (OA) simulator: {oa.url}/ (OA 请求及其当前节点；可在“OA 中”审批，finflow 随之流转)")


DEMO_PASSWORD = "finflow-demo"


def _demo_users() -> list[str]:
    import json

    from engine.org.directory import DEMO_ORG

    return [u["id"] for u in json.loads(DEMO_ORG.read_text(encoding="utf-8"))["users"] if u.get("active", True)]


def _demo_passwords(password: str) -> int:
    """The demo password for every demo user who has none yet; how many were set."""
    from engine.models import User
    from engine.services.passwords import set_password

    with transaction() as session:
        users = [u for u in _demo_users() if (found := session.get(User, u)) is not None and not found.password_hash]
        for user_id in users:
            set_password(session, user_id, password)
    return len(users)


@main.command("set-password")
@click.argument("user_id")
@click.password_option(prompt="新密码 / new password")
def set_password_command(user_id: str, password: str) -> None:
    """Set a user's password for the web pages' login (prompted twice, never echoed)."""
    from engine.services.passwords import set_password

    try:
        with transaction() as session:
            set_password(session, user_id, password)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"password set for {user_id}")


def _demo_tokens() -> list[str]:
    """A fresh token for every user of the demo company (engine/demo/org.json), so any role can be tried."""
    from engine.services.auth import issue_token

    with transaction() as session:
        return [f"{user} {issue_token(session, user, 'demo')}" for user in _demo_users()]


@main.command()
@click.option("--queues", default=",".join(QUEUES), show_default=True,
              help="comma-separated rq queues to work on (by default every queue: a worker started the obvious "
                   "way also sends webhooks and broker events)")
@click.option("--burst", is_flag=True, help="sweep and fire due timers once, run every queued job, then exit")
@click.option("--sweep-interval", type=click.FloatRange(min=0.05), default=None,
              help="seconds between outbox sweeps (default $FINFLOW_SWEEP_INTERVAL or 10)")
def worker(queues: str, burst: bool, sweep_interval: float | None) -> None:
    """Run outbox jobs from Redis (REDIS_URL) with rq's scheduler, the outbox sweeper and due timers."""
    from engine.outbox import worker as outbox_worker
    from engine.outbox.dispatch import redis_url

    url = redis_url()
    if url is None:
        raise FinflowError("REDIS_URL is not set: without Redis, side effects run inside the API process "
                           "(embedded mode) and no worker is needed")
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - set(QUEUES))
    if unknown or not names:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)}; use some of {','.join(QUEUES)}"
                                 if unknown else f"no queue given; use some of {','.join(QUEUES)}",
                                 param_hint="--queues")
    from engine import heap

    heap.settle()
    outbox_worker.run(url, names, burst=burst, sweep_interval=sweep_interval)


@main.group()
def outbox() -> None:
    """Inspect and repair the outbox of side effects (dead rows, overdue rows)."""


@outbox.command("list")
@click.option("--status", type=click.Choice(OUTBOX_STATUSES))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def outbox_list(status: str | None, limit: int) -> None:
    """List outbox rows, newest first."""
    from engine.outbox.admin import list_rows

    with transaction(readonly=True) as session:
        rows, total = list_rows(session, status, per_page=limit)
        for row in rows:
            error = (row.last_error or "").split("\n")[0][:80]
            subscription = f"{row.subscription}→{row.target}" if row.target else row.subscription
            click.echo(f"{row.id:>8}  {row.status:<7}  {subscription:<20}  {row.event_type:<20}  "
                       f"{row.instance_id}  attempts={row.attempts}  "
                       f"next={row.next_attempt_at:%Y-%m-%d %H:%M:%S}  {error}".rstrip())
    click.echo(f"{len(rows)} of {total} row(s)")


@outbox.command("retry")
@click.argument("ids", nargs=-1, required=True, type=int)
def outbox_retry(ids: tuple[int, ...]) -> None:
    """Send dead rows again (each with a fresh set of attempts)."""
    from engine.outbox.admin import retry

    for outbox_id in ids:
        with transaction() as session:
            retry(session, outbox_id)
        click.echo(f"outbox {outbox_id} queued again")


@outbox.command("sweep")
def outbox_sweep() -> None:
    """Re-dispatch every overdue or undispatched pending row now (workers also do this periodically)."""
    from engine.outbox.sweeper import sweep

    click.echo(f"{sweep()} row(s) dispatched")


@main.group()
def timers() -> None:
    """BPMN timers waiting to fire."""


@timers.command("fire-due")
def timers_fire_due() -> None:
    """Fire every timer whose time has come (workers also do this on each sweep)."""
    from engine.timers import fire_due

    click.echo(f"{fire_due()} timer(s) fired")


def _adapter_commands() -> list[click.Command]:
    """The adapters' command groups (`finflow events`), imported here for the reason `_load_adapters`
    gives: the CLI is a composition root, the engine proper never imports adapters."""
    import adapters

    return adapters.cli_commands()


main.add_command(budget)
main.add_command(audit)
main.add_command(secrets_group)
main.add_command(user_group)
main.add_command(status)
for _command in _adapter_commands():
    main.add_command(_command)
