"""One dependency cache entry on disk, and its checks.

    <cache>/<deps_key>/
      full/node_modules    the install as it left it (before any build wrote into it)
      prod/node_modules    npm only: what the prune leaves of it (prod.json: from which files)
      spare/               a hit's full tree, linked, kept for the next hit
      stamp.json           tree stamps: a file written through a hard link changes them
      index.json           the full tree's index as filled (`scan_tree`): a hit's check after
                           the build compares node_modules with it, without scanning `full` first
      prod-index.json      npm only: the production tree's index as pruned, so a hit checks its
                           linked copy by names and inodes (`linked_as`) and the pack takes its
                           rows instead of walking it
      used                 its mtime: when a build last used the entry (the LRU prune)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from deploy.build.ops import scan_tree, tree_stamp
from deploy.build.recipes import Recipe


PROD_INFO = "prod.json"
SPARE = "spare"


def entry_scan(entry: Path) -> dict[str, tuple] | None:
    """The index of the entry's full tree (`scan_tree`) when its stamp still matches, else None."""
    try:
        stamp = json.loads((entry / "stamp.json").read_text())
        got, index = scan_tree(entry / "full")
    except (OSError, ValueError):
        return None
    return index if isinstance(stamp, dict) and stamp.get("full") == got else None


INDEX = "index.json"


PROD_INDEX = "prod-index.json"


def write_index(folder: Path, stamp: str, index: Mapping[str, tuple], part: str = "full") -> None:
    """Keep `index` (of `folder`/`part`, whose stamp is `stamp`) as index.json (full) or prod-index.json."""
    name = INDEX if part == "full" else PROD_INDEX
    (folder / name).write_text(json.dumps({part: stamp, "index": index}, separators=(",", ":")))


def prod_index(entry: Path, stamp) -> dict[str, tuple] | None:
    """The production tree's index kept when it was pruned, when it belongs to `stamp` (prod.json's);
    None when there is none (an entry filled before indexes were kept) or it is another tree's."""
    try:
        kept = json.loads((entry / PROD_INDEX).read_text())
        if isinstance(kept, dict) and stamp is not None and kept.get("prod") == stamp \
                and isinstance(kept.get("index"), dict):
            return {k: tuple(v) for k, v in kept["index"].items()}
    except (OSError, ValueError, TypeError):
        pass
    return None


def entry_index(entry: Path) -> dict[str, tuple] | None:
    """The full tree's index kept when the entry was filled, when it belongs to the stamp the
    entry holds; else a fresh `entry_scan`. A build on the spare is checked against it after
    the build: every file through its links, every cached folder at its own path (`check_linked`)."""
    try:
        kept = json.loads((entry / INDEX).read_text())
        stamp = json.loads((entry / "stamp.json").read_text())
        if isinstance(kept, dict) and isinstance(stamp, dict) and kept.get("full") == stamp.get("full") \
                and isinstance(kept.get("index"), dict):
            return {k: tuple(v) for k, v in kept["index"].items()}
    except (OSError, ValueError, TypeError):
        pass
    return entry_scan(entry)


def stamp_is(root: Path, stamp) -> bool:
    """True when `root`'s tree stamp is `stamp` (False when it cannot be read)."""
    try:
        return tree_stamp(root) == stamp
    except OSError:
        return False


def entry_ok(entry: Path, parts: tuple[str, ...] = ("full",)) -> bool:
    """True when the entry's `parts` (full, prod) still have the stamps it was filled with: nothing wrote into them."""
    try:
        stamp = json.loads((entry / "stamp.json").read_text())
        return isinstance(stamp, dict) and all(stamp.get(k) == tree_stamp(entry / k) for k in parts)
    except (OSError, ValueError):
        return False


def touch(entry: Path) -> None:
    """Mark the entry used now (the LRU prune keeps the most recently used)."""
    try:
        (entry / "used").write_text(str(time.time()))
    except OSError:
        pass


def prod_ready(entry: Path, plan: Recipe) -> dict | None:
    """The entry's prod.json when it has a production tree made by this recipe's prune."""
    try:
        info = json.loads((entry / PROD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("prune") != list(plan.prune) or not isinstance(info.get("inputs"), dict):
        return None
    return info


def prod_sha256(info: Mapping) -> dict[tuple[int, int, int, int], str]:
    """prod.json's file hashes by (device, inode, size, mtime_ns): pack reads a file linked
    from the production tree (the same inode, unchanged since: the tree's stamp was checked
    before it was linked) without hashing it again."""
    rows = info.get("sha256")
    try:
        return {(int(r[0]), int(r[1]), int(r[2]), int(r[3])): str(r[4]) for r in rows} if isinstance(rows, list) else {}
    except (TypeError, ValueError, IndexError):
        return {}
