"""The host group: one `_Host` per target for one operation, phases run on every host in
parallel (`_parallel`, over deploy.parallel's one thread pool), connections closed, and every host's
outcome reported once (`_results`, `_table`, one `HostFailed` per operation, like Fabric's
GroupException)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from deploy import liveness
from deploy.errors import DeployError, HostFailed
from deploy.hosts._commands import (LOCK_DIR, LOCK_HELD_EXIT, _p, lock_command, lock_details, parse_lock_details,
                                    parse_state, sh, state_command, take_fence_command)
from deploy.hosts._ssh import _connect, _give_back, _HostError, _local_user, _run
from deploy.hosts._targets import targets
from deploy.hosts._values import HostResult, HostState, LockInfo, Target
from deploy.parallel import pmap
from deploy.redact import redact

if TYPE_CHECKING:
    from deploy.config import AppSection, ProxySection


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _holder() -> str:
    """Who holds a lock or wrote a log line: local user @ this machine."""
    return f"{_local_user()}@{socket.gethostname()}"


def _redacted(text: str) -> str:
    return redact(text)


# ---------------------------------------------------------------- parallel map

@dataclass
class _Host:
    """Per-host bookkeeping for one operation (mutable; results are frozen)."""

    t: Target
    conn: Any = None                      # a Fabric Connection once opened
    state: HostState | None = None
    locked: bool = False
    prepared: bool = False
    made_dir: bool = False
    switched: bool = False
    release: str | None = None
    left_empty: bool = False              # an undo of a first release: the host is on nothing now
    pending: str = ""                     # the release being prepared here
    lock_info: LockInfo | None = None     # another run's lock found on this host
    probe: tuple[bool, int | None] | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    app: AppSection | None = None         # the release contract: start, port_var, health
    supervisor: str = ""                  # "systemd" or "sh" once chosen for this host
    uploaded: int = 0                     # bytes sent (SFTP, or a command's stdin) in this operation
    transfer: str = ""                    # how the release reached the host (HostResult.transfer)
    note: str = ""                        # a warning for the operator (HostResult.note)
    proxy: ProxySection | None = None     # this host's [proxy] (for_host) when one fronts the app (_slots.py)
    fence: str = ""                       # the token this operation's changes carry (_commands.fenced)

    @property
    def known(self) -> HostState:
        """The state read when the host was opened: every step after that reads it."""
        if self.state is None:
            raise RuntimeError(f"Bug: {self.t.name}: its state is read before the host was opened")
        return self.state


def _parallel(hosts: Sequence[_Host], fn: Callable[[_Host], None], max_parallel: int) -> None:
    """Run fn on every host that has no error yet; an error is recorded on the host."""
    live = [h for h in hosts if not h.error]

    def one(h: _Host) -> None:
        try:
            fn(h)
        except _HostError as e:
            h.error = _redacted(str(e))
        except DeployError as e:
            h.error = _redacted(e.message)
        except Exception as e:  # noqa: BLE001 - one host's surprise must not hide the others'
            h.error = _redacted(f"{type(e).__name__}: {e}")

    pmap(one, live, max_parallel)


def _close(hosts: Sequence[_Host]) -> None:
    """The end of an operation: a connection to a host the run still holds locked is kept for
    the run's next operation (_ssh._give_back: its unlock closes it); the others close. The
    image target's hosts (no `locked`) are only ever changed under the run's lock."""
    for h in hosts:
        if h.conn is not None:
            try:
                if getattr(h, "locked", True):
                    _give_back(h.conn)
                else:
                    h.conn.close()
            except Exception:  # noqa: BLE001
                pass


def _table(results: Sequence[HostResult]) -> str:
    from tabulate import tabulate

    rows = [(r.host, "ok" if r.ok else "FAILED", r.previous or "-", r.release or "-", f"{r.duration:.1f}s",
             " ".join(r.error.split())[:600]) for r in results]
    return tabulate(rows, headers=["host", "result", "before", "now on", "time", "error"],
                    maxcolwidths=[None, None, None, None, None, 70])


def _results(hosts: Sequence[_Host]) -> list[HostResult]:
    out = []
    for h in hosts:
        prev = h.state.current if h.state else None
        now_on = None if h.left_empty else h.release if h.release is not None else prev
        out.append(HostResult(host=h.t.name, ok=not h.error, release=now_on, previous=prev,
                              duration=round(time.monotonic() - h.started, 3), error=h.error,
                              uploaded=h.uploaded, transfer=h.transfer, reachable=h.conn is not None,
                              note=h.note))
    return out


def _failed(what: str, hs: Sequence[_Host], summary: str) -> HostFailed:
    results = _results(hs)
    bad = [r for r in results if not r.ok]
    import re

    answered = [m.group(2) for r in bad if (m := re.search(r"health check (\S+) failed \(HTTP (\d{3})", r.error))]
    if answered and len(answered) == len(bad):
        # The app is up and answers, only not with 2xx/3xx on that path: the host is fine.
        hint = (f"The app started and answers its health path with HTTP {', '.join(sorted(set(answered)))}: "
                "set [app] health_path in env/<env>.toml to a path it answers with 2xx/3xx (e.g. /healthz), "
                "commit, then run the release again.")
    else:
        hint = "Fix the failing hosts (the error column says what), then run the release again."
    return HostFailed(
        f"{what} failed on {len(bad)} of {len(results)} hosts {summary}.\n{_table(results)}",
        hint,
        results=results,
    )


# ---------------------------------------------------------------- phase 1: connect, lock, read

def _open_all(section, hs: list[_Host], *, run_id: str, release_id: str, now: datetime,
              upload_name: str | None, lock: bool, manifest: bool = False, fence: str = "",
              read: bool = True) -> None:
    """Connect to every host and read its state; with `lock`, take its deploy lock and its
    fence (`fence`, by default the run id: every change this operation sends carries it) first,
    in the same round trip. `read=False`: the state is not read (the lock's own operations
    need none); `h.state` stays None."""
    from fabric import Config

    config = Config()
    details = lock_details(_holder(), run_id, release_id, now, liveness.token())

    def open_one(h: _Host) -> None:
        h.conn = _connect(section, h.t, config, run=run_id)
        upload = _p(h.t, ".uploads", upload_name) if upload_name else None
        state = state_command(h.t, upload, manifest) if read else "true"
        if lock:
            h.fence = fence or run_id
            take = take_fence_command(h.t, h.fence)
            # One round trip: take the lock (or take over the run's own) and the fence, then read
            # the state under them.
            r = _run(h.conn, h.t, f"{lock_command(h.t, details, run_id)} && {take} && {{ {state}; }}", section,
                     f"taking the lock {_p(h.t, LOCK_DIR)}", ok_codes=(0, LOCK_HELD_EXIT))
            if r.exited == LOCK_HELD_EXIT:
                info = parse_lock_details(h.t.name, r.stdout)
                if info.run_id != run_id:
                    h.lock_info = info
                    raise _HostError(f"locked by {info.holder} (run {info.run_id or '?'}, "
                                     f"since {info.acquired_at or '?'})")
                # Our own run's lock from a killed attempt (resume) is taken over: stamped with this
                # runner's token, so the runner we took the run from can no longer release it.
                stamp = _p(h.t, LOCK_DIR, "details")
                r = _run(h.conn, h.t, f"printf %s {sh(details)} > {sh(stamp)} && {take} && {{ {state}; }}", section,
                         "taking over the run's lock")
            h.locked = True
        elif read:
            r = _run(h.conn, h.t, state, section, "reading the release state")
        else:
            return
        if read:
            h.state = parse_state(r.stdout)

    _parallel(hs, open_one, section.max_parallel)


def _read_all(section, fn: Callable[[_Host], None], *, run: str = "", read: bool = True) -> list[_Host]:
    """Open every host (`run`: with the run's kept connections), read its state unless not
    `read`, then `fn` on each; every connection closed."""
    hs = [_Host(t) for t in targets(section)]
    try:
        _open_all(section, hs, run_id=run, release_id="", now=_now(), upload_name=None, lock=False, read=read)
        _parallel(hs, fn, section.max_parallel)
    finally:
        _close(hs)
    return hs
