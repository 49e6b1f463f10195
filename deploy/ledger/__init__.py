"""The ledger: one small SQL schema for runs, steps, releases, locks, approvals and drills.

The default is SQLite in `<root>/.deploy/ledger.db`; `DEPLOY_LEDGER_URL` points every CI
runner at one Postgres so they share locks and history. Times are stored as UTC epoch
seconds (floats): comparable and portable across both databases. SQLAlchemy is imported
when a ledger is opened, never at start-up.

    _schema   the tables and their forward migrations (deploy_schema holds the version)
    _rows     statuses (StrEnum, stored as their text) and one frozen dataclass per row
    _store    opening a ledger, its clock, its transactions
    _records  runs and steps, releases, approvals, drills
    _locks    the environment locks: heartbeat, takeover, break

`Ledger` (in _locks) is the three layers in one: open it with `Ledger.open(root)`.
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.ledger._locks import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, Ledger
    from deploy.ledger._rows import (RUN_ACTIVE, RUN_FINAL, ApprovalRow, DrillRow, LockRow, ReleaseRow, ReleaseStatus,
                                     RunRow, RunStatus, StepRow, StepStatus, UndoStatus)
    from deploy.ledger._schema import MIGRATIONS, SCHEMA_VERSION
    from deploy.ledger._store import NOW, default_url, whoami
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.ledger._locks": ("HEARTBEAT_SECONDS", "STALE_AFTER_SECONDS", "Ledger"),
        "deploy.ledger._rows": ("RUN_ACTIVE", "RUN_FINAL", "ApprovalRow", "DrillRow", "LockRow", "ReleaseRow",
                                "ReleaseStatus", "RunRow", "RunStatus", "StepRow", "StepStatus", "UndoStatus"),
        "deploy.ledger._schema": ("MIGRATIONS", "SCHEMA_VERSION"),
        "deploy.ledger._store": ("NOW", "default_url", "whoami"),
    })


__all__ = [
    "HEARTBEAT_SECONDS", "MIGRATIONS", "NOW", "RUN_ACTIVE", "RUN_FINAL", "SCHEMA_VERSION", "STALE_AFTER_SECONDS",
    "ApprovalRow", "DrillRow", "Ledger", "LockRow", "ReleaseRow", "ReleaseStatus", "RunRow", "RunStatus", "StepRow",
    "StepStatus", "UndoStatus", "default_url", "whoami",
]
