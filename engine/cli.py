"""The `finflow` command: set up the database, load the org, deploy processes, issue tokens, serve, demo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from engine.db import transaction
from engine.errors import FinflowError
from engine.history import Actor

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROCESSES = ROOT / "processes"
CLI_ACTOR = Actor(user_id=None, channel="cli")


class FinflowGroup(click.Group):
    """Print engine errors as one clear line and exit 1 instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FinflowError as exc:
            click.echo(f"error: {exc.message}", err=True)
            for key, value in exc.details.items():
                click.echo(f"  {key}: {value}", err=True)
            sys.exit(1)


@click.group(cls=FinflowGroup)
def main() -> None:
    """finflow — finance approval BPM (报销 / 付款 / 合同)."""


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
    """Deploy BPMN/DMN/form files or directories (default: the shipped processes/)."""
    from engine.services.deployments import deploy as deploy_files

    files: dict[str, str] = {}
    for path in paths or (DEFAULT_PROCESSES,):
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            if file.is_file() and file.suffix in (".bpmn", ".dmn", ".json"):
                files[file.name] = file.read_text(encoding="utf-8")
    if not files:
        raise click.BadParameter("no .bpmn, .dmn or .json files found", param_hint="PATHS")
    with transaction() as session:
        for result in deploy_files(session, files, CLI_ACTOR):
            state = "deployed" if result.created else "unchanged"
            click.echo(f"{result.version.process_key} v{result.version.version} {state}")


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


@main.command()
@click.argument("user_ids", nargs=-1, required=True)
@click.option("--label", default="cli")
def token(user_ids: tuple[str, ...], label: str) -> None:
    """Issue an API token for each user and print `user token` lines (shown once, stored hashed)."""
    from engine.services.auth import issue_token

    with transaction() as session:
        for user_id in user_ids:
            click.echo(f"{user_id} {issue_token(session, user_id, label)}")


@main.command()
@click.option("--host", default=lambda: os.environ.get("FINFLOW_HOST", "127.0.0.1"))
@click.option("--port", default=lambda: int(os.environ.get("FINFLOW_PORT", "8000")), type=click.IntRange(1, 65535))
@click.option("--threads", default=8, type=click.IntRange(1, 64))
def serve(host: str, port: int, threads: int) -> None:
    """Serve the REST API with waitress."""
    from waitress import serve as waitress_serve

    from api import create_app

    click.echo(f"finflow API on http://{host}:{port}/api/v1 (OpenAPI: /api/v1/openapi.json)")
    waitress_serve(create_app(), host=host, port=port, threads=threads)


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
    from engine.services.auth import issue_token

    demo_users = ["suxiaoyun", "guoxin", "huangmin", "zhaoqiang", "liuli", "yangxue", "qianfang", "linna",
                  "wangjianguo", "chenjing", "lihua", "zhangwei", "fengli", "luyao"]
    with transaction() as session:
        lines = [f"{u} {issue_token(session, u, 'demo')}" for u in demo_users]
    tokens.write_text("\n".join(lines) + "\n", encoding="utf-8")
    click.echo(f"demo API tokens written to {tokens} (e.g. {lines[0]})")
    if then_serve:
        ctx.invoke(serve)
