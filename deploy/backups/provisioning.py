"""`db.provision`: a database and its login role created on a Postgres server (a generated
password, returned only as a Secret URL and its masked form)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from deploy import dburl
from deploy.backups.postgres import connect
from deploy.errors import BackupFailed, SettingsError
from deploy.redact import Secret, mask_url, reveal

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


@dataclass(frozen=True)
class ProvisionResult:
    role: str
    database: str
    url: Secret                               # includes the generated password; write it only where secrets go
    masked_url: str
    created_role: bool
    created_database: bool


def provision(admin_url: str, db_name: str, role: str, *, schema: str = "public",
              reset_password: bool = False) -> ProvisionResult:
    """Create `role` (LOGIN, generated password) and `db_name` owned by it, if missing.

    An existing role keeps its password unless `reset_password`; then the URL returned holds
    the new one. The caller writes the URL only where secrets go and prints `masked_url`."""
    for what, name in (("database", db_name), ("role", role)):
        if not _IDENT.match(name or ""):
            raise SettingsError(f"{what} name {name!r} is not allowed.",
                                "Use lower-case letters, digits and underscores, starting with a letter.")
    u = dburl.parse(admin_url)
    if u.provider != "postgresql":
        raise SettingsError("db.provision needs a Postgres admin URL.", "SQLite files need no provisioning.")
    from psycopg import sql

    password = secrets.token_urlsafe(24)
    with connect(u) as conn:
        has_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
        has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,)).fetchone() is not None
        if has_role and not reset_password:
            raise BackupFailed(
                f"Role {role!r} already exists on {u.masked}; its password is not known here.",
                "Run again with --reset-password to set a new one (the old URL stops working), or use another role.",
            )
        stmt = "ALTER ROLE {} WITH LOGIN PASSWORD {}" if has_role else "CREATE ROLE {} WITH LOGIN PASSWORD {}"
        conn.execute(sql.SQL(stmt).format(sql.Identifier(role), sql.Literal(password)))
        if not has_db:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db_name), sql.Identifier(role)))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db_name), sql.Identifier(role)))
    parts = urlsplit(reveal(admin_url))
    host = parts.netloc.rpartition("@")[2]
    plain = urlunsplit(("postgresql", f"{role}:{quote(password, safe='')}@{host}", f"/{db_name}",
                        f"schema={schema}", ""))
    secret = Secret(plain)
    return ProvisionResult(role, db_name, secret, mask_url(plain), not has_role, not has_db)
