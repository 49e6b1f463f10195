"""`invoke promote --to=staging` end to end: Postgres from the fixture, two real sshd
hosts running the example app, the Shopify stand-in, evidence bound to the commit."""

import json
import re

import psycopg
import pytest


def applied(url):
    with psycopg.connect(url) as c:
        try:
            return [r[0] for r in c.execute(
                "SELECT migration_name FROM _prisma_migrations WHERE rolled_back_at IS NULL "
                "AND finished_at IS NOT NULL ORDER BY migration_name")]
        except psycopg.errors.UndefinedTable:
            return []


def run_of(stage, env="staging"):
    led = stage.project.ledger()
    return led, led.runs(env)[0]


def promote(stage, *args):
    return stage.project.invoke("promote", "--to=staging", *args)


def test_promotion_puts_the_new_release_on_both_hosts(stage):
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    led, run = run_of(stage)
    assert run.status == "succeeded"
    assert stage.currents() == [run.release_id] * 2
    assert stage.versions() == [run.release_id] * 2
    assert stage.shopify.active() == run.release_id
    assert len(applied(stage.db_url)) == 3
    assert led.live_release("staging").release_id == run.release_id
    log = (stage.project.root / "feedback/deployment.md").read_text()
    assert f"release {run.release_id}" in log and "succeeded" in log


def reasons_cell(text: str) -> str:
    """The gate table's reasons column read as a person reads it: its wrapped lines joined."""
    cells = [line.split("│")[-2].strip() for line in text.splitlines()
             if line.startswith("│") and line.count("│") >= 3]
    return " ".join(c for c in cells if c)


def test_gate_closes_on_evidence_for_another_commit(stage):
    stage.collect_evidence()
    tested = stage.project.head
    (stage.project.root / "examples/app/README.md").write_text("changed\n")
    head = stage.project.commit("a newer commit without evidence")
    r = promote(stage)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    # The table wraps the reason between words; read whole, it names both commits.
    assert (f"the evidence is for commit {tested[:12]}, not {head[:12]}, the commit being deployed"
            in reasons_cell(r.stderr)), r.stderr
    assert f"invoke evidence.collect --sha={head}" in r.stderr
    led, run = run_of(stage)
    assert run.failed_step == "gate"
    assert stage.currents() == [None, None] and stage.shopify.active() is None


def test_failing_migration_stops_before_any_host_switches(stage):
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    led, good = run_of(stage)
    bad = stage.project.root / "examples/app/prisma/postgres/migrations/20250101000000_broken"
    bad.mkdir()
    (bad / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "x" TEXT;\nALTER TABLE "Nope" ADD COLUMN "y" INT;\n')
    stage.project.commit("a broken migration")
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "20250101000000_broken" in r.stdout + r.stderr
    led, run = run_of(stage)
    assert run.failed_step == "migrate" and run.status == "rolled_back"
    assert stage.currents() == [good.release_id] * 2
    assert stage.shopify.active() == good.release_id
    with psycopg.connect(stage.db_url) as c:
        cols = [r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name='Shop'")]
        assert "x" not in cols  # the failed migration's transaction left no trace
        failed = c.execute("SELECT count(*) FROM _prisma_migrations WHERE finished_at IS NULL "
                           "AND rolled_back_at IS NULL").fetchone()[0]
        assert failed == 0  # resolved as rolled back by the undo, so the next deploy is not blocked


def test_smoke_failure_after_switch_rolls_back_hosts_and_shopify_and_keeps_an_additive_migration(stage):
    """The new release fails its smoke check: hosts and Shopify go back; its nullable column is
    additive, so the undo keeps it (the previous release runs on it, no row is lost) and says so,
    even though it has a down.sql."""
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    led, good = run_of(stage)
    applied_before = applied(stage.db_url)
    app = stage.project.root / "examples/app"
    mig = app / "prisma/postgres/migrations/20250201000000_shop_region"
    mig.mkdir()
    (mig / "migration.sql").write_text('-- AlterTable\nALTER TABLE "Shop" ADD COLUMN "region" TEXT;\n')
    (mig / "down.sql").write_text('-- AlterTable\nALTER TABLE "Shop" DROP COLUMN "region";\n')
    server = app / "server.mjs"
    server.write_text(server.read_text().replace("/version", "/version-moved"))
    stage.project.commit("a release that answers the wrong /version")
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    led, run = run_of(stage)
    assert run.failed_step == "smoke" and run.status == "rolled_back", run.error
    assert stage.currents() == [good.release_id] * 2
    assert stage.versions() == [good.release_id] * 2
    assert stage.shopify.active() == good.release_id
    assert applied(stage.db_url) == sorted(applied_before + ["20250201000000_shop_region"])
    with psycopg.connect(stage.db_url) as c:
        cols = [r[0] for r in c.execute("SELECT column_name FROM information_schema.columns WHERE table_name='Shop'")]
    assert "region" in cols
    assert ("kept: 1 additive migration(s) stay applied (20250201000000_shop_region), no rows lost"
            in r.stdout), r.stdout
    assert "down-migrated" not in r.stdout and "restored" not in r.stdout
    undone = {s.name: s.undo_status for s in led.steps(run.id)}
    assert undone["release"] == undone["shopify"] == undone["migrate"] == "undone"


def test_watch_trigger_rolls_back(stage):
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    led, good = run_of(stage)
    # A release that dies right after answering its smoke check of /version (no clock involved).
    server = stage.project.root / "examples/app/server.mjs"
    server.write_text(server.read_text() + '\nserver.on("request", (req) => { if ((req.url || "").startsWith("/version")) '
                                           'setTimeout(() => process.exit(3), 50); });\n')
    cfg = stage.project.root / "env/staging.toml"
    cfg.write_text(cfg.read_text().replace("window_seconds = 1\n", "window_seconds = 4\n"))
    stage.project.commit("a release that crashes under watch")
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode != 0
    led, run = run_of(stage)
    assert run.failed_step == "watch", run.error
    assert "trigger" in run.error.lower()
    assert stage.currents() == [good.release_id] * 2
    assert stage.versions() == [good.release_id] * 2


def two_releases(stage):
    """Staging promoted twice: (first run, second run)."""
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    first = run_of(stage)[1]
    (stage.project.root / "examples/app/README.md").write_text("v2\n")
    stage.project.commit("v2")
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    return first, run_of(stage)[1]


@pytest.fixture
def promoted_twice(stage_snapshot):
    """(stage, (first run, second run)) as `two_releases` leaves them: made once per module,
    put back in place for each test (deploy/testing/snapshots.py)."""
    return stage_snapshot(two_releases)


def test_rollback_task_returns_to_the_previous_release(promoted_twice):
    stage, (first, second) = promoted_twice
    led = stage.project.ledger()
    assert stage.versions() == [second.release_id] * 2
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "time to rollback" in r.stdout
    assert stage.versions() == [first.release_id] * 2
    assert stage.shopify.active() == first.release_id
    assert led.live_release("staging").release_id == first.release_id
    rb = led.runs("staging", flow="rollback")[0]
    assert rb.status == "succeeded" and rb.duration is not None


def test_rollback_reaches_a_shopify_version_older_than_the_newest_20(promoted_twice):
    stage, (first, second) = promoted_twice
    # 25 more app versions since (Shopify CLI's `versions list` returns the newest 20 only).
    stage.shopify.deploy_versions([f"later-{i:02d}" for i in range(25)])
    listed = [v["versionTag"] for v in json.loads(stage.shopify.run("app", "versions", "list", "--config",
                                                                    "staging", "--json").stdout)]
    assert len(listed) == 20 and first.release_id not in listed
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stage.shopify.active() == first.release_id
    assert stage.versions() == [first.release_id] * 2


def test_empty_client_id_is_refused_by_preflight_before_anything_changes(stage):
    f = stage.project.root / "examples/app/shopify.app.staging.toml"
    f.write_text(re.sub(r'(?m)^client_id = ".*"$', 'client_id = ""', f.read_text()))
    stage.project.commit("the template's empty client_id")
    stage.collect_evidence()
    r = promote(stage)
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode != 0 and "Traceback" not in out
    assert "shopify.app.staging.toml: client_id is empty" in out and "shopify app config link" in out, out
    led, run = run_of(stage)
    assert run.failed_step == "preflight", run.error
    assert stage.currents() == [None, None]
    assert applied(stage.db_url) == []
    assert stage.shopify.calls() == []


def test_lock_release_force_frees_a_killed_runs_ledger_and_host_locks(stage):
    stage.collect_evidence()
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "before:release"})
    assert killed.returncode == -9
    run = stage.project.ledger().runs("staging")[0]
    # What a kill inside the release step leaves on each host: the run's lock directory.
    from datetime import datetime, timezone

    from deploy.hosts import LOCK_DIR, lock_details
    for h in stage.hosts:
        h.write(f"srv/occ/{LOCK_DIR}/details",
                lock_details("root@ci", run.id, run.release_id, datetime.now(timezone.utc)))
    st = stage.project.invoke("lock.status", "--env=staging")
    assert st.returncode == 0 and "holder gone" in st.stdout and "occdeploy@127.0.0.1" in st.stdout
    refused = stage.project.invoke("promote", "--to=staging")
    assert refused.returncode == 4 and "--resume" in refused.stderr
    assert stage.project.invoke("lock.release", "--env=staging").returncode == 4  # needs --force
    r = stage.project.invoke("lock.release", "--env=staging", "--force")
    assert r.returncode == 0, r.stderr
    assert "broke the ledger lock" in r.stdout and r.stdout.count("broke the deploy lock") == 2
    led = stage.project.ledger()
    assert led.lock("staging") is None
    assert led.runs("staging")[0].status == "failed"


def test_rollback_from_a_runner_without_the_ledger_asks_the_hosts(promoted_twice):
    stage, (first, _) = promoted_twice
    (stage.project.root / ".deploy/ledger.db").unlink()  # another runner: no shared ledger
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stage.versions() == [first.release_id] * 2


def test_a_release_whose_start_command_exits_goes_back_on_every_host_and_frees_the_locks(stage):
    stage.collect_evidence()
    assert promote(stage).returncode == 0
    led, good = run_of(stage)
    server = stage.project.root / "examples/app/server.mjs"
    server.write_text("console.error('fatal: no session storage'); process.exit(4);\n" + server.read_text())
    stage.project.commit("a release that cannot start")
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "the app exited" in r.stdout + r.stderr and "fatal: no session storage" in r.stdout + r.stderr
    led, run = run_of(stage)
    assert run.failed_step == "release" and run.status == "rolled_back", run.error
    assert stage.currents() == [good.release_id] * 2 and stage.versions() == [good.release_id] * 2
    assert led.lock("staging") is None
    assert not any((d / ".deploy-lock").exists() for d in stage.host_dirs())


def test_a_failed_first_promotion_leaves_no_app_running_on_the_hosts(stage):
    server = stage.project.root / "examples/app/server.mjs"
    server.write_text("process.exit(4);\n" + server.read_text())
    stage.project.commit("a first release that cannot start")
    stage.collect_evidence()
    r = promote(stage)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    led, run = run_of(stage)
    assert run.status == "rolled_back" and led.lock("staging") is None
    assert stage.currents() == [None, None]
    assert not any((d / "run" / "app.pid").exists() for d in stage.host_dirs())
    assert not any((d / ".deploy-lock").exists() for d in stage.host_dirs())


def test_a_second_promotion_sends_only_the_changed_files_and_links_the_rest(promoted_twice):
    stage, (first, second) = promoted_twice
    led = stage.project.ledger()
    (release,) = [s for s in led.steps(second.id) if s.name == "release"]
    assert release.status == "done" and "(2 as a delta)" in (release.result or ""), release.result
    for d in stage.host_dirs():
        one, two = d / "releases" / first.release_id, d / "releases" / second.release_id
        # An unchanged file of the app is the first release's own inode; the changed one is new.
        assert (two / "package.json").stat().st_ino == (one / "package.json").stat().st_ino
        assert (two / "README.md").read_text() == "v2\n"
        assert (two / "README.md").stat().st_ino != (one / "README.md").stat().st_ino


def test_dry_run_prints_each_hosts_commands_and_the_pending_migration_files(stage):
    """--dry-run reads the commit's checkout (extracted by an earlier run) and the database
    (read-only): only the migration that is pending is listed; per host, the exact commands."""
    from deploy import config, hosts

    stage.collect_evidence()
    assert promote(stage).returncode == 0
    mig = stage.project.root / "examples/app/prisma/postgres/migrations/20250301000000_shop_tier"
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "tier" TEXT;\n')
    (mig / "down.sql").write_text('ALTER TABLE "Shop" DROP COLUMN "tier";\n')
    stage.project.commit("B: shop tier")
    assert promote(stage).returncode != 0  # no evidence for B: stops at the gate, after preflight extracted B
    before = applied(stage.db_url)
    r = promote(stage, "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "prisma/postgres/migrations/20250301000000_shop_tier/migration.sql" in out
    assert "20240105093000_init/migration.sql" not in out  # applied already: not listed
    s = config.load("staging", stage.project.root)
    release_id = re.search(r"release: (\S+)", out)[1]
    for t in hosts.targets(s.hosts, s.app):
        assert f"[{t.name}] {hosts.switch_command(t, release_id)}" in out
    assert "shopify app deploy --config" in out and f"--version {release_id}" in out
    assert applied(stage.db_url) == before and stage.project.ledger().runs("staging")[0].status != "running"
