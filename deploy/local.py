"""The `local` environment's release target: Capistrano's layout on this machine.

    <root>/                    settings.local.root, default .deploy/local
      releases/<release id>/   one unpacked artifact per deployment, plus a RELEASE file
      current -> releases/<id> switched atomically (symlink to a temp name, then rename)
      previous                 the release `current` pointed to before the last switch
      revisions.log            one line per switch, as Capistrano writes
      app.pid, app.port        the running app (started from current; the pid leads its own
                               process group, which stop() signals as a whole; app.pid's second
                               line, its start time and boot id, says it is still that process)
      logs/app.log             its output

One root holds the releases of one app (the flows give each app its own root under
[local] root), so `current`, `previous` and an undo only ever name this app's releases.

Why rename and not `ln -sfn`: `ln -sfn` unlinks then creates, so for a moment there is
no `current`; rename(2) replaces the link in one step (Capistrano's
`lib/capistrano/tasks/deploy.rake`, `deploy:symlink:release`, does the same with `mv -T`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build import MANIFEST, Artifact, start_command, start_path, verify
from deploy.config import AppSection
from deploy.errors import BuildFailed, HostFailed, SettingsError
from deploy.redact import reveal
from deploy.smoke import probe

RELEASE_FILE = "RELEASE"
_children: dict[int, subprocess.Popen] = {}   # servers this process started: reaped by stop()


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    url: str              # http://host:port, no trailing slash
    release_id: str | None
    log: Path


# ---------------------------------------------------------------- layout

def ensure_root(root: str | Path) -> Path:
    """Create the layout under `root`, or SettingsError naming the path when it cannot be written."""
    root = proc.ensure_writable(
        Path(root), "the local release folder",
        "Make it writable, or set [local] root in env/local.toml to a folder you can write.")
    try:
        (root / "releases").mkdir(exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
    except OSError as e:
        raise SettingsError(f"{root}: the local release folder cannot be written ({e.strerror or e}).",
                            "Make it writable, or set [local] root in env/local.toml to a folder you can write.") from None
    return root


def place(artifact: Artifact, root: str | Path, release_id: str) -> Path:
    """Unpack `artifact` into `releases/<release_id>` and write its RELEASE file; files
    identical to the previous release's are hard-linked from it (see `place_sharing`)."""
    return place_sharing(artifact, root, release_id).path


@dataclass(frozen=True)
class Placed:
    path: Path
    base: str | None      # the release files were shared with
    linked: int           # files hard-linked from it
    written: int          # files written from the artifact


def place_sharing(artifact: Artifact, root: str | Path, release_id: str) -> Placed:
    """`place`, saying what was shared. An unchanged file costs a directory entry, not its
    bytes (what host deltas and `rsync --link-dest` do): a file is linked from the base
    release (`current`, else the newest other release) only when the artifact's manifest
    and the base's own manifest give it the same path, sha256, mode and size AND the base's
    file still hashes to it (the running app may have written to its release); every other
    file is written new. Nothing is ever written through a link: new files are created
    exclusively, and the tarball's bytes are hashed as they are read and must match its
    manifest, so a linked file is exactly the file the artifact holds."""
    _check_id(release_id)
    root = ensure_root(root)
    verify(artifact)
    target = root / "releases" / release_id
    if target.exists() and current(root) == release_id:
        return Placed(target, None, 0, 0)    # a resumed run placing what is already live: nothing to do
    base = _share_base(root, release_id)
    tmp = Path(tempfile.mkdtemp(prefix=f".{release_id}.", dir=root / "releases"))
    try:
        linked, written = _unpack(Path(artifact.path), tmp, root / "releases" / base if base else None)
        _write_new(tmp / RELEASE_FILE, (release_id + "\n").encode())
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)   # a half-placed earlier attempt; never the live release (checked above)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Placed(target, base if linked else None, linked, written)


def _share_base(root: Path, release_id: str) -> str | None:
    """The release a new one shares files with: `current`, else the newest other release."""
    others = [r for r in releases(root) if r != release_id]
    now = current(root)
    return now if now in others else (others[-1] if others else None)


def _manifest_files(raw: bytes) -> dict[str, tuple[str, int, int]]:
    """path -> (sha256, mode, size) of a RELEASE.json's files ({} when it has none usable)."""
    try:
        rows = json.loads(raw.decode("utf-8"))["files"]
        return {str(r["path"]): (str(r["sha256"]), int(r["mode"]), int(r["size"])) for r in rows}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return {}


def _member_name(m: tarfile.TarInfo) -> str:
    return (m.name[2:] if m.name.startswith("./") else m.name).rstrip("/")


def _unpack(tarball: Path, dest: Path, base: Path | None) -> tuple[int, int]:
    """The tarball into `dest` (empty), sharing what `base` holds unchanged; (linked, written)."""
    with tarfile.open(tarball, "r:gz") as tar:
        first = tar.next()
        files: dict[str, tuple[str, int, int]] = {}
        if first is not None and first.isreg() and _member_name(first) == MANIFEST:
            f = tar.extractfile(first)
            files = _manifest_files(f.read()) if f is not None else {}
        linked = _link_unchanged(files, base, dest) if files and base is not None else set()
        seen = set()
        for m in ([first] if first is not None else []) + list(_rest(tar)):
            name = _member_name(m)
            if not m.isreg():
                # The "data" filter refuses absolute paths, `..`, and links leaving the folder.
                tar.extract(m, dest, filter="data")
                continue
            safe = tarfile.data_filter(m, str(dest))
            src = tar.extractfile(m)
            assert src is not None, "a regular member has a body"
            out = None if name in linked else _create(dest / safe.name)
            h = hashlib.sha256()
            try:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
            finally:
                if out is not None:
                    out.close()
            if out is not None:
                os.chmod(dest / safe.name, safe.mode if safe.mode is not None else 0o644)
                os.utime(dest / safe.name, (safe.mtime, safe.mtime))
            want = files.get(name)
            if files and name != MANIFEST and (want is None or want[0] != h.hexdigest()):
                raise BuildFailed(f"{tarball}: {name} does not match the artifact's {MANIFEST} "
                                  "(the tarball and its manifest disagree).",
                                  "Delete the artifact and build again; never ship one that does not verify.")
            seen.add(name)
        missing = sorted(linked - seen)
        if missing:
            raise BuildFailed(f"{tarball}: {MANIFEST} lists {missing[0]}, which the tarball does not hold.",
                              "Delete the artifact and build again; never ship one that does not verify.")
    return len(linked), len(seen) - len(linked)


def _rest(tar: tarfile.TarFile):
    while (m := tar.next()) is not None:
        yield m


def _link_unchanged(files: Mapping[str, tuple[str, int, int]], base: Path, dest: Path) -> set[str]:
    """Hard-link into `dest` the files of `base` that are byte for byte what `files` wants."""
    try:
        had = _manifest_files((base / MANIFEST).read_bytes())
    except OSError:
        return set()
    linked = set()
    for path, want in files.items():
        if path == MANIFEST or had.get(path) != want or not _safe_path(path):
            continue
        src = base / path
        if not _holds(base, path, *want):
            continue
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        before = os.lstat(src)
        os.link(src, dest / path, follow_symlinks=False)
        after = os.lstat(dest / path)
        if (after.st_ino, after.st_size, after.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            os.unlink(dest / path)   # changed while it was checked: written new instead
            continue
        linked.add(path)
    return linked


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and "" not in parts and "\0" not in path


def _holds(base: Path, rel: str, sha256: str, mode: int, size: int) -> bool:
    """`base/rel` is a regular file (not a link to one, nor under a linked folder of `base`)
    with this mode and size whose bytes hash to sha256."""
    path = base / rel
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode or st.st_size != size:
            return False
        parts = rel.split("/")[:-1]
        if any(stat.S_ISLNK(os.lstat(base.joinpath(*parts[:i + 1])).st_mode) for i in range(len(parts))):
            return False
        h = hashlib.sha256()
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == sha256
    except OSError:
        return False


def _create(path: Path):
    """A new file at `path`, opened for writing: never an existing file or link (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb")


def _write_new(path: Path, data: bytes) -> None:
    """Write `path` as a new file, unlinking whatever was there (never writing through a link)."""
    path.unlink(missing_ok=True)
    with _create(path) as f:
        f.write(data)
    path.chmod(0o644)


def switch(root: str | Path, release_id: str) -> str | None:
    """Point `current` at `releases/<release_id>` atomically; returns the previous release id."""
    root = Path(root)
    _check_id(release_id)
    if not (root / "releases" / release_id).is_dir():
        raise SettingsError(
            f"Release {release_id} is not in {root / 'releases'}.",
            f"Known releases: {', '.join(releases(root)) or '(none)'}.",
        )
    before = current(root)
    tmp = root / f".current.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(Path("releases") / release_id, tmp)   # relative: the tree can be moved as a whole
    os.replace(tmp, root / "current")
    if before and before != release_id:
        _write(root / "previous", before + "\n")
    with open(root / "revisions.log", "a", encoding="utf-8") as log:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.write(f"{stamp} switched current from {before or '-'} to {release_id}\n")
    return before


def current(root: str | Path) -> str | None:
    """The release id `current` points to, or None."""
    link = Path(root) / "current"
    try:
        return Path(os.readlink(link)).name
    except (FileNotFoundError, OSError):
        return None


def previous(root: str | Path) -> str | None:
    """The release that was current before the last switch (rollback target), if still present."""
    try:
        rid = (Path(root) / "previous").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return rid if rid and (Path(root) / "releases" / rid).is_dir() else None


def releases(root: str | Path) -> list[str]:
    """Placed release ids, oldest first (ids start with a UTC timestamp)."""
    d = Path(root) / "releases"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def prune(root: str | Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` releases, never `current` or `previous`; returns what was removed."""
    if keep < 1:
        raise SettingsError(f"keep_releases = {keep}: at least 1 release must be kept.", "Use local.keep_releases >= 1.")
    root = Path(root)
    protected = {current(root), previous(root)}
    all_ids = releases(root)
    doomed = [r for r in all_ids[:-keep] if r not in protected]
    for rid in doomed:
        shutil.rmtree(root / "releases" / rid)
    for stale in (root / "releases").glob(".*"):   # temp folders of interrupted place() calls
        shutil.rmtree(stale, ignore_errors=True)
    return doomed


def remove(root: str | Path, release_id: str) -> bool:
    """Delete `releases/<release_id>` (the undo of `place`); refuses the live release."""
    _check_id(release_id)
    root = Path(root)
    if current(root) == release_id:
        raise SettingsError(
            f"Release {release_id} is current in {root}; it cannot be removed.",
            "Switch to another release first (invoke rollback --env=local).",
        )
    target = root / "releases" / release_id
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


def _check_id(release_id: str) -> None:
    if not release_id or "/" in release_id or release_id in (".", "..") or release_id.startswith("."):
        raise SettingsError(f"{release_id!r} is not a valid release id.", "Release ids look like 20240105093000-abc1234.")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- server

MARKER = "DEPLOY_LOCAL_ROOT"   # in the app's environment: which release root started it


def start(
    root: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app: AppSection | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerInfo:
    """Start the release `current` points at with the `[app]` contract's start command
    (cwd = the release folder, the port in `app.port_var`) and wait until `app.health_path`
    answers 2xx/3xx, for at most `timeout` (default `app.ready_timeout`) seconds.

    `port=0` picks a free port (the last one used, when it is still free, so the URL stays
    put across releases). The app's environment is explicit: the minimal base (PATH, HOME,
    locale...), `env` (DATABASE_URL, the runtime_env values), HOST and the port; nothing else
    of this process's environment."""
    app = app or AppSection()
    timeout = app.ready_timeout if timeout is None else timeout
    root = ensure_root(root)
    rid = current(root)
    if rid is None:
        raise SettingsError(f"{root}/current does not exist: no release to start.", "Deploy first: invoke promote --to=local.")
    running = status(root, host)
    if running is not None:
        raise SettingsError(
            f"The local app is already running (pid {running.pid}, {running.url}).",
            "Use restart, or stop it first: invoke app.stop --env=local.",
        )
    release_dir = (root / "current").resolve()
    argv = start_command(app, release_dir)
    child_env = {k: reveal(v) for k, v in proc.child_env(os.environ, (), env).items()}
    child_env["PATH"] = start_path(release_dir, child_env.get("PATH", os.defpath))
    exe = proc.which(argv[0], path=child_env["PATH"]) if os.sep not in argv[0] else argv[0]
    port = _choose_port(root, host, port)
    child_env.update({"HOST": host, app.port_var: str(port), MARKER: str(root.resolve())})
    log_path = root / "logs" / "app.log"
    with open(log_path, "ab") as log:
        log.write(f"--- {datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} starting {rid} on {host}:{port}\n".encode())
        log.flush()
        p = subprocess.Popen(
            [exe, *argv[1:]], cwd=release_dir, env=child_env,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            # Its own session and process group: it outlives `invoke promote`, Ctrl-C in the
            # terminal does not reach it, and stop() signals the whole group (sh -c, node...).
            start_new_session=True,
        )
    _children[p.pid] = p
    # The pid, then what makes it this process and no later one with the same number.
    _write(root / "app.pid", f"{p.pid}\n{_identity(p.pid) or ''}\n")
    _write(root / "app.port", f"{port}\n")
    url = f"http://{_url_host(host)}:{port}"
    health = url + app.health_path
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        last = _probe(health)
        if not last:
            return ServerInfo(p.pid, port, url, rid, log_path)
        time.sleep(0.05)
    why = (f"exited with code {p.returncode}" if p.poll() is not None
           else f"did not answer {health} with 2xx/3xx within {timeout:g}s (last: {last})")
    stop(root)
    raise HostFailed(
        f"The local app (release {rid}, `{' '.join(argv)}`) {why}. Last lines of {log_path}:\n{_tail(log_path)}",
        ("If the log names a variable the app needs, give it a value in env/local.env, or env/local.local.env "
         "for a secret (`invoke env.check --env=local` lists what the app gets); else fix the app or its [app] "
         "start; " if why.startswith("exited") else
         f"If the app is up but answers {app.health_path} with an error, set [app] health_path in "
         "env/<env>.toml to a path it answers with 2xx/3xx (e.g. /healthz); else fix the app, its [app] start "
         "or the port; ")
        + "a failed promotion goes back to the app's previous release by itself.",
    )


def stop(root: str | Path, timeout: float = 5.0) -> bool:
    """Stop the app in the pidfile (its whole process group: TERM, then KILL); True if one
    was running. Safe to call twice."""
    root = Path(root)
    pid, ident = _read_pidfile(root / "app.pid")
    stopped = False
    if pid and _ours(pid, root, ident):
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid) and time.monotonic() < deadline + 2:
                time.sleep(0.02)
        stopped = True
    if pid in _children:
        try:
            _children.pop(pid).wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    (root / "app.pid").unlink(missing_ok=True)
    return stopped


def restart(
    root: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app: AppSection | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerInfo:
    """Stop whatever runs, then start `current` (on the same port when `port` is 0 and it is free)."""
    stop(root)
    return start(root, host, port, app=app, timeout=timeout, env=env)


def status(root: str | Path, host: str = "127.0.0.1") -> ServerInfo | None:
    """The running app per the pidfile, or None (a stale pidfile, or a pid now used by a
    process this root did not start, counts as not running)."""
    root = Path(root)
    pid, ident = _read_pidfile(root / "app.pid")
    if not pid or not _ours(pid, root, ident):
        return None
    port = _read_int(root / "app.port") or 0
    release = None
    try:
        release = (Path(f"/proc/{pid}/cwd").resolve() / RELEASE_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        pass
    return ServerInfo(pid, port, f"http://{_url_host(host)}:{port}", release, root / "logs" / "app.log")


def _identity(pid: int) -> str | None:
    """`<start time> <boot id>` of a process: its start (field 22 of /proc/PID/stat, clock
    ticks since boot, fixed at fork) on this boot. No other process, before or after a reboot,
    has both. None where /proc does not say (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{stat.rsplit(')', 1)[1].split()[19]} {boot}"
    except (OSError, IndexError):
        return None


def _read_pidfile(path: Path) -> tuple[int | None, str | None]:
    """(pid, identity) of app.pid; identity None for a pidfile written before it had one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return int(lines[0].strip()), (lines[1].strip() if len(lines) > 1 and lines[1].strip() else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _ours(pid: int, root: Path, ident: str | None = None) -> bool:
    """`pid` is alive and is the app this root started: it leads its own process group (we
    start it with a new session) and it is the very process the pidfile recorded (same start
    time, same boot). A pidfile without that record (written before it was kept) is trusted
    only when the process carries this root in its environment, read from /proc. A recycled pid, or one from before a reboot, belongs to someone else and is
    never signalled."""
    if pid <= 1:
        return False
    if pid in _children and _children[pid].poll() is not None:
        return False
    if not proc.pid_alive(pid):
        return False
    try:
        if os.getpgid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    if ident is not None:
        return _identity(pid) == ident
    # Where a process runs proves nothing (a shell in a release folder leads its group too);
    # the marker in an environment that can be read is what the toolkit put there.
    here = Path(root).resolve()
    try:
        marker = f"{MARKER}={here}".encode()
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """Any process of the group is left (zombies of our own child are reaped here)."""
    child = _children.get(pgid)
    if child is not None:
        child.poll()
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) succeeds while only zombies remain; the leader's own state decides then.
    return proc.pid_alive(pgid) or _group_has_live_member(pgid)


def _group_has_live_member(pgid: int) -> bool:
    return bool(proc.group_members(pgid))


def _choose_port(root: Path, host: str, port: int) -> int:
    if port:
        if not _port_free(host, port):
            raise SettingsError(
                f"Port {port} on {host} is already in use, so the local app cannot listen there.",
                "Stop what uses it, or set [local] port = 0 in env/local.toml to pick a free port.",
            )
        return port
    last = _read_int(root / "app.port")
    if last and _port_free(host, last):
        return last
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    # SO_REUSEADDR as Node sets it: a port with only TIME_WAIT leftovers from our own
    # previous server is free for Node, so it must be free for this probe too.
    with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise SettingsError(f"Cannot use {host}:{port}: {e.strerror}.", "Check [local] host in env/local.toml.") from None
    return True


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _probe(url: str) -> str:
    return probe(url, timeout=1.0)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 15) -> str:
    """The last lines of the log since its last start marker: an earlier start's failure is
    not this one's cause."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    starts = [i for i, ln in enumerate(text) if ln.startswith("--- ") and " starting " in ln]
    return "\n".join(text[starts[-1] if starts else 0:][-lines:])

