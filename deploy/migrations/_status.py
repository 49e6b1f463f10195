"""`_prisma_migrations` rows and what they say about each migration: pure, no database."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Sequence

from deploy.display import fit
from deploy.errors import MigrationFailed
from deploy.migrations._files import SCRIPT, LocalMigration, checksum_matches

State = Literal["applied", "pending", "failed", "checksum_changed", "missing_folder", "invalid"]


@dataclass(frozen=True)
class MigrationRecord:
    """One `_prisma_migrations` row, as Prisma's `MigrationRecord`."""

    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int

    @property
    def is_failed(self) -> bool:
        return self.finished_at is None and self.rolled_back_at is None

    @property
    def is_active(self) -> bool:
        return self.rolled_back_at is None


@dataclass(frozen=True)
class MigrationStatus:
    name: str
    state: State
    applied_at: datetime | None = None
    detail: str = ""

    @property
    def is_drift(self) -> bool:
        return self.state in ("checksum_changed", "missing_folder")


@dataclass(frozen=True)
class StatusReport:
    url: str                             # masked
    provider: str
    migrations: tuple[MigrationStatus, ...]
    table_exists: bool

    def _named(self, *states: str) -> tuple[str, ...]:
        return tuple(m.name for m in self.migrations if m.state in states)

    @property
    def applied(self) -> tuple[str, ...]:
        return self._named("applied", "checksum_changed")

    @property
    def pending(self) -> tuple[str, ...]:
        return self._named("pending")

    @property
    def failed(self) -> tuple[str, ...]:
        return self._named("failed")

    @property
    def drift(self) -> tuple[MigrationStatus, ...]:
        return tuple(m for m in self.migrations if m.is_drift)

    @property
    def invalid(self) -> tuple[str, ...]:
        return self._named("invalid")

    @property
    def up_to_date(self) -> bool:
        return not (self.pending or self.failed or self.drift or self.invalid)


def compute_status(
    local: Sequence[LocalMigration], rows: Sequence[MigrationRecord]
) -> tuple[MigrationStatus, ...]:
    """Each migration's state from the folders and the table's rows (pure)."""
    by_name: dict[str, list[MigrationRecord]] = {}
    for r in rows:
        by_name.setdefault(r.migration_name, []).append(r)
    local_names = {m.name for m in local}
    out: list[MigrationStatus] = []
    for m in local:
        active = [r for r in by_name.get(m.name, []) if r.is_active]
        failed = [r for r in active if r.is_failed]
        finished = [r for r in active if r.finished_at is not None]
        if failed:
            r = failed[-1]
            first = (r.logs or "").strip().splitlines()
            out.append(MigrationStatus(m.name, "failed", None, _failure_summary(r.logs) or (first[0] if first else "")))
        elif finished:
            r = finished[-1]
            if m.script is not None and not checksum_matches(m.script, r.checksum):
                out.append(MigrationStatus(m.name, "checksum_changed", r.finished_at,
                                           f"{SCRIPT} was edited after it was applied"))
            else:
                out.append(MigrationStatus(m.name, "applied", r.finished_at))
        elif m.problem:
            out.append(MigrationStatus(m.name, "invalid", None, m.problem))
        else:
            rolled = [r for r in by_name.get(m.name, []) if not r.is_active]
            detail = "rolled back, will be applied again" if rolled else ""
            out.append(MigrationStatus(m.name, "pending", None, detail))
    for name, rs in by_name.items():
        if name in local_names:
            continue
        active = [r for r in rs if r.is_active]
        if active:
            r = active[-1]
            out.append(MigrationStatus(name, "missing_folder", r.finished_at,
                                       "recorded in the database but has no folder"))
    out.sort(key=lambda s: s.name)
    return tuple(out)


def _failure_summary(logs: str | None) -> str:
    if not logs:
        return ""
    m = re.search(r"Database error:\n(.+)", logs)
    first = (m.group(1) if m else logs.strip().splitlines()[0]).strip()[:200]
    # deploy.migrations._backend.PARTIAL_NOTE: part of the script stayed committed.
    return f"partially applied: {first}" if "Partially applied:" in logs else first


def pending_migrations(local: Sequence[LocalMigration], rows: Sequence[MigrationRecord]) -> list[LocalMigration]:
    """apply_migrations.rs: every folder without a row whose rolled_back_at is NULL, in order."""
    active = {r.migration_name for r in rows if r.is_active}
    return [m for m in local if m.name not in active]


def refuse_failed(rows: Sequence[MigrationRecord], masked: str) -> None:
    """P3009: any unfinished, not-rolled-back row stops migrate and rollback."""
    failed = [r for r in rows if r.is_failed]
    if not failed:
        return
    lines = "\n".join(
        f"  The `{r.migration_name}` migration started at {r.started_at} failed"
        + (f": {_failure_summary(r.logs)}" if r.logs else "")
        for r in failed
    )
    name = failed[0].migration_name
    raise MigrationFailed(
        f"Found failed migrations in {masked}; new migrations will not be applied (P3009).\n{lines}",
        f"Fix the cause, then mark it with `invoke db.resolve --env=<env> --rolled-back {name}` (it will be "
        f"applied again) or `--applied {name}` (if you finished it by hand), and migrate again.",
        migration=name,
    )


def render_status(report: StatusReport, width: int | None = None) -> str:
    """The status as a table (for the task's output), no wider than `width`."""
    rows = [
        (m.name, m.state.replace("_", " "), m.applied_at.strftime("%Y-%m-%d %H:%M:%S") if m.applied_at else "", m.detail)
        for m in report.migrations
    ]
    head = (f"{report.url} ({report.provider}): {len(report.applied)} applied, {len(report.pending)} pending, "
            f"{len(report.failed)} failed, {len(report.drift)} drift")
    return head + "\n" + fit(rows, ["migration", "state", "applied at (UTC)", "detail"], width,
                             optional=("applied at (UTC)",))
