"""Local releases share unchanged files with the release before them (hard links, as host
deltas do), and never so that a change in one release reaches another: only files that are
byte for byte the same are linked, and nothing is ever written through a link."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from deploy import local
from deploy.build import Artifact, pack
from deploy.build.ops import sha256_file
from deploy.errors import BuildFailed

SHA = "c0ffee" + "0" * 34
R1, R2, R3 = "20240301120000-c0ffee0", "20240302120000-c0ffee0", "20240303120000-c0ffee0"

BASE_TREE = {
    "package.json": b'{"name": "shared-app"}\n',
    "build/server.mjs": b"console.log('v1')\n" * 40,
    "node_modules/dep/index.js": b"module.exports = 1;\n" * 500,
    "node_modules/dep/package.json": b'{"name": "dep", "version": "1.0.0"}\n',
    "node_modules/tool/cli.js": b"#!/usr/bin/env node\n" * 30,
}


def _tree(dest: Path, files: dict[str, bytes], exe: tuple[str, ...] = ("node_modules/tool/cli.js",)) -> Path:
    for rel, data in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o755 if rel in exe else 0o644)
    return dest


def _artifact(tmp: Path, name: str, files: dict[str, bytes], **kw) -> Artifact:
    (tmp / "artifacts").mkdir(exist_ok=True)
    return pack(_tree(tmp / name, files, **kw), tmp / "artifacts", git_sha=SHA, built_at="2024-03-01T12:00:00Z",
                release_id=name)


def _ino(path: Path) -> int:
    return os.lstat(path).st_ino


CHANGES = {
    "content-changed": ({**BASE_TREE, "build/server.mjs": b"console.log('v2')\n" * 40}, {}, "build/server.mjs"),
    "same-size-other-bytes": ({**BASE_TREE, "node_modules/dep/index.js": b"module.exports = 2;\n" * 500}, {},
                              "node_modules/dep/index.js"),
    "mode-changed": (BASE_TREE, {"exe": ("node_modules/tool/cli.js", "package.json")}, "package.json"),
    "file-moved": ({**{k: v for k, v in BASE_TREE.items() if k != "build/server.mjs"},
                    "build/main.mjs": BASE_TREE["build/server.mjs"]}, {}, "build/main.mjs"),
}


@pytest.mark.parametrize("case", list(CHANGES), ids=list(CHANGES))
def test_second_release_links_only_identical_files_and_writes_the_changed_one(tmp_path, case):
    files, kw, changed = CHANGES[case]
    root = tmp_path / "root"
    first = local.place_sharing(_artifact(tmp_path, "one", BASE_TREE), root, R1)
    local.switch(root, R1)
    second = local.place_sharing(_artifact(tmp_path, "two", files, **kw), root, R2)
    old, new = first.path, second.path
    assert second.base == R1 and second.linked >= 1
    for rel, data in files.items():
        assert (new / rel).read_bytes() == data
        same = rel in BASE_TREE and rel != changed and BASE_TREE[rel] == data
        assert ((old / rel).exists() and _ino(new / rel) == _ino(old / rel)) is same, rel
    # A file at a new path is written new, even with bytes the old release holds elsewhere.
    assert os.lstat(new / changed).st_nlink == 1
    # The old release is exactly what its own artifact held.
    for rel, data in BASE_TREE.items():
        assert (old / rel).read_bytes() == data
    assert (old / "RELEASE").read_text() == R1 + "\n" and (new / "RELEASE").read_text() == R2 + "\n"
    assert _ino(old / "RELEASE.json") != _ino(new / "RELEASE.json")


@pytest.mark.parametrize("how", ["rewritten-in-place", "appended", "replaced-by-symlink", "chmod", "folder-symlinked"],
                         ids=["rewritten-in-place", "appended", "replaced-by-symlink", "chmod", "folder-symlinked"])
def test_a_base_file_the_app_changed_is_not_linked_and_stays_as_the_app_left_it(tmp_path, how):
    root = tmp_path / "root"
    one = _artifact(tmp_path, "one", BASE_TREE)
    local.place(one, root, R1)
    local.switch(root, R1)
    victim = root / "releases" / R1 / "node_modules/dep/index.js"
    if how == "rewritten-in-place":
        with open(victim, "r+b") as f:
            f.write(b"X" * 20)
    elif how == "appended":
        with open(victim, "ab") as f:
            f.write(b"// more\n")
    elif how == "replaced-by-symlink":
        victim.unlink()
        (tmp_path / "elsewhere.js").write_bytes(BASE_TREE["node_modules/dep/index.js"])
        victim.symlink_to(tmp_path / "elsewhere.js")
    elif how == "chmod":
        victim.chmod(0o755)
    else:
        import shutil

        folder = victim.parent
        shutil.copytree(folder, tmp_path / "dep-copy")
        shutil.rmtree(folder)
        folder.symlink_to(tmp_path / "dep-copy")
    left = victim.read_bytes()
    second = local.place_sharing(_artifact(tmp_path, "two", dict(BASE_TREE)), root, R2)
    fresh = second.path / "node_modules/dep/index.js"
    assert fresh.read_bytes() == BASE_TREE["node_modules/dep/index.js"]
    assert not fresh.is_symlink() and _ino(fresh) != os.stat(victim).st_ino and not fresh.parent.is_symlink()
    assert victim.read_bytes() == left
    assert _ino(second.path / "package.json") == _ino(root / "releases" / R1 / "package.json")


def test_a_chain_of_releases_shares_with_the_current_one_and_pruning_keeps_the_others_whole(tmp_path):
    root = tmp_path / "root"
    versions = [{**BASE_TREE, "build/server.mjs": f"console.log({i})\n".encode() * 40} for i in range(3)]
    for rid, files in zip((R1, R2, R3), versions):
        local.place(_artifact(tmp_path, rid, files), root, rid)
        local.switch(root, rid)
    assert local.prune(root, 1) == [R1]
    for rid, files in zip((R2, R3), versions[1:]):
        for rel, data in files.items():
            assert (root / "releases" / rid / rel).read_bytes() == data
    assert _ino(root / "releases" / R2 / "package.json") == _ino(root / "releases" / R3 / "package.json")


def _retar(src: Path, dest: Path, swap: dict[str, bytes]) -> Artifact:
    """The same tarball (manifest and all) with some members' bytes swapped: a manifest that lies."""
    out = io.BytesIO()
    with tarfile.open(src, "r:gz") as tin, tarfile.open(fileobj=out, mode="w:gz") as tout:
        for m in tin:
            name = m.name[2:] if m.name.startswith("./") else m.name
            if m.isreg() and name in swap:
                m.size = len(swap[name])
                tout.addfile(m, io.BytesIO(swap[name]))
            else:
                tout.addfile(m, tin.extractfile(m) if m.isreg() else None)
    dest.write_bytes(out.getvalue())
    return Artifact(dest, sha256_file(dest), R2, SHA, "2024-03-01T12:00:00Z")


@pytest.mark.parametrize("member", ["package.json", "node_modules/dep/index.js"], ids=["small-file", "dependency"])
def test_a_tarball_that_disagrees_with_its_manifest_is_refused_and_nothing_is_placed(tmp_path, member):
    root = tmp_path / "root"
    local.place(_artifact(tmp_path, "one", BASE_TREE), root, R1)
    local.switch(root, R1)
    liar = _retar(_artifact(tmp_path, "two", BASE_TREE).path, tmp_path / "liar.tar.gz", {member: b"evil();\n"})
    with pytest.raises(BuildFailed, match="does not match the artifact's RELEASE.json"):
        local.place(liar, root, R2)
    assert local.releases(root) == [R1]
    assert not [p for p in (root / "releases").iterdir() if p.name.startswith(".")]
    assert (root / "releases" / R1 / member).read_bytes() == BASE_TREE[member]


def test_a_release_root_reached_through_a_symlink_still_shares(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    root = tmp_path / "via" / "root"
    local.place(_artifact(tmp_path, "one", BASE_TREE), root, R1)
    local.switch(root, R1)
    second = local.place_sharing(_artifact(tmp_path, "two", dict(BASE_TREE)), root, R2)
    assert second.linked == len(BASE_TREE) and second.written == 1     # RELEASE.json only
