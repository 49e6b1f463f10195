"""Pure parts of the migration runner: checksums, lock file, status decisions, URLs."""

import filecmp
import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from psycopg.conninfo import conninfo_to_dict

from deploy import dburl
from deploy import migrations as M
from deploy.errors import MigrationFailed, SettingsError

FIXTURES = Path(__file__).parent / "fixtures" / "migrations"
T = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_checksum_is_prismas_sha256_hex():
    # The value from prisma-engines' own test (schema-connector/src/checksum.rs).
    assert M.checksum("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.mark.parametrize("script, stored_from, matches", [
    ("a\nb\n", "a\nb\n", True),
    ("a\r\nb\r\n", "a\nb\n", True),
    ("a\nb\n", "a\r\nb\r\n", True),
    ("abc\n", "abc", False),
    ("abc", "abcd", False),
], ids=["same", "crlf-file-lf-row", "lf-file-crlf-row", "trailing-newline-differs", "different"])
def test_checksum_comparison_tolerates_line_endings_only(script, stored_from, matches):
    assert M.checksum_matches(script, M.checksum(stored_from)) is matches


def test_checksum_comparison_accepts_prismas_old_unpadded_hex():
    digest = hashlib.sha256(b"x").digest()
    old = "".join(f"{b:x}" for b in digest)
    assert len(old) < 64
    assert M.checksum_matches("x", old)


@pytest.mark.parametrize("text, provider", [
    ('# comment\n# comment\nprovider = "postgresql"\n', "postgresql"),
    ('provider = "sqlite"', "sqlite"),
    ("# nothing here\n", "<PROVIDER NOT FOUND>"),
], ids=["prisma-written", "bare", "no-provider-line"])
def test_lock_file_provider_is_read_like_prisma(text, provider):
    assert M.parse_lock_provider(text) == provider


def _local(name, script="SELECT 1;", problem=""):
    return M.LocalMigration(name, Path("/m") / name, script, M.checksum(script) if script is not None else None,
                            False, problem)


def _row(name, script="SELECT 1;", finished=True, rolled_back=False, logs=None):
    return M.MigrationRecord("id-" + name, M.checksum(script), T if finished else None, name, logs,
                             T if rolled_back else None, T, 1 if finished else 0)


@pytest.mark.parametrize("local, rows, expected", [
    ([_local("1_a")], [_row("1_a")], "applied"),
    ([_local("1_a")], [], "pending"),
    ([_local("1_a")], [_row("1_a", finished=False, logs="A migration failed...\n\nDatabase error:\nERROR: boom")],
     "failed"),
    ([_local("1_a", script="SELECT 2;")], [_row("1_a", script="SELECT 1;")], "checksum_changed"),
    ([], [_row("1_a")], "missing_folder"),
    ([_local("1_a")], [_row("1_a", rolled_back=True)], "pending"),
    ([_local("1_a")], [_row("1_a", finished=False, rolled_back=True), _row("1_a")], "applied"),
    ([_local("1_a", script=None, problem="migration.sql is missing")], [], "invalid"),
], ids=["applied", "pending", "failed", "checksum-changed", "row-without-folder", "rolled-back-is-pending-again",
        "resolved-then-applied", "folder-without-sql"])
def test_status_state_of_one_migration(local, rows, expected):
    (only,) = M.compute_status(local, rows)
    assert only.state == expected
    assert only.name == "1_a"


def test_failed_status_shows_the_database_error():
    (s,) = M.compute_status([_local("1_a")], [_row("1_a", finished=False,
                                                       logs="A migration failed.\n\nDatabase error:\nERROR: boom\n")])
    assert s.detail == "ERROR: boom"


def test_pending_skips_names_with_a_not_rolled_back_row_only():
    local = [_local("1_a"), _local("2_b"), _local("3_c")]
    rows = [_row("1_a"), _row("2_b", rolled_back=True), _row("3_c", finished=False)]
    assert [m.name for m in M.pending_migrations(local, rows)] == ["2_b"]


def test_render_status_is_a_table_with_counts():
    report = M.StatusReport("postgresql://u:***@h/db", "postgresql",
                            M.compute_status([_local("1_a"), _local("2_b")], [_row("1_a")]), True)
    text = M.render_status(report)
    assert "1 applied, 1 pending, 0 failed, 0 drift" in text
    assert "2_b" in text.splitlines()[-1] and "pending" in text.splitlines()[-1]


def test_provider_mismatch_is_refused(tmp_path):
    (tmp_path / "migration_lock.toml").write_text('provider = "sqlite"\n')
    with pytest.raises(MigrationFailed, match="P3019") as e:
        M.check_provider(tmp_path, "postgresql")
    assert "'sqlite'" in str(e.value) and "runbooks" in e.value.hint


def test_missing_migrations_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MigrationFailed, match="does not exist"):
        M.load_migrations(tmp_path / "nope")


def test_prisma_deploy_argv_names_the_schema_beside_the_migrations(tmp_path):
    (tmp_path / "prisma" / "migrations").mkdir(parents=True)
    (tmp_path / "prisma" / "schema.prisma").write_text("")
    assert M.prisma_deploy_argv(tmp_path / "prisma" / "migrations") == [
        "npx", "--no", "prisma", "migrate", "deploy", "--schema", str(tmp_path / "prisma" / "schema.prisma")]


# ---------------------------------------------------------------- URLs

def test_postgres_url_drops_prisma_params_and_sets_search_path():
    u = dburl.parse("postgresql://app:s3cret@db.example:6543/occ?schema=tenant_1&connection_limit=5&sslmode=require")
    assert u.provider == "postgresql" and u.schema == "tenant_1" and u.database == "occ"
    assert "s3cret" not in u.masked and "s3cret" not in repr(u)
    info = conninfo_to_dict(u.conninfo())
    assert "connection_limit" not in info and "schema" not in info
    assert info["sslmode"] == "require" and info["options"] == '-c search_path="tenant_1"'
    assert info["connect_timeout"] == "5"
    assert u.notes == ("connection_limit=5: Prisma Client's pool size; not passed to libpq",)


@pytest.mark.parametrize("url, expected", [
    ("postgresql://app:pw@h/db?schema=MySchema",
     {"host": "h", "dbname": "db", "user": "app", "options": '-c search_path="MySchema"'}),
    ("postgresql://app:pw@h/db?options=-c%20statement_timeout%3D5s&schema=s1",
     {"options": '-c statement_timeout=5s -c search_path="s1"'}),
    ("postgresql://app:pw@h1:5432,h2:5433/db?target_session_attrs=read-write",
     {"host": "h1,h2", "port": "5432,5433", "target_session_attrs": "read-write"}),
    ("postgresql://app:p%40ss%2Fw@h/db", {"password": "p@ss/w", "host": "h"}),
    ("postgres://app@/db?host=/var/run/postgresql", {"host": "/var/run/postgresql", "user": "app"}),
    ("postgresql://app:pw@h:6543/db?pgbouncer=true&connect_timeout=12", {"port": "6543", "connect_timeout": "12"}),
], ids=["schema-case-kept-quoted", "user-options-kept", "multi-host", "encoded-at-and-slash", "socket-dir",
        "pgbouncer-stripped"])
def test_postgres_urls_are_read_by_libpq(url, expected):
    info = conninfo_to_dict(dburl.parse(url).conninfo())
    assert "pgbouncer" not in info and "schema" not in info
    for k, v in expected.items():
        assert info[k] == v, k


def test_pgbouncer_and_the_transaction_pooler_port_are_flagged():
    assert dburl.parse("postgresql://a:b@h:6543/db").transaction_pooler.startswith("it uses port 6543")
    u = dburl.parse("postgresql://a:b@h:5432/db?pgbouncer=true")
    assert u.pgbouncer and u.transaction_pooler == "it has pgbouncer=true"
    assert u.notes == ("pgbouncer=true: Prisma's transaction-pooler mode; not passed to libpq",)
    assert dburl.parse("postgresql://a:b@h:5432/db").transaction_pooler is None


@pytest.mark.parametrize("url, what", [
    ("postgresql://app:Zq9@top:secret@db.example:5432/occ", "raw '@'"),
    ("postgresql://app:Zq9/top:secret@db.example:5432/occ", "raw '/'"),
    ("postgresql://app:Zq9top:secret@db.example:5432/occ?bogus=1", "invalid URI query parameter"),
], ids=["raw-at", "raw-slash", "unknown-parameter"])
def test_urls_libpq_would_misread_are_refused_with_the_password_masked(url, what):
    with pytest.raises(SettingsError) as e:
        dburl.parse(url)
    text = str(e.value) + e.value.hint
    assert what in text and "Zq9" not in text and "secret" not in text and "postgresql://app:***@" in text


@pytest.mark.parametrize("url, shown", [
    ("postgresql://app:Zq9@top@db.example:5432/occ", "postgresql://app:***@db.example:5432/occ"),
    ("postgresql+psycopg://app:Zq9/top@db.example/occ", "postgresql+psycopg://app:***@db.example/occ"),
    ("postgresql://db.example/occ?user=app&password=Zq9top", "postgresql://db.example/occ?user=app&password=***"),
], ids=["raw-at", "raw-slash", "password-parameter"])
def test_mask_hides_every_form_of_password(url, shown):
    assert dburl.mask(url) == shown


@pytest.mark.parametrize("url, base, expected", [
    ("file:./dev.db", "/app/prisma", "/app/prisma/dev.db"),
    ("file:dev.db", "/app/prisma", "/app/prisma/dev.db"),
    ("file:/var/lib/occ.db", "/app/prisma", "/var/lib/occ.db"),
    ("sqlite:///var/lib/occ.db", "/app/prisma", "/var/lib/occ.db"),
], ids=["prisma-relative", "bare-relative", "absolute", "sqlalchemy-style"])
def test_sqlite_urls_resolve_like_prisma(url, base, expected):
    assert dburl.parse(url, sqlite_base=base).sqlite_path == Path(expected)


@pytest.mark.parametrize("url", ["mysql://u:topsecret@h/db", "", "postgresql://u:topsecret@h:notaport/db"],
                         ids=["other-provider", "empty", "bad-port"])
def test_bad_urls_are_settings_errors_without_the_password(url):
    with pytest.raises(SettingsError) as e:
        dburl.parse(url)
    assert "topsecret" not in str(e.value)


@pytest.mark.slow
def test_committed_fixture_history_is_the_generators_output(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", FIXTURES / "generate_postgres_history.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    names = gen.write(tmp_path)
    assert len(names) >= 100
    committed = FIXTURES / "postgres_history"
    assert sorted(p.name for p in committed.iterdir() if p.is_dir()) == names
    for n in names:
        for f in ("migration.sql", "down.sql"):
            assert filecmp.cmp(tmp_path / n / f, committed / n / f, shallow=False), f"{n}/{f} differs"


# ---------------------------------------------------------------- session URL and timeouts

POOLED = "postgresql://app:pool-pw@aws-0.pooler.supabase.com:6543/postgres?pgbouncer=true&connection_limit=1"
DIRECT = "postgresql://app:direct-pw@db.abc.supabase.co:5432/postgres"


@pytest.mark.parametrize("environ, expected", [
    ({"DATABASE_URL": POOLED, "DIRECT_URL": DIRECT}, (DIRECT, "DIRECT_URL")),
    ({"DATABASE_URL": DIRECT}, (DIRECT, "DATABASE_URL")),
    ({"DATABASE_URL": DIRECT, "DIRECT_URL": ""}, (DIRECT, "DATABASE_URL")),
    ({"DATABASE_URL": "file:./dev.db"}, ("file:./dev.db", "DATABASE_URL")),
    ({}, ("", "DATABASE_URL")),
], ids=["supabase-two-urls", "direct-only", "empty-direct", "sqlite", "nothing-set"])
def test_session_url_prefers_prismas_direct_url(environ, expected):
    assert dburl.session_url(environ, "DATABASE_URL", "DIRECT_URL") == expected


@pytest.mark.parametrize("environ, var", [
    ({"DATABASE_URL": POOLED}, "DATABASE_URL"),
    ({"DATABASE_URL": DIRECT, "DIRECT_URL": POOLED}, "DIRECT_URL"),
    ({"DATABASE_URL": "postgresql://app:pool-pw@h:5432/db?pgbouncer=true"}, "DATABASE_URL"),
], ids=["pooled-url-only", "direct-url-is-the-pooler", "pgbouncer-flag-on-5432"])
def test_session_work_on_a_transaction_pooler_is_refused(environ, var):
    with pytest.raises(SettingsError) as e:
        dburl.session_url(environ, "DATABASE_URL", "DIRECT_URL")
    text = str(e.value)
    assert text.startswith(f"{var} (postgresql://app:***@") and "transaction pooler" in text
    assert "pool-pw" not in text and "DIRECT_URL" in e.value.hint


def test_migration_sessions_are_bounded_by_the_settings():
    from deploy.config import DatabaseSection

    t = M.Timeouts.of(DatabaseSection(lock_timeout=2.5, statement_timeout=0))
    assert M.session_settings_sql(t) == ["SET lock_timeout = '2500ms'", "SET statement_timeout = '0ms'"]
    assert M.Timeouts.of(None, 0.3) == M.Timeouts(0.3, 900.0)


# ---------------------------------------------------------------- backends: picked once, from the URL

@pytest.mark.parametrize("url, backend", [
    ("postgresql://occ:pw@db.example:5432/occ?schema=public", "PostgresDb"),
    ("postgres://occ:pw@db.example/occ", "PostgresDb"),
    ("file:./dev.db", "SqliteDb"),
    ("sqlite:///var/lib/occ.db", "SqliteDb"),
], ids=["postgresql", "postgres-alias", "sqlite-file", "sqlite-absolute"])
def test_the_url_picks_one_backend(url, backend):
    assert M.backend_for(dburl.parse(url, sqlite_base="/app/prisma")).__name__ == backend


# The same bookkeeping statement per backend: Prisma's SQL, the driver's placeholders, and
# the time as each stores it (TIMESTAMPTZ; epoch milliseconds in SQLite, as quaint writes it).
@pytest.mark.parametrize("provider, url, sql, stamp", [
    ("postgresql", "postgresql://u:p@h/db",
     "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, finished_at = %s WHERE id = %s",
     datetime),
    ("sqlite", "file:./dev.db",
     "UPDATE _prisma_migrations SET applied_steps_count = applied_steps_count + 1, finished_at = ? WHERE id = ?",
     int),
], ids=["postgres", "sqlite"])
def test_each_backend_writes_the_finished_row_with_its_placeholders_and_time_type(provider, url, sql, stamp):
    parsed = dburl.parse(url, sqlite_base="/app/prisma")
    db = M.BACKENDS[provider](parsed, conn=None)
    text, (finished_at, rid) = db.finish_sql("row-1")
    assert (text, rid) == (sql, "row-1")
    assert isinstance(finished_at, stamp)
    text, (rolled_back_at, _) = db.rolled_back_sql("row-1")
    assert text == sql.split(" SET ")[0] + " SET rolled_back_at = " + sql.split("finished_at = ")[1]
    assert isinstance(rolled_back_at, stamp)


def test_the_provider_is_checked_before_any_connection_is_opened(tmp_path):
    (tmp_path / "migration_lock.toml").write_text('provider = "sqlite"\n')
    # Port 1 on loopback refuses connections: P3019 must come first, from the files alone.
    for op in (M.status, M.migrate, M.rollback):
        with pytest.raises(MigrationFailed, match="P3019"):
            op("postgresql://u:p@127.0.0.1:1/db", tmp_path)


@pytest.mark.parametrize("url, what", [
    ("postgresql://app:Zq9%zzTopSecret@db.example:5432/occ", "raw '%'"),
    ("postgresql://app:Zq9%0zTopSecret@db.example:5432/occ", "raw '%'"),
    ("postgresql://app:Zq9%00TopSecret@db.example:5432/occ", "%00"),
    ("postgresql://app:Zq9\tzzTopSecret@db.example:5432/occ", "whitespace"),
    ("postgresql://app:Zq9?zzTopSecret@db.example:5432/occ", "raw '?'"),
    ("postgresql://app:Zq9?zz=TopSecret@db.example:5432/occ", "Malformed"),
], ids=["raw-percent", "half-percent", "nul", "whitespace", "raw-question-mark", "raw-question-mark-equals"])
def test_passwords_libpq_would_quote_are_refused_without_any_part_of_them(url, what):
    with pytest.raises(SettingsError) as e:
        dburl.parse(url)
    text = str(e.value) + e.value.hint
    assert what in text and "postgresql://app:***@db.example:5432/occ" in text
    assert not any(piece in text for piece in ("Zq9", "zzTop", "TopSecret")), text


def test_a_percent_encoded_password_and_a_query_user_with_an_at_sign_are_still_read():
    assert dburl.parse("postgresql://app:Zq9%25zz%20Top%3FSecret@db.example/occ").params()["password"] == \
        "Zq9%zz Top?Secret"
    assert dburl.parse("postgresql://db.example/occ?user=me@corp").params()["user"] == "me@corp"
