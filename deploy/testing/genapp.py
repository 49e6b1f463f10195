"""An app whose install and build generate code from its own files, for tests of what a
build is keyed by (issue 21, cases 13 and 14).

Prisma's own CLI downloads its engines even for `prisma generate` (Prisma 6, and 7.10 too:
the schema engine is fetched before `generate` runs), which fails on machines without that
host. So the two Prisma packages are stand-ins at the process boundary, installed by the
real npm from local tarballs under their real names: `@prisma/client`, whose install step
generates the client into node_modules/.prisma/client from the app's schema (what
@prisma/client did up to Prisma 6), and `prisma`, whose `prisma generate` does the same
(the bin the toolkit runs: node_modules/.bin/prisma). Both find the schema where Prisma
looks (a prisma.config.* `schema`, package.json "prisma.schema", prisma/schema.prisma,
schema.prisma, the prisma/schema/ folder) and write in place, as Prisma does. The
generated client is `{"schema": <schema text>, "by": "postinstall" | "prisma generate"}`.

The app's own postinstall (`node scripts/gen.mjs`) generates node_modules/.gen/out.txt from
a constant in that script and npm's `gen-flavor` setting (.npmrc): code generated at install
from files that are not the lockfile.

`make_gen_app(dest, layout=...)` writes the app (a Node standard-library server answering
/healthz and /client, which serves the generated client as the release runs it), packs the
stand-ins, and runs `npm install` once to write the committed lockfile; no node_modules is
left. `layout`: where the schema lives (see LAYOUTS). `schema_files(app)` names them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from deploy import proc

LAYOUTS = ("default", "package-json", "folder", "prisma-config")

_GENERATE_JS = r"""// A stand-in for Prisma's client generation (see deploy/testing/genapp.py).
const fs = require('fs'), path = require('path');
function schemaFiles(root) {
  let named = null;
  for (const c of ['prisma.config.ts', 'prisma.config.mjs', 'prisma.config.js']) {
    try {
      const m = /schema\s*:\s*["'`]([^"'`]+)["'`]/.exec(fs.readFileSync(path.join(root, c), 'utf8'));
      if (m) { named = m[1]; break; }
    } catch (e) { /* no such config */ }
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  if (!named && pkg.prisma && pkg.prisma.schema) named = pkg.prisma.schema;
  for (const c of named ? [named] : ['prisma/schema.prisma', 'schema.prisma', 'prisma/schema']) {
    const p = path.join(root, c);
    if (!fs.existsSync(p)) continue;
    if (fs.statSync(p).isDirectory()) {
      return fs.readdirSync(p).filter((f) => f.endsWith('.prisma')).sort().map((f) => path.join(p, f));
    }
    return [p];
  }
  throw new Error('Could not find a Prisma schema in ' + root);
}
module.exports = function generate(root, by) {
  const schema = schemaFiles(root).map((f) => fs.readFileSync(f, 'utf8')).join('');
  const out = path.join(root, 'node_modules', '.prisma', 'client');
  fs.mkdirSync(out, { recursive: true });
  // In place, as Prisma writes its output (same inode when the file is there).
  fs.writeFileSync(path.join(out, 'index.js'), 'module.exports = ' + JSON.stringify({ schema, by }) + ';\n');
  console.log('generated the client (' + by + ') from ' + schema.length + ' bytes of schema');
};
"""

_SERVER = """import http from 'node:http';
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const client = require('@prisma/client');
http.createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok'); return; }
  if (req.url === '/client') { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(client)); return; }
  res.statusCode = 404; res.end();
}).listen(Number(process.env.PORT || 3000), '127.0.0.1');
"""


def gen_script(version: str) -> str:
    """The app's postinstall: writes node_modules/.gen/out.txt from `version` and .npmrc's gen-flavor."""
    return ("import fs from 'node:fs';\n"
            "fs.mkdirSync('node_modules/.gen', { recursive: true });\n"
            f"fs.writeFileSync('node_modules/.gen/out.txt', {json.dumps(version)} + ' ' + "
            "(process.env.npm_config_gen_flavor || '-') + '\\n');\n")


def _npm(cwd: Path, *args: str) -> None:
    env = proc.child_env(extra={"npm_config_update_notifier": "false", "npm_config_fund": "false",
                                "npm_config_audit": "false", "npm_config_offline": "true"})
    p = subprocess.run(["npm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"npm {' '.join(args)} failed in {cwd}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def _vendor(dest: Path) -> tuple[dict, dict]:
    """Pack the two stand-ins into dest/vendor; (dependencies, devDependencies)."""
    work = dest.parent / f".{dest.name}-packages"
    client, cli = work / "client", work / "cli"
    for d in (client, cli):
        d.mkdir(parents=True)
        (d / "generate.js").write_text(_GENERATE_JS)
    (client / "package.json").write_text(json.dumps({
        "name": "@prisma/client", "version": "6.99.0", "main": "index.js",
        "scripts": {"postinstall": "node postinstall.js"}}) + "\n")
    (client / "postinstall.js").write_text(
        "const root = process.env.INIT_CWD || process.cwd();\n"
        "try { require('./generate.js')(root, 'postinstall'); }\n"
        "catch (e) { console.log('prisma client not generated: ' + e.message); }\n")
    (client / "index.js").write_text("module.exports = require('.prisma/client');\n")
    (cli / "package.json").write_text(json.dumps({
        "name": "prisma", "version": "6.99.0", "bin": {"prisma": "cli.js"}}) + "\n")
    (cli / "cli.js").write_text(
        "#!/usr/bin/env node\n"
        "if (process.argv[2] !== 'generate') { console.error('stand-in: only generate'); process.exit(2); }\n"
        "require('./generate.js')(process.cwd(), 'prisma generate');\n")
    (cli / "cli.js").chmod(0o755)
    vendor = dest / "vendor"
    vendor.mkdir()
    for d in (client, cli):
        _npm(d, "pack", "--pack-destination", str(vendor))
    shutil.rmtree(work)
    return ({"@prisma/client": "file:vendor/prisma-client-6.99.0.tgz"}, {"prisma": "file:vendor/prisma-6.99.0.tgz"})


def prisma_standins(dest: Path) -> tuple[dict, dict]:
    """Pack the `@prisma/client` and `prisma` stand-ins into dest/vendor: the (dependencies,
    devDependencies) entries that install them."""
    return _vendor(dest)


def schema_files(app: Path, layout: str) -> list[Path]:
    """The schema file(s) of `layout`, as make_gen_app writes them."""
    return {"default": [app / "prisma/schema.prisma"],
            "package-json": [app / "db/app.prisma"],
            "folder": [app / "prisma/schema/main.prisma", app / "prisma/schema/shop.prisma"],
            "prisma-config": [app / "database/main.prisma"]}[layout]


def make_gen_app(dest: Path, *, layout: str = "default", name: str = "gen-app", prisma_cli: bool = True) -> Path:
    """The app at `dest` (created), with its lockfile and without node_modules."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: one of {LAYOUTS}")
    dest.mkdir(parents=True)
    deps, dev = _vendor(dest)
    if not prisma_cli:
        dev = {}
    pkg: dict = {"name": name, "version": "0.1.0", "private": True, "type": "module",
                 "scripts": {"postinstall": "node scripts/gen.mjs", "start": "node server.mjs"},
                 "dependencies": deps, "devDependencies": dev}
    if layout == "package-json":
        pkg["prisma"] = {"schema": "db/app.prisma"}
    if layout == "prisma-config":
        (dest / "prisma.config.ts").write_text(
            'import { defineConfig } from "prisma/config";\n\n'
            'export default defineConfig({\n  schema: "database/main.prisma",\n'
            '  migrations: { path: "prisma/migrations" },\n});\n')
    files = schema_files(dest, layout)
    for i, f in enumerate(files):
        f.parent.mkdir(parents=True, exist_ok=True)
        head = 'datasource db {\n  provider = "sqlite"\n}\n\ngenerator client {\n  provider = "prisma-client-js"\n}\n\n'
        f.write_text((head if i == 0 else "") + f"model {'Session' if i == 0 else 'Shop'} {{\n  id String @id\n}}\n")
    (dest / "prisma/migrations/20250101000000_init").mkdir(parents=True)
    (dest / "prisma/migrations/20250101000000_init/migration.sql").write_text(
        'CREATE TABLE "Session" ("id" TEXT NOT NULL PRIMARY KEY);\n')
    (dest / "prisma/migrations/migration_lock.toml").write_text('provider = "sqlite"\n')
    (dest / "scripts").mkdir()
    (dest / "scripts/gen.mjs").write_text(gen_script("v1"))
    (dest / ".npmrc").write_text("gen-flavor=one\n")
    (dest / "server.mjs").write_text(_SERVER)
    (dest / ".gitignore").write_text("node_modules/\nprisma/*.sqlite*\n")
    (dest / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    _npm(dest, "install", "--no-audit", "--no-fund")
    shutil.rmtree(dest / "node_modules")
    return dest
