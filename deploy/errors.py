"""The toolkit's one error hierarchy.

    DeployError                 anything the user can act on; message says what, where, what to do
    ├── SettingsError           env/ files, variables, flags
    ├── ToolMissing             an executable (node, npm, pg_dump, shopify) is not on PATH
    ├── LockHeld                another run holds the environment's lock
    ├── LedgerError             the ledger database cannot be reached or is inconsistent
    ├── GateClosed              evidence missing, stale, malformed or failing
    ├── BuildFailed             the app build failed
    ├── MigrationFailed         a migration could not be read, applied or rolled back
    ├── BackupFailed            a dump, verification or restore failed
    ├── HostFailed              one or more hosts failed (carries every host's outcome)
    ├── ShopifyFailed           the Shopify CLI failed or answered something unexpected
    ├── SmokeFailed             smoke checks or watch triggers failed
    ├── ApprovalMissing         required approvals or a staging run are missing
    └── Aborted                 the user declined a confirmation

Tasks turn a DeployError into one paragraph on stderr and a non-zero exit (EXIT_CODES
below; README "Exit codes" is checked against it); any other exception is a bug and keeps
its traceback.
"""

from __future__ import annotations

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
    """An error the user can act on. `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

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


class MigrationFailed(DeployError):
    pass


class BackupFailed(DeployError):
    pass


class HostFailed(DeployError):
    """One or more hosts failed; `results` holds every host's outcome."""

    def __init__(self, message: str, hint: str | None = None, results=None):
        super().__init__(message, hint)
        self.results = list(results or [])


class ShopifyFailed(DeployError):
    pass


class SmokeFailed(DeployError):
    pass


class ApprovalMissing(DeployError):
    exit_code = 6


class Aborted(DeployError):
    exit_code = 7
