"""Single primitives that change a shared environment, held to what a promotion is held to.

Every change to a protected environment, by `promote` or by a single primitive, checks
the same rights, takes the same locks and uses committed files only.
A task that changes an environment (`hosts.release/rollback`, `db.migrate/rollback/
resolve/restore`, `shopify.deploy/release`) hands its work, as steps, to `act`. For a
remote environment `act` puts promote's own steps in front of it:

- `lock`: the hosts' deploy lock (`steps.lock_hosts`), held until the run ends, so a run
  of another ledger that holds the hosts blocks a database or Shopify task too (LockHeld,
  exit 4, naming the holder and its run);
- `approvals`, for a task that brings a commit forward (hosts.release, db.migrate,
  shopify.deploy) where the environment requires a staging run or approvals: promote's
  check of that commit (`steps.check_promotion_rights`);

and asks promote's question on a protected environment (`environment.protected`: a yes on
a terminal, or --yes; Aborted, exit 7, with nothing recorded). The run is under the
ledger's lock as every plan is. A local environment keeps its one-step plan.

Committed files only: on a remote environment the migrations a database task reads come
from the commit's checkout (`committed_migrations`), and a working tree whose migrations
differ from it is refused, naming the files.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

from deploy.config import Settings
from deploy.engine import Console, Outcome, Plan, Runner, Step
from deploy.errors import DeployError, SettingsError
from deploy.flows import steps
from deploy.flows.common import app_sha
from deploy.ledger import Ledger, RunStatus, StepStatus
from deploy.locations import migrations_dir, source_dir
from deploy.services import Services


def guarded(s: Settings) -> bool:
    """Whether a change of `s` is held to a promotion's rights and locks (every remote
    environment; the confirmation only where `environment.protected`)."""
    return not s.is_local


def act(svc: Services, s: Settings, name: str, work: list[Step], *, led: Ledger, yes: bool, question: str,
        promotes: str | None = None, sha: str | None = None, release_id: str | None = None,
        args: dict | None = None, ask: bool = True) -> Outcome:
    """Run `work` as the plan of task `name` on `s` with a promotion's rights and locks.

    `promotes`: the commit the task brings forward (its approvals are checked as promote
    checks them). `ask=False`: the task asked its own question already. Raises the
    failing step's error (LockHeld, ApprovalMissing, the primitive's); returns the Outcome."""
    seq: list[Step] = []
    if guarded(s):
        if steps.target(s).shared:
            seq.append(steps.lock_hosts(s, release_id or ""))
        if promotes and (s.environment.requires_staging_run or s.approvals.required_roles):
            seq.append(steps.approvals(s, promotes, led))
    seq += work
    undoable = any(st.undo for st in seq)
    plan = Plan(name, s.name, seq, sha=sha, release_id=release_id, args=args or {},
                failed_status=RunStatus.ROLLED_BACK if undoable else RunStatus.FAILED,
                header=[("environment", f"{s.name} ({s.environment.description or s.environment.kind})"),
                        ("task", name)] + ([("commit", promotes)] if promotes else []))
    if ask and guarded(s) and s.environment.protected:
        svc.term.out(plan.table() + "\n")
        svc.term.confirm(question, yes)
    outcome = Runner(led, Console(quiet=True)).execute(plan)
    if not outcome.ok:
        raise outcome.error or DeployError(f"{name} on {s.name} ended {outcome.status} (run {outcome.run_id}).")
    return outcome


def one(name: str, does: str, fn) -> list[Step]:
    """A task's work as the single step `name`'s last part (db.rollback -> rollback)."""
    return [Step(name.split(".")[-1], does, run=fn)]


def result(led: Ledger, outcome: Outcome, step: str) -> str:
    """What step `step` of the run recorded as its result ('' when it was skipped or absent)."""
    row = next((r for r in led.steps(outcome.run_id) if r.name == step), None)
    return (row.result or "") if row and row.status == StepStatus.DONE else ""


# ----------------------------------------------------------------------------- committed files

def committed_migrations(s: Settings) -> tuple[str | None, Path]:
    """(commit, migrations folder) a database task of `s` reads: the working tree's for a
    local environment (None: no commit); for a remote one the app's HEAD commit, extracted
    as a promotion extracts it, refused (SettingsError) when the working tree's migrations
    differ from that commit's: only committed migrations change a shared database."""
    if not guarded(s):
        return None, migrations_dir(s)
    sha = app_sha(s)
    committed = migrations_dir(s, source_dir(s, sha))
    here = migrations_dir(s)
    diff = differences(here, committed)
    if diff:
        shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise SettingsError(
            f"The working tree's migrations ({s.environment.app_dir}/{s.database.migrations_dir}) differ from "
            f"commit {sha[:12]}: {shown}. On {s.name} only committed migrations run; nothing was changed.",
            "Commit the change and promote it (the gate, the backup and the approvals run for it), or revert it "
            "(git status shows it).")
    return sha, committed


def differences(work: Path, commit: Path) -> list[str]:
    """Files under `work` and `commit` that are not the same: `path (uncommitted)` for one
    only in the working tree, `path (changed)`, `path (deleted)`; sorted."""
    def files(root: Path) -> set[str]:
        if not root.is_dir():
            return set()
        out = set()
        for folder, _dirs, names in os.walk(root):
            for n in names:
                out.add(os.path.relpath(os.path.join(folder, n), root))
        return out

    mine, theirs = files(work), files(commit)
    out = [f"{p} (uncommitted)" for p in mine - theirs]
    out += [f"{p} (deleted)" for p in theirs - mine]
    out += [f"{p} (changed)" for p in mine & theirs if not filecmp.cmp(work / p, commit / p, shallow=False)]
    return sorted(out)
