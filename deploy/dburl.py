"""Database URLs as Prisma writes them, parsed once into what our drivers need.

Postgres: `postgresql://user:pass@host:port/db?schema=public` (also `postgres://`), and
everything else libpq accepts (several hosts `h1:5432,h2:5433`, `?host=/socket/dir`,
libpq query parameters). The URL is read by libpq itself, through psycopg's
`conninfo_to_dict`, and the connection string is assembled by `make_conninfo`, so what we
connect to is what libpq would connect to. Only three things are done by hand:

- Prisma-only query parameters (`schema`, `connection_limit`, `pgbouncer`, ...) are not
  libpq options (libpq refuses an unknown one), so they are taken out first; each is
  listed in `notes`. `schema` becomes the session's `search_path`, double-quoted as Prisma
  quotes it (quaint: `SET search_path = "<schema>"`), so `MySchema` keeps its case.
  `pgbouncer=true` marks a transaction pooler (see `transaction_pooler`).
- A user's `options` (e.g. `-c statement_timeout=5s`) is kept; the search path is added
  after it.
- A raw `@`, `/`, `?` or `#` inside the user or password makes libpq split the URL elsewhere
  (the password becomes part of the host name or a query parameter, which then shows up in
  error messages); a raw `%` (not two hex digits after it), `%00` or whitespace makes libpq
  refuse it, quoting the token. Such a URL is refused, with the password masked, and the fix
  (percent-encode it) named. libpq's own message is shown with every quoted token masked.

SQLite: `file:./dev.db`. Prisma resolves a relative path against the directory of
`schema.prisma` (normally `prisma/`), so `file:./dev.db` is `prisma/dev.db`. We do the
same: relative paths are resolved against `sqlite_base`, which callers set to the parent
of the migrations folder (`prisma/migrations` -> `prisma/`). `file:/abs/path.db` and
`sqlite:///abs/path.db` are absolute.

The URL may be a `Secret`; its value is only revealed into the driver's conninfo, and
every message shows `masked` (see `mask`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote

from deploy.errors import SettingsError
from deploy.redact import MASK, redact, reveal

# Query parameters that Prisma's connection strings accept but libpq rejects
# (prisma docs, "PostgreSQL connection URL arguments"), with what we do with each.
_PRISMA_ONLY = {
    "schema": "sets the search_path",
    "connection_limit": "Prisma Client's pool size",
    "pool_timeout": "Prisma Client's pool wait",
    "pgbouncer": "Prisma's transaction-pooler mode",
    "socket_timeout": "Prisma's socket timeout",
    "statement_cache_size": "Prisma's prepared-statement cache",
    "sslaccept": "Prisma's certificate check switch",
    "sslidentity": "Prisma's PKCS#12 client identity",
    "max_connection_lifetime": "Prisma Client's pool",
    "max_idle_connection_lifetime": "Prisma Client's pool",
    "single_use_connections": "Prisma Client's pool",
    "application_name_suffix": "Prisma",
}
# A Postgres identifier Prisma's `schema` may name (quoted: case is kept).
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}\Z")
DEFAULT_CONNECT_TIMEOUT = 5
# Supabase's (Supavisor) and most PgBouncer set-ups' transaction-mode port.
TRANSACTION_POOLER_PORT = 6543


@dataclass(frozen=True)
class DbUrl:
    provider: Literal["postgresql", "sqlite"]
    masked: str                      # safe to print
    schema: str = "public"           # Postgres search_path (Prisma's ?schema=)
    database: str = ""               # Postgres database name
    sqlite_path: Path | None = None  # absolute path of the SQLite file
    _conninfo: str = ""              # libpq conninfo with the password; never printed
    hosts: tuple[str, ...] = ()      # Postgres hosts, in libpq's order
    ports: tuple[int, ...] = ()      # Postgres ports (5432 where the URL names none)
    pgbouncer: bool = False          # Prisma's ?pgbouncer=true
    notes: tuple[str, ...] = ()      # what was taken out of the URL for libpq, and why

    def __repr__(self) -> str:
        return f"DbUrl({self.provider!r}, {self.masked!r})"

    def conninfo(self) -> str:
        """The libpq connection string (with its password) for psycopg."""
        return self._conninfo

    def params(self) -> dict[str, str]:
        """The conninfo as libpq's keywords (with the password); for building tool invocations."""
        from psycopg.conninfo import conninfo_to_dict

        return {k: str(v) for k, v in conninfo_to_dict(self._conninfo).items()}

    def with_database(self, name: str) -> "DbUrl":
        """The same server and credentials, another database (Postgres only)."""
        from psycopg.conninfo import make_conninfo

        new = make_conninfo(self._conninfo, dbname=name)
        scheme, sep, rest = self.masked.partition("://")
        masked = scheme + sep + _replace_path(rest, name) if sep else self.masked
        return DbUrl("postgresql", masked, self.schema, name, None, new, self.hosts, self.ports, self.pgbouncer,
                     self.notes)

    @property
    def transaction_pooler(self) -> str | None:
        """Why this URL looks like a transaction pooler (no session state kept), or None."""
        if self.pgbouncer:
            return "it has pgbouncer=true"
        if TRANSACTION_POOLER_PORT in self.ports:
            return f"it uses port {TRANSACTION_POOLER_PORT} (Supabase's transaction pooler)"
        return None


def session_url(environ, url_var: str, direct_url_var: str) -> tuple[str, str]:
    """(value, variable) of the URL for session-level work: migrations, backups, restores and
    Prisma's advisory lock need ONE server session from start to end. That is Prisma's
    `directUrl` (`direct_url_var`, DIRECT_URL by convention) when set, else `url_var`'s URL.
    SettingsError (URL masked) when the chosen URL is a transaction pooler: there a session
    advisory lock can be taken on one backend and released on another, `SET` is lost between
    statements, and pg_dump's snapshot cannot be shared. Empty string: neither is set."""
    direct = environ.get(direct_url_var, "") if direct_url_var else ""
    var, value = (direct_url_var, direct) if direct else (url_var, environ.get(url_var, ""))
    if not value or not reveal(value).strip().lower().startswith(("postgresql://", "postgres://")):
        return value, var
    u = parse(value)
    why = u.transaction_pooler
    if why:
        raise SettingsError(
            f"{var} ({u.masked}) points at a transaction pooler ({why}); migrations, backups, restores and the "
            "migrate lock need one database session from start to end, which a transaction pooler does not keep.",
            ((f"Set {direct_url_var} (database.direct_url_var)" if direct_url_var else
              'Set database.direct_url_var = "DIRECT_URL", and that variable,')
             + " to the direct connection or the session-mode pooler "
             "(Supabase: port 5432; Prisma's directUrl) and keep the pooled URL in " + url_var + " for the app."
             ) if var != direct_url_var else
            f"{direct_url_var} must be the direct connection or the session-mode pooler (Supabase: port 5432), "
            "not the transaction pooler (port 6543, pgbouncer=true).",
        )
    return value, var


def _replace_path(after_scheme: str, name: str) -> str:
    head, sep, query = after_scheme.partition("?")
    at = head.rfind("@")
    slash = head.find("/", at + 1)
    authority = head if slash < 0 else head[:slash]
    return f"{authority}/{quote(name, safe='')}" + (sep + query if sep else "")


def mask(url: str) -> str:
    """A URL safe to show: the password (wherever the URL's userinfo ends, even when it holds
    a raw `@` or `/`) and any `password=` parameter shown as `***`."""
    plain = reveal(url) if url is not None else ""
    m = re.match(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", plain, flags=re.S)
    if not m:
        return redact(plain)
    scheme, rest = m.group("scheme"), m.group("rest")
    head, qsep, query = rest.partition("?")
    at = head.rfind("@")  # the last `@`: a raw `@` in the password cannot end the masking early
    if at >= 0:
        userinfo, hostpart = head[:at], head[at + 1:]
        user, colon, _ = userinfo.partition(":")
        if "/" in user:          # `user/...:pw@`: the user cannot hold a slash; mask from it
            user = user.split("/", 1)[0]
            colon = ":"
        head = f"{user}:{MASK}@{hostpart}" if colon else f"{user}@{hostpart}"
    if qsep:
        query = re.sub(r"(?i)(^|&)(password|sslpassword)=[^&]*", lambda q: f"{q.group(1)}{q.group(2)}={MASK}", query)
    return redact(scheme + head + qsep + query)


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
        f"Unsupported database URL {mask(plain)!r}.",
        "Use postgresql://user:password@host:5432/db?schema=public or file:./dev.db (SQLite).",
    )


_ENCODE_HINT = ("Percent-encode the special characters of the user and password in the URL "
                "(`@` as %40, `/` as %2F, `:` as %3A, `#` as %23, `?` as %3F, `%` as %25, a space as %20), e.g. with "
                "python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' PASSWORD.")


def _check_userinfo(plain: str, shown: str) -> None:
    """Refuse a URL whose userinfo holds a raw `@`, `/`, `?` or `#` (libpq would split it
    elsewhere), a `%` that is not a percent-encoded byte, `%00`, or whitespace (libpq refuses
    those quoting the token, i.e. a piece of the password, in its message)."""
    rest = plain.split("://", 1)[1]
    before_q, q, after_q = rest.partition("?")
    # `user:pa?ss@host/db`: libpq's query starts inside the password. A real query parameter
    # has its `=` before any `@` (`?user=me@corp`); here an `@` comes first, and no `/` before the `?`.
    if q and "/" not in before_q and "@" not in before_q and "@" in after_q.split("&", 1)[0].split("=", 1)[0]:
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds a raw '?', so libpq would take "
                            "the rest of the password for query parameters.", _ENCODE_HINT)
    head = rest.split("?", 1)[0].split("#", 1)[0]
    slash = head.find("/")
    authority = head if slash < 0 else head[:slash]
    if authority.count("@") > 1:
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds a raw '@', so libpq would take "
                            "part of the password for the host name.", _ENCODE_HINT)
    if "@" not in authority and slash >= 0 and "@" in head[slash:] and ":" in authority:
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds a raw '/', so libpq would take "
                            "part of the password for the host and database.", _ENCODE_HINT)
    if "#" in rest and "@" in rest.split("#", 1)[1]:
        raise SettingsError(f"Postgres URL {shown!r}: the password holds a raw '#'.", _ENCODE_HINT)
    userinfo = authority.rpartition("@")[0]
    if re.search(r"%(?![0-9A-Fa-f]{2})", userinfo):
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds a raw '%' (not followed by two "
                            "hex digits), which libpq refuses as a bad percent-encoding.", _ENCODE_HINT)
    if "%00" in userinfo:
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds %00, which libpq refuses.",
                            "Use a password without a NUL byte.")
    if re.search(r"\s", userinfo):
        raise SettingsError(f"Postgres URL {shown!r}: the user or password holds whitespace, which libpq "
                            "refuses in a URL.", _ENCODE_HINT)


def _parse_postgres(plain: str) -> DbUrl:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    shown = mask(plain)
    _check_userinfo(plain, shown)
    base, _, query = plain.partition("?")
    params = parse_qsl(query, keep_blank_values=True)
    schema = "public"
    pgbouncer = False
    notes: list[str] = []
    kept: list[tuple[str, str]] = []
    for k, v in params:
        if k == "schema":
            schema = v or "public"
        elif k == "pgbouncer":
            pgbouncer = v.strip().lower() in ("true", "1", "yes", "on")
            notes.append(f"pgbouncer={v}: {_PRISMA_ONLY[k]}; not passed to libpq")
        elif k in _PRISMA_ONLY:
            notes.append(f"{k}={v}: {_PRISMA_ONLY[k]}; not passed to libpq")
        else:
            kept.append((k, v))
    if not _SCHEMA_NAME.match(schema):
        raise SettingsError(
            f"Postgres URL {shown!r}: schema={schema!r} is not a plain identifier.",
            "Use letters, digits, '_', '$' and '-' for the schema name (at most 63).",
        )
    libpq_url = base + ("?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kept) if kept else "")
    try:
        info = conninfo_to_dict(libpq_url)
    except ProgrammingError as e:
        raise SettingsError(f"Malformed Postgres URL {shown!r}: {_clean(e, plain)}.",
                            "Check the URL against libpq's format: postgresql://user:password@host:5432/db"
                            "?sslmode=require (Prisma's schema= and pgbouncer= are understood too).") from None
    hosts = tuple(h for h in str(info.get("host") or info.get("hostaddr") or "").split(","))
    if not any(hosts):
        raise SettingsError(f"Postgres URL {shown!r} names no host.", "Write it as postgresql://user:pw@host:5432/db.")
    raw_ports = [p for p in str(info.get("port") or "").split(",")] or [""]
    if len(raw_ports) == 1:
        raw_ports = raw_ports * len(hosts)
    try:
        ports = tuple(int(p) if p.strip() else 5432 for p in raw_ports)
    except ValueError:
        raise SettingsError(f"Postgres URL {shown!r}: port {info.get('port')!r} is not a number.") from None
    if any(not 0 < p < 65536 for p in ports):
        raise SettingsError(f"Postgres URL {shown!r}: port out of range.")
    opts = str(info.get("options") or "").strip()
    info["options"] = (opts + " " if opts else "") + f'-c search_path="{schema}"'
    info.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    conninfo = make_conninfo("", **info)
    database = str(info.get("dbname") or info.get("user") or "")
    return DbUrl("postgresql", shown, schema, database, None, conninfo, hosts, ports, pgbouncer, tuple(notes))


def _clean(e: Exception, plain: str) -> str:
    """libpq's message for a bad URL, without anything of the password: libpq quotes the token
    it could not read ("invalid percent-encoded token: \"<password>\""), so every quoted token is
    masked, and so is the password wherever the userinfo could end (raw or percent-decoded)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = text.replace(plain, mask(plain))
    text = re.sub(r'"[^"]*"', f'"{MASK}"', text)
    for pw in sorted(_password_candidates(plain), key=len, reverse=True):
        text = text.replace(pw, MASK)
    return redact(text)


def _password_candidates(plain: str) -> set[str]:
    """What the password could be, wherever the userinfo of `plain` ends (the last `@` of the
    authority, or of the whole URL when the password holds a raw `/` or `?`)."""
    rest = plain.split("://", 1)[-1]
    out: set[str] = set()
    for end in (rest.split("?", 1)[0].split("/", 1)[0].rfind("@"), rest.rfind("@")):
        if end < 0:
            continue
        _, colon, pw = rest[:end].partition(":")
        if colon and pw:
            out |= {pw, unquote(pw)}
    return {p for p in out if len(p) >= 3}


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
