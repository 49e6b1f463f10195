"""`invoke db.*`: status, migrate, rollback, resolve, backup, verify, restore, provision."""

from __future__ import annotations

import os
from pathlib import Path

from deploy import cli
from deploy.errors import SettingsError
from deploy.flows.common import one_step
from deploy.flows.steps import database_url, migrations_dir, sqlite_base


def _db(env: str):
    s = cli.settings(env)
    if s.database.provider == "none":
        raise SettingsError(f"The {env} environment has no database (database.provider = \"none\" in {s.file.name}).")
    return s, database_url(s, os.environ)


def status(env: str, as_json: bool = False) -> int:
    from deploy import migrations

    s, url = _db(env)
    report = migrations.status(url, migrations_dir(s), sqlite_base=sqlite_base(s), db=s.database)
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.db_status(report, s.name))
    else:
        cli.out(migrations.render_status(report, width=cli.width()))
        from deploy import dburl

        for note in dburl.parse(url, sqlite_base=sqlite_base(s)).notes:
            cli.out(f"note: {note}")
    return 0 if report.up_to_date or not (report.failed or report.drift or report.invalid) else 1


def migrate(env: str) -> None:
    from deploy import migrations

    s, url = _db(env)
    done = {}

    def run(ctx):
        done["res"] = migrations.migrate(url, migrations_dir(s), runner=s.database.runner,
                                         sqlite_base=sqlite_base(s),
                                         url_var=s.database.url_var, db=s.database)
        return f"applied {len(done['res'].applied)}"

    one_step(s, "db.migrate", "apply pending Prisma migrations", run)
    res = done["res"]
    cli.out(f"{env}: applied {len(res.applied)} migration(s)" + (": " + ", ".join(res.applied) if res.applied else ""))
    for w in res.warnings:
        cli.out(f"warning: {w}")


def rollback(env: str, steps: int, yes: bool) -> None:
    from deploy import migrations

    s, url = _db(env)
    if s.environment.protected:
        cli.confirm(f"Roll back {steps} migration(s) on {env}?", yes)
    done = {}

    def run(ctx):
        done["res"] = migrations.rollback(url, migrations_dir(s), steps=steps, sqlite_base=sqlite_base(s), db=s.database)
        return f"rolled back {', '.join(done['res'].rolled_back) or 'nothing'}"

    one_step(s, "db.rollback", f"down.sql of the latest {steps} migration(s)", run, args={"steps": steps})
    res = done["res"]
    cli.out(f"{env}: rolled back {', '.join(res.rolled_back) or 'nothing'}")


def resolve(env: str, applied: str | None, rolled_back: str | None) -> None:
    from deploy import migrations

    if bool(applied) == bool(rolled_back):
        raise SettingsError("Pass exactly one of --applied NAME or --rolled-back NAME.")
    s, url = _db(env)
    done = {}

    def run(ctx):
        done["res"] = migrations.resolve(url, migrations_dir(s), applied=applied, rolled_back=rolled_back,
                                         sqlite_base=sqlite_base(s), db=s.database)
        return f"{done['res'].name} marked {done['res'].action.replace('_', ' ')}"

    one_step(s, "db.resolve", "mark a migration applied or rolled back", run,
             args={"applied": applied, "rolled_back": rolled_back})
    res = done["res"]
    cli.out(f"{env}: {res.name} marked {res.action.replace('_', ' ')}")


def backup(env: str) -> None:
    from deploy import backups
    from deploy.flows.common import app_sha

    s, url = _db(env)
    try:
        sha = app_sha(s)
    except SettingsError:
        sha = "nosha"
    b = backups.backup(url, s.path(s.database.backup_dir), env, sha, sqlite_base=sqlite_base(s), db=s.database)
    pruned = backups.prune(s.path(s.database.backup_dir), env, s.database.backup_keep)
    cli.out(f"{env}: backup {b.path} ({len(b.tables)} tables, sha256 {b.sha256[:16]})"
            + (f"; pruned {len(pruned)} old" if pruned else ""))


def _backup_file(s, file: str | None) -> Path:
    from deploy import backups

    if file:
        return Path(file)
    return backups.latest(s.path(s.database.backup_dir), s.name).path


def verify(env: str, file: str | None) -> int:
    from tabulate import tabulate

    from deploy import backups

    s, url = _db(env)
    var = s.golive.backup_verify_url_var
    if var and s.database.provider == "postgresql":
        if not os.environ.get(var):
            raise SettingsError(f"{var} is not set (golive.backup_verify_url_var in {s.file.name}).",
                                f"Export {var}: a Postgres server where a scratch database may be created.")
        from deploy.redact import Secret

        url = Secret(os.environ[var])  # a server whose role may CREATE DATABASE for the scratch copy
    res = backups.verify(_backup_file(s, file), url, sqlite_base=sqlite_base(s), db=s.database)
    rows = [(c.table, c.expected, "missing" if c.actual is None else c.actual, "ok" if c.ok else "MISMATCH")
            for c in res.counts]
    cli.out(tabulate(rows, headers=("table", "rows at backup", "rows restored", "verdict")))
    cli.out(f"{res.backup.path.name}: {'verified' if res.ok else 'NOT verified'}")
    return 0 if res.ok else 1


def restore(env: str, file: str | None, yes: bool) -> None:
    from deploy import backups

    s, url = _db(env)
    path = _backup_file(s, file)
    if s.environment.protected or not s.is_local:
        cli.confirm(f"Restore {path.name} into the {env} database, replacing its data?", yes)
    done = {}

    def run(ctx):
        done["res"] = backups.restore(path, url, sqlite_base=sqlite_base(s), db=s.database)
        return f"restored {path.name}"

    one_step(s, "db.restore", f"restore {path.name} into the database", run, args={"file": str(path)})
    res = done["res"]
    cli.out(f"{env}: restored {res.backup.path.name} into {res.url} ({len(res.tables)} tables)")


def provision(env: str, admin_url_var: str, db_name: str | None, role: str | None, reset_password: bool) -> None:
    from deploy import backups

    s = cli.settings(env)
    admin = os.environ.get(admin_url_var)
    if not admin:
        raise SettingsError(f"{admin_url_var} is not set.",
                            f"Export {admin_url_var}=postgresql://admin:...@host:5432/postgres (never commit it).")
    from deploy.redact import Secret

    res = backups.provision(Secret(admin), db_name or f"occ_{env}", role or f"occ_{env}",
                            reset_password=reset_password)
    secret_file = s.root / "env" / f"{env}.local.env"
    if res.created_role or reset_password or not secret_file.exists():
        _write_secret(secret_file, s.database.url_var, res.url.reveal())
    cli.out(f"{env}: role {res.role} ({'created' if res.created_role else 'exists'}), database {res.database} "
            f"({'created' if res.created_database else 'exists'})")
    cli.out(f"{s.database.url_var}={res.masked_url}")
    cli.out(f"the full URL is in {secret_file.relative_to(s.root)} (git-ignored); set it as the {env} "
            f"environment's {s.database.url_var} secret in CI")


def _write_secret(path: Path, key: str, value: str) -> None:
    """Set KEY in a git-ignored dotenv file (mode 0600), keeping its other lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if not ln.startswith(f"{key}=")] + [f"{key}='{value}'"]
    from deploy.private import write_private

    # 0600 on every write: an existing 0644 file (made by hand, or by an older version) is fixed too.
    write_private(path, "\n".join(lines) + "\n")
