"""The backup store: where an environment's backups lie (`<backup_dir>/<env>/<UTC
timestamp>-<sha7>.dump|.sqlite`, 0600 in 0700 folders), their sidecars (`.sha256` in
`sha256sum` format, a `.json` manifest with the per-table row counts and the dump's
snapshot), and finding, checking, listing and pruning them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from deploy.errors import BackupFailed, SettingsError
from deploy.private import make_private, private_dir, write_private

STAMP = "%Y%m%dT%H%M%SZ"
_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<sha>[0-9a-zA-Z]{1,40}|nosha)\.(?P<ext>dump|sqlite)\Z")


@dataclass(frozen=True)
class Backup:
    path: Path
    sha256: str
    created_at: datetime
    env: str
    sha: str
    tables: tuple[tuple[str, int], ...]       # (schema-qualified table, rows) at dump time
    # Postgres: the dump's snapshot (pg_current_snapshot() text, "xmin:xmax:xip,..."), so rows
    # written since can be told apart by their xmin (`written_since`); None: not recorded.
    snapshot: str | None = None


def backup_name(created_at: datetime, sha: str, ext: str = "dump") -> str:
    """`<UTC timestamp>-<sha7>.<ext>`; names sort by time."""
    stamp = created_at.astimezone(timezone.utc).strftime(STAMP)
    short = re.sub(r"[^0-9a-zA-Z]", "", sha)[:7] or "nosha"
    return f"{stamp}-{short}.{ext}"


def free_name(out_dir: Path, created_at: datetime, sha: str, ext: str) -> Path:
    """The backup's path: named by its second, or by the next free one when a backup of
    the same second exists (a retry, promote's backup then `db.backup`). Names stay unique
    and in time order; the sidecar keeps the exact time."""
    for n in range(3600):
        path = out_dir / backup_name(created_at + timedelta(seconds=n), sha, ext)
        if not path.exists() and not path.with_name(path.name + ".partial").exists():
            return path
    raise BackupFailed(f"{out_dir} holds a backup for every second of the next hour.",
                       "Prune old backups (database.backup_keep) and run again.")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def select_to_prune(names: Sequence[str], keep: int) -> list[str]:
    """The backup file names beyond the newest `keep` (names sort by time)."""
    if keep < 1:
        raise SettingsError(f"database.backup_keep = {keep}: keep at least one backup.")
    ordered = sorted(n for n in names if _NAME.match(n))
    return ordered[:-keep] if len(ordered) > keep else []


def private_backup_dir(backup_dir: Path, env: str) -> Path:
    """`<backup_dir>/<env>/`, both 0700, and every file already in it 0600: fixed on every
    backup, so folders and dumps an older version left 0755/0644 do not stay readable."""
    private_dir(backup_dir)
    out_dir = private_dir(backup_dir / env)
    for p in out_dir.iterdir():
        if p.is_file() and not p.is_symlink():
            make_private(p)
    return out_dir


def write_sidecars(b: Backup) -> None:
    write_private(b.path.with_name(b.path.name + ".sha256"), f"{b.sha256}  {b.path.name}\n")
    manifest = {
        "env": b.env, "sha": b.sha, "created_at": b.created_at.isoformat(), "sha256": b.sha256,
        "file": b.path.name, "tables": dict(b.tables), **({"snapshot": b.snapshot} if b.snapshot else {}),
    }
    write_private(b.path.with_name(b.path.name + ".json"), json.dumps(manifest, indent=2) + "\n")


def load_backup(path: str | Path) -> Backup:
    """A backup file and its sidecars; BackupFailed if they are missing or do not match."""
    p = Path(path)
    if not p.is_file():
        raise BackupFailed(f"Backup {p} does not exist.", f"Pass --file= one of the backup files in {p.parent}, "
                                                            "or take one with `invoke db.backup --env=<env>`.")
    side = p.with_name(p.name + ".sha256")
    if not side.is_file():
        raise BackupFailed(f"Backup {p} has no {side.name} sidecar; its integrity cannot be checked.")
    expected = side.read_text().split()[0] if side.read_text().split() else ""
    actual = sha256_file(p)
    if actual != expected:
        raise BackupFailed(f"Backup {p} is corrupt: SHA-256 {actual[:12]}... but the sidecar says {expected[:12]}...",
                           "Use another backup; this file was changed or truncated after it was written.")
    meta_path = p.with_name(p.name + ".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    m = _NAME.match(p.name)
    created = (datetime.fromisoformat(meta["created_at"]) if "created_at" in meta
               else datetime.strptime(m.group("stamp"), STAMP).replace(tzinfo=timezone.utc) if m
               else datetime.fromtimestamp(p.stat().st_mtime, timezone.utc))
    return Backup(p, actual, created, meta.get("env", p.parent.name), meta.get("sha", m.group("sha") if m else "") or "",
                  tuple(sorted((meta.get("tables") or {}).items())), meta.get("snapshot"))


def list_backups(backup_dir: str | Path, env: str) -> tuple[Path, ...]:
    """Backup files of `env`, oldest first."""
    d = Path(backup_dir) / env
    if not d.is_dir():
        return ()
    return tuple(sorted(p for p in d.iterdir() if _NAME.match(p.name)))


def latest(backup_dir: str | Path, env: str) -> Backup:
    found = list_backups(backup_dir, env)
    if not found:
        raise BackupFailed(f"No backups of {env!r} in {Path(backup_dir) / env}.",
                           f"Take one first: `invoke db.backup --env={env}`.")
    return load_backup(found[-1])


def prune(backup_dir: str | Path, env: str, keep: int) -> tuple[Path, ...]:
    """Delete all but the newest `keep` backups of `env` (with their sidecars); returns what was removed."""
    files = list_backups(backup_dir, env)
    doomed = set(select_to_prune([p.name for p in files], keep))
    removed = []
    for p in files:
        if p.name in doomed:
            for f in (p, p.with_name(p.name + ".sha256"), p.with_name(p.name + ".json")):
                f.unlink(missing_ok=True)
            removed.append(p)
    return tuple(removed)
