"""Health of the operators' decision log (a table in the Supabase Postgres database).

The go-live checklist (and the watch step, with `watch.decision_log_check`) asks three
questions of it: does the table exist with the configured columns, is its newest row
younger than `decision_log.max_age_minutes`, and are its error rows of the last hour no
more than `decision_log.max_errors_last_hour`. Table and column names come from
`[decision_log]` in env/<name>.toml and reach SQL only as quoted identifiers
(`psycopg.sql.Identifier`), never by string interpolation.

Gathering (`gather`: one short, read-only connection) is apart from judging (`judge`:
pure over the facts and the clock), so every verdict is testable without a database.
An unreachable database, a missing table or a missing column is a fact with a reason,
never a traceback; the URL's password is masked everywhere.

Times: Prisma maps `DateTime` to `timestamp(3)` (no time zone) on PostgreSQL and writes
UTC into it (prisma-engines, `quaint/src/connector/postgres/conversion.rs`), so the
session runs in UTC and a zone-less value is read as UTC. The clock is passed in; the
server's clock is not used, so a test needs no sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from deploy import clock, dburl
from deploy.config import DecisionLogSection
from deploy.errors import SettingsError
from deploy.migrations import connection_error
from deploy.redact import Secret, mask_url, redact, reveal

__all__ = ["DecisionLogFacts", "DecisionLogHealth", "gather", "judge", "health", "split_table"]

STATEMENT_TIMEOUT_MS = 10_000          # a health check must not hang on a locked or huge table
FUTURE_SKEW = timedelta(minutes=5)     # newer than now + this: a clock problem hides staleness

# Relation kinds a decision log may be: table, partitioned table, view, materialized view, foreign table.
_RELATION_SQL = (
    "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relname = %s AND n.nspname = COALESCE(%s, current_schema()) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
)
# pg_attribute, not information_schema.columns: the latter hides columns the role has no privilege on,
# which would turn "permission denied" into a misleading "column missing".
_COLUMNS_SQL = (
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), t.typcategory "
    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)


@dataclass(frozen=True)
class DecisionLogFacts:
    """What one look at the database found; `error` is set when the look itself failed."""

    url: str                                  # masked
    table: str                                # as configured (schema-qualified or not)
    table_exists: bool = False
    columns: tuple[str, ...] = ()             # the table's columns, in order
    time_column_type: str | None = None       # format_type() of the time column
    time_column_is_time: bool = False         # its type is in Postgres's date/time category
    newest_at: datetime | None = None         # UTC
    errors_last_hour: int | None = None
    error: str = ""                           # connection or query failure (redacted), "" when none


@dataclass(frozen=True)
class DecisionLogHealth:
    ok: bool
    table_exists: bool
    newest_at: datetime | None
    errors_last_hour: int | None
    reasons: tuple[str, ...]
    url: str = ""                             # masked
    table: str = ""
    now: datetime | None = None
    reachable: bool = True                    # False: the database could not be read at all

    def describe(self) -> str:
        """One line for a checklist's evidence column."""
        where = f"{self.table} on {self.url}" if self.url else self.table
        if not self.reachable:
            return f"{where}: not readable"
        if not self.table_exists:
            return f"{where}: table not found"
        if self.newest_at is None and self.errors_last_hour is None:
            return f"{where}: table found, not readable as configured"
        parts = []
        if self.newest_at is not None and self.now is not None:
            age = (self.now - self.newest_at).total_seconds()
            parts.append(f"newest row {clock.age(age)} ago ({self.newest_at:%Y-%m-%d %H:%M:%S} UTC)")
        elif self.newest_at is None:
            parts.append("no rows")
        if self.errors_last_hour is not None:
            parts.append(f"{self.errors_last_hour} error row(s) in the last hour")
        return f"{where}: " + ", ".join(parts)


# ---------------------------------------------------------------- pure parts

def split_table(name: str) -> tuple[str | None, str]:
    """`"decision_log"` -> (None, "decision_log"); `"audit.decision_log"` -> ("audit", "decision_log").

    None means the connection's current schema (Prisma's `?schema=` becomes the search_path)."""
    parts = (name or "").split(".")
    if len(parts) > 2 or any(p == "" for p in parts):
        raise ValueError(f"decision_log.table = {name!r} is not a table name or schema.table")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _utc(t: datetime | date | None) -> datetime | None:
    if t is None:
        return None
    if not isinstance(t, datetime):
        return datetime(t.year, t.month, t.day, tzinfo=timezone.utc)
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)



def judge(facts: DecisionLogFacts, section: DecisionLogSection, now: datetime) -> DecisionLogHealth:
    """The verdict on `facts` under the section's thresholds at `now` (pure)."""
    now = _utc(now) or now
    reasons: list[str] = []
    where = f"{facts.table!r} on {facts.url}"

    def done() -> DecisionLogHealth:
        return DecisionLogHealth(not reasons, facts.table_exists, facts.newest_at, facts.errors_last_hour,
                                 tuple(reasons), facts.url, facts.table, now, reachable=not facts.error)

    if facts.error:
        reasons.append(facts.error)
        return done()
    if not facts.table_exists:
        reasons.append(f"the decision-log table {where} does not exist "
                       f"(set decision_log.table to its name, or apply the migration that creates it)")
        return done()
    wanted = {"time_column": section.time_column, "status_column": section.status_column}
    missing = [f"{key} = {col!r}" for key, col in wanted.items() if col not in facts.columns]
    if missing:
        reasons.append(f"the table {where} has no column for decision_log.{', decision_log.'.join(missing)} "
                       f"(its columns: {', '.join(facts.columns) or 'none'})")
        return done()
    if not facts.time_column_is_time:
        reasons.append(f"decision_log.time_column {section.time_column!r} of {where} is "
                       f"{facts.time_column_type}, not a date/time column")
        return done()
    if facts.newest_at is None:
        reasons.append(f"the table {where} has no rows: nothing has been logged")
    else:
        age = now - facts.newest_at
        limit = timedelta(minutes=section.max_age_minutes)
        if age > limit:
            reasons.append(f"the newest row of {where} is {clock.age(age.total_seconds())} old "
                           f"(limit decision_log.max_age_minutes = {section.max_age_minutes}): is logging stuck?")
        elif -age > FUTURE_SKEW:
            reasons.append(f"the newest row of {where} is dated {clock.age(-age.total_seconds())} in the future "
                           f"({facts.newest_at:%Y-%m-%d %H:%M:%S} UTC): a clock is wrong, so its age says nothing")
    if facts.errors_last_hour is not None and facts.errors_last_hour > section.max_errors_last_hour:
        reasons.append(f"{facts.errors_last_hour} rows of {where} with {section.status_column} = "
                       f"{section.error_value!r} in the last hour "
                       f"(limit decision_log.max_errors_last_hour = {section.max_errors_last_hour})")
    return done()


# ---------------------------------------------------------------- gathering

def gather(url: Secret | str | None, section: DecisionLogSection, now: datetime) -> DecisionLogFacts:
    """Look at the decision-log table once; failures become `error`, never exceptions."""
    now = _utc(now) or now
    table = section.table
    if url is None or not reveal(url).strip():
        return DecisionLogFacts("(unset)", table, error=(
            f"no decision-log database URL: {section.url_var} is not set "
            f"(set it where secrets go; see decision_log.url_var)"))
    try:
        u = dburl.parse(url)
    except SettingsError as e:
        return DecisionLogFacts(mask_url(url), table, error=f"{section.url_var}: {e.message}")
    if u.provider != "postgresql":
        return DecisionLogFacts(u.masked, table, error=(
            f"{section.url_var} = {u.masked} is not a Postgres URL; the decision log lives in Postgres"))
    try:
        schema, name = split_table(table)
    except ValueError as e:
        return DecisionLogFacts(u.masked, table, error=str(e))

    import psycopg
    from psycopg import sql

    try:
        conn = psycopg.connect(u.conninfo(), autocommit=True)
    except psycopg.Error as e:
        err = connection_error(u, e)
        return DecisionLogFacts(u.masked, table, error=f"{err.message} ({err.hint})")
    try:
        conn.execute("SET TIME ZONE 'UTC'")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT_MS)))
        conn.execute("SET default_transaction_read_only = on")
        rel = conn.execute(_RELATION_SQL, (name, schema)).fetchone()
        if rel is None:
            return DecisionLogFacts(u.masked, table)
        cols = conn.execute(_COLUMNS_SQL, (rel[0],)).fetchall()
        names = tuple(c[0] for c in cols)
        types = {c[0]: (c[1], c[2]) for c in cols}
        base = DecisionLogFacts(u.masked, table, True, names)
        if section.time_column not in types or section.status_column not in types:
            return base
        ttype, tcat = types[section.time_column]
        is_time = tcat == "D"
        if not is_time:
            return DecisionLogFacts(u.masked, table, True, names, ttype, False)
        ident = sql.Identifier(*(p for p in (schema, name) if p is not None))
        tcol, scol = sql.Identifier(section.time_column), sql.Identifier(section.status_column)
        newest = (conn.execute(sql.SQL("SELECT max({}) FROM {}").format(tcol, ident)).fetchone() or (None,))[0]
        # ::text so an enum or varchar status column compares with the configured value alike.
        errors = (conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {}::text = %s").format(ident, tcol, scol),
            (now - timedelta(hours=1), section.error_value),
        ).fetchone() or (0,))[0]
        return DecisionLogFacts(u.masked, table, True, names, ttype, True, _utc(newest), int(errors))
    except psycopg.Error as e:
        first = next((ln for ln in redact(str(e)).strip().splitlines() if ln.strip()), type(e).__name__)
        return DecisionLogFacts(u.masked, table, error=f"reading {table!r} on {u.masked} failed: {first}")
    finally:
        conn.close()


def health(url: Secret | str | None, section: DecisionLogSection, now: datetime) -> DecisionLogHealth:
    """Connect, look, judge: the decision log's health at `now`."""
    return judge(gather(url, section, now), section, now)
