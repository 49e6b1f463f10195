"""The reliability report: run the reliability suite, read its JUnit XML, publish the
figures in docs/reliability.md (`invoke reliability.report`).

The suite is ordinary pytest: tests/test_kill_points.py, tests/test_secret_leaks.py and
tests/test_reliability_*.py. Its outcome per test case is read from pytest's own
`--junitxml` output (pytest's junitxml.py: a `<skipped type="pytest.xfail">` child marks
an expected failure, `<failure>`/`<error>` a real one), so the figures are counted from
what ran, never typed in.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deploy import proc
from deploy.errors import DeployError

SUITE = ("tests/test_kill_points.py", "tests/test_secret_leaks.py", "tests/test_reliability_concurrency.py",
         "tests/test_reliability_faults.py", "tests/test_reliability_hostile.py", "tests/test_reliability_fuzz.py",
         "tests/test_reliability_remote.py", "tests/test_reliability_attacks_db.py",
         "tests/test_reliability_attacks_children.py", "tests/test_reliability_attacks_engine.py",
         "tests/test_reliability_trust_data.py", "tests/test_reliability_trust_rights.py",
         "tests/test_reliability_trust_liveness.py", "tests/test_reliability_trust_rollback.py",
         "tests/test_reliability_trust_supervisor.py", "tests/test_dotenv_dialect.py",
         "tests/test_reliability_trust_build.py", "tests/test_reliability_attacks_fence.py")
DOC = "docs/reliability.md"


@dataclass(frozen=True)
class Case:
    file: str          # tests/test_x.py
    name: str          # test name with its parameter id
    outcome: str       # passed | failed | xfailed | skipped
    message: str = ""

    @property
    def param(self) -> str:
        m = re.search(r"\[(.*)\]$", self.name)
        return m.group(1) if m else ""


@dataclass(frozen=True)
class Tally:
    passed: int = 0
    failed: int = 0
    xfailed: int = 0
    skipped: int = 0
    known: tuple[str, ...] = ()      # reasons of the expected failures

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.xfailed + self.skipped

    def line(self) -> str:
        parts = [f"{self.passed}/{self.total} passed"]
        if self.xfailed:
            parts.append(f"{self.xfailed} known failure(s)")
        if self.failed:
            parts.append(f"{self.failed} FAILED")
        if self.skipped:
            parts.append(f"{self.skipped} skipped")
        return ", ".join(parts)


@dataclass(frozen=True)
class Figures:
    kill_resume: Tally
    kill_abort: Tally
    concurrency: dict[str, Tally]
    faults: dict[str, Tally]
    hostile_corpus: Tally
    fuzz: Tally
    fuzz_examples: int
    leak_scenarios: int
    leaks_found: int
    remote: Tally
    all_cases: Tally
    findings: tuple[str, ...] = field(default=())
    db_attacks: Tally = field(default_factory=Tally)
    attacks: tuple[tuple[str, Tally], ...] = field(default=())   # one row per attack case below
    trust: tuple[tuple[str, Tally], ...] = field(default=())     # one row per case of the second attack


E, C, D = ("test_reliability_attacks_engine.py", "test_reliability_attacks_children.py",
           "test_reliability_attacks_db.py")
# The attacks on a staging promotion (redacted state, takeovers, leaks to children, ...), case
# by case: (what, [(file, test name prefix)]). Each row counts the tests that prove the case.
ATTACKS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("1 redaction must not corrupt stored run state", (
        (E, "test_short_secret_value_does_not_corrupt"), (E, "test_a_secret_in_run_state_is_refused"),
        (E, "test_step_facts_are_stored_exactly"), (E, "test_a_plain_key_in_run_state_is_refused"))),
    ("2 --abort never takes over a live run on another machine", (
        (E, "test_abort_never_takes_over_a_lock_held_on_another_machine"),)),
    ("3 no secret reaches a child process or the artifact", (
        (C, "test_build_that_dumps_process_env"), (C, "test_shopify_cli_gets_its_token"),
        (C, "test_hooks_get_the_release_variables"), (C, "test_hook_env_naming_a_secret"))),
    ("4 single-primitive tasks take the environment's lock", (
        (E, "test_single_primitive_tasks_refuse"),)),
    ("5 the host lock lasts until the run ends", ((E, "test_host_lock_lasts_until_the_run_ends"),)),
    ("6 a restore returns the database to the backup exactly", (
        (D, "test_db_restore_drops_later_schemas"), (D, "test_failed_db_restore_says_why"),
        (D, "test_promotion_after_a_failed_migration_that_created_a_schema"))),
    ("7 bounded waits: uploads, table locks, process groups", (
        (C, "test_upload_to_a_host_that_freezes"), (C, "test_timed_out_child_takes_its_grandchildren"),
        (D, "test_db_migrate_behind_a_table_lock"), (D, "test_backup_and_restore_behind_a_table_lock"),
        (D, "test_promote_migration_behind_a_table_lock"), (D, "test_promote_undo_down_migration_behind"),
        (D, "test_rollback_flow_honours_bin_dir_and_lock_timeout"))),
    ("8 secret and data files are 0600 in 0700 folders", (
        (C, "test_provision_makes_an_existing_0644"), (C, "test_backups_and_their_folders_are_private"),
        (C, "test_ledger_and_deploy_folder_are_private"))),
    ("9 the gate closes when no test ran", ((D, "test_gate_closes_on_staging_and_production_when_no_test_ran"),)),
    ("10 SIGTERM/SIGINT undo and free the lock", ((E, "test_sigterm_during_watch"),)),
    ("11 database URLs read by libpq, passwords masked", (
        (D, "test_password_with_raw_at_or_slash"), (D, "test_prisma_schema_keeps_its_case"),
        (D, "test_a_users_libpq_options"), (D, "test_session_work_uses_direct_url"))),
    ("12 the ledger schema is versioned and migrated forward", (
        (E, "test_older_ledger_is_migrated_forward"), (E, "test_newer_or_unmigratable_ledger"))),
    ("13 a full disk under .deploy/ undoes and says how to finish", ((E, "test_disk_full_under_deploy"),)),
    ("14 a closed output pipe ends a task quietly", (
        (E, "test_a_closed_output_pipe"), (E, "test_a_promotion_whose_reader_goes_away"))),
)


TD, TR, TL, TB, TS, TDD, TBU, TF = ("test_reliability_trust_data.py", "test_reliability_trust_rights.py",
                                    "test_reliability_trust_liveness.py", "test_reliability_trust_rollback.py",
                                    "test_reliability_trust_supervisor.py", "test_dotenv_dialect.py",
                                    "test_reliability_trust_build.py", "test_reliability_attacks_fence.py")
# The second attack on a production-shaped setup (data, rights, live runs, stale code), case by case.
TRUST: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("1 an undo never discards rows written during the run", (
        (TD, "test_watch_failure_after_additive_migrations_keeps"), (TD, "test_abort_after_a_kill_keeps"),
        (TD, "test_destructive_migration_without_down_sql_is_refused"), (TD, "test_dry_run_shows_squawks"),
        (TD, "test_smoke_failure_after_an_accepted_drop_keeps"), (TD, "test_accepted_drop_with_nothing_written"),
        (TD, "test_destructive_migration_with_down_sql"), (TD, "test_db_restore_shows_the_rows_written_since"),
        (TD, "test_rollback_db_restore_plan_says"))),
    ("2 single primitives on a protected environment need promote's rights", (
        (TR, "test_every_mutating_primitive_on_a_protected_environment"),
        (TR, "test_production_primitives_that_bring_a_commit"), (TR, "test_db_migrate_on_a_shared_environment_never"),
        (TR, "test_db_migrate_on_production_applies_the_commits"))),
    ("3 a commit rolled back in staging cannot go to production", (
        (TR, "test_production_refuses_a_commit_whose_staging_pass_was_taken_back"),)),
    ("4 another ledger's host locks block database and Shopify primitives", (
        (TR, "test_a_run_of_another_ledger_holding_the_hosts_blocks"),
        (TR, "test_an_unprotected_shared_environment_still_takes_the_hosts_lock"))),
    ("5 a runner with the same hostname never takes over a live run", (
        (TL, "test_a_runner_in_another_pid_namespace_never_takes_over"),
        (TL, "test_promote_abort_from_a_container_with_the_same_hostname"),
        (TL, "test_a_dead_holder_on_this_machine_is_taken_over_at_once"),
        (TL, "test_a_dead_holder_that_cannot_be_checked"), (TL, "test_lock_status_says_a_holder_in_another_pid"))),
    ("6 clock skew never makes a live runner look dead", (
        (TL, "test_a_live_holder_whose_clock_is_wrong"), (TL, "test_a_live_holder_in_another_time_namespace"),
        (TL, "test_runs_are_filed_in_the_ledgers_order"), (TL, "test_a_promotion_under_a_slow_clock"))),
    ("7 a plan that went stale while confirmed is not executed", (
        (TB, "test_confirmed_rollback_whose_live_release_changed"),
        (TB, "test_confirmed_promotion_to_protected_env_whose_live_release_changed"),
        (TB, "test_promotion_with_yes_to_protected_env"))),
    ("8 a rollback target changed in place is refused", (
        (TB, "test_rollback_refuses_a_target_changed_in_place"), (TB, "test_rollback_to_an_untouched_delta_release"),
        (TB, "test_judge_target_"))),
    ("9 the app gets exactly the values written", (
        (TS, "test_values_env_push_writes_reach_the_app"), (TS, "test_a_hand_written_shared_env_reaches"),
        (TS, "test_a_shared_env_the_app_cannot_get"), (TDD, "test_the_app_gets_exactly_what_python_dotenv_reads"),
        (TDD, "test_what_the_dialect_cannot_carry"), (TDD, "test_any_file_reads_as_python_dotenv"))),
    ("10 the supervisor acts only on its own process", (
        (TS, "test_a_stale_pidfile_is_never_obeyed"), (TS, "test_a_reused_pid_is_never_obeyed"),
        (TS, "test_after_a_reboot_a_promotion_restarts"), (TS, "test_the_local_app_stop_never_signals"))),
    ("11 one unreachable host never freezes the environment", (
        (TB, "test_unreachable_host_fails_the_promotion"), (TB, "test_rollback_with_a_dead_host_needs_skip_host"),
        (TB, "test_abort_of_a_promotion_killed_during_release"), (TB, "test_lock_release_with_a_dead_host"),
        (TB, "test_skip_host_naming_no_host"))),
    ("12 a rollback is checked whole before the first host switches", (
        (TB, "test_rollback_database_part_is_checked_before_any_host_switches"),
        (TB, "test_rollback_failing_after_the_switch_leaves_status"))),
    ("13 generated code follows the files it is generated from", (
        (TBU, "test_a_schema_only_commit_ships"), (TBU, "test_code_an_install_script_generates"),
        (TBU, "test_a_commit_that_changes_no_generated_input"))),
    ("14 two apps of one commit never share a build", ((TBU, "test_two_apps_of_one_commit"),)),
    ("15 required approval roles need different people", (
        (TR, "test_one_person_cannot_approve_two_required_roles"),
        (TR, "test_promotion_rechecks_that_the_required_roles"))),
    ("16 a migration's own COMMIT never leaves it half applied", (
        (TD, "test_failure_after_a_migrations_own_commit"),)),
    ("17 a killed run's command still running on a host changes nothing after the next run acts", (
        (TF, "test_fence_a_killed_runs_restart_hook"), (TF, "test_fence_a_killed_runs_health_wait"),
        (TF, "test_fence_a_killed_releases_drain"))),
)


def attack_rows(cases: list[Case], table=ATTACKS) -> tuple[tuple[str, Tally], ...]:
    """One (case, tally) per attack: a case with no test found counts as 0/0, which shows."""
    rows = []
    for what, tests in table:
        hits = [c for c in cases for file, prefix in tests if c.file.endswith(file) and c.name.startswith(prefix)]
        rows.append((what, tally(hits)))
    return tuple(rows)


# ----------------------------------------------------------------------------- parsing (pure)

def parse_junit(text: str) -> list[Case]:
    """pytest's JUnit XML -> one Case per test case."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DeployError(f"The pytest JUnit report cannot be read ({e}).", "Run the suite again.") from None
    out = []
    for tc in root.iter("testcase"):
        classname = tc.get("classname", "")
        file = classname.replace(".", "/") + ".py" if classname else ""
        name = tc.get("name", "")
        outcome, message = "passed", ""
        for child in tc:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "") or (child.text or "")[:500]
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
                message = child.get("message", "")
        out.append(Case(file, name, outcome, message))
    return out


def tally(cases: list[Case]) -> Tally:
    c = Counter(x.outcome for x in cases)
    known = tuple(dict.fromkeys(x.message for x in cases if x.outcome == "xfailed" and x.message))
    return Tally(c["passed"], c["failed"], c["xfailed"], c["skipped"], known)


def _in(cases: list[Case], file: str) -> list[Case]:
    return [c for c in cases if c.file.endswith(file)]


def figures(cases: list[Case], fuzz_examples_per_test: int = 150) -> Figures:
    kills = _in(cases, "test_kill_points.py")
    conc = _in(cases, "test_reliability_concurrency.py")
    faults = _in(cases, "test_reliability_faults.py")
    fuzz = _in(cases, "test_reliability_fuzz.py")
    leaks = _in(cases, "test_secret_leaks.py")
    # Every fault scenario scans its outputs and files for secrets; a leak fails it with
    # the `leaks(...) == []` assertion, so a failure naming that is a leak found.
    leak_cases = leaks + faults
    leaks_found = sum(1 for c in leak_cases if c.outcome == "failed" and "leak" in c.message.lower())
    by_kind: dict[str, list[Case]] = {}
    for c in conc:
        by_kind.setdefault(c.param or c.name, []).append(c)
    by_fault: dict[str, list[Case]] = {}
    for c in faults:
        by_fault.setdefault(re.sub(r"^test_", "", c.name).replace("_", " "), []).append(c)
    findings = tuple(dict.fromkeys(c.message for c in cases if c.outcome == "xfailed" and c.message))
    return Figures(
        kill_resume=tally([c for c in kills if "resume" in c.param]),
        kill_abort=tally([c for c in kills if "abort" in c.param]),
        concurrency={k: tally(v) for k, v in by_kind.items()},
        faults={k: tally(v) for k, v in by_fault.items()},
        hostile_corpus=tally(_in(cases, "test_reliability_hostile.py")),
        fuzz=tally(fuzz),
        fuzz_examples=len(fuzz) * fuzz_examples_per_test,
        leak_scenarios=len(leak_cases),
        leaks_found=leaks_found,
        remote=tally(_in(cases, "test_reliability_remote.py")),
        all_cases=tally(cases),
        findings=findings,
        db_attacks=tally(_in(cases, "test_reliability_attacks_db.py")),
        attacks=attack_rows(cases),
        trust=attack_rows(cases, TRUST),
    )


def machine() -> str:
    cpu = os.cpu_count() or 0
    return f"{platform.node()} ({platform.system()} {platform.release()}, {platform.machine()}, {cpu} CPUs, " \
           f"Python {platform.python_version()})"


def render(f: Figures, *, when: datetime, where: str, command: str, duration: float | None = None) -> str:
    """docs/reliability.md from the figures."""
    from tabulate import tabulate

    rows = [
        ("kill points, then --resume", f.kill_resume.line()),
        ("kill points, then --abort", f.kill_abort.line()),
        *[(f"8 promoters at once: {k}", t.line() + (" (exactly one proceeded, 7 LockHeld naming the holder)"
                                                     if t.passed == t.total and t.total else ""))
          for k, t in f.concurrency.items()],
        *[(f"fault: {k}", t.line()) for k, t in f.faults.items()],
        ("hostile input corpus (real CLI / primitive)", f.hostile_corpus.line()),
        (f"fuzzing (hypothesis, up to {f.fuzz_examples} examples)", f.fuzz.line()),
        ("leak scan", f"{f.leak_scenarios} scenarios scanned, {f.leaks_found} leak(s) found"),
        ("remote-side security", f.remote.line()),
        ("database attacks (restore, lock waits, skipped reports, URLs)", f.db_attacks.line()),
        *((f"attack {what}", tl.line()) for what, tl in f.attacks),
        *((f"trust {what}", tl.line()) for what, tl in f.trust),
    ]
    lines = [
        "# Reliability",
        "",
        "Generated by `invoke reliability.report` (deploy/reliability.py); do not edit by hand.",
        "",
        f"- date: {when.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {where}",
        f"- command: `{command}`" + (f" ({duration:.0f} s)" if duration is not None else ""),
        f"- all cases: {f.all_cases.line()}",
        "",
        tabulate(rows, headers=("what", "outcome"), tablefmt="github"),
        "",
        "A known failure is a test that states the intended behaviour and is marked `xfail` with",
        "the reason found; it passes (and must then lose its marker) once the cause is fixed.",
        "",
        "## Known failures found by the suite",
        "",
    ]
    lines += [f"- {r}" for r in f.findings] or ["- none"]
    lines += [
        "",
        "## What each part does",
        "",
        "- **Kill points** (tests/test_kill_points.py): a staging promotion (two sshd hosts, Postgres) SIGKILLed",
        "  before steps and after a step's work, then `--resume` or `--abort`: every host on one release, schema,",
        "  Shopify version and ledger matching, lock free.",
        "- **Concurrency** (tests/test_reliability_concurrency.py): 8 `invoke promote` processes started at once",
        "  against one SQLite ledger, one Postgres ledger, and two Postgres ledgers sharing only the hosts' lock.",
        "- **Faults** (tests/test_reliability_faults.py): a host dropped during the release, Postgres restarted",
        "  inside a migration, Shopify CLI failing after creating / releasing a version, a smoke endpoint that is",
        "  slow then 500 then hangs, a full (size-limited tmpfs) disk on one host.",
        "- **Hostile input** (tests/test_reliability_hostile.py, tests/fixtures/hostile/; tests/test_reliability_fuzz.py).",
        "- **Secrets** (tests/test_secret_leaks.py and every fault scenario): stdout, stderr, ledger, deployment log.",
        "- **Remote side** (tests/test_reliability_remote.py): hostile release ids, a changed host key, release",
        "  file modes, a planted symlinked or hostile lock.",
        "- **Database attacks** (tests/test_reliability_attacks_db.py): restore over later schemas, function-only",
        "  schemas and `public`'s grants; migrations, rollbacks, backups and restores behind a held table lock;",
        "  `database.bin_dir` on every path; gates over all-skipped reports; URLs with raw `@`/`/`, `?schema=`,",
        "  several hosts, and a transaction pooler (Supabase's `DIRECT_URL`).",
        "- **Trust** (tests/test_reliability_trust_*.py, tests/test_dotenv_dialect.py): the second attack on a",
        "  production-shaped setup. Writes kept by an undo (squawk's verdict per migration), single primitives",
        "  held to promote's rights and locks, staging rights taken back by a rollback, lock holders told apart",
        "  by token across pid namespaces and wrong clocks (unshare, libfaketime), stale plans refused, changed",
        "  rollback targets refused, dead hosts skipped by name, the app's environment compared byte for byte,",
        "  stale pidfiles, schema-only commits and two apps of one commit.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running

def run_suite(root: Path, files: tuple[str, ...] = SUITE, *, timeout: float = 3600) -> tuple[list[Case], float]:
    """Run pytest on the suite and return its cases (from --junitxml) and the wall time."""
    with tempfile.TemporaryDirectory(prefix="occ-reliability-") as d:
        junit = Path(d) / "junit.xml"
        workers = os.environ.get("PYTEST_WORKERS", "2")
        argv = [sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                "-o", "junit_family=xunit1", *(["-n", workers, "--dist", "loadfile"] if workers != "0" else [])]
        # Our own test suite, run for the report: it gets the developer's whole environment
        # on purpose (fixtures read PG*/DEPLOY_* variables), and says so here.
        r = proc.run(argv, cwd=root, timeout=timeout, env=dict(os.environ))
        if not junit.exists():
            raise DeployError(f"pytest wrote no JUnit report (exit {r.returncode}):\n{r.tail()}",
                              "Run the same pytest command by hand to see why.")
        return parse_junit(junit.read_text(encoding="utf-8")), r.duration


def from_junit(path: Path, files: tuple[str, ...] = SUITE) -> list[Case]:
    """The suite's cases from the JUnit XML of a run that included it (other files' cases left out)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DeployError(f"{path} cannot be read: {e.strerror}",
                          "Pass the file pytest wrote with --junitxml=FILE.") from None
    cases = [c for c in parse_junit(text) if any(c.file.endswith(f) for f in files)]
    missing = [f for f in files if not any(c.file.endswith(f) for c in cases)]
    if missing:
        raise DeployError(f"{path} holds no case of {', '.join(missing)}: the run did not include the whole suite",
                          "Run the whole test suite with --junitxml=FILE, or run "
                          "`invoke reliability.report` without --junit.")
    return cases


def report(root: Path, *, out: str = DOC, files: tuple[str, ...] = SUITE, now: datetime | None = None,
           junit: Path | None = None) -> Figures:
    """Run the suite (or read `junit`), write `out` (docs/reliability.md); DeployError when a case failed."""
    if junit is not None:
        cases, duration = from_junit(junit, files), None
        command = f"invoke reliability.report --junit={junit.name}  # cases of " + " ".join(files)
    else:
        cases, duration = run_suite(root, files)
        command = "invoke reliability.report  # pytest " + " ".join(files)
    f = figures(cases)
    when = now or datetime.now(timezone.utc)
    path = root / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(f, when=when, where=machine(), command=command, duration=duration), encoding="utf-8")
    if f.all_cases.failed:
        bad = [f"{c.file}::{c.name}" for c in cases if c.outcome == "failed"]
        raise DeployError(f"{len(bad)} reliability case(s) failed (written to {out} anyway): " + ", ".join(bad[:10]),
                          "Run them with pytest -x to see the failure.")
    return f
