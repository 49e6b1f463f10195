"""The release-target interface (`ReleaseTarget`), what a target reads and writes of a run
(`RunState`), and its small frozen result values. The seam is described in deploy/targets/__init__.py."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from deploy.errors import DeployError

if TYPE_CHECKING:
    from deploy.build import Artifact
    from deploy.config import Settings

class RunState(Protocol):
    """The part of a run a target reads and writes: its id and its typed step facts
    (`deploy.engine.StepContext` has this shape)."""

    run_id: str | None

    @property
    def id(self) -> str:
        """The run's id (a step the runner applies always has one)."""
        ...

    def get(self, cls: type) -> Any: ...

    def put(self, value: Any) -> None: ...

    def drop(self, cls: type) -> None: ...

    def checkpoint(self) -> None: ...

    def note(self, text: str) -> None:
        """Tell the operator something on its own line (a warning that did not stop the step)."""
        ...


@dataclass(frozen=True)
class Command:
    """One thing a target would run or touch, for --dry-run: `where` (`local` or a host)
    and `what` (the command as sent, or what changes)."""

    where: str
    what: str


@dataclass(frozen=True)
class PlaceReleases:
    """What one place (this machine, a host) holds: its releases in name order and the live one
    (`detail`: what else identifies the live one there, e.g. the image target's digest)."""

    place: str
    releases: tuple[str, ...]
    current: str | None
    detail: str = ""


@dataclass(frozen=True)
class WayBack:
    """Where a rollback goes (`to`, None: nowhere known) and what it leaves (`current`)."""

    to: str | None
    current: str | None


@dataclass(frozen=True)
class Unlocked:
    """The places whose lock of the run was freed, and those that could not be reached."""

    freed: tuple[str, ...]
    unreachable: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaceLock:
    """A run's lock held on one place of the target, as lock.status and lock.release see it."""

    place: str
    holder: str
    run_id: str
    acquired_at: datetime | None
    release: str


class ReleaseTarget(ABC):
    """Where the environment's releases go. Every method that changes something is safe to
    repeat with the same run (a resumed or aborted run calls it again)."""

    def __init__(self, s: Settings):
        self.s = s

    @property
    @abstractmethod
    def shared(self) -> bool:
        """Runners of other ledgers may change it: a run takes its lock (`lock`) and a
        confirmed plan re-reads `serving()` under that lock."""

    @property
    @abstractmethod
    def ledger_first(self) -> bool:
        """A rollback picks its way back from the ledger first (True) or from the target's
        own record (False: `way_back` alone)."""

    # ------------------------------------------------------------ before anything changes

    @abstractmethod
    def prepare(self, environ: Mapping[str, str]) -> str:
        """What a release will need is there (reachable, its files and variables); a note.
        Changes nothing; raises a DeployError naming what is missing."""

    @abstractmethod
    def lock(self, run_id: str, release_id: str) -> list[str]:
        """Take the target's lock for the whole run; the places locked (LockHeld when another run holds one)."""

    @abstractmethod
    def unlock(self, run_id: str) -> list[str]:
        """Free the run's lock when it ends; the places freed."""

    @abstractmethod
    def unlock_reachable(self, run_id: str) -> Unlocked:
        """Free the run's lock wherever it can be reached (an undo must not fail on a dead place)."""

    @abstractmethod
    def lock_text(self) -> str:
        """The plan row of the lock step."""

    @abstractmethod
    def lock_shows(self) -> list[Command]:
        """What `lock` would run."""

    # ------------------------------------------------------------ promote

    @abstractmethod
    def release(self, state: RunState, release_id: str, artifact: Artifact, environ: Mapping[str, str]) -> str:
        """Put `artifact` live as `release_id`, recording in `state` what `switch_back` needs
        before changing anything; a one-line summary."""

    @abstractmethod
    def switch_back(self, state: RunState, release_id: str, environ: Mapping[str, str]) -> str:
        """Undo `release` of `release_id`: places on it go back to what they served before
        (nothing where they served nothing); places elsewhere are left alone; a summary."""

    @abstractmethod
    def release_text(self, release_id: str) -> str:
        """The plan row of the release step."""

    @abstractmethod
    def switch_back_text(self) -> str:
        """What `switch_back` does, for the plan's undo column."""

    @abstractmethod
    def release_shows(self, release_id: str) -> list[Command]:
        """What `release` would run, per place, in order (values read at run time as placeholders)."""

    # ------------------------------------------------------------ rollback

    @abstractmethod
    def way_back(self, to: str | None) -> WayBack:
        """The release a rollback goes to (`to` checked, or the one before the live one) and the
        live one, as the target itself records them."""

    @abstractmethod
    def still_serving(self, expect: str | None) -> None:
        """PlanChanged when the target serves something other than `expect` (what a confirmed
        plan showed) where that is known only here; a target that checks it under its lock
        in `rollback` does nothing here."""

    @abstractmethod
    def rollback(self, state: RunState, to: str, *, expect: str | None, environ: Mapping[str, str]) -> str:
        """Switch to `to` (checked before any place switches; PlanChanged when a place serves
        neither `expect` nor `to`); a summary."""

    @abstractmethod
    def rollback_shows(self, to: str) -> list[Command]:
        """What `rollback` would run, per place."""

    # ------------------------------------------------------------ status

    @abstractmethod
    def serving(self) -> dict[str, str | None]:
        """place -> the release live there (None: nothing yet)."""

    @abstractmethod
    def releases(self) -> list[PlaceReleases]:
        """Every place's releases and its live one."""

    @abstractmethod
    def prune(self) -> list[str]:
        """Drop releases beyond the settings' keep count (never the live or previous one); the ids dropped."""

    # ------------------------------------------------------------ with defaults: a target without them keeps these

    def places(self) -> list[str]:
        """The places a release goes, by name (hosts); [] for this machine."""
        return []

    def origins(self, state: dict[str, Any]) -> list[str]:
        """The URLs the app answers on, for the smoke checks: its public URL and each place's origin
        (scheme://host:port); `state`: the run's facts (a local app's URL is known once it started)."""
        return []

    def locks_held(self) -> list[PlaceLock]:
        """The target's own locks held now, outside any run (lock.status); [] when it has none."""
        return []

    def break_locks(self, *, force: bool) -> list[PlaceLock]:
        """Remove the target's own locks older than its limit (any age with `force`); those removed
        (lock.release). LockHeld naming the ones left, if any."""
        return []

    @property
    def holds_env(self) -> bool:
        """The app's variables live in a file on the target that the toolkit writes (`invoke env.push`)."""
        return False

    @property
    def writes_env(self) -> bool:
        """A promotion writes that file itself (the `env` step)."""
        return False

    def env_file(self) -> str:
        """Where the variables file is on each place, for plan rows and messages."""
        return ""

    def push_env(self, text: str, run_id: str) -> list[str]:
        """Write `text` as the variables file on every place, keeping the previous one for the
        undo; the places written."""
        raise _no_env_file(self)

    def restore_env(self, run_id: str) -> list[str]:
        """The undo of `push_env`: the previous file back on every place."""
        raise _no_env_file(self)

    def finish_env(self, run_id: str) -> list[str]:
        """The run succeeded: drop the previous file kept by `push_env`."""
        raise _no_env_file(self)

    def env_shows(self, what: str) -> list[Command]:
        """What `push_env` would write on each place (`what`: the file's content described)."""
        return []


def _no_env_file(t: ReleaseTarget) -> DeployError:
    return DeployError(f"Bug: {type(t).__name__} holds no variables file, but a step wrote one.",
                       "This is a bug in the toolkit (the env step is planned only when holds_env); please report it.")


#: the interface, method by method (tests/test_targets.py checks each target implements all)
METHODS = tuple(sorted(ReleaseTarget.__abstractmethods__))
