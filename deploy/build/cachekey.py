"""What a dependency cache entry is keyed by (`deps_key`): the install's inputs (lockfile,
install-relevant package.json fields and scripts, package-manager config, the files code is
generated from), the platform, and the node and package-manager versions (`tool_versions`,
remembered per binary); and what else steers npm's prune (`npm_context`). Only inputs are
read, never node_modules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build.ops import atomic_write, sha256_file
from deploy.build.recipes import INSTALL_SCRIPTS, LOCKFILES, Recipe, generated_inputs, scripts_reached
from deploy.parallel import pmap
from deploy.redact import reveal
from deploy.startup import package_json


# What an install depends on besides the lockfile: the package.json fields npm/pnpm/yarn
# read when installing (a dependency list out of step with the lockfile must still fail
# like `npm ci` fails) and the package managers' config files.
INSTALL_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies",
                  "peerDependenciesMeta", "bundleDependencies", "bundledDependencies", "overrides",
                  "resolutions", "workspaces", "engines", "os", "cpu", "packageManager", "pnpm")
INSTALL_CONFIG = (".npmrc", ".yarnrc", ".yarnrc.yml", "pnpm-workspace.yaml", ".pnpmfile.cjs")
TOOLS_FILE = ".tools.json"   # in the cache folder: tool versions by binary (see tool_versions)


def deps_key(app_dir: str | Path, plan: Recipe, tool_versions: Mapping[str, str]) -> str | None:
    """The dependency cache key of `app_dir` under `plan` (sha256 hex), or None when the app
    has no lockfile. Same key = same installed node_modules: the lockfile, the install-relevant
    package.json fields, the install scripts (and those they run), the package manager's config
    files, the files code is generated from at install (`generated_inputs`: the Prisma schema,
    prisma.config.*, files the install scripts name), the install and prune argv, what the
    entry leaves out (`Recipe.generated`), the platform and architecture, and the node and
    package manager versions (`tool_versions`). Only inputs are read, never node_modules."""
    app = Path(app_dir)
    lock = next((app / name for name, _ in LOCKFILES if (app / name).is_file()), None)
    if lock is None or not plan.install:
        return None
    pkg = package_json(app)
    scripts = pkg["scripts"] if isinstance(pkg.get("scripts"), dict) else {}
    facts = {
        "lockfile": [lock.name, sha256_file(lock)],
        "package": {k: pkg[k] for k in INSTALL_FIELDS if k in pkg},
        "scripts": scripts_reached(scripts, INSTALL_SCRIPTS),
        "config": {n: sha256_file(app / n) for n in INSTALL_CONFIG if (app / n).is_file()},
        "generated_from": generated_inputs(app, pkg),
        "install": list(plan.install),
        "prune": list(plan.prune),
        "left_out": list(plan.generated),
        "platform": [os.uname().sysname, os.uname().machine],
        "tools": dict(sorted(tool_versions.items())),
        "format": 3,   # 2: entries hold prod/ (npm) beside full/; 3: generated code's inputs
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def tool_identity(tool: str, env: Mapping[str, str]) -> list | None:
    """What `tool --version` answers from, when that is only the files it runs: node's own
    executable, or npm's entry script plus npm's package.json. None (ask the tool every
    time) for anything else: a version manager's shim (asdf, volta, mise, corepack) picks
    the version by folder or setting, which no file here shows."""
    found = shutil.which(tool, path=env.get("PATH"))
    if not found:
        return None
    real = os.path.realpath(found)
    files = [real]
    try:
        if tool == "node":
            with open(real, "rb") as f:
                if f.read(4) != b"\x7fELF" or not os.path.basename(real).startswith("node"):
                    return None
        elif tool == "npm":
            pkg = Path(real).parent.parent / "package.json"
            if not real.endswith(os.sep + os.path.join("bin", "npm-cli.js")) or \
                    json.loads(pkg.read_text(encoding="utf-8")).get("name") != "npm":
                return None
            files.append(str(pkg))
        else:
            return None
        return [[p, *((st := os.stat(p)).st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
                for p in files]
    except (OSError, ValueError, AttributeError):
        return None


def tool_versions(plan: Recipe, env: Mapping[str, str], cache_root: Path | None = None) -> dict[str, str] | None:
    """node's and the package manager's `--version`, part of the dependency cache key. With
    `cache_root`, an answer is kept in <cache_root>/.tools.json under the identity of the
    files the tool runs (path, device, inode, size, mtime, ctime: `tool_identity`), and
    reused while they are unchanged; a replaced or edited binary is asked again."""
    tools = list(dict.fromkeys(("node", plan.install[0])))
    known: dict[str, str] = {}
    ids = {t: tool_identity(t, env) for t in tools} if cache_root is not None else {}
    saved: dict = {}
    if cache_root is not None:
        try:
            saved = json.loads((cache_root / TOOLS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        for t in tools:
            row = saved.get(t)
            if ids[t] is not None and isinstance(row, dict) and row.get("id") == ids[t] \
                    and isinstance(row.get("version"), str):
                known[t] = row["version"]
    ask = [t for t in tools if t not in known]
    # each is a node start-up: ask both at once
    results = pmap(lambda tool: proc.run([tool, "--version"], env=env, timeout=60), ask, len(ask))
    if not all(r.ok for r in results):
        return None
    fresh = {tool: r.stdout.strip() for tool, r in zip(ask, results)}
    if cache_root is not None and any(ids.get(t) is not None for t in fresh):
        # Identities taken before the probe: a binary replaced meanwhile is asked again next time.
        saved.update({t: {"id": ids[t], "version": v} for t, v in fresh.items() if ids.get(t) is not None})
        with contextlib.suppress(OSError):
            cache_root.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_root / TOOLS_FILE, (json.dumps(saved, indent=1, sort_keys=True) + "\n").encode())
    return {t: known[t] if t in known else fresh[t] for t in tools}


def npm_context(env: Mapping[str, str]) -> str:
    """A fingerprint of what else steers npm's prune: the npm_config_* variables and NODE_ENV
    of the child's environment (as proc.run builds it) and the user and global npmrc files.
    Credentials (`proc.npm_credential_key`: tokens, passwords, `//registry/:` lines) are left
    out, variables and npmrc lines alike: they do not change what a prune leaves, and not even
    a hash of a short one is written down."""
    full = {**proc.child_env(os.environ), **env}
    h = hashlib.sha256()
    for k in sorted(full):
        low = k.lower()
        if k == "NODE_ENV" or (low.startswith("npm_config_") and not proc.npm_credential_key(low[11:])):
            h.update(f"{k}\0{reveal(full[k])}\n".encode())
    node = shutil.which("node", path=full.get("PATH"))
    prefix = full.get("npm_config_prefix") or (os.path.dirname(os.path.dirname(os.path.realpath(node))) if node else "")
    for f in (full.get("npm_config_userconfig") or os.path.join(full.get("HOME", "/nonexistent"), ".npmrc"),
              full.get("npm_config_globalconfig") or os.path.join(prefix, "etc", "npmrc")):
        try:
            lines = Path(f).read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            h.update(f"{f}\0-\n".encode())
            continue
        kept = [ln for ln in lines if not proc.npm_credential_key(ln.split("=", 1)[0])]
        h.update(f"{f}\0".encode() + "\n".join(kept).encode() + b"\n")
    return h.hexdigest()
