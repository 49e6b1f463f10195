"""Output for people and programs: Invoke's own flags, streamed children, colour, tables
that fit, `--json` shapes, exit codes, and the messages a new user sees first.

Through the real CLI (Project.invoke) where the behaviour is wiring; the table fitting and
the JSON shapes also as data tests on result values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import display, errors, proc
from deploy.testing.project import REPO

ESC = "\x1b["


def lines_longer_than(text: str, width: int) -> list[str]:
    return [ln for ln in text.splitlines() if len(ln) > width]


# ----------------------------------------------------------------------------- Invoke's --dry / --echo / --hide

def test_invoke_dry_on_promote_is_a_dry_run_and_changes_nothing(project):
    r = project.invoke("--dry", "promote", "--to=local")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dry run: nothing was changed." in r.stdout
    for step in ("preflight", "build", "migrate", "release"):
        assert step in r.stdout
    assert not (project.root / ".deploy").exists()


@pytest.mark.parametrize("args, leftover", [
    pytest.param(("db.migrate", "--env=local"), "examples/app/prisma/dev.sqlite", id="db.migrate"),
    pytest.param(("evidence.collect", "--sha=HEAD"), "evidence/manifest.json", id="evidence.collect"),
    pytest.param(("app.start", "--env=local"), ".deploy", id="app.start"),
])
def test_invoke_dry_refuses_a_task_that_changes_things_and_has_no_dry_run(project, args, leftover):
    r = project.invoke("--dry", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"invoke --dry: `{args[0]}` changes things and has no dry run, so it was not run." in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project.root / leftover).exists()


@pytest.mark.parametrize("flag", ["--resume", "--abort"])
def test_invoke_dry_with_resume_or_abort_is_refused(project, flag):
    r = project.invoke("--dry", "promote", "--to=local", flag)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"cannot go with {flag}" in r.stderr
    assert not (project.root / ".deploy").exists()


def test_invoke_dry_runs_a_read_only_task(project):
    r = project.invoke("--dry", "db.status", "--env=local", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["pending"] == 3


def test_every_task_has_a_dry_decision():
    """--dry-run, read-only, or refused: the read-only set is exactly what README lists."""
    from deploy.cli import task_name
    from deploy.testing.project import all_tasks

    read_only = set()
    for name, t in all_tasks().items():
        inner = getattr(t.body, "__wrapped__", t.body)
        assert task_name(inner) == name, (task_name(inner), name)
        if getattr(inner, "reads_only", False):
            read_only.add(name)
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Invoke's own flags", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z.\-]+)`", section.split("run as usual")[0].split("Read-only tasks")[1]))
    assert read_only == listed


def test_echo_prints_each_command_redacted_and_hide_silences_the_build(project):
    r = project.invoke("--echo", "promote", "--to=local",
                       extra_env={"CI": "1", "SESSION_SECRET": "s3cr3t-value-never-shown"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "+ npm run build" in r.stderr
    assert "+ git " in r.stderr
    # the build's own lines, streamed as they came, plainly prefixed (no terminal here)
    assert "  build | > node scripts/build.mjs" in r.stderr
    assert ESC not in r.stdout + r.stderr            # no colour, no cursor moves without a terminal
    assert "s3cr3t-value-never-shown" not in r.stdout + r.stderr

    hidden = project.invoke("--hide=both", "promote", "--to=local")
    assert hidden.returncode == 0, hidden.stdout + hidden.stderr
    assert "build |" not in hidden.stderr and "+ " not in hidden.stderr


# ----------------------------------------------------------------------------- streaming, colour (terminal)

def _in_pty(argv: list[str], env: dict, cwd: Path, timeout: float = 120) -> str:
    """Run argv with a pseudo-terminal as stdin/stdout/stderr; everything it wrote."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace")


def _pty_env(project, **extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "GITHUB_STEP_SUMMARY")}
    return {**e, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), "COLUMNS": "100", "TERM": "xterm",
            **extra}


def test_on_a_terminal_the_build_is_a_compact_tail_and_status_words_have_colour(project):
    out = _in_pty([sys.executable, "-m", "invoke", "-r", str(REPO), "promote", "--to=local"],
                  _pty_env(project), project.root)
    assert "succeeded in" in out, out[-2000:]
    assert "build | > node scripts/build.mjs" in out
    assert "\x1b[1A\x1b[2K" in out                   # the tail is redrawn in place and erased
    assert "\x1b[32mdone" in out                      # colour on a terminal
    assert "  build | " not in out.split("succeeded in")[1]   # the tail is gone when the build ends


def test_no_color_turns_colour_off_on_a_terminal(project):
    out = _in_pty([sys.executable, "-m", "invoke", "-r", str(REPO), "promote"],
                  _pty_env(project, NO_COLOR="1"), project.root)
    assert "No environment given" in out
    assert ESC not in out
    coloured = _in_pty([sys.executable, "-m", "invoke", "-r", str(REPO), "promote"], _pty_env(project), project.root)
    assert "\x1b[1;31merror:" in coloured


def test_streamed_lines_are_redacted_cleaned_and_shown_plainly_off_a_terminal(capfd):
    from deploy.redact import Secret

    secret = Secret("tok-1234567890-abcdef")
    code = ("import os,sys\nprint('\\x1b[31mred\\x1b[0m line')\nprint('token', os.environ['T'])\n"
            "print('to stderr', file=sys.stderr)\nprint('\\t100%\\x07 done')")
    r = proc.run([sys.executable, "-c", code], env={"T": secret}, stream="npm")
    shown = capfd.readouterr().err
    assert r.ok and "tok-1234567890-abcdef" in r.stdout       # captured exactly, for the caller
    assert "  npm | red line" in shown
    assert "  npm | token ***" in shown and "tok-1234567890" not in shown
    assert "  npm | to stderr" in shown
    assert "  npm |     100% done" in shown and "\x07" not in shown        # tabs as spaces, no bell


def test_a_streamed_child_that_times_out_is_killed_with_its_output_kept(capfd):
    r = proc.run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                 stream="build", timeout=1)
    assert r.returncode == 124 and "started" in r.stdout and "timed out" in r.stderr


# ----------------------------------------------------------------------------- tables that fit

GATE_HEADERS = ["kind", "file", "counts", "scores", "threshold", "verdict", "reasons"]
LONG_REASON = ("3 failed tests, at most 0 allowed: checkout > applies the discount code to the order total; "
               "orders > lists the newest first")


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_a_table_fits_the_width_and_keeps_every_reason(width):
    rows = [["vitest\n2.1.8 (vitest-json)", "reports/vitest.json", "40 tests: 37 passed, 3 failed", "",
             "failed <= 0, skipped <= 10%, no flaky", "FAIL", "- " + LONG_REASON],
            ["lighthouse", ".lighthouseci\nhttp://127.0.0.1:3000/", "", "performance 0.71\nseo 0.92",
             "performance >= 0.90", "FAIL", "- performance 0.71 is below 0.90"]]
    text = display.fit(rows, GATE_HEADERS, width, fmt="simple_grid", optional=("threshold", "scores", "counts"))
    assert not lines_longer_than(text, width), text
    flat = " ".join(text.replace("│", " ").split())
    for word in LONG_REASON.split() + ["0.71", "below"]:
        assert word in flat, word
    if width >= 200:
        assert "not shown" not in text
    else:
        assert "not shown to fit" in text


def test_the_gate_table_fits_80_columns_with_every_reason(project):
    r = project.invoke("gate", "--env=staging", extra_env={"COLUMNS": "80"})
    assert r.returncode == 5, r.stdout + r.stderr
    table = "\n".join(ln for ln in r.stdout.splitlines() if not ln.startswith("note: evidence folder"))
    assert not lines_longer_than(table, 80), r.stdout
    flat = " ".join(r.stdout.replace("│", " ").split())
    for kind in ("vitest", "playwright", "lighthouse"):
        assert f"no {kind} evidence was collected, and gate.required lists it" in flat
    assert "--files=<report>" in flat and "<files>" not in r.stdout   # the real flag


def test_the_status_table_fits_80_columns(project):
    r = project.invoke("status", extra_env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert not lines_longer_than(r.stdout, 80), r.stdout
    assert "staging" in r.stdout and "production" in r.stdout


# ----------------------------------------------------------------------------- JSON

def test_status_json_has_stable_types(project):
    r = project.invoke("status", "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["env"]: x for x in json.loads(r.stdout)}
    from deploy.flows.shapes import STATUS_KEYS

    for row in rows.values():
        assert tuple(row) == STATUS_KEYS
        assert row["pending_migrations"] is None or isinstance(row["pending_migrations"], int)
        assert isinstance(row["overdue_secrets"], list) and isinstance(row["failed_runs_24h"], int)
    assert rows["local"]["pending_migrations"] == 3 and rows["local"]["pending_migrations_error"] is None
    assert project.invoke("promote", "--to=local").returncode == 0
    live = {x["env"]: x for x in json.loads(project.invoke("status", "--json").stdout)}["local"]
    assert live["pending_migrations"] == 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", live["deployed_at"])
    assert isinstance(live["release"], str) and len(live["sha"]) == 12
    assert rows["staging"]["pending_migrations"] is None
    assert "DATABASE_URL" in rows["staging"]["pending_migrations_error"]


def test_gate_json_lists_every_reason(project):
    r = project.invoke("gate", "--env=staging", "--json")
    assert r.returncode == 5
    v = json.loads(r.stdout)
    assert v["open"] is False and v["sha"] == project.head and v["checks"] == 4 and v["passed"] == 0
    assert all(isinstance(row["reasons"], list) and row["reasons"] for row in v["rows"])
    assert {row["verdict"] for row in v["rows"]} == {"error", "missing"}
    manifest = next(row for row in v["rows"] if row["kind"] == "manifest")
    assert f"`invoke evidence.collect --sha={project.head} --files=<report>`" in manifest["reasons"][0]


def test_read_only_tasks_print_json(project):
    env = project.invoke("env.check", "--env=local", "--json")
    e = json.loads(env.stdout)
    assert env.returncode == 0 and e["ok"] is True and isinstance(e["variables"], list)
    assert set(e["variables"][0]) == {"variable", "status", "error", "detail"}

    bad = project.invoke("env.check", "--env=staging", "--json")
    b = json.loads(bad.stdout)
    assert bad.returncode == 2 and b["ok"] is False and b["errors"] >= 1

    db = project.invoke("db.status", "--env=local", "--json")
    d = json.loads(db.stdout)
    assert d["pending"] == 3 and d["applied"] == 0 and d["migrations"][0]["applied_at"] is None

    locks = project.invoke("lock.status", "--json")
    assert json.loads(locks.stdout) == {"locks": [], "host_locks": []}

    go = project.invoke("golive.check", "--env=staging", "--json")
    g = json.loads(go.stdout)
    assert go.returncode == 1 and g["go"] is False and g["env"] == "staging"
    assert all(set(i) == {"name", "verdict", "ok", "evidence", "reason"} for i in g["items"])
    assert all(isinstance(i["reason"], str) for i in g["items"] if not i["ok"])


def test_hosts_and_shopify_json_shapes():
    from deploy.flows import shapes
    from deploy.hosts import HostCheck
    from deploy.shopify import AppVersion
    from deploy.targets import PlaceLock

    h = shapes.hosts_check([HostCheck("web1", True, True, 2048, "20260101-abc"),
                            HostCheck("web2", False, error="cannot reach web2:22")], "staging")
    assert h == {"env": "staging", "ok": False, "hosts": [
        {"host": "web1", "ok": True, "writable": True, "free_mb": 2048, "current": "20260101-abc", "error": None},
        {"host": "web2", "ok": False, "writable": False, "free_mb": None, "current": None,
         "error": "cannot reach web2:22"}]}
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    v = shapes.shopify_versions([AppVersion("r-2", "active", at, "ci", "release r-2"),
                                 AppVersion(None, "inactive", None)], "staging")
    assert v["versions"] == [
        {"version_tag": "r-2", "status": "active", "active": True, "created_at": "2026-01-02T03:04:05Z",
         "created_by": "ci", "message": "release r-2"},
        {"version_tag": None, "status": "inactive", "active": False, "created_at": None, "created_by": None,
         "message": None}]
    hl = shapes.lock_status([], [PlaceLock("web1", "ci@runner", "run1", at, "r-2")])
    assert hl["host_locks"] == [{"host": "web1", "holder": "ci@runner", "run_id": "run1",
                                 "acquired_at": "2026-01-02T03:04:05Z", "release": "r-2"}]
    json.dumps(h), json.dumps(v), json.dumps(hl)


def test_readme_documents_the_json_of_every_read_only_task():
    readme = (REPO / "README.md").read_text().split("## JSON output", 1)[1].split("\n## ", 1)[0]
    for task in ("status", "gate", "db.status", "env.check", "hosts.check", "shopify.versions", "lock.status",
                 "golive.check"):
        assert f"| `{task} " in readme, task


# ----------------------------------------------------------------------------- exit codes

def test_readme_exit_code_table_matches_errors_py():
    readme = (REPO / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)): m.group(2).strip() for m in re.finditer(r"^\| (\d+) \| ([^|]+) \|", readme, re.M)}
    assert set(rows) == set(errors.EXIT_CODES)
    classes = {c.__name__: c.exit_code for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.DeployError)}
    for name, code in classes.items():
        assert code in rows, name
        if "exit_code" in vars(getattr(errors, name)):
            assert rows[code] == name, (code, rows[code], name)


@pytest.mark.parametrize("task", ["promote", "rollback"])
def test_help_of_the_main_tasks_lists_the_exit_codes(task):
    r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), task, "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for code in errors.EXIT_CODES:
        assert f"{code} " in text.split("Exit codes:")[1], code


# ----------------------------------------------------------------------------- first messages

def test_promote_without_to_names_the_to_flag(project):
    r = project.invoke("promote")
    assert r.returncode == 2
    assert "--to is required" in r.stderr and "Pass --to=NAME" in r.stderr and "--env" not in r.stderr
    assert "local" in r.stderr and "staging" in r.stderr


def test_a_failed_staging_preflight_prints_its_table_once_and_changes_nothing_tracked(project):
    log = (project.root / "feedback" / "deployment.md").read_text()
    r = project.invoke("promote", "--to=staging", "--yes", extra_env={"COLUMNS": "100"})
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "Step preflight failed, and nothing had been changed yet" in r.stderr
    assert "every completed step was undone" not in out
    assert out.count("env.check staging found problems") == 2      # progress line (first line) + error
    assert len(re.findall(r"^\|?\s*variable\s", out, re.M)) == 1, out  # the table itself: once
    assert not lines_longer_than(r.stdout, 300)
    assert (project.root / "feedback" / "deployment.md").read_text() == log
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project.root,
                          capture_output=True, text=True).stdout == ""


def test_a_rolled_back_promotion_says_how_many_changes_were_undone(project):
    assert project.invoke("promote", "--to=local").returncode == 0
    server = project.root / "examples/app/server.mjs"
    server.write_text(server.read_text().replace("/version", "/version-moved"))   # smoke will fail
    project.commit("break /version")
    r = project.invoke("promote", "--to=local")
    assert r.returncode == 1, r.stdout + r.stderr
    led = project.ledger()
    run = led.runs("local")[0]
    undone = [s.name for s in led.steps(run.id) if s.undo_status == "undone"]
    assert "release" in undone
    assert f"Step smoke failed, and the {len(undone)} step(s) that had changed something were undone" in r.stderr


def test_a_run_that_failed_without_a_step_says_so():
    from deploy.engine import Outcome
    from deploy.flows.common import fail_if_not_ok

    err = errors.DeployError("Abort of run r1 could not undo: release: host gone", "Run the same --abort again.")
    with pytest.raises(errors.DeployError) as e:
        fail_if_not_ok(Outcome("r1", "failed", err, None, 1.0, {}))
    assert "Step ?" not in e.value.message
    assert e.value.message.startswith("Run r1 did not finish (failed):\nAbort of run r1")


def test_a_missing_shopify_token_names_the_environment_plainly(project):
    from deploy import config, shopify

    s = config.load("staging", project.root)
    with pytest.raises(errors.SettingsError) as e:
        shopify.auth_env(s, {})
    assert "the app configuration of the staging environment" in e.value.message
    assert "'s app" not in e.value.message


def test_hints_name_the_real_environment_instead_of_a_placeholder(project):
    r = project.invoke("db.restore", "--env=local", "--file=missing.dump", "--yes")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "<env>" not in r.stderr
    assert "invoke db.backup --env=local" in r.stderr


def test_the_shopify_cli_streams_its_lines_with_the_token_masked(shopify_cli, capfd):
    from deploy import shopify

    shopify_cli.seed("r1", "r2")
    s = shopify_cli.settings("staging")
    shopify.deploy(s, "r3")
    shown = capfd.readouterr().err
    assert "  shopify | " in shown and "r3" in shown            # the deploy's own lines, as they came
    assert "versionTag" not in shown                            # the JSON listing is read, not shown

    shopify_cli.fail_next("deploy", "leak_token")
    with pytest.raises(errors.ShopifyFailed):
        shopify.deploy(s, "r4")
    shown = capfd.readouterr().err
    assert "  shopify | " in shown
    assert shopify_cli.token not in shown and "***" in shown


def test_a_streamed_child_whose_grandchild_keeps_the_pipe_open_still_returns(capfd):
    """The grandchild leaves the process group and sleeps for ten minutes holding the pipes:
    the run returns when its child exits (were it to wait for the pipes, this test would hang)."""
    import signal

    code = ("import subprocess, sys; g = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); "
            "time.sleep(600)']); print('grandchild', g.pid, flush=True)")
    r = proc.run([sys.executable, "-c", code], stream="build")
    pid = int(r.stdout.split()[1])
    try:
        assert r.ok and r.stdout.startswith("grandchild ")
    finally:
        os.kill(pid, signal.SIGKILL)


def test_empty_optional_and_reason_columns_are_left_out_of_a_fitted_table():
    rows = [["vitest", "vitest.json", "", "PASS", ""], ["playwright", "playwright.json", "", "PASS", ""]]
    text = display.fit(rows, ["kind", "file", "scores", "verdict", "reasons"], 80, optional=("scores",),
                       wide=("reasons",))
    assert text.splitlines()[0].split() == ["kind", "file", "verdict"]
    assert "not shown" not in text


# ----------------------------------------------------------------------------- narrow terminals (issue 22 #9)

STATUS_HEADERS = ("env", "release", "sha", "deployed (UTC)", "by", "shopify", "pending migr.", "lock", "last drill",
                  "overdue secrets", "failed 24h")
STATUS_OPTIONAL = ("by", "deployed (UTC)", "last drill", "shopify", "failed 24h", "sha")


@pytest.mark.parametrize("width, envs", [(60, ("local", "staging", "production")),
                                         (56, ("production", "preview-eu", "qa")),
                                         (66, ("local", "production-eu", "staging"))],
                         ids=["60-columns-three-envs", "56-columns-other-names", "66-columns-long-name"])
def test_status_shaped_tables_keep_short_words_whole_and_fit_the_width(width, envs):
    rows = [[env, "20261207085718-ec4e8f9", "ec4e8f9a1b2c", "2026-12-07 08:57", "alice", "v12", "?",
             "held by alice@ci-7 since 08:55", "2026-12-01 10:00 hotfix passed", "SESSION_SECRET, SHOPIFY_API_SECRET",
             "0"] for env in envs]
    text = display.fit(rows, STATUS_HEADERS, width, optional=STATUS_OPTIONAL)
    assert not lines_longer_than(text, width), text
    tokens = set(text.split())
    for env in envs:
        assert env in tokens, f"{env!r} was cut at {width} columns:\n{text}"
    for word in ("held", "since", "08:55", "pending", "migr.", "overdue", "secrets"):
        assert word in tokens or word + "," in tokens, f"{word!r} was cut:\n{text}"


def test_status_at_60_columns_keeps_words_whole_and_fits_its_notes(project):
    r = project.invoke("status", extra_env={"COLUMNS": "60", "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x"})
    text = r.stdout
    assert not lines_longer_than(text, 60), text
    for env in ("local", "staging", "production"):
        if (project.root / f"env/{env}.toml").exists():
            assert re.search(rf"(^|\s){env}(\s|$)", text, re.M), f"{env} cut:\n{text}"


@pytest.mark.parametrize("bad", ['[environment]\nkind = "remot"\n', "not toml at all = = \n", '[nosuch]\nx = 1\n'],
                         ids=["bad-value", "not-toml", "unknown-section"])
def test_status_with_an_invalid_settings_file_shows_the_others_and_exits_2(project, bad):
    envs = sorted(p.stem for p in (project.root / "env").glob("*.toml") if p.stem != "variables")
    victim = "staging" if "staging" in envs else envs[-1]
    (project.root / f"env/{victim}.toml").write_text(bad)
    for args in (("status",), ("status", "--json")):
        r = project.invoke(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr and victim in r.stderr, r.stderr
        for other in envs:
            if other != victim:
                assert other in r.stdout, r.stdout


@pytest.mark.parametrize("rows", [
    [(1, "preflight", "settings, variables", "-"), (2, "build", "pack once", "yes")],
    [(9, "a", "x" * 90, "keep additive migrations; else restore"), (10, "record", "ledger row", "-")],
    [(1, "build", "first line\nsecond, longer line", "-"), (2, "s", "", "undo\nit")],
    [(1, "step", "  padded  ", " - ")],
    [],
], ids=["short-rows", "a-wide-cell-and-a-two-digit-number", "cells-of-several-lines", "padding-stripped", "no-rows"])
def test_the_plans_table_draws_as_tabulates_simple_format(rows):
    """plain_table (the dry run's table, drawn without importing tabulate) matches tabulate's
    "simple" format line for line, trailing spaces aside."""
    from tabulate import tabulate

    headers = ("#", "step", "what it does", "undo")
    want = [line.rstrip() for line in tabulate(rows, headers=headers, tablefmt="simple").splitlines()]
    assert display.plain_table(rows, headers).splitlines() == want
