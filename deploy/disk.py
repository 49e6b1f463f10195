"""What `.deploy` takes on this machine, and keeping it within `[local] max_deploy_mb`.

`.deploy` holds the artifacts, the commits' checkouts, the dependency cache, the local
releases, backups and the ledger. Counts bound most of it (`app.keep_builds`,
`local.keep_releases`, `app.cache_max_mb`); the size bound is the backstop for an app whose
builds are large: when `.deploy` is over it, the oldest local release, checkout and artifact
are removed in turn, never one that is live or previous (a local release that is `current`
or `previous`, a build of a commit live or previous in any environment, or one a run in
progress uses), until it fits or nothing more may go. Sizes are bytes on disk, each
hard-linked file counted once (releases, checkouts and the cache share files).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from deploy import local, proc, source
from deploy import build as b
from deploy.build.artifact import INDEX
from deploy.config import Settings

MB = 1024 * 1024
TRASH = ".trash-"   # the prefix of folders being deleted in the background


@dataclass(frozen=True)
class Trim:
    before: int                  # bytes on disk before (hard links once)
    after: int
    bound: int                   # bytes allowed: [local] max_deploy_mb
    removed: tuple[str, ...]     # what went: "release <id>", "checkout <name>", "artifact <name>"

    @property
    def over(self) -> bool:
        return self.after > self.bound

    def text(self) -> str:
        """One line for a step's result ("" when nothing was over the bound)."""
        if self.before <= self.bound:
            return ""
        line = f".deploy {self.before / MB:.1f} MB > [local] max_deploy_mb {self.bound // MB}: "
        if self.removed:
            line += f"removed {len(self.removed)} old release(s)/build(s), now {self.after / MB:.1f} MB"
        return line + (("; still over" if self.removed else "nothing more may go") +
                       ": the rest is live, previous, the dependency cache (app.cache_max_mb) or backups"
                       if self.over else "")


def usage(top: Path) -> int:
    """Bytes `top` takes on disk (allocated blocks), each hard-linked file once; 0 when absent.
    `du` (GNU coreutils) counts the same way and walks a real app's hundreds of thousands of
    entries several times faster than Python; its own walk is the fallback."""
    if not top.is_dir():
        return 0
    # Folders already renamed aside for deletion in the background (`.trash-*`: removing big
    # folders off the critical path) are gone as far as the bound is concerned.
    if shutil.which("du"):
        r = proc.run(["du", "-s", "-B1", f"--exclude={TRASH}*", str(top)], timeout=120)
        head = r.stdout.split()[:1] if r.ok else []
        if head and head[0].isdigit():
            return int(head[0])
    return _walk_bytes(top)


def _walk_bytes(top: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for d, dirs, files in os.walk(top):
        dirs[:] = [x for x in dirs if not x.startswith(TRASH)]
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(d, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total + os.lstat(top).st_blocks * 512


def release_roots(s: Settings) -> list[Path]:
    """Every app's release root under [local] root (one folder per app)."""
    base = s.path(s.local.root)
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.is_dir() and (d / "releases").is_dir())


def keep_within(s: Settings, protect: Iterable[str]) -> Trim:
    """Remove the oldest local releases, checkouts and artifacts (in turn, one of each per
    round) until `.deploy` fits `[local] max_deploy_mb`; never current or previous releases,
    nor builds or checkouts of a commit in `protect` (git SHAs)."""
    top = s.root / ".deploy"
    bound = s.local.max_deploy_mb * MB
    before = after = usage(top)
    removed: list[str] = []
    if before <= bound:
        return Trim(before, after, bound, ())
    keep = set(protect)
    store, src = top / "artifacts", top / "src"
    roots = release_roots(s)
    releases = {r: len(local.releases(r)) for r in roots}
    checkouts, artifacts = _count(src, "*/.complete"), _count(store / INDEX, "*.json")
    while after > bound:
        gone: list[str] = []
        for r in roots:
            releases[r] = max(1, releases[r] - 1)
            gone += [f"release {x}" for x in local.prune(r, releases[r])]
        checkouts = max(1, checkouts - 1)
        gone += [f"checkout {x}" for x in source.prune(src, checkouts, keep)]
        artifacts = max(1, artifacts - 1)
        gone += [f"artifact {x}" for x in b.prune(store, artifacts, keep)]
        removed += gone
        if not gone and all(v <= 1 for v in [*releases.values(), checkouts, artifacts]):
            break
        after = usage(top) if gone else after
    return Trim(before, after, bound, tuple(removed))


def _count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0
