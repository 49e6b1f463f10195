"""The environment locks in the ledger: taken, refreshed by a heartbeat, taken over from a
holder that is provably gone (deploy/liveness.py), broken only once it has been silent long enough."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from deploy import clock, liveness
from deploy.errors import LedgerError, LockHeld
from deploy.ledger._rows import LockRow
from deploy.ledger._store import NOW, whoami
from deploy.ledger._records import Records

if TYPE_CHECKING:   # SQLAlchemy is imported when the ledger opens, never at start-up
    from sqlalchemy import ColumnElement, Table


HEARTBEAT_SECONDS = 10.0     # a running runner refreshes its lock this often


STALE_AFTER_SECONDS = 120.0  # a lock on another machine silent this long may be taken over with --break-lock


def _where(held: "LockRow") -> str:
    return (f"on another machine ({held.hostname})" if held.boot_id and held.boot_id != liveness.boot_id()
            else f"by a process this one cannot check ({held.hostname}: another pid namespace, a container, or an "
                 "older toolkit's lock)")


def _refuse_while_showing_life(env: str, held: "LockRow", silent: float | None, what: str, see: str) -> None:
    """A holder this process cannot check is taken over or broken only once its heartbeat has
    been silent for the staleness bound, measured on one clock (LockHeld until then)."""
    if silent is not None and silent >= STALE_AFTER_SECONDS:
        return
    bound = clock.age(STALE_AFTER_SECONDS)
    life = (f"showed life {clock.age(silent)} ago: less than the {bound} staleness bound"
            if silent is not None else f"beat again while watched for up to the {bound} staleness bound")
    raise LockHeld(
        f"The {env} lock is held {_where(held)} by {held.describe()}, which {life}, so it may still be running. "
        "Nothing was changed.",
        f"Wait for it (see `{see}`); {what} a lock whose holder cannot be checked from here only once it has been "
        f"silent for {bound}.")


def _same_holder(t: Table, held: LockRow) -> ColumnElement[bool]:
    """SQL matching the row of `held`'s holder: its token (pid and hostname for an older toolkit's lock)."""
    if held.token is not None:
        return t.c.token == held.token
    return t.c.token.is_(None) & (t.c.pid == held.pid) & (t.c.hostname == held.hostname)


class Locks(Records):
    """The environment locks: taken, refreshed by a heartbeat, taken over from a holder that is gone, broken."""

    def _holder_row(self, **values: Any) -> dict[str, Any]:
        """The lock's columns naming this process as its holder (deploy/liveness.py)."""
        me = liveness.here()
        return dict(who=whoami(), hostname=socket.gethostname(), pid=me.pid, token=me.token, boot_id=me.boot_id,
                    pid_ns=me.pid_ns, pid_start=me.pid_start, clock_id=me.clock_id, beat_clock=liveness.boottime(),
                    acquired_at=self._clock(), heartbeat_at=self._clock(), **values)

    def acquire_lock(self, env: str, *, run_id: str | None, purpose: str, takeover_run: str | None = None,
                     break_lock: bool = False) -> LockRow | None:
        """Take the environment's lock, or raise LockHeld naming the holder.

        `takeover_run`: the lock may be taken over from that run (resume/abort of a killed run)
        when its holder is provably gone: same boot and pid namespace as this process, and its
        pid gone or reused (deploy/liveness.py). A holder this process cannot check (another
        machine, container or pid namespace) is taken over only with `break_lock` and only once
        its heartbeat has been silent for STALE_AFTER_SECONDS on one clock; a holder that is
        alive, or beats, is never taken over. Returns the lock row that was taken over, if any."""
        from sqlalchemy.exc import IntegrityError

        t = self.t["locks"]
        try:
            with self._tx(f"take the {env} lock") as c:
                c.execute(t.insert().values(**self._holder_row(env=env, run_id=run_id, purpose=purpose)))
            return None
        except IntegrityError:
            pass
        held = self.lock(env)
        if held is None:  # released between our insert and our read: try once more
            return self.acquire_lock(env, run_id=run_id, purpose=purpose, takeover_run=takeover_run,
                                     break_lock=break_lock)
        if takeover_run and held.run_id == takeover_run:
            alive = held.holder_alive()
            if alive is None and break_lock:
                _refuse_while_showing_life(env, held, self._silence(env, held), "--break-lock takes over",
                                           "invoke status")
            if alive is False or (alive is None and break_lock):
                lineage = " ".join([held.token or "", *(held.lineage or "").split()][:20]).strip() or None
                with self._tx(f"take over the {env} lock") as c:
                    res = c.execute(t.update().where((t.c.env == env) & (t.c.run_id == takeover_run) & _same_holder(t, held))
                                    .values(**self._holder_row(run_id=run_id, purpose=purpose, lineage=lineage)))
                    if res.rowcount == 1:
                        liveness.adopt([held.token, *(held.lineage or "").split()])
                        return held
                held = self.lock(env) or held
        raise LockHeld(
            f"The {env} environment is locked by {held.describe()}.",
            self._lock_hint(env, held),
        )

    def _silence(self, env: str, held: LockRow) -> float | None:
        """How long the holder has been silent, for a decision: measured on one clock when one is
        shared (see LockRow.silence). When none is (a SQLite ledger shared across boots or time
        namespaces), the heartbeat is watched on this process's monotonic clock for up to the
        staleness bound: None as soon as it beats (the holder lives), the bound if it never does."""
        silent = held.silence()
        if silent is not None:
            return silent
        t0 = time.monotonic()
        while time.monotonic() - t0 < STALE_AFTER_SECONDS:
            time.sleep(min(1.0, HEARTBEAT_SECONDS / 4))
            now = self.lock(env)
            if now is None or now.token != held.token or (now.beat_clock, now.heartbeat_at) != (
                    held.beat_clock, held.heartbeat_at):
                return None
        return time.monotonic() - t0

    def _mine(self, t: Table) -> ColumnElement[bool]:
        """The lock row this process holds (its token)."""
        return t.c.token == liveness.token()

    def heartbeat(self, env: str, run_id: str) -> bool:
        """This run is alive: refresh its lock's heartbeat (on the ledger's clock, and on this
        machine's CLOCK_BOOTTIME). False when this process no longer holds the lock (another
        runner took it over with --break-lock while this one was frozen)."""
        t = self.t["locks"]
        with self._tx(f"refresh the {env} lock") as c:
            res = c.execute(t.update().where((t.c.env == env) & (t.c.run_id == run_id) & self._mine(t))
                            .values(heartbeat_at=self._clock(), beat_clock=liveness.boottime()))
            return bool(res.rowcount > 0)

    def bind_lock(self, env: str, run_id: str) -> None:
        """The lock this process took before its run existed now names the run."""
        t = self.t["locks"]
        with self._tx(f"bind the {env} lock to run {run_id}") as c:
            c.execute(t.update().where((t.c.env == env) & self._mine(t)).values(run_id=run_id))

    def _flow_of(self, held: LockRow) -> str | None:
        if not held.run_id:
            return None
        try:
            return self.run(held.run_id).flow
        except LedgerError:
            return None

    def _lock_hint(self, env: str, held: LockRow) -> str:
        alive = held.holder_alive()
        flow = self._flow_of(held)
        resumable = flow == "promote"  # the one flow with --resume/--abort
        if alive is False and held.run_id and resumable:
            return (f"That process is gone. Finish its run with `invoke promote --to={env} --resume`, undo it with "
                    f"`invoke promote --to={env} --abort`, or break the lock with "
                    f"`invoke lock.release --env={env} --force`.")
        if alive is False and held.run_id:
            return (f"That process is gone and its {flow or 'run'} {held.run_id} did not finish. Break the lock with "
                    f"`invoke lock.release --env={env} --force`, check `invoke status`, then run the "
                    f"{flow or 'task'} again (it is safe to repeat).")
        if alive is False:
            return f"That process is gone; break the lock with `invoke lock.release --env={env} --force`."
        if alive is None:
            bound = clock.age(STALE_AFTER_SECONDS)
            how = (f"take it over with `invoke promote --to={env} --abort --break-lock` (or `--resume --break-lock`)"
                   if resumable else f"break it with `invoke lock.release --env={env} --force`")
            silent = held.silence()
            seen = (f"it showed life {clock.age(silent)} ago" if silent is not None
                    else "its heartbeat cannot be timed from here")
            return (f"The lock is held {_where(held)}, so this machine cannot tell whether its holder is alive; "
                    f"{seen}. Wait for it (see `invoke status`). "
                    f"Only if that run is really gone, {how}: refused while the holder showed life within "
                    f"the last {bound}.")
        return "Wait for it to finish (see `invoke status`), or ask its owner."

    def _read_locks(self, where: ColumnElement[bool] | None = None) -> list[LockRow]:
        """Lock rows, each with the ledger's clock read in the same query (see LockRow.silence)."""
        t = self.t["locks"]
        q = t.select().add_columns(self._clock().label("ledger_now"))
        if where is not None:
            q = q.where(where)
        with self._tx(read=True) as c:
            rows = c.execute(q).mappings().all()
        boot = liveness.boottime()
        return [LockRow(**{**dict(r), "ledger_now": float(r["ledger_now"])}, shared_clock=self.shared_clock,
                        read_boot=boot) for r in rows]

    def lock(self, env: str) -> LockRow | None:
        rows = self._read_locks(self.t["locks"].c.env == env)
        return rows[0] if rows else None

    def locks(self) -> list[LockRow]:
        return self._read_locks()

    def release_lock(self, env: str, *, run_id: str | None = None) -> bool:
        """Release the lock held by this run and this process (its token; any lock of this process
        when run_id is None); a lock another runner took over is left to it."""
        t = self.t["locks"]
        cond = (t.c.env == env) & self._mine(t)
        if run_id:
            cond = cond & (t.c.run_id == run_id)
        with self._tx() as c:
            return bool(c.execute(t.delete().where(cond)).rowcount > 0)

    def break_lock(self, env: str, *, max_age_seconds: float, force: bool) -> LockRow | None:
        """Remove a lock whose holder is provably gone, or one this process cannot check that is older
        than the limit and whose heartbeat has been silent for the staleness bound; refuse a live or
        beating one."""
        held = self.lock(env)
        if held is None:
            return None
        alive = held.holder_alive()
        if not force:
            raise LockHeld(f"The {env} environment is locked by {held.describe()}.",
                           f"Breaking a lock needs --force: `invoke lock.release --env={env} --force`.")
        old = (held.ledger_now or time.time()) - held.acquired_at > max_age_seconds
        if alive is True:
            raise LockHeld(f"The {env} lock is held by a live process on this machine: {held.describe()}.",
                           f"Wait for it, or stop that process (pid {held.pid}): a live holder is never broken, and "
                           "one that is gone can be taken over at once.")
        if alive is None and not old:
            raise LockHeld(
                f"The {env} lock is held by a live process, or one this machine cannot check, that is younger "
                f"than the limit: {held.describe()}.",
                f"Wait for it, stop it, or raise lock.max_age_minutes in env/{env}.toml "
                f"(now {int(max_age_seconds // 60)} minutes).",
            )
        if alive is None:
            _refuse_while_showing_life(env, held, self._silence(env, held), "--force breaks", "invoke lock.status")
        t = self.t["locks"]
        with self._tx() as c:
            c.execute(t.delete().where((t.c.env == env) & (t.c.acquired_at == held.acquired_at) & _same_holder(t, held)))
        if held.run_id:
            run = self.run(held.run_id)
            if run.status == "running":
                self.update_run(held.run_id, status="failed", finished_at=NOW,
                                error="lock broken by lock.release --force; the run did not finish")
        return held


class Ledger(Locks):
    """Access to the ledger database. Open with `Ledger.open(root)`."""
