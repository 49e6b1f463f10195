"""`invoke gate`: is the evidence for a commit complete, fresh and passing (exit 5 when not)."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import evidence
from deploy.flows import shapes
from deploy.flows.common import app_sha
from deploy.services import Services


def main(svc: Services, env: str, sha: str | None, as_json: bool = False) -> int:
    """The gate's verdict on `sha` for `env` as a table (or JSON); 0 open, 5 closed."""
    s = svc.settings(env)
    full = app_sha(s, sha)
    if not s.gate.required:
        # The same rule as promote's gate step, which is skipped when nothing is required.
        why = f"gate.required is empty in {s.file.name}: no evidence is required, and promote skips its gate step"
        if as_json:
            svc.term.emit_json({"env": s.name, "sha": full, "open": True, "passed": 0, "checks": 0, "rows": [],
                                "notes": [why]})
        else:
            svc.term.out(f"gate OPEN for {s.name} at {full[:12]}: {why}.")
        return 0
    v = evidence.gate(s.gate, full, evidence.evidence_dir(s), datetime.now(timezone.utc))
    if as_json:
        svc.term.emit_json(shapes.gate(v, s.name))
    else:
        svc.term.out(evidence.render(v, width=svc.term.width()))
    return 0 if v.ok else 5
