"""Packing a build into a reproducible, content-addressed tarball.

The bytes depend only on the files' contents, their executable bits and the manifest:
sorted entries, a fixed owner, modes and mtimes, a gzip header without a name or a time (as
reproducible-builds.org's "archives" advice says), and the deflate stream cut into fixed
1 MiB blocks whatever the number of threads (`gzip_writer`, over isal's threaded igzip).
So the same build output always has the same SHA-256, and production can insist on the
exact bytes staging tested.

The tarball is three gzip members, which concatenate into one gzip stream and one tar stream
(RFC 1952 section 2.2; tar, Python's tarfile and gzip read them as one): the manifest and the
app's own files; the dependencies (node_modules, its top-level dot-entries aside, at a fixed
mtime so they do not depend on the commit); the tar end. The dependency member depends only on
the dependency files' names, modes, sizes and hashes (its key, `member_key`), so it is compressed
once and kept in the members folder (`.deploy/cache/packed/<key>.gz`): a new commit with the same
dependencies copies it in (checking its SHA-256 on the way) instead of reading and compressing
every node_modules file again. A pack with or without a kept member gives the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from isal import igzip_threaded

from deploy.build.artifact import MANIFEST, RESERVED, Artifact
from deploy.build.ops import atomic_write, sha256_file
from deploy.build.recipes import DEPS, LINKED
from deploy.errors import BuildFailed

# Never shipped: git metadata, deploy.source's checkout marker, and the full node_modules a
# cache hit moves aside while it links in the production tree.
SKIP_TOP = (".git", ".complete", LINKED)
BLOCK = 1 << 20   # the gzip stream's block: compressed apart, primed with the 32 KiB before it


# Dependency entries carry this time, not the commit's: their member is then the same for every
# commit with the same dependencies (1980-01-01, the earliest time zip can store, as many
# reproducible-build tools use).
DEPS_MTIME = 315532800
MEMBER_FORMAT = 1
_KEEP_TOP = (".bin",)   # npm's own top-level folder that is part of the dependencies


@dataclass(frozen=True)
class PackStats:
    """What a pack read: `hashed` files read to hash them (the rest came with known hashes),
    `read` files read into the tarball, whether the dependency member was reused (copied
    from the members folder: none of its files read), packed (and kept), or absent, and how
    many entries it `walked` (stat'ed) rather than took as checked rows."""

    files: int
    hashed: int
    read: int
    deps_files: int
    deps_member: str        # "reused" | "packed" | "none"
    member: Path | None = None
    walked: int = 0         # entries the pack stat'ed itself (the rest came as checked rows: `known_tree`)


def in_deps_member(rel: str) -> bool:
    """Whether the packed path `rel` goes into the dependency member: node_modules and what is
    under it, except its top-level dot-entries (npm's .package-lock.json, a generated .prisma
    client, a tool's cache), which change with the build; npm's .bin stays in."""
    if rel == DEPS:
        return True
    if not rel.startswith(DEPS + "/"):
        return False
    top = rel[len(DEPS) + 1:].split("/", 1)[0]
    return not top.startswith(".") or top in _KEEP_TOP


def pack(build_dir: str | Path, artifacts_dir: str | Path, *, git_sha: str, built_at: str, release_id: str,
         include: Iterable[str] = (), app: str = "",
         known_sha256: Mapping[tuple[int, int, int, int], str] | None = None,
         source: Mapping[str, str] | None = None, members: str | Path | None = None,
         known_tree: Mapping[str, tuple] | None = None) -> Artifact:
    """Pack `build_dir` (or only its `include` paths) plus a RELEASE.json into
    `<artifacts_dir>/<sha256>.tar.gz` (`pack_counted`, without its counts)."""
    return pack_counted(build_dir, artifacts_dir, git_sha=git_sha, built_at=built_at, release_id=release_id,
                        include=include, app=app, known_sha256=known_sha256, source=source, members=members,
                        known_tree=known_tree)[0]


def pack_counted(build_dir: str | Path, artifacts_dir: str | Path, *, git_sha: str, built_at: str,
                 release_id: str, include: Iterable[str] = (), app: str = "",
                 known_sha256: Mapping[tuple[int, int, int, int], str] | None = None,
                 source: Mapping[str, str] | None = None,
                 members: str | Path | None = None,
                 known_tree: Mapping[str, tuple] | None = None) -> tuple[Artifact, PackStats]:
    """Pack `build_dir` (or only its `include` paths) plus a RELEASE.json into
    `<artifacts_dir>/<sha256>.tar.gz`, and say what it read.

    The bytes depend only on the files' contents, their executable bits and the
    manifest: same build output, same hash. `known_sha256`: hashes already known by
    (device, inode, size, mtime_ns), e.g. of files hard-linked from the dependency cache.
    `source`: the build's app folder and contract digest, recorded as the manifest's "source".
    `members`: the folder of kept dependency members (none: the member is packed, not kept).
    `known_tree`: what node_modules holds below its top level, as a `scan_tree` index of
    node_modules (deploy.build.ops) the caller checked against it (the dependency cache's
    production tree, linked in and checked: deploy.build.prodtree): its rows are taken instead
    of walking those folders; node_modules' own entries are still read."""
    known = known_sha256 or {}
    root = Path(build_dir)
    store = Path(artifacts_dir)
    entries = _walk(root, tuple(include), known_tree)
    hashed = 0

    def digest(p: str, st: os.stat_result) -> str:
        nonlocal hashed
        got = known.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        if got is None:
            hashed += 1
            got = sha256_file(p)
        return got

    # Mode as packed (644 or 755): hosts link an unchanged file from an earlier release only
    # when path, sha256, size and mode all match (deploy.hosts delta uploads).
    sums = {rel: digest(p, st) for rel, p, st in entries if stat.S_ISREG(st.st_mode)}
    files = [{"path": rel, "sha256": sums[rel], "size": st.st_size, "mode": 0o755 if st.st_mode & 0o111 else 0o644}
             for rel, p, st in entries if stat.S_ISREG(st.st_mode)]
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
    manifest_bytes = _manifest_json(manifest)
    mtime = int(datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    head: list = []
    deps: list = []
    for e in entries:
        (deps if in_deps_member(e[0]) else head).append(e)
    key = member_key([_describe(rel, p, st, sums.get(rel)) for rel, p, st in deps]) if deps else ""
    kept = Path(members) / f"{key}.gz" if members is not None and deps else None
    read = 0
    how = "none"

    fd, tmp = tempfile.mkstemp(prefix=f".pack-{os.getpid()}-", suffix=".tar.gz", dir=store)
    try:
        with os.fdopen(fd, "wb") as f:
            raw = _Hashing(f)   # the tarball's sha256 as it is written: no second read
            # Level 1: a few times faster than 6 on a real app's node_modules for a slightly
            # larger file; a commit is packed once, and hosts mostly get deltas.
            with gzip_writer(raw, compresslevel=1) as gz:
                tar = _TarWriter(gz)
                # The manifest first: a reader (a delta upload) gets it without
                # decompressing the whole tarball.
                info = _info(MANIFEST, tarfile.REGTYPE, 0o644, mtime)
                info.size = len(manifest_bytes)
                tar.add(info, io.BytesIO(manifest_bytes))
                read += tar.add_all(head, mtime)
                size = tar.size
            if deps:
                reused = _copy_member(kept, raw, f) if kept is not None else None
                if reused is not None:
                    size += reused
                    how = "reused"
                else:
                    size += _pack_member(deps, raw, kept)
                    read += len([e for e in deps if stat.S_ISREG(e[2].st_mode)])
                    how = "packed"
            with gzip_writer(raw, compresslevel=1) as gz:
                # tar's end: two zero blocks, then zeros to a whole record (as tarfile writes it)
                end = 2 * tarfile.BLOCKSIZE
                gz.write(b"\0" * (end + (-(size + end)) % tarfile.RECORDSIZE))
        digest_hex = raw.hexdigest()
        final = store / f"{digest_hex}.tar.gz"
        os.replace(tmp, final)   # same name means same bytes, so replacing an existing one is harmless
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    art = Artifact(path=final, sha256=digest_hex, release_id=release_id, git_sha=git_sha, built_at=built_at)
    n_deps = sum(1 for e in deps if stat.S_ISREG(e[2].st_mode))
    walked = sum(1 for e in entries if not isinstance(e[2], _Row))
    return art, PackStats(len(files), hashed, read, n_deps, how, kept if how != "none" else None, walked)


def _manifest_json(manifest: Mapping[str, object]) -> bytes:
    """The manifest as JSON, keys sorted, one top-level key per line (json's C encoder: with
    `indent` it falls back to the Python one, seconds for a real app's 25,000 files)."""
    lines = [f"{json.dumps(k)}: {json.dumps(manifest[k], sort_keys=True)}" for k in sorted(manifest)]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def member_key(described: list[list]) -> str:
    """The key of a dependency member: sha256 of what its bytes are made from (each entry's
    path, kind, packed mode, size and hash or link target, the fixed mtime, the format): per
    entry its fields joined by NUL (no name holds one), prefixed by their length, so no two
    lists of entries hash alike."""
    h = hashlib.sha256(f"member {MEMBER_FORMAT} {DEPS_MTIME}\n".encode())
    for row in described:
        enc = "\0".join(map(str, row)).encode("utf-8", "surrogateescape")
        h.update(len(enc).to_bytes(8, "big") + enc)
    return h.hexdigest()


def _describe(rel: str, p: str, st: os.stat_result, sha: str | None) -> list:
    if stat.S_ISLNK(st.st_mode):
        return [rel, "l", os.readlink(p)]
    if stat.S_ISDIR(st.st_mode):
        return [rel, "d"]
    return [rel, "f", 0o755 if st.st_mode & 0o111 else 0o644, st.st_size, sha]


def _copy_member(kept: Path, raw: _Hashing, f) -> int | None:
    """Append the kept member `kept` to the tarball (through `raw`); its uncompressed size, or
    None (nothing appended) when there is none or it is not the one its sidecar describes
    (size, SHA-256, read once as it is copied). A damaged one is removed."""
    side = kept.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        size, sha, tar_size = int(meta["size"]), str(meta["sha256"]), int(meta["tar_size"])
        src = open(kept, "rb")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    start = f.tell()
    saved = raw.state()
    check = hashlib.sha256()
    n = 0
    with src:
        if os.fstat(src.fileno()).st_size == size:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                check.update(chunk)
                raw.write(chunk)
                n += len(chunk)
    if n == size and check.hexdigest() == sha:
        with contextlib.suppress(OSError):
            os.utime(side)   # used now: the members folder keeps the most recently used
        return tar_size
    f.seek(start)           # not the member it claims to be: undo the copy, pack it anew
    f.truncate()
    raw.restore(saved)
    kept.unlink(missing_ok=True)
    side.unlink(missing_ok=True)
    return None


def _pack_member(deps: list, raw: _Hashing, kept: Path | None) -> int:
    """Compress the dependency entries as one gzip member into the tarball (through `raw`)
    and, with `kept`, into that file too (then its sidecar); the member's tar size."""
    out = None
    tmp = None
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{kept.name}.", dir=kept.parent)
        out = os.fdopen(fd, "wb")
    try:
        tee = _Tee(raw, out)
        with gzip_writer(tee, compresslevel=1) as gz:
            tar = _TarWriter(gz)
            tar.add_all(deps, DEPS_MTIME)
        if out is not None and tmp is not None and kept is not None:
            out.close()
            os.replace(tmp, kept)
            atomic_write(kept.with_suffix(".json"), (json.dumps(
                {"format": MEMBER_FORMAT, "size": tee.size, "sha256": tee.hexdigest(), "tar_size": tar.size},
                sort_keys=True) + "\n").encode())
        return tar.size
    finally:
        if out is not None:
            out.close()
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def prune_members(members: str | Path, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Keep the `keep` most recently used dependency members (and the `protect`ed keys); the keys removed."""
    root = Path(members)
    if not root.is_dir():
        return []
    rows = []
    for side in root.glob("*.json"):
        with contextlib.suppress(OSError):
            rows.append((side.stat().st_mtime_ns, side.stem))
    rows.sort(reverse=True)
    doomed = [k for _, k in rows[max(1, keep):] if k not in set(protect)]
    for k in doomed:
        (root / f"{k}.json").unlink(missing_ok=True)
        (root / f"{k}.gz").unlink(missing_ok=True)
    known = {k for _, k in rows}
    for stray in root.glob("*.gz"):   # a member whose sidecar never came (an interrupted pack)
        if stray.name[:-3] not in known or stray.name[:-3] in doomed:
            with contextlib.suppress(OSError):
                if stray.stat().st_mtime < time.time() - 3600:
                    stray.unlink()
    return doomed


class _TarWriter:
    """tar entries written to a stream as tarfile writes them (PAX headers, 512-byte blocks),
    without the end blocks: the tarball's members are written apart and end once."""

    def __init__(self, out):
        self._out = out
        self.size = 0

    def _write(self, data) -> None:
        self._out.write(data)
        self.size += len(data)

    def add(self, info: tarfile.TarInfo, src=None) -> None:
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if src is None or not info.isreg():
            return
        left = info.size
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise BuildFailed(f"{info.name} got shorter while it was packed.",
                                  "Nothing may write into the build folder during a build; build again.")
            self._write(chunk)
            left -= len(chunk)
        if info.size % tarfile.BLOCKSIZE:
            self._write(b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE))

    def add_all(self, entries, mtime: int) -> int:
        """Add `entries` (from `_walk`) with `mtime`; the number of files read."""
        n = 0
        for rel, p, st in entries:
            info = _tarinfo(rel, p, st, mtime)
            if info.isreg():
                with open(p, "rb") as src:
                    self.add(info, src)
                n += 1
            else:
                self.add(info)
        return n


class _Tee:
    """Writes to the tarball (`raw`) and to a kept member file (`out`, may be None), counting
    and hashing what the member is."""

    def __init__(self, raw, out):
        self._raw, self._out = raw, out
        self._h = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._h.update(data)
        self.size += len(data)
        if self._out is not None:
            self._out.write(data)
        return self._raw.write(data)

    def flush(self) -> None:
        pass

    def hexdigest(self) -> str:
        return self._h.hexdigest()


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

    def state(self):
        return self._h.copy()

    def restore(self, state) -> None:
        self._h = state



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


class _Row:
    """The lstat fields the pack reads, from a checked index row (`known_tree`)."""

    __slots__ = ("st_mode", "st_size", "st_mtime_ns", "st_dev", "st_ino")

    def __init__(self, row: tuple):
        if row[0] == "d":
            self.st_mode, self.st_size, self.st_mtime_ns, self.st_dev, self.st_ino = stat.S_IFDIR | 0o755, 0, row[1], 0, 0
        else:
            self.st_dev, self.st_ino, self.st_mode, self.st_size, self.st_mtime_ns = row[1:6]


def _walk(root: Path, include: tuple[str, ...] = (),
          known: Mapping[str, tuple] | None = None) -> list[tuple[str, str, os.stat_result]]:
    """(path relative to `root`, path, lstat) of everything packed, sorted by path; below
    node_modules' top-level folders, the `known` rows when given (see `pack_counted`)."""
    out: list = []
    wanted = [p.strip("/") for p in include]
    top = root.resolve()
    base = str(root) + os.sep
    below: dict[str, list[str]] = {}   # a top-level folder of node_modules -> the known paths under it
    for rel in known or ():
        parts = rel.split("/", 2)
        if len(parts) == 3 and parts[0] == DEPS:
            below.setdefault(parts[1], []).append(rel)

    def chosen(rel: str) -> bool:
        if not wanted:
            return rel.split("/", 1)[0] not in SKIP_TOP
        # A path is packed when it is an included path, inside one, or a folder leading to one.
        return any(rel == w or rel.startswith(w + "/") or w.startswith(rel + "/") for w in wanted)

    def add(rel: str, p: str, st) -> None:
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(p)
            resolved = Path(os.path.dirname(p), target).resolve()
            if os.path.isabs(target) or not resolved.is_relative_to(top):
                raise BuildFailed(
                    f"{p} is a symlink to {target}, outside the build folder.",
                    "Copy the file into the app folder instead: a release must not depend on the build machine.",
                )
        out.append((rel, p, st))

    def visit(folder: str, prefix: str) -> None:
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda e: e.name)
        for e in found:
            rel = prefix + e.name
            if not chosen(rel):
                continue
            p = e.path   # a str: tens of thousands of entries, no Path object each
            if rel in RESERVED:
                raise BuildFailed(
                    f"{p}: the build must not write {rel}; the deploy tool writes that name.",
                    f"Rename it in the build script ({', '.join(RESERVED)} are reserved).",
                )
            st = e.stat(follow_symlinks=False)
            add(rel, p, st)
            if stat.S_ISDIR(st.st_mode):
                rows = below.get(e.name) if prefix == DEPS + "/" and known is not None else None
                if rows is not None and known is not None and known.get(rel, ("",))[0] == "d":
                    for r in rows:
                        if not wanted or chosen(r):
                            add(r, base + r, _Row(known[r]))
                else:
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


def _tarinfo(rel: str, p: str, st: os.stat_result, mtime: int) -> tarfile.TarInfo:
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
