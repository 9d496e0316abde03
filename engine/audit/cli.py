"""`finflow audit`: verify the history hash chains and day anchors, compute anchors, archive old history.

`verify` exits 1 when anything is broken, so a cron job or a monitoring check can alert on it.
"""

from __future__ import annotations

import sys

import click

from engine.audit import anchors as day_anchors
from engine.audit.archive import MIN_RETENTION_DAYS, RETENTION_ENV, archive
from engine.audit.verify import verify
from engine.db import transaction


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit trail: hash chains, day anchors, verification, the archive."""


@audit.command("verify")
def audit_verify() -> None:
    """Recompute every instance's chain and every day's anchor; exit 1 on the first broken link of any."""
    report = verify()
    for problem in report.problems:
        click.echo(str(problem))
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


@audit.command("anchor")
@click.option("--all", "show_all", is_flag=True, help="Print every anchor, not only the ones computed now.")
def audit_anchor(show_all: bool) -> None:
    """Anchor every complete day not anchored yet and print the anchors (day, events, digest): keep a copy
    off-site, e.g. by mailing this output, so rewritten anchors show too."""
    new = day_anchors.compute_missing()
    if show_all:
        with transaction(readonly=True) as session:
            shown = day_anchors.all_anchors(session)
    else:
        shown = new
    for anchor in shown:
        click.echo(f"{anchor.day.isoformat()} {anchor.events:>8} {anchor.digest}")
    through = day_anchors.last_complete_day()
    click.echo(f"{len(new)} day(s) anchored now; days are anchored through {through.isoformat()} "
               "(Asia/Shanghai) once they have events", err=True)


@audit.command("archive")
@click.option("--older-than-days", type=int, default=None,
              help=f"Finished more than this many days ago (default: {RETENTION_ENV} or 180; "
                   f"at least {MIN_RETENTION_DAYS}).")
@click.option("--dry-run", is_flag=True, help="Count what would be archived; change nothing.")
def audit_archive(older_than_days: int | None, dry_run: bool) -> None:
    """Move the history of instances finished long ago to history_archive and drop their workflow state."""
    result = archive(older_than_days=older_than_days, dry_run=dry_run)
    verb = "would archive" if dry_run else "archived"
    click.echo(f"{verb} {result.instances} instance(s), {result.events} history event(s) "
               f"(finished before {result.cutoff:%Y-%m-%d %H:%M} UTC)")
