"""`invoke log.*`: blockers and readiness statements in the deployment log."""

from __future__ import annotations

from deploy import feedback
from deploy.errors import SettingsError
from deploy.ledger import whoami
from deploy.services import Services


def entry(svc: Services, kind: str, env: str, text: str | None) -> None:
    """Append a `kind` entry (blocker, readiness) for `env` to the deployment log."""
    s = svc.settings(env)
    if not (text or "").strip():
        raise SettingsError("--text is empty.", f'Say what the {kind} is: --text="..."')
    path = feedback.append(s.root, feedback.Entry(kind=kind, env=env, outcome=kind, who=whoami(), text=text))
    svc.term.out(f"logged {kind} for {env} in {path.relative_to(s.root)}")


def blocker(svc: Services, env: str, text: str | None) -> None:
    """`invoke log.blocker`."""
    entry(svc, "blocker", env, text)


def readiness(svc: Services, env: str, text: str | None) -> None:
    """`invoke log.readiness`."""
    entry(svc, "readiness", env, text)
