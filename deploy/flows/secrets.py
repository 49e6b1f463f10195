"""`invoke secrets.*`: when each secret was last rotated, and recording a rotation."""

from __future__ import annotations

import datetime as dt

from deploy import envs, secrets
from deploy.ledger import whoami
from deploy.services import Services


def rotation(svc: Services) -> int:
    """`invoke secrets.rotation`: secrets due for rotation; 1 when one is overdue."""
    m = envs.load_matrix(svc.root)
    today = dt.datetime.now(dt.UTC).date()
    report = secrets.rotation_report(m, today, secrets.read_rotations(secrets.rotation_log_path(m)))
    svc.term.out(secrets.render_rotation(report))
    return report.exit_code


def rotated(svc: Services, name: str, env: str, by: str | None) -> None:
    """`invoke secrets.rotated`: record that `name` was rotated in `env` today."""
    m = envs.load_matrix(svc.root)
    secrets.record_rotation(m, name, env, by or whoami(), dt.datetime.now(dt.UTC))
    svc.term.out(f"recorded: {name} rotated in {env} by {by or whoami()} today")
