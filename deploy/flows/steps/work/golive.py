"""The golive step when it runs: the go-live checklist of the commit, green or refused."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import golive
from deploy.config import Settings
from deploy.engine import StepContext
from deploy.errors import ApprovalMissing


def checklist(ctx: StepContext, s: Settings, sha: str, environ, ledger) -> str:
    """Every item of the go-live checklist green, else ApprovalMissing with the rendered list."""
    result = golive.run_checklist(s, ledger, sha, datetime.now(timezone.utc), environ)
    if not result.ok:
        raise ApprovalMissing(f"The go-live checklist is not green:\n{golive.render(result)}",
                              f"Fix each failing item (invoke golive.check --env={s.name} --sha={sha}).")
    return f"{len(result.items)} items green"
