"""A run talks to each host over one SSH connection from its lock to its unlock: the lock, the
release (or its undo) and the unlock reuse it, and releasing the lock closes it. Observed on the
real sshd hosts: the sshd session processes serving the client."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from deploy import hosts
from deploy.hosts import _ssh
from deploy.testing.sshd import SshdFarm, _descendants, make_artifact
from deploy.testing.stage import free_port

pytestmark = pytest.mark.sshd

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _sessions(farm, host) -> set[int]:
    """The connections to `host` now: its listener's direct children (one sshd process per
    connection, for the connection's whole life)."""
    listener = farm._procs[host.port].pid
    out = set()
    for pid in _descendants(listener):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == listener:
            out.add(pid)
    return out


def _until(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


class Fleet:
    def __init__(self, farm, hs, tmp):
        self.farm, self.hosts, self.tmp = farm, hs, tmp
        ports = [free_port() for _ in hs]
        for h, port in zip(hs, ports):
            h.write("srv/occ/shared/.env", f"PORT={port}\n")
        self.section = farm.hosts_section(hs, restart="bin/restart", health_timeout=5.0,
                                          health_urls=tuple(f"http://127.0.0.1:{p}/RELEASE" for p in ports))

    def sessions(self) -> list[set[int]]:
        return [_sessions(self.farm, h) for h in self.hosts]

    def artifact(self, rid: str):
        return make_artifact(self.tmp / "artifacts", rid)


@pytest.fixture(scope="module")
def sshd_farm():
    """This file counts every connection to its hosts, so its hosts are its own: on the shared
    farm, a session another test left (a killed client's command still running on the host, a
    connection another run kept) would be counted too."""
    farm = SshdFarm(1)
    yield farm
    farm.stop()


@pytest.fixture
def fleet(sshd_hosts, sshd_farm, tmp_path):
    _ssh._drop_all()

    def make(n: int) -> Fleet:
        f = Fleet(sshd_farm, sshd_hosts(n), tmp_path)
        assert _until(lambda: f.sessions() == [set()] * n)
        return f

    yield make
    _ssh._drop_all()   # a failed test's run never unlocked: its connections go with it


def _release(f: Fleet, run: str, rid: str) -> None:
    hosts.release(f.section, f.artifact(rid), run_id=run, now=T0, keep_lock=True)


def _undo(f: Fleet, run: str, rid: str) -> None:
    hosts.release(f.section, f.artifact(rid), run_id=run, now=T0, keep_lock=True)
    hosts.undo_release(f.section, rid, run_id=run, now=T0, keep_lock=True)


@pytest.mark.parametrize("n", [1, 3], ids=["one-host", "three-hosts"])
@pytest.mark.parametrize("operation", [_release, _undo], ids=["release", "release-then-undo"])
def test_a_run_uses_one_connection_per_host_from_its_lock_to_its_unlock(fleet, operation, n):
    f = fleet(n)
    run, rid = f"run-{n}-{operation.__name__}", f"2024050112{n:04d}-c0ffee{n}"
    hosts.acquire_lock(f.section, run_id=run, release_id=rid)
    held = f.sessions()
    assert all(held), "the lock's connections are kept for the run's next operation"
    operation(f, run, rid)
    assert f.sessions() == held, "the release ran on the connections the lock was taken on"
    assert sorted(hosts.release_lock(f.section, run_id=run)) == sorted(t.name for t in hosts.targets(f.section))
    assert _until(lambda: f.sessions() == [set()] * n), "releasing the run's lock closes its connections"


@pytest.mark.parametrize("read", [
    pytest.param(lambda s: hosts.lock_status(s), id="lock-status"),
    pytest.param(lambda s: hosts.releases(s), id="releases"),
])
def test_reading_hosts_outside_a_run_keeps_no_connection(fleet, read):
    f = fleet(2)
    read(f.section)
    assert _until(lambda: f.sessions() == [set()] * 2)


def test_a_run_connection_idle_past_the_limit_is_replaced(fleet, monkeypatch):
    f = fleet(1)
    hosts.acquire_lock(f.section, run_id="run-idle", release_id="20240501120000-aaaa001")
    old = f.sessions()[0]
    monkeypatch.setattr(_ssh, "RUN_IDLE_SECONDS", 0.2)
    time.sleep(0.4)
    _release(f, "run-idle", "20240501120000-aaaa001")
    assert _until(lambda: f.sessions()[0] and not f.sessions()[0] & old), "a fresh connection, the idle one closed"
    hosts.release_lock(f.section, run_id="run-idle")
    assert _until(lambda: f.sessions() == [set()])


def test_a_run_whose_kept_connection_broke_reconnects(fleet, sshd_farm):
    f = fleet(2)
    hosts.acquire_lock(f.section, run_id="run-drop", release_id="20240501120000-bbbb001")
    sshd_farm.drop(f.hosts[1])          # the host's sessions die with its sshd (a network cut)...
    sshd_farm.bring_back(f.hosts[1])    # ...and it comes back before the release
    _release(f, "run-drop", "20240501120000-bbbb001")
    assert [bool(s) for s in f.sessions()] == [True, True]
    assert sorted(hosts.release_lock(f.section, run_id="run-drop")) == sorted(t.name for t in hosts.targets(f.section))
    assert _until(lambda: f.sessions() == [set()] * 2)


# ---------------------------------------------------------------- the lock's own round trips

def _lock_host(tmp_path, held: str | None):
    from deploy.hosts._values import Target

    t = Target(name="d@h:22", host="h", port=22, user="d", deploy_to=str(tmp_path / "srv"))
    if held is not None:
        (tmp_path / "srv/.deploy-lock").mkdir(parents=True)
        if held != "<no details>":
            (tmp_path / "srv/.deploy-lock/details").write_text(held)
    return t, tmp_path / "srv/.deploy-lock/details"


def _sh(cmd: str):
    import subprocess

    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)


MINE = "holder=a@b\nrun_id=run-7\nrelease=r1\nacquired_at=2026-01-01T00:00:00+00:00\ntoken=tok-new\n"


@pytest.mark.parametrize("held, code, details, prints", [
    (None, 0, MINE, ""),
    ("holder=a@b\nrun_id=run-7\ntoken=tok-old\n", 0, MINE, ""),                       # the run's own: taken over
    ("holder=x@y\nrun_id=run-70\ntoken=t\n", 75, "holder=x@y\nrun_id=run-70\ntoken=t\n", "run_id=run-70"),
    ("holder=x@y\nrun_id=other\nrelease=run_id=run-7\n", 75, None, "run_id=other"),  # a value that only contains it
    ("<no details>", 75, None, ""),
], ids=["free", "own-run-taken-over", "other-run-with-a-longer-id", "other-run-naming-it-in-a-value",
        "lock-without-details"])
def test_taking_the_lock_takes_over_the_runs_own_in_the_same_command(tmp_path, held, code, details, prints):
    from deploy.hosts._commands import lock_command

    t, f = _lock_host(tmp_path, held)
    r = _sh(lock_command(t, MINE, "run-7"))
    assert r.returncode == code, r.stderr
    if details is not None:
        assert f.read_text() == details
    assert prints in r.stdout


@pytest.mark.parametrize("held, tokens, freed", [
    ("run_id=run-7\ntoken=tok-a\n", ["tok-a"], True),
    ("run_id=run-7\ntoken=tok-b\n", ["tok-a", "tok-b"], True),       # a runner it took the run over from
    ("run_id=run-7\ntoken=tok-z\n", ["tok-a"], False),                # taken over by another runner meanwhile
    ("run_id=run-7\n", ["tok-a"], True),                              # an older toolkit's lock: by its run
    ("run_id=run-7\ntoken=\n", ["tok-a"], True),
    ("run_id=run-70\ntoken=tok-a\n", ["tok-a"], False),
    ("run_id=other\ntoken=tok-a\n", ["tok-a"], False),
    ("<no details>", ["tok-a"], False),
    (None, ["tok-a"], False),
], ids=["own-token", "adopted-token", "foreign-token", "no-token", "empty-token", "longer-run-id", "other-run",
        "no-details", "not-locked"])
def test_the_unlock_frees_only_the_runs_lock_held_by_this_runner(tmp_path, held, tokens, freed):
    from deploy.hosts._commands import unlock_ours_command

    t, f = _lock_host(tmp_path, held)
    r = _sh(unlock_ours_command(t, "run-7", tokens))
    assert r.returncode == 0, r.stderr
    assert ("freed" in r.stdout) == freed
    assert (tmp_path / "srv/.deploy-lock").exists() == (held is not None and not freed)
