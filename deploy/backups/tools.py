"""The Postgres client tools a backup runs (pg_dump, pg_restore, psql): found by the server's
major version (or `database.bin_dir`), refused when older than the server, and given a
conninfo without the password (which goes to `PGPASSWORD` in their environment only)."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from deploy import dburl, proc
from deploy.config import DatabaseSection
from deploy.errors import BackupFailed, ToolMissing
from deploy.redact import Secret


def parse_tool_major(version_output: str) -> int:
    """`pg_dump (PostgreSQL) 15.5 (Debian 15.5-1)` -> 15; `... 9.6.24` -> 9."""
    m = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", version_output)
    if not m:
        raise BackupFailed(f"Cannot read the version from {version_output.strip()[:80]!r}.")
    return int(m.group(1))


def check_tool_version(tool: str, version_output: str, server_version_num: int) -> int:
    """BackupFailed when the client tool's major version is older than the server's."""
    tool_major = parse_tool_major(version_output)
    server_major = server_version_num // 10000 if server_version_num >= 100000 else server_version_num // 100
    if tool_major < server_major:
        raise BackupFailed(
            f"{tool} is version {tool_major} but the server runs PostgreSQL {server_major}; an older {tool} "
            f"cannot read a newer server.",
            f"Install postgresql-client-{server_major} (apt-get install -y postgresql-client-{server_major}) "
            f"or set the tools folder to /usr/lib/postgresql/{server_major}/bin.",
        )
    return tool_major


def find_tool(name: str, server_major: int | None = None, bin_dir: str | Path | None = None) -> str:
    """`name` from `bin_dir` if given; else the server's major version's Debian folder, the
    newest installed one, then PATH."""
    if bin_dir is not None:
        try:
            return proc.which(name, path=str(bin_dir))
        except ToolMissing as e:
            raise ToolMissing(f"`{name}` is not in {bin_dir} (database.bin_dir).",
                              f"Point database.bin_dir at the folder holding pg_dump, pg_restore and psql "
                              f"(e.g. /usr/lib/postgresql/<server major>/bin), or empty it to pick them by the "
                              f"server's version. {e.hint or ''}".strip()) from None
    if server_major is not None:
        cand = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
        if cand.exists():
            return str(cand)
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return found[-1]
    return proc.which(name)


def tool_url_and_env(u: dburl.DbUrl) -> tuple[str, dict[str, str]]:
    """The libpq conninfo without its password (for argv) and PGPASSWORD (for the environment)."""
    from psycopg.conninfo import make_conninfo

    params = u.params()
    env: dict[str, str] = {}
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = Secret(password)
    return make_conninfo("", **params), env


def lock_timeout_sql(seconds: float) -> str:
    """`SET lock_timeout` for a tool session (0: wait as long as it takes)."""
    return f"SET lock_timeout = '{int(max(seconds, 0) * 1000)}ms';\n"


def tool_settings(db: DatabaseSection | None, bin_dir) -> tuple[str | Path | None, float]:
    """(bin_dir, lock_timeout) from the environment's database settings, when given."""
    if db is None:
        return bin_dir, 0.0
    return (os.path.expanduser(db.bin_dir) if db.bin_dir else bin_dir), db.lock_timeout
