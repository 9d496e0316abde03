"""`finflow budget`: budget lines with used, reserved and available amounts, a line's ledger, and a
check that every line's totals agree with its ledger (exit 1 when one does not)."""

from __future__ import annotations

import sys

import click
from sqlalchemy import select

from engine.db import transaction
from engine.finance import budgets
from engine.finance.money import fmt
from engine.models import Budget


@click.group("budget")
def budget() -> None:
    """Budget lines (预算): totals, reservations, the ledger."""


@budget.command("list")
@click.option("--year", type=click.IntRange(2000, 2999))
def budget_list(year: int | None) -> None:
    """Every line: amount, used, reserved, available, usage."""
    with transaction(readonly=True) as session:
        stmt = select(Budget).order_by(Budget.line)
        rows = list(session.scalars(stmt.where(Budget.year == year) if year else stmt))
    click.echo(f"{'line':<20} {'amount':>16} {'used':>16} {'reserved':>16} {'available':>16}  usage  name")
    for b in rows:
        usage = f"{(b.used + b.reserved) / b.amount:6.1%}" if b.amount else "     -"
        click.echo(f"{b.line:<20} {fmt(b.amount):>16} {fmt(b.used):>16} {fmt(b.reserved):>16} "
                   f"{fmt(b.available):>16} {usage}  {b.name}")


@budget.command("show")
@click.argument("line")
@click.option("--limit", default=50, type=click.IntRange(1, 10000))
def budget_show(line: str, limit: int) -> None:
    """One line and its ledger, newest first."""
    with transaction(readonly=True) as session:
        b = session.get(Budget, line)
        if b is None:
            raise click.BadParameter(f"no budget line {line}", param_hint="LINE")
        entries = budgets.ledger(session, line, limit)
    click.echo(f"{b.line} {b.name} ({b.department_id}, {b.year}): amount {fmt(b.amount)}, used {fmt(b.used)}, "
               f"reserved {fmt(b.reserved)}, available {fmt(b.available)}")
    for e in entries:
        click.echo(f"{e.created_at:%Y-%m-%d %H:%M:%S} {e.kind:<8} used {fmt(e.used_delta):>14} "
                   f"reserved {fmt(e.reserved_delta):>14} available {fmt(e.available_after):>16} "
                   f"{e.instance_id or '-'} {e.actor_id or '-'} {e.reason}")


@budget.command("check")
def budget_check() -> None:
    """Recompute every line's totals from its ledger; exit 1 if any line disagrees."""
    with transaction(readonly=True) as session:
        results = [budgets.verify(session, line) for line in session.scalars(select(Budget.line).order_by(Budget.line))]
    bad = [r for r in results if not r["consistent"]]
    for r in bad:
        click.echo(f"{r['line']}: row disagrees with ledger {r['ledger']}", err=True)
    click.echo(f"{len(results) - len(bad)} of {len(results)} budget line(s) agree with their ledger")
    if bad:
        sys.exit(1)
