"""Lock liveness without trusting hostnames or clocks (issue 21, cases 5 and 6), against real
processes, real namespaces and real ledgers (SQLite and Postgres):

- a runner in its own pid namespace with the same hostname (a container, `--network=host`, a CI
  template) never takes over a live run, with or without --break-lock, in either direction;
- a holder that is gone is taken over: at once when this machine can prove it (same boot and pid
  namespace, pid gone or reused), once its heartbeat has been silent on one clock otherwise;
- a holder whose wall clock is wrong (libfaketime, both directions, several sizes) or that runs in
  another time namespace is judged by its heartbeat on one clock, never by two wall clocks;
- runs are filed in the ledger's order however wrong the writer's clock is, and `--abort` finds
  the slow runner's run.

The holders are tests/engine_child.py (the real Runner over a real ledger, one process each) and,
for the command line, `invoke promote` against two sshd hosts, Postgres and the Shopify stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from deploy.ledger import Ledger
from deploy.testing.project import REPO
from deploy.testing.snapshots import new_database

HERE = Path(__file__).parent
CHILD = HERE / "engine_child.py"
STEPS = ["preflight", "build", "migrate", "release", "smoke"]


def _unshare_works(*flags: str) -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


needs_pidns = pytest.mark.skipif(not _unshare_works("--pid", "--fork", "--mount-proc"),
                                 reason="needs unshare --pid --mount-proc (root)")
# libfaketime preloaded straight into the process (the `faketime` wrapper would stand between a
# killed run and its exit status).
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
needs_faketime = pytest.mark.skipif(LIBFAKETIME is None, reason="needs libfaketime (apt-get install faketime)")
needs_timens = pytest.mark.skipif(not _unshare_works("--time", "--boottime", "1000"),
                                  reason="needs unshare --time (Linux 5.6+, root)")

# Where a holder or breaker runs: argv put in front of the process.
PIDNS = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def other_machine(hostname: str) -> list[str]:
    """Its own pid namespace and its own hostname: nothing this machine can check locally."""
    return [*PIDNS, "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]


def skewed(seconds: int) -> list[str]:
    """Its wall clock off by `seconds` (libfaketime); its monotonic clocks true, as on a machine
    whose clock is simply set wrong. (With them true, libfaketime 0.9.10 fails Python's
    time.sleep with EINVAL; faking them as well stops threading's timed waits, so no heartbeat.)"""
    return ["env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME={seconds:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC=1"]


def time_namespace(offset: int) -> list[str]:
    """Its own time namespace: CLOCK_MONOTONIC and CLOCK_BOOTTIME offset by `offset` seconds."""
    return ["unshare", "--time", "--fork", "--kill-child", "--boottime", str(offset), "--monotonic", str(offset)]


def skewed_all(seconds: int) -> list[str]:
    """Every clock it reads off by `seconds` (libfaketime with its monotonic fix): a whole
    promotion runs this way, its sleeps and timeouts included."""
    return ["env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME={seconds:+d}s", "FAKETIME_FORCE_MONOTONIC_FIX=1"]


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("pg_url")


def child(d: Path, url: str, mode: str, *extra: str, prefix=(), env: dict | None = None, wait=True):
    e = dict(os.environ, DEPLOY_LEDGER_URL=url, PYTHONPATH=str(HERE.parent), **(env or {}))
    p = subprocess.Popen([*prefix, sys.executable, str(CHILD), str(d), mode, *extra], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if wait:
        out, err = p.communicate(timeout=200)
        return p.returncode, out, err
    return p


def world(d: Path) -> list[str]:
    f = d / "world"
    return f.read_text().split() if f.exists() else []


def wait_for(cond, timeout=60.0, what="a condition"):
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def ledger(url: str, d: Path) -> Ledger:
    return Ledger.open(d, url)


def hold(d: Path, url: str, prefix=(), at: str = "release"):
    """A live holder: a run blocked inside step `at` (its heartbeat thread beating), and its run."""
    p = child(d, url, "run", prefix=prefix, env={"BLOCK_AT": at}, wait=False)
    wait_for(lambda: (d / "blocked").exists() or p.poll() is not None, 60, "the holder to block")
    assert p.poll() is None, p.communicate()
    led = ledger(url, d)
    run = led.runs("test")[0]
    assert led.lock("test").run_id == run.id
    led.close()
    return p, run


def kill(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)


def finish(d: Path, p: subprocess.Popen) -> str:
    (d / "go").write_text("")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    return out


def refused(rc: int, out: str, err: str) -> str:
    text = out + err
    assert rc == 4 and "Traceback" not in text, text
    assert "outcome" not in out, text
    return text


def silence_for(url: str, d: Path, seconds: float) -> None:
    """Time passes for the lock (its holder silent `seconds` longer), on the clock its heartbeat
    is measured on: the Postgres server's, or this boot's CLOCK_BOOTTIME for SQLite."""
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as c:
            c.execute("UPDATE deploy_locks SET acquired_at = acquired_at - ?, heartbeat_at = heartbeat_at - ?, "
                      "beat_clock = beat_clock - ?", (seconds, seconds, seconds))
    else:
        with psycopg.connect(url) as c:
            c.execute("UPDATE deploy_locks SET acquired_at = acquired_at - %s, heartbeat_at = heartbeat_at - %s",
                      (seconds, seconds))


# ----------------------------------------------------------------------------- case 5: same hostname, other pid namespace

@needs_pidns
@pytest.mark.parametrize("holder, breaker", [
    pytest.param((), PIDNS, id="breaker-in-a-container-with-the-same-hostname"),
    pytest.param(PIDNS, (), id="holder-in-a-container-with-the-same-hostname"),
    pytest.param(PIDNS, PIDNS, id="both-in-containers-same-pid-numbers"),
])
@pytest.mark.parametrize("mode, break_lock", [
    pytest.param("abort", False, id="abort"),
    pytest.param("abort", True, id="abort-break-lock"),
    pytest.param("resume", True, id="resume-break-lock"),
])
def test_a_runner_in_another_pid_namespace_never_takes_over_a_live_run(tmp_path, ledger_url, holder, breaker,
                                                                      mode, break_lock):
    p, run = hold(tmp_path, ledger_url, prefix=holder)
    try:
        before = world(tmp_path)
        text = refused(*child(tmp_path, ledger_url, mode, run.id, prefix=breaker,
                              env={"BREAK_LOCK": "1"} if break_lock else {}))
        assert "locked by" in text or "staleness bound" in text, text
        assert world(tmp_path) == before          # nothing undone, nothing re-run under the live runner
        led = ledger(ledger_url, tmp_path)
        assert led.run(run.id).status == "running" and led.lock("test").run_id == run.id
    finally:
        out = finish(tmp_path, p)
    assert "outcome succeeded" in out
    assert world(tmp_path) == STEPS


@needs_pidns
def test_lock_status_says_a_holder_in_another_pid_namespace_cannot_be_checked_and_when_it_was_last_seen(
        tmp_path, pg_url):
    p, run = hold(tmp_path, pg_url, prefix=PIDNS)
    try:
        led = ledger(pg_url, tmp_path)
        lk = led.lock("test")
        assert lk.holder_alive() is None                 # its pid means nothing in this namespace
        assert lk.silence() is not None and lk.silence() < 15
        assert "last seen" in lk.describe()
    finally:
        finish(tmp_path, p)


# ----------------------------------------------------------------------------- a gone holder is still taken over

@pytest.mark.parametrize("how", ["killed", "pid-reused-by-a-live-process"])
def test_a_dead_holder_on_this_machine_is_taken_over_at_once_without_break_lock(tmp_path, ledger_url, how):
    p, run = hold(tmp_path, ledger_url)
    kill(p)
    if how == "pid-reused-by-a-live-process":
        # Its pid now names a live process (this one), started at another time: still gone.
        led = ledger(ledger_url, tmp_path)
        t = led.t["locks"]
        with led.engine.begin() as c:
            c.execute(t.update().values(pid=os.getpid()))
        assert led.lock("test").holder_alive() is False
    rc, out, err = child(tmp_path, ledger_url, "abort", run.id)
    assert rc == 0 and "outcome aborted" in out, out + err
    assert world(tmp_path) == ["preflight", "build", "migrate", "-release", "-migrate", "-build"]
    led = ledger(ledger_url, tmp_path)
    assert led.run(run.id).status == "aborted" and led.lock("test") is None


@needs_pidns
@pytest.mark.parametrize("where", [
    pytest.param(PIDNS, id="container-same-hostname"),
    pytest.param(other_machine("ci-runner-4"), id="other-hostname"),
])
def test_a_dead_holder_that_cannot_be_checked_is_taken_over_only_once_its_heartbeat_is_silent(
        tmp_path, ledger_url, where):
    p, run = hold(tmp_path, ledger_url, prefix=where)
    kill(p)   # its recorded pid (1, 2: its namespace's) may well name a live process here
    text = refused(*child(tmp_path, ledger_url, "abort", run.id))
    assert "--break-lock" in text, text
    text = refused(*child(tmp_path, ledger_url, "abort", run.id, env={"BREAK_LOCK": "1"}))
    assert "staleness bound" in text, text
    assert world(tmp_path) == ["preflight", "build", "migrate"]
    silence_for(ledger_url, tmp_path, 600)
    rc, out, err = child(tmp_path, ledger_url, "abort", run.id, env={"BREAK_LOCK": "1"})
    assert rc == 0 and "outcome aborted" in out and "took over" in out, out + err
    assert world(tmp_path) == ["preflight", "build", "migrate", "-release", "-migrate", "-build"]
    assert ledger(ledger_url, tmp_path).lock("test") is None


# ----------------------------------------------------------------------------- case 6: clock skew

@needs_pidns
@needs_faketime
@pytest.mark.parametrize("skew", [
    pytest.param(-600, id="ten-minutes-slow"),
    pytest.param(-130, id="just-past-the-bound-slow"),
    pytest.param(-86400, id="a-day-slow"),
    pytest.param(+600, id="ten-minutes-fast"),
])
@pytest.mark.parametrize("mode", ["abort", "resume"])
def test_a_live_holder_whose_clock_is_wrong_is_never_broken(tmp_path, ledger_url, skew, mode):
    p, run = hold(tmp_path, ledger_url, prefix=[*other_machine("ci-runner-7"), *skewed(skew)])
    try:
        # Postgres: the server's clock wrote the heartbeat and measures it. SQLite: the holder's
        # CLOCK_BOOTTIME (same boot, same time namespace) does; its wall clock is never read.
        measured = True
        led = ledger(ledger_url, tmp_path)
        lk = led.lock("test")
        assert lk.holder_alive() is None and (lk.silence() is not None) == measured, lk
        text = refused(*child(tmp_path, ledger_url, mode, run.id, env={"BREAK_LOCK": "1"}))
        assert ("showed life" if measured else "beat again while watched") in text, text
        assert "staleness bound" in text and "ci-runner-7" in text, text
        assert world(tmp_path) == ["preflight", "build", "migrate"]
        # lock.status's view: seconds on one clock, never the skew; null when no clock is shared
        from deploy.flows import shapes

        shown = shapes.lock_status(led.locks(), [])["locks"][0]
        assert shown["holder"] == "other host", shown
        assert (0 <= shown["silent_seconds"] < 15) if measured else shown["silent_seconds"] is None, shown
    finally:
        out = finish(tmp_path, p)
    assert "outcome succeeded" in out and world(tmp_path) == STEPS


@needs_timens
@pytest.mark.parametrize("offset", [pytest.param(-60, id="its-boottime-behind"), pytest.param(100000, id="ahead")])
def test_a_live_holder_in_another_time_namespace_is_never_broken(tmp_path, ledger_url, offset):
    """Its CLOCK_BOOTTIME is not ours: for SQLite the heartbeat is watched on this process's own
    clock (refused as soon as it beats); for Postgres the server's clock measures it."""
    p, run = hold(tmp_path, ledger_url, prefix=[*time_namespace(offset), *PIDNS])
    try:
        t0 = time.monotonic()
        text = refused(*child(tmp_path, ledger_url, "abort", run.id, env={"BREAK_LOCK": "1"}))
        assert time.monotonic() - t0 < 60, "a beating holder is recognised within a few heartbeats"
        assert "staleness bound" in text, text
        assert world(tmp_path) == ["preflight", "build", "migrate"]
    finally:
        out = finish(tmp_path, p)
    assert "outcome succeeded" in out


@needs_faketime
@pytest.mark.parametrize("skew", [-600, -7200, +900])
def test_runs_are_filed_in_the_ledgers_order_whatever_the_writers_clock(tmp_path, ledger_url, skew):
    rc, out, err = child(tmp_path, ledger_url, "run")
    assert rc == 0, err
    first = ledger(ledger_url, tmp_path).runs("test")[0]
    rc, out, err = child(tmp_path, ledger_url, "run", prefix=skewed(skew))
    assert rc == 0, err
    rc, out, err = child(tmp_path, ledger_url, "run")
    assert rc == 0, err
    led = ledger(ledger_url, tmp_path)
    runs = led.runs("test")
    assert len(runs) == 3 and runs[2].id == first.id
    assert runs[0].started_at > runs[1].started_at > runs[2].started_at
    for r in runs:
        assert r.duration is not None and 0 <= r.duration < 120, r
    if ledger_url.startswith("postgresql"):   # one clock: the skewed run's times are true ones
        assert abs(runs[1].started_at - time.time()) < 120


# ----------------------------------------------------------------------------- through the command line

def cli(project, *args: str, prefix=(), extra_env=None):
    e = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env,
         **(extra_env or {})}
    if "DEPLOY_LEDGER_URL" not in project.env:
        e.pop("DEPLOY_LEDGER_URL", None)
    e.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.Popen([*prefix, sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=project.root,
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def done(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def a_on_sqlite_ledger(stage):
    from test_reliability_attacks_engine import promote_a

    return promote_a(stage)


def a_on_postgres_ledger(stage):
    from test_reliability_attacks_engine import promote_a

    stage.project.env["DEPLOY_LEDGER_URL"] = new_database(stage)
    return promote_a(stage)


@pytest.fixture(params=["sqlite", "postgres"])
def shared(request, stage_snapshot):
    """(stage, run of A): release A promoted with the project's own SQLite ledger or a shared
    Postgres one; made once per module and ledger, put back in place for each test
    (deploy/testing/snapshots.py)."""
    return stage_snapshot(a_on_sqlite_ledger if request.param == "sqlite" else a_on_postgres_ledger)


@needs_pidns
def test_promote_abort_from_a_container_with_the_same_hostname_leaves_a_live_promotion_alone(shared):
    from test_reliability_attacks_engine import commit_b, step_running
    from test_reliability_faults import edit_settings

    stage, _ = shared
    project = stage.project
    edit_settings(project, "window_seconds = 1\n", "window_seconds = 12\n")   # a live runner, watching
    commit_b(stage)
    a = cli(project, "promote", "--to=staging")
    try:
        wait_for(lambda: step_running(project, "watch") or a.poll() is not None, 120, "the watch to start")
        run = project.ledger().runs("staging")[0]
        for args in (["--abort"], ["--abort", "--break-lock"], ["--resume", "--break-lock"]):
            rc, out, err = done(cli(project, "promote", "--to=staging", *args, prefix=PIDNS))
            text = out + err
            assert rc == 4 and "Traceback" not in text and "took over" not in text, (args, text)
            assert "undone" not in text, text
            assert stage.currents() == [run.release_id] * 2
    finally:
        rc, out, err = done(a)
    assert rc == 0, out + err
    led = project.ledger()
    assert led.run(run.id).status == "succeeded" and led.lock("staging") is None
    assert stage.currents() == [run.release_id] * 2 and stage.shopify.active() == run.release_id


def staging_status(project) -> dict:
    rc, out, err = done(cli(project, "status", "--json"))
    assert rc == 0, out + err
    return next(r for r in json.loads(out) if r["env"] == "staging")


@needs_faketime
@pytest.mark.parametrize("slow", [pytest.param(600, id="ten-minutes"), pytest.param(240, id="four-minutes")])
@pytest.mark.parametrize("outcome", ["succeeds", "killed-then-aborted"])
def test_a_promotion_under_a_slow_clock_is_filed_after_the_previous_one(shared, slow, outcome):
    from test_reliability_attacks_engine import commit_b

    stage, a = shared
    project = stage.project
    before = staging_status(project)
    assert before["release"] == a.release_id
    commit_b(stage)
    fault = {"DEPLOY_FAULT": "before:watch"} if outcome != "succeeds" else {}
    rc, out, err = done(cli(project, "promote", "--to=staging", prefix=skewed_all(-slow), extra_env=fault))
    assert rc == (0 if outcome == "succeeds" else -9), out + err
    led = project.ledger()
    b = led.runs("staging")[0]                    # the latest is the slow runner's
    assert b.id != a.id and b.started_at > a.started_at
    if outcome == "succeeds":
        assert b.status == "succeeded" and b.duration is not None and b.duration >= 0
        now = staging_status(project)
        assert now["release"] == b.release_id and now["deployed_at"] >= before["deployed_at"], (before, now)
        return
    # --abort (on a true clock) finds the slow runner's run: it is the latest one filed.
    assert b.status == "running"
    rc, out, err = done(cli(project, "promote", "--to=staging", "--abort"))
    assert rc == 0 and f"run {b.id}" in out, out + err
    led = project.ledger()
    assert led.run(b.id).status == "aborted" and led.live_release("staging").release_id == a.release_id
    assert stage.currents() == [a.release_id] * 2
