"""`invoke db.*`: status, migrate, rollback, resolve, backup, verify, restore, provision."""

from __future__ import annotations

from pathlib import Path

from deploy import backups, migrations
from deploy.database import Database
from deploy.errors import SettingsError
from deploy.flows import rights, shapes
from deploy.flows import steps as promote_steps
from deploy.flows.common import app_sha, whole_number
from deploy.locations import migrations_dir
from deploy.private import write_private
from deploy.redact import Secret
from deploy.services import Services


def _db(svc: Services, env: str):
    s = svc.settings(env)
    return s, Database.of(s, svc.environ_for(s.name))


def status(svc: Services, env: str, as_json: bool = False) -> int:
    s, database = _db(svc, env)
    report = database.status(migrations_dir(s))
    if as_json:
        svc.term.emit_json(shapes.db_status(report, s.name))
    else:
        svc.term.out(migrations.render_status(report, width=svc.term.width()))

        for note in database.parsed().notes:
            svc.term.out(f"note: {note}")
    return 0 if report.up_to_date or not (report.failed or report.drift or report.invalid) else 1


def migrate(svc: Services, env: str, yes: bool = False) -> None:
    """`invoke db.migrate`. On a remote environment it is a promotion's database part: the commit's migrations
    (a working tree that differs is refused), promote's rights for the commit, its locks and question, its
    backup step first (the undo's way back) and its migrate step (flows/rights.py)."""
    s, database = _db(svc, env)
    led = svc.ledger()
    if rights.guarded(s):
        sha, _ = rights.committed_migrations(s)
        assert sha is not None, "a guarded environment's migrations come from a commit"
        environ = svc.environ_for(s.name)
        outcome = rights.act(svc, s, "db.migrate", [promote_steps.backup(s, sha, environ),
                                                      promote_steps.migrate(s, environ, sha)],
                             led=led, yes=yes, question=f"Apply {sha[:12]}'s pending migrations to the {env} database?",
                             promotes=sha, sha=sha)
        taken = rights.result(led, outcome, "backup")
        svc.term.out(f"{env}: {rights.result(led, outcome, 'migrate')} (commit {sha[:12]})"
                     + (f"; backup first: {taken}" if taken else ""))
        return
    done = {}

    def run(ctx):
        done["res"] = database.migrate(migrations_dir(s))
        return f"applied {len(done['res'].applied)}"

    rights.act(svc, s, "db.migrate", rights.one("db.migrate", "apply pending Prisma migrations", run), led=led,
               yes=yes, question="")
    res = done["res"]
    svc.term.out(f"{env}: applied {len(res.applied)} migration(s)" + (": " + ", ".join(res.applied) if res.applied else ""))
    for w in res.warnings:
        svc.term.out(f"warning: {w}")


def rollback(svc: Services, env: str, steps: int | str | None, yes: bool) -> None:
    steps = whole_number("steps", steps, 1)
    s, database = _db(svc, env)
    _, mdir = rights.committed_migrations(s)
    done = {}

    def run(ctx):
        done["res"] = database.rollback(mdir, steps)
        return f"rolled back {', '.join(done['res'].rolled_back) or 'nothing'}"

    rights.act(svc, s, "db.rollback", rights.one("db.rollback", f"down.sql of the latest {steps} migration(s)", run),
               led=svc.ledger(), yes=yes, question=f"Roll back {steps} migration(s) on {env}?", args={"steps": steps})
    res = done["res"]
    svc.term.out(f"{env}: rolled back {', '.join(res.rolled_back) or 'nothing'}")


def resolve(svc: Services, env: str, applied: str | None, rolled_back: str | None, yes: bool = False) -> None:
    if bool(applied) == bool(rolled_back):
        raise SettingsError("Pass exactly one of --applied NAME or --rolled-back NAME.")
    s, database = _db(svc, env)
    _, mdir = rights.committed_migrations(s)
    done = {}

    def run(ctx):
        done["res"] = database.resolve(mdir, applied=applied, rolled_back=rolled_back)
        return f"{done['res'].name} marked {done['res'].action.replace('_', ' ')}"

    what = f"{applied} applied" if applied else f"{rolled_back} rolled back"
    rights.act(svc, s, "db.resolve", rights.one("db.resolve", "mark a migration applied or rolled back", run),
               led=svc.ledger(), yes=yes, question=f"Mark migration {what} in the {env} database?",
               args={"applied": applied, "rolled_back": rolled_back})
    res = done["res"]
    svc.term.out(f"{env}: {res.name} marked {res.action.replace('_', ' ')}")


def backup(svc: Services, env: str) -> None:
    s, database = _db(svc, env)
    try:
        sha = app_sha(s)
    except SettingsError:
        sha = "nosha"
    b = database.backup(s.path(s.database.backup_dir), env, sha)
    pruned = backups.prune(s.path(s.database.backup_dir), env, s.database.backup_keep)
    svc.term.out(f"{env}: backup {b.path} ({len(b.tables)} tables, sha256 {b.sha256[:16]})"
            + (f"; pruned {len(pruned)} old" if pruned else ""))


def _backup_file(s, file: str | None) -> Path:
    if file:
        return Path(file)
    return backups.latest(s.path(s.database.backup_dir), s.name).path


def verify_backup(svc: Services, env: str, file: str | None) -> int:
    s, database = _db(svc, env)
    url = None     # this database's server
    var = s.golive.backup_verify_url_var
    if var and s.database.provider == "postgresql":
        if not svc.environ.get(var):
            raise SettingsError(f"{var} is not set (golive.backup_verify_url_var in {s.file.name}).",
                                f"Export {var}: a Postgres server where a scratch database may be created.")

        url = Secret(svc.environ[var])  # a server whose role may CREATE DATABASE for the scratch copy
    res = database.verify(_backup_file(s, file), url)
    rows = [(c.table, c.expected, "missing" if c.actual is None else c.actual, "ok" if c.ok else "MISMATCH")
            for c in res.counts]
    svc.term.out(svc.term.table(rows, ("table", "rows at backup", "rows restored", "verdict")))
    svc.term.out(f"{res.backup.path.name}: {'verified' if res.ok else 'NOT verified'}")
    return 0 if res.ok else 1


def restore(svc: Services, env: str, file: str | None, yes: bool) -> None:
    s, database = _db(svc, env)
    path = _backup_file(s, file)
    # What the restore would discard: shown, and never discarded without a person saying so.
    writes = database.written_since(path)
    show_writes(svc, writes)
    if s.environment.protected or not s.is_local or writes.any:
        lost = f", discarding {writes.summary()}" if writes.any else ""
        svc.term.confirm(f"Restore {path.name} into the {env} database, replacing its data{lost}?", yes)
    done = {}

    def run(ctx):
        done["res"] = database.restore(path)
        return f"restored {path.name}"

    # Asked above (on every shared environment); the locks are promote's (flows/rights.py).
    rights.act(svc, s, "db.restore", rights.one("db.restore", f"restore {path.name} into the database", run),
               led=svc.ledger(), yes=yes, question="", ask=False, args={"file": str(path)})
    res = done["res"]
    svc.term.out(f"{env}: restored {res.backup.path.name} into {res.url} ({len(res.tables)} tables)")


def show_writes(svc: Services, writes) -> None:
    """The rows a restore would discard, per table (only the tables written since), then one line."""
    hit = [r for r in writes.rows() if r[3] or r[4]]
    if hit:
        svc.term.out(svc.term.table(hit, ("table", "rows at backup", "rows now", "written since", "gone since")))
    svc.term.out(writes.summary())


def provision(svc: Services, env: str, admin_url_var: str, db_name: str | None, role: str | None, reset_password: bool) -> None:
    s = svc.settings(env)
    admin = svc.environ.get(admin_url_var)
    if not admin:
        raise SettingsError(f"{admin_url_var} is not set.",
                            f"Export {admin_url_var}=postgresql://admin:...@host:5432/postgres (never commit it).")

    res = backups.provision(Secret(admin), db_name or f"occ_{env}", role or f"occ_{env}",
                            reset_password=reset_password)
    secret_file = s.root / "env" / f"{env}.local.env"
    if res.created_role or reset_password or not secret_file.exists():
        _write_secret(secret_file, s.database.url_var, res.url.reveal())
    svc.term.out(f"{env}: role {res.role} ({'created' if res.created_role else 'exists'}), database {res.database} "
            f"({'created' if res.created_database else 'exists'})")
    svc.term.out(f"{s.database.url_var}={res.masked_url}")
    svc.term.out(f"the full URL is in {secret_file.relative_to(s.root)} (git-ignored); set it as the {env} "
            f"environment's {s.database.url_var} secret in CI")


def _write_secret(path: Path, key: str, value: str) -> None:
    """Set KEY in a git-ignored dotenv file (mode 0600), keeping its other lines."""
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if not ln.startswith(f"{key}=")] + [f"{key}='{value}'"]

    # 0600 on every write: an existing 0644 file (made by hand, or by an older version) is fixed too.
    write_private(path, "\n".join(lines) + "\n")
