"""The ledger's rows as values: statuses as StrEnums (stored as their text) and one frozen
dataclass per table row, read back from a database mapping."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Mapping

from deploy import clock, facts, liveness


class RunStatus(StrEnum):
    """A run's status in the ledger."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"                     # and its undo did not finish, or nothing to undo
    ROLLED_BACK = "rolled_back"           # failed, and every completed step was undone
    ABORTED = "aborted"                   # a killed run undone with --abort
    FAILED_IN_PLACE = "failed_in_place"   # --no-rollback: left for diagnosis
    LOCK_LOST = "lock_lost"               # an outcome only, never stored: the lock's new holder owns the run


class StepStatus(StrEnum):
    """A step's status in the ledger."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


class UndoStatus(StrEnum):
    """What became of a step's undo."""

    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


class ReleaseStatus(StrEnum):
    """A release of an environment in the ledger."""

    LIVE = "live"
    SUPERSEDED = "superseded"             # a later release went live after it
    ROLLED_BACK = "rolled_back"


RUN_ACTIVE = (RunStatus.RUNNING,)


RUN_FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.ABORTED,
             RunStatus.FAILED_IN_PLACE)


@dataclass(frozen=True)
class RunRow:
    id: str
    env: str
    flow: str
    sha: str | None
    release_id: str | None
    artifact_sha256: str | None
    status: RunStatus
    who: str
    hostname: str
    pid: int
    started_at: float
    finished_at: float | None
    args: dict[str, Any]
    state: facts.State
    error: str | None
    failed_step: str | None

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "RunRow":
        d = dict(row)
        d["args"] = json.loads(d.get("args") or "{}")
        d["state"] = facts.loads(d.get("state"))
        d["status"] = RunStatus(d["status"])
        return cls(**d)


@dataclass(frozen=True)
class StepRow:
    run_id: str
    idx: int
    name: str
    status: StepStatus
    started_at: float | None
    finished_at: float | None
    result: str | None
    error: str | None
    undo_status: UndoStatus | None
    undo_result: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "StepRow":
        d = dict(row)
        return cls(**{**d, "status": StepStatus(d["status"]),
                      "undo_status": UndoStatus(d["undo_status"]) if d.get("undo_status") else None})


@dataclass(frozen=True)
class ReleaseRow:
    """A release of an environment: which build, from which commit, and whether it is live."""

    env: str
    release_id: str
    sha: str
    artifact_sha256: str | None
    run_id: str | None
    status: ReleaseStatus
    created_at: float
    shopify_version: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "ReleaseRow":
        d = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**d, "status": ReleaseStatus(d["status"])})


@dataclass(frozen=True)
class ApprovalRow:
    """One person's approval of a commit for an environment, in one role."""

    env: str
    sha: str
    role: str
    by: str
    at: float
    note: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "ApprovalRow":
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DrillRow:
    """A rehearsal of a procedure (hotfix, rollback, restore): when, by whom, how it went."""

    id: int
    env: str
    procedure: str
    who: str
    started_at: float
    finished_at: float | None
    outcome: str                          # "passed" | "failed"
    durations: dict[str, float]           # phase -> seconds
    run_id: str | None
    note: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> "DrillRow":
        d = {k: row[k] for k in cls.__dataclass_fields__}
        return cls(**{**d, "durations": json.loads(d["durations"] or "{}")})


@dataclass(frozen=True)
class LockRow:
    env: str
    run_id: str | None
    who: str
    hostname: str
    pid: int
    acquired_at: float
    purpose: str
    heartbeat_at: float | None = None
    token: str | None = None
    boot_id: str | None = None
    pid_ns: int | None = None
    pid_start: int | None = None
    clock_id: str | None = None
    beat_clock: float | None = None
    lineage: str | None = None
    # How it was read (not part of the lock): the ledger's clock then, whether that clock is the
    # database's own (Postgres: every runner reads the same one), and this process's CLOCK_BOOTTIME.
    ledger_now: float | None = field(default=None, compare=False)
    shared_clock: bool = field(default=False, compare=False)
    read_boot: float | None = field(default=None, compare=False)

    @property
    def last_seen(self) -> float:
        """The holder's last sign of life on the ledger's clock: its heartbeat, else when it took the lock."""
        return max(self.acquired_at, self.heartbeat_at or 0.0)

    def silence(self) -> float | None:
        """Seconds since the holder's last sign of life, measured on one clock, or None when no
        clock it and this process share can measure it. Postgres: the database's clock wrote the
        heartbeat and read the row. SQLite: the holder's CLOCK_BOOTTIME, when it is ours (same boot
        and time namespace); never two wall clocks. A lock an older toolkit wrote (no token) is
        judged as that toolkit did, by wall time."""
        now = self.ledger_now if self.ledger_now is not None else time.time()
        if self.shared_clock or self.token is None:
            return max(0.0, now - self.last_seen)
        if self.beat_clock is None or self.clock_id is None or self.clock_id != liveness.clock_id():
            return None
        boot = self.read_boot if self.read_boot is not None else liveness.boottime()
        silent = boot - self.beat_clock
        return silent if silent >= 0 else None   # a beat "after" now is another clock's: unmeasurable

    def holder_alive(self) -> bool | None:
        """True/False when this process can check the holder (same boot and pid namespace: its pid
        and that pid's start time); None when it cannot (another machine, container or namespace)."""
        if self.token is not None and self.token == liveness.token():
            return True
        verdict = liveness.gone(self.boot_id, self.pid_ns, self.pid, self.pid_start)
        return None if verdict is None else not verdict

    def describe(self, now: float | None = None) -> str:
        now = self.ledger_now if self.ledger_now is not None else (now or time.time())
        age = now - self.acquired_at
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.acquired_at))
        run = f", run {self.run_id}" if self.run_id else ""
        seen = ""
        if self.heartbeat_at:
            silent = self.silence()
            seen = (f", last seen {clock.age(silent)} ago" if silent is not None
                    else ", its heartbeat cannot be timed from here")
        return (f"{self.who}@{self.hostname} (pid {self.pid}{run}, {self.purpose}) since {since} "
                f"({clock.age(age)} ago{seen})")
