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
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build import Artifact, start_command, start_path, verify
from deploy.config import AppSection
from deploy.errors import HostFailed, SettingsError
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
    """Unpack `artifact` into `releases/<release_id>` and write its RELEASE file."""
    _check_id(release_id)
    root = ensure_root(root)
    verify(artifact)
    target = root / "releases" / release_id
    if target.exists() and current(root) == release_id:
        return target    # a resumed run placing what is already live: nothing to do
    tmp = Path(tempfile.mkdtemp(prefix=f".{release_id}.", dir=root / "releases"))
    try:
        with tarfile.open(artifact.path, "r:gz") as tar:
            # The "data" filter refuses absolute paths, `..`, and links leaving the folder.
            tar.extractall(tmp, filter="data")
        (tmp / RELEASE_FILE).write_text(release_id + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)   # a half-placed earlier attempt; never the live release (checked above)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


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

