"""The hosts' deploy lock (Kamal's lock.rb): `<deploy_to>/.deploy-lock`, taken by `mkdir`
with a details file; held for a whole run (acquire_lock/release_lock) or one operation."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Sequence

from deploy import liveness
from deploy.errors import LockHeld
from deploy.hosts._commands import (LOCK_DIR, parse_lock_details, read_lock_command, unlock_command,
                                    unlock_ours_command)
from deploy.hosts._group import _close, _failed, _Host, _now, _open_all, _read_all
from deploy.hosts._ssh import _drop_run, _HostError, _run
from deploy.hosts._targets import targets
from deploy.hosts._values import LockInfo
from deploy.parallel import pmap

if TYPE_CHECKING:
    from deploy.config import HostsSection


def _unlock_all(section, hs: Sequence[_Host]) -> None:
    """Release the locks we hold; a host we cannot unlock keeps its error (and its lock)."""

    def one(h: _Host) -> None:
        try:
            _run(h.conn, h.t, unlock_command(h.t), section, "releasing the lock")
            h.locked = False
        except _HostError as e:
            h.error = (h.error + f"; lock not released: {e}").lstrip("; ")

    pmap(one, [h for h in hs if h.locked and h.conn is not None], section.max_parallel)


def _raise_if_locked(hs: Sequence[_Host], section, now: datetime) -> None:
    infos = [h.lock_info for h in hs if h.lock_info is not None]
    if not infos:
        return
    _unlock_all(section, hs)
    _close(hs)
    who = "; ".join(
        f"{i.host}: held by {i.holder}, run {i.run_id or '?'}"
        + (f", for {i.age_minutes(now):.0f} min" if i.acquired_at else "")
        for i in infos
    )
    raise LockHeld(
        f"The deploy lock {LOCK_DIR} is held on {len(infos)} of {len(hs)} hosts ({who}).",
        f"Wait for that run to finish (`invoke lock.status --env=<env>` shows it). If it died: a "
        f"promotion is finished with `invoke promote --to=<env> --resume` or undone with `--abort`; any other run "
        f"(a rollback, a hotfix, a single task) is not resumable: break the lock with "
        f"`invoke lock.release --env=<env> --force` (host locks older than {section.lock_max_age_minutes} min go), "
        f"then run it again.",
    )


# ---------------------------------------------------------------- the run's lock on its own

def acquire_lock(section: HostsSection, *, run_id: str, release_id: str = "", now: datetime | None = None) -> list[str]:
    """Take the deploy lock for `run_id` on every host (re-entrant for the same run), or
    none: LockHeld naming the holder, HostFailed when a host cannot be reached.

    The first host is the primary and is locked before the others (as Kamal locks its
    primary), so two runners that share no ledger cannot each win half of the hosts."""
    now = now or _now()
    hs = [_Host(t) for t in targets(section)]
    try:
        for group in (hs[:1], hs[1:]):
            if not group:
                continue
            _open_all(section, group, run_id=run_id, release_id=release_id or "-", now=now, upload_name=None,
                      lock=True, read=False)
            _raise_if_locked(hs, section, now)
            if any(h.error for h in hs):
                _unlock_all(section, hs)
                raise _failed("taking the deploy lock", hs, "; no host was changed")
        return [h.t.name for h in hs]
    finally:
        _close(hs)


def release_lock(section: HostsSection, *, run_id: str) -> list[str]:
    """Release the deploy lock on every host where `run_id` holds it; others are left alone."""
    freed, _ = _release_lock(section, run_id=run_id, unreachable_ok=False)
    return freed


def release_reachable_locks(section: HostsSection, *, run_id: str) -> tuple[list[str], list[str]]:
    """Like release_lock, but a host that cannot be reached is not an error: (freed, unreachable).
    Nothing done here can free a dead host's lock, and failing would keep the run's ledger
    lock and freeze every other host with it; the caller names what was left."""
    return _release_lock(section, run_id=run_id, unreachable_ok=True)


def _release_lock(section, *, run_id: str, unreachable_ok: bool) -> tuple[list[str], list[str]]:
    freed: list[str] = []

    def one(h: _Host) -> None:
        # One round trip: the lock goes when it is ours, checked on the host (unlock_ours_command).
        r = _run(h.conn, h.t, unlock_ours_command(h.t, run_id, sorted(liveness.tokens())), section,
                 "releasing the lock")
        if "freed" in r.stdout.split():
            freed.append(h.t.name)

    try:
        hs = _read_all(section, one, run=run_id, read=False)
    finally:
        _drop_run(run_id)   # the run is over on these hosts: its kept connections go
    dead = [h.t.name for h in hs if h.error and h.conn is None] if unreachable_ok else []
    if any(h.error and h.t.name not in dead for h in hs):
        raise _failed("releasing the deploy lock", hs, "")
    return freed, dead


# ---------------------------------------------------------------- who holds it, breaking it

def lock_status(section: HostsSection) -> list[LockInfo]:
    """The hosts whose deploy lock is held, with holder, run id and time."""
    found: list[LockInfo] = []

    def one(h: _Host) -> None:
        r = _run(h.conn, h.t, read_lock_command(h.t), section, "reading the lock")
        if r.stdout.strip():
            found.append(parse_lock_details(h.t.name, r.stdout))

    hs = _read_all(section, one, read=False)
    if any(h.error for h in hs):
        raise _failed("reading the lock", hs, "")
    order = {t.name: i for i, t in enumerate(targets(section))}
    return sorted(found, key=lambda i: order[i.host])


def break_lock(section: HostsSection, *, now: datetime | None = None, force: bool = False) -> list[LockInfo]:
    """Remove locks older than `lock_max_age_minutes` (any age with `force`); returns those removed.

    Raises LockHeld naming the holders of the younger locks it left in place."""
    now = now or _now()
    held = lock_status(section)
    stale = [i for i in held if force or ((age := i.age_minutes(now)) is not None and
                                          age >= section.lock_max_age_minutes)]
    fresh = [i for i in held if i not in stale]
    names = {i.host for i in stale}
    if names:
        def one(h: _Host) -> None:
            if h.t.name in names:
                _run(h.conn, h.t, unlock_command(h.t), section, "breaking the lock")

        hs = _read_all(section, one, read=False)
        if any(h.error for h in hs):
            raise _failed("breaking the lock", hs, "")
    if fresh:
        raise LockHeld(
            "Not breaking a lock younger than {} min: ".format(section.lock_max_age_minutes)
            + "; ".join(f"{i.host} held by {i.holder}, run {i.run_id}, {i.age_minutes(now) or 0:.0f} min" for i in fresh),
            "Wait for that run, or break it anyway with force=True if you know it is dead.",
        )
    return stale
