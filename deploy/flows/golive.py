"""`invoke golive.*`: the go-live checklist of a commit."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import feedback, golive
from deploy.flows import shapes
from deploy.flows.common import app_sha
from deploy.ledger import whoami
from deploy.services import Services


def check(svc: Services, env: str, sha: str | None, as_json: bool = False) -> int:
    """`invoke golive.check`: run the checklist, write it as markdown, log GO / NO GO."""
    s = svc.settings(env)
    led = svc.ledger()
    full = app_sha(s, sha)
    cl = golive.run_checklist(s, led, full, datetime.now(timezone.utc), svc.environ)
    path = golive.write_markdown(cl, s.root)
    if as_json:
        svc.term.emit_json(shapes.golive(cl))
    else:
        svc.term.out(golive.render(cl, width=svc.term.width()))
        svc.term.out(f"wrote {path.relative_to(s.root)}")
    feedback.append(s.root, feedback.Entry(kind="golive", env=env, outcome="GO" if cl.ok else "NO GO",
                                           who=whoami(), sha=full,
                                           text="; ".join(f"{i.name}: {i.reason}" for i in cl.failing)[:400] or None))
    return cl.exit_code
