"""The production tree of a dependency cache entry (npm), and linking trees in and out.

An npm prune's result depends on package.json, the lockfile, npm's config and node_modules
(npm's arborist reads nothing else for an app with a name, no workspaces and no linked
folders). So a prune of the cached full install, laid out as a cache hit lays out the
checkout (cp -al, top-level files unshared), in a folder holding byte-identical copies of
those files, leaves the node_modules the checkout's own prune would leave after a build
that did not change node_modules: the entry keeps it as `prod/node_modules` (prod.json
says from which files), and such a hit links it in instead of running npm.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build.cachekey import INSTALL_CONFIG
from deploy.build.entry import SPARE, entry_index, prod_index, stamp_is
from deploy.build.ops import fs, sha256_file
from deploy.build.recipes import DEPS, LINKED, PRUNE, Recipe
from deploy.errors import BuildFailed, DeployError, SettingsError
from deploy.startup import package_json


_PRUNE_INPUTS = ("package.json", "package-lock.json", "npm-shrinkwrap.json", *INSTALL_CONFIG)
_NPM_OWN = frozenset({".bin", ".package-lock.json", ".store"})   # npm reads or writes these in node_modules/


def workspace_folders(folder: Path) -> list[str] | None:
    """The folders (relative, sorted) of the workspace packages the lockfile in `folder` links
    into node_modules; None when one is not a plain folder inside `folder` (a link elsewhere)."""
    try:
        lock = json.loads((folder / "package-lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    packages = lock.get("packages") if isinstance(lock, dict) else None
    if not isinstance(packages, dict):
        return []
    out = set()
    for v in packages.values():
        if isinstance(v, dict) and v.get("link"):
            rel = v.get("resolved")
            if not isinstance(rel, str) or os.path.isabs(rel) or not rel.strip():
                return None
            rel = os.path.normpath(rel)
            if rel in (".", "..") or rel.startswith("../") or rel.split("/", 1)[0] in (DEPS, LINKED) \
                    or rel not in packages or not (folder / rel).is_dir() or (folder / rel).is_symlink():
                return None
            out.add(rel)
    return sorted(out)


def prune_inputs(folder: Path) -> dict[str, list | None] | None:
    """The files besides node_modules an npm prune in `folder` reads, each [sha256,
    executable] or None when absent (the workspace packages' package.json files among them);
    None when one is not a regular file or a workspace lies outside `folder`."""
    out: dict[str, list | None] = {}
    workspaces = workspace_folders(folder)
    if workspaces is None:
        return None
    for name in (*_PRUNE_INPUTS, *(f"{w}/package.json" for w in workspaces)):
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            out[name] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            return None
        out[name] = [sha256_file(folder / name), bool(st.st_mode & 0o111)]
    return out


def prod_cacheable(app: Path, plan: Recipe) -> bool:
    """npm's own prune as the recipe's last command, in an app whose package.json has a name
    (else npm names the root after its folder) and whose lockfile links only workspace
    folders inside the app (their package.json files are pruned beside with it:
    `prune_beside_layout`)."""
    if plan.pm != "npm" or plan.prune != PRUNE["npm"] or not plan.commands or plan.commands[-1] != plan.prune:
        return False
    try:
        pkg = package_json(app)
        lock = json.loads((app / "package-lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, SettingsError, BuildFailed):
        return False
    packages = lock.get("packages") if isinstance(lock, dict) else None
    return (isinstance(pkg.get("name"), str) and bool(pkg["name"])
            and not (app / "npm-shrinkwrap.json").exists() and isinstance(packages, dict)
            and workspace_folders(app) is not None)


def prune_beside_setup(app: Path, fill: Path) -> tuple[Path, dict] | None:
    """fill/prune: the app's prune inputs (copied now, before the build runs) and a copy of
    fill/full/node_modules laid out as a hit lays out the checkout; None when that fails
    (the entry is then filled without a production tree)."""
    try:
        return prune_beside_layout(app, fill)
    except (BuildFailed, OSError):
        return None


def prune_beside_layout(app: Path, fill: Path) -> tuple[Path, dict] | None:
    """`prune_beside_setup`, failures raised."""
    inputs = prune_inputs(app)
    if inputs is None:
        return None
    side = fill / "prune"
    side.mkdir()
    for name, v in inputs.items():
        if v is not None:
            (side / name).parent.mkdir(parents=True, exist_ok=True)   # a workspace's folder
            fs(["cp", "-p", str(app / name), str(side / name)], "filling the dependency cache")
    fs(["cp", "-al", str(fill / "full" / DEPS), str(side / DEPS)], "filling the dependency cache")
    unshare_top_files(side / DEPS)
    # As in a hit's checkout, npm's hidden lockfile is older than node_modules/ (so npm reads
    # the tree from disk), even when this fill came within npm's 10 ms of the install.
    with contextlib.suppress(OSError):
        lock_ns = os.stat(side / DEPS / ".package-lock.json").st_mtime_ns
        if os.stat(side / DEPS).st_mtime_ns <= lock_ns + 10_000_000:
            os.utime(side / DEPS, ns=(lock_ns + 1_000_000_000,) * 2)
    return side, inputs


def prune_beside(side: Path, inputs: dict, plan: Recipe, env: Mapping[str, str], timeout: float) -> bool:
    """Run the prune in `side`; True when it succeeded and left its inputs as they were."""
    try:
        r = proc.run(list(plan.prune), cwd=side, env=env, timeout=timeout)
        present = {DEPS, *(n.split("/", 1)[0] for n, v in inputs.items() if v is not None)}
        workspaces = [n[:-len("/package.json")] for n, v in inputs.items() if v is not None and "/" in n]
        # The prune left the workspace folders as they were (only their package.json): what
        # the production tree's links point to in a checkout is the checkout's own.
        untouched = all(os.listdir(side / w) == ["package.json"] for w in workspaces)
        return r.ok and prune_inputs(side) == inputs and set(os.listdir(side)) == present and untouched
    except (OSError, DeployError):   # npm gone meanwhile: no production tree, nothing else
        return False


def check_linked(deps: Path, full: Path, index: Mapping[str, tuple]) -> tuple[bool, list[str] | None]:
    """After a build in a checkout whose `deps` (node_modules) was hard-linked from the
    cache's `full` tree, scanned before as `index` (`scan_tree`): (intact, added), the two
    halves below. intact: `cached_intact`. added (when intact): `linked_shape`."""
    if not cached_intact(full, index):
        return False, None
    return True, linked_shape(deps, full, index)


def linked_shape(deps: Path, full: Path, index: Mapping[str, tuple]) -> list[str] | None:
    """Whether `deps` (node_modules) is still the cached `full` tree (indexed as `index`) it was
    linked from: None when the build changed node_modules (a path removed, replaced or added, a
    top-level file rewritten); else the top-level dot-folders the build made (vite's
    .vite-temp, a generated client: npm never reads inside them), possibly none.

    Read from the folders' listings (names, kinds and inode numbers: no stat per file): whether
    a cached inode reached through a link is unchanged is `cached_intact`'s, which stats it at
    the cached tree's own path. A mount inside node_modules is not looked for."""
    same = True
    added: list[str] = []
    seen = 1                       # node_modules itself
    top = f"{DEPS}/"
    packages: set[str] | None = None
    stack = [(str(deps), top)]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                found = list(it)
        except OSError:   # the build removed or replaced it
            return None
        for e in found:
            name = rel + e.name
            want = index.get(name)
            if want is None:
                if packages is None:
                    packages = {n[len(top):] for n in index if n.startswith(top) and "/" not in n[len(top):]}
                retired = re.fullmatch(r"\.(.+)-[A-Za-z0-9]{8}", e.name)   # npm's retired-folder names
                if rel == top and e.name.startswith(".") and e.name not in _NPM_OWN \
                        and not (retired and retired.group(1) in packages) and e.is_dir(follow_symlinks=False):
                    added.append(e.name)
                else:
                    same = False
                continue
            seen += 1
            if want[0] == "d":
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, name + "/"))
                else:
                    same = False
            elif e.inode() != want[2] and not (rel == top and want[0] == "f" and _same_bytes(e, full / name, want)):
                same = False    # replaced (a top-level file is the build's own copy: same bytes)
    return added if same and seen == len(index) else None


def cached_intact(full: Path, index: Mapping[str, tuple]) -> bool:
    """Whether the cached tree `full` is still as indexed at its own paths: every file and
    symlink the same inode with the same mode, size and mtime (a write through any hard link
    to it changes them), every folder its mtime (nothing added to or removed from it): all a
    second `tree_stamp` of the entry would tell, and the inodes too. One stat per path."""
    base = os.path.join(full, "")
    for name, want in index.items():
        try:
            st = os.lstat(base + name)
        except OSError:
            return False
        if want[0] == "d":
            if st.st_mtime_ns != want[1] or not stat.S_ISDIR(st.st_mode):
                return False
        elif (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns) != tuple(want[1:6]):
            return False
    return True


def _same_bytes(e: os.DirEntry, cached: Path, want: tuple) -> bool:
    """A top-level file of node_modules that is a copy of the cached one (`unshare_top_files`): same bytes."""
    st = e.stat(follow_symlinks=False)
    return stat.S_ISREG(st.st_mode) and st.st_size == want[4] and st.st_mode & 0o111 == want[3] & 0o111 \
        and filecmp.cmp(e.path, cached, shallow=False)


def take_spare(entry: Path, deps: Path) -> bool:
    """Claim the entry's spare linked full tree as the checkout's node_modules (a rename: a
    concurrent build gets it or not, never half), which saves creating ~4,400 folders and
    ~50,000 links. Only its top level is looked at here (the same names as the entry's full
    tree: nothing planted beside the packages); the build's check after it (`check_linked`)
    compares every path, inode and top-level byte with the cached tree, and a build on a spare
    that is not exactly that tree is built again on the entry linked anew (DepsCache.hit).
    False, and no node_modules, when there is no spare or its top level differs."""
    try:
        os.rename(entry / SPARE, deps)
    except OSError:
        return False
    try:
        same = sorted(os.listdir(deps)) == sorted(os.listdir(entry / "full" / DEPS))
    except OSError:
        same = False
    if not same:
        fs(["rm", "-rf", str(deps)], "removing a spare node_modules")
    return same


def linked_as(folder: Path, rows: Mapping[str, tuple], prefix: str = DEPS) -> bool:
    """Whether `folder` holds exactly what `rows` (a `scan_tree` index whose keys are `prefix`
    and paths under it) records: the same names, folders where it has folders, and each file
    and symlink the very inode recorded. Read from the folders' listings (their inode numbers):
    no stat per file. The inodes' own mode, size and mtime are checked apart (`vouch_prod`)."""
    try:
        dev = os.stat(folder).st_dev
    except OSError:
        return False
    seen = 0
    stack = [(str(folder), prefix + "/")]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                found = list(it)
        except OSError:
            return False
        for e in found:
            want = rows.get(rel + e.name)
            if want is None:
                return False
            seen += 1
            if want[0] == "d":
                if not e.is_dir(follow_symlinks=False):
                    return False
                stack.append((e.path, rel + e.name + "/"))
            elif e.inode() != want[2] or want[1] != dev or e.is_dir(follow_symlinks=False):
                return False
    return seen == len(rows) - (prefix in rows)


def vouch_prod(rows: Mapping[str, tuple], index: Mapping[str, tuple], linked: Path) -> bool:
    """After `cached_intact` found the entry's full tree as indexed (every inode of `index` as
    filled): whether every file and symlink of the production tree `rows` (at `linked`, the
    entry's prod/node_modules) is still the inode it was pruned with, with the same mode, size
    and mtime. One the full tree holds at the same path with the same inode and attributes is
    vouched for by that check; the others (npm's own top-level files, anything the prune wrote
    anew) are stat'ed."""
    top = len(DEPS) + 1
    for rel, row in rows.items():
        if row[0] == "d":
            continue
        same = index.get(rel)
        if same is not None and same[:6] == row[:6]:
            continue
        try:
            st = os.lstat(os.path.join(linked, rel[top:]))
        except OSError:
            return False
        if (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns) != tuple(row[1:6]):
            return False
    return True


def check_spare_linked(entry: Path, deps: Path) -> dict[str, tuple] | None:
    """The pre-build check of a spare (for a build with no production tree to check it after):
    the index of the entry's full tree when `deps` is exactly that tree linked (`check_linked`),
    else None, and no node_modules (and a damaged entry dropped)."""
    scan = entry_index(entry)
    intact, added = check_linked(deps, entry / "full", scan) if scan is not None else (False, None)
    if intact and added == []:
        return scan
    fs(["rm", "-rf", str(deps)] + ([] if intact else [str(entry)]), "removing a spare node_modules")
    return None


def prelink_prod(entry: Path, stamp) -> tuple[bool, Path | None, dict[str, tuple] | None]:
    """While the build runs: hard-link the entry's production tree into a folder of the entry
    (`swap_in_prod` renames it into place, so the build's critical path links nothing) and
    check it. (tree as pruned, the linked folder or None, its rows or None). With the tree's
    kept index (`prod_index`), the linked copy is compared with it by names and inodes
    (`linked_as`), and the rows go to the caller, which vouches for their attributes after the
    build (`vouch_prod`) and lets the pack take them instead of walking the tree; without one
    (an older entry) the tree's stamp is checked first, as it was."""
    rows = prod_index(entry, stamp)
    if rows is None and not stamp_is(entry / "prod", stamp):
        return False, None, None
    ready = entry / f".prelinked-{os.getpid()}-{threading.get_ident()}"
    try:
        fs(["rm", "-rf", str(ready)], "clearing a linked production tree")
        fs(["cp", "-al", str(entry / "prod" / DEPS), str(ready)], "restoring node_modules from the cache")
    except DeployError:
        return (True if rows is None else stamp_is(entry / "prod", stamp)), None, None
    if rows is None:
        return True, ready, None
    return (True, ready, rows) if linked_as(ready, rows) else (False, ready, None)


def swap_in_prod(app: Path, entry: Path, added: list[str], ready: Path | None = None) -> Path | None:
    """Replace the checkout's node_modules (the full install, linked) by the entry's
    production tree, linked (`ready`: linked already, by `prelink_prod`), keeping the
    top-level folders the build added. The full tree is moved aside (`LINKED`, never packed),
    then kept as the entry's spare for the next hit (checked there before use); when a spare
    is there already, returns the moved-aside tree for the caller to remove (in the
    background: it is thousands of links)."""
    deps, old = app / DEPS, app / LINKED
    if old.exists():
        fs(["rm", "-rf", str(old)], "clearing an interrupted build")
    os.rename(deps, old)
    if ready is not None:
        os.rename(ready, deps)
    else:
        fs(["cp", "-al", str(entry / "prod" / DEPS), str(deps)], "restoring node_modules from the cache")
    for name in added:
        os.rename(old / name, deps / name)
    unshare_top_files(deps)
    try:
        os.rename(old, entry / SPARE)   # fails when a spare is there already (or across file systems)
        return None
    except OSError:
        return old


def unshare_top_files(deps: Path) -> None:
    """Real copies of node_modules' own top-level files (npm's .package-lock.json, pnpm's
    .modules.yaml, yarn's .yarn-integrity): the prune rewrites them in place, which would
    write through a hard link into the cache entry."""
    for p in deps.iterdir():
        if p.is_file() and not p.is_symlink():
            tmp = p.with_name(p.name + ".unshare")
            fs(["cp", "-p", str(p), str(tmp)], "restoring node_modules from the cache")
            os.replace(tmp, p)
