"""Typed step facts as stored in the ledger: exact round trips, refusals, and the earlier
string-key format (a killed run of it is refused; a finished promotion of it is read)."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest

from deploy import facts
from deploy.engine import Console, Plan, Runner, Step
from deploy.errors import DeployError
from deploy.facts import (ArtifactFacts, BackupFacts, HostsReleaseFacts, MigrateFacts, PromotionRecord, ShopifyFacts)
from deploy.ledger import Ledger

OLD_STATE = {"artifact": {"path": "/a.tar.gz", "sha256": "f" * 64, "release_id": "r1", "git_sha": "a" * 40,
                          "built_at": "2026-01-01T00:00:00Z"},
             "backup": "/b/staging.dump", "migrations_before": ["20250101000000_init"],
             "shopify": {"version": "r1", "previous": "r0"}}


def test_every_step_fact_round_trips_equal():
    state: dict = {}
    for value in (ArtifactFacts("/a.tar.gz", "f" * 64, "r1", "a" * 40, "2026-01-01T00:00:00Z"),
                  BackupFacts(None), MigrateFacts(("m1", "m2")), ShopifyFacts("r1", None),
                  HostsReleaseFacts({"deploy@h1:22": "r0", "deploy@h2:22": None})):
        facts.put(state, value)
    assert facts.loads(facts.dumps_state(state)) == state


def test_a_killed_run_of_the_earlier_string_key_format_is_refused_clearly(tmp_path):
    led = Ledger.open(tmp_path)
    plan = Plan("promote", "t", [Step("build", "x", run=lambda c: "ok", undo=lambda c: "undone")],
                abort_cmd="invoke promote --to=t --abort")
    run = led.start_run(env="t", flow="promote", sha="a" * 40, steps=["build"], args={})
    with sqlite3.connect(tmp_path / ".deploy/ledger.db") as c:
        c.execute("UPDATE deploy_runs SET state = ? WHERE id = ?", (json.dumps(OLD_STATE), run))
    for verb in ("resume", "abort"):
        with pytest.raises(DeployError, match="recorded by an earlier toolkit version .*artifact, backup, "
                                              "migrations_before, shopify.*changed nothing") as e:
            getattr(Runner(led, Console(quiet=True)), verb)(plan, run)
        assert "lock.release --env=t --force" in e.value.hint
    assert led.run(run).status == "running"


def test_a_finished_promotion_of_the_earlier_format_is_still_read_for_rollback():
    old = PromotionRecord.of(SimpleNamespace(id="r", env="staging", release_id="r1", sha="a" * 40, state=OLD_STATE))
    assert (old.backup, old.migrations_before, old.shopify_previous, old.artifact_sha256) == \
        ("/b/staging.dump", ("20250101000000_init",), "r0", "f" * 64)
    state: dict = {}
    facts.put(state, BackupFacts("/b/new.dump"))
    facts.put(state, MigrateFacts(("m1",)))
    new = PromotionRecord.of(SimpleNamespace(id="s", env="staging", release_id="r2", sha="b" * 40, state=state))
    assert (new.backup, new.migrations_before, new.shopify_previous) == ("/b/new.dump", ("m1",), None)


def test_a_run_that_never_migrated_has_no_migrations_before():
    # None, not (): --db=down must refuse rather than undo "every migration not in an empty list".
    rec = PromotionRecord.of(SimpleNamespace(id="s", env="staging", release_id="r2", sha="b" * 40, state={}))
    assert rec.migrations_before is None


def test_a_stored_fact_missing_a_field_its_type_later_gained_is_read_and_refused_for_resume(project):
    """A run recorded before ArtifactFacts gained a required field: status (through the CLI)
    and the ledger still read it; resume and abort refuse it as an earlier version's state."""
    led = Ledger.open(project.root)
    run = led.start_run(env="t", flow="promote", sha="a" * 40, steps=["build"], args={})
    art = {facts.TAG: "ArtifactFacts", "path": "/a.tar.gz", "sha256": "f" * 64, "release_id": "r1",
           "git_sha": "a" * 40}  # no built_at
    with sqlite3.connect(project.root / ".deploy/ledger.db") as c:
        c.execute("UPDATE deploy_runs SET state = ? WHERE id = ?", (json.dumps({"ArtifactFacts": art}), run))
    assert led.run(run).state == {"ArtifactFacts": art}
    r = project.invoke("status")
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    plan = Plan("promote", "t", [Step("build", "x", run=lambda c: "ok", undo=lambda c: "undone")])
    for verb in ("resume", "abort"):
        with pytest.raises(DeployError, match="recorded by an earlier toolkit version .*ArtifactFacts"):
            getattr(Runner(led, Console(quiet=True)), verb)(plan, run)
    assert led.run(run).status == "running"
