"""One environment's database as a handle: its URL, the folder its SQLite paths resolve
against and its `[database]` settings, held together so every migration and backup call
is made the same way (`Database.of(settings, environ)`, then `status`, `migrate`,
`rollback`, `backup`, `restore`, ...). The handle decides nothing: each method is one call
of the migrations or backups primitive."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy import backups, dburl, migrations
from deploy.config import DatabaseSection, Settings
from deploy.errors import SettingsError
from deploy.locations import database_url, sqlite_base


@dataclass(frozen=True)
class Database:
    url: str                     # a Secret for Postgres (see locations.database_url)
    sqlite_base: Path
    section: DatabaseSection

    @classmethod
    def of(cls, s: Settings, environ: Mapping[str, str]) -> Database:
        """The environment's database (the toolkit's session URL). SettingsError when it has
        none (database.provider = "none") or its URL variable is not set."""
        url = database_url(s, environ)
        if url is None:
            raise SettingsError(f"The {s.name} environment has no database "
                                f"(database.provider = \"none\" in {s.file.name}).")
        return cls(url, sqlite_base(s), s.database)

    def parsed(self) -> dburl.DbUrl:
        return dburl.parse(self.url, sqlite_base=self.sqlite_base)

    @property
    def missing(self) -> bool:
        """A SQLite file that does not exist yet (reading it must not create it)."""
        u = self.parsed()
        return u.provider == "sqlite" and u.sqlite_path is not None and not u.sqlite_path.exists()

    # ------------------------------------------------------------ migrations

    def status(self, mdir: Path) -> migrations.StatusReport:
        return migrations.status(self.url, mdir, sqlite_base=self.sqlite_base, db=self.section)

    def footprint(self) -> migrations.Footprint:
        return migrations.footprint(self.url, sqlite_base=self.sqlite_base, db=self.section)

    def migrate(self, mdir: Path) -> migrations.MigrateResult:
        return migrations.migrate(self.url, mdir, runner=self.section.runner, sqlite_base=self.sqlite_base,
                                  url_var=self.section.url_var, db=self.section)

    def rollback(self, mdir: Path, steps: int = 1, *, names: Sequence[str] | None = None) -> migrations.RollbackResult:
        return migrations.rollback(self.url, mdir, steps, names=names, sqlite_base=self.sqlite_base, db=self.section)

    def resolve(self, mdir: Path, *, applied: str | None = None,
                rolled_back: str | None = None) -> migrations.ResolveResult:
        return migrations.resolve(self.url, mdir, applied=applied, rolled_back=rolled_back,
                                  sqlite_base=self.sqlite_base, db=self.section)

    def empty_again(self, before: migrations.Footprint) -> str:
        """Back to empty after a first promotion (`migrations.empty_database`); says what it did."""
        return migrations.empty_database(self.url, before, sqlite_base=self.sqlite_base, db=self.section)

    # ------------------------------------------------------------ backups

    def backup(self, backup_dir: Path, env: str, sha: str) -> backups.Backup:
        return backups.backup(self.url, backup_dir, env, sha, sqlite_base=self.sqlite_base, db=self.section)

    def verify(self, backup_path: str | Path, url: str | None = None) -> backups.VerifyResult:
        """Restore `backup_path` into a scratch copy and compare (Postgres: on `url`'s server,
        default this database's)."""
        return backups.verify(backup_path, url or self.url, sqlite_base=self.sqlite_base, db=self.section)

    def restore(self, backup_path: str | Path) -> backups.RestoreResult:
        return backups.restore(backup_path, self.url, sqlite_base=self.sqlite_base, db=self.section)

    def written_since(self, backup_path: str | Path) -> backups.Writes:
        return backups.written_since(backup_path, self.url, sqlite_base=self.sqlite_base, db=self.section)

    def app_rows(self) -> tuple[tuple[str, int], ...]:
        return backups.app_rows(self.url, sqlite_base=self.sqlite_base, db=self.section)
