"""What a build of a new commit reuses from the one before it (issue 25): the dependency member
of the artifact (packed once per dependency content), a workspace app's production tree, the
install a cold build moved into the cache (linked, never copied), and old checkouts removed
off the critical path. Real npm on apps whose packages install from local tarballs
(deploy.testing.depsapp), real gzip and tar."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import build as b
from deploy import source, trash
from deploy.build import entry as cache_entry
from deploy.build import packing
from deploy.build.orchestrate import members_dir
from deploy.config import AppSection
from deploy.errors import BuildFailed
from deploy.testing.depsapp import make_deps_app

BUILT_AT = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
SHAS = ["a1b2c3d" + c * 33 for c in "0123456789"]


def _build(app: Path, sha: str, store: Path, cache: Path | None, **kw) -> b.BuildResult:
    contract = AppSection(deps_cache=cache is not None, **kw)
    return b.build(app, sha, store, now=BUILT_AT, deps_cache=cache, contract=contract)


def _new_commit(tmp: Path, name: str, change: str, **kw) -> Path:
    """A checkout of another commit with the same lockfile: one source file differs."""
    app = make_deps_app(tmp / name, **kw)
    (app / "build.mjs").write_text((app / "build.mjs").read_text() + f"// {change}\n")
    return app


def _entries(cache: Path) -> list[Path]:
    return [d for d in cache.iterdir() if not d.name.startswith(".")]


def _unpacked(artifact: b.Artifact, dest: Path) -> dict[str, tuple]:
    """Every path of the unpacked artifact: (kind, mode, bytes or link target)."""
    with tarfile.open(artifact.path, "r:gz") as tar:
        tar.extractall(dest, filter="data")
    out = {}
    for top, dirs, files in os.walk(dest):
        for n in dirs + files:
            p = Path(top, n)
            rel = str(p.relative_to(dest))
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d",)
            else:
                out[rel] = ("f", p.stat().st_mode & 0o111, p.read_bytes())
    return out


# ---------------------------------------------------------------- the dependency member


@pytest.mark.parametrize("workspace", ["", "checkout-ui"], ids=["plain-app", "workspace-app"])
def test_a_new_commit_with_the_same_lockfile_copies_the_dependency_member_without_reading_node_modules(
        tmp_path, workspace):
    cache, store = tmp_path / "cache", tmp_path / "store"
    first = _build(make_deps_app(tmp_path / "one", workspace=workspace), SHAS[0], store, cache)
    assert first.pack.deps_member == "packed" and first.pack.deps_files > 0
    member = first.pack.member
    before = member.stat()
    # Two more commits, same lockfile: the second is built from the cache's production tree.
    for i, name in enumerate(("two", "three"), start=1):
        app = _new_commit(tmp_path, name, f"change {i}", workspace=workspace)
        again = _build(app, SHAS[i], store, cache)
        assert not any(c.startswith("npm ci") for c in again.commands)
        stats = again.pack
        assert stats.deps_member == "reused" and stats.member == member
        # No dependency file read (their hashes came with the cache's production tree) and
        # none compressed: the kept member was copied in, the same file, never rewritten.
        manifest = b.read_manifest(again.artifact)
        outside = [f for f in manifest["files"] if not packing.in_deps_member(f["path"])]
        assert stats.read == len(outside) and stats.hashed <= len(outside), stats
        assert stats.files == len(manifest["files"]) == len(outside) + stats.deps_files
        now = member.stat()
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
        b.verify(again.artifact)
    # The manifest is first and still lists every file, dependencies included.
    with tarfile.open(again.artifact.path, "r:gz") as tar:
        names = tar.getnames()
    assert names[0] == b.MANIFEST
    regular = {f["path"] for f in manifest["files"]}
    assert "node_modules/leftpad/index.js" in regular and "dist/out.txt" in regular
    if workspace:
        links = {x["path"]: x["target"] for x in manifest["symlinks"]}
        assert links[f"node_modules/{workspace}"] == f"../extensions/{workspace}"
        assert "node_modules/extlib/index.js" in regular


def test_an_artifact_with_a_reused_member_is_the_bytes_of_a_pack_from_scratch(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    app = _new_commit(tmp_path, "two", "x")
    reused = _build(app, SHAS[1], store, cache)
    assert reused.pack.deps_member == "reused"
    # The same commit built with no cache at all (npm ci, build, npm prune; every file read).
    plain = _build(_new_commit(tmp_path, "plain", "x"), SHAS[1], tmp_path / "plain-store", None)
    assert plain.pack.deps_member == "packed" and plain.pack.member is None
    assert plain.artifact.sha256 == reused.artifact.sha256
    assert plain.artifact.path.read_bytes() == reused.artifact.path.read_bytes()
    assert _unpacked(reused.artifact, tmp_path / "u1") == _unpacked(plain.artifact, tmp_path / "u2")
    # Three gzip members that read as one stream: the manifest's, the dependencies', tar's end.
    raw = reused.artifact.path.read_bytes()
    assert raw.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00") >= 3
    assert len(gzip.decompress(raw)) % tarfile.RECORDSIZE == 0


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _sidecar_sha(p: Path) -> None:
    side = p.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta["sha256"] = hashlib.sha256(b"another member").hexdigest()
    side.write_text(json.dumps(meta))


MEMBER_DAMAGE = {
    "byte-flipped": _flip,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:-100]),
    "replaced-by-another-gzip": lambda p: p.write_bytes(gzip.compress(b"\0" * 4096, mtime=0)),
    "sidecar-removed": lambda p: p.with_suffix(".json").unlink(),
    "sidecar-names-another-hash": _sidecar_sha,
    "member-removed": lambda p: p.unlink(),
}


@pytest.mark.parametrize("damage", list(MEMBER_DAMAGE), ids=list(MEMBER_DAMAGE))
def test_a_damaged_kept_member_is_packed_again_never_copied_in(tmp_path, damage):
    cache, store = tmp_path / "cache", tmp_path / "store"
    first = _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "y"), SHAS[1], tmp_path / "plain-store", None)
    MEMBER_DAMAGE[damage](first.pack.member)
    again = _build(_new_commit(tmp_path, "two", "y"), SHAS[1], store, cache)
    assert again.pack.deps_member == "packed", again.pack
    assert again.artifact.sha256 == plain.artifact.sha256   # what a pack from scratch gives
    b.verify(again.artifact)
    # ... and the member kept again is sound: the next commit copies it.
    third = _build(_new_commit(tmp_path, "three", "z"), SHAS[2], store, cache)
    assert third.pack.deps_member == "reused"


@pytest.mark.parametrize("where", [0.02, 0.5, 0.98, -1], ids=["manifest-member", "middle", "near-the-end", "last-byte"])
def test_verify_refuses_an_artifact_changed_anywhere_in_its_members(tmp_path, where):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    art = _build(_new_commit(tmp_path, "two", "w"), SHAS[1], store, cache).artifact
    data = bytearray(art.path.read_bytes())
    at = int(len(data) * where) if where >= 0 else len(data) - 1
    data[at] ^= 0x01
    art.path.write_bytes(bytes(data))
    with pytest.raises(BuildFailed, match="changed after it was built"):
        b.verify(art)
    assert b.find(store, b.build_key(SHAS[1], ".", AppSection(deps_cache=True))) is None


# ---------------------------------------------------------------- workspace apps


def test_a_workspace_apps_warm_build_links_the_cached_production_tree_instead_of_pruning(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    plain = _build(_new_commit(tmp_path, "plain", "p", workspace="ext"), SHAS[1], tmp_path / "ps", None)
    cold = _build(make_deps_app(tmp_path / "one", workspace="ext"), SHAS[0], store, cache)
    (entry,) = _entries(cache)
    prod = json.loads((entry / cache_entry.PROD_INFO).read_text())
    assert "extensions/ext/package.json" in prod["inputs"]   # pruned beside with the workspace's package file
    assert (entry / "prod/node_modules/extlib/index.js").is_file()
    assert not (entry / "prod/node_modules/devtool").exists()
    assert os.readlink(entry / "prod/node_modules/ext") == "../extensions/ext"
    assert not any(c.startswith("npm prune") for c in cold.commands), cold.commands
    warm = _build(_new_commit(tmp_path, "two", "p", workspace="ext"), SHAS[1], store, cache)
    assert warm.commands[0].startswith("(dependency cache") and "mv " in warm.commands[0]   # the spare: no re-link
    assert warm.commands[-1].endswith("/prod/node_modules node_modules")                    # no npm prune
    assert not any(c.startswith("npm prune") for c in warm.commands)
    assert warm.artifact.sha256 == plain.artifact.sha256
    # The workspace's package.json changed (not its dependencies: same lockfile): npm's prune
    # reads it, so the cached tree is not taken for this build's.
    app = _new_commit(tmp_path, "three", "p", workspace="ext")
    pkg = json.loads((app / "extensions/ext/package.json").read_text())
    pkg["description"] = "edited"
    (app / "extensions/ext/package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    edited = _build(app, SHAS[2], store, cache)
    assert edited.commands[-1].startswith("npm prune")


# ---------------------------------------------------------------- a cold build


def test_a_cold_build_moves_its_install_into_the_cache_and_links_it_back(tmp_path):
    cache, store = tmp_path / "cache", tmp_path / "store"
    app = make_deps_app(tmp_path / "one")
    cold = _build(app, SHAS[0], store, cache)
    assert cold.commands[0].startswith("npm ci")
    assert not any("cp -a " in c for c in cold.commands)
    (entry,) = _entries(cache)
    full = entry / "full/node_modules/devtool/index.js"
    spare = entry / cache_entry.SPARE / "devtool/index.js"
    # One inode, several names: the install itself, never a copy of it.
    assert full.stat().st_ino == spare.stat().st_ino and full.stat().st_nlink >= 2
    assert (app / "node_modules/leftpad/index.js").stat().st_ino == \
        (entry / "prod/node_modules/leftpad/index.js").stat().st_ino
    prod = json.loads((entry / cache_entry.PROD_INFO).read_text())
    assert cache_entry.entry_ok(entry) and cache_entry.stamp_is(entry / "prod", prod["stamp"])


def _write_in_place(entry: Path) -> None:
    with open(entry / "full/node_modules/leftpad/index.js", "a") as f:
        f.write("// changed in the cache\n")


def _replace_file(entry: Path) -> None:
    p = entry / "full/node_modules/leftpad/index.js"
    text = p.read_text()
    p.unlink()
    p.write_text(text.replace("padStart", "padEnd"))


def _add_file(entry: Path) -> None:
    (entry / "full/node_modules/leftpad/evil.js").write_text("// planted\n")


def _remove_file(entry: Path) -> None:
    (entry / "full/node_modules/leftpad/package.json").unlink()


def _touch_stamp(entry: Path) -> None:
    (entry / "stamp.json").write_text(json.dumps({"full": "0" * 64}) + "\n")


CORRUPTIONS = {"written-in-place": _write_in_place, "file-replaced": _replace_file, "file-added": _add_file,
               "file-removed": _remove_file, "stamp-rewritten": _touch_stamp}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=list(CORRUPTIONS))
def test_an_entry_a_cold_build_linked_is_refused_once_corrupted(tmp_path, corrupt):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "c"), SHAS[1], tmp_path / "ps", None)
    (entry,) = _entries(cache)
    shutil.rmtree(entry / cache_entry.SPARE)   # the hit links the entry's full tree (checked while it links)
    CORRUPTIONS[corrupt](entry)
    again = _build(_new_commit(tmp_path, "two", "c"), SHAS[1], store, cache)
    assert again.commands[0].startswith("npm ci"), again.commands    # the corrupted entry is not used
    assert again.artifact.sha256 == plain.artifact.sha256
    assert cache_entry.entry_ok(entry)                                # refilled from this build's install


# ---------------------------------------------------------------- one walk of each tree on a warm build


@pytest.mark.parametrize("workspace", ["", "ext-b"], ids=["plain-app", "workspace-app"])
def test_a_warm_builds_pack_takes_the_production_trees_checked_rows_instead_of_walking_node_modules(
        tmp_path, workspace):
    cache, store = tmp_path / "cache", tmp_path / "store"
    cold = _build(make_deps_app(tmp_path / "one", workspace=workspace), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "r", workspace=workspace), SHAS[1], tmp_path / "ps", None)
    warm = _build(_new_commit(tmp_path, "two", "r", workspace=workspace), SHAS[1], store, cache)
    assert warm.artifact.sha256 == plain.artifact.sha256 and warm.pack.deps_member == "reused"
    with tarfile.open(warm.artifact.path, "r:gz") as tar:
        names = [n for n in tar.getnames() if n != b.MANIFEST]
    below = [n for n in names if n.startswith("node_modules/") and n.count("/") >= 2]
    assert below and cold.pack.walked == len(names)        # the cold build stat'ed every entry it packed
    # The warm one stat'ed the app's own entries and node_modules' top level only: the rest are
    # the production tree's rows, checked by its folders' listings and the cache's one stat walk.
    assert warm.pack.walked == len(names) - len(below), (warm.pack, len(names), len(below))


def _same_size_other_bytes(p: Path) -> None:
    """`p` replaced by another file (a new inode) of the same size and mtime: what a size and
    mtime stamp alone cannot tell from the original."""
    st = p.stat()
    data = p.read_bytes()
    other = bytes(reversed(data)) if data != bytes(reversed(data)) else data.swapcase()
    p.unlink()
    p.write_bytes(other)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _prod_file_replaced(entry: Path, rel: str) -> None:
    _same_size_other_bytes(entry / "prod/node_modules" / rel)


def _prod_empty_folder_added(entry: Path, rel: str) -> None:
    (entry / "prod/node_modules" / rel / f"planted-{os.getpid()}").mkdir()


def _prod_own_file_rewritten(entry: Path, rel: str) -> None:
    # npm's own hidden lockfile is not a file the full tree shares: it is stat'ed on its own
    p = entry / "prod/node_modules" / rel
    p.write_text(p.read_text().replace("leftpad", "LEFTPAD", 1))


# What the hit does when it finds the change: "prune" (seen in the linked tree's listings while
# the build ran: npm's prune runs in the checkout, the entry is dropped) or "rebuild" (seen by
# the stat walk that runs while the build packs: nothing of the build is kept, it is built again
# as a miss, which refills the entry).
PROD_TAMPERING = {
    "file-replaced-same-size-and-mtime-code": (_prod_file_replaced, "leftpad/index.js", "prune"),
    "file-replaced-same-size-and-mtime-manifest": (_prod_file_replaced, "leftpad/package.json", "prune"),
    "empty-folder-added-in-a-package": (_prod_empty_folder_added, "leftpad", "prune"),
    "empty-folder-added-at-the-top": (_prod_empty_folder_added, ".", "prune"),
    "npm-own-file-rewritten": (_prod_own_file_rewritten, ".package-lock.json", "rebuild"),
}


@pytest.mark.parametrize("tamper", list(PROD_TAMPERING), ids=list(PROD_TAMPERING))
def test_a_production_tree_changed_in_the_cache_is_never_linked_nor_its_rows_packed(tmp_path, tamper):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "p"), SHAS[1], tmp_path / "ps", None)
    (entry,) = _entries(cache)
    how, rel, then = PROD_TAMPERING[tamper]
    how(entry, rel)
    hit = _build(_new_commit(tmp_path, "two", "p"), SHAS[1], store, cache)
    assert hit.commands[0].startswith("(dependency cache")
    assert hit.artifact.sha256 == plain.artifact.sha256   # what a build without the cache ships
    if then == "prune":
        assert hit.commands[-1].startswith("npm prune") and not entry.exists()   # dropped; a miss refills it
        again = _build(_new_commit(tmp_path, "three", "p"), SHAS[2], store, cache)
        assert again.commands[0].startswith("npm ci")
    else:
        redo = next(i for i, c in enumerate(hit.commands) if "changed during the build" in c)
        assert hit.commands[redo + 1].startswith("npm ci")
    assert cache_entry.entry_ok(entry) and "LEFTPAD" not in (entry / "prod/node_modules/.package-lock.json").read_text()


@pytest.mark.parametrize("pkg", ["leftpad", "devtool"])
def test_a_cached_file_replaced_while_a_spare_holds_the_original_drops_the_entry(tmp_path, pkg):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "f"), SHAS[1], tmp_path / "ps", None)
    (entry,) = _entries(cache)
    cached = entry / f"full/node_modules/{pkg}/index.js"
    original = cached.read_bytes()
    assert (entry / cache_entry.SPARE / pkg / "index.js").stat().st_ino == cached.stat().st_ino
    _same_size_other_bytes(cached)   # the spare keeps the original inode; the entry's own path does not
    hit = _build(_new_commit(tmp_path, "two", "f"), SHAS[1], store, cache)
    redo = next(i for i, c in enumerate(hit.commands) if "changed during the build" in c)
    assert hit.commands[0].endswith("node_modules") and hit.commands[redo + 1].startswith("npm ci")
    assert hit.artifact.sha256 == plain.artifact.sha256
    assert cached.read_bytes() == original and cache_entry.entry_ok(entry)   # refilled from this build's install


@pytest.mark.parametrize("name", [".vite", ".cache", ".planted-dir"])
def test_a_folder_planted_at_the_top_of_a_spare_is_never_built_on_nor_shipped(tmp_path, name):
    cache, store = tmp_path / "cache", tmp_path / "store"
    _build(make_deps_app(tmp_path / "one"), SHAS[0], store, cache)
    plain = _build(_new_commit(tmp_path, "plain", "v"), SHAS[1], tmp_path / "ps", None)
    (entry,) = _entries(cache)
    (entry / cache_entry.SPARE / name).mkdir()
    (entry / cache_entry.SPARE / name / "deps.js").write_text(f"// planted {time.time_ns()}\n")
    hit = _build(_new_commit(tmp_path, "two", "v"), SHAS[1], store, cache)
    # Taking the spare looks at its top level: a name the cached tree has not is not taken for the
    # build's own (what the build adds there is packed), and the entry is linked anew instead.
    assert hit.commands[0].endswith(f"cp -al {entry / 'full' / 'node_modules'} node_modules"), hit.commands
    assert hit.artifact.sha256 == plain.artifact.sha256
    assert not any(f["path"].startswith(f"node_modules/{name}") for f in b.read_manifest(hit.artifact)["files"])


# ---------------------------------------------------------------- old checkouts


def test_old_checkouts_leave_their_place_at_once_and_are_deleted_in_the_background(tmp_path):
    root = tmp_path / "src"
    for i, sha in enumerate(SHAS[:4]):
        d = root / f"{sha}-0000"
        (d / "node_modules/pkg").mkdir(parents=True)
        for n in range(200):
            (d / f"node_modules/pkg/f{n}.js").write_text("x")
        (d / ".complete").write_text(sha)
        os.utime(d / ".complete", (1000 + i, 1000 + i))
    # A dead process's trash (killed before it deleted it) is swept by the next prune.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (root / f"{trash.PREFIX}{dead.pid}-0-old").mkdir()
    started = time.monotonic()
    doomed = source.prune(root, keep=1, protect=())
    assert sorted(doomed) == sorted(f"{s}-0000" for s in SHAS[:3])
    assert time.monotonic() - started < 5
    assert {p.name for p in root.iterdir() if not p.name.startswith(".")} == {f"{SHAS[3]}-0000"}
    trash.drain()
    assert [p.name for p in root.iterdir()] == [f"{SHAS[3]}-0000"]
