"""Invoke tasks: parse flags, load settings, call one flow or primitive, map the outcome
to an exit code. Logic lives in deploy/; this file stays thin and cheap to import."""

import sys

from invoke import Collection
from invoke import task as _task

# Invoke turns bytecode writing off (unless --write-pyc) before it loads this file, so this file
# leaves no .pyc. The toolkit's modules, imported from here on, keep Python's own setting (-B,
# PYTHONDONTWRITEBYTECODE): an editable install (`pip install -e .`, README) compiles them once
# instead of on every run (compiling the ~100 a `promote --dry-run` imports took about 150 ms here).
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

from deploy.cli import guarded, need, reads_only, services  # noqa: E402  (after the line above, on purpose)


def task(*args, **kwargs):
    """Invoke's @task with every argument a flag: `invoke promote --help` must show help,
    not take "--help" as a positional environment name."""
    kwargs.setdefault("positional", [])
    return _task(*args, **kwargs)

ENV = "environment name: a file env/<name>.toml (local, dev, staging, production)"
JSON = "print machine-readable JSON (its shape: README, JSON output) instead of a table"
YES_PROTECTED = "confirm the change of a protected environment (without a terminal it is refused otherwise)"
EXIT_CODES = """
    Exit codes: 0 done; 1 failed (the run was undone unless the message says otherwise);
    2 settings or flags wrong; 3 a tool is missing; 4 another run holds the lock;
    5 evidence gate closed; 6 approval or staging run missing; 7 not confirmed;
    130 interrupted. Invoke's --dry is the same as --dry-run here."""


def exit_codes(fn):
    """Append the exit codes to a task's --help text (its docstring)."""
    fn.__doc__ = fn.__doc__.rstrip() + "\n" + EXIT_CODES
    return fn


# ----------------------------------------------------------------------------- promote & rollback
@task(help={
    "to": ENV,
    "sha": "git commit to promote (default: HEAD)",
    "dry_run": "print the plan as a table and change nothing",
    "skip_shopify": "do not push Shopify config; recorded as skipped",
    "resume": "finish the latest interrupted run of this environment",
    "abort": "undo the latest interrupted (or --no-rollback) run of this environment",
    "yes": "answer yes to every confirmation (CI)",
    "no_rollback": "on failure, leave the deploy in place for diagnosis (recorded); undo later with --abort",
    "break_lock": "with --resume/--abort: take over the killed run's lock even though its holder ran on another "
                  "machine; refused unless that holder has shown no sign of life for 2 min (holder and age shown)",
    "skip_host": "with --abort: a host that cannot be reached (user@host:port; repeat or comma-separate): undo on "
                 "the others, record it as skipped and print the command that brings it in line once it is back",
    "accept_destructive": "a destructive migration (drop, rename, type change, SET NOT NULL, data rewrite) that has "
                          "no down.sql, accepted by name (repeat for several): an undo can then only restore the "
                          "backup, and asks before discarding rows written since",
}, iterable=["skip_host", "accept_destructive"])
@guarded
@exit_codes
def promote(c, to, sha=None, dry_run=False, skip_shopify=False, resume=False, abort=False, yes=False,
            no_rollback=False, break_lock=False, skip_host=None, accept_destructive=None):
    """Promote a commit to an environment: gate, build, backup, migrate, release, Shopify, smoke, watch."""
    from deploy.flows import promote as flow

    flow.main(services(), to, sha=sha, dry_run=dry_run, skip_shopify=skip_shopify, resume=resume, abort=abort, yes=yes,
              no_rollback=no_rollback, break_lock=break_lock, skip_hosts=skip_host or (),
              accept_destructive=tuple(accept_destructive or ()))


@task(help={
    "env": ENV,
    "to": "release id to go back to (default: the one before the live release)",
    "db": "database: 'down' (down-migrations), 'restore' (pre-deploy backup) or 'keep' (default: keep)",
    "skip_shopify": "leave the Shopify app version as it is",
    "dry_run": "print the plan and change nothing",
    "yes": "answer yes to every confirmation",
    "skip_host": "a host that cannot be reached (user@host:port; repeat or comma-separate): roll back the others, "
                 "record it as skipped and print the command that brings it in line once it is back",
}, iterable=["skip_host"])
@guarded
@exit_codes
def rollback(c, env, to=None, db="keep", skip_shopify=False, dry_run=False, yes=False, skip_host=None):
    """Put the previous (or a named) release back: hosts, Shopify version, optionally the database; then smoke."""
    from deploy.flows import rollback as flow

    flow.main(services(), env, to=to, db=db, skip_shopify=skip_shopify, dry_run=dry_run, yes=yes,
              skip_hosts=skip_host or ())


@task(help={"json": JSON})
@guarded
@reads_only
def status(c, json=False):
    """Where each environment stands: release, SHA, Shopify version, lock, last runs."""
    from deploy.flows import status as flow

    flow.main(services(), as_json=json)


@task(help={"env": ENV, "sha": "git commit approved (default: HEAD)", "by": "who approves",
            "role": "the approver's role (e.g. product, manager)", "note": "optional note"})
@guarded
def approve(c, env, by, role, sha=None, note=None):
    """Record an approval of a commit for an environment (production needs the roles its settings require)."""
    from deploy.flows import approve

    need(by=by, role=role)
    approve.main(services(), env, sha=sha, by=by, role=role, note=note)


# ----------------------------------------------------------------------------- lock
@task(name="release", iterable=["skip_host"],
      help={"env": ENV, "force": "break a lock whose holder is dead or older than lock.max_age_minutes",
            "skip_host": "a host that cannot be reached (user@host:port; repeat or comma-separate): release the "
                         "ledger lock and the other hosts' locks, leave its lock for when it is back"})
@guarded
def lock_release(c, env, force=False, skip_host=None):
    """Break a stale lock of an environment (needs --force)."""
    from deploy.flows import lock

    lock.release(services(), env, force=force, skip_hosts=skip_host or ())


@task(name="status", help={"env": "only this environment (default: all)", "json": JSON})
@guarded
@reads_only
def lock_status(c, env=None, json=False):
    """Who holds each environment's lock, and since when."""
    from deploy.flows import lock

    lock.status(services(), env, as_json=json)


# ----------------------------------------------------------------------------- app (local)
@task(name="stop", help={"env": "the local environment (default: local)"})
@guarded
def app_stop(c, env="local"):
    """Stop the app server that `promote --to=local` started."""
    from deploy.flows import app

    app.stop(services(), env)


@task(name="start", help={"env": "the local environment (default: local)"})
@guarded
def app_start(c, env="local"):
    """Start (or restart) the local app server from the current release."""
    from deploy.flows import app

    app.start(services(), env)


# ----------------------------------------------------------------------------- env & secrets
def _exit(code: int) -> None:
    from invoke.exceptions import Exit

    if code:
        raise Exit(code=code)


@task(name="check", help={"env": ENV, "json": JSON})
@guarded
@reads_only
def env_check(c, env, json=False):
    """Check an environment's variables against the matrix: present, typed, no placeholders, no secret in a file."""
    from deploy.flows import env as flow

    _exit(flow.check(services(), env, as_json=json))


@task(name="parity", help={"left": "the rehearsal environment (default: staging)",
                           "right": "the environment it must mirror (default: production)"})
@guarded
@reads_only
def env_parity(c, left="staging", right="production"):
    """Compare staging's toggles with production's under the matrix's parity rules."""
    from deploy.flows import env as flow

    _exit(flow.parity(services(), left, right))


@task(name="matrix")
@guarded
def env_matrix(c):
    """Regenerate docs/deployment/env_matrix.md from env/variables.toml."""
    from deploy.flows import env as flow

    flow.matrix(services())


@task(name="push", help={"env": ENV, "yes": "answer yes to the confirmation a protected environment asks",
                         "dry_run": "name the hosts and variables (never values) and change nothing"})
@guarded
@exit_codes
def env_push(c, env, yes=False, dry_run=False):
    """Write <deploy_to>/shared/.env (0600, atomic) on every host of an environment from its variables."""
    from deploy.flows import env as flow

    flow.push(services(), env, yes=yes, dry_run=dry_run)


@task(name="dotenv", help={"env": "environment whose values to write (default: dev)",
                           "force": "overwrite an existing .env"})
@guarded
def env_dotenv(c, env="dev", force=False):
    """Write the app's .env for local development from the matrix (secrets left empty, with where to get them)."""
    from deploy.flows import env as flow

    flow.dotenv(services(), env, force)


@task(name="rotation")
@guarded
@reads_only
def secrets_rotation(c):
    """Each secret's age against its rotation period; fails when a production secret is overdue."""
    from deploy.flows import secrets

    _exit(secrets.rotation(services()))


@task(name="rotated", help={"name": "the secret's variable name", "env": ENV, "by": "who rotated it (default: you)"})
@guarded
def secrets_rotated(c, name, env, by=None):
    """Record that a secret was rotated today."""
    from deploy.flows import secrets

    need(name=name, env=env)
    secrets.rotated(services(), name, env, by)


# ----------------------------------------------------------------------------- db
@task(name="status", help={"env": ENV, "json": JSON})
@guarded
@reads_only
def db_status(c, env, json=False):
    """Applied, pending, failed and drifted migrations of an environment's database."""
    from deploy.flows import db

    _exit(db.status(services(), env, as_json=json))


@task(name="migrate", help={"env": ENV, "yes": YES_PROTECTED})
@guarded
def db_migrate(c, env, yes=False):
    """Apply pending Prisma migrations, recorded in _prisma_migrations as Prisma does.

    On a shared environment: the commit's migrations, after a backup, with promote's rights and locks."""
    from deploy.flows import db

    db.migrate(services(), env, yes)


@task(name="rollback", help={"env": ENV, "steps": "how many of the latest migrations to undo (default 1)",
                             "yes": YES_PROTECTED})
@guarded
def db_rollback(c, env, steps=None, yes=False):
    """Undo the latest migrations with their down.sql files."""
    from deploy.flows import db

    db.rollback(services(), env, steps, yes)


@task(name="resolve", help={"env": ENV, "applied": "mark this migration applied",
                            "rolled_back": "mark this failed migration rolled back", "yes": YES_PROTECTED})
@guarded
def db_resolve(c, env, applied=None, rolled_back=None, yes=False):
    """Mark a migration applied or rolled back, as `prisma migrate resolve` does."""
    from deploy.flows import db

    db.resolve(services(), env, applied, rolled_back, yes)


@task(name="backup", help={"env": ENV})
@guarded
def db_backup(c, env):
    """Back up an environment's database (pg_dump custom format or a SQLite copy) with a SHA-256 sidecar."""
    from deploy.flows import db

    db.backup(services(), env)


@task(name="verify-backup", help={"env": ENV, "file": "backup file (default: the latest)"})
@guarded
def db_verify_backup(c, env, file=None):
    """Restore a backup into a scratch database and compare row counts per table."""
    from deploy.flows import db

    _exit(db.verify_backup(services(), env, file))


@task(name="restore", help={"env": ENV, "file": "backup file (default: the latest)",
                            "yes": "confirm replacing the environment's data"})
@guarded
def db_restore(c, env, file=None, yes=False):
    """Restore a backup into an environment's database."""
    from deploy.flows import db

    db.restore(services(), env, file, yes)


@task(name="provision", help={"env": ENV, "admin_url_var": "variable holding an admin Postgres URL",
                              "db_name": "database name (default occ_<env>)", "role": "role (default occ_<env>)",
                              "reset_password": "give an existing role a new password"})
@guarded
def db_provision(c, env, admin_url_var="DATABASE_ADMIN_URL", db_name=None, role=None, reset_password=False):
    """Create the role and database of a Postgres test/staging environment; the URL goes only to env/<env>.local.env."""
    from deploy.flows import db

    db.provision(services(), env, admin_url_var, db_name, role, reset_password)


# ----------------------------------------------------------------------------- hosts, shopify, smoke
@task(name="check", help={"env": ENV, "json": JSON})
@guarded
@reads_only
def hosts_check(c, env, json=False):
    """Connect to every host (host keys checked): deploy path writable, free space, current release."""
    from deploy.flows import hosts

    _exit(hosts.check(services(), env, as_json=json))


@task(name="releases", help={"env": ENV})
@guarded
@reads_only
def hosts_releases(c, env):
    """List each host's releases, the current one in brackets."""
    from deploy.flows import hosts

    hosts.releases(services(), env)


@task(name="release", help={"env": ENV, "sha": "commit whose built artifact to release (default: HEAD)",
                            "yes": YES_PROTECTED})
@guarded
def hosts_release(c, env, sha=None, yes=False):
    """Release an already-built artifact to every host in parallel (promote does this after the gate).

    Promote's approvals of the commit and its locks apply."""
    from deploy.flows import hosts

    hosts.release(services(), env, sha, yes)


@task(name="rollback", help={"env": ENV, "to": "release id (default: the one before current)", "yes": YES_PROTECTED})
@guarded
def hosts_rollback(c, env, to=None, yes=False):
    """Switch every host back to the previous (or named) release and restart."""
    from deploy.flows import hosts

    hosts.rollback(services(), env, to, yes)


@task(name="setup", help={"env": ENV, "remove": "stop the proxy and remove its files instead (the undo)",
                          "yes": YES_PROTECTED})
@guarded
def hosts_setup(c, env, remove=False, yes=False):
    """Install and start the environment's [proxy] (caddy or nginx) on every host, for zero-downtime releases.

    Safe to repeat: a proxy that runs keeps serving its live upstream. --remove undoes it."""
    from deploy.flows import hosts

    hosts.setup(services(), env, remove, yes)


@task(name="versions", help={"env": ENV, "json": JSON})
@guarded
@reads_only
def shopify_versions(c, env, json=False):
    """List the app's Shopify versions (shopify app versions list --json)."""
    from deploy.flows import shopify

    shopify.versions(services(), env, as_json=json)


@task(name="deploy", help={"env": ENV, "version": "version tag (default: a new release id)",
                           "message": "version message (<= 200 characters)", "yes": YES_PROTECTED})
@guarded
def shopify_deploy(c, env, version=None, message=None, yes=False):
    """Push the app's Shopify configuration and extensions as a new version and release it.

    On a shared environment: the commit's, with promote's approvals of the commit and its locks."""
    from deploy.flows import shopify

    shopify.deploy(services(), env, version, message, yes)


@task(name="release", help={"env": ENV, "version": "the version tag to make live", "yes": YES_PROTECTED})
@guarded
def shopify_release(c, env, version, yes=False):
    """Make an existing Shopify app version live (the undo of shopify.deploy)."""
    from deploy.flows import shopify

    need(version=version)
    shopify.release(services(), env, version, yes)


@task(help={"env": ENV, "release": "release id /version must name (local: the running one)"})
@guarded
@reads_only
def smoke(c, env, release=None):
    """Run the environment's smoke checks now and print every target's result."""
    from deploy.flows import smoke

    _exit(smoke.main(services(), env, release))


# ----------------------------------------------------------------------------- evidence
@task(name="collect", iterable=["files"], help={
    "sha": "the commit the reports were made for: a full SHA, or a ref (HEAD) resolved in the app's repository (--env's app_dir)",
    "files": "a report file or Lighthouse CI folder; repeat for each (default: everything in the evidence folder)",
    "out": "manifest path (default: evidence/manifest.json, or the environment's gate.evidence_dir)",
    "env": "use this environment's gate.evidence_dir for the manifest"})
@guarded
def evidence_collect(c, sha, files=None, out=None, env=None):
    """Bind test reports to a commit: writes the evidence manifest (kind, time, SHA-256 of each file)."""
    from deploy.flows import evidence

    need(sha=sha)
    evidence.collect(services(), sha, list(files or []), out, env)


@task(name="gate", help={"env": ENV, "sha": "commit to judge (default: HEAD)", "json": JSON})
@guarded
@reads_only
def gate_task(c, env, sha=None, json=False):
    """Judge the evidence for a commit against an environment's gate policy; non-zero when closed.

    Exit codes: 0 the gate is open; 5 it is closed (every reason is in the table);
    2 settings or flags wrong; 1 anything else that failed."""
    from deploy.flows import gate as flow

    _exit(flow.main(services(), env, sha, as_json=json))


# ----------------------------------------------------------------------------- drills
@task(name="drill", help={"env": "the rehearsal environment (default: staging; never production)",
                          "sha": "the hotfix candidate commit (default: HEAD)"})
@guarded
def hotfix_drill(c, env="staging", sha=None):
    """Rehearse hotfix and rollback end to end, timed per phase and recorded in the ledger."""
    from deploy.flows import hotfix

    hotfix.drill(services(), env, sha=sha)


@task(help={"days": "flag a procedure with no passed drill in this many days (default 30)"})
@guarded
@reads_only
def drills(c, days=None):
    """List recorded drills; non-zero when hotfix or rollback was not exercised recently."""
    from deploy.flows import drills

    _exit(drills.main(services(), days))


# ----------------------------------------------------------------------------- operations
@task(name="check", help={"env": "environment (default: production)", "sha": "commit to go live (default: HEAD)",
                          "json": JSON})
@guarded
def golive_check(c, env="production", sha=None, json=False):
    """Run the go-live checklist (evidence, decision log, backup, drills, secrets, parity, approvals)."""
    from deploy.flows import golive

    _exit(golive.check(services(), env, sha, as_json=json))


@task(name="bootstrap")
@guarded
def bootstrap_task(c):
    """Set up a working local app: tools checked, .env written, database migrated and seeded. Safe to re-run."""
    from deploy.flows import bootstrap

    _exit(bootstrap.main(services()))


@task(name="init", help={
    "app": "the app folder to set up (with package.json; relative to the current folder or absolute)",
    "force": "replace files that already exist (without it they are kept, and listed)"})
@guarded
def init_task(c, app, force=False):
    """Write an existing app's starting files: settings, variables, workflows, runbooks. Safe to re-run.

    env/<local,staging,production>.toml and .env, the variable matrix (from .env.example and
    shopify.app*.toml), GitHub workflows (staging, production, rollback, hotfix) and the runbooks."""
    from deploy.flows import init

    need(app=app)
    init.main(services(), app, ns, force=force)


@task(name="blocker", help={"env": ENV, "text": "what blocks the release"})
@guarded
def log_blocker(c, env, text=None):
    """Record a blocker in feedback/deployment.md."""
    from deploy.flows import log

    log.blocker(services(), env, text)


@task(name="readiness", help={"env": ENV, "text": "the readiness statement"})
@guarded
def log_readiness(c, env, text=None):
    """Record a readiness statement in feedback/deployment.md."""
    from deploy.flows import log

    log.readiness(services(), env, text)


@task(name="check")
@guarded
@reads_only
def runbooks_check(c):
    """Fail when a runbook names a task or flag that does not exist, or a task is in no runbook."""
    from deploy.flows import runbooks

    _exit(runbooks.check(services()))


@task(name="stamp")
@guarded
def runbooks_stamp(c):
    """Update the "Last exercised" lines of the hotfix and rollback runbooks from the ledger's drills."""
    from deploy.flows import runbooks

    runbooks.stamp(services())


@task(name="report", help={"out": "where to write the report (default: docs/reliability.md)",
                            "junit": "read the cases from this JUnit XML of a pytest run that included the suite "
                                     "(e.g. ./scripts/deploy/test --junitxml=FILE) instead of running it again"})
@guarded
def reliability_report(c, out="docs/reliability.md", junit=None):
    """Run the reliability suite (kill points, concurrency, faults, hostile input, leaks, remote, trust) and regenerate docs/reliability.md."""
    from deploy.flows import reliability

    reliability.report(services(), out, junit)


ns = Collection(promote, rollback, status, approve, smoke, gate_task, drills, bootstrap_task, init_task)
ns.add_collection(Collection("runbooks", runbooks_check, runbooks_stamp))
ns.add_collection(Collection("golive", golive_check))
ns.add_collection(Collection("log", log_blocker, log_readiness))
ns.add_collection(Collection("hotfix", hotfix_drill))
ns.add_collection(Collection("evidence", evidence_collect))
ns.add_collection(Collection("hosts", hosts_check, hosts_releases, hosts_release, hosts_rollback, hosts_setup))
ns.add_collection(Collection("shopify", shopify_versions, shopify_deploy, shopify_release))
ns.add_collection(Collection("db", db_status, db_migrate, db_rollback, db_resolve, db_backup, db_verify_backup,
                             db_restore, db_provision))
ns.add_collection(Collection("env", env_check, env_parity, env_matrix, env_push, env_dotenv))
ns.add_collection(Collection("secrets", secrets_rotation, secrets_rotated))
ns.add_collection(Collection("lock", lock_release, lock_status))
ns.add_collection(Collection("app", app_stop, app_start))
ns.add_collection(Collection("reliability", reliability_report))

# The toolkit's own development tasks (its reliability report, the Operator Control Center's
# decision log): in the toolkit's `invoke --list`, not in an app's. An app's tasks.py imports
# this file as `deploy.tasks` (`from deploy.tasks import ns`) and gets the collection without
# them; `toolkit_ns` is always the whole one.
TOOLKIT_ONLY = ("reliability", "log")
toolkit_ns = ns
if __name__ == "deploy.tasks":
    ns = Collection()
    for _name, _t in toolkit_ns.tasks.items():
        ns.add_task(_t, name=_name)
    for _name, _sub in toolkit_ns.collections.items():
        if _name not in TOOLKIT_ONLY:
            ns.add_collection(_sub, name=_name)
