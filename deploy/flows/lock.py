"""`invoke lock.release` and `invoke lock.status`: the ledger's environment lock, and the release
target's own lock where it has one (the hosts' deploy lock, deploy/targets/)."""

from __future__ import annotations

import time

from deploy import clock
from deploy.errors import DeployError, HostFailed, SettingsError
from deploy.flows import common, shapes, steps
from deploy.ledger import Ledger, RunStatus
from deploy.services import Services
from deploy.targets import ReleaseTarget, target_for


def release(svc: Services, env: str, *, force: bool, skip_hosts=()) -> None:
    s = svc.settings(env)
    led = svc.ledger()
    remote = target_for(s).shared
    if skip_hosts and not remote:
        raise SettingsError(f"--skip-host: {s.name} has no hosts.", "Drop --skip-host.")
    s, skipped = common.skipping_hosts(s, skip_hosts)
    t = target_for(s)
    locks = []
    if remote:
        # Every host answers before anything is released: a lock.release that fails half-way
        # would say "failed" after it had broken the ledger lock.
        try:
            locks = t.locks_held()
        except HostFailed as e:
            e.message = f"Nothing was released: {e.message}"
            raise steps.with_skip_hint(e, s.name, f"invoke lock.release --env={s.name} --force") from None
    held = led.break_lock(s.name, max_age_seconds=s.lock.max_age_minutes * 60, force=force)
    if held is None:
        svc.term.out(f"{s.name}: no ledger lock held.")
    else:
        svc.term.out(f"{s.name}: broke the ledger lock held by {held.describe()}.")
    if remote:
        _release_hosts(svc, s, t, locks, held.run_id if held else None, led)
    for name in skipped:
        svc.term.out(f"{name}: skipped (--skip-host), its lock was not read; once it is back, "
                     f"`invoke lock.release --env={s.name} --force` removes a lock of a run that has ended.")


def _release_hosts(svc: Services, s, t: ReleaseTarget, locks, dead_run: str | None, led: Ledger) -> None:
    """Host locks of the run whose ledger lock was just broken, or of a run this ledger knows
    has ended, go too; others only when older than hosts.lock_max_age_minutes (a runner on
    another machine, or of another ledger, may hold them)."""

    if not locks:
        svc.term.out(f"{s.name}: no host holds a deploy lock.")
        return
    ended = {lk.run_id for lk in locks if lk.run_id and (lk.run_id == dead_run or _ended(led, lk.run_id))}
    mine = all(lk.run_id in ended for lk in locks)
    broken = t.break_locks(force=mine)
    for lk in broken:
        svc.term.out(f"{lk.place}: broke the deploy lock of run {lk.run_id or '?'} ({lk.holder})")
    left = [lk for lk in locks if lk.place not in {b.place for b in broken}]
    for lk in left:
        svc.term.out(f"{lk.place}: lock of run {lk.run_id or '?'} ({lk.holder}) kept: it is younger than "
                f"hosts.lock_max_age_minutes and not the broken run's")


def _ended(led: Ledger, run_id: str) -> bool:
    """This ledger recorded the run, and it is over (not running): its host locks are left over."""
    try:
        return led.run(run_id).status != RunStatus.RUNNING
    except DeployError:
        return False   # another ledger's run: not ours to judge


def status(svc: Services, env: str | None, as_json: bool = False) -> None:
    s = svc.settings(env) if env else None  # an unknown environment is an error before anything is printed
    led = svc.ledger()
    if as_json:
        locks = [lk for lk in led.locks() if not env or lk.env == env]
        host_locks = target_for(s).locks_held() if s is not None else []
        svc.term.emit_json(shapes.lock_status(locks, host_locks))
        return
    rows = []
    for lk in led.locks():
        if env and lk.env != env:
            continue
        alive = lk.holder_alive()
        state = {True: "alive", False: "holder gone", None: "other host"}[alive]
        if alive is None:
            silent = lk.silence()   # on one clock (the ledger's, or this boot's); never two wall clocks
            state += f", seen {clock.age(silent)} ago" if silent is not None else ", heartbeat not timed from here"
        rows.append((lk.env, f"{lk.who}@{lk.hostname}", lk.pid, lk.run_id or "-", lk.purpose,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(lk.acquired_at)), state))
    if not rows:
        svc.term.out("No environment is locked in the ledger.")
    else:
        svc.term.out(svc.term.table(rows, ("env", "holder", "pid", "run", "purpose", "since (UTC)", "holder state"),
                          optional=("pid", "purpose", "since (UTC)")))
    if s is not None:
        if target_for(s).shared:
            host_locks = target_for(s).locks_held()
            svc.term.out(svc.term.table([(lk.place, lk.holder, lk.run_id, lk.acquired_at or "-", lk.release) for lk in host_locks],
                              ("host", "holder", "run", "since", "release"), optional=("since", "release")) if host_locks
                    else f"{env}: no host holds a deploy lock.")
