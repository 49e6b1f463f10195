"""Plan, Step, Runner: how every flow changes an environment.

A flow builds a `Plan` (an ordered list of `Step`s) before anything runs; `--dry-run`
prints it. The `Runner` applies it under the environment's lock, records every step in
the ledger, prints one progress line per step, and on failure undoes what was done in
reverse order. A run killed mid-step leaves the ledger saying where it was: `resume()`
re-runs the interrupted step and continues, `abort()` undoes the interrupted and the
completed steps. So every `run` must be safe to repeat after a kill, and every `undo`
safe to call after a partial or a repeated `run`.

Fault injection for the reliability suite: `DEPLOY_FAULT=before:<step>` (or
`after:<step>`, comma-separated) makes the runner SIGKILL its own process at that
boundary, so tests kill a real promotion at an exact point and then resume or abort it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from deploy.errors import DeployError
from deploy.redact import redact


@dataclass
class StepContext:
    """What a step sees: the run's id and a state dict persisted after every step."""

    run_id: str | None
    env: str
    state: dict[str, Any]
    console: "Console"
    dry_run: bool = False
    save: Callable[[dict], None] | None = None

    def note(self, text: str) -> None:
        self.console.note(text)

    def checkpoint(self) -> None:
        """Persist the state now, before changing the world, so an undo after a kill
        inside this step knows what to undo."""
        if self.save is not None:
            self.save(self.state)


StepFn = Callable[[StepContext], "str | None"]


@dataclass
class Step:
    name: str
    does: str                         # what it will do/change, for the plan table
    run: StepFn | None = None
    undo: StepFn | None = None
    undo_does: str = ""               # what the undo does, for the plan table
    skip: str | None = None           # a reason: the step is shown and recorded as skipped


@dataclass
class Plan:
    flow: str
    env: str
    steps: list[Step]
    sha: str | None = None
    release_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    header: list[tuple[str, str]] = field(default_factory=list)   # facts shown above the table

    def table(self) -> str:
        from tabulate import tabulate

        rows = []
        for i, s in enumerate(self.steps, 1):
            if s.skip:
                undo, action = "-", f"skipped: {s.skip}"
            else:
                undo, action = (s.undo_does or ("yes" if s.undo else "-")), s.does
            rows.append((i, s.name, redact(action), redact(undo)))
        head = "\n".join(f"{k}: {redact(v)}" for k, v in self.header)
        body = tabulate(rows, headers=("#", "step", "what it does", "undo"), tablefmt="simple")
        return (head + "\n\n" if head else "") + body


@dataclass(frozen=True)
class Outcome:
    run_id: str
    status: str                       # succeeded | failed | rolled_back | aborted | failed_in_place
    error: DeployError | None
    failed_step: str | None
    duration: float
    state: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class Console:
    """One progress line per step; everything printed goes through redaction."""

    def __init__(self, out: TextIO | None = None, quiet: bool = False):
        self.out = out or sys.stdout
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if not self.quiet:
            print(redact(text), file=self.out, flush=True)

    def step(self, i: int, n: int, name: str, status: str, elapsed: float | None, detail: str = "") -> None:
        t = f"{elapsed:6.2f}s" if elapsed is not None else " " * 7
        detail = " ".join(str(detail or "").split())
        self.line(f"[{i}/{n}] {name:<12} {status:<8} {t}  {detail}".rstrip())

    def note(self, text: str) -> None:
        self.line(f"        {text}")


def _fault(point: str) -> None:
    """SIGKILL this process at `point` when DEPLOY_FAULT names it (tests only)."""
    faults = os.environ.get("DEPLOY_FAULT")
    if faults and point in faults.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


class Runner:
    """Applies plans under a lock, records them in the ledger, undoes on failure."""

    def __init__(self, ledger, console: Console | None = None, *, rollback: bool = True):
        self.ledger = ledger
        self.console = console or Console()
        self.rollback = rollback

    # ------------------------------------------------------------------ entry points
    def execute(self, plan: Plan) -> Outcome:
        names = [s.name for s in plan.steps]
        # Lock first, with no run id yet: a refused lock leaves no run behind.
        self.ledger.acquire_lock(plan.env, run_id=None, purpose=plan.flow)
        try:
            run_id = self.ledger.start_run(env=plan.env, flow=plan.flow, sha=plan.sha, steps=names,
                                           args=plan.args, release_id=plan.release_id)
            self._bind_lock(plan.env, run_id)
        except BaseException:
            self.ledger.release_lock(plan.env)
            raise
        self.console.line(f"{plan.flow} {plan.env}: run {run_id}" + (f", sha {plan.sha[:12]}" if plan.sha else ""))
        return self._apply(plan, run_id, state={}, start_at=0, started=time.monotonic())

    def resume(self, plan: Plan, run_id: str) -> Outcome:
        """Finish a killed run: re-run its interrupted step, then the rest."""
        run, steps = self._adopt(plan, run_id, "resume")
        first = next((s.idx for s in steps if s.status not in ("done", "skipped")), len(steps))
        self.console.line(f"resume {plan.env}: run {run_id} from step {first + 1}/{len(steps)}")
        return self._apply(plan, run_id, state=dict(run.state), start_at=first, started=time.monotonic())

    def abort(self, plan: Plan, run_id: str) -> Outcome:
        """Undo a killed (or failed-in-place) run: the interrupted step and every completed one."""
        run, steps = self._adopt(plan, run_id, "abort")
        started = time.monotonic()
        ctx = StepContext(run_id=run_id, env=plan.env, state=dict(run.state), console=self.console,
                          save=self._saver(run_id))
        touched = [s.idx for s in steps if s.status in ("done", "running", "failed") and s.undo_status != "undone"]
        self.console.line(f"abort {plan.env}: run {run_id}, undoing {len(touched)} step(s)")
        undo_errors = self._undo(plan, run_id, ctx, touched)
        status = "aborted"
        err = None
        if undo_errors:
            err = DeployError(f"Abort of run {run_id} could not undo: {'; '.join(undo_errors)}",
                              "Fix the cause and run the same --abort again: undo steps are safe to repeat.")
            status = "failed"
        self.ledger.update_run(run_id, status=status, finished_at=time.time(), state=ctx.state,
                               error=str(err) if err else run.error)
        if not undo_errors:
            self.ledger.release_lock(plan.env, run_id=run_id)
        return Outcome(run_id, status, err, None, time.monotonic() - started, ctx.state)

    # ------------------------------------------------------------------ internals
    def _bind_lock(self, env: str, run_id: str) -> None:
        t = self.ledger.t["locks"]
        import os

        with self.ledger.engine.begin() as c:
            c.execute(t.update().where((t.c.env == env) & (t.c.pid == os.getpid())).values(run_id=run_id))

    def _adopt(self, plan: Plan, run_id: str, verb: str):
        run = self.ledger.run(run_id)
        allowed = ("running", "failed_in_place", "failed") if verb == "abort" else ("running", "failed_in_place")
        if run.status not in allowed:
            raise DeployError(f"Run {run_id} is {run.status}; there is nothing to {verb}.",
                              "See `invoke status` for the environment's runs.")
        steps = self.ledger.steps(run_id)
        if [s.name for s in steps] != [s.name for s in plan.steps]:
            raise DeployError(f"Run {run_id} had steps {[s.name for s in steps]}, but this version plans "
                              f"{[s.name for s in plan.steps]}; it cannot {verb} it safely.",
                              "Use the toolkit version that started the run, or break the lock and restore by hand.")
        self.ledger.acquire_lock(plan.env, run_id=run_id, purpose=verb, takeover_run=run_id)
        self.ledger.adopt_run(run_id)
        if run.status in ("failed_in_place", "failed"):
            self.ledger.update_run(run_id, status="running")
        return run, steps

    def _saver(self, run_id: str):
        return lambda state: self.ledger.update_run(run_id, state=state)

    def _apply(self, plan: Plan, run_id: str, *, state: dict, start_at: int, started: float) -> Outcome:
        ctx = StepContext(run_id=run_id, env=plan.env, state=state, console=self.console, save=self._saver(run_id))
        n = len(plan.steps)
        done: list[int] = [i for i in range(start_at)
                           if not plan.steps[i].skip]
        for i in range(start_at, n):
            step = plan.steps[i]
            if step.skip:
                self.ledger.update_step(run_id, i, status="skipped", result=f"skipped: {step.skip}",
                                        started_at=time.time(), finished_at=time.time())
                self.console.step(i + 1, n, step.name, "skipped", None, step.skip)
                continue
            _fault(f"before:{step.name}")
            t0 = time.monotonic()
            self.ledger.update_step(run_id, i, status="running", started_at=time.time(), error=None)
            try:
                result = step.run(ctx) if step.run else None
            except KeyboardInterrupt:
                err = DeployError(f"Interrupted during step {step.name}.")
                return self._fail(plan, run_id, ctx, i, err, done, started, t0)
            except DeployError as e:
                return self._fail(plan, run_id, ctx, i, e, done, started, t0)
            except Exception as e:  # a bug in a step must still not leave the environment half-changed
                err = DeployError(f"Step {step.name} failed unexpectedly: {type(e).__name__}: {e}",
                                  "This is a bug in the toolkit; the completed steps were undone. Please report it.")
                return self._fail(plan, run_id, ctx, i, err, done, started, t0)
            _fault(f"during:{step.name}")  # the step's work is done but not yet recorded
            elapsed = time.monotonic() - t0
            self.ledger.update_step(run_id, i, status="done", finished_at=time.time(), result=str(result or ""))
            self.ledger.update_run(run_id, state=ctx.state)
            self.console.step(i + 1, n, step.name, "done", elapsed, result or "")
            done.append(i)
            _fault(f"after:{step.name}")
        duration = time.monotonic() - started
        self.ledger.update_run(run_id, status="succeeded", finished_at=time.time(), state=ctx.state)
        self.ledger.release_lock(plan.env, run_id=run_id)
        self.console.line(f"{plan.flow} {plan.env}: succeeded in {duration:.2f}s (run {run_id})")
        return Outcome(run_id, "succeeded", None, None, duration, ctx.state)

    def _fail(self, plan, run_id, ctx, i, err: DeployError, done, started, t0) -> Outcome:
        step = plan.steps[i]
        n = len(plan.steps)
        self.ledger.update_step(run_id, i, status="failed", finished_at=time.time(), error=str(err))
        self.console.step(i + 1, n, step.name, "FAILED", time.monotonic() - t0, err.message)
        if not self.rollback:
            self.ledger.update_run(run_id, status="failed_in_place", finished_at=time.time(), state=ctx.state,
                                   error=str(err), failed_step=step.name)
            self.ledger.release_lock(plan.env, run_id=run_id)
            self.console.line(f"--no-rollback: left in place for diagnosis; undo later with --abort (run {run_id}).")
            return Outcome(run_id, "failed_in_place", err, step.name, time.monotonic() - started, ctx.state)
        # The failed step may have changed part of the world before failing: undo it too
        # (undos tolerate a partial run), then the completed steps in reverse.
        undo_errors = self._undo(plan, run_id, ctx, [*done, i])
        status = "rolled_back" if not undo_errors else "failed"
        msg = str(err)
        if undo_errors:
            msg += "\nUndo also failed: " + "; ".join(undo_errors)
        self.ledger.update_run(run_id, status=status, finished_at=time.time(), state=ctx.state,
                               error=msg, failed_step=step.name)
        if not undo_errors:
            self.ledger.release_lock(plan.env, run_id=run_id)
        else:
            err = DeployError(
                f"{err.message}\nUndo failed for: {'; '.join(undo_errors)}",
                f"The lock is kept. Fix the cause, then `invoke {plan.flow} --to={plan.env} --abort` to finish the undo.",
            )
        return Outcome(run_id, status, err, step.name, time.monotonic() - started, ctx.state)

    def _undo(self, plan: Plan, run_id: str, ctx: StepContext, indexes: list[int]) -> list[str]:
        errors = []
        n = len(plan.steps)
        for i in sorted(set(indexes), reverse=True):
            step = plan.steps[i]
            if step.skip or step.undo is None:
                continue
            t0 = time.monotonic()
            try:
                result = step.undo(ctx)
            except Exception as e:
                msg = e.message if isinstance(e, DeployError) else f"{type(e).__name__}: {e}"
                self.ledger.update_step(run_id, i, undo_status="undo_failed", undo_result=msg)
                self.console.step(i + 1, n, step.name, "UNDO-ERR", time.monotonic() - t0, msg)
                errors.append(f"{step.name}: {msg}")
                continue
            self.ledger.update_step(run_id, i, undo_status="undone", undo_result=str(result or ""))
            self.ledger.update_run(run_id, state=ctx.state)
            self.console.step(i + 1, n, step.name, "undone", time.monotonic() - t0, result or "")
        return errors
