"""Database URLs as Prisma writes them, parsed once into what our drivers need.

Postgres: `postgresql://user:pass@host:port/db?schema=public` (also `postgres://`).
Prisma-only query parameters (`schema`, `connection_limit`, `pgbouncer`, ...) are not
libpq options, so they are taken out; `schema` becomes the connection's `search_path`,
which is what Prisma does with it. libpq options (`sslmode`, `connect_timeout`, ...)
pass through.

SQLite: `file:./dev.db`. Prisma resolves a relative path against the directory of
`schema.prisma` (normally `prisma/`), so `file:./dev.db` is `prisma/dev.db`. We do the
same: relative paths are resolved against `sqlite_base`, which callers set to the parent
of the migrations folder (`prisma/migrations` -> `prisma/`). `file:/abs/path.db` and
`sqlite:///abs/path.db` are absolute.

The URL may be a `Secret`; its value is only revealed into the driver's conninfo, and
every message shows `masked`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from deploy.errors import SettingsError
from deploy.redact import mask_url, reveal

# Query parameters that Prisma's connection strings accept but libpq rejects
# (prisma docs, "PostgreSQL connection URL arguments").
_PRISMA_ONLY = {
    "schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout",
    "statement_cache_size", "sslaccept", "sslidentity", "sslpassword", "max_connection_lifetime",
    "max_idle_connection_lifetime", "single_use_connections",
}
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")
DEFAULT_CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class DbUrl:
    provider: Literal["postgresql", "sqlite"]
    masked: str                      # safe to print
    schema: str = "public"           # Postgres search_path (Prisma's ?schema=)
    database: str = ""               # Postgres database name
    sqlite_path: Path | None = None  # absolute path of the SQLite file
    _conninfo: str = ""              # libpq URL with the password; never printed

    def __repr__(self) -> str:
        return f"DbUrl({self.provider!r}, {self.masked!r})"

    def conninfo(self) -> str:
        """The libpq connection URL (with its password) for psycopg."""
        return self._conninfo

    def with_database(self, name: str) -> "DbUrl":
        """The same server and credentials, another database (Postgres only)."""
        parts = urlsplit(self._conninfo)
        new = urlunsplit(parts._replace(path="/" + name))
        return DbUrl("postgresql", mask_url(new), self.schema, name, None, new)


def parse(url: str, *, sqlite_base: str | Path | None = None) -> DbUrl:
    """Parse a Prisma-style database URL; SettingsError (password masked) if it is not one."""
    plain = reveal(url).strip() if url is not None else ""
    if not plain:
        raise SettingsError(
            "The database URL is empty.",
            "Set the environment's DATABASE_URL variable (see database.url_var in env/<name>.toml).",
        )
    lower = plain.lower()
    if lower.startswith(("postgresql://", "postgres://")):
        return _parse_postgres(plain)
    if lower.startswith(("file:", "sqlite:")):
        return _parse_sqlite(plain, sqlite_base)
    raise SettingsError(
        f"Unsupported database URL {mask_url(plain)!r}.",
        "Use postgresql://user:password@host:5432/db?schema=public or file:./dev.db (SQLite).",
    )


def _parse_postgres(plain: str) -> DbUrl:
    try:
        parts = urlsplit(plain)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as e:
        raise SettingsError(f"Malformed Postgres URL {mask_url(plain)!r}: {e}.") from None
    if not parts.hostname and "host=" not in parts.query:
        raise SettingsError(f"Postgres URL {mask_url(plain)!r} names no host.")
    params = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    kept: list[tuple[str, str]] = []
    for k, v in params:
        if k == "schema":
            schema = v or "public"
        elif k not in _PRISMA_ONLY:
            kept.append((k, v))
    if not _SCHEMA_NAME.match(schema):
        raise SettingsError(
            f"Postgres URL {mask_url(plain)!r}: schema={schema!r} is not a plain identifier.",
            "Use letters, digits and underscores for the schema name.",
        )
    if not any(k == "connect_timeout" for k, _ in kept):
        kept.append(("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT)))
    kept = [(k, v) for k, v in kept if k != "options"] + [("options", f"-csearch_path={schema}")]
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(kept)))
    database = unquote(parts.path.lstrip("/")) or (parts.username or "")
    return DbUrl("postgresql", mask_url(plain), schema, database, None, conninfo)


def _parse_sqlite(plain: str, base: str | Path | None) -> DbUrl:
    if plain.lower().startswith("sqlite:"):
        rest = plain[len("sqlite:"):]
        rest = "/" + rest.lstrip("/") if rest.startswith("///") else rest.lstrip("/")
    else:
        rest = plain[len("file:"):]
    rest = rest.split("?", 1)[0]
    if rest.startswith("//") and not rest.startswith("///"):
        rest = rest[2:]  # file://relative is how some people write it; treat like file:
    elif rest.startswith("///"):
        rest = rest[2:]
    if not rest:
        raise SettingsError(f"SQLite URL {plain!r} names no file.", "Write it as file:./dev.db.")
    p = Path(unquote(rest))
    if not p.is_absolute():
        p = Path(base or ".") / p
    return DbUrl("sqlite", plain, sqlite_path=p.resolve())
