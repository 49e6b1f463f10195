"""The gate step when it runs: the commit's evidence judged against the gate policy."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import evidence
from deploy.config import Settings
from deploy.engine import StepContext
from deploy.services import terminal_width


def gate(ctx: StepContext, s: Settings, sha: str) -> str:
    """Evidence for `sha` (manifest, hashes, age, policy), its table noted; GateClosed when it fails."""
    verdict = evidence.require(s.gate, sha, evidence.evidence_dir(s), datetime.now(timezone.utc))
    ctx.note(evidence.render(verdict, width=max(60, terminal_width() - 8)).replace("\n", "\n        "))
    return f"{len(verdict.rows)} evidence item(s) passed"
