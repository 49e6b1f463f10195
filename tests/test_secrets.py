"""Secret rotation: ages against periods with a fixed clock, and the append-only record."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from deploy import envs, secrets
from deploy.errors import SettingsError

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "envs"
UTC = dt.timezone.utc


@pytest.fixture
def matrix(tmp_path: Path) -> envs.Matrix:
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "project", root)
    return envs.load_matrix(root)


def status(report: secrets.RotationReport, variable: str, env: str) -> str:
    return next(r.status for r in report.rows if (r.variable, r.env) == (variable, env))


# The fixture's API_TOKEN: 30-day period, production last rotated 2026-11-10 (due 2026-12-10).
@pytest.mark.parametrize("today, expected, exit_code", [
    pytest.param(dt.date(2026, 11, 25), "ok", 0, id="15-days-left-ok"),
    pytest.param(dt.date(2026, 11, 26), "due soon", 0, id="14-days-left-due-soon"),
    pytest.param(dt.date(2026, 12, 9), "due soon", 0, id="1-day-left-due-soon"),
    pytest.param(dt.date(2026, 12, 10), "overdue", 1, id="due-day-overdue"),
    pytest.param(dt.date(2027, 3, 1), "overdue", 1, id="long-overdue"),
    pytest.param(dt.date(2026, 11, 9), "invalid", 1, id="rotated-after-today"),
])
def test_production_token_age_against_its_period(matrix, today, expected, exit_code):
    report = secrets.rotation_report(matrix, today)
    assert status(report, "API_TOKEN", "production") == expected
    assert report.exit_code == exit_code


def test_rotation_table_with_a_fixed_clock(matrix):
    report = secrets.rotation_report(matrix, dt.date(2026, 12, 2))
    assert [(r.variable, r.env, r.last_rotated.isoformat(), r.age_days, r.due_on.isoformat(), r.days_left, r.status)
            for r in report.rows] == [
        ("DATABASE_URL", "dev", "2026-09-01", 92, "2026-11-30", -2, "overdue"),
        ("DATABASE_URL", "staging", "2026-09-01", 92, "2026-11-30", -2, "overdue"),
        ("DATABASE_URL", "production", "2026-10-01", 62, "2026-12-30", 28, "ok"),
        ("API_TOKEN", "staging", "2026-11-01", 31, "2026-12-01", -1, "overdue"),
        ("API_TOKEN", "production", "2026-11-10", 22, "2026-12-10", 8, "due soon"),
    ]
    # Overdue outside production is reported but does not fail the run.
    assert report.exit_code == 0
    text = secrets.render_rotation(report)
    assert "secrets.rotation on 2026-12-02: 3 overdue, 1 due soon" in text
    assert "ok: no production secret is overdue" in text
    # local has no secrets, and dev's optional API_TOKEN was never issued: no rows for them.
    assert {r.env for r in report.rows} == {"dev", "staging", "production"}


def test_overdue_production_secret_fails_and_is_named(matrix):
    report = secrets.rotation_report(matrix, dt.date(2027, 1, 5))
    assert report.exit_code == 1
    assert [(r.variable, r.env) for r in report.failing] == [("DATABASE_URL", "production"), ("API_TOKEN", "production")]
    assert "FAIL: production secret(s) overdue or misdated: DATABASE_URL (production), API_TOKEN (production)" in \
        secrets.render_rotation(report)


def test_recorded_rotation_resets_the_age(matrix):
    log = secrets.rotation_log_path(matrix)
    today = dt.date(2027, 1, 5)
    assert status(secrets.rotation_report(matrix, today), "DATABASE_URL", "production") == "overdue"
    rot = secrets.record_rotation(matrix, "DATABASE_URL", "production", "alice",
                                  dt.datetime(2027, 1, 4, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))))
    assert rot.rotated_at == "2027-01-05T04:30:00+00:00"  # stored in UTC
    report = secrets.rotation_report(matrix, today, secrets.read_rotations(log))
    row = next(r for r in report.rows if (r.variable, r.env) == ("DATABASE_URL", "production"))
    assert (row.last_rotated, row.by, row.age_days, row.status) == (dt.date(2027, 1, 5), "alice", 0, "ok")
    assert json.loads(log.read_text().splitlines()[-1]) == {
        "variable": "DATABASE_URL", "env": "production", "rotated_at": "2027-01-05T04:30:00+00:00", "by": "alice"}


def test_an_older_record_does_not_override_a_newer_matrix_date(matrix):
    old = secrets.Rotation("API_TOKEN", "production", "2026-10-01", "bob")
    report = secrets.rotation_report(matrix, dt.date(2026, 11, 20), [old])
    row = next(r for r in report.rows if (r.variable, r.env) == ("API_TOKEN", "production"))
    assert (row.last_rotated, row.by) == (dt.date(2026, 11, 10), "matrix")


@pytest.mark.parametrize("name, env, who, when, message", [
    pytest.param("DATABSE_URL", "production", "alice", dt.date(2026, 11, 24),
                 "DATABSE_URL is not a variable of the matrix", id="unknown-name"),
    pytest.param("DATABASE_URL", "qa", "alice", dt.date(2026, 11, 24), "Unknown environment 'qa'", id="unknown-env"),
    pytest.param("PORT", "production", "alice", dt.date(2026, 11, 24),
                 "PORT is not a secret in 'production'", id="not-a-secret"),
    pytest.param("DATABASE_URL", "local", "alice", dt.date(2026, 11, 24),
                 "DATABASE_URL is not a secret in 'local'", id="plain-in-this-env"),
    pytest.param("DATABASE_URL", "production", "alice\nforged line", dt.date(2026, 11, 24),
                 "is not a usable name for the rotation record", id="newline-in-who"),
    pytest.param("DATABASE_URL", "production", " ", dt.date(2026, 11, 24),
                 "is not a usable name", id="blank-who"),
    pytest.param("DATABASE_URL", "production", "alice", dt.datetime(2026, 11, 24, 9, 0),
                 "has no time zone", id="naive-time"),
])
def test_record_rotation_rejects_bad_input_and_writes_nothing(matrix, name, env, who, when, message):
    with pytest.raises(SettingsError, match=message):
        secrets.record_rotation(matrix, name, env, who, when)
    assert not secrets.rotation_log_path(matrix).exists()


def test_malformed_record_line_is_named(matrix):
    log = secrets.rotation_log_path(matrix)
    log.write_text('# header\n{"variable": "API_TOKEN", "env": "staging", "rotated_at": "2026-11-02", "by": "a"}\n'
                   '{"variable": "API_TOKEN", "env": "staging", "rotated_at": "yesterday", "by": "a"}\n')
    with pytest.raises(SettingsError, match=r"rotations.log: line 3 is not a rotation record"):
        secrets.read_rotations(log)


def test_record_after_an_unterminated_hand_edit_starts_a_new_line(matrix):
    log = secrets.rotation_log_path(matrix)
    log.write_text('{"variable": "API_TOKEN", "env": "staging", "rotated_at": "2026-11-02", "by": "a"}')
    secrets.record_rotation(matrix, "API_TOKEN", "staging", "b", dt.date(2026, 11, 20))
    assert [r.by for r in secrets.read_rotations(log)] == ["a", "b"]


def _append_many(root: str, worker: int, count: int, go) -> None:
    m = envs.load_matrix(Path(root))
    go.wait()
    for i in range(count):
        # Long names make a torn line likely if a record ever took more than one write().
        secrets.record_rotation(m, "API_TOKEN", "staging", f"worker-{worker}-{i:03d}-" + "x" * 80,
                                dt.date(2026, 11, 20))


@pytest.mark.slow
def test_concurrent_recorders_never_interleave_lines(matrix):
    workers, count = 12, 150
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_append_many, args=(str(matrix.root), w, count, go)) for w in range(workers)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rotations = secrets.read_rotations(secrets.rotation_log_path(matrix))
    assert len(rotations) == workers * count
    assert len({r.by for r in rotations}) == workers * count


# ---------------------------------------------------------------- the shipped state

def test_shipped_rotation_state_has_no_overdue_production_secret_today():
    m = envs.load_matrix(REPO)
    report = secrets.rotation_report(m, dt.date(2026, 11, 24), secrets.read_rotations(secrets.rotation_log_path(m)))
    assert report.exit_code == 0, secrets.render_rotation(report)
    # The Dev Dashboard token was re-issued and recorded in env/rotations.log.
    token = next(r for r in report.rows if (r.variable, r.env) == ("SHOPIFY_APP_AUTOMATION_TOKEN", "production"))
    assert (token.by, token.status) == ("release-bot", "ok")
    assert all(r.period_days for r in report.rows)
