"""A staging promotion SIGKILLed at step boundaries and just after a step's work (before
the ledger knows), then resumed or aborted: every host on one release, the database
schema matching that release (or, after an abort, forward with its additive migration
kept), the Shopify version matching, the lock free."""

import psycopg
import pytest

POINTS = [
    "before:gate", "before:build", "before:backup", "before:migrate", "during:migrate", "before:release",
    "during:release", "before:shopify", "during:shopify", "before:smoke", "before:watch", "during:record",
]


def applied(url):
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}


def release_a_and_commit_b(stage):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    a = stage.project.ledger().runs("staging")[0]
    mig = stage.project.root / "examples/app/prisma/postgres/migrations/20250301000000_shop_tier"
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "tier" TEXT;\n')
    (mig / "down.sql").write_text('ALTER TABLE "Shop" DROP COLUMN "tier";\n')
    stage.project.commit("B: shop tier")
    stage.collect_evidence()
    return a


@pytest.fixture
def deployed(stage_snapshot):
    """Staging on release A; HEAD is a commit B with one more migration (with down.sql).
    Made once per module, then put back for each test (deploy/testing/snapshots.py)."""
    stage, a = stage_snapshot(release_a_and_commit_b)
    assert stage.currents() == [a.release_id] * 2 and stage.versions() == [a.release_id] * 2
    return stage, a


@pytest.mark.parametrize("mode", ["resume", "abort"])
@pytest.mark.parametrize("point", POINTS)
def test_kill_then_resume_or_abort_reaches_a_consistent_state(deployed, point, mode):
    stage, a = deployed
    killed = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": point})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    led = stage.project.ledger()
    b = led.runs("staging")[0]
    assert b.status == "running" and b.id != a.id
    r = stage.project.invoke("promote", "--to=staging", f"--{mode}")
    assert r.returncode == 0, r.stdout + r.stderr
    run = led.run(b.id)
    target = b.release_id if mode == "resume" else a.release_id
    assert run.status == ("succeeded" if mode == "resume" else "aborted")
    assert stage.currents() == [target] * 2
    assert stage.versions() == [target] * 2
    assert stage.shopify.active() == target
    has_tier = "20250301000000_shop_tier" in applied(stage.db_url)
    # An abort keeps an additive migration once it ran (the previous release runs on it; rows
    # written into it stay): the schema is the release's or forward-compatible with it.
    migrated = POINTS.index(point) >= POINTS.index("during:migrate")
    assert has_tier is (mode == "resume" or migrated)
    assert led.lock("staging") is None
    assert led.live_release("staging").release_id == target
