"""Uploads: the artifact over SFTP, bounded (stall and overall timeouts), or only what the
host's base release lacks (a delta: unchanged files hard-linked there, the built tree
verified against the artifact's manifest before it is used)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy.build.artifact import MANIFEST
from deploy.hosts._commands import (DELTA_MISMATCH_EXIT, _p, delta_unpack_command, delta_upload_name,
                                    discard_delta_command, free_space_command)
from deploy.hosts._group import _Host
from deploy.hosts._ssh import STDIN_LIMIT, _connect, _HostError, _run
from deploy.hosts._values import HostState


# ---------------------------------------------------------------- delta uploads

def _delta_base(st: HostState, release_id: str) -> str | None:
    """The release a delta is built from: `current`, else the newest release dir."""
    others = [r for r in st.releases if r != release_id]
    if st.current in others:
        return st.current
    return others[-1] if others else None


@dataclass(frozen=True)
class TreeEntry:
    path: str
    kind: str            # "f" file, "l" symlink, "d" empty directory
    mode: int = 0
    size: int = 0
    sha256: str = ""
    target: str = ""     # a symlink's


def _safe_member(name: str) -> bool:
    parts = name.split("/")
    return (bool(name) and not name.startswith("/") and ".." not in parts and "." not in parts[1:]
            and not any(c in name for c in "\n\r\\\0"))


def artifact_tree(path: str | Path) -> list[TreeEntry] | None:
    """What unpacking the artifact gives, entry by entry (files with mode, size and sha256;
    symlinks; empty dirs); None when a delta cannot describe it (a hard link, a device, a
    name sha256sum or find would print differently).

    From the RELEASE.json that deploy.build.pack writes as the tarball's first member (read
    without decompressing the rest); else from the tarball itself, file by file. A manifest
    that lies about its tarball only costs time: the host checks the tree it builds against
    it, and a mismatch sends the whole tarball."""
    described = _manifest_entries(path)
    return described if described is not None else _scan_tree(path)


def _manifest_entries(path: str | Path) -> list[TreeEntry] | None:
    """The tree the tarball's leading RELEASE.json (deploy.build.pack's) describes, that
    manifest itself first; None when it has none a delta can be planned against."""
    import hashlib
    import tarfile

    with tarfile.open(path, "r:gz") as tar:
        first = tar.next()
        if first is None or not first.isreg() or first.name != MANIFEST:
            return None
        member = tar.extractfile(first)
        if member is None:
            return None
        raw = member.read()
    found = _manifest_tree(raw)
    if found is None:
        return None
    return [TreeEntry(MANIFEST, "f", 0o644, len(raw), hashlib.sha256(raw).hexdigest()), *found]


def _manifest_tree(raw: bytes) -> list[TreeEntry] | None:
    import json

    try:
        data = json.loads(raw.decode("utf-8"))
        files = [TreeEntry(str(f["path"]), "f", int(f["mode"]), int(f["size"]), str(f["sha256"]))
                 for f in data["files"]]
        links = [TreeEntry(str(x["path"]), "l", target=str(x["target"])) for x in data["symlinks"]]
        empty = [TreeEntry(str(d), "d") for d in data["empty_dirs"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None   # an older manifest (no modes, symlinks or folders): read the tarball
    entries = files + links + empty
    if not all(_safe_member(e.path) and "\n" not in e.target for e in entries):
        return None
    if not all(re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.mode in (0o644, 0o755) for e in files):
        return None
    return entries


def _scan_tree(path: str | Path) -> list[TreeEntry] | None:
    import hashlib
    import tarfile

    files: list[TreeEntry] = []
    links: list[TreeEntry] = []
    dirs: set[str] = set()
    with tarfile.open(path, "r:gz") as tar:
        for m in tar:
            name = m.name[2:] if m.name.startswith("./") else m.name
            name = name.rstrip("/")
            if name in ("", "."):
                continue
            if not _safe_member(name):
                return None
            if m.isdir():
                dirs.add(name)
            elif m.isreg():
                h = hashlib.sha256()
                f = tar.extractfile(m)
                assert f is not None, "a regular member has a body"
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                files.append(TreeEntry(name, "f", m.mode & 0o7777 & ~0o022, m.size, h.hexdigest()))
            elif m.issym():
                if "\n" in m.linkname:
                    return None
                links.append(TreeEntry(name, "l", target=m.linkname))
            else:
                return None
    used = {e.path for e in files + links}
    parents = {"/".join(p.split("/")[:i]) for p in used | dirs for i in range(1, p.count("/") + 1)}
    empty = [TreeEntry(d, "d") for d in sorted(dirs - parents) if d not in used]
    return files + links + empty


def tree_lines(entries: Sequence[TreeEntry]) -> str:
    """The sorted `find -printf` lines delta_unpack_command compares the built tree with."""
    out = []
    for e in entries:
        if e.kind == "f":
            out.append(f"f {e.mode:o} {e.size} {e.path}")
        elif e.kind == "l":
            out.append(f"l {e.path} -> {e.target}")
        else:
            out.append(f"d {e.path}")
    return "".join(line + "\n" for line in sorted(out, key=lambda x: x.encode()))


def base_files(manifest_text: bytes) -> dict[str, tuple[str, int, int]]:
    """path -> (sha256, mode, size) of a release's RELEASE.json entries that carry a mode
    (older manifests have none: nothing of theirs is linked)."""
    import json

    try:
        data = json.loads(manifest_text.decode("utf-8"))
        rows = data["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return {}
    out = {}
    for r in rows if isinstance(rows, list) else ():
        try:
            if isinstance(r.get("mode"), int) and isinstance(r.get("size"), int):
                out[str(r["path"])] = (str(r["sha256"]), int(r["mode"]), int(r["size"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return out


def delta_plan(entries: Sequence[TreeEntry], base: Mapping[str, tuple[str, int, int]]) -> tuple[list[str], list[str]]:
    """(paths hard-linked from the base release, file paths sent): a file is linked when the
    base's manifest has the same path with the same sha256, mode and size."""
    linked, sent = [], []
    for e in entries:
        if e.kind != "f":
            continue
        if e.path != MANIFEST and base.get(e.path) == (e.sha256, e.mode, e.size):
            linked.append(e.path)
        else:
            sent.append(e.path)
    return linked, sent


def _links_tar(linked: Sequence[str], release_id: str, base: str) -> bytes:
    """A tar of hard-link members, `.partial-<release_id>/<path>` to `<base>/<path>`, for tar
    to unpack in releases/ (names checked by _safe_member when the tree was read)."""
    import io
    import tarfile

    if not linked:
        return b""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in linked:
            info = tarfile.TarInfo(f".partial-{release_id}/{p}")
            info.type, info.linkname, info.mode = tarfile.LNKTYPE, f"{base}/{p}", 0o644
            tar.addfile(info)
    return buf.getvalue()


def _sum_lines(entries: Sequence[TreeEntry]) -> bytes:
    """`sha256  path` per file, as sha256sum -c reads them."""
    return "".join(f"{e.sha256}  {e.path}\n" for e in entries if e.kind == "f").encode()


class _Delta:
    """One release's delta material, shared by the hosts' threads: the artifact's tree (read
    once), one plan per distinct base manifest and one delta tarball per distinct set of
    files to send."""

    def __init__(self, local: Path):
        import tempfile
        import threading

        self.local = local
        self.lock = threading.Lock()
        self._tree: list[TreeEntry] | None = None
        self._tree_read = False
        self._tars: dict[str, Path] = {}
        self._plans: dict[bytes, tuple[list[str], list[str]] | None] = {}
        self._small: dict[Path, bytes | None] = {}
        self._sums: bytes | None = None
        self._sums_read = False
        self.dir = Path(tempfile.mkdtemp(prefix="occ-delta-"))

    def tree(self) -> list[TreeEntry] | None:
        with self.lock:
            if not self._tree_read:
                self._tree_read = True
                try:
                    self._tree = artifact_tree(self.local)
                except Exception:  # noqa: BLE001 - an unreadable tarball is sent whole, and checked there
                    self._tree = None
            return self._tree

    def plan(self, base_manifest: bytes) -> tuple[list[str], list[str]] | None:
        """`delta_plan` against a base release's RELEASE.json, None when it has no usable
        entries; worked out once per distinct manifest (hosts on the same release share it)."""
        import hashlib

        key = hashlib.sha256(base_manifest).digest()
        with self.lock:
            if key in self._plans:
                return self._plans[key]
        base_map = base_files(base_manifest)
        entries = self.tree() if base_map else None
        found = delta_plan(entries, base_map) if entries else None
        with self.lock:
            self._plans[key] = found
        return found

    def tarball(self, linked: Sequence[str], sent: Sequence[str], release_id: str, base: str) -> Path:
        """`ctl/{links.tar,sums,tree}` + `files/<the sent files, symlinks, empty dirs>`, gzip."""
        import gzip
        import hashlib
        import io
        import tarfile

        key = hashlib.sha256("\0".join((release_id, base, *linked)).encode() + b"\1"
                             + "\0".join(sent).encode()).hexdigest()
        with self.lock:
            if key in self._tars:
                return self._tars[key]
            entries = self._tree or []
            want = set(sent)
            ctl = {
                "links.tar": _links_tar(linked, release_id, base),
                "sums": _sum_lines(entries),
                "tree": tree_lines(entries).encode(),
            }
            out = self.dir / f"{key[:24]}.tar.gz"
            with gzip.GzipFile(out, "wb", compresslevel=6, mtime=0) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as dst, \
                    tarfile.open(self.local, "r:gz") as src:
                for name in ("ctl", "files"):
                    info = tarfile.TarInfo(name)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    dst.addfile(info)
                for name, data in ctl.items():
                    info = tarfile.TarInfo(f"ctl/{name}")
                    info.size, info.mode = len(data), 0o644
                    dst.addfile(info, io.BytesIO(data))
                # Symlinks and empty folders from the tree; files from the tarball, which is
                # read only as far as the last one to send (pack sorts by path).
                for e in entries:
                    if e.kind != "f":
                        info = tarfile.TarInfo(f"files/{e.path}")
                        info.type = tarfile.SYMTYPE if e.kind == "l" else tarfile.DIRTYPE
                        info.mode, info.linkname = (0o777, e.target) if e.kind == "l" else (0o755, "")
                        dst.addfile(info)
                for m in src:
                    if not want:
                        break
                    name = (m.name[2:] if m.name.startswith("./") else m.name).rstrip("/")
                    if m.isreg() and name in want:
                        want.discard(name)
                        m.name = f"files/{name}"
                        dst.addfile(m, src.extractfile(m))
            self._tars[key] = out
            return out

    def sums(self) -> bytes | None:
        """The `sha256  path` lines of the artifact's files for the host's index after a full
        unpack, hashed here from the tarball's own bytes (never taken from its manifest: the
        index must only ever hold sums of bytes that were read); None when the artifact has no
        manifest a delta could be planned against, or the lines would not fit a command's stdin
        (STDIN_LIMIT: known from the manifest's paths before anything is hashed)."""
        with self.lock:
            if not self._sums_read:
                self._sums_read = True
                try:
                    described = _manifest_entries(self.local)
                    if described and len(_sum_lines(described)) <= STDIN_LIMIT:
                        scanned = _scan_tree(self.local)
                        data = _sum_lines(scanned or ())
                        self._sums = data if scanned and len(data) <= STDIN_LIMIT else None
                except Exception:  # noqa: BLE001 - an unreadable tarball is sent whole, and checked there
                    self._sums = None
            return self._sums

    def small(self, tar: Path) -> bytes | None:
        """The bytes of a delta tarball small enough for a command's stdin (STDIN_LIMIT), else None."""
        with self.lock:
            if tar not in self._small:
                self._small[tar] = tar.read_bytes() if tar.stat().st_size <= STDIN_LIMIT else None
            return self._small[tar]

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _prepare_delta(section, h: _Host, delta: _Delta, release_id: str, base: str) -> bool:
    """Send only what releases/<base> lacks and build the release from both, verified on the
    host. False (the caller sends the full artifact) when no delta applies or the built tree
    does not match the manifest; the reason is kept in h.transfer."""
    t = h.t
    # The base's manifest first (read with the state when the base is current; else one SFTP
    # read): a host whose releases carry none (older builds) costs nothing more, and the
    # artifact's tree is not read at all.
    if base == h.known.current:
        # Read with the state (empty: current has no RELEASE.json, so nothing to plan against).
        raw = h.known.manifest.encode("utf-8", "surrogateescape")
    else:
        raw = _sftp_read(section, h, _p(t, "releases", base, MANIFEST)) or b""
    found = delta.plan(raw)
    if found is None:
        return False
    linked, sent = found
    if not linked:
        h.transfer = f"delta from {base}: nothing to link"
        return False
    tar = delta.tarball(linked, sent, release_id, base)
    upload = _p(t, ".uploads", delta_upload_name(release_id))
    data = delta.small(tar)
    if data is None:
        _upload(section, h, tar, upload)
    else:
        h.uploaded += len(data)   # a small delta rides on the command's stdin: no SFTP session
    r = _run(h.conn, t, delta_unpack_command(t, release_id, base, upload if data is None else None,
                                             h.known.current, section.shared_files),
             section, f"building releases/{release_id} from {base}", ok_codes=(0, DELTA_MISMATCH_EXIT), long=True,
             stdin=data or b"")
    if r.exited == DELTA_MISMATCH_EXIT:
        why = " ".join((r.stderr.strip().splitlines() or [""])[1:3])
        h.transfer = f"delta from {base} failed verification ({why[:200]})"
        _run(h.conn, t, discard_delta_command(t, release_id, upload), section, "removing the unverified tree",
             long=True)
        return False
    m = re.search(r"^hashed=(\d+)$", r.stdout, re.M)
    rehashed = max(0, int(m[1]) - len(sent)) if m else len(linked)
    h.transfer = f"delta from {base}: {len(sent)} file(s) sent, {len(linked)} linked ({rehashed} re-hashed)"
    return True


# ---------------------------------------------------------------- SFTP, bounded

def _sftp_client(transport, stall: float):
    """An SFTP session on its own channel, every wait on it bounded by `stall` seconds
    (paramiko's Channel.settimeout covers recv and the send window)."""
    from paramiko import SFTPClient

    chan = transport.open_session(timeout=stall)
    chan.settimeout(stall)
    chan.invoke_subsystem("sftp")
    return SFTPClient(chan)


class _UploadWedged(_HostError):
    """The upload stopped making progress or ran out of time: the connection is unusable."""


def _upload(section, h: _Host, local: Path, upload: str) -> None:
    """SFTP `local` to `upload` on h's host, bounded: a stall (no reply or send window for
    hosts.upload_stall_timeout s) or the whole upload passing hosts.upload_timeout s fails
    with a message naming the host, and the frozen connection is replaced for the cleanup.

    Fabric's `put` has no bound at all (paramiko opens the channel with a 1-hour timeout,
    then waits on SFTP replies forever), so the channel is opened here: its timeout bounds
    every single wait (paramiko's Channel.settimeout covers recv and the send window),
    and a timer closes the transport when the overall deadline passes, which wakes every
    wait that has no timeout of its own (`invoke_subsystem`)."""
    import threading

    t = h.t
    stall = max(1.0, float(section.upload_stall_timeout))
    overall = max(1.0, float(section.upload_timeout))   # two bounds: whichever ends first
    transport = h.conn.transport
    # Keepalives keep NAT and firewall state of a long upload's connection alive.
    transport.set_keepalive(max(1, int(stall // 3)))
    size = local.stat().st_size
    sent = [0]
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        transport.close()

    timer = threading.Timer(overall, expire)
    timer.daemon = True
    timer.start()
    sftp = None
    try:
        sftp = _sftp_client(transport, stall)
        sftp.put(str(local), upload, callback=lambda done, _total: sent.__setitem__(0, done), confirm=True)
        sftp.chmod(upload, local.stat().st_mode & 0o777)    # as Fabric's put(preserve_mode=True) did
        h.uploaded += size
    except Exception as e:  # noqa: BLE001 - SFTP errors are IOError, EOFError, socket.timeout or SSHException
        if expired.is_set():
            why = (f"did not finish within {overall:g}s (hosts.upload_timeout; {sent[0]} of {size} bytes sent)")
        elif isinstance(e, (TimeoutError, socket.timeout)):
            why = (f"stalled: no progress for {stall:g}s after {sent[0]} of {size} bytes "
                   f"(hosts.upload_stall_timeout)")
        else:
            why = ""
        if why:
            _replace_connection(section, h)
            raise _UploadWedged(f"uploading {local.name} to {t.name} {why}: the host or the network froze; "
                                f"check the host, then run again") from None
        raise _HostError(f"uploading {local.name} to {t.name}:{upload} failed: {e}"
                         f"{_space_note(section, h, local, upload)}") from None
    finally:
        timer.cancel()
        if sftp is not None and not expired.is_set():
            try:
                sftp.close()
            except Exception:  # noqa: BLE001
                pass


def _space_note(section, h: _Host, local: Path, upload: str) -> str:
    """Why an upload failed, when the reason is the host's disk (SFTP only says "size mismatch")."""
    try:
        # The partial upload goes first: it is useless and holds the space.
        r = _run(h.conn, h.t, free_space_command(h.t, upload), section, "checking free space")
        free_kb = int(r.stdout.split()[3])
    except Exception:  # noqa: BLE001 - best effort: the upload error is reported either way
        return ""
    need_kb = local.stat().st_size // 1024 + 1
    if free_kb < need_kb * 2:
        return (f" (no space left on device: {free_kb // 1024} MB free under {h.t.deploy_to}, the artifact "
                f"needs {need_kb // 1024 + 1} MB plus room to unpack; free space on the host, then run again)")
    return ""


def _sftp_read(section, h: _Host, remote: str, limit: int = 64 << 20) -> bytes | None:
    """The bytes of `remote` on h's host over SFTP (None when it does not exist or is larger
    than `limit`), bounded like an upload by hosts.upload_stall_timeout."""
    import io

    stall = max(1.0, float(section.upload_stall_timeout))
    sftp = None
    try:
        sftp = _sftp_client(h.conn.transport, stall)
        try:
            if sftp.stat(remote).st_size > limit:
                return None
        except OSError:
            return None
        buf = io.BytesIO()
        sftp.getfo(remote, buf)
        return buf.getvalue()
    except (TimeoutError, socket.timeout):
        _replace_connection(section, h)
        raise _UploadWedged(f"reading {remote} on {h.t.name} stalled for {stall:g}s "
                            "(hosts.upload_stall_timeout): the host or the network froze; check the host, "
                            "then run again") from None
    except Exception as e:  # noqa: BLE001 - SFTP errors: IOError, EOFError, SSHException
        raise _HostError(f"reading {remote} on {h.t.name} failed: {e}") from None
    finally:
        if sftp is not None:
            try:
                sftp.close()
            except Exception:  # noqa: BLE001
                pass


def _replace_connection(section, h: _Host) -> None:
    """Drop a frozen connection and open a fresh one for the cleanup (unlock, remove the
    partial upload); if the host cannot be reached again, the cleanup skips it."""
    try:
        h.conn.close()
    except Exception:  # noqa: BLE001
        pass
    h.conn = None
    try:
        h.conn = _connect(section, h.t)
    except Exception:  # noqa: BLE001 - the upload error is what the table shows
        h.conn = None
