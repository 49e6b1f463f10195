"""`invoke promote --to=production`: only what staging proved, approved, and the same artifact."""

import shutil

import pytest

from deploy.facts import ArtifactFacts, get


def prod(production, *args, db=True):
    env = {"DATABASE_URL": production.db_url, "DIRECT_URL": production.db_url} if db else {"DIRECT_URL": ""}
    return production.stage.project.invoke("promote", "--to=production", *args, extra_env=env)


def staging_ok(stage):
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    return stage.project.ledger().runs("staging")[0]


APPROVERS = {"product": "pat", "manager": "sam"}   # each required role its own person


def approve(stage, role, by=None):
    by = by or APPROVERS.get(role, "lee")
    r = stage.project.invoke("approve", "--env=production", f"--role={role}", f"--by={by}")
    assert r.returncode == 0, r.stderr


def test_refuses_a_sha_staging_never_passed(production):
    stage = production.stage
    stage.collect_evidence()
    r = prod(production, "--yes")
    assert r.returncode == 6 and "Traceback" not in r.stderr
    assert "no succeeded staging promotion" in r.stderr
    assert stage.project.ledger().runs("production")[0].failed_step == "approvals"
    assert not any((h.root / "srv/occ-prod/current").exists() for h in stage.hosts)


def test_refuses_an_unapproved_sha_and_names_the_missing_role(production):
    stage = production.stage
    staging_ok(stage)
    r = prod(production, "--yes")
    assert r.returncode == 6 and "product, manager" in r.stderr
    approve(stage, "product")
    r = prod(production, "--yes")
    assert r.returncode == 6 and "role(s) manager" in r.stderr and "invoke approve" in r.stderr


def test_asks_for_confirmation_and_refuses_without_a_terminal(production):
    stage = production.stage
    staging_ok(stage)
    approve(stage, "product")
    approve(stage, "manager")
    r = prod(production)
    assert r.returncode == 7 and "--yes" in r.stderr
    assert "approvals" in r.stdout and "golive" not in r.stdout  # the plan was shown first
    assert stage.project.ledger().runs("production") == []


def test_refuses_an_artifact_other_than_the_one_staging_tested(production):
    stage = production.stage
    build = stage.project.root / "examples/app/scripts/build.mjs"
    assert build.exists()
    # A build that is not reproducible: every run writes a fresh nonce into the output.
    build.write_text(build.read_text() + "\nimport { randomBytes as _rb } from 'node:crypto';\n"
                     "import { writeFileSync as _wf } from 'node:fs';\n"
                     "_wf(new URL('../build/nonce.txt', import.meta.url), _rb(8).toString('hex'));\n")
    stage.project.commit("a non-reproducible build")
    staging_ok(stage)
    approve(stage, "product")
    approve(stage, "manager")
    shutil.rmtree(stage.project.root / ".deploy/artifacts")  # a fresh runner without staging's artifact
    r = prod(production, "--yes")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "production must get exactly what staging proved" in r.stdout + r.stderr
    run = stage.project.ledger().runs("production")[0]
    assert run.failed_step == "build"
    assert not any((h.root / "srv/occ-prod/current").exists() for h in stage.hosts)


def test_promotes_the_artifact_staging_proved(production):
    stage = production.stage
    staged = staging_ok(stage)
    approve(stage, "product", "pat")
    approve(stage, "manager", "sam")
    r = prod(production, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    led = stage.project.ledger()
    run = led.runs("production")[0]
    assert get(run.state, ArtifactFacts).sha256 == get(staged.state, ArtifactFacts).sha256
    assert {s.name: s.result for s in led.steps(run.id)}["build"].startswith("reused")
    assert production.versions() == [run.release_id] * 2
    assert stage.versions() == [staged.release_id] * 2  # staging untouched
    log = (stage.project.root / "feedback/deployment.md").read_text()
    assert "approval | production | approved as manager" in log and "promote | production | succeeded" in log


def test_go_live_checklist_gates_the_promotion_when_required(production):
    stage = production.stage
    cfg = stage.project.root / "env/production.toml"
    cfg.write_text(cfg.read_text().replace("protected = true", "protected = true\ngolive_required = true"))
    stage.project.commit("production requires the go-live checklist")
    staging_ok(stage)
    approve(stage, "product")
    approve(stage, "manager")
    r = prod(production, "--yes")
    assert r.returncode == 6 and "Traceback" not in r.stderr
    assert "go-live checklist is not green" in r.stderr
    led = stage.project.ledger()
    run = led.runs("production")[0]
    assert run.failed_step == "golive"
    steps = {s.name: s.status for s in led.steps(run.id)}
    assert steps["build"] == steps["release"] == "pending"
