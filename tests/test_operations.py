"""Operations through the CLI: status board, deployment log entries, go-live checklist,
runbook stamps from drills."""

import json


def test_status_json_shows_release_lock_and_failed_runs(stage):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    run = stage.project.ledger().runs("staging")[0]
    stage.project.invoke("promote", "--to=local", "--sha=nope")  # a bad flag: fails before any run
    r = stage.project.invoke("status", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["env"]: row for row in json.loads(r.stdout)}
    st = rows["staging"]
    assert st["release"] == run.release_id and st["sha"] == run.sha[:12]
    assert st["shopify_version"] == run.release_id
    assert st["pending_migrations"] == 0 and st["lock"] is None
    assert rows["production"]["release"] is None
    table = stage.project.invoke("status")
    assert run.release_id in table.stdout and "free" in table.stdout


def test_blocker_and_readiness_are_appended_one_line_each(project):
    a = project.invoke("log.blocker", "--env=staging", "--text=Supabase staging is read-only\nuntil 14:00")
    b = project.invoke("log.readiness", "--env=production", "--text=go for Thursday | pending approvals")
    assert a.returncode == b.returncode == 0
    lines = [ln for ln in (project.root / "feedback/deployment.md").read_text().splitlines() if ln.startswith("- ")]
    assert len(lines) == 2
    assert "| blocker | staging |" in lines[0] and "read-only until 14:00" in lines[0]
    assert "| readiness | production |" in lines[1] and "go for Thursday / pending approvals" in lines[1]
    empty = project.invoke("log.blocker", "--env=staging")
    assert empty.returncode == 2 and "--text" in empty.stderr


def test_golive_check_fails_with_a_reason_per_item_and_writes_the_document(project):
    r = project.invoke("golive.check", "--env=production")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "NO GO" in r.stdout
    for item in ("evidence", "backup", "approvals", "parity"):
        assert item in r.stdout
    doc = (project.root / "docs/deployment/go_live_checklist.md").read_text()
    assert project.head[:12] in doc and "NO GO" in doc
    assert "golive | production | NO GO" in (project.root / "feedback/deployment.md").read_text()


def test_runbooks_stamp_writes_the_last_drill_into_the_runbooks(stage):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    (stage.project.root / "examples/app/README.md").write_text("candidate\n")
    stage.project.commit("candidate")
    stage.collect_evidence()
    assert stage.project.invoke("hotfix.drill", "--env=staging").returncode == 0
    r = stage.project.invoke("runbooks.stamp")
    assert r.returncode == 0 and "hotfix.md" in r.stdout, r.stderr
    for book in ("hotfix.md", "rollback.md"):
        line = next(ln for ln in (stage.project.root / "docs/runbooks" / book).read_text().splitlines()
                    if ln.startswith("Last exercised:"))
        assert "staging" in line and "passed" in line and "never" not in line
    again = stage.project.invoke("runbooks.stamp")
    assert "already current" in again.stdout
    check = stage.project.invoke("runbooks.check")
    assert check.returncode == 0, check.stdout


def test_bootstrap_sets_up_the_local_app_and_a_second_run_changes_nothing(project):
    first = project.invoke("bootstrap")
    assert first.returncode == 0, first.stdout + first.stderr
    env_file = project.root / "examples/app/.env"
    assert env_file.exists()
    before = env_file.read_bytes(), env_file.stat().st_mtime_ns
    second = project.invoke("bootstrap")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (env_file.read_bytes(), env_file.stat().st_mtime_ns) == before
    assert "done" in first.stdout and "unchanged" in second.stdout
    assert " done " not in second.stdout.replace("|", " ")
