"""Disk and retries (issue 22 #7): a failed build leaves its install in the dependency cache,
not in its checkout, and the retry links it instead of a second full install; the cache is
bounded by size (app.cache_max_mb); `invoke status` shows what .deploy takes."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import build as b
from deploy import config, trash
from deploy.config import AppSection
from deploy.errors import BuildFailed, SettingsError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SHA_1 = "1" * 40
SHA_2 = "2" * 40
BUILD_JS = "const fs = require('fs'); if (fs.existsSync('BROKEN')) { console.error('build: broken on purpose'); " \
           "process.exit(1) } fs.mkdirSync('build', {recursive: true}); fs.writeFileSync('build/out.txt', 'ok')\n"


def _app(folder: Path, deps: dict[str, str], broken: bool) -> Path:
    folder.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": "disk-app", "version": "1.0.0", "private": True,
                                                     "scripts": {"build": "node build.js"}, "dependencies": deps}))
    (folder / "build.js").write_text(BUILD_JS)
    if broken:
        (folder / "BROKEN").write_text("x\n")
    return folder


@pytest.mark.parametrize("deps", [{"ms": "2.1.3"}, {"is-number": "7.0.0", "left-pad": "1.3.0"}],
                         ids=["one-dependency", "two-dependencies"])
def test_a_failed_build_leaves_its_install_in_the_cache_and_the_retry_links_it(tmp_path, deps):
    import shutil
    import subprocess

    broken = _app(tmp_path / "src" / SHA_1, deps, broken=True)
    r = subprocess.run(["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"], cwd=broken,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    store, cache = tmp_path / "artifacts", tmp_path / "cache"
    contract = AppSection(include=("build",))
    with pytest.raises(BuildFailed, match="broken on purpose"):
        b.build(broken, SHA_1, store, contract=contract, now=T0, deps_cache=cache)
    assert not (broken / "node_modules").exists(), "the failed checkout keeps no install"
    entries = [d for d in cache.iterdir() if not d.name.startswith(".")]
    assert len(entries) == 1 and all((entries[0] / "full" / "node_modules" / n).is_dir() for n in deps)
    # the fix: the next commit, same lockfile
    fixed = tmp_path / "src" / SHA_2
    shutil.copytree(broken, fixed)
    (fixed / "BROKEN").unlink()
    res = b.build(fixed, SHA_2, store, contract=contract, now=T0, deps_cache=cache)
    assert res.commands[0].startswith("(dependency cache"), res.commands
    assert not any(c.startswith("npm ci") for c in res.commands), res.commands
    # and the very same checkout, retried after fixing it in place, links the cache too
    (broken / "BROKEN").unlink()
    again = b.build(broken, SHA_1, store, contract=contract, now=T0, deps_cache=cache)
    assert again.commands[0].startswith("(dependency cache"), again.commands


def _entry(cache: Path, name: str, mb: int, used: float) -> None:
    d = cache / name / "full" / "node_modules"
    d.mkdir(parents=True)
    with open(d / "blob", "wb") as f:
        f.write(os.urandom(mb * 1024 * 1024))
    (cache / name / "used").write_text("")
    os.utime(cache / name / "used", (used, used))


@pytest.mark.parametrize("sizes, max_mb, kept", [
    ((40, 40, 40), 100, {"e2", "e3"}),
    ((30, 90, 10), 105, {"e2", "e3"}),
    ((150, 20, 200), 100, {"e3"}),        # the most recently used stays even when alone over the bound
], ids=["three-of-40-into-100", "old-big-one-goes", "newest-kept-over-bound"])
def test_dependency_cache_is_pruned_by_size_least_recently_used_first(tmp_path, sizes, max_mb, kept):
    cache = tmp_path / "cache"
    now = time.time()
    for i, mb in enumerate(sizes):
        _entry(cache, f"e{i + 1}", mb, now - 1000 + i * 100)       # e3 used last
    removed = b.prune_deps_cache_to_size(cache, max_mb)
    trash.drain()   # renamed aside at once, deleted in the background (deploy.trash)
    assert {d.name for d in cache.iterdir()} == kept and set(removed) == {f"e{i + 1}" for i in range(3)} - kept


@pytest.mark.parametrize("value", [0, 50, 2_000_000], ids=["zero", "below-one-install", "absurd"])
def test_cache_max_mb_out_of_range_names_the_file_and_key(tmp_path, value):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "local.toml").write_text(f"[environment]\nkind = \"local\"\n\n[app]\ncache_max_mb = {value}\n")
    with pytest.raises(SettingsError, match=r"local.toml: app.cache_max_mb"):
        config.load("local", tmp_path)


def test_status_shows_what_deploy_takes_on_disk(project):
    for sub, mb in (("cache/deps/abc/full", 3), ("artifacts", 2)):
        d = project.root / ".deploy" / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "blob").write_bytes(os.urandom(mb * 1024 * 1024))
    r = project.invoke("status", extra_env={"COLUMNS": "120"})
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith(".deploy on this machine:")), "")
    assert "dependency cache 3 MB" in line and "artifacts 2 MB" in line, r.stdout + r.stderr
