"""The toolkit's one error hierarchy.

    DeployError                 anything the user can act on; message says what, where, what to do
    ├── SettingsError           env/ files, variables, flags
    ├── ToolMissing             an executable (node, npm, pg_dump, shopify) is not on PATH
    ├── LockHeld                another run holds the environment's lock
    ├── LedgerError             the ledger database cannot be reached or is inconsistent
    ├── GateClosed              evidence missing, stale, malformed or failing
    ├── BuildFailed             the app build failed
    ├── ImageFailed             a container image could not be built, pushed or found in its registry
    ├── MigrationFailed         a migration could not be read, applied or rolled back
    ├── BackupFailed            a dump, verification or restore failed
    ├── HostFailed              one or more hosts failed (carries every host's outcome)
    ├── ShopifyFailed           the Shopify CLI failed or answered something unexpected
    ├── SmokeFailed             smoke checks or watch triggers failed
    ├── ApprovalMissing         required approvals or a staging run are missing
    └── Aborted                 the user declined a confirmation
        └── PlanChanged         the live state a confirmed plan showed changed before it ran

Tasks turn a DeployError into one paragraph on stderr and a non-zero exit (EXIT_CODES
below; README "Exit codes" is checked against it); any other exception is a bug and keeps
its traceback (a step's bug is wrapped by the runner, its traceback kept in the ledger and
printed with DEPLOY_DEBUG=1).
"""

from __future__ import annotations

from typing import Any, Iterable

INTERRUPTED = 130          # Ctrl-C (SIGINT) outside a run's own handling, as shells report it

# Every exit code a task returns, and what it means.
EXIT_CODES: dict[int, str] = {
    0: "success (for gate: the gate is open; for a check: every item passed)",
    1: "a step failed (build, migration, backup, host, Shopify, smoke, ledger) or a check found problems",
    2: "settings, variables or flags are wrong, or a flag was refused (SettingsError)",
    3: "a tool is not installed: node, npm, git, pg_dump, shopify (ToolMissing)",
    4: "another run holds the environment's lock (LockHeld)",
    5: "the evidence gate is closed (GateClosed)",
    6: "approvals, a staging run or the go-live checklist are missing (ApprovalMissing)",
    7: "a confirmation was declined or could not be asked (Aborted)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


class DeployError(Exception):
    """An error the user can act on. `hint` says what to do next.

    Fields say where: `env`, `host`, `migration`, `file` (each None when unknown). A message
    or hint written below the layer that knows the environment (a migration, a backup)
    names it as `<env>`; it is rendered from `env` once a flow, the runner or the task sets
    it (`in_env`). `traceback` holds a bug's traceback when this error wraps one (the
    runner keeps it in the ledger; DEPLOY_DEBUG=1 prints it)."""

    exit_code = 1
    FIELDS = ("env", "host", "migration", "file")

    def __init__(self, message: str, hint: str | None = None, *, env: str | None = None, host: str | None = None,
                 migration: str | None = None, file: str | None = None):
        super().__init__(message)
        self._message = message
        self._hint = hint
        self.env = env
        self.host = host
        self.migration = migration
        self.file = file
        self.traceback: str | None = None
        # What to do once a run's undo has succeeded, when that differs from `hint` (which
        # is written for the state the failure left): the runner shows it instead.
        self.undone_hint: str | None = None

    def _render(self, text: str | None) -> str | None:
        return text.replace("<env>", self.env) if text and self.env else text

    @property
    def message(self) -> str:
        return self._render(self._message) or ""

    @message.setter
    def message(self, text: str) -> None:
        # A caller adds what happened next (`err.message += "..."`): kept, still rendered.
        self._message = text

    @property
    def hint(self) -> str | None:
        return self._render(self._hint)

    @hint.setter
    def hint(self, text: str | None) -> None:
        self._hint = text

    def in_env(self, env: str | None) -> DeployError:
        """Set the environment unless a lower layer already did; returns self (`raise e.in_env(name)`)."""
        if self.env is None and env:
            self.env = env
        return self

    def fields_from(self, other: DeployError) -> DeployError:
        """Carry `other`'s fields and traceback over to this error that wraps it; returns self."""
        for name in self.FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(other, name, None))
        self.traceback = self.traceback or getattr(other, "traceback", None)
        return self

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  -> {self.hint}"
        return self.message


class SettingsError(DeployError):
    exit_code = 2


class ToolMissing(DeployError):
    exit_code = 3


class LockHeld(DeployError):
    exit_code = 4


class LedgerError(DeployError):
    pass


class GateClosed(DeployError):
    exit_code = 5


class BuildFailed(DeployError):
    pass


class ImageFailed(DeployError):
    pass


class MigrationFailed(DeployError):
    pass


class BackupFailed(DeployError):
    pass


class HostFailed(DeployError):
    """One or more hosts failed; `results` holds every host's outcome."""

    def __init__(self, message: str, hint: str | None = None, results: Iterable[Any] | None = None,
                 **fields: Any):
        super().__init__(message, hint, **fields)
        self.results: list[Any] = list(results or [])   # hosts.HostResult, one per host


class ShopifyFailed(DeployError):
    pass


class SmokeFailed(DeployError):
    pass


class ApprovalMissing(DeployError):
    exit_code = 6


class Aborted(DeployError):
    exit_code = 7


class PlanChanged(Aborted):
    """What a confirmed plan showed as live changed before it ran (another run released): nothing
    was done; the operator looks again. Exit 7: the confirmation given no longer holds."""
