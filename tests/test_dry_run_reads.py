"""A dry run judges the commit's migrations, not the working tree's, and writes nothing to do it:
the working tree's folder is read in place only when it holds exactly what the commit holds there
(`steps._verdicts.committed_as_is`); any difference, tracked or not, sends it back to a scratch
extraction of the commit. A real git repository per case; no other real part."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploy.flows.steps._verdicts import committed_as_is

INIT = 'CREATE TABLE "Shop" ("id" TEXT PRIMARY KEY);\n'


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def repo_with_migrations(root: Path, folder: str) -> tuple[Path, str]:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    mdir = root / folder
    (mdir / "20240101000000_init").mkdir(parents=True)
    (mdir / "20240101000000_init" / "migration.sql").write_text(INIT)
    (mdir / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (root / ".gitignore").write_text("*.bak\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    return mdir, git(root, "rev-parse", "HEAD")


def _edit(mdir: Path):
    (mdir / "20240101000000_init" / "migration.sql").write_text(INIT + 'DROP TABLE "Shop";\n')


def _untracked(mdir: Path):
    (mdir / "20990101000000_new").mkdir()
    (mdir / "20990101000000_new" / "migration.sql").write_text('DROP TABLE "Shop";\n')


def _ignored(mdir: Path):
    (mdir / "20240101000000_init" / "migration.sql.bak").write_text("old\n")


def _removed(mdir: Path):
    (mdir / "20240101000000_init" / "migration.sql").unlink()


def _staged_new(mdir: Path):
    _untracked(mdir)
    git(mdir, "add", "-A")


def _committed_since(mdir: Path):
    _untracked(mdir)
    git(mdir, "add", "-A")
    git(mdir, "commit", "-qm", "later")


def _elsewhere(mdir: Path):
    (mdir.parents[1] / "README").write_text("changed outside the folder\n")


@pytest.mark.parametrize("folder", ["prisma/migrations", "apps/web/prisma/migrations"], ids=["app-at-top", "app-in-a-subfolder"])
@pytest.mark.parametrize("change,read_in_place", [
    (None, True),
    (_elsewhere, True),
    (_edit, False),
    (_untracked, False),
    (_ignored, False),
    (_removed, False),
    (_staged_new, False),
    (_committed_since, False),
], ids=["clean", "a-change-outside-the-folder", "a-migration-edited", "an-untracked-migration", "an-ignored-file",
        "a-migration-removed", "a-new-migration-staged", "the-folder-changed-in-a-later-commit"])
def test_the_working_folder_is_read_in_place_only_when_it_is_the_commits(tmp_path, folder, change, read_in_place):
    mdir, sha = repo_with_migrations(tmp_path / "repo", folder)
    if change is not None:
        change(mdir)
    assert committed_as_is(mdir, sha) == (mdir if read_in_place else None)
    # the same when the repository is found from a folder above it (the app folder)
    assert committed_as_is(mdir, sha, within=mdir.parents[1]) == (mdir if read_in_place else None)


def test_a_folder_outside_any_repository_or_missing_is_not_read_in_place(tmp_path):
    (tmp_path / "migrations").mkdir()
    assert committed_as_is(tmp_path / "migrations", "0" * 40) is None
    mdir, sha = repo_with_migrations(tmp_path / "repo", "prisma/migrations")
    assert committed_as_is(mdir.parent / "missing", sha) is None
    assert committed_as_is(tmp_path / "migrations", sha, within=mdir.parent) is None   # not under `within`'s top
