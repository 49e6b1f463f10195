"""`invoke approve`: approvals are ledger facts, and lines in the deployment log."""

from __future__ import annotations

import re

from deploy import approvals as approval_rules
from deploy import feedback
from deploy.errors import SettingsError
from deploy.flows.common import app_sha
from deploy.services import Services

ROLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def main(svc: Services, env: str, *, sha: str | None, by: str, role: str, note: str | None) -> None:
    s = svc.settings(env)
    if not ROLE.match(role or ""):
        raise SettingsError(f"--role={role!r} is not a role name.", "Use a lower-case word such as product or manager.")
    if not (by or "").strip():
        raise SettingsError("--by is empty.", "Name who approves: --by=alice.")
    full = app_sha(s, sha)
    required = s.approvals.required_roles
    led = svc.ledger()
    # One person fills one required role: the same name in other letters or spacing is the same person.
    twice = approval_rules.other_role_of(by, role, required, led.approvals(env, full))
    if twice:
        raise SettingsError(
            f"{by.strip()!r} already approved {full[:12]} on {env} as {twice.role} (recorded as "
            f"{twice.by!r}, {approval_rules.when(twice.at)}); {env}'s required roles "
            f"({', '.join(required)}) need a different person each. Nothing was recorded.",
            f"Ask someone else to approve as {role}: invoke approve --env={env} --sha={full[:12]} --role={role} "
            "--by=NAME.")
    led.approve(env=env, sha=full, role=role, by=by.strip(), note=note)
    feedback.append(s.root, feedback.Entry(kind="approval", env=env, outcome=f"approved as {role}", who=by.strip(),
                                           sha=full, text=note))
    have = sorted({a.role for a in led.approvals(env, full)})
    missing = [r for r in required if r not in have]
    svc.term.out(f"{env}: {full[:12]} approved by {by} as {role}. Roles so far: {', '.join(have)}"
            + (f"; still needed: {', '.join(missing)}" if missing else "; all required roles present"))
    if required and role not in required:
        svc.term.out(f"note: {role} is not one of {env}'s required roles ({', '.join(required)})")
