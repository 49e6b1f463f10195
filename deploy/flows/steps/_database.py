"""The steps flows are made of. Each wraps one primitive: `run` does it and records what
its `undo` needs in the run's state; `undo` is safe after a partial or repeated run."""

from __future__ import annotations

import json
import os
import re
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

from deploy import (backups, config, decisionlog, envs, evidence, hosts, migrations, proc, shopify,
                    smoke, source)
from deploy import approvals as approval_rules
from deploy import build as b
from deploy.config import Settings
from deploy.database import Database
from deploy.engine import Step, StepContext, Touch
from deploy.facts import (ArtifactFacts, BackupFacts, DatabaseBefore, MigrateFacts,
                           MigrationCheck, PromotionRecord, RecordFacts, ShopifyFacts)
from deploy.errors import (ApprovalMissing, BuildFailed, DeployError, HostFailed, MigrationFailed,
                           PlanChanged, SettingsError)
from deploy.flows.common import git_dirty, still_live
from deploy.ledger import Ledger, ReleaseRow, ReleaseStatus, RunStatus
from deploy.locations import (app_database_url, artifacts_dir, base_urls, build_key, checkout_if_there,
                              database_url, find_artifact, migrations_dir, source_dir)
from deploy.redact import Secret
from deploy.services import terminal_width
from deploy.targets import Command, ReleaseTarget, target_for
from deploy.source import checkout, commit_time, repo_of


TOOLKIT_RECORDS = ("env/rotations.log",)


# ----------------------------------------------------------------------------- small helpers

def _argv(argv) -> str:
    return shlex.join(str(a) for a in argv)


def _artifact(ctx: StepContext):
    art = ctx.get(ArtifactFacts)
    if art is None:
        raise DeployError("Bug: no artifact was recorded before the release step.",
                          "This is a bug in the toolkit (the build step records it); please report it.")
    return art.artifact()


# ----------------------------------------------------------------------------- preflight

def not_needed(s: Settings, *, skip_shopify: bool) -> dict[str, str]:
    """Variables a promotion of `s` does not use, and why: the Shopify token when the Shopify
    step is skipped (no [shopify] config, or --skip-shopify)."""
    if skip_shopify:
        return {s.shopify.token_var: "the Shopify step is skipped (--skip-shopify)"}
    why = shopify.skip_reason(s)
    return {s.shopify.token_var: f"the Shopify step is skipped ({s.file.name} has no [shopify] config)"} if why else {}


def preflight(s: Settings, sha: str, environ: Mapping[str, str], *, skip_shopify: bool,
              accept_destructive: tuple[str, ...] = ()) -> Step:
    def run(ctx: StepContext):
        notes = []
        detail = ""
        matrix_file = s.root / "env" / "variables.toml"
        if matrix_file.exists():
            m = envs.load_matrix(s.root)
            if s.name in m.environments:
                report = envs.check(m, s.name, s.root, environ, not_needed=not_needed(s, skip_shopify=skip_shopify))
                if not report.ok:
                    raise SettingsError(
                        f"env.check {s.name} found problems:\n{envs.render_check(report)}",
                        f"Fix them, then re-run (details: invoke env.check --env={s.name}).",
                    )
                notes.append("variables ok")
        tools = ["git", "node", "npm"]
        if s.database.provider == "postgresql" and s.database.backup:
            tools.append("pg_dump")
        for t in tools:
            proc.which(t)
        notes.append("tools " + ",".join(tools))
        if not s.is_local:
            # The build comes from `git archive` of the commit, so only uncommitted settings
            # could make this deploy differ from what the commit says; the toolkit's own
            # records (deployment log, rotation log) change by design.
            dirty = [f for f in git_dirty(s.root) if f.startswith("env/") and f not in TOOLKIT_RECORDS]
            if dirty:
                raise SettingsError(
                    f"The settings in {s.root} have uncommitted changes ({', '.join(dirty[:5])}).",
                    "Commit or revert them: a deploy to a shared environment uses committed settings only.",
                )
        lockfile_committed(s, sha)     # the build would refuse it after the checkout; say why now
        database_url(s, environ)
        if s.database.provider != "none":
            # Before anything changes: a destructive migration without down.sql is refused here.
            summary, detail = migration_gate(ctx, s, sha, environ, accept_destructive)
            notes.append(summary)
        ready = _target_ready(s, environ)
        if ready:
            notes.append(ready)
        if not skip_shopify and shopify.skip_reason(s) is None:
            # The config the push will use is the commit's, so that is the one checked.
            shopify.check(s, environ, path=source_dir(s, sha), commit=sha)
            notes.append("shopify cli and token ok")
        return f"{'; '.join(notes)}; sha {sha[:12]}" + (f"\n{detail}" if detail else "")

    def shows() -> list[Touch]:
        return [Touch("database", line) for line in migration_verdict_lines(s, sha, environ, accept_destructive)]

    return Step("preflight", "settings, variables (env.check), tools, clean tree, database URL, migrations "
                             "(additive or destructive: squawk)", run=run,
                shows=shows if s.database.provider != "none" else None)


def lockfile_committed(s: Settings, sha: str) -> None:
    """A build installs only from a lockfile the commit holds. Refused in preflight, before
    anything is built, naming the repository's files: the lockfile the working tree has and
    the .gitignore line that keeps it out of git (Shopify's template ships one)."""
    if s.app.install != "auto":
        return
    top, rel = repo_of(s.app_dir)
    prefix = "" if rel in ("", ".") else rel.rstrip("/") + "/"
    listed = proc.run(["git", "-C", str(top), "ls-tree", "--name-only", sha, "--", prefix or "."])
    names = {Path(n).name for n in listed.stdout.splitlines()} if listed.ok else set()
    if not listed.ok or "package.json" not in names or names & {n for n, _ in b.LOCKFILES}:
        return
    shown = proc.run(["git", "-C", str(top), "show", f"{sha}:{prefix}package.json"])
    try:
        pkg = json.loads(shown.stdout) if shown.ok else {}
    except ValueError:
        return      # the build names a package.json it cannot read
    if not isinstance(pkg, dict) or not any(
            pkg.get(k) for k in ("dependencies", "devDependencies", "optionalDependencies")):
        return
    where = f"{prefix}package.json"
    have = [n for n, _ in b.LOCKFILES if (s.app_dir / n).is_file()]
    if not have:
        raise SettingsError(
            f"{where} declares dependencies but commit {sha[:12]} holds no lockfile (package-lock.json, "
            "pnpm-lock.yaml or yarn.lock) beside it, so the build would be refused: a deploy installs only "
            "from a lockfile.",
            f"Run the install in {s.app_dir} (e.g. `npm install`), `git add {prefix}<lockfile>`, commit, "
            "and promote again.")
    lock = have[0]
    why = proc.run(["git", "-C", str(s.app_dir), "check-ignore", "-v", "--", lock])
    rule = why.stdout.split("\t", 1)[0].strip() if why.ok and why.stdout.strip() else ""
    if rule and not rule.split(":", 2)[-1].startswith("!"):      # a `!` rule brings it back
        source, line, pattern = (rule.split(":", 2) + ["", ""])[:3]
        src = os.path.relpath(os.path.join(top, source), s.root) if not os.path.isabs(source) else source
        ignored = f" git ignores it: line {line} of {src} (`{pattern}`)."
        fix = f"Remove that line from {src}, then run "
    else:
        ignored = " it is not committed."
        fix = ""
    raise SettingsError(
        f"{where} declares dependencies but commit {sha[:12]} holds no lockfile, so the build would be refused "
        f"(a deploy installs only from a lockfile). {prefix}{lock} is in the working tree, but{ignored}",
        f"{fix or 'Run '}`git add {prefix}{lock}`, commit, and promote again.")


def target(s: Settings) -> ReleaseTarget:
    """The environment's release target (deploy/targets/)."""
    return target_for(s)


def pushes_env(s: Settings) -> bool:
    """A promotion writes shared/.env on the hosts itself (hosts.push_env): the `env` step."""
    return target(s).shared and s.hosts.push_env


def _touches(commands: list[Command]) -> list[Touch]:
    return [Touch(c.where, c.what) for c in commands]


def _target_ready(s: Settings, environ) -> str:
    """What a release needs, checked before the build: the target's own check (hosts: they
    answer with known keys, every host has shared/.env, the hook variables are set), and the
    shared/.env this run pushes renders (hosts.push_env)."""
    t = target(s)
    if t.shared and s.hosts.push_env:
        shared_env_text(s, environ)     # a value shared/.env cannot hold fails here, not after the build
    try:
        note = t.prepare(environ)
    except HostFailed as e:
        raise with_skip_hint(e, s.name, f"invoke promote --to={s.name}") from None
    if t.shared and not environ.get("DEPLOY_LEDGER_URL"):
        note += "; ledger: local SQLite (set DEPLOY_LEDGER_URL to share locks and history between runners)"
    return note


def approvals(s: Settings, sha: str, ledger) -> Step:
    def run(ctx: StepContext):
        return check_promotion_rights(s, sha, ledger)

    return Step("approvals", f"staging passed {sha[:12]}; approvals {', '.join(s.approvals.required_roles) or '-'}",
                run=run)


def check_promotion_rights(s: Settings, sha: str, ledger) -> str:
    """The rights a change of `s` bringing `sha` forward needs (promote's approvals step, and
    every single primitive that brings a commit to the environment): a staging pass that
    still stands (deploy/approvals.py) and each required role approved by its own person."""
    notes = []
    if s.environment.requires_staging_run:
        staging = s.environment.staging_env
        again = (f"Promote it to {staging} again (a new pass): invoke promote --to={staging} --sha={sha}.")
        promotions = ledger.runs(staging, flow="promote", sha=sha, limit=50)
        rollbacks = [r for f in approval_rules.ROLLBACK_FLOWS for r in ledger.runs(staging, flow=f, limit=50)]
        texts = {r.id: " ".join(x.result or "" for x in ledger.steps(r.id)) for r in rollbacks}
        stand = approval_rules.staging_standing(sha, promotions, ledger.releases(staging, limit=200), rollbacks,
                                                texts)
        if stand.refusal:
            raise ApprovalMissing(f"{sha[:12]} has no standing {staging} pass: {stand.refusal}.", again)
        if stand.run is None:
            raise ApprovalMissing(
                f"{sha[:12]} has no succeeded {staging} promotion in the ledger.",
                f"Promote it to {staging} first: invoke promote --to={staging} --sha={sha}.",
            )
        notes.append(f"staging run {stand.run.id}")
    need = set(s.approvals.required_roles)
    if need:
        given = ledger.approvals(s.name, sha)
        have = {a.role for a in given}
        missing = [r for r in s.approvals.required_roles if r not in have]
        if missing:
            raise ApprovalMissing(
                f"{s.name} needs approvals of {sha[:12]} by role(s) {', '.join(missing)}.",
                f"Record them: invoke approve --env={s.name} --sha={sha} --role={missing[0]} --by=NAME.",
            )
        who = approval_rules.assign(s.approvals.required_roles, given)
        if who is None:
            raise ApprovalMissing(
                f"{s.name} needs each required role approved by its own person, but "
                f"{approval_rules.shared_approver(s.approvals.required_roles, given)}.",
                f"Another person approves one of the roles: invoke approve --env={s.name} --sha={sha} "
                f"--role=ROLE --by=NAME.")
        notes.append("approved by " + ", ".join(f"{r}: {who[r]}" for r in s.approvals.required_roles))
    return "; ".join(notes) or "nothing required"


# ----------------------------------------------------------------------------- hosts lock

def lock_hosts(s: Settings, release_id: str, *, shown: dict[str, str | None] | None = None) -> Step:
    """The remote lock, taken before anything changes: runners that share no ledger
    (another CI system, a laptop) still exclude each other, and the loser stops here.
    It lasts until the run ends: released when the whole run has succeeded (after
    `record`), or by this step's undo, the last of the undo chain; never at the release.
    `shown`: host -> the release its `current` pointed at when a person confirmed the plan;
    once the lock is held, a host on anything else stops the run (PlanChanged) before any change."""

    t = target(s)

    def run(ctx: StepContext):
        try:
            names = t.lock(ctx.id, release_id)
        except HostFailed as e:
            raise with_skip_hint(e, s.name, f"invoke promote --to={s.name}") from None
        if shown is not None:
            # Read under the host lock: a runner of another ledger that shares only the hosts
            # may have released between the question and this lock.
            now = t.serving()
            stale = [h for h in dict.fromkeys([*shown, *now]) if now.get(h) != shown.get(h)]
            if stale:   # this step's undo (or its finish, under --no-rollback) frees the host locks
                raise PlanChanged(
                    f"The hosts of {s.name} changed after the plan was shown: "
                    + ", ".join(f"{h} served {shown.get(h) or 'nothing'}, now {now.get(h) or 'nothing'}"
                                for h in stale) + ". Nothing was changed.",
                    "Another run (perhaps of another ledger) released meanwhile. Look again "
                    f"(`invoke hosts.releases --env={s.name}`), then run it again to confirm a plan of what is "
                    "live now.")
        return f"deploy lock held on {len(names)} host(s)"

    def undo(ctx: StepContext):
        # A host that cannot be reached must not keep the ledger lock (and with it every
        # other host) held: its lock, if this run took it, is named and left to lock.release.
        unlocked = t.unlock_reachable(ctx.id)
        freed, dead = unlocked.freed, unlocked.unreachable
        note = "released on " + (f"{len(freed)} host(s)" if freed else "no host (this run held none there)")
        if dead:
            note += (f"; {', '.join(dead)} could not be reached: a lock of this run there is removed with "
                     f"`invoke lock.release --env={s.name} --force` once it is back")
        return note

    def finish(ctx: StepContext):
        freed = t.unlock(ctx.id)
        return f"deploy lock released on {len(freed)} host(s)"

    def shows() -> list[Touch]:
        return _touches(t.lock_shows())

    return Step("lock", t.lock_text(), run=run, undo=undo, undo_does="release this run's host locks", finish=finish, shows=shows)


def with_skip_hint(err: HostFailed, env: str, again: str) -> HostFailed:
    """`err` with a hint naming the hosts that could not be reached at all and the command that
    acts on the others (`again` plus `--skip-host`); unchanged when every host answered."""
    dead = [r.host for r in err.results if not r.reachable]
    if not dead:
        return err
    skip = " ".join(f"--skip-host={h}" for h in dead)
    if again.startswith("invoke promote --to=") and "--abort" not in again:
        then = f"A promotion needs every host; meanwhile `invoke rollback --env={env} {skip}` acts on the others."
    else:
        then = f"Or act on the reachable hosts only: `{again} {skip}` (the skipped host is recorded)."
    err.hint = (f"{', '.join(dead)} cannot be reached over SSH (nothing could be changed there). Bring it back "
                f"(`invoke hosts.check --env={env}` shows it), then run again. {then}")
    return err


# ----------------------------------------------------------------------------- variables on hosts

def shared_env_text(s: Settings, environ) -> str:
    """shared/.env for the hosts of `s`: the environment's matrix values (what env.check
    reports) and its database URL under database.app_url_var."""
    values = dict(envs.app_values(s.root, s.name, environ))
    # The Shopify CLI's token deploys the app's configuration; the app never reads it, so it
    # stays on the deploying machine and is never written onto the app's hosts.
    values.pop(s.shopify.token_var, None)
    for name in (s.database.url_var, s.database.direct_url_var):
        if name and name != s.database.app_url_var and name.startswith(f"{s.name.upper()}_"):
            values.pop(name, None)   # the deployer's own name for it; the app reads app_url_var
    if s.database.provider == "postgresql":
        values[s.database.app_url_var] = app_database_url(s, environ) or ""   # postgresql: a URL, or SettingsError
    return envs.render_shared_env(s.name, values)


def env_push(s: Settings, environ) -> Step:
    """Write shared/.env on every host (hosts.push_env); the undo puts the previous file back."""

    def run(ctx: StepContext):
        names = hosts.push_env(s.hosts, shared_env_text(s, environ), run_id=ctx.id)
        return f"shared/.env written on {len(names)} host(s) (0600)"

    def undo(ctx: StepContext):
        names = hosts.restore_env(s.hosts, run_id=ctx.id)
        return f"previous shared/.env back on {len(names)} host(s)"

    def finish(ctx: StepContext):
        names = hosts.finish_env(s.hosts, run_id=ctx.id)
        return f"previous shared/.env copies removed on {len(names)} host(s)"

    def shows() -> list[Touch]:
        return [Touch(t.name, f"{t.deploy_to}/shared/.env: the {s.name} variables (names only here), 0600, atomic")
                for t in hosts.targets(s.hosts, s.app)]

    return Step("env", f"write {s.hosts.deploy_to}/shared/.env on every host from env/ and the secrets",
                run=run, undo=undo, undo_does="put the previous shared/.env back", finish=finish, shows=shows)


# ----------------------------------------------------------------------------- gate

def gate(s: Settings, sha: str) -> Step:
    def run(ctx: StepContext):
        verdict = evidence.require(s.gate, sha, evidence.evidence_dir(s), datetime.now(timezone.utc))
        ctx.note(evidence.render(verdict, width=max(60, terminal_width() - 8)).replace("\n", "\n        "))
        return f"{len(verdict.rows)} evidence item(s) passed"

    kinds = ", ".join(s.gate.required)
    skip = None if kinds else f"gate.required is empty in {s.file.name}"
    return Step("gate", f"evidence for {sha[:12]}: {kinds}", run=run, skip=skip)


# ----------------------------------------------------------------------------- build

def build(s: Settings, sha: str, release_id: str, ledger=None) -> Step:
    def run(ctx: StepContext):
        store = artifacts_dir(s)
        key = build_key(s, sha)
        art = b.find(store, key)
        reused = art is not None
        if art is None:
            src = source_dir(s, sha)
            result = b.build(src, sha, store, contract=s.app, now=commit_time(s.app_dir, sha),
                             app_folder=s.app_dir, key=key)
            art, reused = result.artifact, result.reused
        if s.environment.requires_staging_run and ledger is not None:
            staged = ledger.runs(s.environment.staging_env, flow="promote", status=RunStatus.SUCCEEDED, sha=sha, limit=1)
            want = PromotionRecord.of(staged[0]).artifact_sha256 if staged else None
            if want and want != art.sha256:
                raise BuildFailed(
                    f"The artifact for {sha[:12]} is {art.sha256[:16]}, but {s.environment.staging_env} tested "
                    f"{want[:16]}: production must get exactly what staging proved.",
                    "Find out why the artifact changed (.deploy/artifacts; a build is keyed by commit, "
                    f"environment.app_dir and the [app] build keys {', '.join(b.CONTRACT_FIELDS)}, which must be "
                    f"the same in {s.file.name} and {s.environment.staging_env}.toml), or promote this build to "
                    "staging again.",
                )
        ctx.put(ArtifactFacts.of(art))
        keep = {sha, *kept_shas(s, ledger)}
        pruned = b.prune(store, s.app.keep_builds, keep)
        pruned += source.prune(s.root / ".deploy" / "src", s.app.keep_builds, keep)
        return (f"{'reused' if reused else 'built'} {art.path.name[:16]}… ({art.path.stat().st_size // 1024} KiB)"
                + (f"; pruned {len(pruned)} old build(s)" if pruned else ""))

    def shows() -> list[Touch]:
        art = find_artifact(s, sha)
        if art is not None:
            return [Touch("local", f"reuse {art.path} (sha256 {art.sha256}), built for {sha[:12]}")]
        src = checkout_if_there(s, sha)
        name = build_key(s, sha).name
        out = [] if src else [Touch("local", f"git archive {sha} (the app folder) -> .deploy/src/{name}")]
        where = "local" if src else "local, read from the app folder now; the commit's own at run time"
        out += [Touch(where, _argv(c)) for c in b.build_commands(src or s.app_dir, s.app)]
        return out + [Touch("local", f"pack -> {artifacts_dir(s)}/<sha256>.tar.gz")]

    return Step("build", "the app's release contract ([app]: install, build, prune dev deps) of the commit, "
                         "reused when already built, packed once", run=run, shows=shows)


def kept_shas(s: Settings, ledger) -> set[str]:
    """Git SHAs whose builds must survive pruning: live and previous in every environment,
    and those of runs still in progress (another environment's promotion may be building)."""
    if ledger is None:
        return set()
    out: set[str] = set()
    for env in config.environments(s.root):
        rows = ledger.releases(env, limit=20)
        live = [r for r in rows if r.status == ReleaseStatus.LIVE]
        older = [r for r in rows if r.status == ReleaseStatus.SUPERSEDED]
        out.update(r.sha for r in (live + older[:1]) if r.sha)
    out.update(r.sha for r in ledger.runs(status=RunStatus.RUNNING, limit=100) if r.sha)
    return out


# ----------------------------------------------------------------------------- database

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
        return [Touch("database", f"{_argv(argv)} {keep}")]

    return Step("backup", f"{'pg_dump' if s.database.provider == 'postgresql' else 'SQLite copy'} of the database",
                run=run, skip=skip, shows=shows)


# ----------------------------------------------------------------------------- migrations: additive or destructive
# An undo keeps an additive migration (the previous release runs on the schema it leaves, and
# rows written into it stay); a destructive one needs its down.sql, or an acceptance by name, or
# the promotion refuses it before anything changes (deploy/migrations/_lint.py decides which).

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

    tmp = Path(tempfile.mkdtemp(prefix="occ-migrations-"))
    try:
        mdir = checkout(s.app_dir / s.database.migrations_dir, sha, tmp)
        lints, empty = pending_verdicts(s, mdir, environ, strict=False)
    except DeployError as e:
        return [f"cannot judge the migrations of {sha[:12]} before running: {e.message}"]
    finally:
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


# ----------------------------------------------------------------------------- release

def release(s: Settings, release_id: str, environ) -> Step:
    """Put the built artifact live on the environment's release target; the undo switches back."""
    t = target(s)

    def run(ctx: StepContext):
        return t.release(ctx, release_id, _artifact(ctx), environ)

    def undo(ctx: StepContext):
        try:
            return t.switch_back(ctx, release_id, environ)
        except HostFailed as e:
            # An undo's failure is shown by its message alone: the way on goes there.
            e = with_skip_hint(e, s.name, f"invoke promote --to={s.name} --abort")
            if any(not r.reachable for r in e.results):
                e.message += f"\n{e.hint}"
            raise e from None

    return Step("release", t.release_text(release_id), run=run, undo=undo, undo_does=t.switch_back_text(),
                shows=lambda: _touches(t.release_shows(release_id)))


def run_smoke(s: Settings, state: dict, release_id: str | None):
    """The environment's smoke checks against the app and each host; SmokeFailed with every result."""
    checks = smoke.checks_for(s.smoke, base_urls(s, state), s.app.health_path)
    report = smoke.check(checks, release_id=release_id, retries=s.smoke.retries, backoff=s.smoke.backoff)
    smoke.require(report)
    return report


# ----------------------------------------------------------------------------- shopify

def shopify_push(s: Settings, release_id: str, sha: str, environ, *, skip: bool, message: str | None = None) -> Step:
    reason = "--skip-shopify given" if skip else shopify.skip_reason(s)

    source = f"{s.environment.repo_url.rstrip('/')}/commit/{sha}" if s.environment.repo_url else ""
    message = message or f"occ-deploy {release_id} ({sha[:12]})"

    def run(ctx: StepContext):
        app = source_dir(s, sha)  # the commit's config and extensions, never the working tree's
        if ctx.get(ShopifyFacts) is None:
            active = shopify.active_version(shopify.versions(s, environ, path=app))
            ctx.put(ShopifyFacts(version=None, previous=active.version_tag if active else None))
            ctx.checkpoint()
        # The build's full install (its recipe, environment and dependency cache), not another one.
        installed = shopify.prepare(s, app, environ, deps_cache=b.deps_cache_dir(artifacts_dir(s)))
        try:
            res = shopify.deploy(s, release_id, message, source, environ, path=app)
        finally:
            b.check_full_install(installed)
        before = ctx.get(ShopifyFacts)
        prev = before.previous if before else None
        ctx.put(ShopifyFacts(version=res.version, previous=prev if res.reused else res.previous))
        return f"app version {res.version} live (was {res.previous or 'none'}) from {sha[:12]}; {installed.summary}"

    def undo(ctx: StepContext):
        prev = (ctx.get(ShopifyFacts) or ShopifyFacts(None, None)).previous
        app = source_dir(s, sha)
        active = shopify.active_version(shopify.versions(s, environ, path=app))
        if active is None or active.version_tag != release_id:
            return f"{release_id} is not live ({active.version_tag if active else 'none'} is): nothing to undo"
        if not prev:
            return f"{release_id} was the app's first version: there is no earlier one to re-release"
        shopify.release(s, prev, environ, path=app)
        return f"re-released {prev}"

    def shows() -> list[Touch]:
        app = checkout_if_there(s, sha) or f"<checkout of {sha[:12]}>"
        return [Touch("shopify", _argv(shopify.versions_argv(s.shopify, path=app))),
                Touch("shopify", _argv(shopify.deploy_argv(s.shopify, release_id, message, source, path=app)))]

    return Step("shopify", f"shopify app deploy --config {s.shopify.config or '-'} --version {release_id} "
                           f"--path <checkout of {sha[:12]}>",
                run=run, undo=undo, undo_does="shopify app release --version <previous>", skip=reason, shows=shows)


# ----------------------------------------------------------------------------- smoke & watch

def smoke_step(s: Settings, release_id: str) -> Step:
    def run(ctx: StepContext):
        report = run_smoke(s, ctx.state, release_id)
        return f"{len(report.results)} check(s) passed on {release_id}"

    what = (f"{len(s.smoke.checks)} configured HTTP check(s)" if s.smoke.checks
            else f"HTTP check: {s.app.health_path} answers 2xx/3xx")
    def shows() -> list[Touch]:
        bases = base_urls(s, {}) or [f"http://{s.local.host}:{s.local.port}"]
        return [Touch("http", f"GET {c.url}") for c in smoke.checks_for(s.smoke, bases, s.app.health_path)]

    return Step("smoke", f"{what} against the app" + ("" if s.is_local else " and each host"), run=run, shows=shows)


def watch_step(s: Settings, environ) -> Step:
    def run(ctx: StepContext):
        urls = smoke.watch_urls(s.watch, base_urls(s, ctx.state), s.app.health_path)
        extra = _decision_log_check(s, environ) if s.watch.decision_log_check else None
        w = s.watch
        rep = smoke.watch(urls, window=w.window_seconds, interval=w.interval_seconds,
                          max_error_ratio=w.max_error_ratio, max_p95_ms=w.max_p95_ms, extra_check=extra,
                          timeout=w.timeout_seconds, max_consecutive_failures=w.max_consecutive_failures,
                          min_samples=w.min_samples)
        smoke.require(rep)
        return f"{len(rep.samples)} samples, error ratio {rep.error_ratio:.2f}, p95 {rep.p95_ms:.0f} ms"

    w = s.watch
    skip = "watch.window_seconds = 0" if w.window_seconds <= 0 else None
    return Step("watch", f"poll health for {w.window_seconds:g}s; triggers: error ratio > {w.max_error_ratio}, "
                         f"p95 > {w.max_p95_ms:g} ms" + (", decision log" if w.decision_log_check else ""),
                run=run, skip=skip)


def _decision_log_check(s: Settings, environ):
    def check():
        url = environ.get(s.decision_log.url_var)
        if not url:
            return f"{s.decision_log.url_var} is not set"
        h = decisionlog.health(Secret(url), s.decision_log, datetime.now(timezone.utc))
        return None if h.ok else "; ".join(h.reasons)

    return check


# ----------------------------------------------------------------------------- record

def record(s: Settings, sha: str, release_id: str, ledger) -> Step:
    def run(ctx: StepContext):
        art, shop = ctx.get(ArtifactFacts), ctx.get(ShopifyFacts)
        if ctx.get(RecordFacts) is None:
            live = ledger.live_release(s.name)
            ctx.put(RecordFacts(live.release_id if live else None))
            ctx.checkpoint()
        ledger.record_release(env=s.name, release_id=release_id, sha=sha, artifact_sha256=art.sha256 if art else None,
                              run_id=ctx.run_id, shopify_version=shop.version if shop else None)
        return f"{release_id} recorded live"

    def undo(ctx: StepContext):
        if not any(r.release_id == release_id for r in ledger.releases(s.name, limit=100)):
            return "no release row was written"
        ledger.set_release_status(s.name, release_id, ReleaseStatus.ROLLED_BACK)
        facts = ctx.get(RecordFacts)
        prev = facts.previous_live if facts else None
        if prev:
            ledger.set_release_status(s.name, prev, ReleaseStatus.LIVE)
        return f"{release_id} marked rolled back"

    return Step("record", "ledger release row (the deployment log and CI summary follow the run)", run=run, undo=undo,
                undo_does="mark the release rolled back")


# ----------------------------------------------------------------------------- rollback
# `invoke rollback`'s steps, each the way back of the promote step of the same name above
# (release, shopify, database = backup + migrate, smoke, record). A rollback is not undone:
# that would bring back the release being fled; re-running it is safe.

def release_back(s: Settings, target_id: str, current: str | None, environ, *, ledger=None,
                 target_known: bool = False, skipped=()) -> Step:
    """Mirror of `release`: the release target back to `target_id`, restarted. Places on anything
    but `current` or `target_id` stop it before any switch (PlanChanged); once switched, the ledger
    says so at once (`status` is what the target serves, whatever fails later)."""
    t = target(s)

    def run(ctx: StepContext):
        try:
            done = t.rollback(ctx, target_id, expect=current, environ=environ)
        except HostFailed as e:
            raise with_skip_hint(e, s.name, f"invoke rollback --env={s.name}") from None
        _record_back(s, ledger, target_id, current, target_known)
        return done + "".join(f", {h}: skipped (--skip-host)" for h in skipped)

    return Step("release", f"switch every host back to {target_id}, restart", run=run,
                shows=lambda: _touches(t.rollback_shows(target_id)))


def shopify_back(s: Settings, version: str | None, environ, *, skip: str | None) -> Step:
    """Mirror of `shopify_push`: re-release `version` (default: the one before the active one)."""
    def run(ctx: StepContext):
        res = shopify.rollback(s, version, environ)
        return f"app version {res.version} live (was {res.previous or '-'})" + (f"; {res.note}" if res.note else "")

    def shows() -> list[Touch]:
        return [Touch("shopify", _argv(shopify.release_argv(s.shopify, version)) if version else
                      "shopify app release --version <the version active before the current one>")]

    return Step("shopify", f"re-release app version {version or 'before the current one'}", run=run, skip=skip,
                shows=shows)


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


def smoke_after(s: Settings, target: str) -> Step:
    """Mirror of `smoke_step`: the smoke checks against the restored release."""
    def run(ctx: StepContext):
        report = run_smoke(s, ctx.state, target)
        return f"{len(report.results)} check(s) passed on {target}"

    return Step("smoke", f"HTTP checks against {target}", run=run)


def _record_back(s: Settings, ledger, target: str, current: str | None, target_known: bool) -> None:
    if ledger is None:
        return
    if current and current != target:
        ledger.set_release_status(s.name, current, ReleaseStatus.ROLLED_BACK)
    if target_known:
        ledger.set_release_status(s.name, target, ReleaseStatus.LIVE)


def record_rollback(s: Settings, ledger, target: str, current: str | None, *, target_known: bool) -> Step:
    """Mirror of `record`: the ledger's releases say `target` is live and `current` rolled back
    (already so since the switch: release_back records it; repeated here for a plan without hosts)."""
    def run(ctx: StepContext):
        _record_back(s, ledger, target, current, target_known)
        return f"{target} live; {current or '-'} rolled back"

    return Step("record", "ledger: target live, current rolled back", run=run)


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


def rollback_check(s: Settings, ledger: Ledger, shown: ReleaseRow | None, current: str | None,
                   blockers: Callable[[], list[str]]) -> Step:
    """The first step of a rollback, under the environment's lock: the live release the plan
    showed (ledger release and commit; for local, `current`) is still the live one, and
    nothing the rollback needs is missing (`blockers()`). Changes nothing."""
    def run(ctx: StepContext):
        still_live(ledger, s.name, shown)
        target(s).still_serving(current)
        found = blockers()
        if found:
            raise SettingsError("The rollback cannot be completed, so it did not start: " + "; ".join(found) + ".",
                                f"Use --db=keep (or another --db), or fix the cause; `invoke rollback --env={s.name} "
                                "--dry-run` lists what is checked.")
        return f"{(shown.release_id if shown else None) or current or '-'} still live; nothing missing"

    def shows() -> list[Touch]:
        try:
            found = blockers()
        except DeployError as e:
            found = [f"cannot be checked now: {e.message}"]
        out = [Touch("ledger", f"{(shown.release_id if shown else None) or current or '-'} is still live when the lock "
                             "is held")]
        return out + [Touch("WARNING", f"refused before any host switches: {b}") for b in found]

    return Step("check", "the live release shown is still live; down.sql / backup present and verified", run=run,
                shows=shows)
