"""Eight promoters started at once against one staging environment (two sshd hosts,
Postgres, the Shopify stand-in): exactly one proceeds, every other one fails with
LockHeld (exit 4) naming who holds the lock, and the environment ends on the winner's
release with nothing half-done.

Three ways of sharing the lock: one SQLite ledger, one Postgres ledger (what CI runners
share through DEPLOY_LEDGER_URL), and two separate ledgers that share nothing but the
`.deploy-lock` directory on each host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg
import pytest

from deploy.testing.project import REPO

N = 8
TIER = "20250301000000_shop_tier"


def spawn(project, *args: str, ledger_url: str | None) -> subprocess.Popen:
    """`invoke ARGS` like Project.invoke, but started without waiting (and with its own ledger URL)."""
    env = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env}
    env.pop("DEPLOY_LEDGER_URL", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    if ledger_url:
        env["DEPLOY_LEDGER_URL"] = ledger_url
    return subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=project.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def applied(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}


def ledger_at(project, url):
    from deploy.ledger import Ledger

    return Ledger.open(project.root, url)


def ledger_urls(kind: str, project, pg_cluster) -> list[str | None]:
    """The DEPLOY_LEDGER_URL of each of the N promoters (None: the project's SQLite ledger)."""
    if kind == "sqlite":
        return [None] * N
    if kind == "postgres":
        return [pg_cluster.create_database()] * N
    # Two Postgres ledgers: env/variables.toml types DEPLOY_LEDGER_URL on staging as a
    # server URL (a shared ledger), so a sqlite:/// one is refused by preflight's env.check.
    one, other = pg_cluster.create_database(), pg_cluster.create_database()
    return [one if i % 2 == 0 else other for i in range(N)]


# With two ledgers only the hosts' lock is shared: the promotion takes it right after
# preflight (primary host first), so the seven losers stop there with LockHeld.
@pytest.mark.parametrize("kind", ["sqlite", "postgres", "two-ledgers"])
def test_eight_promoters_at_once_exactly_one_proceeds(stage, pg_cluster, kind):
    project = stage.project
    urls = ledger_urls(kind, project, pg_cluster)
    # Release A through the first ledger: the environment and the ledgers have a history.
    stage.collect_evidence()
    first = spawn(project, "promote", "--to=staging", ledger_url=urls[0])
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out + err
    for url in set(urls):
        ledger_at(project, url).close()  # schema exists, as it does for any ledger in use
    a = ledger_at(project, urls[0]).runs("staging")[0]
    mig = project.root / "examples/app/prisma/postgres/migrations" / TIER
    mig.mkdir()
    (mig / "migration.sql").write_text('ALTER TABLE "Shop" ADD COLUMN "tier" TEXT;\n')
    (mig / "down.sql").write_text('ALTER TABLE "Shop" DROP COLUMN "tier";\n')
    project.commit("B: shop tier")
    stage.collect_evidence()

    procs = [spawn(project, "promote", "--to=staging", ledger_url=u) for u in urls]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        results.append((p.pid, p.returncode, out, err))

    codes = sorted(rc for _, rc, _, _ in results)
    assert codes == [0] + [4] * (N - 1), "\n\n".join(f"rc={rc}\n{o}\n{e}" for _, rc, o, e in results)
    winner = next(r for r in results if r[1] == 0)
    ledgers = {u: ledger_at(project, u) for u in set(urls)}
    won = [run for led in ledgers.values() for run in led.runs("staging", flow="promote")
           if run.status == "succeeded" and run.id != a.id]
    assert len(won) == 1
    won = won[0]
    pids = {pid for pid, _, _, _ in results}
    run_ids = {run.id for led in ledgers.values() for run in led.runs("staging")}
    for pid, rc, out, err in results:
        if rc == 0:
            continue
        assert "Traceback" not in err and ("locked by" in err or "held by" in err), err
        # The holder is named: a promoter's pid (ledger lock) or a run id (host lock).
        named = {int(m) for m in re.findall(r"pid (\d+)", err)} & pids or {r for r in run_ids if r in err}
        assert named, err

    # The environment is on the winner's release, whole: both hosts, Shopify, schema, ledger.
    assert stage.currents() == [won.release_id] * 2
    assert stage.versions() == [won.release_id] * 2
    assert stage.shopify.active() == won.release_id
    assert TIER in applied(stage.db_url)
    for url, led in ledgers.items():
        assert led.lock("staging") is None
        # A refused promoter leaves no run behind, except one that got past its own
        # ledger's lock and lost at the hosts' lock (two ledgers): it stopped at the lock step.
        # Such a loser frees its ledger's lock at once, so on a loaded machine a promoter of
        # the same ledger that started late can get past it too, and lose at the hosts' lock
        # the same way: at most every promoter of that ledger.
        others = [r for r in led.runs("staging") if r.id not in (a.id, won.id)]
        assert all(r.status == "rolled_back" and r.failed_step == "lock" for r in others), others
        assert len(others) <= (urls.count(url) if kind == "two-ledgers" else 0)
    for h in stage.hosts:
        assert not (h.root / "srv/occ/.deploy-lock").exists()
