"""Packing a build into a reproducible, content-addressed tarball.

The bytes depend only on the files' contents, their executable bits and the manifest:
sorted entries, a fixed owner, modes and mtimes, a gzip header without a name or a time (as
reproducible-builds.org's "archives" advice says), and the deflate stream cut into fixed
1 MiB blocks whatever the number of threads (`gzip_writer`, over isal's threaded igzip).
So the same build output always has the same SHA-256, and production can insist on the
exact bytes staging tested.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from isal import igzip_threaded

from deploy.build.artifact import MANIFEST, RESERVED, Artifact
from deploy.build.ops import sha256_file
from deploy.build.recipes import LINKED
from deploy.errors import BuildFailed

# Never shipped: git metadata, deploy.source's checkout marker, and the full node_modules a
# cache hit moves aside while it links in the production tree.
SKIP_TOP = (".git", ".complete", LINKED)
BLOCK = 1 << 20   # the gzip stream's block: compressed apart, primed with the 32 KiB before it


def pack(build_dir: str | Path, artifacts_dir: str | Path, *, git_sha: str, built_at: str, release_id: str,
         include: Iterable[str] = (), app: str = "",
         known_sha256: Mapping[tuple[int, int, int, int], str] | None = None,
         source: Mapping[str, str] | None = None) -> Artifact:
    """Pack `build_dir` (or only its `include` paths) plus a RELEASE.json into
    `<artifacts_dir>/<sha256>.tar.gz`.

    The bytes depend only on the files' contents, their executable bits and the
    manifest: same build output, same hash. `known_sha256`: hashes already known by
    (device, inode, size, mtime_ns), e.g. of files hard-linked from the dependency cache.
    `source`: the build's app folder and contract digest, recorded as the manifest's "source"."""
    known = known_sha256 or {}
    root = Path(build_dir)
    store = Path(artifacts_dir)
    entries = _walk(root, tuple(include))
    # Mode as packed (644 or 755): hosts link an unchanged file from an earlier release only
    # when path, sha256, size and mode all match (deploy.hosts delta uploads).
    files = [
        {"path": rel, "sha256": known.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)) or sha256_file(p),
         "size": st.st_size, "mode": 0o755 if st.st_mode & 0o111 else 0o644}
        for rel, p, st in entries if stat.S_ISREG(st.st_mode)
    ]
    # Symlinks and empty folders too, so the manifest describes the whole unpacked tree
    # (hosts verify a release built from a delta against it).
    links = [{"path": rel, "target": os.readlink(p)} for rel, p, st in entries if stat.S_ISLNK(st.st_mode)]
    parents = {rel.rsplit("/", 1)[0] for rel, _, _ in entries if "/" in rel}
    empty = [rel for rel, _, st in entries if stat.S_ISDIR(st.st_mode) and rel not in parents]
    manifest: dict[str, object] = {"release_id": release_id, "git_sha": git_sha, "built_at": built_at, "files": files,
                "symlinks": links, "empty_dirs": empty}
    if app:
        manifest["app"] = app   # which app this is: an undo never starts another app's release
    if source:
        manifest["source"] = dict(source)   # what it was built from besides the commit (BuildKey)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    mtime = int(datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())

    fd, tmp = tempfile.mkstemp(prefix=f".pack-{os.getpid()}-", suffix=".tar.gz", dir=store)
    try:
        with os.fdopen(fd, "wb") as f:
            raw = _Hashing(f)   # the tarball's sha256 as it is written: no second read
            # Level 1: a few times faster than 6 on a real app's node_modules for a slightly
            # larger file; a commit is packed once, and hosts mostly get deltas.
            with gzip_writer(raw, compresslevel=1) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.copybufsize = 1 << 20   # type: ignore[attr-defined]  # tarfile's copy buffer
                    # The manifest first: a reader (a delta upload) gets it without
                    # decompressing the whole tarball.
                    info = _info(MANIFEST, tarfile.REGTYPE, 0o644, mtime)
                    info.size = len(manifest_bytes)
                    tar.addfile(info, io.BytesIO(manifest_bytes))
                    for rel, p, st in entries:
                        info = _tarinfo(rel, p, st, mtime)
                        if info.isreg():
                            with open(p, "rb") as src:
                                tar.addfile(info, src)
                        else:
                            tar.addfile(info)
        digest = raw.hexdigest()
        final = store / f"{digest}.tar.gz"
        os.replace(tmp, final)   # same name means same bytes, so replacing an existing one is harmless
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Artifact(path=final, sha256=digest, release_id=release_id, git_sha=git_sha, built_at=built_at)


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, f):
        self._f = f
        self._h = hashlib.sha256()

    def write(self, data) -> int:
        self._h.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._h.hexdigest()



def gzip_writer(raw, compresslevel: int = 1, threads: int | None = None) -> _Blocks:
    """A write-only gzip stream into `raw` (close it to finish), compressed on `threads`
    threads by isal: one deflate block per 1 MiB of input, each primed with the 32 KiB
    before it (pigz's way), so the bytes depend only on the data, never on the threads or on
    how the writes were cut (`_Blocks` hands isal whole blocks). Its header holds no name
    and no time."""
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    return _Blocks(igzip_threaded.open(raw, "wb", compresslevel=compresslevel, threads=threads, block_size=BLOCK))


class _Blocks:
    """Writes to a gzip stream in whole `BLOCK`s, the rest at the end; tarfile asks `tell()`."""

    def __init__(self, gz):
        self._gz = gz
        self._buf = bytearray()
        self._size = 0

    def write(self, data) -> int:
        n = len(data)
        self._buf += data
        self._size += n
        if len(self._buf) >= BLOCK:
            whole = len(self._buf) - len(self._buf) % BLOCK
            for i in range(0, whole, BLOCK):
                self._gz.write(bytes(self._buf[i:i + BLOCK]))
            del self._buf[:whole]
        return n

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._buf:
            self._gz.write(bytes(self._buf))
            self._buf.clear()
        self._gz.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _walk(root: Path, include: tuple[str, ...] = ()) -> list[tuple[str, Path, os.stat_result]]:
    """(path relative to `root`, path, lstat) of everything packed, sorted by path."""
    out = []
    wanted = [p.strip("/") for p in include]
    top = root.resolve()

    def chosen(rel: str) -> bool:
        if not wanted:
            return rel.split("/", 1)[0] not in SKIP_TOP
        # A path is packed when it is an included path, inside one, or a folder leading to one.
        return any(rel == w or rel.startswith(w + "/") or w.startswith(rel + "/") for w in wanted)

    def visit(folder: str, prefix: str) -> None:
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda e: e.name)
        for e in found:
            rel = prefix + e.name
            if not chosen(rel):
                continue
            p = Path(e.path)
            if rel in RESERVED:
                raise BuildFailed(
                    f"{p}: the build must not write {rel}; the deploy tool writes that name.",
                    f"Rename it in the build script ({', '.join(RESERVED)} are reserved).",
                )
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                resolved = (p.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(top):
                    raise BuildFailed(
                        f"{p} is a symlink to {target}, outside the build folder.",
                        "Copy the file into the app folder instead: a release must not depend on the build machine.",
                    )
            out.append((rel, p, st))
            if stat.S_ISDIR(st.st_mode):
                visit(e.path, rel + "/")

    visit(str(root), "")
    out.sort(key=lambda row: row[0])
    return out


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tarinfo(rel: str, p: Path, st: os.stat_result, mtime: int) -> tarfile.TarInfo:
    # Only the executable bit survives from the file system: umask and owner differ
    # between machines and would change the hash.
    if stat.S_ISLNK(st.st_mode):
        info = _info(rel, tarfile.SYMTYPE, 0o777, mtime)
        info.linkname = os.readlink(p)
        return info
    if stat.S_ISDIR(st.st_mode):
        return _info(rel, tarfile.DIRTYPE, 0o755, mtime)
    info = _info(rel, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644, mtime)
    info.size = st.st_size
    return info
