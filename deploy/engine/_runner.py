"""The Runner: how every flow changes an environment.

A flow builds a `Plan` (an ordered list of `Step`s) before anything runs; `--dry-run`
prints it. The `Runner` applies it under the environment's lock, records every step in
the ledger, prints one progress line per step, and on failure undoes what was done in
reverse order. A run killed mid-step leaves the ledger saying where it was: `resume()`
re-runs the interrupted step and continues, `abort()` undoes the interrupted and the
completed steps. So every `run` must be safe to repeat after a kill, and every `undo`
safe to call after a partial or a repeated `run`.

Signals: SIGTERM (what CI runners and `timeout` send) and SIGINT stop a run like a failure:
the step in progress is interrupted, the completed steps are undone and the lock released.
A second signal during the undo is ignored with a message: an undo cut in half is the one
state that needs a person. If the process is killed anyway, `--abort` finishes the undo.

Bookkeeping: a ledger that cannot be written (disk full under `.deploy/`, a shared ledger
gone) stops the run like a failed step; the undo still runs, and the final message says
what the ledger could not record and the exact command that finishes it.

Fault injection for the reliability suite: `DEPLOY_FAULT=before:<step>` (or
`after:<step>`, comma-separated) makes the runner SIGKILL its own process at that
boundary, so tests kill a real promotion at an exact point and then resume or abort it.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback
from typing import Any, Callable, Iterable

from deploy import clock, facts
from deploy.errors import DeployError
from deploy.facts import StateError
from deploy.ledger import NOW, Ledger, RunRow, RunStatus, StepRow, StepStatus, UndoStatus
from deploy.engine._console import Console
from deploy.engine._context import Outcome, StepContext
from deploy.engine._heartbeat import Heartbeat, LockLost
from deploy.engine._plan import Plan, Step
from deploy.engine._signals import Interrupted, Signals


def _ledger_text(err: DeployError) -> str:
    """What the ledger keeps of a failure: the message and hint, and a bug's traceback."""
    return f"{err}\n{err.traceback}" if err.traceback else str(err)


def _disk_full(e: OSError, step: str) -> DeployError:
    where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
    return DeployError(f"Step {step}: no space left on the device{where}.",
                       "Free space there (.deploy/ holds artifacts, sources, backups and the ledger).")


def _fault(point: str) -> None:
    """SIGKILL this process at `point` when DEPLOY_FAULT names it (tests only)."""
    faults = os.environ.get("DEPLOY_FAULT")
    if faults and point in faults.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


class Runner:
    """Applies plans under a lock, records them in the ledger, undoes on failure."""

    def __init__(self, ledger: Ledger, console: Console | None = None, *, rollback: bool = True):
        self.ledger = ledger
        self.console = console or Console()
        self.rollback = rollback
        self._sig = Signals(self.console)
        self._ledger_errors: list[str] = []

    # ------------------------------------------------------------------ entry points
    def execute(self, plan: Plan) -> Outcome:
        self._sig.abort_cmd = plan.abort_cmd
        names = [s.name for s in plan.steps]
        # Lock first, with no run id yet: a refused lock leaves no run behind.
        self.ledger.acquire_lock(plan.env, run_id=None, purpose=plan.flow)
        try:
            if plan.guard is not None:
                plan.guard()
            run_id = self.ledger.start_run(env=plan.env, flow=plan.flow, sha=plan.sha, steps=names,
                                           args=plan.args, release_id=plan.release_id)
            self.ledger.bind_lock(plan.env, run_id)
        except BaseException:
            self.ledger.release_lock(plan.env)
            raise
        self.console.line(f"{plan.flow} {plan.env}: run {run_id}" + (f", sha {plan.sha[:12]}" if plan.sha else ""))
        with self._sig, Heartbeat(self.ledger, plan.env, run_id):
            return self._apply(plan, run_id, state={}, start_at=0, started=time.monotonic())

    def resume(self, plan: Plan, run_id: str, *, break_lock: bool = False) -> Outcome:
        """Finish a killed run: re-run its interrupted step, then the rest."""
        self._sig.abort_cmd = plan.abort_cmd
        run, steps = self._adopt(plan, run_id, "resume", break_lock)
        first = next((s.idx for s in steps if s.status not in (StepStatus.DONE, StepStatus.SKIPPED)), len(steps))
        self.console.line(f"resume {plan.env}: run {run_id} from step {first + 1}/{len(steps)}")
        with self._sig, Heartbeat(self.ledger, plan.env, run_id):
            return self._apply(plan, run_id, state=dict(run.state), start_at=first, started=time.monotonic())

    def abort(self, plan: Plan, run_id: str, *, break_lock: bool = False) -> Outcome:
        """Undo a killed (or failed-in-place) run: the interrupted step and every completed one."""
        self._sig.abort_cmd = plan.abort_cmd
        run, steps = self._adopt(plan, run_id, "abort", break_lock)
        started = time.monotonic()
        ctx = StepContext(run_id=run_id, env=plan.env, state=dict(run.state), console=self.console,
                          save=self._saver(run_id))
        touched = [s.idx for s in steps if s.status in (StepStatus.DONE, StepStatus.RUNNING, StepStatus.FAILED)
                   and s.undo_status != UndoStatus.UNDONE]
        self.console.line(f"abort {plan.env}: run {run_id}, undoing {len(touched)} step(s)")
        with self._sig, Heartbeat(self.ledger, plan.env, run_id):
            self._sig.phase = "undo"
            try:
                undo_errors = self._undo(plan, run_id, ctx, touched)
            except LockLost as e:
                return self._lost(plan, run_id, e, started, ctx)
        status = RunStatus.ABORTED
        err = None
        if undo_errors:
            err = DeployError(f"Abort of run {run_id} could not undo: {'; '.join(undo_errors)}",
                              "Fix the cause and run the same --abort again: undo steps are safe to repeat.")
            status = RunStatus.FAILED
        self._finish_run(run_id, status=status, finished_at=NOW, state=ctx.state,
                         error=str(err) if err else run.error)
        if not undo_errors:
            self._quietly(self.ledger.release_lock, plan.env, run_id=run_id)
        if self._ledger_errors:
            err = self._ledger_failed(plan, err or DeployError(f"Run {run_id} was undone."))
            status = RunStatus.FAILED
        return Outcome(run_id, status, err, None, time.monotonic() - started, ctx.state)

    # ------------------------------------------------------------------ internals
    def _adoptable(self, plan: Plan, run_id: str, verb: str) -> tuple[RunRow, list[StepRow]]:
        """The run and its steps, when it can be resumed/aborted by this plan; DeployError otherwise."""
        run = self.ledger.run(run_id)
        allowed = ((RunStatus.RUNNING, RunStatus.FAILED_IN_PLACE, RunStatus.FAILED) if verb == "abort"
                   else (RunStatus.RUNNING, RunStatus.FAILED_IN_PLACE))
        if run.status not in allowed:
            raise DeployError(f"Run {run_id} is {run.status}; there is nothing to {verb}.",
                              "See `invoke status` for the environment's runs.")
        old = facts.legacy_keys(run.state or {})
        if old:
            raise DeployError(
                f"Run {run_id} was recorded by an earlier toolkit version (its state holds {', '.join(old)}, "
                f"not typed step facts); this version cannot {verb} it safely and changed nothing.",
                "Finish it with the toolkit version that started it (`git log deploy/facts.py`), or restore "
                f"by hand and free the lock with `invoke lock.release --env={plan.env} --force`.")
        steps = self.ledger.steps(run_id)
        if [s.name for s in steps] != [s.name for s in plan.steps]:
            raise DeployError(f"Run {run_id} had steps {[s.name for s in steps]}, but this version plans "
                              f"{[s.name for s in plan.steps]}; it cannot {verb} it safely.",
                              "Use the toolkit version that started the run, or break the lock and restore by hand.")
        return run, steps

    def _adopt(self, plan: Plan, run_id: str, verb: str, break_lock: bool = False) -> tuple[RunRow, list[StepRow]]:
        run, steps = self._adoptable(plan, run_id, verb)
        taken = self.ledger.acquire_lock(plan.env, run_id=run_id, purpose=verb, takeover_run=run_id,
                                         break_lock=break_lock)
        if taken is not None and taken.holder_alive() is None:
            silent = taken.silence()
            self.console.line(f"--break-lock: took over the {plan.env} lock from {taken.describe()} "
                              + (f"(silent for {clock.age(silent)})" if silent is not None else
                                 "(its heartbeat did not change while watched)"))
        # Read again under the lock: another runner may have finished or undone the run between
        # the first read and the lock (it released the lock, so ours was free to take).
        try:
            run, steps = self._adoptable(plan, run_id, verb)
        except BaseException:
            self._quietly(self.ledger.release_lock, plan.env, run_id=run_id)
            raise
        self.ledger.adopt_run(run_id)
        if run.status in (RunStatus.FAILED_IN_PLACE, RunStatus.FAILED):
            self.ledger.update_run(run_id, status=RunStatus.RUNNING)
        return run, steps

    def _check_lock(self, plan: Plan, run_id: str, where: str) -> None:
        """At a step boundary: raise LockLost when another runner has taken this run's lock
        over (the heartbeat, matching this process as the holder, updated no row)."""
        beat = getattr(self.ledger, "heartbeat", None)
        if beat is None:
            return
        try:
            mine = beat(plan.env, run_id)
        except DeployError:
            return  # a ledger that cannot be written is reported by the step's bookkeeping
        if mine is not False:
            return
        try:
            held = self.ledger.lock(plan.env)
        except DeployError:
            held = None
        holder = held.describe() if held is not None else "another runner (which has since released it)"
        raise LockLost(
            f"The {plan.env} lock was taken over by {holder} while this runner was not heard from "
            f"(frozen or cut off past the staleness bound of --break-lock). Run {run_id} stopped {where} and "
            "undid nothing: the new holder owns the environment now.",
            "See `invoke status` and `invoke lock.status`: the new holder finishes or aborts the run.")

    def _lost(self, plan: Plan, run_id: str, err: LockLost, started: float, ctx: StepContext) -> Outcome:
        """The lock was taken over: stop without undoing, recording or releasing anything."""
        self._sig.phase = "undo"
        self.console.line(f"stopped: the {plan.env} lock was taken over by another runner; nothing is undone.")
        return Outcome(run_id, RunStatus.LOCK_LOST, err, None, time.monotonic() - started, ctx.state)

    def _saver(self, run_id: str) -> Callable[[dict[str, Any]], None]:
        return lambda state: self.ledger.update_run(run_id, state=state)

    def _quietly(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
        """Bookkeeping during a failure or an undo: a ledger that cannot be written must not
        stop the undo; what it could not record is reported at the end."""
        try:
            fn(*args, **kwargs)
            return True
        except StateError:
            return False  # the run already fails with it; the last storable state stays
        except DeployError as e:
            if e.message not in self._ledger_errors:
                self._ledger_errors.append(e.message)
            return False

    def _finish_run(self, run_id: str, **values: Any) -> None:
        """The run's final row; when its state cannot be stored (a bug: a Secret in it), the
        outcome is still recorded, with the last state that could be."""
        if not self._quietly(self.ledger.update_run, run_id, **values) and "state" in values:
            values.pop("state")
            self._quietly(self.ledger.update_run, run_id, **values)

    def _ledger_failed(self, plan: Plan, err: DeployError) -> DeployError:
        what = "; ".join(dict.fromkeys(self._ledger_errors))
        cmd = plan.abort_cmd or f"invoke lock.release --env={plan.env} --force"
        e = DeployError(
            f"{err.message}\nThe ledger could not record all of it: {what}",
            f"Fix the ledger first (free space under .deploy/, or bring the shared ledger back), then run "
            f"`{cmd}`: it records the run's end and repeats any undo safely.",
        )
        e.exit_code = err.exit_code
        return e

    def _stop_error(self, where: str) -> DeployError:
        e = DeployError(f"Stopped by {self._sig.received} {where}.",
                        "The run was undone; start it again when ready.")
        e.exit_code = 1
        return e

    def _apply(self, plan: Plan, run_id: str, *, state: dict[str, Any], start_at: int, started: float) -> Outcome:
        ctx = StepContext(run_id=run_id, env=plan.env, state=state, console=self.console, save=self._saver(run_id))
        n = len(plan.steps)
        done: list[int] = [i for i in range(start_at)
                           if not plan.steps[i].skip]
        self._sig.phase = "book"
        for i in range(start_at, n):
            step = plan.steps[i]
            t0 = time.monotonic()
            try:
                self._check_lock(plan, run_id, f"before step {step.name}")
            except LockLost as e:
                return self._lost(plan, run_id, e, started, ctx)
            if self._sig.received:
                return self._fail(plan, run_id, ctx, i, self._stop_error(f"before step {step.name}"), done,
                                  started, t0, ran=False)
            if step.skip:
                try:
                    self.ledger.update_step(run_id, i, status=StepStatus.SKIPPED, result=f"skipped: {step.skip}",
                                            started_at=NOW, finished_at=NOW)
                except DeployError as e:
                    return self._fail(plan, run_id, ctx, i, e, done, started, t0, ran=False)
                self.console.step(i + 1, n, step.name, "skipped", None, step.skip)
                continue
            _fault(f"before:{step.name}")
            try:
                self.ledger.update_step(run_id, i, status=StepStatus.RUNNING, started_at=NOW, error=None)
            except DeployError as e:
                return self._fail(plan, run_id, ctx, i, e, done, started, t0, ran=False)
            try:
                self._sig.phase = "step"
                if self._sig.received:  # it arrived while this step was being recorded as started
                    raise Interrupted(self._sig.received)
                result = step.run(ctx) if step.run else None
                self._sig.phase = "book"
                _fault(f"during:{step.name}")  # the step's work is done but not yet recorded
                self._check_lock(plan, run_id, f"after step {step.name} (not recorded)")
                self.ledger.update_run(run_id, state=ctx.state)  # exact; a Secret in it is refused
                self.ledger.update_step(run_id, i, status=StepStatus.DONE, finished_at=NOW, result=str(result or ""))
            except LockLost as e:
                return self._lost(plan, run_id, e, started, ctx)
            except (Interrupted, KeyboardInterrupt) as e:
                self._sig.phase = "book"
                self._sig.received = self._sig.received or getattr(e, "name", "SIGINT")
                return self._fail(plan, run_id, ctx, i, self._stop_error(f"during step {step.name}"), done,
                                  started, t0)
            except DeployError as e:
                self._sig.phase = "book"
                return self._fail(plan, run_id, ctx, i, e, done, started, t0)
            except OSError as e:
                self._sig.phase = "book"
                if e.errno == errno.ENOSPC:
                    return self._fail(plan, run_id, ctx, i, _disk_full(e, step.name), done, started, t0)
                return self._fail(plan, run_id, ctx, i, self._bug(step, e), done, started, t0)
            except Exception as e:  # a bug in a step must still not leave the environment half-changed
                self._sig.phase = "book"
                return self._fail(plan, run_id, ctx, i, self._bug(step, e), done, started, t0)
            elapsed = time.monotonic() - t0
            self.console.step(i + 1, n, step.name, "done", elapsed, result or "")
            done.append(i)
            _fault(f"after:{step.name}")
        if self._sig.received:
            self.console.line(f"{self._sig.received} arrived after the last step: the run is complete.")
        self._sig.phase = "undo"  # finishing: nothing left to stop
        duration = time.monotonic() - started
        self._finish_steps(plan, ctx, range(n))
        try:
            self.ledger.update_run(run_id, status=RunStatus.SUCCEEDED, finished_at=NOW, state=ctx.state)
            self.ledger.release_lock(plan.env, run_id=run_id)
        except DeployError as e:
            cmd = plan.resume_cmd or f"invoke lock.release --env={plan.env} --force"
            err = DeployError(f"Every step of run {run_id} succeeded, but the ledger could not record it: {e.message}",
                              f"Fix the ledger (free space under .deploy/), then `{cmd}` to record the end.")
            return Outcome(run_id, RunStatus.FAILED, err, None, duration, ctx.state)
        self.console.line(f"{plan.flow} {plan.env}: succeeded in {duration:.2f}s (run {run_id})")
        return Outcome(run_id, RunStatus.SUCCEEDED, None, None, duration, ctx.state)

    def _finish_steps(self, plan: Plan, ctx: StepContext, indexes: Iterable[int]) -> None:
        """The run ends with its lock released: steps that hold something until then
        (the hosts' deploy lock) let go of it."""
        for i in indexes:
            step = plan.steps[i]
            if step.finish is None or step.skip:
                continue
            try:
                note = step.finish(ctx)
                if note:
                    self.console.note(f"{step.name}: {note}")
            except Exception as e:  # the outcome stands; say what is left behind
                msg = e.message if isinstance(e, DeployError) else f"{type(e).__name__}: {e}"
                self.console.line(f"warning: finishing {step.name} failed: {msg}")

    @staticmethod
    def _bug(step: Step, e: BaseException) -> DeployError:
        """A step's bug as a DeployError that keeps the traceback (stored in the ledger, printed with DEPLOY_DEBUG=1)."""
        err = DeployError(f"Step {step.name} failed unexpectedly: {type(e).__name__}: {e}",
                          "This is a bug in the toolkit; the completed steps were undone. Please report it "
                          "with the traceback (kept in the ledger; DEPLOY_DEBUG=1 prints it).")
        err.traceback = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
        return err

    def _fail(self, plan: Plan, run_id: str, ctx: StepContext, i: int, err: DeployError, done: list[int],
              started: float, t0: float, *, ran: bool = True) -> Outcome:
        self._sig.phase = "undo"
        try:
            self._check_lock(plan, run_id, f"at the failure of step {plan.steps[i].name}")
        except LockLost as e:
            return self._lost(plan, run_id, e, started, ctx)
        err.in_env(plan.env)   # hints written below the flow say <env>; the run knows which
        step = plan.steps[i]
        n = len(plan.steps)
        if ran:
            self._quietly(self.ledger.update_step, run_id, i, status=StepStatus.FAILED, finished_at=NOW,
                          error=_ledger_text(err))
            self.console.step(i + 1, n, step.name, "FAILED", time.monotonic() - t0, err.message)
        else:
            self.console.line(f"stopped before step {i + 1}/{n} {step.name}: {err.message}")
        if not self.rollback:
            self._finish_run(run_id, status=RunStatus.FAILED_IN_PLACE, finished_at=NOW,
                             state=ctx.state, error=_ledger_text(err), failed_step=step.name)
            self._finish_steps(plan, ctx, [*done, i] if ran else list(done))
            self._quietly(self.ledger.release_lock, plan.env, run_id=run_id)
            if plan.abort_cmd:
                self.console.line(f"--no-rollback: left in place for diagnosis; undo later with "
                                  f"`{plan.abort_cmd}` (run {run_id}).")
            else:
                self.console.line(f"{plan.flow} stopped at {step.name}; what it did is left in place (run {run_id}).")
            if self._ledger_errors:
                err = self._ledger_failed(plan, err)
            return Outcome(run_id, RunStatus.FAILED_IN_PLACE, err, step.name, time.monotonic() - started, ctx.state)
        # The failed step may have changed part of the world before failing: undo it too
        # (undos tolerate a partial run), then the completed steps in reverse.
        try:
            undo_errors = self._undo(plan, run_id, ctx, [*done, i] if ran else list(done))
        except LockLost as e:
            return self._lost(plan, run_id, e, started, ctx)
        status = plan.failed_status if not undo_errors else RunStatus.FAILED
        if not undo_errors and err.undone_hint:   # the hint for the state the undo left, not the failure's
            err.hint = err.undone_hint
        msg = _ledger_text(err)
        if undo_errors:
            msg += "\nUndo also failed: " + "; ".join(undo_errors)
        self._finish_run(run_id, status=status, finished_at=NOW, state=ctx.state,
                         error=msg, failed_step=step.name)
        if not undo_errors:
            self._quietly(self.ledger.release_lock, plan.env, run_id=run_id)
        else:
            exit_code = err.exit_code
            err = DeployError(f"{err.message}\nUndo failed for: {'; '.join(undo_errors)}",
                              plan.lock_hint()).fields_from(err)
            err.exit_code = exit_code
        if self._ledger_errors:
            err = self._ledger_failed(plan, err)
            status = RunStatus.FAILED
        return Outcome(run_id, status, err, step.name, time.monotonic() - started, ctx.state)

    def _undo(self, plan: Plan, run_id: str, ctx: StepContext, indexes: list[int]) -> list[str]:
        self._sig.phase = "undo"
        errors: list[str] = []
        n = len(plan.steps)
        for i in sorted(set(indexes), reverse=True):
            step = plan.steps[i]
            if step.skip or step.undo is None:
                continue
            self._check_lock(plan, run_id, f"before undoing step {step.name}")
            t0 = time.monotonic()
            try:
                result = step.undo(ctx)
            except Exception as e:
                if isinstance(e, OSError) and e.errno == errno.ENOSPC:
                    e = _disk_full(e, step.name)
                msg = e.message if isinstance(e, DeployError) else f"{type(e).__name__}: {e}"
                self._quietly(self.ledger.update_step, run_id, i, undo_status=UndoStatus.UNDO_FAILED, undo_result=msg)
                self.console.step(i + 1, n, step.name, "UNDO-ERR", time.monotonic() - t0, msg)
                errors.append(f"{step.name}: {msg}")
                continue
            self._quietly(self.ledger.update_step, run_id, i, undo_status=UndoStatus.UNDONE, undo_result=str(result or ""))
            self._quietly(self.ledger.update_run, run_id, state=ctx.state)
            self.console.step(i + 1, n, step.name, "undone", time.monotonic() - t0, result or "")
        return errors
