"""The migration folders on disk: `prisma/migrations/<timestamp>_<name>/migration.sql` (and
`down.sql`), `migration_lock.toml`, and Prisma's checksum over a script. Pure or read-only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deploy.errors import MigrationFailed

LOCK_FILE = "migration_lock.toml"
SCRIPT = "migration.sql"
DOWN_SCRIPT = "down.sql"


@dataclass(frozen=True)
class LocalMigration:
    """One folder under prisma/migrations."""

    name: str
    path: Path
    script: str | None          # None: migration.sql missing or unreadable
    checksum: str | None
    has_down: bool
    problem: str = ""           # why it cannot be applied ("" when fine)


def checksum(script: str) -> str:
    """Prisma's checksum: SHA-256 of the script's UTF-8 bytes, 64 lower-case hex digits."""
    return hashlib.sha256(script.encode("utf-8")).hexdigest()


def checksum_matches(script: str, stored: str) -> bool:
    """Prisma's `script_matches_checksum`: tolerant of CRLF/LF and of the old unpadded hex."""
    for variant in (script, script.replace("\r\n", "\n"), script.replace("\n", "\r\n")):
        digest = hashlib.sha256(variant.encode("utf-8")).digest()
        if stored and len(stored) != 64:
            rendered = "".join(f"{b:x}" for b in digest)  # prisma-engines#1887
        else:
            rendered = digest.hex()
        if rendered == stored:
            return True
    return False


def parse_lock_provider(text: str) -> str:
    """The provider in migration_lock.toml, read the way Prisma reads it (first `provider` line)."""
    for line in text.splitlines():
        if line.startswith("provider"):
            return line.removeprefix("provider = ").strip().strip('"')
    return "<PROVIDER NOT FOUND>"


def _problem(script: str | None, has_sql: bool) -> str:
    if not has_sql:
        return f"{SCRIPT} is missing"
    if script is None:
        return f"{SCRIPT} cannot be read"
    if script.strip() == "":
        return f"{SCRIPT} is empty"
    return ""


def load_migrations(migrations_dir: str | Path) -> tuple[LocalMigration, ...]:
    """The migration folders in name order (Prisma's order); problems are recorded, not raised."""
    d = Path(migrations_dir)
    if not d.is_dir():
        raise MigrationFailed(
            f"Migrations folder {d} does not exist.",
            "Set database.migrations_dir in env/<name>.toml to the folder that holds prisma/migrations.",
        )
    out = []
    for p in sorted((c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")), key=lambda c: c.name):
        sql = p / SCRIPT
        script = None
        if sql.is_file():
            try:
                # newline="" keeps CRLF as written: the checksum is over the file's bytes.
                with open(sql, encoding="utf-8", newline="") as fh:
                    script = fh.read()
            except (OSError, UnicodeDecodeError):
                script = None
        problem = _problem(script, sql.is_file())
        out.append(LocalMigration(
            name=p.name, path=p, script=script, checksum=checksum(script) if script is not None else None,
            has_down=(p / DOWN_SCRIPT).is_file(), problem=problem,
        ))
    return tuple(out)


def lock_provider(migrations_dir: str | Path) -> str | None:
    """The provider named in migration_lock.toml, or None when there is no lock file."""
    f = Path(migrations_dir) / LOCK_FILE
    if not f.is_file():
        return None
    return parse_lock_provider(f.read_text(encoding="utf-8"))


def check_provider(migrations_dir: str | Path, provider: str) -> None:
    """P3019: refuse when migration_lock.toml names another provider than the target database."""
    found = lock_provider(migrations_dir)
    if found is not None and found != provider:
        raise MigrationFailed(
            f"The migrations in {migrations_dir} were written for {found!r} (migration_lock.toml), "
            f"but the target database is {provider!r} (P3019).",
            "Point database.migrations_dir at the migration folder generated for this provider "
            "(see docs/runbooks/prisma_staging_postgres.md), or fix the URL.",
        )


def refuse_invalid(local: Sequence[LocalMigration]) -> None:
    """Refuse, before anything runs, folders that cannot be applied (no, unreadable or empty migration.sql)."""
    bad = [m for m in local if m.problem]
    if bad:
        lines = "; ".join(f"{m.name}: {m.problem}" for m in bad)
        raise MigrationFailed(
            f"Cannot use the migration folder(s) {lines} (in {bad[0].path.parent}). Nothing was applied.",
            "Each folder needs a non-empty migration.sql (an intentionally empty migration holds a comment, "
            "as Prisma writes: `-- This is an empty migration.`). Add it or remove the folder.",
        )
