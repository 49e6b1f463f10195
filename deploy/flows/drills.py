"""`invoke drills`: the drills on record, and the procedures not exercised lately."""

from __future__ import annotations

import time

from deploy.flows.common import whole_number
from deploy.services import Services


def main(svc: Services, days: int | str | None) -> int:
    """Every recorded drill; NOT EXERCISED (exit 1) for a procedure with no passed drill in `days`."""
    days = whole_number("days", days, 30)
    led = svc.ledger()
    now = time.time()
    rows = []
    for d in led.drills(limit=100):
        rows.append((time.strftime("%Y-%m-%d %H:%M", time.gmtime(d.started_at)), d.env, d.procedure,
                     d.outcome, d.who, ", ".join(f"{k} {v:.1f}s" for k, v in d.durations.items())))
    svc.term.out(svc.term.table(rows, ("when (UTC)", "env", "procedure", "outcome", "who", "durations"), optional=("who",))
                 if rows else "No drill has been recorded.")
    stale = []
    for proc in ("hotfix", "rollback"):
        ok = [d for d in led.drills(procedure=proc, limit=50) if d.outcome == "passed"]
        if not ok or now - ok[0].started_at > days * 86400:
            stale.append(proc)
    for proc in stale:
        svc.term.out(f"NOT EXERCISED: no passed {proc} drill in the last {days} days "
                     f"(run: invoke hotfix.drill --env=staging)")
    return 1 if stale else 0
