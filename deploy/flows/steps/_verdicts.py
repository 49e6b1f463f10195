"""Migrations judged before they run: additive or destructive, and whether a destructive one
without down.sql may go ahead.

An undo keeps an additive migration (the previous release runs on the schema it leaves, and
rows written into it stay); a destructive one needs its down.sql, or an acceptance by name, or
the promotion refuses it before anything changes (deploy/migrations/_lint.py decides which)."""

from __future__ import annotations

import os
from pathlib import Path

from deploy import migrations, proc
from deploy.config import Settings
from deploy.database import Database
from deploy.engine import StepContext
from deploy.errors import DeployError, SettingsError
from deploy.locations import migrations_dir, source_dir
from deploy.source import checkout, repo_of


def accepted_destructive(s: Settings, accept=()) -> tuple[str, ...]:
    """Destructive migrations accepted without down.sql: database.accept_destructive, then the flag."""
    return tuple(dict.fromkeys((*s.database.accept_destructive, *accept)))


def pending_verdicts(s: Settings, mdir: Path, environ, *, strict: bool = True):
    """(verdict on each migration of `mdir` the database has not applied, whether the database
    is empty: None when it was not read). `strict` false (a dry run): a database that cannot be
    read gets every migration of the folder judged."""
    local = migrations.load_migrations(mdir)
    provider = s.database.provider
    try:
        database = Database.of(s, environ)
        if database.missing:   # reading must not create it
            return migrations.lint(local, provider), True
        pending = set(database.status(mdir).pending)
        empty = database.footprint().empty
    except DeployError:
        if strict:
            raise
        return migrations.lint(local, provider), None
    return migrations.lint([m for m in local if m.name in pending], provider), empty


def _verdict(m, accepted) -> str:
    if m.additive:
        return "additive"
    if m.has_down:
        return "destructive, down.sql"
    return "destructive, ACCEPTED without down.sql" if m.name in accepted else "destructive, REFUSED (no down.sql)"


def verdict_table(lints, accepted) -> str:
    """The verdicts as a table: migration, verdict, why (or the linter's other findings)."""
    from tabulate import tabulate

    rows = [(m.name, _verdict(m, accepted),
             "; ".join(m.reasons) if not m.additive else
             ("notes: " + ", ".join(sorted({f.rule for f in m.findings})) if m.findings else "-"))
            for m in lints]
    return tabulate(rows, headers=("migration", f"verdict ({lints[0].linter})", "why"), tablefmt="simple")


def migration_gate(ctx: StepContext, s: Settings, sha: str, environ, accept=()) -> tuple[str, str]:
    """Preflight: judge every pending migration of the commit, show the verdicts, and refuse
    (SettingsError, exit 2, nothing changed) a destructive one without down.sql that nobody
    accepted, unless the database is empty (no row to lose, no release running on it).
    Returns (summary, one line per migration with its findings, for the ledger)."""
    mdir = migrations_dir(s, source_dir(s, sha))
    lints, empty = pending_verdicts(s, mdir, environ)
    if not lints:
        return "migrations: none pending", ""
    ok = accepted_destructive(s, accept)
    table = verdict_table(lints, ok)
    ctx.note(table.replace("\n", "\n        "))
    bad = migrations.unaccepted(lints, ok)
    if bad and not empty:
        one = bad[0].name
        raise SettingsError(
            f"{'Migration' if len(bad) == 1 else 'Migrations'} {', '.join(m.name for m in bad)} of {sha[:12]} "
            f"{'is' if len(bad) == 1 else 'are'} destructive and {'has' if len(bad) == 1 else 'have'} no down.sql: "
            f"the previous release may not run on the schema left behind, and an undo could only restore the "
            f"backup, discarding every row written after it. Refused before anything changed.\n{table}",
            f"Write a down.sql beside its migration.sql (`prisma migrate diff --from-schema-datamodel <new> "
            f"--to-schema-datamodel <old> --script > down.sql`) and commit it; or accept it by name: "
            f"accept_destructive = [\"{one}\"] under [database] in {s.file.name} (committed), or "
            f"`invoke promote --to={s.name} --accept-destructive={one}`.")
    additive = sum(m.additive for m in lints)
    summary = f"migrations: {additive} additive, {len(lints) - additive} destructive ({lints[0].linter})"
    if empty:
        summary += "; the database is empty: nothing to lose"
    detail = "\n".join(f"{m.name}: {_verdict(m, ok)}" + (f": {'; '.join(m.reasons)}" if m.reasons else "")
                       + (f" | findings: {' | '.join(str(f) for f in m.findings)}" if m.findings else "")
                       for m in lints)
    return summary, detail


def migration_verdict_lines(s: Settings, sha: str, environ, accept=()) -> list[str]:
    """For --dry-run: the verdict on each migration the promotion would apply, read from the
    commit (its migrations folder extracted to a scratch folder, nothing kept) and the database
    when it can be read."""
    import shutil
    import tempfile

    tmp = None
    try:
        mdir = committed_as_is(s.app_dir / s.database.migrations_dir, sha, within=s.app_dir)
        if mdir is None:
            tmp = Path(tempfile.mkdtemp(prefix="occ-migrations-"))
            mdir = checkout(s.app_dir / s.database.migrations_dir, sha, tmp)
        lints, empty = pending_verdicts(s, mdir, environ, strict=False)
    except DeployError as e:
        return [f"cannot judge the migrations of {sha[:12]} before running: {e.message}"]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if not lints:
        return ["no pending migration to judge"]
    ok = accepted_destructive(s, accept)
    head = "" if empty is not None else " (the database was not read: every migration of the commit)"
    out = [f"{len(lints)} migration(s) judged by {lints[0].linter}{head}"]
    for m in lints:
        out.append(f"{m.name}: {_verdict(m, ok)}" + (f": {'; '.join(m.reasons)}" if m.reasons else ""))
        out += [f"  {f}" for f in m.findings]
    return out


def committed_as_is(folder: Path, sha: str, *, within: Path | None = None) -> Path | None:
    """`folder` itself when the working tree holds there exactly what commit `sha` does: no
    tracked file changed, added or removed since `sha` (`git diff --quiet`) and no other file
    beside them, ignored ones included (`git ls-files --others`). Reading it is then reading the
    commit, with nothing extracted (a dry run writes no scratch copy); None otherwise. `within`:
    a folder above it in the same repository whose top level is already known (the app folder)."""
    if not folder.is_dir():
        return None
    try:
        top, _ = repo_of(within or folder)
    except DeployError:
        return None
    rel = os.path.relpath(folder.resolve(), top)
    if rel.startswith(".."):
        return None
    same = proc.run(["git", "-C", str(top), "diff", "--quiet", "--no-ext-diff", "--no-textconv", sha, "--", rel])
    if not same.ok:
        return None
    others = proc.run(["git", "-C", str(top), "ls-files", "--others", "-z", "--", rel])
    return folder if others.ok and not others.stdout.strip("\0\n") else None
