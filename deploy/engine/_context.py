"""What a step sees while it runs (its run's id and typed facts, a checkpoint), and what a flow
gets back when the run is over (its Outcome)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from deploy import facts
from deploy.errors import DeployError
from deploy.ledger import RunStatus
from deploy.engine._console import Console


F = TypeVar("F")   # a step fact type


@dataclass
class StepContext:
    """What a step sees: the run's id and its facts (deploy/facts.py), persisted after every
    step. A step records what its undo and later steps need with `put(SomeFacts(...))` and
    reads it with `get(SomeFacts)`; `state` is the stored form (type name -> fact)."""

    run_id: str | None
    env: str
    state: dict[str, Any]
    console: Console
    dry_run: bool = False
    save: Callable[[dict[str, Any]], None] | None = None

    def get(self, cls: type[F]) -> F | None:
        """The `cls` fact this run recorded, or None."""
        return facts.get(self.state, cls)

    def put(self, value: object) -> None:
        """Record a fact (a frozen @fact dataclass), replacing the earlier one of its type."""
        facts.put(self.state, value)

    def drop(self, cls: type) -> None:
        facts.drop(self.state, cls)

    def note(self, text: str) -> None:
        self.console.note(text)

    @property
    def id(self) -> str:
        """The run's id: every step the runner applies has one (a check run outside a run has none)."""
        if self.run_id is None:
            raise RuntimeError("Bug: a step that records under its run was run outside one")
        return self.run_id

    def checkpoint(self) -> None:
        """Persist the state now, before changing the world, so an undo after a kill
        inside this step knows what to undo."""
        if self.save is not None:
            self.save(self.state)


@dataclass(frozen=True)
class Outcome:
    run_id: str
    status: RunStatus
    error: DeployError | None
    failed_step: str | None
    duration: float
    state: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    def fact(self, cls: type[F]) -> F | None:
        """The `cls` fact the run recorded, or None."""
        return facts.get(self.state, cls)
