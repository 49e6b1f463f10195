"""A small app with real npm dependencies that install offline (local tarball packages):
for tests of the build's dependency cache, where the React Router example's `npm ci`
would take a minute.

`make_deps_app(dest, version="1.0.0")` writes the app (`add_deps(app)` gives an existing
app the same two packages), packs its two packages with
`npm pack` (a runtime dependency `leftpad` at `version`, a devDependency `devtool`), and
runs `npm install` once to write the committed lockfile, then removes node_modules: the
folder looks like a fresh checkout. Its build (`node build.mjs`) uses both packages and
writes dist/out.txt; a build with `DAMAGE_CACHE=1` in package.json's build script writes
into an installed file in place (what a misbehaving build tool could do); with
`schema="..."` the app commits schema.txt and its build writes a client generated from it
into node_modules/.gen/client.js (what `prisma generate` does); `build_writes={path: text}`
makes the build write those files too (paths relative to the app, folders created).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

from deploy import proc


def _npm(cwd: Path, *args: str) -> None:
    env = proc.child_env(extra={"npm_config_update_notifier": "false", "npm_config_fund": "false",
                                "npm_config_audit": "false", "npm_config_offline": "true"})
    p = subprocess.run(["npm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"npm {' '.join(args)} failed in {cwd}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


def _package(src: Path, name: str, version: str, main: str) -> None:
    d = src / name
    d.mkdir(parents=True)
    (d / "package.json").write_text(json.dumps({"name": name, "version": version, "main": "index.js"}) + "\n")
    (d / "index.js").write_text(main)


def _vendor(dest: Path, version: str) -> tuple[dict, dict]:
    """Pack `leftpad` and `devtool` into dest/vendor; (dependencies, devDependencies)."""
    work = dest.parent / f".{dest.name}-packages"
    _package(work, "leftpad", version,
             "module.exports = (s, n) => String(s).padStart(n, ' ');\n")
    _package(work, "devtool", "2.0.0", "module.exports = { banner: 'built by devtool' };\n")
    vendor = dest / "vendor"
    vendor.mkdir()
    for name in ("leftpad", "devtool"):
        _npm(work / name, "pack", "--pack-destination", str(vendor))
    shutil.rmtree(work)
    return ({"leftpad": f"file:vendor/leftpad-{version}.tgz"}, {"devtool": "file:vendor/devtool-2.0.0.tgz"})


def add_deps(app: Path, *, version: str = "1.0.0") -> Path:
    """Give an existing app (package.json there) the same two dependencies, a runtime one
    and a devDependency, and a lockfile written for them; no node_modules left."""
    deps, dev = _vendor(app, version)
    pkg = json.loads((app / "package.json").read_text())
    pkg["dependencies"] = {**pkg.get("dependencies", {}), **deps}
    pkg["devDependencies"] = {**pkg.get("devDependencies", {}), **dev}
    (app / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    _npm(app, "install", "--no-audit", "--no-fund")
    shutil.rmtree(app / "node_modules")
    return app


def make_deps_app(dest: Path, *, version: str = "1.0.0", damage_cache: bool = False, schema: str = "",
                  build_writes: Mapping[str, str] | None = None, workspace: str = "") -> Path:
    """The app at `dest` (created), with its lockfile and without node_modules. `workspace`:
    the app is an npm workspace root with one package, extensions/<workspace>, which depends
    on a package of its own (`extlib`, a runtime dependency only it names)."""
    dest.mkdir(parents=True)
    deps, dev = _vendor(dest, version)
    if workspace:
        work = dest.parent / f".{dest.name}-extlib"
        _package(work, "extlib", "3.0.0", "module.exports = 'extlib';\n")
        _npm(work / "extlib", "pack", "--pack-destination", str(dest / "vendor"))
        shutil.rmtree(work)
        ext = dest / "extensions" / workspace
        ext.mkdir(parents=True)
        (ext / "package.json").write_text(json.dumps({
            "name": workspace, "version": "0.1.0", "private": True,
            "dependencies": {"extlib": "file:../../vendor/extlib-3.0.0.tgz"}}, indent=2) + "\n")
        (ext / "index.js").write_text("module.exports = require('extlib');\n")
    build = "node build.mjs"
    (dest / "build.mjs").write_text(
        "import { createRequire } from 'node:module';\n"
        "import fs from 'node:fs';\n"
        "const require = createRequire(import.meta.url);\n"
        "const pad = require('leftpad'); const dev = require('devtool');\n"
        "fs.mkdirSync('dist', { recursive: true });\n"
        "fs.writeFileSync('dist/out.txt', dev.banner + '\\n' + pad('ok', 6) + '\\n');\n"
        + ("fs.appendFileSync('node_modules/leftpad/index.js', '// touched by the build\\n');\n" if damage_cache else "")
        + ("fs.mkdirSync('node_modules/.gen', { recursive: true });\n"
           "fs.writeFileSync('node_modules/.gen/client.js', 'module.exports = ' + "
           "JSON.stringify(fs.readFileSync('schema.txt', 'utf8')) + ';\\n');\n" if schema else "")
        + "".join(f"fs.mkdirSync({json.dumps(str(Path(rel).parent))}, {{ recursive: true }});\n"
                  f"fs.writeFileSync({json.dumps(rel)}, {json.dumps(text)});\n"
                  for rel, text in (build_writes or {}).items()))
    if schema:
        (dest / "schema.txt").write_text(schema)
    pkg = {
        "name": "deps-app", "version": "0.1.0", "private": True,
        "scripts": {"build": build, "start": "node -e \"require('leftpad')\""},
        "dependencies": deps,
        "devDependencies": dev,
    }
    if workspace:
        pkg["workspaces"] = ["extensions/*"]
    (dest / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    _npm(dest, "install", "--no-audit", "--no-fund")
    shutil.rmtree(dest / "node_modules")
    return dest
