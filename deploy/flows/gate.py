"""`invoke gate`: is the evidence for a commit complete, fresh and passing (exit 5 when not)."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import evidence
from deploy.flows import shapes
from deploy.flows.common import app_sha


def main(svc, env: str, sha: str | None, as_json: bool = False) -> int:
    """The gate's verdict on `sha` for `env` as a table (or JSON); 0 open, 5 closed."""
    s = svc.settings(env)
    full = app_sha(s, sha)
    v = evidence.gate(s.gate, full, evidence.evidence_dir(s), datetime.now(timezone.utc))
    if as_json:
        svc.term.emit_json(shapes.gate(v, s.name))
    else:
        svc.term.out(evidence.render(v, width=svc.term.width()))
    return 0 if v.ok else 5
