"""The realistic benchmark app: examples/shopify-app in the shape real Shopify apps have, for
build and release benchmarks (issue 25).

The example's sources (React Router routes, Prisma schema and migrations, Shopify config) with
benchmarks/apps/realistic laid over them: npm workspaces (`extensions/*`, one checkout UI
extension package), a dependency tree of a real app's size (about 860 packages, ~480 MB
installed, ~280 MB after `npm prune --omit=dev`: the Shopify CLI, Polaris, the Shopify app
packages, TypeScript, ESLint, GraphQL codegen, ...), exact versions pinned in the committed
lockfile (only the npm registry is reachable here), and Prisma as the stand-ins of
deploy.testing.genapp (vendor/*.tgz: Prisma's own CLI downloads its engines, which these
machines cannot), so the build runs `node_modules/.bin/prisma generate`.

`make_realistic_app(dest)` writes the app without node_modules (a fresh checkout's state).
`warm_install()` runs one `npm ci` of it per lockfile (a stamp under ~/.cache/occ-deploy/bench,
or $OCC_BENCH_CACHE), so npm's own cache holds the whole tree and benchmark installs between
runs never download (every timed `npm ci` then installs from that cache, as on a CI runner).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from deploy.testing.shopify_app import SHOPIFY_APP, node_env

REALISTIC = Path(__file__).resolve().parents[2] / "benchmarks" / "apps" / "realistic"
# The example's files the overlay replaces, and what a fresh checkout never holds.
_REPLACED = ("package.json", "package-lock.json", ".npmrc")
_GENERATED = ("node_modules", "build", ".react-router", "evidence", "test-results", "playwright-report")


def make_realistic_app(dest: Path) -> Path:
    """The realistic app at `dest` (created), without node_modules."""
    shutil.copytree(SHOPIFY_APP, dest, ignore=shutil.ignore_patterns(*_GENERATED, *_REPLACED))
    shutil.copytree(REALISTIC, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_GENERATED))
    return dest


def install_key() -> str:
    """What the reference install depends on: the overlay's package files and lockfile, node's and npm's versions."""
    h = hashlib.sha256()
    for rel in ("package.json", "package-lock.json", "extensions/checkout-ui/package.json",
                "vendor/prisma-6.99.0.tgz", "vendor/prisma-client-6.99.0.tgz"):
        h.update(rel.encode() + b"\0" + (REALISTIC / rel).read_bytes())
    for tool in ("node", "npm"):
        h.update(subprocess.run([tool, "--version"], capture_output=True, text=True, env=node_env()).stdout.encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("OCC_BENCH_CACHE") or Path.home() / ".cache" / "occ-deploy" / "bench")


def warm_install() -> None:
    """Make sure npm's cache holds every package of the lockfile: one `npm ci` of the app in a
    scratch folder, done once per `install_key` (a stamp under `cache_root()`), so a
    benchmark's installs never download."""
    stamp = cache_root() / f"realistic-{install_key()}.installed"
    if stamp.is_file():
        return
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_name(stamp.name + f".tmp-{os.getpid()}")
    try:
        make_realistic_app(tmp)
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=tmp, env=node_env(), capture_output=True,
                           text=True, timeout=1800)
        if p.returncode != 0:
            raise AssertionError(f"npm ci of the realistic app failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        stamp.write_text(install_key() + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
