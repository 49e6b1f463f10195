"""The database steps: backup and migrate on the way forward, and their mirror on the way back
(restore or down.sql), with what a rollback needs checked before any host switches."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from deploy import backups, migrations
from deploy.config import Settings
from deploy.database import Database
from deploy.engine import Step, StepContext, Touch
from deploy.facts import BackupFacts, DatabaseBefore, MigrateFacts, MigrationCheck, PromotionRecord
from deploy.errors import DeployError, MigrationFailed, SettingsError
from deploy.locations import checkout_if_there, migrations_dir, source_dir

from deploy.flows.steps._common import argv_line
from deploy.flows.steps._verdicts import accepted_destructive


def backup(s: Settings, sha: str, environ) -> Step:
    def run(ctx: StepContext):
        database = Database.of(s, environ)
        if database.missing:
            ctx.put(BackupFacts(None))
            return "no database file yet: nothing to back up"
        b = database.backup(s.path(s.database.backup_dir), s.name, sha)
        ctx.put(BackupFacts(str(b.path)))
        backups.prune(s.path(s.database.backup_dir), s.name, s.database.backup_keep)
        rows = sum(n for _, n in b.tables)
        return f"{b.path.name} ({len(b.tables)} tables, {rows} rows, sha256 {b.sha256[:12]})"

    skip = None
    if s.database.provider == "none":
        skip = "no database for this environment"
    elif not s.database.backup:
        skip = f"database.backup = false in {s.file.name}"
    def shows() -> list[Touch]:
        src = s.database.url and "database.url" or f"${s.database.direct_url_var or s.database.url_var}"
        now = datetime.now(timezone.utc)
        dest = s.path(s.database.backup_dir) / s.name
        keep = f"(then prune to the newest {s.database.backup_keep})"
        if s.database.provider != "postgresql":
            return [Touch("database", f"SQLite online backup of {src} -> {dest / backups.backup_name(now, sha, 'sqlite')} {keep}")]
        bin_dir = os.path.expanduser(s.database.bin_dir) if s.database.bin_dir else ""
        argv = backups.pg_dump_argv(os.path.join(bin_dir, "pg_dump") if bin_dir else "pg_dump", "<exported snapshot>",
                                    dest / backups.backup_name(now, sha, "dump"), f"<{src} without its password, which goes in PGPASSWORD>",
                                    s.database.lock_timeout)
        return [Touch("database", f"{argv_line(argv)} {keep}")]

    return Step("backup", f"{'pg_dump' if s.database.provider == 'postgresql' else 'SQLite copy'} of the database",
                run=run, skip=skip, shows=shows)


def migrate(s: Settings, environ, sha: str, *, accept=(), confirm=None) -> Step:
    """Apply the commit's pending migrations. Its undo keeps additive migrations; takes destructive
    ones back with their down.sql, or by restoring the backup only when nothing was written since
    it, or when a person confirms (`confirm(question)`, None: nobody to ask: the database is kept
    and the undo fails, naming the command that restores it)."""
    def run(ctx: StepContext):
        database = Database.of(s, environ)
        mdir = migrations_dir(s, source_dir(s, sha))
        if ctx.get(MigrateFacts) is None:
            fp = database.footprint()
            st = database.status(mdir)
            todo = [m for m in migrations.load_migrations(mdir) if m.name in st.pending]
            lints = migrations.lint(todo, s.database.provider)
            ok = accepted_destructive(s, accept)
            bad = migrations.unaccepted(lints, ok)
            if bad and not fp.empty:   # preflight refused these already, unless the database changed since
                raise SettingsError(
                    f"Migration {bad[0].name} is destructive ({'; '.join(bad[0].reasons)}) and has no down.sql; "
                    "nobody accepted it. Nothing was applied.",
                    f"Write its down.sql, or accept it: --accept-destructive={bad[0].name}.")
            # Fail closed before changing anything when this run could not be undone: a
            # database with data, destructive migrations without down.sql, and no backup.
            no_down = [m.name for m in lints if not m.additive and not m.has_down]
            taken = ctx.get(BackupFacts)
            if no_down and not fp.empty and not (taken and taken.path):
                raise DeployError(
                    f"Destructive migrations {', '.join(no_down)} have no down.sql and this run took no backup of "
                    f"{s.name}'s database, so they could not be undone. Nothing was applied.",
                    f"Set database.backup = true in {s.file.name} (the undo restores it), or add down.sql files.")
            checks = tuple(MigrationCheck.of(m, accepted=m.name in ok and not m.additive and not m.has_down)
                           for m in lints)
            ctx.put(MigrateFacts(tuple(st.applied), DatabaseBefore(fp.existed, fp.empty, tuple(fp.schemas)), checks))
            ctx.checkpoint()
        try:
            res = database.migrate(mdir)
        except MigrationFailed as e:
            raise _in_repository(s, sha, e) from None
        mig = ctx.get(MigrateFacts)
        verdicts = {c.name: c for c in ((mig.checks if mig else None) or ())}
        kinds = [f"{n} ({verdicts[n].kind})" if n in verdicts else n for n in res.applied]
        return f"applied {len(res.applied)}: {', '.join(kinds)}" if res.applied else "up to date"

    def undo(ctx: StepContext):
        facts = ctx.get(MigrateFacts)
        if facts is None:
            return "nothing was migrated"
        database = Database.of(s, environ)
        mdir = migrations_dir(s, source_dir(s, sha))
        before_db = facts.database
        if before_db and before_db.empty:
            # A first promotion: there was nothing before, so undo means nothing again (no
            # backup needed, no down.sql needed, and no `_prisma_migrations` left behind). Empty means
            # no object at all (an extension's aside), so the footprint's object list is empty too.
            # Every row in it now was written during this run: emptying it is a person's decision then.
            rows = database.app_rows()
            if rows:
                _ask_or_keep(confirm, s, f"empty {s.name}'s database again (it was empty before this run)",
                             "; ".join(f"{t} {n}" for t, n in rows), "the first release's tables stay")
            fp = migrations.Footprint(before_db.existed, True, tuple(before_db.schemas))
            return "the database was empty before this run: " + database.empty_again(fp)
        st = database.status(mdir)
        before = set(facts.before)
        notes = []
        for m in st.migrations:  # a migration that failed in this run: its transaction left no trace
            if m.state == "failed" and m.name not in before:
                if m.detail.startswith("partially applied"):
                    raise DeployError(
                        f"{m.name} failed after part of it was committed (it ran as written, with its own "
                        "transaction control); it stays recorded as failed, not marked rolled back.",
                        f"See `invoke db.status --env={s.name}`; finish it by hand and `invoke db.resolve "
                        f"--env={s.name} --applied {m.name}`, or take back what it committed and `--rolled-back "
                        f"{m.name}`; then `invoke promote --to={s.name} --abort` finishes the undo.")
                database.resolve(mdir, rolled_back=m.name)
                notes.append(f"marked {m.name} rolled back")
        at = {m.name: m.applied_at for m in st.migrations}
        ours = sorted((n for n in st.applied if n not in before), key=lambda n: (at.get(n) is None, at.get(n), n))
        if not ours:
            return "; ".join(notes) or "no migration of this run to undo"
        checks = {c.name: c for c in (facts.checks or ())}
        # In the order they were applied: the additive ones before the first destructive one stay
        # (no row lost, the previous release runs on them); from the first destructive one on, back.
        first = next((i for i, n in enumerate(ours) if n not in checks or checks[n].kind != "additive"), len(ours))
        kept, back = ours[:first], ours[first:]
        if kept:
            notes.append(f"kept: {len(kept)} additive migration(s) stay applied ({', '.join(kept)}), no rows lost")
        if not back:
            return "; ".join(notes)
        local = {m.name: m for m in migrations.load_migrations(mdir)}
        if all(local.get(n) and local[n].has_down for n in back):
            res = database.rollback(mdir, names=back)
            notes.append(f"down-migrated {', '.join(res.rolled_back)}")
            return "; ".join(notes)
        taken = ctx.get(BackupFacts)
        if not (taken and taken.path):
            raise DeployError(
                f"Cannot undo migrations {', '.join(back)}: destructive, no down.sql and no backup.",
                "Restore the database by hand (invoke db.restore) or write down.sql files.",
            )
        name = Path(taken.path).name
        writes = database.written_since(taken.path)
        if writes.any:
            _ask_or_keep(confirm, s, f"restore {name} (destructive {', '.join(back)} without down.sql)",
                         writes.summary(), f"{', '.join(back)} stay applied")
        database.restore(taken.path)
        said = "a person confirmed discarding " + writes.summary() if writes.any else writes.summary()
        return "; ".join([f"restored {name} (no down.sql for {', '.join(back)}; {said})"]
                         + [n for n in notes if not n.startswith("kept:")])

    def shows() -> list[Touch]:
        return migrate_touches(s, sha, environ)

    skip = "no database for this environment" if s.database.provider == "none" else None
    return Step("migrate", f"apply pending Prisma migrations of {sha[:12]} ({s.database.runner})", run=run,
                undo=undo, undo_does="keep additive migrations; empty again if it was empty; down.sql of "
                                     "destructive ones, else restore the backup if nothing was written since "
                                     "(else a person decides)", skip=skip, shows=shows)


def _ask_or_keep(confirm, s: Settings, act: str, written: str, stays: str) -> None:
    """Before an undo discards rows written since the backup (or since an empty start): ask a
    person; with nobody to ask, keep the database and fail the undo, naming the command."""
    question = f"{act[0].upper()}{act[1:]}, discarding {written}?"
    if confirm is not None:
        confirm(question)
        return
    raise DeployError(
        f"Kept the database: the undo would {act}, discarding {written}. Nobody was asked, so nothing was "
        f"discarded; {stays}.",
        f"A person decides: `invoke promote --to={s.name} --abort` asks (at a terminal; `--yes` confirms "
        f"without one) and then does it. To keep the database as it is instead, leave it, and free the lock "
        f"with `invoke lock.release --env={s.name} --force`.")


def _in_repository(s: Settings, sha: str, e: MigrationFailed) -> MigrationFailed:
    """A migration's failure as the person who fixes it needs it: files named where they
    are in the repository (not in the commit's extracted copy under .deploy/src), and, for
    when the run's undo succeeds, what to do in the state it leaves. The undo marks a
    migration that failed in this run rolled back, or empties/down-migrates/restores the
    database, so `db.resolve --rolled-back` would then have nothing to mark."""
    copy = str(source_dir(s, sha)).rstrip("/") + "/"
    rel = os.path.relpath(s.app_dir, s.root)
    here = "" if rel == "." else rel.rstrip("/") + "/"
    e.message = e._message.replace(copy, here)
    e.hint = (e._hint or "").replace(copy, here) or None
    if not e.migration and (named := re.search(r"Migration name: (\S+)", e._message)):
        e.migration = named.group(1)     # Prisma's own report of the failed migration
    if e.migration:
        script = f"{here}{s.database.migrations_dir}/{e.migration}/migration.sql"
        e.undone_hint = (f"The undo put the database back as it was before this run (its migrate row says how), so "
                         f"there is nothing to resolve: fix {script} in the repository, commit, and promote again "
                         f"(`invoke db.status --env=<env>` lists {e.migration} as pending).")
    return e


def migrate_touches(s: Settings, sha: str, environ) -> list[Touch]:
    """The migration.sql files a promotion of `sha` would apply: read from the commit's
    checkout when it exists; pending ones only when the database can be read (read-only)."""
    src = checkout_if_there(s, sha)
    if src is None:
        return [Touch("database", f"the pending migrations of {sha[:12]}: read at run time "
                                  "(the commit's checkout is not extracted yet)")]
    mdir = migrations_dir(s, src)
    try:
        local = migrations.load_migrations(mdir)
    except DeployError as e:
        return [Touch("database", f"cannot read {mdir}: {e.message}")]
    pending = None
    try:
        database = Database.of(s, environ)
        if not database.missing:   # reading must not create a SQLite file
            pending = set(database.status(mdir).pending)
    except DeployError:
        pass   # no URL here, or the database does not answer: the list says so
    rows = [m for m in local if pending is None or m.name in pending]
    if not rows:
        return [Touch("database", "no pending migration: up to date")]
    note = "" if pending is not None else " (unless _prisma_migrations has it: the database was not read)"
    return [Touch("database", f"{s.database.migrations_dir}/{m.name}/migration.sql{note}") for m in rows]


def database_back(s: Settings, db: str, fled: PromotionRecord | None, fled_sha: str | None, current: str | None,
                  environ, *, skip: str | None) -> Step:
    """Mirror of `backup` + `migrate`: restore the backup the fled promotion took (db=restore), or
    down.sql of the migrations it applied (db=down), read from its PromotionRecord."""
    def run(ctx: StepContext):
        database = Database.of(s, environ)
        # The down.sql files of the release being rolled back are in its commit, not
        # necessarily in the working tree.
        mdir = migrations_dir(s, source_dir(s, fled_sha) if fled_sha else None)
        if db == "restore":
            b = fled.backup if fled else None
            if not b or not Path(b).exists():
                raise DeployError(f"The backup taken before {current} is not on this machine ({b or 'none recorded'}).",
                                  "Restore a specific file with `invoke db.restore --env=<env> --file=...`.")
            writes = database.written_since(b)
            database.restore(b)
            return f"restored {Path(b).name} (confirmed; {writes.summary()})"
        if fled is None or fled.migrations_before is None:
            # Without the list, "this release's migrations" is unknown: guessing could drop them all.
            raise DeployError(f"The ledger has no record of which migrations {current or 'the live release'} applied "
                              "(it was not made by a promotion that reached migrate), so --db=down cannot tell "
                              "which to undo; nothing was changed in the database.",
                              f"Undo a known number with `invoke db.rollback --env={s.name} --steps=N`, or use "
                              "--db=restore / --db=keep.")
        before = set(fled.migrations_before)
        st = database.status(mdir)
        ours = [n for n in st.applied if n not in before]
        if not ours:
            return f"{current} applied no migration: nothing to undo"
        res = database.rollback(mdir, names=ours)
        return f"down-migrated {', '.join(res.rolled_back)}"

    def since() -> str:
        """What the restore would discard, measured now (read-only), for the plan a person confirms."""
        b = fled.backup if fled else None
        if not b or not Path(b).exists():
            return "no backup on this machine: refused at run time"
        try:
            return Database.of(s, environ).written_since(b).summary()
        except DeployError as e:
            return f"writes since the backup cannot be measured ({e.message}): counted as written"

    def shows() -> list[Touch]:
        if db == "restore":
            return [Touch("database", f"restore {fled.backup if fled and fled.backup else '(no backup recorded)'}; "
                                      f"{since()}")]
        before = "unknown: refused at run time" if fled is None or fled.migrations_before is None else \
            f"not among the {len(fled.migrations_before)} applied before {current}"
        return [Touch("database", f"down.sql of each applied migration {before}, last applied first")]

    does = {"down": "down.sql of the rolled-back release's migrations",
            "restore": "restore the backup taken before the rolled-back release"}.get(db, "keep")
    if db == "restore" and skip is None:
        does += f", discarding what was written since: {since()}"
    return Step("database", does, run=run, skip=skip, shows=shows)


def rollback_blockers(s: Settings, db: str, fled: PromotionRecord | None, fled_sha: str | None,
                      current: str | None, environ) -> list[str]:
    """What would make the database part of a rollback fail, found before any host switches:
    --db=down without the list of the fled release's migrations or without a down.sql for one
    of them; --db=restore without its backup, or with one whose checksum does not verify. Reads
    only (the database's `_prisma_migrations`, the fled commit's checkout, the backup file)."""
    if s.database.provider == "none" or db == "keep":
        return []
    if db == "restore":
        b = fled.backup if fled else None
        if not b or not Path(b).exists():
            return [f"the backup taken before {current or 'the live release'} is not on this machine "
                    f"({b or 'none recorded'})"]
        try:
            backups.load_backup(b)
        except DeployError as e:
            return [e.message]
        return []
    if fled is None or fled.migrations_before is None:
        return [f"the ledger has no record of which migrations {current or 'the live release'} applied (it was not "
                "made by a promotion that reached migrate), so --db=down cannot tell which to undo"]
    database = Database.of(s, environ)
    mdir = migrations_dir(s, source_dir(s, fled_sha) if fled_sha else None)
    before = set(fled.migrations_before)
    st = database.status(mdir)
    ours = [n for n in st.applied if n not in before]
    local = {m.name: m for m in migrations.load_migrations(mdir)}
    return [f"migration {n} has no down.sql ({s.database.migrations_dir}/{n}/down.sql in {fled_sha[:12] if fled_sha else 'the app'})"
            for n in ours if not (local.get(n) and local[n].has_down)]
