"""Runbooks bound to tasks: commands found in markdown, checked against a real tasks.py,
and the "Last exercised" line stamped from a real SQLite ledger."""

from __future__ import annotations

import json
import shutil
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import runbooks as rb
from deploy.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- finding commands

@pytest.mark.parametrize("text, expected", [
    pytest.param("Run `invoke promote --to=staging --dry-run` first.",
                 [("promote", ("to", "dry-run"), ())], id="inline-span"),
    pytest.param("```sh\ninvoke rollback --env=production --yes\n```",
                 [("rollback", ("env", "yes"), ())], id="fenced-block"),
    pytest.param("```console\n$ invoke status --json\n```", [("status", ("json",), ())], id="console-prompt"),
    pytest.param("```\ninvoke lock.release --env=staging --force && invoke status\n```",
                 [("lock.release", ("env", "force"), ()), ("status", (), ())], id="and-chain"),
    pytest.param("```\nDEPLOY_WHO=me invoke approve --env production --role=product\n```",
                 [("approve", ("env", "role"), ())], id="env-prefix-and-spaced-value"),
    pytest.param("```\ninvoke rollback --env=production \\\n    --db=restore --yes\n```",
                 [("rollback", ("env", "db", "yes"), ())], id="line-continuation"),
    pytest.param("```\ninvoke db.backup --env=staging db.verify-backup --env=staging\n```",
                 [("db.backup", ("env",), ()), ("db.verify-backup", ("env",), ())], id="two-tasks-one-invoke"),
    pytest.param('`invoke log.blocker --env=production --text="it\'s down; db too"`',
                 [("log.blocker", ("env", "text"), ())], id="quoted-value-with-separator"),
    pytest.param("`invoke smoke staging`", [("smoke", (), ("staging",))], id="positional-value"),
    pytest.param("```\npip install invoke fabric\ninvoke --list\ninvoke <task> --help\n```", [],
                 id="not-a-task-command"),
    pytest.param("Plain prose: invoke promote --to=prod is not code.", [], id="prose-ignored"),
    pytest.param("```\n# invoke promote --to=nowhere\n```", [], id="shell-comment-ignored"),
])
def test_references_find_invoke_commands_in_markdown_code(text, expected):
    got = [(r.task, r.flags, r.args) for r in rb.references(text)]
    assert got == expected


def test_references_report_the_line_of_each_command():
    text = "# Title\n\nsee `invoke status`\n\n```sh\necho hi\ninvoke smoke --env=staging\n```\n"
    assert [(r.line, r.task) for r in rb.references(text)] == [(3, "status"), (7, "smoke")]


def test_workflow_run_lines_and_expressions_are_parsed():
    yml = textwrap.dedent("""\
        steps:
          - name: Promote (invoke promote)
            run: invoke promote --to=staging --sha ${{ github.sha }} --yes
          - run: |
              pip install -e .
              invoke evidence.collect --sha=${{ github.sha }} --files="$D/vitest.json"
        """)
    got = [(r.line, r.task, r.flags) for r in rb.workflow_references(yml)]
    assert got == [(2, "promote", ()), (3, "promote", ("to", "sha", "yes")),
                   (6, "evidence.collect", ("sha", "files"))]


# ---------------------------------------------------------------- the task surface

SMALL_TASKS = '''
from invoke import Collection, task

@task(help={"to": "where", "dry_run": "plan only"})
def promote(c, to, dry_run=False, no_rollback=False, watch=True):
    """Promote."""

@task(name="verify_backup", iterable=["files"])
def verify_backup(c, env, files=None):
    """Verify."""

@task
def status(c):
    """Status."""

@task
def reindex(c):
    """Internal: rebuilds a cache the other tasks use."""

ns = Collection(promote, status, reindex)
ns.add_collection(Collection("db", verify_backup))
'''


def _project(tmp_path: Path, tasks_py: str, runbooks: dict[str, str]) -> Path:
    (tmp_path / "tasks.py").write_text(tasks_py)
    d = tmp_path / rb.RUNBOOK_DIR
    d.mkdir(parents=True)
    for name, text in runbooks.items():
        (d / name).write_text(text)
    return tmp_path


def test_task_surface_reads_dotted_names_and_dashed_flags(tmp_path):
    root = _project(tmp_path, SMALL_TASKS, {})
    assert rb.task_surface(root) == {
        "promote": {"to", "dry-run", "no-rollback", "watch", "no-watch"},
        "status": set(),
        "reindex": set(),
        "db.verify-backup": {"env", "files"},
    }
    tasks = rb.tasks_of(rb.load_collection(root))
    assert rb.user_facing(tasks) == ["db.verify-backup", "promote", "status"]
    assert tasks["promote"].positional == ("to",)


def test_task_surface_of_the_repo_has_the_planned_promote_flags():
    surface = rb.task_surface(ROOT)
    assert {"to", "sha", "dry-run", "skip-shopify", "resume", "abort", "yes", "no-rollback"} <= surface["promote"]
    assert {"env", "force"} <= surface["lock.release"]


def test_a_broken_tasks_py_is_reported_not_raised_as_a_traceback(tmp_path):
    root = _project(tmp_path, "import no_such_module_here\n", {})
    with pytest.raises(rb.RunbookError, match="tasks.py failed to import: ModuleNotFoundError"):
        rb.task_surface(root)


# ---------------------------------------------------------------- check

def _all_runbooks(body: str) -> dict[str, str]:
    return {name: f"# {name}\n" for name in rb.RUNBOOKS} | {"deployment_staging.md": body}


def test_check_flags_a_user_facing_task_missing_from_every_runbook(tmp_path):
    root = _project(tmp_path, SMALL_TASKS, _all_runbooks(
        "Run `invoke promote --to=staging --dry-run`, then `invoke status`.\n"))
    report = rb.check(root)
    assert [(f.kind, f.name) for f in report.findings] == [("uncovered", "db.verify-backup")]
    assert not report.ok and report.exit_code == 1
    assert "db.verify-backup" in report.render()
    assert dict(report.coverage)["promote"] == ("deployment_staging.md",)


def test_check_passes_when_every_user_facing_task_is_named(tmp_path):
    root = _project(tmp_path, SMALL_TASKS, _all_runbooks(
        "```sh\ninvoke promote --to=staging --no-rollback\ninvoke status\n"
        "invoke db.verify-backup --env=staging --files=a.dump\n```\n"))
    report = rb.check(root)
    assert report.ok, report.render()
    assert report.render().endswith("all good.")


def test_check_names_a_missing_runbook(tmp_path):
    books = _all_runbooks("`invoke promote --to=x` `invoke status` `invoke db.verify-backup --env=x`")
    del books["prisma_staging_postgres.md"]
    report = rb.check(_project(tmp_path, SMALL_TASKS, books))
    assert [(f.kind, f.file) for f in report.findings] == [
        ("missing-runbook", "docs/runbooks/prisma_staging_postgres.md")]


def test_check_flags_short_flags_and_extra_positionals(tmp_path):
    root = _project(tmp_path, SMALL_TASKS, _all_runbooks(
        "`invoke promote --to=x -d` `invoke status now` `invoke db.verify-backup --env=x`\n"))
    got = [(f.kind, f.name) for f in rb.check(root).findings]
    assert got == [("short-flag", "promote -d"), ("unknown-flag", "status now")]


def _copy_repo(tmp_path: Path) -> Path:
    """The repo's real tasks.py, runbooks and workflows, in a scratch root."""
    shutil.copy(ROOT / "tasks.py", tmp_path / "tasks.py")
    shutil.copytree(ROOT / rb.RUNBOOK_DIR, tmp_path / rb.RUNBOOK_DIR)
    if (ROOT / rb.WORKFLOW_DIR).is_dir():
        shutil.copytree(ROOT / rb.WORKFLOW_DIR, tmp_path / rb.WORKFLOW_DIR)
    return tmp_path


def _new_findings(before: rb.RunbookReport, after: rb.RunbookReport) -> list[rb.Finding]:
    """Findings of `after` that `before` does not have (the repo may have its own, see below)."""
    return [f for f in after.findings if f not in set(before.findings)]


def _edit_first(path: Path, old: str, new: str) -> int:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    line = text[:text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1))
    return line


def test_check_catches_a_renamed_task_reference(tmp_path):
    root = _copy_repo(tmp_path)
    before = rb.check(root)
    line = _edit_first(root / rb.RUNBOOK_DIR / "rollback.md", "invoke hosts.releases", "invoke hosts.relases")
    new = _new_findings(before, rb.check(root))
    assert [(f.kind, f.where, f.name, f.suggestion) for f in new] == [
        ("unknown-task", f"docs/runbooks/rollback.md:{line}", "hosts.relases", "`hosts.releases`")]


def test_check_catches_a_task_renamed_in_tasks_py(tmp_path):
    """The other direction: the task is renamed, the runbooks still say the old name."""
    root = _copy_repo(tmp_path)
    before = rb.check(root)
    _edit_first(root / "tasks.py", '@task(name="release", iterable=["skip_host"]',
                '@task(name="unlock", iterable=["skip_host"]')
    new = _new_findings(before, rb.check(root))
    stale = [f for f in new if f.kind == "unknown-task"]
    assert stale and {f.name for f in stale} == {"lock.release"}
    expected_lines = {(r.file, r.line) for r in before.refs if r.task == "lock.release"}
    assert {(f.file, f.line) for f in stale} == expected_lines
    # the new name is in no runbook yet
    assert ("uncovered", "lock.unlock") in [(f.kind, f.name) for f in new]


def test_check_catches_an_unknown_flag_with_the_closest_real_one(tmp_path):
    root = _copy_repo(tmp_path)
    before = rb.check(root)
    line = _edit_first(root / rb.RUNBOOK_DIR / "rollback.md", "invoke rollback --env=production --dry-run",
                       "invoke rollback --env=production --dryrun")
    new = _new_findings(before, rb.check(root))
    assert [(f.kind, f.where, f.name, f.suggestion) for f in new] == [
        ("unknown-flag", f"docs/runbooks/rollback.md:{line}", "rollback --dryrun", "`--dry-run`")]


def test_the_repo_runbooks_name_only_real_tasks_and_cover_every_task():
    """The real thing: docs/runbooks/ and .github/workflows/ against tasks.py.

    Until every planned task exists in tasks.py this fails and its message is the table of
    what is missing (file:line, the name, the closest real name)."""
    report = rb.check(ROOT)
    assert report.ok, "\n" + report.render()


# ---------------------------------------------------------------- stamp

T0 = datetime(2026, 10, 21, 14, 3, 0, tzinfo=timezone.utc).timestamp()


def _ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path, url=f"sqlite:///{tmp_path / 'ledger.db'}")


def _stamp_root(tmp_path: Path) -> Path:
    d = tmp_path / rb.RUNBOOK_DIR
    d.mkdir(parents=True)
    for name in ("hotfix.md", "rollback.md"):
        shutil.copy(ROOT / rb.RUNBOOK_DIR / name, d / name)
    return tmp_path


def _stamped(root: Path, name: str) -> str:
    lines = [s for s in (root / rb.RUNBOOK_DIR / name).read_text().splitlines() if s.startswith("Last exercised:")]
    assert len(lines) == 1
    return lines[0]


def test_stamp_without_drills_says_never(tmp_path):
    root = _stamp_root(tmp_path)
    led = _ledger(tmp_path)
    rb.stamp(root, led)
    assert _stamped(root, "hotfix.md").startswith("Last exercised: never (no hotfix drill in the ledger")
    assert _stamped(root, "rollback.md").startswith("Last exercised: never (no rollback drill in the ledger")


def test_stamp_writes_the_latest_drill_from_a_real_ledger_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_WHO", "alice")
    root = _stamp_root(tmp_path)
    led = _ledger(tmp_path)
    hotfix_before = (root / rb.RUNBOOK_DIR / "hotfix.md").read_text()
    led.record_drill(env="staging", procedure="hotfix", started_at=T0 - 86400, finished_at=T0 - 86400 + 50,
                     outcome="failed", durations={"deploy": 40.0})
    led.record_drill(env="staging", procedure="hotfix", started_at=T0, finished_at=T0 + 58.5, outcome="passed",
                     durations={"deploy": 41.2, "detect": 3.1, "rollback": 12.04, "verify": 2.2})

    changed = rb.stamp(root, led)

    assert sorted(p.name for p in changed) == ["hotfix.md", "rollback.md"]
    hotfix = _stamped(root, "hotfix.md")
    assert hotfix == ("Last exercised: 2026-10-21 14:03 UTC on staging, passed (deploy 41.2s, detect 3.1s, "
                      "rollback 12.0s, verify 2.2s; total 58.5s), by alice. Source: the ledger (`invoke drills`).")
    # the hotfix drill forced a rollback, so it is the rollback runbook's latest exercise too
    assert _stamped(root, "rollback.md").startswith("Last exercised: 2026-10-21 14:03 UTC on staging, passed")
    assert _stamped(root, "rollback.md").endswith("(during a hotfix drill). Source: the ledger (`invoke drills`).")
    # only that line changed
    after = (root / rb.RUNBOOK_DIR / "hotfix.md").read_text()
    diff = [(a, b) for a, b in zip(hotfix_before.splitlines(), after.splitlines()) if a != b]
    assert len(diff) == 1 and len(hotfix_before.splitlines()) == len(after.splitlines())

    assert rb.stamp(root, led) == []          # idempotent: nothing to rewrite
    assert (root / rb.RUNBOOK_DIR / "hotfix.md").read_text() == after


def test_stamp_prefers_a_newer_rollback_drill_and_shows_a_failure_with_the_last_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_WHO", "bob")
    root = _stamp_root(tmp_path)
    led = _ledger(tmp_path)
    led.record_drill(env="staging", procedure="hotfix", started_at=T0, finished_at=T0 + 60, outcome="passed",
                     durations={"deploy": 40, "rollback": 10})
    led.record_drill(env="production", procedure="rollback", started_at=T0 + 3600, finished_at=T0 + 3630,
                     outcome="failed", durations={"rollback": 25, "verify": 5})
    rb.stamp(root, led)
    assert _stamped(root, "rollback.md") == (
        "Last exercised: 2026-10-21 15:03 UTC on production, failed (rollback 25.0s, verify 5.0s; total 30.0s), "
        "by bob; last passed: 2026-10-21 14:03 UTC on staging. Source: the ledger (`invoke drills`).")
    assert _stamped(root, "hotfix.md").startswith("Last exercised: 2026-10-21 14:03 UTC on staging, passed")


def test_stamp_refuses_two_stamp_lines_and_names_them(tmp_path):
    root = _stamp_root(tmp_path)
    p = root / rb.RUNBOOK_DIR / "hotfix.md"
    p.write_text(p.read_text() + "\nLast exercised: yesterday\n")
    with pytest.raises(rb.RunbookError, match=r"hotfix.md has 2 'Last exercised:' lines"):
        rb.stamp(root, _ledger(tmp_path))


def test_stamp_adds_the_line_under_the_title_when_missing():
    text = "# Hotfix\n\nStep one.\n"
    out = rb.restamp(text, "Last exercised: never.")
    assert out == "# Hotfix\n\nLast exercised: never.\n\nStep one.\n"


def test_describe_drill_reads_durations_as_the_ledger_stores_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_WHO", "carol")
    led = _ledger(tmp_path)
    led.record_drill(env="staging", procedure="rollback", started_at=T0, finished_at=T0 + 9, outcome="passed",
                     durations={"rollback": 7, "verify": 2})
    row = led.drills(procedure="rollback")[0]
    assert isinstance(row.durations, dict) and json.dumps(row.durations)
    assert rb.describe_drill(row) == ("2026-10-21 14:03 UTC on staging, passed (rollback 7.0s, verify 2.0s; "
                                      "total 9.0s), by carol")
