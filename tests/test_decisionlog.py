"""Decision-log health: against a real Postgres table shaped as Prisma creates it, and the
pure verdict over recorded facts (thresholds, boundaries)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest

from deploy.config import DecisionLogSection
from deploy.decisionlog import DecisionLogFacts, gather, health, judge, split_table
from deploy.redact import Secret
from deploy.testing.decisionlog import create_decision_log, insert_rows

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=timezone.utc)
SECTION = DecisionLogSection()  # decision_log, created_at, status, 'error', 60 min, 5 errors


def ago(**kw) -> datetime:
    return NOW - timedelta(**kw)


def password_of(url: str) -> str:
    return urlsplit(url).password or ""


# ---------------------------------------------------------------- real Postgres

@pytest.mark.postgres
def test_healthy_log_passes_with_its_newest_row_and_error_count(pg_url):
    create_decision_log(pg_url, [(ago(days=2), "error"), (ago(minutes=50), "error"), (ago(minutes=3), "ok"),
                                 (ago(minutes=20), "error"), (ago(minutes=61), "error")])
    h = health(Secret(pg_url), SECTION, NOW)
    assert h.ok, h.reasons
    assert h.table_exists
    assert h.newest_at == ago(minutes=3)
    assert h.errors_last_hour == 2            # the 61-minute-old and 2-day-old errors are outside the hour
    assert "newest row 3 min ago" in h.describe() and "2 error row(s)" in h.describe()
    assert password_of(pg_url) not in h.describe()


@pytest.mark.postgres
def test_stale_newest_row_fails_naming_the_age_and_the_setting(pg_url):
    create_decision_log(pg_url, [(ago(minutes=95), "ok")])
    h = health(pg_url, SECTION, NOW)
    assert not h.ok
    assert h.newest_at == ago(minutes=95)
    assert len(h.reasons) == 1 and "95 min old" in h.reasons[0] and "decision_log.max_age_minutes = 60" in h.reasons[0]


@pytest.mark.postgres
def test_too_many_error_rows_in_the_last_hour_fails(pg_url):
    create_decision_log(pg_url, [(ago(minutes=m), "error") for m in range(1, 7)])
    h = health(pg_url, SECTION, NOW)
    assert not h.ok and h.errors_last_hour == 6
    assert "6 rows" in h.reasons[0] and "status = 'error'" in h.reasons[0] and "max_errors_last_hour = 5" in h.reasons[0]


@pytest.mark.postgres
def test_empty_table_fails_as_nothing_logged(pg_url):
    create_decision_log(pg_url)
    h = health(pg_url, SECTION, NOW)
    assert not h.ok and h.table_exists and h.newest_at is None and h.errors_last_hour == 0
    assert "has no rows" in h.reasons[0]


@pytest.mark.postgres
def test_missing_table_is_a_reason_not_a_traceback(pg_url):
    h = health(pg_url, SECTION, NOW)
    assert not h.ok and not h.table_exists
    assert "'decision_log'" in h.reasons[0] and "does not exist" in h.reasons[0]
    assert password_of(pg_url) not in h.reasons[0] and "***" in h.reasons[0]


@pytest.mark.postgres
def test_missing_column_names_the_setting_and_the_columns_there_are(pg_url):
    create_decision_log(pg_url, [(ago(minutes=1), "ok")])
    h = health(pg_url, dataclasses.replace(SECTION, status_column="state"), NOW)
    assert not h.ok and h.table_exists
    assert "decision_log.status_column = 'state'" in h.reasons[0]
    assert h.describe().endswith("table found, not readable as configured")
    assert "id, shopId, operator, action, status, detail, created_at" in h.reasons[0]


@pytest.mark.postgres
def test_time_column_that_is_not_a_timestamp_is_refused(pg_url):
    create_decision_log(pg_url, [(ago(minutes=1), "ok")])
    h = health(pg_url, dataclasses.replace(SECTION, time_column="operator"), NOW)
    assert not h.ok and "'operator'" in h.reasons[0] and "text, not a date/time column" in h.reasons[0]


@pytest.mark.postgres
def test_configured_schema_table_and_columns_are_used(pg_url):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE SCHEMA audit")
        c.execute("CREATE TYPE audit.outcome AS ENUM ('fine', 'failed')")
        c.execute('CREATE TABLE audit."Decisions" ("at" timestamptz NOT NULL, "outcome" audit.outcome NOT NULL)')
        c.execute("INSERT INTO audit.\"Decisions\" VALUES (%s, 'failed'), (%s, 'fine')", (ago(minutes=5), ago(minutes=2)))
    section = DecisionLogSection(table="audit.Decisions", time_column="at", status_column="outcome",
                                 error_value="failed", max_errors_last_hour=0)
    h = health(pg_url, section, NOW)
    assert h.newest_at == ago(minutes=2) and h.errors_last_hour == 1
    assert not h.ok and "max_errors_last_hour = 0" in h.reasons[0]


@pytest.mark.postgres
def test_hostile_table_name_stays_an_identifier(pg_url):
    create_decision_log(pg_url, [(ago(minutes=1), "ok")])
    section = dataclasses.replace(SECTION, table='decision_log"; DROP TABLE decision_log; --')
    h = health(pg_url, section, NOW)
    assert not h.ok and not h.table_exists
    assert health(pg_url, SECTION, NOW).ok       # the real table is still there


@pytest.mark.postgres
def test_server_time_zone_does_not_shift_ages(pg_cluster, pg_url):
    """Prisma writes UTC into a zone-less column; a server in another zone must not move it."""
    dbname = urlsplit(pg_url).path.lstrip("/")
    pg_cluster.execute(f"ALTER DATABASE \"{dbname}\" SET timezone = 'Pacific/Auckland'")
    create_decision_log(pg_url, [(ago(minutes=10), "error")])
    h = health(pg_url, SECTION, NOW)
    assert h.ok, h.reasons
    assert h.newest_at == ago(minutes=10) and h.errors_last_hour == 1


@pytest.mark.postgres
def test_rows_added_later_are_seen_on_the_next_look(pg_url):
    create_decision_log(pg_url, [(ago(hours=3), "ok")])
    assert not health(pg_url, SECTION, NOW).ok
    insert_rows(pg_url, [(ago(seconds=30), "ok")])
    assert health(pg_url, SECTION, NOW).ok


@pytest.mark.postgres
def test_wrong_password_is_a_reason_with_the_password_masked(pg_cluster, pg_url):
    create_decision_log(pg_url, [(ago(minutes=1), "ok")])
    dbname = urlsplit(pg_url).path.lstrip("/")
    bad = pg_cluster.url_for(dbname, password="not-the-password-7731")
    h = health(Secret(bad), SECTION, NOW)
    assert not h.ok and not h.reachable
    assert "authentication failed" in h.reasons[0]
    assert "not-the-password-7731" not in h.reasons[0] and "***" in h.reasons[0]
    assert "not readable" in h.describe()


def test_unreachable_server_is_a_reason_with_the_password_masked():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]            # bound, not listening: connection refused
        h = health(f"postgresql://occ:hunter2-secret@127.0.0.1:{port}/occ", SECTION, NOW)
    assert not h.ok and not h.reachable
    assert h.reasons[0].startswith(f"Cannot connect to postgresql://occ:***@127.0.0.1:{port}/occ")
    assert "hunter2-secret" not in h.reasons[0]


@pytest.mark.parametrize("url, expected", [
    (None, "DECISION_LOG_DATABASE_URL is not set"),
    ("", "DECISION_LOG_DATABASE_URL is not set"),
    ("file:./dev.db", "is not a Postgres URL"),
    ("mysql://u:pw-9@h/db", "Unsupported database URL 'mysql://u:***@h/db'"),
], ids=["none", "empty", "sqlite", "other-scheme"])
def test_unusable_url_is_a_reason(url, expected):
    h = health(url, SECTION, NOW)
    assert not h.ok and expected in h.reasons[0]
    assert "pw-9" not in h.reasons[0]


# ---------------------------------------------------------------- the pure verdict

FACTS = DecisionLogFacts("postgresql://u:***@h/db", "decision_log", True,
                         ("id", "status", "created_at"), "timestamp(3) without time zone", True, ago(minutes=1), 0)


@pytest.mark.parametrize("change, ok, fragment", [
    ({}, True, ""),
    ({"newest_at": ago(minutes=60)}, True, ""),                     # exactly the limit is still fresh
    ({"newest_at": ago(minutes=60, seconds=1)}, False, "60 min old"),
    ({"errors_last_hour": 5}, True, ""),                            # the limit is the most allowed
    ({"errors_last_hour": 6}, False, "6 rows"),
    ({"newest_at": NOW + timedelta(minutes=4)}, True, ""),          # small clock skew tolerated
    ({"newest_at": NOW + timedelta(hours=2)}, False, "in the future"),
    ({"newest_at": None}, False, "has no rows"),
    ({"table_exists": False}, False, "does not exist"),
    ({"columns": ("id", "status")}, False, "decision_log.time_column = 'created_at'"),
    ({"error": "Cannot connect to x"}, False, "Cannot connect to x"),
], ids=["fresh", "age-at-limit", "age-over-limit", "errors-at-limit", "errors-over-limit", "small-skew",
        "future", "empty", "no-table", "no-column", "unreachable"])
def test_judge(change, ok, fragment):
    h = judge(dataclasses.replace(FACTS, **change), SECTION, NOW)
    assert h.ok is ok
    assert (fragment in " ".join(h.reasons)) if fragment else h.reasons == ()


def test_stale_and_erroring_log_reports_both_reasons():
    h = judge(dataclasses.replace(FACTS, newest_at=ago(hours=5), errors_last_hour=9), SECTION, NOW)
    assert len(h.reasons) == 2


@pytest.mark.parametrize("name, expected", [
    ("decision_log", (None, "decision_log")),
    ("audit.decision_log", ("audit", "decision_log")),
])
def test_split_table(name, expected):
    assert split_table(name) == expected


@pytest.mark.parametrize("name", ["", "a.b.c", ".x", "x."])
def test_split_table_refuses_malformed_names(name):
    with pytest.raises(ValueError):
        split_table(name)
    assert "is not a table name" in gather("postgresql://u:p@127.0.0.1:1/db",
                                            dataclasses.replace(SECTION, table=name), NOW).error
