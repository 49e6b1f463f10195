"""Attacks on the engine, the ledger and the CLI edge (issue 13), through the real command
line against real parts (two sshd hosts, Postgres, the Shopify stand-in):

- a short secret value must not corrupt the run state an --abort or --resume reads back;
- --abort/--resume never take over a lock whose holder runs on another machine, unless
  --break-lock is given and the holder has been silent past the staleness bound;
- single-primitive tasks that change an environment respect its lock;
- the hosts' deploy lock lasts until the run ends;
- SIGTERM undoes like a failure, a second signal does not cut the undo in half;
- an older ledger is migrated forward, a newer one refused, before anything changes;
- a full disk under .deploy/ mid-run ends in the undo and a precise hint, no traceback;
- a closed output pipe ends a task quietly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import psycopg

import pytest

from deploy.facts import fact
from deploy.ledger import SCHEMA_VERSION
from deploy.liveness import boottime

from deploy.testing.project import REPO
from test_reliability_faults import (TIER, add_tier_migration, applied, assert_on_release, edit_settings, spawn,
                                     wait_for)

A_MIGRATIONS = {"20240105093000_init", "20240212141500_decision_log", "20240318080000_session_expiry"}


def ok(r):
    text = r.stdout + r.stderr
    assert r.returncode == 0, text
    assert "Traceback" not in text, text
    return text


def refused(r, code: int | None = None):
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    if code is not None:
        assert r.returncode == code, text
    assert "Traceback" not in text, text
    return text


def promote_a(stage):
    stage.collect_evidence()
    ok(stage.project.invoke("promote", "--to=staging"))
    return stage.project.ledger().runs("staging")[0]


@pytest.fixture
def on_a(stage_snapshot):
    """(stage, run of A) as `promote_a` leaves them: made once per module, put back in place
    for each test (deploy/testing/snapshots.py)."""
    return stage_snapshot(promote_a)


def commit_b(stage):
    add_tier_migration(stage.project)
    stage.project.commit("B: shop tier")
    stage.collect_evidence()


KEPT_TIER = f"kept: 1 additive migration(s) stay applied ({TIER}), no rows lost"


def assert_back_on_a_keeping_tier(stage, a_release_id: str, text: str) -> None:
    """Undone to A: hosts, Shopify and the ledger on A; B's additive `tier` column stays applied
    (A runs on it, no row lost) and the undo's line says so, restoring nothing."""
    assert_on_release(stage, a_release_id, tier=True)
    assert applied(stage.db_url) == A_MIGRATIONS | {TIER}
    assert KEPT_TIER in text and "restored" not in text, text


def shops(url: str) -> int:
    with psycopg.connect(url) as c:
        return c.execute('SELECT count(*) FROM "Shop"').fetchone()[0]


def add_shops(url: str, n: int) -> None:
    with psycopg.connect(url) as c:
        c.execute('INSERT INTO "Shop" (id, domain, name) SELECT \'s\' || g, \'shop\' || g || \'.example\', '
                  '\'Shop \' || g FROM generate_series(1, %s) g', (n,))


def read_until(proc, *words: str, lines: list[str]) -> str:
    """Read the child's stdout line by line until one holds every word (no sleeping)."""
    for line in proc.stdout:
        lines.append(line)
        if all(w in line for w in words):
            return line
    raise AssertionError(f"the run ended before printing {words}:\n" + "".join(lines) + proc.stderr.read())


def step_running(project, name: str) -> bool:
    """The latest run's step `name` has started (read from the ledger, as `status` does)."""
    led = project.ledger()
    try:
        runs = led.runs("staging", limit=1)
        return bool(runs) and any(s.name == name and s.status == "running" for s in led.steps(runs[0].id))
    finally:
        led.close()


def finish(proc, lines: list[str], timeout: float = 180) -> str:
    """The rest of a child that `read_until` read from: everything it printed, once it ended."""
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=timeout)
    return "".join(lines) + rest + err


# ----------------------------------------------------------------------------- 1. short secrets

@pytest.mark.parametrize("mode", ["abort", "resume"])
@pytest.mark.parametrize("value", ["2024", "1"])  # "1": env.check warns (test_envs), the run goes on
def test_short_secret_value_does_not_corrupt_the_run_state_resume_and_abort_read(stage, value, mode):
    stage.project.env["SESSION_SECRET"] = value  # registered as a secret by preflight's env.check
    a = promote_a(stage)
    add_shops(stage.db_url, 500)
    commit_b(stage)
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:shopify"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    led = stage.project.ledger()
    b = led.runs("staging")[0]
    # Stored exactly: the names, the path and the checksum as they are.
    from deploy.facts import ArtifactFacts, MigrateFacts, get

    assert set(get(b.state, MigrateFacts).before) == A_MIGRATIONS
    art = get(b.state, ArtifactFacts)
    assert os.path.isfile(art.path) and len(art.sha256) == 64 and art.git_sha == b.sha
    text = ok(stage.project.invoke("promote", "--to=staging", f"--{mode}"))
    if mode == "abort":
        assert_back_on_a_keeping_tier(stage, a.release_id, text)  # additive: kept, not taken back
        assert led.run(b.id).status == "aborted"
    else:
        assert_on_release(stage, b.release_id, tier=True)
        assert led.run(b.id).status == "succeeded"
    assert shops(stage.db_url) == 500, text


@fact
@dataclasses.dataclass(frozen=True)
class TokenFacts:
    token: str


def test_a_secret_in_run_state_is_refused_and_the_run_undone(tmp_path):
    """A step that records a Secret as a fact (a bug) stops the run before it is written:
    the undo runs and the ledger holds no trace of the value."""
    from deploy.engine import Console, Plan, Runner, Step
    from deploy.ledger import Ledger
    from deploy.redact import Secret

    led = Ledger.open(tmp_path)
    undone = []

    def leak(ctx):
        ctx.put(TokenFacts(Secret("tok-9f8e7d6c5b4a")))

    steps = [Step("one", "first", run=lambda ctx: "ok", undo=lambda ctx: undone.append("one")),
             Step("two", "records a secret", run=leak)]
    out = Runner(led, Console(quiet=True)).execute(Plan("promote", "t", steps))
    assert out.status == "rolled_back" and undone == ["one"]
    assert "a Secret was put into the run state at TokenFacts.token" in out.error.message
    assert b"tok-9f8e7d6c5b4a" not in (tmp_path / ".deploy/ledger.db").read_bytes()
    assert led.lock("t") is None


# ----------------------------------------------------------------------------- 2. another machine's lock

def test_abort_never_takes_over_a_lock_held_on_another_machine_without_break_lock(stage, pg_cluster):
    url = pg_cluster.create_database()
    stage.project.env["DEPLOY_LEDGER_URL"] = url  # the shared ledger CI runners use
    promote_a(stage)
    commit_b(stage)
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:watch"})
    assert killed.returncode == -9
    b = stage.project.ledger().runs("staging")[0]
    with psycopg.connect(url) as c:  # the holder is runner 1, on another machine (boot), alive a moment ago
        c.execute("UPDATE deploy_locks SET hostname = 'ci-runner-1', boot_id = 'ci-runner-1-boot', "
                  "heartbeat_at = extract(epoch from now()) WHERE env = 'staging'")

    def untouched():
        assert stage.currents() == [b.release_id] * 2
        assert stage.shopify.active() == b.release_id
        assert TIER in applied(stage.db_url)
        assert stage.project.ledger().lock("staging").hostname == "ci-runner-1"

    assert "other host, seen" in ok(stage.project.invoke("lock.status", "--env=staging"))
    for args in (["--abort"], ["--resume"]):
        text = refused(stage.project.invoke("promote", "--to=staging", *args), 4)
        assert "ci-runner-1" in text and "--break-lock" in text, text
        untouched()
    # --break-lock shows the bound and refuses a holder that showed life within it.
    text = refused(stage.project.invoke("promote", "--to=staging", "--abort", "--break-lock"), 4)
    assert "ci-runner-1" in text and "staleness bound" in text, text
    untouched()
    # Silent for ten minutes: --break-lock takes it over, says from whom, and the abort finishes.
    with psycopg.connect(url) as c:  # on the ledger's clock, the heartbeat's
        c.execute("UPDATE deploy_locks SET acquired_at = acquired_at - 600, "
                  "heartbeat_at = extract(epoch from now()) - 600 WHERE env = 'staging'")
    a = stage.project.ledger().runs("staging", status="succeeded")[0]
    text = ok(stage.project.invoke("promote", "--to=staging", "--abort", "--break-lock"))
    assert "took over" in text and "ci-runner-1" in text, text
    assert stage.project.ledger().run(b.id).status == "aborted"
    assert_on_release_shared(stage, a.release_id)
    assert KEPT_TIER in text, text  # the undo keeps B's additive migration and says so


def assert_on_release_shared(stage, release_id):
    assert stage.currents() == [release_id] * 2
    assert stage.shopify.active() == release_id
    assert applied(stage.db_url) == A_MIGRATIONS | {TIER}  # additive: kept by the undo
    led = stage.project.ledger()
    assert led.lock("staging") is None and led.live_release("staging").release_id == release_id


def test_a_frozen_runner_whose_lock_was_taken_over_stops_without_undoing_or_touching_the_lock(on_a):
    """Runner A freezes (SIGSTOP) in its watch past the staleness bound; runner B takes the
    lock over with --resume --break-lock. When A wakes, its heartbeat no longer matches the
    holder: A stops at the next step boundary, undoes nothing and leaves B's lock alone."""
    stage, _ = on_a
    project = stage.project
    # Long enough for A to be seen in its watch and frozen there; B runs while A is frozen.
    edit_settings(project, "window_seconds = 1\n", "window_seconds = 8\n")
    commit_b(stage)
    a = spawn(project, "promote", "--to=staging")
    lines: list[str] = []
    try:
        read_until(a, "smoke", "done", lines=lines)
        wait_for(lambda: step_running(project, "watch"), 60, "the watch to start")
        run = project.ledger().runs("staging")[0]
        a.send_signal(signal.SIGSTOP)
        # A's machine, as seen from B's: another host (boot), silent for ten minutes on the
        # heartbeat's clock (CLOCK_BOOTTIME for this SQLite ledger).
        sql(project, f"UPDATE deploy_locks SET hostname = 'ci-runner-1', boot_id = 'ci-runner-1-boot', "
                     f"acquired_at = acquired_at - 600, heartbeat_at = {time.time() - 600}, "
                     "beat_clock = beat_clock - 600 WHERE env = 'staging'")
        # B takes over, then dies before its own watch: its lock row stays, naming B.
        b = project.invoke("promote", "--to=staging", "--resume", "--break-lock",
                           extra_env={"DEPLOY_FAULT": "before:watch"})
        assert b.returncode == -9 and "took over" in b.stdout and "ci-runner-1" in b.stdout, b.stdout + b.stderr
        held = project.ledger().lock("staging")
        assert held.run_id == run.id and held.pid != a.pid and held.hostname != "ci-runner-1"
    finally:
        a.send_signal(signal.SIGCONT)
    text = finish(a, lines)
    assert a.returncode == 4 and "Traceback" not in text, text
    assert "taken over by" in text and "undid nothing" in text, text
    assert not re.search(r"\] \S+ +(undone|UNDO-ERR)", text), text
    led = project.ledger()
    assert led.lock("staging") == held  # B's lock, untouched (not refreshed, not released)
    assert led.run(run.id).status == "running" and stage.shopify.active() == run.release_id
    # B (this machine, its process gone) finishes the run.
    ok(project.invoke("promote", "--to=staging", "--resume"))
    assert project.ledger().run(run.id).status == "succeeded"
    assert_on_release(stage, run.release_id, tier=True)
    assert project.ledger().lock("staging") is None


def test_lock_release_force_breaks_another_machines_old_lock_only_once_its_heartbeat_is_silent(project):
    # local: an environment without hosts, so only the ledger lock is at stake
    """An old lock held on another machine whose holder still beats is not stale: --force refuses it
    until the heartbeat has been silent past the staleness bound (the rule of --break-lock)."""
    from deploy.ledger import Ledger

    Ledger.open(project.root).acquire_lock("local", run_id=None, purpose="promote")
    day = time.time() - 86400  # far older than lock.max_age_minutes
    sql(project, f"UPDATE deploy_locks SET hostname = 'ci-runner-1', boot_id = 'ci-runner-1-boot', "
                 f"acquired_at = {day}, heartbeat_at = {time.time()}, beat_clock = {boottime()} WHERE env = 'local'")
    text = refused(project.invoke("lock.release", "--env=local", "--force"), 4)
    assert "ci-runner-1" in text and "staleness bound" in text, text
    assert project.ledger().lock("local").hostname == "ci-runner-1"
    sql(project, f"UPDATE deploy_locks SET heartbeat_at = {time.time() - 600}, beat_clock = {boottime() - 600} "
                 "WHERE env = 'local'")
    ok(project.invoke("lock.release", "--env=local", "--force"))
    assert project.ledger().lock("local") is None


def test_lock_status_of_an_unknown_environment_is_only_the_error(project):
    r = project.invoke("lock.status", "--env=nope")
    text = refused(r, 2)
    assert "nope" in text and "No environment is locked" not in text and "holder" not in r.stdout, text


# ----------------------------------------------------------------------------- 4. one-step tasks take the lock

def test_single_primitive_tasks_refuse_while_another_run_holds_the_lock(on_a):
    stage, a = on_a
    stage.project.invoke("db.backup", "--env=staging")
    commit_b(stage)
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:watch"})
    assert killed.returncode == -9
    b = stage.project.ledger().runs("staging")[0]
    for args in (["db.restore", "--env=staging", "--yes"], ["hosts.rollback", "--env=staging"],
                 ["shopify.release", "--env=staging", f"--version={a.release_id}"],
                 ["db.rollback", "--env=staging", "--yes"]):
        text = refused(stage.project.invoke(*args), 4)
        assert "locked by" in text and b.id in text, (args, text)
    assert stage.currents() == [b.release_id] * 2
    assert stage.shopify.active() == b.release_id
    assert TIER in applied(stage.db_url)
    ok(stage.project.invoke("promote", "--to=staging", "--abort"))
    # Free again: a one-step task runs, under the lock, and leaves a ledger record.
    ok(stage.project.invoke("db.migrate", "--env=staging"))
    led = stage.project.ledger()
    run = led.runs("staging", flow="db.migrate")[0]
    assert run.status == "succeeded" and [(s.name, s.status) for s in led.steps(run.id)] == [
        ("lock", "done"), ("backup", "done"), ("migrate", "done")]   # the hosts' lock and a backup first
    assert led.lock("staging") is None and TIER in applied(stage.db_url)


# ----------------------------------------------------------------------------- 5. host lock until the end

def test_host_lock_lasts_until_the_run_ends(stage, pg_cluster):
    project = stage.project
    edit_settings(project, "window_seconds = 1\n", "window_seconds = 20\n")
    project.commit("a long watch")
    stage.collect_evidence()
    first = spawn(project, "promote", "--to=staging")  # the project's own SQLite ledger
    lines: list[str] = []
    read_until(first, "smoke", "done", lines=lines)  # runner 1 is now in its watch window
    lock_dirs = [h.root / "srv/occ/.deploy-lock" for h in stage.hosts]
    assert all(d.is_dir() for d in lock_dirs)
    # Runner 2 shares nothing with runner 1 but the hosts: its own (Postgres) ledger.
    project.env["DEPLOY_LEDGER_URL"] = pg_cluster.create_database()
    other = project.invoke("promote", "--to=staging")
    del project.env["DEPLOY_LEDGER_URL"]
    text = refused(other, 4)
    assert ".deploy-lock" in text, text
    text = finish(first, lines)
    assert first.returncode == 0 and "Traceback" not in text, text
    run = project.ledger().runs("staging")[0]
    assert run.status == "succeeded" and stage.currents() == [run.release_id] * 2
    assert not any(d.exists() for d in lock_dirs)  # released when the run ended


# ----------------------------------------------------------------------------- 10. SIGTERM

@pytest.mark.parametrize("second", ["SIGTERM", "SIGKILL"])
def test_sigterm_during_watch_undoes_and_a_second_signal_does_not_cut_the_undo(on_a, second):
    stage, a = on_a
    project = stage.project
    edit_settings(project, "window_seconds = 1\n", "window_seconds = 60\n")
    commit_b(stage)
    proc = spawn(project, "promote", "--to=staging")
    lines: list[str] = []
    read_until(proc, "smoke", "done", lines=lines)
    wait_for(lambda: step_running(project, "watch"), 60, "the watch to start")
    proc.send_signal(signal.SIGTERM)
    read_until(proc, "watch", "FAILED", lines=lines)  # the undo starts now
    proc.send_signal(getattr(signal, second))
    text = finish(proc, lines)
    assert "Traceback" not in text, text
    led = project.ledger()
    b = led.runs("staging")[0]
    if second == "SIGTERM":
        assert proc.returncode == 1, text
        assert "SIGTERM received while undoing: ignored" in text, text
        assert "Stopped by SIGTERM during step watch" in text, text
        assert b.status == "rolled_back"
    else:
        assert proc.returncode == -9
        text = ok(project.invoke("promote", "--to=staging", "--abort"))
        assert led.run(b.id).status == "aborted"
    assert_back_on_a_keeping_tier(stage, a.release_id, text)
    assert not any((h.root / "srv/occ/.deploy-lock").exists() for h in stage.hosts)


# ----------------------------------------------------------------------------- 12. ledger schema

def ledger_db(project):
    return project.root / ".deploy/ledger.db"


def sql(project, *statements):
    c = sqlite3.connect(ledger_db(project))
    try:
        for s in statements:
            c.execute(s)
        c.commit()
    finally:
        c.close()


def dump(project) -> list[str]:
    c = sqlite3.connect(ledger_db(project))
    try:
        return list(c.iterdump())
    finally:
        c.close()


def columns(project, table):
    with sqlite3.connect(ledger_db(project)) as c:
        return {r[1] for r in c.execute(f"PRAGMA table_info({table})")}


def test_older_ledger_is_migrated_forward_before_anything_runs(project):
    ok(project.invoke("status"))
    # The schema as the previous code made it: no version table, no lock heartbeat, and a
    # nullable column that an even older ledger lacked.
    sql(project, "DROP TABLE deploy_schema", "ALTER TABLE deploy_locks DROP COLUMN heartbeat_at",
        "ALTER TABLE deploy_releases DROP COLUMN shopify_version")
    ok(project.invoke("status"))
    assert "heartbeat_at" in columns(project, "deploy_locks")
    assert "shopify_version" in columns(project, "deploy_releases")
    ok(project.invoke("promote", "--to=local"))
    led = project.ledger()
    run = led.runs("local")[0]
    assert run.status == "succeeded" and led.live_release("local").release_id == run.release_id
    with sqlite3.connect(ledger_db(project)) as c:
        assert c.execute("SELECT version FROM deploy_schema").fetchall() == [(SCHEMA_VERSION,)]


@pytest.mark.parametrize("damage", ["newer", "required-column-missing"])
def test_newer_or_unmigratable_ledger_is_a_clear_error_before_anything_changes(project, damage):
    ok(project.invoke("promote", "--to=local"))
    if damage == "newer":
        sql(project, "UPDATE deploy_schema SET version = 99")
        want = "schema version 99, newer than this toolkit knows"
    else:
        sql(project, "DROP TABLE deploy_schema", "ALTER TABLE deploy_runs DROP COLUMN who")
        want = "lacks the required column who"
    before = dump(project)
    releases = sorted((project.root / ".deploy").rglob("releases/*"))
    for args in (["promote", "--to=local"], ["status"], ["promote", "--to=local", "--abort"], ["lock.status"]):
        text = refused(project.invoke(*args))
        assert want in text, (args, text)
    assert dump(project) == before
    assert sorted((project.root / ".deploy").rglob("releases/*")) == releases


# ----------------------------------------------------------------------------- 13. full disk

@pytest.fixture
def small_deploy_dir(stage):
    """`.deploy/` of the project on its own 64 MiB tmpfs (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = stage.project.root / ".deploy"
    d.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def fill(folder) -> os.PathLike:
    """Fill the file system holding `folder` to the last byte."""
    path = folder / "filler"
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    f.write(block)
                except OSError:
                    break
    return path


def test_disk_full_under_deploy_mid_run_undoes_and_says_how_to_finish(stage, small_deploy_dir):
    project = stage.project
    a = promote_a(stage)
    edit_settings(project, "window_seconds = 1\n", "window_seconds = 8\n")
    commit_b(stage)
    proc = spawn(project, "promote", "--to=staging")
    lines: list[str] = []
    read_until(proc, "smoke", "done", lines=lines)
    wait_for(lambda: step_running(project, "watch"), 60, "the watch to start")
    filler = fill(small_deploy_dir)  # during the watch: the ledger cannot record its end
    text = finish(proc, lines)
    assert proc.returncode != 0 and "Traceback" not in text, text
    assert "full" in text and "invoke promote --to=staging --abort" in text, text
    # The undo ran although the ledger could not record it.
    assert stage.currents() == [a.release_id] * 2 and stage.shopify.active() == a.release_id
    assert applied(stage.db_url) == A_MIGRATIONS | {TIER}  # additive: kept by the undo
    os.unlink(filler)
    assert_back_on_a_keeping_tier(stage, a.release_id, ok(project.invoke("promote", "--to=staging", "--abort")))


# ----------------------------------------------------------------------------- 14. closed pipe

@pytest.mark.parametrize("args", [["db.status", "--env=local"], ["status"], ["lock.status"]], ids=" ".join)
def test_a_closed_output_pipe_ends_the_task_quietly(project, args):
    env = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env}
    env.pop("DEPLOY_LEDGER_URL", None)
    p = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=project.root, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the task writes (`| head -0`)
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert p.returncode == 0, err


def test_a_promotion_whose_reader_goes_away_still_finishes_and_frees_the_lock(project):
    """`invoke promote ... | head -1`: the run must not stop half-way (lock held, state
    "running") because nobody reads its progress any more."""
    env = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env}
    env.pop("DEPLOY_LEDGER_URL", None)
    p = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), "promote", "--to=local"],
                         cwd=project.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    led = project.ledger()
    run = led.runs("local")[0]
    assert run.status == "succeeded" and led.lock("local") is None, err
    assert led.live_release("local").release_id == run.release_id


# ----------------------------------------------------------------------------- issue 14: hints

def test_a_killed_rollback_is_not_sent_to_promote_resume(on_a):
    stage, a = on_a
    stage.collect_evidence()
    ok(stage.project.invoke("promote", "--to=staging"))
    killed = stage.project.invoke("rollback", "--env=staging", "--yes", extra_env={"DEPLOY_FAULT": "before:smoke"})
    assert killed.returncode == -9
    text = refused(stage.project.invoke("promote", "--to=staging"), 4)
    assert "promote --to=staging --resume" not in text and "lock.release --env=staging --force" in text, text
    assert "rollback" in text
    ok(stage.project.invoke("lock.release", "--env=staging", "--force"))
    ok(stage.project.invoke("rollback", "--env=staging", f"--to={a.release_id}", "--yes"))
    assert stage.currents() == [a.release_id] * 2


@pytest.mark.parametrize("flow,abort", [("promote", "invoke promote --to=t --abort"), ("rollback", None)])
def test_undo_failed_hint_names_a_command_the_flow_has(tmp_path, flow, abort):
    from deploy.engine import Console, Plan, Runner, Step
    from deploy.errors import DeployError
    from deploy.ledger import Ledger

    def broken(ctx):
        raise DeployError("host gone")

    def fail(ctx):
        raise DeployError("smoke failed")

    led = Ledger.open(tmp_path)
    plan = Plan(flow, "t", [Step("release", "switch", run=lambda ctx: "ok", undo=broken), Step("smoke", "x", run=fail)],
                abort_cmd=abort)
    out = Runner(led, Console(quiet=True)).execute(plan)
    assert out.status == "failed" and led.lock("t") is not None
    if abort:
        assert abort in out.error.hint
    else:
        assert "--abort" not in out.error.hint and "invoke lock.release --env=t --force" in out.error.hint


def test_step_facts_are_stored_exactly_and_read_back_by_type(tmp_path):
    from deploy.facts import DatabaseBefore, MigrateFacts, RecordFacts, put
    from deploy.ledger import Ledger
    from deploy.redact import Secret

    Secret("1"), Secret("2024"), Secret("0105093000_init")  # registered: display redaction must not reach stored state
    led = Ledger.open(tmp_path)
    run = led.start_run(env="t", flow="promote", sha="a" * 40, steps=["record"], args={})
    state: dict = {}
    put(state, RecordFacts("20240105093000-1abc"))
    put(state, MigrateFacts(("20240105093000_init", "2024 1"), DatabaseBefore(True, False, ("public",))))
    led.update_run(run, state=state)
    back = led.run(run).state
    assert back == state and isinstance(back["MigrateFacts"].database, DatabaseBefore)


def test_a_plain_key_in_run_state_is_refused(tmp_path):
    """The state holds typed facts only: a step writing a string key is a bug, caught at the save."""
    from deploy.engine import Console, Plan, Runner, Step
    from deploy.ledger import Ledger

    led = Ledger.open(tmp_path)

    def plain(ctx):
        ctx.state["backup"] = "/tmp/x.dump"

    out = Runner(led, Console(quiet=True)).execute(Plan("promote", "t", [Step("one", "x", run=plain)]))
    assert out.status == "rolled_back" and "'backup' is not a step fact" in out.error.message
