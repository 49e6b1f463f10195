"""`invoke lock.release` and `invoke lock.status`."""

from __future__ import annotations

import time

from deploy import cli


def release(env: str, *, force: bool) -> None:
    s = cli.settings(env)
    led = cli.ledger()
    held = led.break_lock(s.name, max_age_seconds=s.lock.max_age_minutes * 60, force=force)
    if held is None:
        cli.out(f"{s.name}: no lock held; nothing to do.")
    else:
        cli.out(f"{s.name}: broke the lock held by {held.describe()}.")


def status(env: str | None) -> None:
    from tabulate import tabulate

    led = cli.ledger()
    rows = []
    for lk in led.locks():
        if env and lk.env != env:
            continue
        alive = lk.holder_alive()
        state = {True: "alive", False: "holder gone", None: "other host"}[alive]
        rows.append((lk.env, f"{lk.who}@{lk.hostname}", lk.pid, lk.run_id or "-", lk.purpose,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(lk.acquired_at)), state))
    if not rows:
        cli.out("No environment is locked.")
        return
    cli.out(tabulate(rows, headers=("env", "holder", "pid", "run", "purpose", "since (UTC)", "holder state")))
