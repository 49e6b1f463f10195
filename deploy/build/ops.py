"""Low-level operations the build's parts share: a build command run (`step`), a file-system
command (`fs`), file hashes, atomic writes, flocks, and fingerprints and sizes of trees."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from deploy import proc
from deploy.errors import BuildFailed


def step(argv: Sequence[str], app: Path, env: Mapping[str, str], timeout: float) -> str:
    """Run one build command in `app` (its output streamed); its display form, or BuildFailed with its cause lines."""
    r = proc.run(list(argv), cwd=app, env=env, timeout=timeout, stream="build")
    if not r.ok:
        raise BuildFailed(
            f"`{r.display}` failed in {app} (exit {r.returncode}):\n{r.explain(20)}",
            "Fix the build (run the same command in the app folder to see it all), then run again.",
        )
    return r.display


def fs(argv: list[str], what: str) -> None:
    """Run a file-system command (cp, rm) on the build's folders; BuildFailed saying `what` failed."""
    r = proc.run(argv, timeout=1800)
    if not r.ok:
        raise BuildFailed(f"{what} failed: `{r.display}` (exit {r.returncode}): {r.tail(5)}",
                          "Check free space and permissions under .deploy/, then build again.")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, 64 lowercase hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(target: Path, data: bytes) -> None:
    """Write `target` whole or not at all (a temporary file beside it, then a rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def writable_dir(path: Path) -> Path:
    """`path` created and writable, or SettingsError saying where to point the artifacts folder."""
    return proc.ensure_writable(
        path, "the artifacts folder",
        "Point the artifacts folder at a writable place (default .deploy/artifacts under the project root).")


@contextlib.contextmanager
def lock(path: Path, *, shared: bool = False, wait: bool = True):
    """An flock on `path` (created); yields False when `wait` is off and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def tree_stamp(root: str | Path) -> str:
    """A fingerprint of every file and symlink under `root` (path, type, mode, size, mtime):
    an in-place write to a hard-linked cache file changes it."""
    return scan_tree(Path(root))[0]


def scan_tree(root: Path) -> tuple[str, dict[str, tuple]]:
    """`tree_stamp(root)` and, from the same walk, an index of every path under `root`:
    ("d", mtime_ns) for a folder; (kind "f" or "l", st_dev, st_ino, mode, size, mtime_ns,
    symlink target or None) for anything else."""
    h = hashlib.sha256()
    index: dict[str, tuple] = {}

    def walk(path: str, rel: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = rel + e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                index[name] = ("d", st.st_mtime_ns)
                walk(e.path, name + "/")
            else:
                link = os.readlink(e.path) if stat.S_ISLNK(st.st_mode) else None
                index[name] = ("f" if link is None else "l", st.st_dev, st.st_ino, st.st_mode, st.st_size,
                               st.st_mtime_ns, link)
                h.update(f"{name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())

    walk(str(root), "")
    return h.hexdigest(), index


def tree_bytes(root: str | Path) -> int:
    """Bytes a folder takes on disk (allocated blocks), each hard-linked file once (the cache's
    entries and the checkouts share files with `cp -al`)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total
