"""`invoke bootstrap`: a working local app for a new engineer, safe to run again.

Actions, in order; each reports done (it changed something), unchanged (already so),
missing (a tool is not installed: says how to install it) or failed (with the reason):

    node        Node.js >= 20 (or the app's `engines.node`, if higher)
    npm         present
    shopify     the Shopify CLI; missing is a warning (only Shopify pushes need it)
    .env        the app's .env written from the variable matrix, never overwritten
    database    SQLite file created, or the Postgres database created when DATABASE_URL names one
    migrations  pending Prisma migrations applied (deploy.migrations)
    seed        the app's seed script (`npm run seed`, or package.json `prisma.seed`),
                run once per database: again only when the database is new

A second run finds everything in place and changes nothing: every action says
`unchanged`, and the summary says so. Which database: DATABASE_URL from the caller's
environment if set (that is how a developer opts into Postgres), else database.url of the
environment (env/local.toml: the very file `invoke promote --to=local` migrates), else the
one in the app's .env, else `file:./dev.db`. When the app's .env names another database
than the environment's, the database line says so (the app would read that one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import urlsplit

from deploy import dburl, envs, migrations, proc
from deploy.config import Settings
from deploy.errors import DeployError, SettingsError, SettingsError as _Bad
from deploy.migrations import connection_error
from deploy.redact import Secret, redact, reveal

__all__ = ["MIN_NODE", "Action", "BootstrapReport", "bootstrap", "judge_node", "required_node_major",
           "parse_version", "seed_command", "render", "STATE_FILE"]

MIN_NODE = 20                           # React Router 7 and Shopify CLI 3.x run on Node 20
STATE_FILE = ".deploy/bootstrap.json"   # which databases were seeded (git-ignored with .deploy/)
Status = Literal["done", "unchanged", "missing", "failed"]

INSTALL = {
    "node": "Install Node.js 20 or newer: https://nodejs.org (or `nvm install 20`; Debian: apt-get install -y nodejs).",
    "npm": "npm comes with Node.js; reinstall Node.js 20+ (Debian: apt-get install -y npm).",
    "shopify": "Install Shopify CLI 3.x: `npm install -g @shopify/cli@3` (needed only for Shopify pushes).",
}


@dataclass(frozen=True)
class Action:
    name: str
    status: Status
    detail: str
    required: bool = True               # False: `missing` is a warning, not a failure

    @property
    def problem(self) -> bool:
        return self.status == "failed" or (self.status == "missing" and self.required)


@dataclass(frozen=True)
class BootstrapReport:
    actions: tuple[Action, ...]

    @property
    def ok(self) -> bool:
        return not any(a.problem for a in self.actions)

    @property
    def changed(self) -> bool:
        return any(a.status == "done" for a in self.actions)

    @property
    def exit_code(self) -> int:
        """0 when nothing is wrong; 3 (errors.EXIT_CODES: a tool is not installed) when a required
        tool is missing, whatever else failed because of it; else 1."""
        if self.ok:
            return 0
        return 3 if any(a.status == "missing" and a.required for a in self.actions) else 1

    def action(self, name: str) -> Action:
        for a in self.actions:
            if a.name == name:
                return a
        raise KeyError(name)


# ---------------------------------------------------------------- pure parts

def parse_version(text: str) -> tuple[int, ...] | None:
    """The first `X.Y.Z` (or `vX.Y.Z`) in a tool's output, e.g. `@shopify/cli/3.94.0 linux-x64 node-v20`."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        return None
    return tuple(int(g) for g in m.groups() if g is not None)


def required_node_major(package: Mapping) -> int:
    """MIN_NODE, or the major version package.json's `engines.node` asks for when it is higher."""
    spec = str((package.get("engines") or {}).get("node") or "")
    m = re.search(r"(\d+)", spec)
    return max(MIN_NODE, int(m.group(1))) if m else MIN_NODE


def judge_node(version_output: str, required: int) -> Action:
    v = parse_version(version_output)
    if v is None:
        return Action("node", "failed", f"`node --version` printed {version_output.strip()[:60]!r}. {INSTALL['node']}")
    shown = ".".join(map(str, v))
    if v[0] < required:
        return Action("node", "failed", f"v{shown} is too old: the app needs Node.js >= {required}. {INSTALL['node']}")
    return Action("node", "unchanged", f"v{shown} (>= {required})")


def seed_command(package: Mapping) -> list[str] | None:
    """How the app seeds: `npm run seed` if it has a seed script, else Prisma's `prisma.seed` command."""
    if isinstance(package.get("scripts"), dict) and package["scripts"].get("seed"):
        return ["npm", "run", "seed"]
    prisma = package.get("prisma")
    if isinstance(prisma, dict) and isinstance(prisma.get("seed"), str) and prisma["seed"].strip():
        # Prisma runs this string through a shell; we split it into argv instead (no shell).
        return shlex.split(prisma["seed"])
    return None


# ---------------------------------------------------------------- actions

def _run(argv: list[str], cwd: Path, environ: Mapping[str, str], timeout: float, extra: Mapping[str, str] | None = None):
    env = {k: v for k, v in environ.items() if k == "PATH"}
    env.update(extra or {})
    return proc.run(argv, cwd=cwd, env=env, timeout=timeout)


def _which(tool: str, environ: Mapping[str, str]) -> str | None:
    return shutil.which(tool, path=environ.get("PATH", os.environ.get("PATH")))


def _node(app: Path, package: Mapping, environ: Mapping[str, str]) -> Action:
    if not _which("node", environ):
        return Action("node", "missing", f"`node` is not on PATH. {INSTALL['node']}")
    res = _run(["node", "--version"], app, environ, 30)
    return judge_node(res.stdout if res.ok else res.stderr, required_node_major(package))


def _npm(app: Path, environ: Mapping[str, str]) -> Action:
    if not _which("npm", environ):
        return Action("npm", "missing", f"`npm` is not on PATH. {INSTALL['npm']}")
    res = _run(["npm", "--version"], app, environ, 60)
    v = parse_version(res.stdout) if res.ok else None
    if v is None:
        return Action("npm", "failed", f"`npm --version` failed: {res.tail(3)}. {INSTALL['npm']}")
    return Action("npm", "unchanged", ".".join(map(str, v)))


def _shopify(settings: Settings, app: Path, environ: Mapping[str, str]) -> Action:
    argv = shlex.split(settings.shopify.cli or "shopify")
    if not _which(argv[0], environ):
        return Action("shopify", "missing", f"`{argv[0]}` is not on PATH. {INSTALL['shopify']}", required=False)
    # `--version` is oclif's flag (prints its user agent, no network); `shopify version` checks npm for updates.
    res = _run([*argv, "--version"], app, environ, 60)
    v = parse_version(res.stdout) if res.ok else None
    if v is None:
        return Action("shopify", "failed", f"`{shlex.join(argv)} --version` did not print a version: "
                                          f"{res.tail(3) or 'no output'}. {INSTALL['shopify']}", required=False)
    return Action("shopify", "unchanged", "Shopify CLI " + ".".join(map(str, v)), required=False)


def _dotenv(root: Path, settings: Settings, path: Path) -> Action:
    matrix = envs.load_matrix(root)
    rel = _rel(path, root)
    if path.exists():
        have = set(_dotenv_values(path))
        missing = [n for n in matrix.names if n not in have]
        note = f"; missing {', '.join(missing)} (see {envs.DOC_FILE})" if missing else ""
        return Action(".env", "unchanged", f"{rel} exists and was not overwritten{note} "
                                           f"(`invoke env.dotenv --env={settings.name} --force` rewrites it)")
    result = envs.write_dotenv(matrix, settings.name, path, root=root)
    blank = f"; fill in {', '.join(result.blank_secrets)}" if result.blank_secrets else ""
    return Action(".env", "done", f"wrote {rel} from {envs.MATRIX_FILE}: {len(result.filled)} values{blank}")


def _dotenv_values(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    # interpolate=False: `${X}` must not pull values out of os.environ (as deploy.envs reads them).
    return {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _database_url(settings: Settings, dotenv: Path, environ: Mapping[str, str]) -> tuple[str, str]:
    """(URL, where it came from); see the module docstring for the order."""
    var = settings.database.url_var
    if environ.get(var):
        return Secret(reveal(environ[var])), f"{var} from the environment"
    if settings.database.url:
        # One database per environment: the one `promote --to=<this env>` migrates.
        return settings.database.url, f"database.url in {settings.file.name}"
    if dotenv.is_file():
        value = _dotenv_values(dotenv).get(var)
        if value:
            # A Postgres URL with a password is a secret; a SQLite path is not (and must stay readable).
            return (Secret(value) if urlsplit(value).password else value), f"{var} in {dotenv.name}"
    return "file:./dev.db", "the default"


def _dotenv_disagrees(settings: Settings, dotenv: Path, url: str, sqlite_base: Path) -> str:
    """A note when the app's .env names another database than the one prepared, else ""."""
    if not dotenv.is_file():
        return ""
    value = _dotenv_values(dotenv).get(settings.database.url_var)
    if not value:
        return ""
    try:
        if _db_key(value, sqlite_base) == _db_key(url, sqlite_base):
            return ""
        shown = dburl.parse(value, sqlite_base=sqlite_base).masked
    except _Bad:
        shown = "an unreadable URL"
    return (f"; note: {dotenv.name} names {shown} ({settings.database.url_var}), which the app reads in "
            f"`npm run dev`: make it the same database")


def _database(url: str, origin: str, sqlite_base: Path, root: Path) -> tuple[Action, bool]:
    """Create the database if it is missing; (action, created)."""
    try:
        u = dburl.parse(url, sqlite_base=sqlite_base)
    except SettingsError as e:
        return Action("database", "failed", f"{origin}: {e.message}"), False
    if u.provider == "sqlite":
        assert u.sqlite_path is not None
        shown = _rel(u.sqlite_path, root)
        if u.sqlite_path.exists():
            return Action("database", "unchanged", f"SQLite {shown} ({origin})"), False
        try:
            u.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            sqlite3.connect(u.sqlite_path).close()
        except (OSError, sqlite3.Error) as e:
            return Action("database", "failed", f"cannot create SQLite {shown}: {e}"), False
        return Action("database", "done", f"created SQLite {shown} ({origin})"), True
    return _postgres_database(u, origin)


def _postgres_database(u, origin: str) -> tuple[Action, bool]:
    import psycopg
    from psycopg import sql

    try:
        psycopg.connect(u.conninfo(), autocommit=True).close()
        return Action("database", "unchanged", f"Postgres {u.masked} ({origin})"), False
    except psycopg.OperationalError as e:
        if 'database "' not in str(e) or "does not exist" not in str(e):
            err = connection_error(u, e)
            return Action("database", "failed", f"{err.message} ({err.hint})"), False
    # The database is missing: create it from the server's maintenance database, with the same role.
    try:
        with psycopg.connect(u.with_database("postgres").conninfo(), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(u.database)))
    except psycopg.Error as e:
        first = next((ln for ln in redact(str(e)).splitlines() if ln.strip()), type(e).__name__)
        return Action("database", "failed", f"{u.masked} does not exist and cannot be created: {first} "
                                            f"(ask for a database, or `invoke db.provision`)"), False
    return Action("database", "done", f"created Postgres database {u.database!r} on {u.masked} ({origin})"), True


def _migrations(settings: Settings, url: str, migrations_dir: Path) -> Action:
    if not migrations_dir.is_dir():
        return Action("migrations", "unchanged", f"no {settings.database.migrations_dir} folder in the app")
    try:
        before = migrations.status(url, migrations_dir)
        if not before.pending and not before.failed:
            drift = f"; drift: {', '.join(m.name for m in before.drift)}" if before.drift else ""
            return Action("migrations", "unchanged", f"{len(before.applied)} applied, none pending{drift}")
        result = migrations.migrate(url, migrations_dir, runner=settings.database.runner,
                                    url_var=settings.database.url_var, db=settings.database)
    except DeployError as e:
        return Action("migrations", "failed", e.message + (f" ({e.hint})" if e.hint else ""))
    names = ", ".join(result.applied)
    return Action("migrations", "done", f"applied {len(result.applied)}: {names}")


def _db_key(url: str, sqlite_base: Path) -> str:
    u = dburl.parse(url, sqlite_base=sqlite_base)
    return f"sqlite:{u.sqlite_path}" if u.provider == "sqlite" else u.masked


def _read_state(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _seed(app: Path, package: Mapping, url: str, settings: Settings, root: Path, environ: Mapping[str, str],
          created: bool, now: datetime, sqlite_base: Path) -> Action:
    argv = seed_command(package)
    if argv is None:
        return Action("seed", "unchanged", "the app has no seed script (scripts.seed or prisma.seed in package.json)")
    state_path = root / STATE_FILE
    state = _read_state(state_path)
    key = _db_key(url, sqlite_base)
    digest = hashlib.sha256(shlex.join(argv).encode()).hexdigest()[:16]
    seeded = (state.get("seeded") or {}).get(key)
    if seeded and not created:
        return Action("seed", "unchanged", f"already seeded on {seeded.get('at', '?')} with `{shlex.join(argv)}`; "
                                           f"run it yourself to seed again")
    if not _which(argv[0], environ):
        return Action("seed", "failed", f"`{argv[0]}` is not on PATH, so `{shlex.join(argv)}` cannot run.")
    res = _run(argv, app, environ, 600, {settings.database.url_var: url})
    if not res.ok:
        return Action("seed", "failed", f"`{shlex.join(argv)}` exited {res.returncode}: {res.explain(5)}")
    state.setdefault("seeded", {})[key] = {"at": now.astimezone(timezone.utc).isoformat(timespec="seconds"),
                                           "command": digest}
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_name(state_path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, state_path)
    return Action("seed", "done", f"ran `{shlex.join(argv)}`")


# ---------------------------------------------------------------- the whole run

def bootstrap(root: Path, settings: Settings, environ: Mapping[str, str], now: datetime) -> BootstrapReport:
    """Check tools, write .env, prepare and migrate the database, seed once; every action reported."""
    root = Path(root)
    app = settings.app_dir
    actions: list[Action] = []
    try:
        package = json.loads((app / "package.json").read_text(encoding="utf-8"))
        if not isinstance(package, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        return BootstrapReport((Action("app", "failed", f"no package.json in {app} (environment.app_dir in "
                                                        f"{settings.file.name})"),))
    except ValueError as e:
        return BootstrapReport((Action("app", "failed", f"{app / 'package.json'} is not valid JSON ({e})"),))

    actions.append(_node(app, package, environ))
    actions.append(_npm(app, environ))
    actions.append(_shopify(settings, app, environ))

    dotenv = app / ".env"
    try:
        actions.append(_dotenv(root, settings, dotenv))
    except DeployError as e:
        actions.append(Action(".env", "failed", e.message + (f" ({e.hint})" if e.hint else "")))

    migrations_dir = app / settings.database.migrations_dir
    sqlite_base = migrations_dir.parent            # Prisma resolves file: URLs against prisma/
    url, origin = _database_url(settings, dotenv, environ)
    db_action, created = _database(url, origin, sqlite_base, root)
    if db_action.status != "failed":
        note = _dotenv_disagrees(settings, dotenv, url, sqlite_base)
        if note:
            db_action = Action(db_action.name, db_action.status, db_action.detail + note, db_action.required)
    actions.append(db_action)
    if db_action.status == "failed":
        actions.append(Action("migrations", "failed", "skipped: the database is not available"))
        actions.append(Action("seed", "failed", "skipped: the database is not available"))
        return BootstrapReport(tuple(actions))
    mig = _migrations(settings, url, migrations_dir)
    actions.append(mig)
    if mig.status == "failed":
        actions.append(Action("seed", "failed", "skipped: the migrations did not apply"))
    else:
        actions.append(_seed(app, package, url, settings, root, environ, created, now, sqlite_base))
    return BootstrapReport(tuple(actions))


def render(report: BootstrapReport) -> str:
    """The summary table and one line saying what happened (redacted)."""
    from tabulate import tabulate

    rows = [[a.name, a.status + ("" if a.required or a.status != "missing" else " (warning)"), a.detail]
            for a in report.actions]
    table = tabulate(rows, headers=["step", "status", "detail"], tablefmt="simple_grid",
                     maxcolwidths=[None, None, 90], disable_numparse=True)
    counts = {s: sum(a.status == s for a in report.actions) for s in ("done", "unchanged", "missing", "failed")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if not report.ok:
        verdict = "bootstrap incomplete: fix what the failed or missing steps say, then run `invoke bootstrap` again"
    elif report.changed:
        verdict = "bootstrap done: start the app with `npm run dev` in the app folder"
    else:
        verdict = "nothing changed: everything was already in place"
    return redact(f"{table}\n{summary}\n{verdict}\n")
