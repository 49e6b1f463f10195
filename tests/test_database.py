"""deploy/locations.py and deploy/database.py: where an environment's database is, and the
one handle every migration and backup call goes through (a real SQLite file; the Postgres
side runs through the same handle in tests/test_db_tasks.py and the promotion tests)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from deploy import config, migrations
from deploy.database import Database
from deploy.errors import SettingsError
from deploy.locations import database_url, migrations_dir, sqlite_base
from deploy.redact import Secret, forget_all

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "app"


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    forget_all()


def settings(root: Path, name: str = "local", **database):
    (root / "env").mkdir(exist_ok=True)
    return config.parse({"environment": {"kind": "local", "app_dir": "app"}, "database": database},
                        name=name, file=root / "env" / f"{name}.toml", root=root)


@pytest.fixture
def project(tmp_path):
    shutil.copytree(EXAMPLE / "prisma" / "migrations", tmp_path / "app" / "prisma" / "migrations")
    return tmp_path


@pytest.mark.parametrize("url,where", [
    ("file:./dev.sqlite", "app/prisma/dev.sqlite"),
    ("file:dev-2.db", "app/prisma/dev-2.db"),
    ("file:../data/app.sqlite", "app/data/app.sqlite"),
], ids=["dot-slash", "bare-name", "parent-folder"])
def test_a_relative_sqlite_url_resolves_beside_the_schema_folder_and_reading_never_creates_it(project, url, where):
    s = settings(project, provider="sqlite", url=url)
    database = Database.of(s, {})
    assert database.url == database_url(s, {}) == url
    assert database.sqlite_base == sqlite_base(s) == project / "app" / "prisma"
    assert database.parsed().sqlite_path == project / where
    assert database.missing
    assert database.footprint().empty
    assert not (project / where).exists()


def test_the_handle_migrates_backs_up_restores_and_rolls_back_one_sqlite_file(project):
    s = settings(project, provider="sqlite", url="file:./occ.sqlite")
    database = Database.of(s, {})
    mdir = migrations_dir(s)
    names = [m.name for m in migrations.load_migrations(mdir)]
    assert list(database.status(mdir).pending) == names
    assert list(database.migrate(mdir).applied) == names
    assert not database.missing and not database.status(mdir).pending
    assert list(database.status(mdir).applied) == names
    taken = database.backup(project / ".deploy" / "backups", s.name, "abc1234")
    assert not database.written_since(taken.path).any
    with sqlite3.connect(database.parsed().sqlite_path) as conn:
        conn.execute("""INSERT INTO "Shop" (id, domain, name) VALUES ('s1', 'a.myshopify.com', 'A')""")
    assert database.written_since(taken.path).any
    assert dict(database.app_rows())["Shop"] == 1
    database.restore(taken.path)
    assert not database.written_since(taken.path).any and "Shop" not in dict(database.app_rows())
    assert list(database.rollback(mdir, 2).rolled_back) == names[:0:-1]
    assert list(database.status(mdir).pending) == names[1:]
    assert list(database.migrate(mdir).applied) == names[1:]


@pytest.mark.parametrize("environ,why", [
    ({}, "DATABASE_URL is not set for the staging environment"),
    ({"DATABASE_URL": ""}, "DATABASE_URL is not set for the staging environment"),
], ids=["unset", "empty"])
def test_a_postgres_database_without_its_url_is_refused_naming_the_variable(tmp_path, environ, why):
    s = settings(tmp_path, "staging", provider="postgresql")
    with pytest.raises(SettingsError, match=why):
        Database.of(s, environ)


def test_a_postgres_url_from_the_environment_is_held_as_a_secret(tmp_path):
    s = settings(tmp_path, "staging", provider="postgresql")
    database = Database.of(s, {"DATABASE_URL": "postgresql://occ:pw-7781x@db.test:5432/occ"})
    assert isinstance(database.url, Secret)
    assert "pw-7781x" not in repr(database)


def test_an_environment_without_a_database_is_refused_naming_its_settings_file(tmp_path):
    s = settings(tmp_path, "dev", provider="none")
    with pytest.raises(SettingsError, match=r'The dev environment has no database \(database.provider = "none" in dev.toml\)'):
        Database.of(s, {})
