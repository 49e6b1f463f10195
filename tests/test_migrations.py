"""The migration runner against a real Postgres cluster, read and written as Prisma does."""

import os
import stat
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from deploy import migrations as M
from deploy.errors import LockHeld, MigrationFailed
from deploy.testing.postgres import write_migrations

pytestmark = pytest.mark.postgres

HISTORY = Path(__file__).parent / "fixtures" / "migrations" / "postgres_history"
NAMES = sorted(p.name for p in HISTORY.iterdir() if p.is_dir())


def q(url, sql, params=None):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def tables(url):
    return {r[0] for r in q(url, "select tablename from pg_tables where schemaname = 'public'")}


def rows(url):
    return q(url, "select id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, "
                  "applied_steps_count from _prisma_migrations order by started_at, migration_name")


# Column definitions of Prisma's table, written out from flavour/postgres.rs (create_migrations_table).
PRISMA_COLUMNS = [
    ("id", "character varying", 36, "NO", None),
    ("checksum", "character varying", 64, "NO", None),
    ("finished_at", "timestamp with time zone", None, "YES", None),
    ("migration_name", "character varying", 255, "NO", None),
    ("logs", "text", None, "YES", None),
    ("rolled_back_at", "timestamp with time zone", None, "YES", None),
    ("started_at", "timestamp with time zone", None, "NO", "now()"),
    ("applied_steps_count", "integer", None, "NO", "0"),
]


def test_full_prisma_style_history_applies_and_records_rows_as_prisma_does(pg_url):
    result = M.migrate(pg_url, HISTORY)
    assert result.applied == tuple(NAMES) and len(NAMES) >= 100
    cols = q(pg_url, "select column_name, data_type, character_maximum_length, is_nullable, column_default "
                     "from information_schema.columns where table_name = '_prisma_migrations' order by ordinal_position")
    assert cols == PRISMA_COLUMNS
    assert q(pg_url, "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
                     "and a.attnum = any(i.indkey) where i.indrelid = '_prisma_migrations'::regclass "
                     "and i.indisprimary") == [("id",)]
    recorded = rows(pg_url)
    assert [r[3] for r in recorded] == NAMES
    for rid, chk, finished, name, logs, rolled, started, steps in recorded:
        assert uuid.UUID(rid).version == 4
        assert chk == M.checksum((HISTORY / name / "migration.sql").read_text())
        assert finished is not None and started <= finished and rolled is None and logs is None and steps == 1
    # The schema really is what the history describes: enum values added, renames done.
    assert q(pg_url, "select enum_range(null::\"OrderStatus\")::text") == [("{ACTIVE,PAUSED,ARCHIVED}",)]
    assert {"Shop", "Order", "_ShopToOperator", "Session"} <= tables(pg_url)
    assert q(pg_url, "select count(*) from pg_indexes where indexname = 'Session_shop_idx'") == [(1,)]
    report = M.status(pg_url, HISTORY)
    assert report.up_to_date and len(report.applied) == len(NAMES)


def test_database_migrated_by_prisma_is_continued_by_ours(pg_url):
    """Prisma's table and rows (as prisma migrate deploy leaves them), then our status and migrate."""
    q(pg_url, M.POSTGRES_TABLE_DDL)
    half = NAMES[:50]
    for name in half:
        script = (HISTORY / name / "migration.sql").read_text()
        if "CONCURRENTLY" in script:
            q(pg_url, script)
        else:
            with psycopg.connect(pg_url) as c:
                c.execute(script)
        now = datetime.now(timezone.utc)
        q(pg_url, "insert into _prisma_migrations (id, checksum, started_at, migration_name) values (%s, %s, %s, %s)",
          (str(uuid.uuid4()), M.checksum(script), now, name))
        q(pg_url, "update _prisma_migrations set applied_steps_count = applied_steps_count + 1, finished_at = %s "
                  "where migration_name = %s", (datetime.now(timezone.utc), name))
    report = M.status(pg_url, HISTORY)
    assert report.applied == tuple(half) and report.pending == tuple(NAMES[50:]) and not report.drift
    assert M.migrate(pg_url, HISTORY).applied == tuple(NAMES[50:])
    assert len(rows(pg_url)) == len(NAMES)


def test_database_migrated_by_ours_has_nothing_pending_by_prismas_rule(pg_url):
    """apply_migrations.rs applies folders with no row whose rolled_back_at IS NULL and stops on
    any unfinished row: run those exact queries against what we wrote."""
    M.migrate(pg_url, HISTORY)
    assert q(pg_url, "select count(*) from _prisma_migrations where finished_at is null and rolled_back_at is null") \
        == [(0,)]
    active = {r[0] for r in q(pg_url, "select migration_name from _prisma_migrations where rolled_back_at is null")}
    assert [n for n in NAMES if n not in active] == []


def test_enum_value_used_in_the_migration_that_adds_it_fails_cleanly(pg_url, tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_init": "CREATE TYPE \"Role\" AS ENUM ('USER');\nCREATE TABLE \"U\" (\"r\" \"Role\");\n",
        "20240102000000_add_and_use": "ALTER TYPE \"Role\" ADD VALUE 'ADMIN';\n"
                                      "INSERT INTO \"U\" VALUES ('ADMIN');\n",
    })
    with pytest.raises(MigrationFailed) as e:
        M.migrate(pg_url, d)
    assert "55P04" in str(e.value) and "own, earlier migration" in e.value.hint
    assert q(pg_url, "select enum_range(null::\"Role\")::text") == [("{USER}",)]


def test_enum_value_added_alone_then_used_in_the_next_migration_applies(pg_url, tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_init": "CREATE TYPE \"Role\" AS ENUM ('USER');\nCREATE TABLE \"U\" (\"r\" \"Role\");\n",
        "20240102000000_add": "-- AlterEnum\nALTER TYPE \"Role\" ADD VALUE 'ADMIN';\n",
        "20240103000000_use": "INSERT INTO \"U\" VALUES ('ADMIN');\n",
    })
    assert len(M.migrate(pg_url, d).applied) == 3
    assert q(pg_url, 'select r::text from "U"') == [("ADMIN",)]


# ---------------------------------------------------------------- bad input

GOOD = 'CREATE TABLE "A" ("id" TEXT NOT NULL, CONSTRAINT "A_pkey" PRIMARY KEY ("id"));\n'


@pytest.mark.parametrize("second, problem", [
    (None, "migration.sql is missing"),
    ("", "migration.sql is empty"),
    ("  \n\n", "migration.sql is empty"),
], ids=["folder-without-migration-sql", "empty-file", "whitespace-only"])
def test_unusable_folder_is_refused_before_anything_is_applied(pg_url, tmp_path, second, problem):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD, "20240102000000_b": second})
    with pytest.raises(MigrationFailed) as e:
        M.migrate(pg_url, d)
    assert "20240102000000_b" in str(e.value) and problem in str(e.value)
    assert "A" not in tables(pg_url) and rows(pg_url) == []
    assert [s.state for s in M.status(pg_url, d).migrations] == ["pending", "invalid"]


def test_syntax_error_is_recorded_as_failed_and_blocks_until_resolved(pg_url, tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_a": GOOD,
        "20240102000000_b": 'CREATE TABLE "B" ("id" TEXT);\nCREATE TABLEX "C" ("id" TEXT);\n',
        "20240103000000_c": 'CREATE TABLE "D" ("id" TEXT);\n',
    })
    with pytest.raises(MigrationFailed) as e:
        M.migrate(pg_url, d)
    msg = str(e.value)
    assert "20240102000000_b" in msg and "42601" in msg and "syntax error" in msg
    assert tables(pg_url) == {"A", "_prisma_migrations"}          # B's first statement rolled back too
    (ok, bad) = rows(pg_url)
    assert ok[3] == "20240101000000_a" and ok[2] is not None
    assert bad[3] == "20240102000000_b" and bad[2] is None and bad[7] == 0 and bad[5] is None
    assert bad[4].startswith("A migration failed to apply. New migrations cannot be applied before the error")
    assert "Migration name: 20240102000000_b" in bad[4] and "Database error code: 42601" in bad[4]

    report = M.status(pg_url, d)
    assert report.failed == ("20240102000000_b",) and report.pending == ("20240103000000_c",)
    with pytest.raises(MigrationFailed, match="P3009") as again:
        M.migrate(pg_url, d)
    assert "--rolled-back 20240102000000_b" in again.value.hint

    (d / "20240102000000_b" / "migration.sql").write_text('CREATE TABLE "B" ("id" TEXT);\n')
    assert M.resolve(pg_url, d, rolled_back="20240102000000_b").action == "rolled_back"
    assert M.migrate(pg_url, d).applied == ("20240102000000_b", "20240103000000_c")
    assert M.status(pg_url, d).up_to_date


def test_checksum_mismatch_and_row_without_folder_are_drift(pg_url, tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD, "20240102000000_b": 'CREATE TABLE "B" ("id" TEXT);\n'})
    M.migrate(pg_url, d)
    (d / "20240101000000_a" / "migration.sql").write_text(GOOD + "-- edited after deploy\n")
    import shutil
    shutil.rmtree(d / "20240102000000_b")
    report = M.status(pg_url, d)
    assert {(s.name, s.state) for s in report.drift} == {
        ("20240101000000_a", "checksum_changed"), ("20240102000000_b", "missing_folder")}
    assert not report.up_to_date
    # Like prisma migrate deploy: drift does not stop deploy, but we say it.
    (d / "20240103000000_c").mkdir()
    (d / "20240103000000_c" / "migration.sql").write_text('CREATE TABLE "C" ("id" TEXT);\n')
    result = M.migrate(pg_url, d)
    assert result.applied == ("20240103000000_c",)
    assert any("edited" in w for w in result.warnings) and any("no folder" in w for w in result.warnings)


def test_crlf_checkout_is_not_drift(pg_url, tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    M.migrate(pg_url, d)
    (d / "20240101000000_a" / "migration.sql").write_bytes(GOOD.replace("\n", "\r\n").encode())
    assert M.status(pg_url, d).up_to_date


def test_unreachable_database_names_the_url_without_password(pg_cluster, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"postgresql://postgres:hunter2-unreachable@127.0.0.1:{port}/x"
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with pytest.raises(MigrationFailed) as e:
        M.status(url, d)
    text = str(e.value)
    assert f"postgresql://postgres:***@127.0.0.1:{port}/x" in text and "hunter2-unreachable" not in text
    assert "reachable" in e.value.hint


def test_wrong_credentials_never_show_the_password(pg_cluster, pg_url, tmp_path):
    dbname = pg_url.rsplit("/", 1)[1]
    url = pg_cluster.url_for(dbname, password="Wr0ng-Pa55-xyz")
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with pytest.raises(MigrationFailed) as e:
        M.migrate(url, d)
    assert "password authentication failed" in str(e.value) and "Wr0ng-Pa55-xyz" not in str(e.value)
    assert "password" in e.value.hint


def test_non_empty_database_without_migrations_table_is_refused(pg_url, tmp_path):
    q(pg_url, 'CREATE TABLE "Legacy" ("id" int)')
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with pytest.raises(MigrationFailed, match="P3005") as e:
        M.migrate(pg_url, d)
    assert "Legacy" in str(e.value) and "--applied" in e.value.hint
    # Baselining is exactly resolve --applied, as in Prisma.
    assert M.resolve(pg_url, d, applied="20240101000000_a").action == "applied"
    (row,) = rows(pg_url)
    assert row[2] == row[6] and row[4] == "" and row[7] == 0     # mark_migration_applied's row
    assert M.status(pg_url, d).up_to_date


def test_resolve_refuses_like_prisma(pg_url, tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with pytest.raises(MigrationFailed, match="P3017"):
        M.resolve(pg_url, d, applied="20990101000000_nope")
    with pytest.raises(MigrationFailed, match="P3011"):
        M.resolve(pg_url, d, rolled_back="20240101000000_a")
    M.migrate(pg_url, d)
    with pytest.raises(MigrationFailed, match="P3008"):
        M.resolve(pg_url, d, applied="20240101000000_a")
    with pytest.raises(MigrationFailed, match="P3012"):
        M.resolve(pg_url, d, rolled_back="20240101000000_a")


def test_provider_in_lock_file_must_match_the_database(pg_url, tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD}, provider="sqlite")
    with pytest.raises(MigrationFailed, match="P3019"):
        M.migrate(pg_url, d)
    assert tables(pg_url) == set()


# ---------------------------------------------------------------- locking

def test_migrate_waits_for_prismas_advisory_lock_then_says_who_holds_it(pg_url, tmp_path):
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with psycopg.connect(pg_url, autocommit=True, application_name="other-deployer") as holder:
        holder.execute("SELECT pg_advisory_lock(72707369)")
        with pytest.raises(LockHeld) as e:
            M.migrate(pg_url, d, lock_timeout=0.3)
        assert "72707369" in str(e.value) and "other-deployer" in str(e.value)
    assert "A" not in tables(pg_url)
    assert M.migrate(pg_url, d).applied == ("20240101000000_a",)


def test_migration_waiting_on_a_table_lock_fails_within_lock_timeout_naming_both(pg_url, tmp_path):
    from deploy.config import DatabaseSection
    from deploy.testing.postgres import TableLock

    d = write_migrations(tmp_path, {"20240101000000_a": GOOD,
                                    "20240102000000_add_col": 'ALTER TABLE "A" ADD COLUMN "b" TEXT;'})
    M.migrate(pg_url, d, lock_timeout=5)
    d = write_migrations(tmp_path, {"20240103000000_add_more": 'ALTER TABLE "A" ADD COLUMN "c" TEXT;'})
    settings = DatabaseSection(provider="postgresql", lock_timeout=0.5)
    with TableLock(pg_url, "A") as app_session:
        with pytest.raises(MigrationFailed) as e:
            M.migrate(pg_url, d, db=settings)
        assert not app_session.released.is_set()      # it gave up; nobody let go of the lock for it
    text = str(e.value)
    assert "20240103000000_add_more" in text and "55P03" in text
    assert "table lock held by another session longer than database.lock_timeout (0.5 s)" in text
    assert "db.resolve" in e.value.hint
    assert "c" not in {r[0] for r in q(pg_url, "select column_name from information_schema.columns "
                                               "where table_name = 'A'")}
    assert M.status(pg_url, d).failed == ("20240103000000_add_more",)


def test_statement_running_past_statement_timeout_fails_the_migration(pg_url, tmp_path):
    from deploy.config import DatabaseSection

    d = write_migrations(tmp_path, {"20240101000000_slow": "SELECT pg_sleep(60);"})
    with pytest.raises(MigrationFailed) as e:
        M.migrate(pg_url, d, db=DatabaseSection(provider="postgresql", statement_timeout=0.5))
    assert "database.statement_timeout (0.5 s)" in str(e.value) and "57014" in str(e.value)


def test_rollback_waiting_on_a_table_lock_fails_within_lock_timeout(pg_url, tmp_path):
    from deploy.config import DatabaseSection
    from deploy.testing.postgres import TableLock

    d = write_migrations(tmp_path, {"20240101000000_a": (GOOD, 'DROP TABLE "A";')})
    M.migrate(pg_url, d)
    with TableLock(pg_url, "A") as app_session:
        with pytest.raises(MigrationFailed) as e:
            M.rollback(pg_url, d, db=DatabaseSection(provider="postgresql", lock_timeout=0.5))
        assert not app_session.released.is_set()
    assert "database.lock_timeout (0.5 s)" in str(e.value) and "20240101000000_a" in str(e.value)
    assert "A" in tables(pg_url)


def test_postgis_tables_do_not_make_a_database_non_empty(pg_url, tmp_path):
    # What CREATE EXTENSION postgis leaves in `public`; prisma-engines' table_should_be_ignored.
    q(pg_url, "CREATE TABLE spatial_ref_sys (srid int PRIMARY KEY); CREATE TABLE geometry_columns (x int)")
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    assert M.migrate(pg_url, d).applied == ("20240101000000_a",)


def test_a_real_table_beside_postgis_still_makes_a_database_non_empty(pg_cluster, tmp_path):
    url = pg_cluster.create_database()
    q(url, 'CREATE TABLE spatial_ref_sys (srid int); CREATE TABLE "Mine" (id int)')
    d = write_migrations(tmp_path, {"20240101000000_a": GOOD})
    with pytest.raises(MigrationFailed, match=r"P3005") as e:
        M.migrate(url, d)
    assert "Mine" in str(e.value) and "spatial_ref_sys" not in str(e.value)


def test_concurrent_migrate_applies_each_migration_once(pg_url):
    results, errors = [], []

    def run():
        try:
            results.append(M.migrate(pg_url, HISTORY, lock_timeout=60))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r.applied) for r in results) == [0, 0, len(NAMES)]
    assert q(pg_url, "select count(*), count(distinct migration_name) from _prisma_migrations") == [
        (len(NAMES), len(NAMES))]


# ---------------------------------------------------------------- rollback

def test_rollback_runs_down_sql_newest_first_and_deploy_reapplies(pg_url):
    M.migrate(pg_url, HISTORY)
    before = tables(pg_url)
    result = M.rollback(pg_url, HISTORY, steps=len(NAMES))
    assert result.rolled_back == tuple(reversed(NAMES))
    assert tables(pg_url) == {"_prisma_migrations"}
    assert M.status(pg_url, HISTORY).pending == tuple(NAMES)
    assert M.migrate(pg_url, HISTORY).applied == tuple(NAMES)
    assert tables(pg_url) == before


def test_rollback_without_down_sql_refuses_and_changes_nothing(pg_url, tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_a": (GOOD, 'DROP TABLE "A";\n'),
        "20240102000000_b": 'CREATE TABLE "B" ("id" TEXT);\n',
        "20240103000000_c": ('CREATE TABLE "C" ("id" TEXT);\n', 'DROP TABLE "C";\n'),
    })
    M.migrate(pg_url, d)
    with pytest.raises(MigrationFailed) as e:
        M.rollback(pg_url, d, steps=2)
    assert "20240102000000_b" in str(e.value) and "no down.sql" in str(e.value)
    assert "db.restore" in e.value.hint
    assert tables(pg_url) == {"A", "B", "C", "_prisma_migrations"}
    assert M.status(pg_url, d).up_to_date
    assert M.rollback(pg_url, d, steps=1).rolled_back == ("20240103000000_c",)


def test_failing_down_sql_leaves_that_migration_applied(pg_url, tmp_path):
    d = write_migrations(tmp_path, {
        "20240101000000_a": (GOOD, 'DROP TABLE "A";\n'),
        "20240102000000_b": ('CREATE TABLE "B" ("id" TEXT);\n', 'DROP TABLE "B";\nDROP TABLE "Nope";\n'),
    })
    M.migrate(pg_url, d)
    with pytest.raises(MigrationFailed, match="20240102000000_b"):
        M.rollback(pg_url, d, steps=2)
    assert {"A", "B"} <= tables(pg_url)
    assert M.status(pg_url, d).up_to_date


# ---------------------------------------------------------------- runner = "prisma"

NPX = """#!/bin/sh
# Stand-in for npx: records its argv and whether DATABASE_URL arrived, answers like Prisma.
printf '%s\\n' "$@" > "$NPX_LOG.argv"
[ "$DATABASE_URL" = "$EXPECTED_URL" ] && echo yes > "$NPX_LOG.env" || echo no > "$NPX_LOG.env"
[ "$DIRECT_URL" = "$EXPECTED_URL" ] && echo yes > "$NPX_LOG.direct" || echo no > "$NPX_LOG.direct"
if [ -n "$NPX_FAIL" ]; then
  echo "Error: P3009" >&2
  echo "migrate found failed migrations in the target database, url $DATABASE_URL" >&2
  exit 1
fi
cat <<'OUT'
2 migrations found in prisma/migrations

Applying migration `20240101000000_a`
Applying migration `20240102000000_b`

The following migrations have been applied:

migrations/
  └─ 20240101000000_a/
    └─ migration.sql
  └─ 20240102000000_b/
    └─ migration.sql

All migrations have been successfully applied.
OUT
"""


@pytest.fixture
def npx(tmp_path):
    """Factory: the stand-in, its knobs written into it (children get an explicit environment,
    so the test's own variables would not reach it)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "npx"

    def make(log: Path, expected_url: str, fail: bool = False) -> Path:
        head = f"#!/bin/sh\nNPX_LOG='{log}'\nEXPECTED_URL='{expected_url}'\nNPX_FAIL='{'1' if fail else ''}'\n"
        exe.write_text(head + NPX.split("\n", 1)[1])
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
        return exe

    return make


def test_prisma_runner_runs_migrate_deploy_with_the_url_in_the_environment(npx, tmp_path):
    d = write_migrations(tmp_path / "app", {"20240101000000_a": GOOD, "20240102000000_b": GOOD})
    (d.parent / "schema.prisma").write_text('datasource db { provider = "postgresql" url = env("DATABASE_URL") }\n')
    url = "postgresql://app:pr1sma-secret@127.0.0.1:1/occ?schema=public"
    log = tmp_path / "npx"
    result = M.migrate(url, d, runner="prisma", npx=str(npx(log, url)))
    assert log.with_suffix(".argv").read_text().split() == [
        "--no", "prisma", "migrate", "deploy", "--schema", str(d.parent / "schema.prisma")]
    assert log.with_suffix(".env").read_text().strip() == "yes"
    assert result.runner == "prisma" and result.applied == ("20240101000000_a", "20240102000000_b")
    assert "pr1sma-secret" not in result.url + result.output

    with pytest.raises(MigrationFailed) as e:
        M.migrate(url, d, runner="prisma", npx=str(npx(log, url, fail=True)))
    assert "P3009" in str(e.value) and "pr1sma-secret" not in str(e.value)


def test_prisma_runner_gets_the_session_url_as_directurl_too(npx, tmp_path):
    from deploy.config import DatabaseSection

    d = write_migrations(tmp_path / "app", {"20240101000000_a": GOOD})
    (d.parent / "schema.prisma").write_text('datasource db { provider = "postgresql" url = env("DATABASE_URL") '
                                            'directUrl = env("DIRECT_URL") }\n')
    url = "postgresql://app:pr1sma-secret@127.0.0.1:1/occ"
    log = tmp_path / "npx"
    M.migrate(url, d, runner="prisma", npx=str(npx(log, url)), db=DatabaseSection(provider="postgresql", runner="prisma"))
    assert log.with_suffix(".direct").read_text().strip() == "yes"


def test_rollback_by_names_undoes_an_older_migration_applied_last_and_nothing_else(pg_url, tmp_path):
    """A and C applied; B (older name, merged from a branch) applied by a later deploy. Undoing
    that deploy's migrations by name runs B's down.sql, not C's (the newest name)."""
    d = write_migrations(tmp_path, {
        "20240101000000_a": ('CREATE TABLE "A" ("id" TEXT);\n', 'DROP TABLE "A";\n'),
        "20240103000000_c": ('CREATE TABLE "C" ("id" TEXT);\n', 'DROP TABLE "C";\n'),
    })
    M.migrate(pg_url, d)
    write_migrations(tmp_path, {"20240102000000_b": ('CREATE TABLE "B" ("id" TEXT);\n', 'DROP TABLE "B";\n')})
    assert M.migrate(pg_url, d).applied == ("20240102000000_b",)
    with pytest.raises(MigrationFailed) as e:
        M.rollback(pg_url, d, names=["20240103000000_c"])
    assert "20240102000000_b was applied after" in str(e.value) and "Nothing was rolled back" in str(e.value)
    assert tables(pg_url) == {"A", "B", "C", "_prisma_migrations"}
    assert M.rollback(pg_url, d, names=["20240102000000_b"]).rolled_back == ("20240102000000_b",)
    assert tables(pg_url) == {"A", "C", "_prisma_migrations"}
    assert M.status(pg_url, d).pending == ("20240102000000_b",)
