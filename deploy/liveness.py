"""Who holds a lock, and when its holder is provably gone: a runner's identity and the local check.

A runner (one process) holds the ledger's lock and the hosts' `.deploy-lock` under a random
token, never under its pid and hostname: two runners with the same hostname (containers, a
CI template with a fixed hostname, `--network=host`) and even the same pid (separate pid
namespaces) have different tokens. Beside the token a lock stores where its holder runs:
the boot id, the pid namespace, the pid and that pid's start time. The holder is provably
gone only when its boot and pid namespace are ours (so this /proc shows its pid) and the
pid is gone, a zombie, or a later process that reused the number (another start time).
Anywhere else, nothing local can tell: only the heartbeat decides, measured on one clock
(the ledger database's for Postgres; CLOCK_BOOTTIME of one boot and time namespace, the
`clock_id`, for SQLite), never by comparing two machines' wall clocks.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

_token: tuple[int, str] | None = None   # (pid it was made in, token): a forked child makes its own
_adopted: set[str] = set()               # tokens of holders whose lock this process took over


def token() -> str:
    """This runner's token: random, made once per process (again after a fork)."""
    global _token
    if _token is None or _token[0] != os.getpid():
        _token = (os.getpid(), secrets.token_hex(16))
        _adopted.clear()
    return _token[1]


def adopt(tokens) -> None:
    """This process took over the lock of these holders: what they hold for the run is ours
    now (e.g. the hosts' locks they took, still stamped with their token)."""
    token()
    _adopted.update(t for t in tokens if t)


def tokens() -> frozenset[str]:
    """The tokens this process acts under: its own and those it took over."""
    return frozenset({token(), *_adopted})


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _ns(kind: str, pid: str = "self") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def boot_id() -> str | None:
    return _read("/proc/sys/kernel/random/boot_id")


def _stat_fields(pid: int) -> list[str] | None:
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text.rsplit(")", 1)[1].split()   # fields 3.. (the command name may hold spaces)


def start_time(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def _proc_is_ours() -> bool:
    """/proc is mounted for our own pid namespace (else its numbers are another namespace's)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def boottime() -> float:
    """Seconds since boot on CLOCK_BOOTTIME (counts suspend, never set by anyone)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def clock_id() -> str | None:
    """Which CLOCK_BOOTTIME `boottime()` reads: the boot id and the time namespace. Two
    readings with the same clock_id can be subtracted; any others cannot."""
    b, t = boot_id(), _ns("time")
    return f"{b}/{t}" if b and t else None


@dataclass(frozen=True)
class Where:
    """Where a lock's holder runs, as stored with the lock."""

    token: str
    boot_id: str | None
    pid_ns: int | None
    pid: int
    pid_start: int | None
    clock_id: str | None


def here() -> Where:
    """This process."""
    pid = os.getpid()
    return Where(token(), boot_id(), _ns("pid"), pid, start_time(pid) if _proc_is_ours() else None, clock_id())


def gone(boot: str | None, pid_ns: int | None, pid: int, pid_start: int | None) -> bool | None:
    """True when a holder that recorded these is provably gone, False when it provably runs,
    None when this process cannot tell (another boot, another pid namespace, a /proc of
    another namespace, or a holder that recorded no start time)."""
    if not boot or pid_ns is None or pid_start is None:
        return None
    if boot != boot_id() or pid_ns != _ns("pid") or not _proc_is_ours():
        return None
    fields = _stat_fields(pid)
    if fields is None:
        return True   # no such pid in our namespace
    try:
        zombie, started = fields[0] == "Z", int(fields[19])
    except (IndexError, ValueError):
        return None
    return zombie or started != pid_start
