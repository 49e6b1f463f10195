"""A plan as data: the ordered steps a flow will apply, each with its undo, and the plan rendered
for a person (the table, the exact commands for --dry-run, the lock hint)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace as _with
from typing import Any, Callable

from deploy.display import plain_table
from deploy.errors import DeployError
from deploy.ledger import RunStatus
from deploy.redact import redact
from deploy.engine._context import StepContext


StepFn = Callable[[StepContext], "str | None"]


@dataclass(frozen=True)
class Touch:
    """One thing a step would touch, for `--dry-run` (pyinfra's plan is its diff): `where` is
    `local`, a host (`user@host:port`), `database` or `shopify`; `what` the exact command
    (argv joined, or the remote command as sent), SQL file or URL."""

    where: str
    what: str


@dataclass
class Step:
    name: str
    does: str                         # what it will do/change, for the plan table
    run: StepFn | None = None
    undo: StepFn | None = None
    undo_does: str = ""               # what the undo does, for the plan table
    skip: str | None = None           # a reason: the step is shown and recorded as skipped
    finish: StepFn | None = None      # when the whole run has succeeded (e.g. release a lock the run held)
    shows: Callable[[], "list[Touch]"] | None = None  # what it would touch, computed for --dry-run only


@dataclass
class Plan:
    flow: str
    env: str
    steps: list[Step]
    sha: str | None = None
    release_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    header: list[tuple[str, str]] = field(default_factory=list)   # facts shown above the table
    failed_status: RunStatus = RunStatus.ROLLED_BACK  # a failure whose undo finished ("failed" for one-step tasks: nothing to undo)
    resume_cmd: str | None = None     # the command that finishes a killed run, for hints
    abort_cmd: str | None = None      # the command that undoes a killed run, for hints
    # Checked once the lock is held, before the run is recorded: raises when what the plan was
    # built from (and a person confirmed) no longer holds (deploy.errors.PlanChanged).
    guard: Callable[[], None] | None = None

    def _index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise ValueError(f"The {self.flow} plan for {self.env} has no step {name!r} "
                         f"(its steps: {', '.join(s.name for s in self.steps)}).")

    def step(self, name: str) -> "Step":
        """The step called `name` (ValueError naming the plan's steps if there is none)."""
        return self.steps[self._index(name)]

    def replace(self, name: str, step: "Step") -> "Plan":
        """A new plan with `step` where the step called `name` is; this plan is unchanged."""
        i = self._index(name)
        return _with(self, steps=[*self.steps[:i], step, *self.steps[i + 1:]])

    def skip(self, name: str, reason: str) -> "Plan":
        """A new plan in which the step called `name` is shown and recorded as skipped."""
        return self.replace(name, _with(self.step(name), skip=reason))

    def without(self, name: str) -> "Plan":
        """A new plan without the step called `name`."""
        i = self._index(name)
        return _with(self, steps=[*self.steps[:i], *self.steps[i + 1:]])

    def lock_hint(self) -> str:
        """What to do when this plan's run kept the lock (its undo did not finish)."""
        if self.abort_cmd:
            return f"The lock is kept. Fix the cause, then `{self.abort_cmd}` to finish the undo (safe to repeat)."
        return (f"The lock is kept. Fix the cause and finish by hand what the undo could not, then free the lock "
                f"with `invoke lock.release --env={self.env} --force` and run the {self.flow} again.")

    def touches(self) -> list[tuple[str, list[Touch]]]:
        """(step name, what it would touch) for every step that is not skipped and says."""
        out: list[tuple[str, list[Touch]]] = []
        for s in self.steps:
            if s.shows is None or s.skip:
                continue
            try:
                out.append((s.name, list(s.shows())))
            except DeployError as e:  # e.g. a host entry the run would refuse: say so, the plan still prints
                out.append((s.name, [Touch("-", f"cannot say before running: {e.message}")]))
        return out

    def commands(self) -> str:
        """The exact commands, SQL files and hosts each step would touch, per step."""
        out = []
        for name, touches in self.touches():
            out.append(f"{name}:")
            out.extend(f"  [{t.where}] {t.what}" for t in touches)
        return redact("\n".join(out))

    def table(self) -> str:
        rows = []
        for i, s in enumerate(self.steps, 1):
            if s.skip:
                undo, action = "-", f"skipped: {s.skip}"
            else:
                undo, action = (s.undo_does or ("yes" if s.undo else "-")), s.does
            rows.append((i, s.name, redact(action), redact(undo)))
        head = "\n".join(f"{k}: {redact(v)}" for k, v in self.header)
        body = plain_table(rows, ("#", "step", "what it does", "undo"))   # tabulate's look, not its import time
        return (head + "\n\n" if head else "") + body
