"""`invoke hotfix.drill` and `invoke drills` on the staging-like test environment."""

import json


def test_hotfix_drill_exercises_deploy_and_rollback_and_records_every_phase(stage):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    led = stage.project.ledger()
    baseline = led.live_release("staging").release_id
    (stage.project.root / "examples/app/README.md").write_text("hotfix candidate\n")
    stage.project.commit("hotfix candidate")
    stage.collect_evidence()
    r = stage.project.invoke("hotfix.drill", "--env=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    drills = {d.procedure: d for d in led.drills(env="staging")}
    hot = drills["hotfix"]
    assert hot.outcome == "passed"
    assert {"baseline", "deploy", "detect", "rollback", "verify", "total"} <= set(hot.durations)
    assert hot.durations["deploy"] > 0 and hot.durations["rollback"] > 0
    assert drills["rollback"].outcome == "passed"
    # the environment is back on the baseline, proven by HTTP
    assert stage.versions() == [baseline] * 2 and stage.shopify.active() == baseline
    assert "drill | staging | passed" in (stage.project.root / "feedback/deployment.md").read_text()
    listing = stage.project.invoke("drills", "--days=30")
    assert listing.returncode == 0 and "hotfix" in listing.stdout and "NOT EXERCISED" not in listing.stdout


def test_drills_flags_procedures_never_exercised(project):
    r = project.invoke("drills")
    assert r.returncode == 1
    assert "NOT EXERCISED: no passed hotfix drill" in r.stdout and "rollback" in r.stdout


def test_drill_refuses_production(project):
    r = project.invoke("hotfix.drill", "--env=production")
    assert r.returncode == 2 and "protected" in r.stderr and "Traceback" not in r.stderr
