"""Secret rotation: each secret's age per environment against its rotation period.

The matrix (`env/variables.toml`) holds each secret's period and the date its current
value was issued. Rotations after that are appended, one JSON object a line, to the
append-only `env/rotations.log`; the report takes the later of the two dates. The clock
is passed in (`today`), so the report is a pure function of the matrix, the record and
the date.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from deploy.config import read_text
from deploy.envs import Matrix
from deploy.errors import SettingsError
from deploy.redact import redact

__all__ = [
    "ROTATION_LOG", "DUE_SOON_DAYS", "Rotation", "RotationRow", "RotationReport",
    "rotation_log_path", "parse_rotations", "read_rotations", "rotation_report",
    "render_rotation", "record_rotation",
]

ROTATION_LOG = "env/rotations.log"
DUE_SOON_DAYS = 14
_WHO = re.compile(r"^[^\x00-\x1f\x7f]{1,100}\Z")


@dataclass(frozen=True)
class Rotation:
    variable: str
    env: str
    rotated_at: str                        # ISO 8601 as recorded
    by: str

    @property
    def rotated_on(self) -> dt.date:
        return dt.date.fromisoformat(self.rotated_at[:10])


RotationStatus = Literal["ok", "due soon", "overdue", "invalid"]


@dataclass(frozen=True)
class RotationRow:
    variable: str
    env: str
    period_days: int
    last_rotated: dt.date
    by: str                                # who recorded it, or "matrix" for the matrix's date
    age_days: int
    due_on: dt.date
    days_left: int
    status: RotationStatus


@dataclass(frozen=True)
class RotationReport:
    today: dt.date
    production: tuple[str, ...]
    rows: tuple[RotationRow, ...]

    @property
    def failing(self) -> tuple[RotationRow, ...]:
        """Production secrets that are overdue (or dated in the future, which hides their age)."""
        return tuple(r for r in self.rows if r.env in self.production and r.status in ("overdue", "invalid"))

    @property
    def exit_code(self) -> int:
        return 1 if self.failing else 0


def rotation_log_path(matrix: Matrix) -> Path:
    return matrix.root / ROTATION_LOG


def parse_rotations(text: str, file: Path) -> tuple[Rotation, ...]:
    """Rotations from the record's text; `#` lines and blank lines are comments."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
            rot = Rotation(variable=obj["variable"], env=obj["env"], rotated_at=obj["rotated_at"], by=obj["by"])
            rot.rotated_on  # noqa: B018 - validates the date now, not when the report is built
            if not all(isinstance(x, str) for x in (rot.variable, rot.env, rot.rotated_at, rot.by)):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SettingsError(
                f"{file}: line {n} is not a rotation record.",
                'Each line is {"variable": ..., "env": ..., "rotated_at": "YYYY-MM-DD...", "by": ...}; '
                "fix the line by hand (the record is otherwise append-only).",
            ) from None
        out.append(rot)
    return tuple(out)


def read_rotations(path: Path) -> tuple[Rotation, ...]:
    """The record at `path`; no file means no rotations yet."""
    try:
        text = read_text(Path(path))
    except FileNotFoundError:
        return ()
    return parse_rotations(text, Path(path))


def rotation_report(matrix: Matrix, today: dt.date, rotations: Iterable[Rotation] = ()) -> RotationReport:
    """Every dated secret of every environment, judged against its period on `today`."""
    latest: dict[tuple[str, str], Rotation] = {}
    for r in rotations:
        key = (r.variable, r.env)
        if key not in latest or r.rotated_on >= latest[key].rotated_on:
            latest[key] = r
    rows = []
    for var in matrix.variables:
        for env in matrix.environments:
            rule = var.on(env)
            if not rule.secret or var.rotation_days is None:
                continue
            last, by = rule.last_rotated, "matrix"
            rec = latest.get((var.name, env))
            if rec is not None and (last is None or rec.rotated_on >= last):
                last, by = rec.rotated_on, rec.by
            if last is None:
                continue  # an optional secret nobody has issued for this environment
            due = last + dt.timedelta(days=var.rotation_days)
            left = (due - today).days
            if last > today:
                status: RotationStatus = "invalid"
            elif left <= 0:
                status = "overdue"
            elif left <= DUE_SOON_DAYS:
                status = "due soon"
            else:
                status = "ok"
            rows.append(RotationRow(var.name, env, var.rotation_days, last, by, (today - last).days, due, left, status))
    return RotationReport(today=today, production=matrix.production, rows=tuple(rows))


def render_rotation(report: RotationReport) -> str:
    """The rotation table and a verdict line, redacted."""
    from tabulate import tabulate

    body = tabulate(
        [[r.variable, r.env, str(r.period_days), r.last_rotated.isoformat(), r.by, str(r.age_days),
          r.due_on.isoformat(), r.status] for r in report.rows],
        headers=["secret", "env", "period (days)", "last rotated", "by", "age (days)", "due", "status"],
        tablefmt="github", disable_numparse=True,
    )
    soon = sum(r.status == "due soon" for r in report.rows)
    over = sum(r.status == "overdue" for r in report.rows)
    if report.failing:
        names = ", ".join(f"{r.variable} ({r.env})" for r in report.failing)
        verdict = f"FAIL: production secret(s) overdue or misdated: {names}"
    else:
        verdict = "ok: no production secret is overdue"
    return redact(f"secrets.rotation on {report.today.isoformat()}: {over} overdue, {soon} due soon\n\n"
                  f"{body}\n\n{verdict}\n")


def record_rotation(matrix: Matrix, name: str, env: str, who: str, when: dt.date | dt.datetime,
                    path: Path | None = None) -> Rotation:
    """Append one rotation to the record; the next report counts the secret's age from `when`."""
    var = matrix.variable(name)  # unknown names: SettingsError with the closest match
    matrix.require_env(env)
    if not var.on(env).secret:
        raise SettingsError(f"{name} is not a secret in {env!r} ({matrix.file}); there is nothing to rotate.",
                            "Only variables marked secret in that environment have a rotation record.")
    if not isinstance(who, str) or not _WHO.match(who) or not who.strip():
        raise SettingsError(f"--by {who!r} is not a usable name for the rotation record.",
                            "Give who rotated it: 1 to 100 printable characters, e.g. --by=alice.")
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise SettingsError("The rotation time has no time zone.", "Pass an aware datetime (UTC).")
        stamp = when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    elif isinstance(when, dt.date):
        stamp = when.isoformat()
    else:
        raise SettingsError(f"The rotation time {when!r} is not a date.")
    rot = Rotation(variable=name, env=env, rotated_at=stamp, by=who.strip())
    line = json.dumps({"variable": rot.variable, "env": rot.env, "rotated_at": rot.rotated_at, "by": rot.by},
                      ensure_ascii=True) + "\n"
    data = line.encode("ascii")
    target = Path(path) if path is not None else rotation_log_path(matrix)
    # One write() on an O_APPEND descriptor: the kernel places each line at the end as a
    # whole, so concurrent recorders never interleave or overwrite each other's lines.
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A hand edit may have left the last line unterminated; never glue onto it.
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise SettingsError(f"{target}: only {written} of {len(data)} bytes of the rotation were written.",
                            "Check the disk, then fix the last line of the record by hand.")
    return rot
