""".deploy stays within [local] max_deploy_mb: the oldest local releases, checkouts and
artifacts go first, never a live or previous one; local promotions of new commits with the
same dependencies grow it by the files that changed, not by a whole release."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from deploy import config, disk, local
from deploy import build as b
from deploy.build.artifact import write_index
from deploy.config import AppSection
from deploy.testing.project import make_project

SHAS = [f"{i:x}" * 40 for i in range(1, 7)]


def _blob(n: int, seed: int) -> bytes:
    return (seed.to_bytes(4, "big") + os.urandom(60)) * (n // 64)


def _artifact(store: Path, work: Path, i: int, size: int) -> b.Artifact:
    tree = work / f"tree{i}"
    (tree / "node_modules" / "dep").mkdir(parents=True)
    (tree / "node_modules" / "dep" / "big.bin").write_bytes(_blob(size, 7))   # the same in every build
    (tree / "page.txt").write_bytes(_blob(size // 4, i))                        # what each commit changes
    art = b.pack(tree, store, git_sha=SHAS[i], built_at=f"2024-03-0{i + 1}T12:00:00Z",
                 release_id=f"2024030{i + 1}120000-{SHAS[i][:7]}")
    write_index(store, art, b.build_key(SHAS[i], ".", AppSection()))
    os.utime(store / "builds" / f"{b.build_key(SHAS[i], '.', AppSection()).name}.json", (1e9 + i, 1e9 + i))
    return art


def _checkout(src: Path, i: int, size: int) -> None:
    d = src / f"{SHAS[i]}-0123456789abcdef"
    d.mkdir(parents=True)
    (d / "source.bin").write_bytes(_blob(size, 100 + i))
    (d / ".complete").write_text(SHAS[i])
    os.utime(d / ".complete", (1e9 + i, 1e9 + i))


def _settings(root: Path, mb: int):
    s = config.load("local", root)
    return dataclasses.replace(s, local=dataclasses.replace(s.local, max_deploy_mb=mb))


@pytest.fixture
def filled(tmp_path):
    """A project whose .deploy holds 6 builds, 6 checkouts and 6 local releases (the 5th live,
    the 4th previous), about 9 MB in all."""
    p = make_project(tmp_path / "project")
    s = config.load("local", p.root)
    store, src = p.root / ".deploy" / "artifacts", p.root / ".deploy" / "src"
    store.mkdir(parents=True)
    from deploy.targets.local import local_root

    root = local_root(s)
    for i in range(6):
        art = _artifact(store, tmp_path / "trees", i, 512 * 1024)
        _checkout(src, i, 512 * 1024)
        local.place(art, root, art.release_id)
    rids = local.releases(root)
    local.switch(root, rids[3])
    local.switch(root, rids[4])
    return p, root, rids


@pytest.mark.parametrize("mb,protect", [(4, ()), (4, (0,)), (1, ()), (1, (0, 2))],
                         ids=["some-must-go", "an-old-build-live-elsewhere", "everything-that-may-go",
                              "two-protected-commits"])
def test_keep_within_removes_the_oldest_and_never_what_is_live_or_previous(filled, mb, protect):
    p, root, rids = filled
    s = _settings(p.root, mb)
    keep = {SHAS[i] for i in protect}
    before = disk.usage(p.root / ".deploy")
    trim = disk.keep_within(s, keep)
    assert trim.before == before and trim.after == disk.usage(p.root / ".deploy")
    assert trim.removed and trim.after < before
    left = local.releases(root)
    assert {rids[3], rids[4]} <= set(left)                       # previous and current
    assert local.current(root) == rids[4]
    builds = {json.loads(f.read_text())["git_sha"] for f in (p.root / ".deploy/artifacts/builds").glob("*.json")}
    checkouts = {d.name[:40] for d in (p.root / ".deploy/src").iterdir() if not d.name.startswith(".")}
    assert keep <= builds and keep <= checkouts                  # protected commits keep build and checkout
    # The oldest went first: whatever is left of each kind is its newest ones (or protected).
    order = {sha: i for i, sha in enumerate(SHAS)}
    for kept in (builds - keep, checkouts - keep):
        gone = set(SHAS) - kept - keep
        assert not gone or not kept or max(order[x] for x in gone) < min(order[x] for x in kept)
    if trim.over:
        assert "still over" in trim.text()
    else:
        assert trim.after <= mb * disk.MB


def test_keep_within_changes_nothing_under_the_bound(filled):
    p, root, rids = filled
    before = sorted(str(x) for x in (p.root / ".deploy").rglob("*"))
    trim = disk.keep_within(_settings(p.root, 8192), set())
    assert trim.removed == () and trim.text() == ""
    assert sorted(str(x) for x in (p.root / ".deploy").rglob("*")) == before


@pytest.mark.parametrize("value", [0, -5, 20_000_000], ids=["zero", "negative", "too-large"])
def test_a_bound_out_of_range_names_the_file_and_key(tmp_path, value):
    p = make_project(tmp_path / "project")
    text = (p.root / "env" / "local.toml").read_text().replace("keep_releases = 5", f"keep_releases = 5\nmax_deploy_mb = {value}", 1)
    p.write_env("local", text)
    with pytest.raises(config.SettingsError, match=r"local.toml: local.max_deploy_mb = .* is out of range"):
        config.load("local", p.root)


# ---------------------------------------------------------------- through the CLI

BULK_FILES = 40


def _with_bulk_dependency(app: Path) -> None:
    """Give the example app a dependency of real weight, installed offline from a tarball in
    the app: many files, compressible (so the artifact stays small while an unpacked release
    would not)."""
    pkg_src = app.parent / ".bulk-src"
    for k in range(BULK_FILES):
        f = pkg_src / f"lib/part{k // 10}/mod{k}.js"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"// module {k}\n" + "module.exports = 'x'.repeat(64);\n" * 1500)
    (pkg_src / "package.json").write_text(json.dumps({"name": "bulk", "version": "1.0.0", "main": "lib/part0/mod0.js"}))
    (app / "vendor").mkdir()
    subprocess.run(["npm", "pack", "--pack-destination", str(app / "vendor")], cwd=pkg_src, check=True,
                   capture_output=True)
    pkg = json.loads((app / "package.json").read_text())
    pkg["dependencies"] = {"bulk": "file:vendor/bulk-1.0.0.tgz"}
    (app / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--offline"], cwd=app, check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(app / "node_modules"), str(pkg_src)], check=True)


def _inodes(top: Path) -> dict[tuple[int, int], tuple[str, int]]:
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            st = os.lstat(os.path.join(d, n))
            out.setdefault((st.st_dev, st.st_ino), (os.path.relpath(os.path.join(d, n), top), st.st_blocks * 512))
    return out


def _manifest(release: Path) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in json.loads((release / "RELEASE.json").read_text())["files"]}


def test_three_promotions_of_new_commits_grow_deploy_by_the_changed_files_and_the_artifact(project):
    app = project.root / "examples" / "app"
    _with_bulk_dependency(app)
    project.commit("a dependency of real weight")
    r = project.invoke("promote", "--to=local", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    root = project.local_root()
    top = project.root / ".deploy"
    for n in range(3):
        (app / "server.mjs").write_text((app / "server.mjs").read_text() + f"\n// change {n}\n")
        project.commit(f"change {n}")
        prev = root / "releases" / local.current(root)
        before = _inodes(top)
        r = project.invoke("promote", "--to=local", timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        after = _inodes(top)
        new = {k: v for k, v in after.items() if k not in before}
        growth = sum(v[1] for v in after.values()) - sum(v[1] for v in before.values())
        rel = root / "releases" / local.current(root)
        old, now = _manifest(prev), _manifest(rel)
        changed = [p for p, sha in now.items() if old.get(p) != sha]
        changed_bytes = sum(os.lstat(rel / p).st_blocks * 512 for p in changed)
        artifact_new = sum(v[1] for k, v in new.items() if v[0].startswith("artifacts/"))
        checkout_new = sum(v[1] for k, v in new.items() if v[0].startswith("src/"))
        release_files = {v[0].split("/", 4)[-1] for k, v in new.items()
                         if v[0].startswith("local/") and os.path.isfile(top / v[0]) and "/releases/" in v[0]}
        # The release holds new inodes only for the files that changed (and its own two records).
        assert release_files == set(changed) | {"RELEASE", "RELEASE.json"}, sorted(release_files)[:10]
        bulk = sum(os.lstat(rel / p).st_blocks * 512 for p in now if p.startswith("node_modules/bulk/"))
        assert bulk > 1_000_000
        # Beside the changed files and the artifact, a promotion adds the commit's checkout (the
        # build's, app.keep_builds), the release's folders, a database backup, and a few pages
        # of ledger and logs: everything else is the bound.
        backup_new = sum(v[1] for k, v in new.items() if v[0].startswith("backups/"))
        release_dirs = sum(v[1] for k, v in new.items() if v[0].startswith("local/") and os.path.isdir(top / v[0]))
        rest = growth - checkout_new - backup_new - release_dirs
        assert rest <= 2 * changed_bytes + artifact_new + 8 * 4096, \
            (growth, checkout_new, backup_new, release_dirs, changed_bytes, artifact_new)
    r = project.invoke("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bound 8.0 GB ([local] max_deploy_mb in local.toml)" in r.stdout + r.stderr


def test_a_promotion_over_the_bound_removes_old_releases_and_builds_but_keeps_live_and_previous(project):
    text = (project.root / "env" / "local.toml").read_text()
    project.write_env("local", text.replace("keep_releases = 5", "keep_releases = 5\nmax_deploy_mb = 1", 1))
    app = project.root / "examples" / "app"
    outs = []
    for n in range(4):
        (app / "server.mjs").write_text((app / "server.mjs").read_text() + f"\n// change {n}\n")
        project.commit(f"change {n}")
        r = project.invoke("promote", "--to=local", timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        outs.append(r.stdout + r.stderr)
    root = project.local_root()
    assert "> [local] max_deploy_mb 1: removed" in outs[-1]
    # Checked at the build step, before this release was placed: what was live and previous
    # then, and the new one.
    kept = local.releases(root)
    assert len(kept) == 3 and kept[-2:] == sorted([local.previous(root), local.current(root)])
    builds = list((project.root / ".deploy/artifacts/builds").glob("*.json"))
    assert len(builds) == 3     # the new build, and the live and previous ones when it was made
