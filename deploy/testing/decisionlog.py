"""A decision-log table in a real Postgres database, shaped the way Prisma creates it.

The example app's `DecisionLog` model (`@@map("decision_log")`, `createdAt` mapped to
`created_at`) becomes, through `prisma migrate dev` on PostgreSQL, the DDL below:
`DateTime` is `TIMESTAMP(3)` without a time zone, holding UTC (prisma-engines,
`sql-schema-describer` / `quaint` conversions), `Int @id @default(autoincrement())` is
`SERIAL`. Plain helpers, imported by the tests that need them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

PRISMA_DDL = """\
CREATE TABLE {table} (
    "id" SERIAL NOT NULL,
    "shopId" TEXT NOT NULL,
    "operator" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'ok',
    "detail" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT {pkey} PRIMARY KEY ("id")
);
CREATE INDEX {idx} ON {table}("status", "created_at");
"""


def create_decision_log(url: str, rows: Iterable[tuple[datetime, str]] = (), *, table: str = "decision_log",
                        schema: str | None = None) -> None:
    """Create the Prisma-shaped table and insert `(created_at, status)` rows (aware datetimes)."""
    import psycopg
    from psycopg import sql

    ident = sql.Identifier(*(p for p in (schema, table) if p))
    with psycopg.connect(url, autocommit=True) as conn:
        if schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(PRISMA_DDL).format(
            table=ident, pkey=sql.Identifier(f"{table}_pkey"), idx=sql.Identifier(f"{table}_status_created_at_idx")))
    insert_rows(url, rows, table=table, schema=schema)


def insert_rows(url: str, rows: Iterable[tuple[datetime, str]], *, table: str = "decision_log",
                schema: str | None = None) -> None:
    """Insert rows as Prisma does: the UTC wall time into the zone-less column."""
    import psycopg
    from psycopg import sql

    ident = sql.Identifier(*(p for p in (schema, table) if p))
    data = [("shop_1", "alice", "refund", status, at.astimezone(timezone.utc).replace(tzinfo=None))
            for at, status in rows]
    if not data:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(sql.SQL('INSERT INTO {} ("shopId", "operator", "action", "status", "created_at") '
                                    "VALUES (%s, %s, %s, %s, %s)").format(ident), data)
