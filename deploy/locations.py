"""Where an environment's things are: the folders under .deploy/ (the artifact store, a commit's
checkout and its artifact), its migrations folder, where SQLite paths resolve, and the database
URLs (the toolkit's session URL and the app's own). Where releases go is the release target's
(deploy/targets/).
Pure over the settings and the environment given, except the checkout (extracted once)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from deploy import build as b
from deploy import dburl
from deploy.config import Settings
from deploy.errors import DeployError, SettingsError
from deploy.redact import Secret
from deploy.source import checkout, repo_of


def artifacts_dir(s: Settings) -> Path:
    """The artifact store: packed builds, their index, and beside it the dependency cache."""
    return s.root / ".deploy" / "artifacts"


def source_dir(s: Settings, sha: str) -> Path:
    """The app folder as of commit `sha` (`git archive`, extracted once under
    .deploy/src/<build key>): where a promotion builds and reads its migrations and Shopify
    config, never the working tree."""
    return checkout(s.app_dir, sha, s.root / ".deploy" / "src", build_key(s, sha).name)


def checkout_if_there(s: Settings, sha: str) -> Path | None:
    """The commit's extracted app folder when an earlier run extracted it, else None (a dry
    run reads, it does not extract)."""
    try:
        top, rel = repo_of(s.app_dir)
        target = s.root / ".deploy" / "src" / build_key(s, sha).name
    except DeployError:
        return None
    return (target / rel if rel != "." else target) if (target / ".complete").exists() else None


def build_key(s: Settings, sha: str) -> b.BuildKey:
    """What the environment's build of `sha` is made from (commit, app folder in its
    repository, [app] contract): the name of its artifact and of its checkout."""
    _, rel = repo_of(s.app_dir)
    return b.build_key(sha, rel, s.app)


def find_artifact(s: Settings, sha: str):
    """The stored artifact of the environment's build of `sha`, or None."""
    return b.find(artifacts_dir(s), build_key(s, sha))


def migrations_dir(s: Settings, app: Path | None = None) -> Path:
    """The Prisma migrations folder of `app` (a commit's checkout), else of the working tree."""
    return (app or s.app_dir) / s.database.migrations_dir


def sqlite_base(s: Settings, app: Path | None = None) -> Path:
    """The folder a relative SQLite `file:` URL is resolved against."""
    # Prisma resolves `file:` URLs relative to the folder of schema.prisma. Always the
    # working tree's app folder (never a commit's checkout): the environment has one
    # database, whichever commit is promoted, and `invoke bootstrap` migrates the same file.
    return migrations_dir(s, app).parent


def database_url(s: Settings, environ: Mapping[str, str]) -> str | None:
    """The URL of the toolkit's own database work (migrations, backups, restores, the migrate
    lock): committed for SQLite; for Postgres the session URL from the environment (a Secret):
    database.direct_url_var's (Prisma's directUrl) when set, else database.url_var's; refused
    when it points at a transaction pooler (dburl.session_url)."""
    db = s.database
    if db.provider == "none":
        return None
    if db.url:
        return db.url
    value, var = dburl.session_url(environ, db.url_var, db.direct_url_var)
    if not value:
        raise SettingsError(
            f"{db.url_var} is not set for the {s.name} environment (database.url_var in {s.file.name}).",
            f"Export {db.url_var} (in CI: the GitHub environment secret {db.url_var}).",
        )
    return Secret(value)


def app_database_url(s: Settings, environ: Mapping[str, str]) -> str | None:
    """The URL the app itself connects with (database.url_var: the pooled one on Supabase)."""
    db = s.database
    if db.provider == "none":
        return None
    if db.url:
        return db.url
    value = environ.get(db.url_var, "")
    if not value:
        raise SettingsError(
            f"{db.url_var} is not set for the {s.name} environment (database.url_var in {s.file.name}).",
            f"Export {db.url_var} (in CI: the GitHub environment secret {db.url_var}).",
        )
    return Secret(value)
