"""Prisma-compatible migrations for Postgres (psycopg 3) and SQLite (stdlib sqlite3).

The Prisma CLI needs a separately downloaded schema engine, so deploy runners carry this
runner, which reads `prisma/migrations/<timestamp>_<name>/migration.sql` and reads and
writes `_prisma_migrations` exactly as Prisma's schema engine does (prisma/prisma-engines):

- table DDL: `schema-engine/connectors/sql-schema-connector/src/flavour/postgres.rs` and
  `.../flavour/sqlite.rs` (`create_migrations_table`), copied column for column;
- rows: `.../sql-schema-connector/src/sql_migration_persistence.rs`: a UUID v4 `id`, the
  checksum, `started_at` from the client clock at start, `applied_steps_count += 1` and
  `finished_at` on success, the error text in `logs` on failure. `resolve --applied`
  inserts `started_at = finished_at = now`, `logs = ''` and leaves `applied_steps_count`
  at its default 0. On SQLite, Prisma's driver (quaint `connector/sqlite/conversion.rs`)
  stores DateTime values as integer epoch milliseconds; so do we.
- checksum: `schema-connector/src/checksum.rs`: SHA-256 hex of `migration.sql`; a stored
  checksum also matches the script with CRLF turned to LF or LF to CRLF, and old
  non-zero-padded hex is accepted.
- `migrate deploy`: `schema-engine/core/src/commands/apply_migrations.rs`: provider check
  against `migration_lock.toml` (P3019), `pg_advisory_lock(72707369)` with a 10 s timeout,
  non-empty schema without the table refused (P3005), any unfinished, not-rolled-back row
  stops everything (P3009), then every folder without a not-rolled-back row is applied in
  name order, stopping at the first failure (P3018). `deploy` never compares checksums.
- `resolve`: `schema-engine/core/src/commands/mark_migration_applied.rs` and
  `mark_migration_rolled_back.rs` (P3017, P3008, P3011, P3012).

Where we differ, deliberately:

- Transactions. Prisma sends the whole script in one simple-query message
  (`flavour/postgres/connection.rs`, `apply_migration_script`), which Postgres runs as one
  implicit transaction, but records the row's success in a separate statement. We run the
  script (still one simple-query execution: psycopg uses the simple protocol when there
  are no parameters) and the row's `finished_at` update in ONE explicit transaction, so a
  migration is either applied and recorded, or not applied at all (and then recorded as
  failed with the database error in `logs`, in Prisma's P3018 wording). The started row is
  inserted before, in its own statement, as Prisma does, so a killed runner leaves the
  same "failed" trace Prisma would.
- `ALTER TYPE ... ADD VALUE` and other statements that refuse a transaction block. On
  Postgres >= 12 ADD VALUE runs inside a transaction; only *using* the new value in the
  same transaction fails (SQLSTATE 55P04) - Prisma's migrations fail there too, which is
  why `prisma migrate dev` writes enum additions as their own migration. On Postgres < 12
  (ADD VALUE) and for `CREATE INDEX CONCURRENTLY` the server answers SQLSTATE 25001 inside
  a transaction block. Then our transaction has rolled back (schema untouched) and we run
  the script exactly as Prisma does: one simple-query execution outside any explicit
  transaction (a single statement then runs on its own, several share an implicit one).
  So every script that `prisma migrate deploy` can apply, we can apply.
- A script's own `BEGIN;` ... `COMMIT;` (Prisma writes these around Postgres enum changes) would
  end our transaction early: its plain BEGIN/COMMIT statements are left out (`_sql`) and the
  whole script runs in our one transaction, so it is applied and recorded, or not at all.
  Only when that cannot work (25001, or 55P04 for a new enum value its own COMMIT made usable)
  does it run as written, as Prisma runs it; a failure then may leave the part before its
  COMMIT applied, so the row is recorded failed with that said in `logs` (PARTIAL_NOTE), and
  nothing (no undo) marks it rolled back as if nothing had happened.
- SQLite. Prisma runs `execute_batch(script)` with no transaction. We wrap the script and
  the bookkeeping in `BEGIN ... COMMIT` (SQLite DDL is transactional), so a failing script
  leaves the file untouched. `PRAGMA foreign_keys=OFF` (in Prisma's redefine-table
  migrations) is a no-op inside a transaction, but foreign keys are off by default on a
  fresh sqlite3 connection, so the effect is the same. A script's own plain
  BEGIN/COMMIT is left out (the whole script is one transaction). The SQLite "lock" is Prisma's
  `PRAGMA main.locking_mode=EXCLUSIVE` plus an immediate write transaction.
- Empty migration.sql (only whitespace) is refused: it is nearly always a half-written
  migration. Prisma's own intentionally-empty migrations carry a comment
  (`-- This is an empty migration.`) and are accepted.
- `rollback` (Prisma has none): runs `down.sql` (Prisma's documented down-migration file)
  and sets `rolled_back_at` on the applied row in the same transaction; a later `deploy`,
  ours or Prisma's, applies the migration again, because deploy skips only names that
  have a row with `rolled_back_at IS NULL`.

Public functions take the database URL (a `str` or `Secret`) and the migrations folder;
they never read the process environment. Results are frozen dataclasses.

    _files      the migration folders, migration_lock.toml, Prisma's checksum (pure or read-only)
    _status     `_prisma_migrations` rows and each migration's state (pure)
    _backend    the backend interface (`Db`) and the row bookkeeping both backends share
    _postgres   PostgresDb: psycopg, pg_advisory_lock, lock/statement timeouts, 25001 fallback
    _sql        a script's top-level statements and its own transaction control (pure)
    _lint       additive or destructive: squawk for Postgres, a conservative classifier for SQLite;
                which destructive ones nobody accepted (unaccepted)
    _sqlite     SqliteDb: sqlite3, exclusive locking mode, epoch-millisecond times
    _runner     migrate, rollback, resolve, status, footprint, empty_database: one `_Session` each

The backend is picked once, from the URL's provider (`BACKENDS`); every operation that
changes the database runs inside one `_Session`: parse -> provider check -> open -> lock,
then unlock and close whatever happens.
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.migrations._backend import (DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT, MIGRATIONS_TABLE,
                                            PARTIAL_NOTE, TIMEOUT_HINT, Db, Timeouts, connection_error, db_error_text,
                                            is_db_error, timeout_note)
    from deploy.migrations._lint import (MigrationLint, find_squawk, judge_postgres, judge_sqlite, lint, require_squawk,
                                         unaccepted)
    from deploy.migrations._files import (DOWN_SCRIPT, LOCK_FILE, SCRIPT, LocalMigration, check_provider, checksum,
                                          checksum_matches, load_migrations, lock_provider, parse_lock_provider,
                                          refuse_invalid)
    from deploy.migrations._postgres import (ADVISORY_LOCK_ID, POSTGRES_TABLE_DDL, PostgresDb, session_settings_sql,
                                             table_should_be_ignored)
    from deploy.migrations._sqlite import (SQLITE_TABLE_DDL, SqliteDb)
    from deploy.migrations._status import (MigrationRecord, MigrationStatus, State, StatusReport, compute_status,
                                           pending_migrations, refuse_failed, render_status)
    from deploy.migrations._runner import (BACKENDS, MigrateResult, RollbackResult, ResolveResult, Footprint,
                                           prisma_deploy_argv, backend_for, open_db, status, migrate, rollback, resolve,
                                           footprint, empty_database)
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.migrations._backend": ("DEFAULT_LOCK_TIMEOUT", "DEFAULT_STATEMENT_TIMEOUT", "MIGRATIONS_TABLE",
                                       "PARTIAL_NOTE", "TIMEOUT_HINT", "Db", "Timeouts", "connection_error",
                                       "db_error_text", "is_db_error", "timeout_note"),
        "deploy.migrations._lint": ("MigrationLint", "find_squawk", "judge_postgres", "judge_sqlite", "lint",
                                    "require_squawk", "unaccepted"),
        "deploy.migrations._files": ("DOWN_SCRIPT", "LOCK_FILE", "SCRIPT", "LocalMigration", "check_provider",
                                     "checksum", "checksum_matches", "load_migrations", "lock_provider",
                                     "parse_lock_provider", "refuse_invalid"),
        "deploy.migrations._postgres": ("ADVISORY_LOCK_ID", "POSTGRES_TABLE_DDL", "PostgresDb",
                                        "session_settings_sql", "table_should_be_ignored"),
        "deploy.migrations._sqlite": ("SQLITE_TABLE_DDL", "SqliteDb"),
        "deploy.migrations._status": ("MigrationRecord", "MigrationStatus", "State", "StatusReport",
                                      "compute_status", "pending_migrations", "refuse_failed", "render_status"),
        "deploy.migrations._runner": ("BACKENDS", "MigrateResult", "RollbackResult", "ResolveResult", "Footprint",
                                      "prisma_deploy_argv", "backend_for", "open_db", "status", "migrate",
                                      "rollback", "resolve", "footprint", "empty_database"),
    })

__all__ = [
    "ADVISORY_LOCK_ID", "BACKENDS", "Footprint", "footprint", "empty_database", "LocalMigration", "MigrationRecord",
    "MigrationStatus", "StatusReport", "MigrateResult", "RollbackResult", "ResolveResult", "checksum",
    "checksum_matches", "parse_lock_provider", "load_migrations", "lock_provider", "check_provider",
    "compute_status", "pending_migrations", "render_status", "prisma_deploy_argv", "status", "migrate", "rollback",
    "resolve", "POSTGRES_TABLE_DDL", "SQLITE_TABLE_DDL", "Timeouts", "session_settings_sql", "connection_error",
    "backend_for", "open_db", "MigrationLint", "lint", "find_squawk", "require_squawk", "judge_postgres",
    "judge_sqlite", "unaccepted",
]
