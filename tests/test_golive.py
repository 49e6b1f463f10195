"""The go-live checklist over real parts: a SQLite ledger with approvals and drills, a real
pg_dump backup restored into a scratch database, a Prisma-shaped decision-log table on
the test Postgres cluster, evidence collected from a Vitest JSON report, and the
project's own variable matrix. All met: GO. Each one missing: that item alone fails,
with its own reason."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from deploy import backups, config, evidence, golive
from deploy.config import SmokeSection
from deploy.errors import DeployError
from deploy.ledger import ApprovalRow, DrillRow, Ledger
from deploy.testing.decisionlog import create_decision_log

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=timezone.utc)
SHA = "c0ffee0123456789abcdef0123456789abcdef01"
OTHER_SHA = "deadbeef23456789abcdef0123456789abcdef02"


def ts(t: datetime) -> float:
    return t.timestamp()


def vitest_report(started: datetime) -> dict:
    """A passing report as `vitest run --reporter=json` writes it (packages/vitest/src/node/reporters/json.ts)."""
    ms = int(started.timestamp() * 1000)
    tests = [("healthz", "answers ok"), ("version", "reports the release")]
    return {
        "numTotalTestSuites": 2, "numPassedTestSuites": 2, "numFailedTestSuites": 0, "numPendingTestSuites": 0,
        "numTotalTests": 2, "numPassedTests": 2, "numFailedTests": 0, "numPendingTests": 0, "numTodoTests": 0,
        "snapshot": {"added": 0, "failure": False, "filesAdded": 0, "filesRemoved": 0, "filesRemovedList": [],
                     "filesUnmatched": 0, "filesUpdated": 0, "matched": 0, "total": 0, "unchecked": 0,
                     "uncheckedKeysByFile": [], "unmatched": 0, "updated": 0, "didUpdate": False},
        "startTime": ms, "success": True,
        "testResults": [{
            "assertionResults": [{"ancestorTitles": [suite], "fullName": f"{suite} {title}", "status": "passed",
                                  "title": title, "duration": 4, "failureMessages": [], "meta": {}}
                                 for suite, title in tests],
            "startTime": ms, "endTime": ms + 40, "status": "passed", "message": "",
            "name": "/work/app/test/server.test.ts",
        }],
    }


@dataclasses.dataclass
class World:
    root: Path
    settings: config.Settings
    ledger: Ledger
    environ: dict
    app_url: str
    log_url: str
    pg: object

    @property
    def backup_dir(self) -> Path:
        return self.root / ".deploy" / "backups"

    def collect(self, sha: str) -> None:
        report = self.root / "reports" / "vitest.json"
        report.parent.mkdir(exist_ok=True)
        report.write_text(json.dumps(vitest_report(NOW - timedelta(hours=2))))
        evidence.collect(sha, [report], out=self.root / "evidence" / evidence.MANIFEST, now=NOW - timedelta(hours=1))

    def backup(self, at: datetime) -> backups.Backup:
        return backups.backup(self.app_url, self.backup_dir, "production", SHA, now=lambda: at)

    def drill(self, at: datetime, outcome: str = "passed", env: str = "staging", procedure: str = "hotfix"):
        self.ledger.record_drill(env=env, procedure=procedure, started_at=ts(at), finished_at=ts(at) + 95,
                                 outcome=outcome, durations={"deploy": 40.0, "detect": 12.0, "rollback": 9.0,
                                                             "verify": 3.0})

    def clear_drills(self) -> None:
        with self.ledger.engine.begin() as c:
            c.execute(self.ledger.t["drills"].delete())

    def edit(self, rel: str, old: str, new: str) -> None:
        p = self.root / rel
        text = p.read_text()
        assert old in text, (rel, old)
        p.write_text(text.replace(old, new))

    def check(self, **kw) -> golive.Checklist:
        return golive.run_checklist(self.settings, self.ledger, SHA, NOW, self.environ, **kw)


@pytest.fixture
def world(tmp_path, pg_cluster, pg_url) -> World:
    """Production with every go-live condition met."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "env", root / "env", ignore=shutil.ignore_patterns("*.local.env"))
    # Staging must run production's toggles for its dry runs to mean anything.
    p = root / "env" / "staging.env"
    p.write_text(p.read_text().replace("PAYMENTS_MODE=mock", "PAYMENTS_MODE=live"))
    settings = config.load("production", root)
    settings = dataclasses.replace(settings, gate=dataclasses.replace(settings.gate, required=("vitest",)))

    pg_cluster.execute('CREATE TABLE "Shop" (id text PRIMARY KEY, domain text NOT NULL)', _db(pg_url))
    pg_cluster.execute("INSERT INTO \"Shop\" SELECT 's' || g, 'shop' || g || '.myshopify.com' "
                       "FROM generate_series(1, 25) g", _db(pg_url))
    log_url = pg_cluster.create_database()
    create_decision_log(log_url, [(NOW - timedelta(minutes=m), s) for m, s in
                                  ((2, "ok"), (9, "error"), (30, "ok"), (200, "error"))])

    ledger = Ledger.open(root)
    w = World(root, settings, ledger, {"DATABASE_URL": pg_url, "DECISION_LOG_DATABASE_URL": log_url},
              pg_url, log_url, pg_cluster)
    w.collect(SHA)
    w.backup(NOW - timedelta(hours=3))
    w.drill(NOW - timedelta(days=6))
    ledger.approve(env="production", sha=SHA, role="product", by="pat")
    ledger.approve(env="production", sha=SHA, role="manager", by="morgan")
    yield w
    ledger.close()


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_all_items_met_is_go_and_each_item_shows_its_evidence(world):
    cl = world.check()
    assert [i.name for i in cl.items] == list(golive.ITEMS)
    assert cl.ok, golive.render(cl)
    assert cl.exit_code == 0
    ev = {i.name: i.evidence for i in cl.items}
    assert "1 of 1 checks passed (vitest)" in ev["evidence"]
    assert "newest row 2 min ago" in ev["decision log"] and "1 error row(s) in the last hour" in ev["decision log"]
    assert "3h00m old" in ev["backup"] and "counts match the dump" in ev["backup"]
    assert "public.Shop" not in ev["backup"] and "25 row(s)" in ev["backup"]
    assert "2 smoke check(s)" in ev["rollback triggers"] and "decision log" in ev["rollback triggers"]
    assert "hotfix drill on staging" in ev["rollback drill"] and "2026-11-14 12:00 UTC (6 days ago)" in ev["rollback drill"]
    assert "0 overdue" in ev["secrets"]
    assert "staging vs production" in ev["staging parity"]
    assert "product: pat" in ev["approvals"] and "manager: morgan" in ev["approvals"]
    assert all(i.reason == "" for i in cl.items)
    assert golive.require(cl) is cl


def _stale_log(w: World) -> None:
    w.pg.execute("UPDATE decision_log SET created_at = created_at - interval '3 hours'", _db(w.log_url))


def _no_backup(w: World) -> None:
    shutil.rmtree(w.backup_dir)


def _old_backup(w: World) -> None:
    shutil.rmtree(w.backup_dir)
    w.backup(NOW - timedelta(hours=30))


def _corrupt_backup(w: World) -> None:
    dump = backups.list_backups(w.backup_dir, "production")[-1]
    with open(dump, "ab") as fh:
        fh.write(b"\0")


def _backup_differs(w: World) -> None:
    # The manifest says 25 shops; the dump must restore exactly what it recorded.
    man = backups.list_backups(w.backup_dir, "production")[-1].with_name(
        backups.list_backups(w.backup_dir, "production")[-1].name + ".json")
    doc = json.loads(man.read_text())
    doc["tables"]["public.Shop"] = 26
    man.write_text(json.dumps(doc))


def _no_triggers(w: World) -> None:
    w.settings = dataclasses.replace(w.settings, smoke=SmokeSection(),
                                     watch=dataclasses.replace(w.settings.watch, window_seconds=0))


def _old_drill(w: World) -> None:
    w.clear_drills()
    w.drill(NOW - timedelta(days=45), procedure="rollback")


def _failed_drill(w: World) -> None:
    w.clear_drills()
    w.drill(NOW - timedelta(days=1), outcome="failed")
    w.drill(NOW - timedelta(days=2), env="dev")          # a drill on another environment does not count


def _overdue_secret(w: World) -> None:
    w.edit("env/variables.toml", "production = { last_rotated = 2026-06-08 }",
           "production = { last_rotated = 2026-01-08 }")


def _parity(w: World) -> None:
    w.edit("env/staging.env", "FEATURE_INVENTORY_SYNC=true", "FEATURE_INVENTORY_SYNC=false")


def _approval_for_other_sha(w: World) -> None:
    with w.ledger.engine.begin() as c:
        t = w.ledger.t["approvals"]
        c.execute(t.update().where(t.c.role == "manager").values(sha=OTHER_SHA))


BREAKERS: list[tuple[str, Callable[[World], None], str, tuple[str, ...]]] = [
    ("evidence-other-commit", lambda w: w.collect(OTHER_SHA), "evidence",
     ("evidence gate closed", "deadbeef2345", "the commit being deployed")),
    ("evidence-missing", lambda w: shutil.rmtree(w.root / "evidence"), "evidence", ("manifest.json",)),
    ("decision-log-stale", _stale_log, "decision log", ("3h02m old", "max_age_minutes = 60")),
    ("decision-log-errors", lambda w: create_decision_log(w.log_url, [(NOW - timedelta(minutes=1), "error")] * 6,
                                                          table="decision_log_v2"), None, ()),
    ("decision-log-unset", lambda w: w.environ.pop("DECISION_LOG_DATABASE_URL"), "decision log",
     ("DECISION_LOG_DATABASE_URL is not set",)),
    ("backup-missing", _no_backup, "backup", ("no backup of production in .deploy/backups/production", "invoke db.backup --env=production")),
    ("backup-old", _old_backup, "backup", ("30h00m old", "backup_max_age_hours = 24")),
    ("backup-corrupt", _corrupt_backup, "backup", ("is corrupt",)),
    ("backup-restores-differently", _backup_differs, "backup", ("public.Shop expected 26 rows, restored 25",)),
    ("backup-unverifiable", lambda w: w.environ.pop("DATABASE_URL"), "backup", ("DATABASE_URL is not set",)),
    ("no-rollback-triggers", _no_triggers, "rollback triggers", ("[smoke].checks is empty", "window_seconds is 0")),
    ("drill-too-old", _old_drill, "rollback drill", ("45 days old", "drill_max_age_days = 30")),
    ("drill-failed", _failed_drill, "rollback drill", ("never been exercised successfully", "ended failed")),
    ("no-drill", lambda w: w.clear_drills(), "rollback drill", ("never been exercised", "hotfix.drill")),
    ("secret-overdue", _overdue_secret, "secrets", ("SUPABASE_SERVICE_ROLE_KEY (due 2026-07-07)",)),
    ("parity", _parity, "staging parity", ("FEATURE_INVENTORY_SYNC (staging false vs production true)",)),
    ("approval-for-other-sha", _approval_for_other_sha, "approvals",
     ("no manager approval for c0ffee012345", "--role=manager")),
]


@pytest.mark.parametrize("breaker, item, fragments", [b[1:] for b in BREAKERS], ids=[b[0] for b in BREAKERS])
def test_each_missing_item_fails_alone_with_its_own_reason(world, breaker, item, fragments):
    breaker(world)
    cl = world.check()
    if item is None:          # a noisy *other* table must not be mistaken for the decision log
        assert cl.ok, golive.render(cl)
        return
    assert not cl.ok and cl.exit_code == 1
    assert [i.name for i in cl.failing] == [item], golive.render(cl)
    reason = cl.item(item).reason
    for f in fragments:
        assert f in reason, reason
    text = golive.render(cl)
    assert "NO GO" in text and item in text
    with pytest.raises(DeployError) as e:
        golive.require(cl)
    assert f"NO GO: 1 of 8 items fail ({item})" in str(e.value)


def test_too_many_decision_log_errors_fail_the_item(world):
    create_decision_log(world.log_url, [(NOW - timedelta(minutes=m), "error") for m in range(1, 7)],
                        table="decision_log_v2")
    dl = dataclasses.replace(world.settings.decision_log, table="decision_log_v2")
    world.settings = dataclasses.replace(world.settings, decision_log=dl)
    cl = world.check()
    assert [i.name for i in cl.failing] == ["decision log"]
    assert "6 rows" in cl.item("decision log").reason


def test_missing_matrix_fails_the_items_that_need_it_and_runs_the_rest(world):
    (world.root / "env" / "variables.toml").unlink()
    cl = world.check()
    assert [i.name for i in cl.failing] == ["secrets", "staging parity"]
    assert "variables.toml does not exist" in cl.item("secrets").reason


def test_no_secret_value_reaches_the_outputs(world, tmp_path):
    world.environ["DATABASE_URL"] = world.app_url.replace(world.pg.password, "wrong-pw-81723")
    cl = world.check()
    assert "backup" in [i.name for i in cl.failing]
    out = golive.render(cl) + golive.render_markdown(cl)
    for secret in (world.pg.password, "wrong-pw-81723"):
        assert secret not in out


def test_markdown_for_circulation_has_date_sha_items_evidence_and_verdicts(world):
    _parity(world)
    cl = world.check()
    path = golive.write_markdown(cl, world.root)
    assert path == world.root / "docs" / "deployment" / "go_live_checklist.md"
    md = path.read_text()
    assert "- Date: 2026-11-20 12:00 UTC" in md and f"- Commit: `{SHA}`" in md
    assert "**NO GO**: 1 of 8 items fail." in md
    rows = [[c.strip() for c in ln.split(" | ")] for ln in md.splitlines()
            if ln.startswith("| ") and not ln.startswith("| Item")]
    assert [r[0].lstrip("| ") for r in rows] == list(golive.ITEMS)
    verdicts = {r[0].lstrip("| "): r[1] for r in rows}
    assert verdicts["staging parity"] == "**FAIL**" and verdicts["approvals"] == "ok"
    assert "FEATURE_INVENTORY_SYNC (staging false vs production true)" in md
    # Re-running replaces the document with the new verdict.
    world.edit("env/staging.env", "FEATURE_INVENTORY_SYNC=false", "FEATURE_INVENTORY_SYNC=true")
    golive.write_markdown(world.check(), world.root)
    assert "**GO**: every item passes." in path.read_text()


def test_gate_is_injectable_and_its_reasons_become_the_items_reason(world):
    @dataclasses.dataclass(frozen=True)
    class Closed:
        ok: bool = False
        rows: tuple = ()
        reasons: tuple = ("playwright playwright.json: 2 unexpected failures",)

    cl = world.check(gate=lambda settings, sha, now: Closed())
    assert [i.name for i in cl.failing] == ["evidence"]
    assert "2 unexpected failures" in cl.item("evidence").reason


# ---------------------------------------------------------------- pure judges

def _approval(role, by, sha=SHA, env="production"):
    return ApprovalRow(env=env, sha=sha, role=role, by=by, at=ts(NOW), note=None)


@pytest.mark.parametrize("approvals, ok", [
    ([_approval("product", "pat"), _approval("manager", "morgan")], True),
    ([_approval("product", "pat"), _approval("manager", "morgan", sha=SHA[:7])], True),       # abbreviated
    ([_approval("product", "pat"), _approval("manager", "morgan", sha=SHA[:6])], False),      # too short
    ([_approval("product", "pat"), _approval("manager", "morgan", env="staging")], False),
    ([_approval("product", "pat"), _approval("product", "sam")], False),
], ids=["both", "abbreviated-sha", "six-chars-is-not-a-sha", "other-env", "same-role-twice"])
def test_judge_approvals(approvals, ok):
    assert golive.judge_approvals(approvals, ("product", "manager"), "production", SHA).ok is ok


def test_no_required_roles_is_ok_and_says_so():
    item = golive.judge_approvals([], (), "production", SHA)
    assert item.ok and "none required" in item.evidence


def _drill(days, outcome="passed", env="staging", procedure="rollback"):
    at = ts(NOW - timedelta(days=days))
    return DrillRow(id=1, env=env, procedure=procedure, who="riley", started_at=at, finished_at=at + 60,
                    outcome=outcome, durations={}, run_id=None, note=None)


@pytest.mark.parametrize("drills, ok, fragment", [
    ([_drill(29)], True, "29 days ago"),
    ([_drill(31)], False, "31 days old"),
    ([_drill(2, "failed"), _drill(10)], True, "a later drill ended failed"),
    ([_drill(1, procedure="backup")], False, "never been exercised"),
    ([_drill(1, env="production", procedure="hotfix")], True, "hotfix drill on production"),
], ids=["fresh", "stale", "later-failure-noted", "other-procedure", "production-drill"])
def test_judge_drills(drills, ok, fragment):
    item = golive.judge_drills(golive.DrillFacts(("production", "staging"), tuple(drills)), NOW, 30)
    assert item.ok is ok
    assert fragment in item.evidence + item.reason


def test_rollback_triggers_from_the_shipped_production_settings():
    item = golive.judge_rollback_triggers(config.load("production", REPO))
    assert item.ok and "watch 300s" in item.evidence


@pytest.mark.parametrize("facts, ok, fragment", [
    (golive.BackupFacts("", "production", database="none"), True, "nothing to back up"),
    (golive.BackupFacts("b/production", "production", "x.dump", NOW + timedelta(hours=2), 1, verified_tables=3,
                        verified_rows=9), False, "in the future"),
    (golive.BackupFacts("b/production", "production", "x.dump", NOW - timedelta(hours=1), 1), False, "not verified"),
    (golive.BackupFacts("b/production", "production", "x.dump", NOW - timedelta(hours=24), 1, verified_tables=3,
                        verified_rows=9), True, "24h00m old"),
], ids=["no-database", "future", "unverified", "age-at-limit"])
def test_judge_backup(facts, ok, fragment):
    item = golive.judge_backup(facts, NOW, 24)
    assert item.ok is ok and fragment in item.evidence + item.reason
