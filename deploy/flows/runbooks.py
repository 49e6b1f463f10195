"""`invoke runbooks.*`: runbooks checked against the tasks, stamped with the last drills."""

from __future__ import annotations

from pathlib import Path

from deploy import runbooks
from deploy.services import Services


def check(svc: Services) -> int:
    """`invoke runbooks.check`: every command a runbook names exists; the report's exit code."""
    root = svc.root
    toolkit = Path(__file__).resolve().parents[2]  # the tasks.py this toolkit runs from
    report = runbooks.check(root, root if (root / "tasks.py").exists() else toolkit)
    svc.term.out(report.render())
    return report.exit_code


def stamp(svc: Services) -> None:
    """`invoke runbooks.stamp`: write each runbook's last drill from the ledger."""
    root = svc.root
    changed = runbooks.stamp(root, svc.ledger())
    svc.term.out("\n".join(f"stamped {p.relative_to(root)}" for p in changed) or "runbooks already current")
