"""The engine against real ledgers (SQLite file and the Postgres fixture) and real
child processes that are really killed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.engine import Console, Plan, Runner, Step
from deploy.errors import DeployError, LockHeld
from deploy.ledger import Ledger, ReleaseStatus, RunStatus, StepStatus, UndoStatus

HERE = Path(__file__).parent
CHILD = HERE / "engine_child.py"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return request.getfixturevalue("pg_url")


def child(d: Path, url: str, mode: str, *extra: str, env: dict | None = None, wait=True):
    e = dict(os.environ, DEPLOY_LEDGER_URL=url, PYTHONPATH=str(HERE.parent), **(env or {}))
    p = subprocess.Popen([sys.executable, str(CHILD), str(d), mode, *extra], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = p.communicate(timeout=60)
        return p.returncode, out, err
    return p


def world(d: Path) -> list[str]:
    f = d / "world"
    return f.read_text().split() if f.exists() else []


def wait_for(path: Path, timeout=30.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def latest_run(url, d):
    led = Ledger.open(d, url)
    run = led.runs("test")[0]
    return led, run


def test_dry_run_table_runs_nothing():
    ran = []
    plan = Plan("promote", "test", [
        Step("build", "npm run build", run=lambda c: ran.append("build")),
        Step("shopify", "shopify app deploy", run=lambda c: ran.append("shopify"), skip="no Shopify config for local"),
    ])
    table = plan.table()
    assert "npm run build" in table and "skipped: no Shopify config for local" in table
    assert ran == []


def test_success_records_every_step_and_frees_the_lock(tmp_path, ledger_url):
    rc, out, err = child(tmp_path, ledger_url, "run")
    assert rc == 0, err
    assert world(tmp_path) == ["preflight", "build", "migrate", "release", "smoke"]
    led, run = latest_run(ledger_url, tmp_path)
    assert run.status == "succeeded"
    assert [s.status for s in led.steps(run.id)] == ["done"] * 5
    assert all(s.finished_at >= s.started_at for s in led.steps(run.id))
    assert led.lock("test") is None
    assert "[5/5] smoke" in out


def test_failure_undoes_completed_steps_in_reverse(tmp_path, ledger_url):
    rc, out, err = child(tmp_path, ledger_url, "run", env={"FAIL_AT": "release"})
    assert rc == 1
    # release failed before writing, then its undo and the others ran in reverse order
    assert world(tmp_path) == ["preflight", "build", "migrate", "-release", "-migrate", "-build"]
    led, run = latest_run(ledger_url, tmp_path)
    assert run.status == "rolled_back" and run.failed_step == "release"
    assert "release broke on purpose" in run.error
    steps = {s.name: s for s in led.steps(run.id)}
    assert steps["release"].status == "failed" and steps["smoke"].status == "pending"
    assert steps["build"].undo_status == "undone"
    assert led.lock("test") is None


def test_no_rollback_leaves_failure_in_place_and_abort_undoes_it_later(tmp_path, ledger_url):
    rc, _, _ = child(tmp_path, ledger_url, "run", env={"FAIL_AT": "smoke", "NO_ROLLBACK": "1"})
    assert rc == 1
    assert world(tmp_path) == ["preflight", "build", "migrate", "release"]
    led, run = latest_run(ledger_url, tmp_path)
    assert run.status == "failed_in_place"
    rc, out, err = child(tmp_path, ledger_url, "abort", run.id)
    assert rc == 0, err
    assert world(tmp_path)[4:] == ["-smoke", "-release", "-migrate", "-build"]
    assert led.run(run.id).status == "aborted"


def test_second_promoter_fails_at_once_naming_the_holder(tmp_path, ledger_url):
    first = child(tmp_path, ledger_url, "run", env={"BLOCK_AT": "build"}, wait=False)
    try:
        wait_for(tmp_path / "blocked")
        t0 = time.monotonic()
        rc, out, err = child(tmp_path, ledger_url, "run")
        assert rc == 4
        assert time.monotonic() - t0 < 20
        assert "locked by" in err and f"pid {first.pid}" in err and "since" in err
    finally:
        (tmp_path / "go").write_text("")
        first.communicate(timeout=60)
    assert first.returncode == 0
    led = Ledger.open(tmp_path, ledger_url)
    assert [r.status for r in led.runs("test")] == ["succeeded"]  # the refused one left no run behind


@pytest.mark.parametrize("kill_at", ["build", "release"])
def test_kill_mid_step_then_resume_finishes_the_run(tmp_path, ledger_url, kill_at):
    p = child(tmp_path, ledger_url, "run", env={"BLOCK_AT": kill_at}, wait=False)
    wait_for(tmp_path / "blocked")
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    led, run = latest_run(ledger_url, tmp_path)
    assert run.status == "running"
    assert {s.name: s.status for s in led.steps(run.id)}[kill_at] == "running"
    # A fresh promotion is refused and told how to recover.
    rc, _, err = child(tmp_path, ledger_url, "run")
    assert rc == 4 and "--resume" in err
    rc, out, err = child(tmp_path, ledger_url, "resume", run.id)
    assert rc == 0, err
    assert world(tmp_path)[-1] == "smoke" and world(tmp_path).count(kill_at) == 1
    assert led.run(run.id).status == "succeeded" and led.lock("test") is None


def test_kill_mid_step_then_abort_undoes_everything(tmp_path, ledger_url):
    p = child(tmp_path, ledger_url, "run", env={"BLOCK_AT": "release"}, wait=False)
    wait_for(tmp_path / "blocked")
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    led, run = latest_run(ledger_url, tmp_path)
    rc, out, err = child(tmp_path, ledger_url, "abort", run.id)
    assert rc == 0, err
    assert world(tmp_path) == ["preflight", "build", "migrate", "-release", "-migrate", "-build"]
    assert led.run(run.id).status == "aborted" and led.lock("test") is None


def test_resume_refuses_a_run_whose_holder_is_alive(tmp_path, ledger_url):
    p = child(tmp_path, ledger_url, "run", env={"BLOCK_AT": "build"}, wait=False)
    try:
        wait_for(tmp_path / "blocked")
        led, run = latest_run(ledger_url, tmp_path)
        rc, out, err = child(tmp_path, ledger_url, "resume", run.id)
        assert rc == 4 and "locked by" in err
    finally:
        (tmp_path / "go").write_text("")
        p.communicate(timeout=60)


def test_break_lock_needs_force_and_a_gone_holder_and_never_breaks_a_live_one(tmp_path, ledger_url):
    led = Ledger.open(tmp_path, ledger_url)
    led.acquire_lock("test", run_id=None, purpose="promote")
    with pytest.raises(LockHeld, match="--force"):
        led.break_lock("test", max_age_seconds=3600, force=False)
    with pytest.raises(LockHeld, match="live process"):
        led.break_lock("test", max_age_seconds=3600, force=True)
    with pytest.raises(LockHeld, match="live process"):   # however old: this process is alive
        led.break_lock("test", max_age_seconds=0, force=True)
    assert led.release_lock("test")
    # A holder that took the lock and is gone (its pid no longer runs): broken at once.
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from deploy.ledger import Ledger; "
                    "Ledger.open(Path(sys.argv[1]), sys.argv[2]).acquire_lock('test', run_id=None, purpose='promote')",
                    str(tmp_path), ledger_url], check=True, cwd=Path(__file__).parent.parent)
    assert led.lock("test").holder_alive() is False
    assert led.break_lock("test", max_age_seconds=3600, force=True) is not None
    assert led.lock("test") is None


def test_unexpected_exception_in_a_step_still_undoes(tmp_path):
    led = Ledger.open(tmp_path, f"sqlite:///{tmp_path}/l.db")
    trail = []

    def boom(ctx):
        raise ValueError("bug")

    plan = Plan("promote", "test", [
        Step("a", "a", run=lambda c: trail.append("a"), undo=lambda c: trail.append("-a")),
        Step("b", "b", run=boom),
    ])
    import io
    outcome = Runner(led, Console(io.StringIO())).execute(plan)
    assert outcome.status == "rolled_back" and trail == ["a", "-a"]
    assert "ValueError: bug" in outcome.error.message


class _BufferedOut:
    """A text stream that, like CPython's BufferedWriter, refuses a write from inside a write
    (RuntimeError: reentrant call); the first write holding `signal_on` sends this process SIGTERM,
    so the signal lands inside the write, as it does when a buffered stdout write is interrupted."""

    def __init__(self, signal_on: str):
        self.text, self.busy, self.signal_on = "", False, signal_on

    def write(self, s: str) -> int:
        if self.busy:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")
        self.busy = True
        try:
            if self.signal_on and self.signal_on in s:
                self.signal_on = ""
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs here, inside this write
                    pass
            self.text += s
            return len(s)
        finally:
            self.busy = False

    def flush(self) -> None:
        pass


def test_a_signal_landing_inside_an_output_write_does_not_fail_the_undo(tmp_path, capfd):
    """The signal handler writes its message to fd 2 itself, never through the (buffered) console."""
    out = _BufferedOut(signal_on="undoing a")

    def undo_a(ctx):
        ctx.note("undoing a")
        return "a undone"

    def fail(ctx):
        raise DeployError("b broke on purpose")

    plan = Plan("promote", "t", [Step("a", "do a", run=lambda c: "a ok", undo=undo_a), Step("b", "do b", run=fail)])
    outcome = Runner(Ledger.open(tmp_path), Console(out=out)).execute(plan)
    assert outcome.status == "rolled_back", out.text
    assert "UNDO-ERR" not in out.text and "a undone" in out.text, out.text
    assert "SIGTERM received while undoing: ignored" in capfd.readouterr().err


class _Racing:
    """The real ledger, with another real runner (a child process) acting just before this
    one takes the lock: the window between _adopt's first read and its lock."""

    def __init__(self, led, before_lock):
        self.led, self.before_lock = led, before_lock

    def __getattr__(self, name):
        return getattr(self.led, name)

    def acquire_lock(self, *args, **kwargs):
        if self.before_lock:
            act, self.before_lock = self.before_lock, None
            act()
        return self.led.acquire_lock(*args, **kwargs)


def test_abort_rereads_the_run_under_the_lock_and_refuses_one_finished_meanwhile(tmp_path):
    from engine_child import plan

    url = f"sqlite:///{tmp_path}/ledger.db"
    p = child(tmp_path, url, "run", env={"BLOCK_AT": "release"}, wait=False)
    wait_for(tmp_path / "blocked")
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    led, run = latest_run(url, tmp_path)

    def other_runner_resumes():
        rc, out, err = child(tmp_path, url, "resume", run.id)
        assert rc == 0 and "outcome succeeded" in out, err

    with pytest.raises(DeployError, match=f"Run {run.id} is succeeded; there is nothing to abort"):
        Runner(_Racing(led, other_runner_resumes), Console(quiet=True)).abort(plan(tmp_path), run.id)
    assert world(tmp_path) == ["preflight", "build", "migrate", "release", "smoke"]  # nothing undone
    assert led.run(run.id).status == "succeeded" and led.lock("test") is None


@pytest.mark.parametrize("run_status, step_status, undo_status, release_status", [
    (RunStatus.ROLLED_BACK, StepStatus.DONE, UndoStatus.UNDONE, ReleaseStatus.ROLLED_BACK),
    (RunStatus.FAILED_IN_PLACE, StepStatus.FAILED, UndoStatus.UNDO_FAILED, ReleaseStatus.LIVE),
    (RunStatus.SUCCEEDED, StepStatus.SKIPPED, None, ReleaseStatus.SUPERSEDED),
], ids=["undone", "left-in-place", "succeeded"])
def test_statuses_are_stored_as_their_text_and_read_back_as_their_enums(tmp_path, ledger_url, run_status,
                                                                         step_status, undo_status, release_status):
    """A database driver may adapt an enum by its member's name: the ledger writes the text
    another toolkit version (or a person with psql) reads, and reads it back typed."""
    from sqlalchemy import text

    led = Ledger.open(tmp_path, ledger_url)
    env = f"t{os.getpid()}{time.monotonic_ns() % 10_000}"
    run_id = led.start_run(env=env, flow="promote", sha=None, steps=["one"], args={})
    led.update_run(run_id, status=run_status)
    led.update_step(run_id, 0, status=step_status, undo_status=undo_status)
    led.record_release(env=env, release_id="r1", sha="a" * 40, artifact_sha256=None, run_id=run_id)
    led.set_release_status(env, "r1", release_status)
    with led.engine.connect() as c:
        raw = (c.execute(text("SELECT status FROM deploy_runs WHERE id = :i"), {"i": run_id}).scalar_one(),
               c.execute(text("SELECT status, undo_status FROM deploy_steps WHERE run_id = :i"), {"i": run_id}).one(),
               c.execute(text("SELECT status FROM deploy_releases WHERE env = :e"), {"e": env}).scalar_one())
    assert raw == (run_status.value, (step_status.value, undo_status.value if undo_status else None),
                   release_status.value)
    assert led.run(run_id).status is run_status
    assert (led.steps(run_id)[0].status, led.steps(run_id)[0].undo_status) == (step_status, undo_status)
    assert led.releases(env)[0].status is release_status
    live = led.live_release(env)
    assert (live.release_id if live else None) == ("r1" if release_status is ReleaseStatus.LIVE else None)
