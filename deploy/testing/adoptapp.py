"""A team's own app that is not our example, for adoption tests (issue 22): the shape of a
real B2B Shopify app, npm workspaces with an extension package, a Postgres Prisma schema,
no tests, a `.gitignore` that ignores package-lock.json, three Shopify configs
(shopify.app.toml is the DEV app), `process.env.X` in server code and an `ARG` in the
Dockerfile.

`b2b_app(root, ...)` writes the file tree only (what `invoke init` reads; its dependencies
are never installed). `b2b_app(root, runnable=True)` writes one that builds and runs: the web
app is a Node standard-library server (`npm start` serves /healthz), `@prisma/client` and
`prisma` are the offline stand-ins of deploy/testing/genapp.py (real npm tarballs whose
install and `prisma generate` write the client from the app's schema), the workspace holds
`extensions/<extension>` with its own package.json, and `npm install` is run once so the
lockfile exists (ignored by `.gitignore`, as Shopify's template ships it); no node_modules
is left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from deploy.testing.genapp import _npm, prisma_standins

# GET /healthz -> 200 {"release", "db", "key", "client"}: the release folder's RELEASE file,
# the database name of DATABASE_URL, SHOPIFY_API_KEY and who generated the Prisma client, so a
# test can tell which release and which environment's values each running app has.
_SERVER = """import http from 'node:http';
import fs from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const client = require('@prisma/client');
for (const name of ['DATABASE_URL', 'SESSION_SECRET', 'SHOPIFY_API_KEY']) {
  if (!process.env[name]) { console.error(`${name} is not set`); process.exit(1); }
}
const db = new URL(process.env.DATABASE_URL).pathname.slice(1);
const apiKey = process.env.SHOPIFY_API_KEY;
const redis = process.env.REDIS_URL || '';
let release = 'unreleased';
try { release = fs.readFileSync('RELEASE', 'utf8').trim(); } catch (e) { /* not a release folder */ }
http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ release, db, key: apiKey, client: client.by, redis: Boolean(redis) }));
    return;
  }
  res.statusCode = 404; res.end();
}).listen(Number(process.env.PORT || 3000), '127.0.0.1');
"""

_BUILD = """import fs from 'node:fs';
fs.mkdirSync('build', { recursive: true });
fs.copyFileSync('app/server.mjs', 'build/server.mjs');
"""

MIGRATIONS = {
    "20240101000000_init": 'CREATE TABLE "Session" ("id" TEXT NOT NULL PRIMARY KEY, "shop" TEXT NOT NULL);\n',
    "20240215093000_company": 'CREATE TABLE "Company" ("id" SERIAL PRIMARY KEY, "name" TEXT NOT NULL);\n',
    "20240302120000_company_tier": 'ALTER TABLE "Company" ADD COLUMN "tier" TEXT;\n',
}


def b2b_app(root: Path, *, prod_name: str = "prod", dev_url: str = "https://b2b-dev.trycloudflare.com",
            secret_var: str = "SESSION_SECRET", lockfiles=("package-lock.json",), gitignore_lock: bool = True,
            workflows: dict | None = None, runnable: bool = False, extension: str = "checkout-ui",
            name: str = "b2b-portal", migrations: dict | None = None) -> Path:
    """The shape of a real B2B app at `root`: written fresh, with names and values the caller varies."""
    app = root
    (app / "app" / "routes").mkdir(parents=True)
    (app / "extensions" / extension / "src").mkdir(parents=True)
    pkg: dict = {
        "name": name, "private": True, "workspaces": ["extensions/*"],
        "scripts": {"build": "react-router build", "start": "react-router-serve ./build/server/index.js"},
        "dependencies": {"@prisma/client": "6.1.0", "react-router": "7.1.0"},
        "devDependencies": {"prisma": "6.1.0"},
    }
    (app / "extensions" / extension / "package.json").write_text(
        json.dumps({"name": extension, "version": "0.1.0", "private": True}, indent=2) + "\n")
    (app / "extensions" / extension / "src" / "index.ts").write_text(
        "export const flag = process.env.CHECKOUT_FLAG;\n")
    (app / ".gitignore").write_text("node_modules\n/build\n" + ("package-lock.json\n" if gitignore_lock else "")
                                    + ".env\n")
    (app / "prisma" / "schema.prisma").parent.mkdir(parents=True)
    (app / "prisma" / "schema.prisma").write_text(
        'generator client {\n  provider = "prisma-client-js"\n}\n\n'
        'datasource db {\n  provider = "postgresql"\n  url      = env("DATABASE_URL")\n}\n')
    mig = app / "prisma" / "migrations"
    for folder, sql in (migrations or ({"20240101000000_init": 'CREATE TABLE "Session" (id TEXT PRIMARY KEY);\n'}
                                       if not runnable else MIGRATIONS)).items():
        (mig / folder).mkdir(parents=True)
        (mig / folder / "migration.sql").write_text(sql)
    (mig / "migration_lock.toml").write_text('provider = "postgresql"\n')
    (app / "app" / "shopify.server.ts").write_text(
        "const secret = process.env." + secret_var + ";\n"
        "const redis = process.env['REDIS_URL'];\n"
        "export const key = process.env.SHOPIFY_API_KEY;\n"
        "export const port = process.env.PORT;\n")
    (app / "app" / "routes" / "cron.ts").write_text("if (req.headers.auth !== process.env.CRON_SECRET) {}\n")
    (app / "Dockerfile").write_text("FROM node:20-alpine\nENV NODE_ENV=production\nARG ENCRYPTION_KEY\n")
    (app / "shopify.app.toml").write_text(
        f'client_id = "devclient111"\nname = "B2B Portal DEV"\napplication_url = "{dev_url}"\n')
    (app / "shopify.app.staging.toml").write_text(
        'client_id = "stagingclient222"\nname = "B2B Portal Staging"\n'
        'application_url = "https://b2b-staging.example.net"\n')
    (app / f"shopify.app.{prod_name}.toml").write_text(
        'client_id = "prodclient333"\nname = "B2B Portal"\napplication_url = "https://b2b.example.net"\n')
    for wf, text in (workflows or {}).items():
        (app / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
        (app / ".github" / "workflows" / wf).write_text(text)
    if runnable:
        deps, dev = prisma_standins(app)
        pkg.update(type="module", scripts={"build": "node scripts/build.mjs", "start": "node build/server.mjs"},
                   dependencies=deps, devDependencies=dev)
        (app / "app" / "server.mjs").write_text(_SERVER)
        (app / "scripts").mkdir()
        (app / "scripts" / "build.mjs").write_text(_BUILD)
    (app / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    if runnable:
        _npm(app, "install", "--no-audit", "--no-fund")
        shutil.rmtree(app / "node_modules")
        for lf in lockfiles:
            if lf != "package-lock.json":
                (app / lf).write_text("lockfileVersion: '9.0'\n")
        if "package-lock.json" not in lockfiles:
            (app / "package-lock.json").unlink()
    else:
        for lf in lockfiles:
            (app / lf).write_text("{}\n" if lf.endswith(".json") else "lockfileVersion: '9.0'\n")
    return app


def team_invoke(root: Path, *args: str, extra_env: dict | None = None, drop=(),
                timeout: float = 180) -> subprocess.CompletedProcess:
    """`invoke` in the team's repository with its own tasks.py (`from deploy.tasks import ns`),
    the toolkit importable as if installed; the caller's DATABASE_URL, DEPLOY_LEDGER_URL and
    friends are left out unless given."""
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEPLOY_ROOT", "DEPLOY_LEDGER_URL", "DATABASE_URL", "DIRECT_URL", *drop)}
    env.update({"PYTHONPATH": str(repo), **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
