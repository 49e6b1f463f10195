"""What the ledger records: runs and their steps, releases, approvals and drills.

Run state is stored exactly (deploy/facts.py: no redaction, typed facts, no `Secret`);
the text fields (errors, step results) are messages and are redacted like any output."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from enum import StrEnum
from typing import Any

from deploy import facts
from deploy.errors import LedgerError
from deploy.redact import redact
from deploy.ledger._rows import (ApprovalRow, DrillRow, ReleaseRow, ReleaseStatus, RunRow, RunStatus, StepRow,
                                  StepStatus)
from deploy.ledger._store import LedgerStore, whoami


class Records(LedgerStore):
    """What the ledger records: runs and their steps, releases, approvals and drills."""

    def start_run(self, *, env: str, flow: str, sha: str | None, steps: list[str], args: dict[str, Any],
                  release_id: str | None = None, status: RunStatus = RunStatus.RUNNING) -> str:
        run_id = uuid.uuid4().hex[:12]
        args_json = facts.dumps(args)  # exact; a Secret in a run's arguments is refused
        with self._tx(f"record the start of a {flow} run") as c:
            c.execute(self.t["runs"].insert().values(
                id=run_id, env=env, flow=flow, sha=sha, release_id=release_id, status=str(status),
                who=whoami(), hostname=socket.gethostname(), pid=os.getpid(),
                started_at=self._filed(self.t["runs"].c.started_at),
                args=args_json, state="{}",
            ))
            if steps:
                c.execute(self.t["steps"].insert(), [
                    dict(run_id=run_id, idx=i, name=n, status=str(StepStatus.PENDING)) for i, n in enumerate(steps)
                ])
        return run_id

    def update_run(self, run_id: str, **values: Any) -> None:
        _plain(values)
        if "state" in values:
            values["state"] = facts.dumps_state(values["state"])  # facts only, exact; a Secret is refused
        if "error" in values and values["error"] is not None:
            values["error"] = redact(values["error"])
        self._stamped(self.t["runs"], values)
        with self._tx(f"record run {run_id}") as c:
            c.execute(self.t["runs"].update().where(self.t["runs"].c.id == run_id).values(**values))

    def adopt_run(self, run_id: str) -> None:
        """This process takes over a run (resume/abort)."""
        self.update_run(run_id, pid=os.getpid(), hostname=socket.gethostname())

    def update_step(self, run_id: str, idx: int, **values: Any) -> None:
        _plain(values)
        for k in ("result", "error", "undo_result"):
            if values.get(k) is not None:
                values[k] = redact(values[k])[:4000]
        t = self.t["steps"]
        self._stamped(t, values)
        with self._tx(f"record step {idx + 1} of run {run_id}") as c:
            c.execute(t.update().where((t.c.run_id == run_id) & (t.c.idx == idx)).values(**values))

    def run(self, run_id: str) -> RunRow:
        t = self.t["runs"]
        with self._tx(read=True) as c:
            row = c.execute(t.select().where(t.c.id == run_id)).mappings().first()
        if row is None:
            raise LedgerError(f"No run {run_id!r} in the ledger.", "List runs with `invoke status`.")
        return RunRow.of(row)

    def steps(self, run_id: str) -> list[StepRow]:
        t = self.t["steps"]
        with self._tx(read=True) as c:
            rows = c.execute(t.select().where(t.c.run_id == run_id).order_by(t.c.idx)).mappings().all()
        return [StepRow.of(r) for r in rows]

    def runs(self, env: str | None = None, *, flow: str | None = None, status: str | tuple[str, ...] | None = None,
             sha: str | None = None, since: float | None = None, limit: int = 50) -> list[RunRow]:
        t = self.t["runs"]
        q = t.select()
        if env:
            q = q.where(t.c.env == env)
        if flow:
            q = q.where(t.c.flow == flow)
        if status:
            q = q.where(t.c.status.in_((status,) if isinstance(status, str) else status))
        if sha:
            q = q.where(t.c.sha == sha)
        if since is not None:
            q = q.where(t.c.started_at >= since)
        q = q.order_by(t.c.started_at.desc()).limit(limit)
        with self._tx(read=True) as c:
            return [RunRow.of(r) for r in c.execute(q).mappings().all()]

    def record_release(self, *, env: str, release_id: str, sha: str, artifact_sha256: str | None,
                       run_id: str | None, status: ReleaseStatus = ReleaseStatus.LIVE,
                       shopify_version: str | None = None) -> None:
        t = self.t["releases"]
        with self._tx() as c:
            if status == ReleaseStatus.LIVE:
                c.execute(t.update().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))
                          .values(status=str(ReleaseStatus.SUPERSEDED)))
            existing = c.execute(t.select().where((t.c.env == env) & (t.c.release_id == release_id))).first()
            vals = dict(sha=sha, artifact_sha256=artifact_sha256, run_id=run_id, status=str(status),
                        shopify_version=shopify_version)
            if existing:
                c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(**vals))
            else:
                c.execute(t.insert().values(env=env, release_id=release_id, created_at=self._filed(t.c.created_at),
                                            **vals))

    def set_release_status(self, env: str, release_id: str, status: ReleaseStatus) -> None:
        t = self.t["releases"]
        with self._tx() as c:
            if status == ReleaseStatus.LIVE:
                c.execute(t.update().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))
                          .values(status=str(ReleaseStatus.SUPERSEDED)))
            c.execute(t.update().where((t.c.env == env) & (t.c.release_id == release_id)).values(status=str(status)))

    def releases(self, env: str, limit: int = 20) -> list[ReleaseRow]:
        t = self.t["releases"]
        with self._tx(read=True) as c:
            rows = c.execute(t.select().where(t.c.env == env).order_by(t.c.created_at.desc()).limit(limit)).mappings()
            return [ReleaseRow.of(r) for r in rows]

    def live_release(self, env: str) -> ReleaseRow | None:
        t = self.t["releases"]
        with self._tx(read=True) as c:
            r = c.execute(t.select().where((t.c.env == env) & (t.c.status == str(ReleaseStatus.LIVE)))).mappings().first()
        return ReleaseRow.of(r) if r else None

    def approve(self, *, env: str, sha: str, role: str, by: str, note: str | None = None) -> None:
        from sqlalchemy.exc import IntegrityError

        try:
            with self._tx() as c:
                c.execute(self.t["approvals"].insert().values(env=env, sha=sha, role=role, by=by, at=time.time(), note=note))
        except IntegrityError:
            pass  # the same person approving the same role twice is one approval

    def approvals(self, env: str, sha: str | None = None) -> list[ApprovalRow]:
        t = self.t["approvals"]
        q = t.select().where(t.c.env == env)
        if sha:
            q = q.where(t.c.sha == sha)
        with self._tx(read=True) as c:
            return [ApprovalRow.of(r) for r in c.execute(q.order_by(t.c.at)).mappings()]

    def record_drill(self, *, env: str, procedure: str, started_at: float, finished_at: float, outcome: str,
                     durations: dict[str, float], run_id: str | None = None, note: str | None = None) -> int:
        with self._tx() as c:
            res = c.execute(self.t["drills"].insert().values(
                env=env, procedure=procedure, who=whoami(), started_at=started_at, finished_at=finished_at,
                outcome=outcome, durations=json.dumps(durations), run_id=run_id, note=note))
            return int(res.inserted_primary_key[0])  # type: ignore[index]  # one key on an insert

    def drills(self, env: str | None = None, procedure: str | None = None, limit: int = 50) -> list[DrillRow]:
        t = self.t["drills"]
        q = t.select()
        if env:
            q = q.where(t.c.env == env)
        if procedure:
            q = q.where(t.c.procedure == procedure)
        with self._tx(read=True) as c:
            rows = c.execute(q.order_by(t.c.started_at.desc()).limit(limit)).mappings()
            return [DrillRow.of(r) for r in rows]


def _plain(values: dict[str, Any]) -> None:
    """Statuses are stored as their text (a database driver may adapt an enum by its name)."""
    for k, v in values.items():
        if isinstance(v, StrEnum):
            values[k] = str(v)
