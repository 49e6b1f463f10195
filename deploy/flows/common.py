"""What every flow shares: git facts, the latest unfinished run, reporting an outcome."""

from __future__ import annotations

import time
from pathlib import Path

from deploy import facts, feedback, proc, summary
from deploy.deferred import resolve
from deploy.errors import DeployError, PlanChanged, SettingsError
from deploy.facts import PromotionRecord
from deploy.ledger import Ledger, ReleaseRow, RunRow, RunStatus, StepStatus, UndoStatus
from deploy.services import Services


def whole_number(flag: str, value, default: int, *, minimum: int = 1) -> int:
    """A whole-number flag, taken as typed (a string, or None for its default) so that
    `--steps=abc` is a SettingsError naming the flag rather than Invoke's traceback."""
    if value is None:
        return default
    try:
        n = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"--{flag} must be a whole number, not {value!r}.",
                            f"For example --{flag}={default}.") from None
    if n < minimum:
        raise SettingsError(f"--{flag} must be a whole number of at least {minimum}, not {n}.",
                            f"For example --{flag}={default}.")
    return n


def promotion_of(led: Ledger, env: str, release_id: str | None) -> PromotionRecord | None:
    """The record of the promotion that made `release_id` live on `env`, if the ledger has it."""
    row = next((r for r in led.releases(env, limit=100) if r.release_id == release_id), None)
    if not row or not row.run_id:
        return None
    run = led.run(row.run_id)
    return PromotionRecord.of(run) if run.flow == "promote" else None


def git_sha(root: Path, ref: str | None = None) -> str:
    """The full SHA of `ref` (default HEAD) in the repository that holds `root`."""

    r = proc.run(["git", "rev-parse", "--verify", "--quiet", f"{ref or 'HEAD'}^{{commit}}"], cwd=root)
    if not r.ok or not r.stdout.strip():
        if ref:
            raise SettingsError(f"--sha={ref} is not a commit of the repository at {root}.",
                                "Pass a full or abbreviated SHA that `git rev-parse` knows (fetch first in CI).")
        raise SettingsError(f"{root} has no git commit to deploy (not a git repository, or no commits yet).",
                            "Run from a git checkout of the app, or pass --sha.")
    return r.stdout.strip()


def app_sha(s, ref: str | None = None) -> str:
    """The full SHA of `ref` in the app's repository: the commit gate, evidence, build and
    promote all name. When `environment.app_dir` is its own git repository (not the
    toolkit project's), that is the app's commit, never the project's HEAD."""
    return git_sha(s.app_dir if s.app_dir.is_dir() else s.root, ref)


def git_dirty(root: Path) -> list[str]:
    """Tracked files with uncommitted changes (untracked files do not change what is built)."""

    r = proc.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return [ln[3:] for ln in r.stdout.splitlines() if ln.strip()] if r.ok else []


def unfinished_run(led: Ledger, env: str, flow: str) -> RunRow:
    """The latest run of `flow` on `env` that a kill or --no-rollback left unfinished."""
    lock = led.lock(env)
    for r in led.runs(env, flow=flow, limit=20):
        if r.status in (RunStatus.RUNNING, RunStatus.FAILED_IN_PLACE):
            return r
        if r.status == RunStatus.FAILED and lock is not None and lock.run_id == r.id:
            return r  # its undo did not finish, so it kept the lock: --abort finishes the undo
        break
    raise DeployError(f"{env} has no interrupted {flow} run to resume or abort.",
                      f"`invoke status` shows the environment's runs; start a new one with `invoke {flow} --to={env}`.")


def report(settings, led: Ledger, outcome, *, title: str, kind: str) -> None:
    """Record the outcome everywhere it belongs: deployment log, CI summary, terminal.
    A run that failed before any step completed (a failed preflight) changed nothing, so
    it leaves the tracked deployment log alone: the ledger and the terminal have it."""

    run = led.run(outcome.run_id)
    steps = led.steps(outcome.run_id)
    changed = outcome.ok or any(s.status == StepStatus.DONE for s in steps)
    if not settings.is_local and changed and outcome.status != RunStatus.LOCK_LOST:  # the new holder logs the run  # the team's log is for shared environments; the ledger has local runs
        first = (outcome.error.message.strip().splitlines() or [""])[0] if outcome.error else ""
        feedback.append(settings.root, feedback.Entry(
            kind=kind, env=settings.name, outcome=run.status, who=run.who, sha=run.sha,
            release_id=run.release_id, duration=outcome.duration, run_id=run.id,
            text=(f"failed at {outcome.failed_step}: {_short(first)}" if outcome.error and outcome.failed_step
                  else None),
        ))
    summary.write_github_summary(summary.markdown(run, steps, title=title))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def fail_if_not_ok(outcome, led=None, flow: str = "promote") -> None:
    """Raise the run's error with what happened to the environment, unless it succeeded.
    With the ledger, say whether anything had been done (and undone) before the failure."""
    if outcome.ok or outcome.status == RunStatus.ABORTED:
        return
    err = outcome.error or DeployError(f"The run ended {outcome.status}.")
    kept = ("the failed deploy was left in place (--no-rollback)" if flow == "promote" else
            f"what the {flow} did before it is left in place (a {flow} is not undone); re-running it is safe")
    # Every step that changes an environment has an undo, so the steps undone are the changes.
    undone = None if led is None else sum(1 for s in led.steps(outcome.run_id) if s.undo_status == UndoStatus.UNDONE)
    done = None if led is None else sum(1 for s in led.steps(outcome.run_id) if s.status == StepStatus.DONE)
    if (outcome.status == RunStatus.ROLLED_BACK and undone == 0
            or outcome.status == RunStatus.FAILED_IN_PLACE and done == 0):
        fate = "nothing had been changed yet"
    elif outcome.status == RunStatus.ROLLED_BACK and undone:
        fate = f"the {undone} step(s) that had changed something were undone"
    else:
        fate = {
            RunStatus.ROLLED_BACK: "every completed step was undone",
            RunStatus.FAILED_IN_PLACE: kept,
            RunStatus.FAILED: "the undo did not finish; the lock is kept",
            RunStatus.LOCK_LOST: "another runner took the lock over, so nothing was undone",
        }.get(outcome.status, outcome.status)
    if outcome.failed_step:
        head = f"Step {outcome.failed_step} failed, and {fate} (run {outcome.run_id})"
    else:   # an --abort whose undo failed, or a ledger that could not record the end
        head = f"Run {outcome.run_id} did not finish ({outcome.status})"
    final = DeployError(f"{head}:\n{err.message}", err.hint).fields_from(err)
    final.exit_code = err.exit_code if isinstance(err, DeployError) else 1
    raise final


def now() -> float:
    return time.time()


# ----------------------------------------------------------------------------- hosts that cannot be reached

def skipping_hosts(s, names):
    """(settings without the hosts `--skip-host` names, their full names); unchanged without names."""
    import dataclasses

    if not names:
        return s, []
    if s.is_local or not s.hosts.hosts:
        raise SettingsError(f"--skip-host: the {s.name} environment has no hosts.", "Drop --skip-host.")

    # Named, not imported (deploy/deferred.py): only --skip-host needs deploy/hosts/ here, and a
    # dry run of a local environment must not load it.
    section, skipped = resolve("deploy.hosts:skipping")(s.hosts, names, s.app)
    return dataclasses.replace(s, hosts=section), skipped


def bring_back(s, release: str | None) -> str:
    """The commands that put a host skipped with --skip-host on `release` once it answers again
    (a lock a finished run left there goes first)."""
    to = f" --to={release}" if release else ""
    return f"`invoke lock.release --env={s.name} --force`, then `invoke hosts.rollback --env={s.name}{to}`"


def record_skipped(svc: Services, led: Ledger, s, run_id: str, args: dict, skipped: list[str]) -> None:
    """The run's arguments in the ledger name the skipped hosts; the operator is told how to
    bring each in line."""
    led.update_run(run_id, args=facts.dumps({**args, "skip_hosts": list(skipped)}))
    live_row = led.live_release(s.name)
    live = live_row.release_id if live_row else None
    for h in skipped:
        svc.term.out(f"{h}: skipped (--skip-host, recorded in run {run_id}); nothing was changed there. Once it "
                     f"answers again, bring it in line with {bring_back(s, live)}.")


def _id_and_commit(row: ReleaseRow | None) -> tuple[str | None, str | None]:
    return (row.release_id, row.sha) if row else (None, None)


def still_live(led: Ledger, env: str, shown: ReleaseRow | None) -> None:
    """PlanChanged unless the ledger's live release (id and commit) is still the one a person
    was shown before confirming; read under the environment's lock."""
    now = led.live_release(env)
    if _id_and_commit(now) != _id_and_commit(shown):
        raise PlanChanged(
            f"{env} changed after the plan was shown: it said {shown.release_id if shown else 'no release'} is live, "
            f"the ledger now says {now.release_id if now else 'none'}. Nothing was changed.",
            f"Look again (`invoke status`), then run it again to confirm a plan of what is live now.")
