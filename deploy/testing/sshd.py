"""Real `sshd` hosts on 127.0.0.1 for tests and benchmarks.

`SshdFarm` starts N `sshd -D` processes, each on a free loopback port with its own
generated host key and its own host root directory (that host's "disk"). One client
key logs in to all of them, and a known_hosts file lists every host key as
`[127.0.0.1]:PORT`, so clients CHECK host keys instead of adding them.

Who logs in: when the tests run as root, hosts are logged in to as a dedicated
unprivileged user (`occdeploy`, created with useradd on first use), because root
ignores file modes and a "read-only deploy path" test must really be refused.
Otherwise the current user logs in (a non-root sshd can only authenticate itself).

Fixtures (loaded as a pytest plugin by tests/conftest.py):
- `sshd_farm`: one farm per test session; fails (does not skip) when sshd is missing.
- `sshd_hosts`: a factory, `sshd_hosts(n) -> list[SshHost]`, handing out n hosts of
  the session farm with fresh, empty host roots; processes a test started on a host
  (pid files under its root) are killed and the roots wiped after the test.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.build import Artifact, pack
from deploy.config import HostsSection

LOGIN_USER = "occdeploy"


class SshdMissing(RuntimeError):
    pass


class _Exited(RuntimeError):
    pass


@dataclass(frozen=True)
class SshHost:
    """One running sshd: where to connect, as whom, with which key, and its disk."""

    name: str
    host: str
    port: int
    user: str
    root: Path           # this host's disk: deploy paths for it live under here
    key_file: Path       # client private key
    known_hosts: Path    # lists every farm host's key as [127.0.0.1]:PORT

    @property
    def address(self) -> str:
        """`user@host:port`, the form env/*.toml lists hosts in."""
        return f"{self.user}@{self.host}:{self.port}"

    def write(self, rel: str, text: str, mode: int = 0o644) -> Path:
        """Create a file on this host's disk (parents too), owned by the login user."""
        path = self.root / rel
        owner = self.root.stat()
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        for p in (path, *missing):
            os.chown(p, owner.st_uid, owner.st_gid)
        return path

    def known_hosts_line(self) -> str:
        """This host's line of the farm's known_hosts (`[127.0.0.1]:PORT keytype key`)."""
        prefix = f"[{self.host}]:{self.port} "
        return next(ln for ln in self.known_hosts.read_text().splitlines() if ln.startswith(prefix))

    def connect_kwargs(self) -> dict:
        return {"key_filename": str(self.key_file), "look_for_keys": False, "allow_agent": False}

    def connection(self, timeout: float = 10.0):
        """An open-able Fabric Connection that rejects unknown host keys."""
        from fabric import Connection
        from paramiko import RejectPolicy

        c = Connection(self.host, user=self.user, port=self.port, connect_timeout=timeout,
                       connect_kwargs=self.connect_kwargs())
        c.client.load_host_keys(str(self.known_hosts))
        c.client.set_missing_host_key_policy(RejectPolicy())
        return c


def find_sshd() -> str:
    for cand in ("/usr/sbin/sshd", shutil.which("sshd") or ""):
        if cand and os.access(cand, os.X_OK):
            # sshd refuses to re-exec itself from a relative path.
            return os.path.abspath(cand)
    raise SshdMissing(
        "`sshd` was not found (/usr/sbin/sshd or PATH). The host tests need a real SSH server: "
        "apt-get install -y openssh-server (Debian/Ubuntu)."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_login_user() -> pwd.struct_passwd:
    """The account hosts are logged in to: a created unprivileged user under root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(LOGIN_USER)
    except KeyError:
        pass
    # Parallel test workers (pytest -n) may get here at once: one creates the user, the
    # others wait on the lock and then find it.
    with _machine_lock("occ-deploy-useradd"):
        try:
            return pwd.getpwnam(LOGIN_USER)
        except KeyError:
            pass
        # `-p '*'`: no password, but not "locked" ('!'), which sshd refuses without PAM.
        p = subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", LOGIN_USER], capture_output=True, text=True)
        try:
            return pwd.getpwnam(LOGIN_USER)
        except KeyError:
            raise RuntimeError(f"could not create the sshd login user {LOGIN_USER}: {p.stderr.strip()}") from None


@contextlib.contextmanager
def _machine_lock(name: str):
    """An exclusive lock on this machine (flock on <tmp>/<name>.lock), held for the block."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / f"{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)


class SshdFarm:
    """N sshd processes on loopback sharing one client key and one known_hosts file."""

    def __init__(self, n: int = 1, base_dir: str | Path | None = None):
        self.sshd = find_sshd()
        if not shutil.which("ssh-keygen"):
            raise SshdMissing("`ssh-keygen` was not found; apt-get install -y openssh-client.")
        self.account = _ensure_login_user()
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="occ-sshd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the login user must reach its host roots below
        self.key_file = self.dir / "client_key"
        _keygen(self.key_file, "occ-deploy-tests")
        self.authorized_keys = self.dir / "authorized_keys"
        shutil.copy(self.key_file.with_suffix(".pub"), self.authorized_keys)
        os.chmod(self.authorized_keys, 0o644)
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.touch()
        self.hosts: list[SshHost] = []
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._names = (f"host{i}" for i in itertools.count())
        if os.geteuid() == 0:
            # Privilege separation directory that Debian's unit normally creates.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        atexit.register(self.stop)
        self.grow(n)

    def grow(self, n: int) -> list[SshHost]:
        """Ensure at least n hosts run (started in parallel); returns the first n."""
        with self._lock:
            missing = n - len(self.hosts)
            if missing > 0:
                started = [self._spawn(next(self._names)) for _ in range(missing)]
                for host, proc, log in started:
                    for attempt in range(5):
                        try:
                            self._wait_ready(host, proc, log)
                            break
                        except _Exited:
                            # Most likely the free port was taken meanwhile: try another one.
                            if attempt == 4:
                                raise
                            host, proc, log = self._spawn(host.name, fresh=False)
                    host.root.mkdir(parents=True)
                    os.chmod(host.root.parent, 0o755)
                    if os.geteuid() == 0:
                        os.chown(host.root, self.account.pw_uid, self.account.pw_gid)
                    self._procs[host.port] = proc
                    self.hosts.append(host)
                with self.known_hosts.open("w") as f:
                    for h in self.hosts:
                        key = (self.dir / h.name / "host_key.pub").read_text().split()
                        f.write(f"[{h.host}]:{h.port} {key[0]} {key[1]}\n")
            return self.hosts[:n]

    def _spawn(self, name: str, fresh: bool = True):
        hdir = self.dir / name
        if fresh:
            hdir.mkdir()
            _keygen(hdir / "host_key", name)
        port = _free_port()
        # Roots are named by port so one settings template (`{port}`) reaches every host's disk.
        root = self.dir / "roots" / str(port)
        cfg = hdir / "sshd_config"
        cfg.write_text(
            "\n".join([
                f"ListenAddress 127.0.0.1:{port}",
                f"HostKey {hdir / 'host_key'}",
                f"PidFile {hdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                f"AllowUsers {self.account.pw_name}",
                # Keys live under a temp dir that root owns; the modes are ours to choose.
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin no",
                # A release opens a few channels per host at once; a benchmark many hosts.
                "MaxSessions 64",
                "MaxStartups 200",
                "UseDNS no",
                # Hosts also serve as ProxyJump gateways (direct-tcpip channels) in tests.
                "AllowTcpForwarding yes",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
                "",
            ])
        )
        log = hdir / "sshd.log"
        proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=log.open("ab"), start_new_session=True)
        host = SshHost(name=name, host="127.0.0.1", port=port, user=self.account.pw_name, root=root,
                       key_file=self.key_file, known_hosts=self.known_hosts)
        return host, proc, log

    def _wait_ready(self, host: SshHost, proc: subprocess.Popen, log: Path) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise _Exited(f"sshd for {host.name} exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with socket.create_connection((host.host, host.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd for {host.name} did not answer on port {host.port}: {log.read_text()[-2000:]}")

    def deploy_to(self, sub: str = "srv/occ") -> str:
        """A `hosts.deploy_to` template that resolves to `<host root>/<sub>` on every farm host."""
        return f"{self.dir}/roots/{{port}}/{sub}"

    def hosts_section(self, hosts: list[SshHost], **overrides):
        """`HostsSection` settings that target `hosts` with this farm's key and known_hosts."""
        values: dict[str, Any] = dict(hosts=tuple(h.address for h in hosts), user=hosts[0].user, key_file=str(self.key_file),
                      known_hosts=str(self.known_hosts), deploy_to=self.deploy_to(), connect_timeout=5.0)
        values.update(overrides)
        return HostsSection(**values)

    def reset(self, host: SshHost) -> None:
        """Kill what a test started on `host` (its sessions and their commands, and what pid
        files under its root name) and wipe its disk: the next test gets a host with nothing
        left running from this one (a killed client's hook, a port still held)."""
        proc = self._procs.get(host.port)
        for pid in _descendants(proc.pid) if proc else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pidfile in glob.glob(str(host.root / "**" / "*.pid"), recursive=True):
            try:
                # The supervisor's run/app.pid has the pid on its first line, then its start
                # time, boot id and token: read the first word, or the app outlives the test.
                pid = int((Path(pidfile).read_text().split() or ["0"])[0])
            except (OSError, ValueError):
                continue
            if pid > 1:
                # The supervisor's pid leads the app's process group (setsid): kill the group
                # too, or the node below a `sh -c` start command outlives the test.
                kills = (os.killpg, os.kill) if pid != os.getpgrp() else (os.kill,)
                for kill in kills:
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        # A test may have made parts read-only; give them back before wiping.
        for dirpath, dirnames, _ in os.walk(host.root):
            for d in dirnames:
                try:
                    os.chmod(os.path.join(dirpath, d), 0o755)
                except OSError:
                    pass
        for child in host.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        os.chmod(host.root, 0o755)

    def stop_host(self, host: SshHost) -> None:
        """Stop one host's sshd (an "unreachable host"); it stays in `hosts`."""
        proc = self._procs.pop(host.port, None)
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def drop(self, host: SshHost) -> None:
        """Kill the host's sshd and every session it serves: open connections break, as when a
        machine loses its network (stop_host alone keeps established sessions alive)."""
        proc = self._procs.get(host.port)
        victims = _descendants(proc.pid) if proc else []
        self.stop_host(host)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def bring_back(self, host: SshHost) -> None:
        """Start a dropped host's sshd again with its own config, key and port."""
        cfg = self.dir / host.name / "sshd_config"
        log = self.dir / host.name / "sshd.log"
        proc = subprocess.Popen([self.sshd, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                stderr=log.open("ab"), start_new_session=True)
        self._wait_ready(host, proc, log)
        self._procs[host.port] = proc

    @contextlib.contextmanager
    def frozen_sessions(self, host: SshHost):
        """While active, every open SSH session on `host` is frozen (its sshd session
        processes SIGSTOPped: a host that hangs with the connection up; the client's
        commands get no reply). New connections are still accepted. On exit the frozen
        processes are killed."""
        listener = self._procs[host.port].pid
        parents = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            comm = text[text.index("(") + 1:text.rindex(")")]
            parents[int(stat.parent.name)] = (int(text.rsplit(")", 1)[1].split()[1]), comm)

        def below(pid: int) -> bool:
            while pid > 1:
                pid = parents.get(pid, (0, ""))[0]
                if pid == listener:
                    return True
            return False

        frozen = [pid for pid, (_, comm) in parents.items() if comm.startswith("sshd") and below(pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield frozen
        finally:
            for pid in frozen:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    @contextlib.contextmanager
    def frozen_uploads(self, host: SshHost, after_bytes: int = 512):
        """While active, an SFTP session on `host` freezes mid-transfer: once the client has
        sent `after_bytes`, the host's sshd session process serving it is SIGSTOPped (a host
        that hangs in the middle of an upload; the client sees no reply and no window).
        New connections and commands still work. On exit the frozen processes are killed
        and the host serves SFTP normally again.

        How: this host's sshd runs its sftp subsystem through FREEZE_SFTP (a proxy in front
        of the real sftp-server) until the context ends; the config is swapped with SIGHUP,
        which makes sshd re-exec itself with the new config."""
        hdir = self.dir / host.name
        cfg = hdir / "sshd_config"
        wrapper = hdir / "freeze_sftp.py"
        wrapper.write_text(FREEZE_SFTP)
        wrapper.chmod(0o644)
        normal = cfg.read_text()
        frozen = normal.replace("Subsystem sftp internal-sftp",
                                f"Subsystem sftp /usr/bin/env python3 {wrapper} {int(after_bytes)} {host.root}")
        assert frozen != normal, "unexpected sshd_config"
        self._reload(host, cfg, frozen)
        try:
            yield host
        finally:
            for name in ("frozen-sshd.pid", "freeze-proxy.pid"):
                pidfile = host.root / name
                try:
                    os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            self._reload(host, cfg, normal)

    def _reload(self, host: SshHost, cfg: Path, text: str) -> None:
        """Write `cfg` and make the host's sshd re-exec with it; return once the new
        listener (a new socket: another inode) accepts connections."""
        proc = self._procs[host.port]
        before = _listen_inode(host.port)
        cfg.write_text(text)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = _listen_inode(host.port)
            if now is not None and now != before:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"sshd for {host.name} exited on reload ({proc.returncode})")
            time.sleep(0.02)
        raise RuntimeError(f"sshd for {host.name} did not come back after reload")

    def stop(self, remove: bool = True) -> None:
        """Kill every sshd this farm started and, by default, delete its directory."""
        for port, proc in list(self._procs.items()):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            self._procs.pop(port, None)
        for h in self.hosts:
            if h.root.exists():
                self.reset(h)
        if remove and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _listen_inode(port: int) -> str | None:
    """The inode of the socket listening on 127.0.0.1:`port` (from /proc/net/tcp)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for ln in lines:
        f = ln.split()
        if len(f) > 9 and f[1] == want and f[3] == "0A":
            return f[9]
    return None


# The sftp subsystem of a host in `frozen_uploads`: the real sftp-server behind a proxy
# that forwards the client's bytes until `after` of them passed, then SIGSTOPs the sshd
# session process above it (pid in <root>/frozen-sshd.pid) and stops forwarding.
FREEZE_SFTP = r'''
import os, signal, subprocess, sys

after, root = int(sys.argv[1]), sys.argv[2]
server = next(p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server",
                          "/usr/libexec/sftp-server") if os.path.exists(p))
child = subprocess.Popen([server], stdin=subprocess.PIPE)
with open(os.path.join(root, "freeze-proxy.pid"), "w") as f:
    f.write(str(os.getpid()))


def sshd_session():
    pid = os.getppid()
    while pid > 1:
        with open("/proc/%d/comm" % pid) as f:
            if f.read().startswith("sshd"):
                return pid
        with open("/proc/%d/stat" % pid) as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise SystemExit("no sshd above the sftp proxy")


seen = 0
while True:
    data = os.read(0, 65536)
    if not data:
        break
    take = data[:max(0, after - seen)] if seen + len(data) >= after else data
    child.stdin.write(take)
    child.stdin.flush()
    seen += len(data)
    if seen >= after:
        pid = sshd_session()
        with open(os.path.join(root, "frozen-sshd.pid"), "w") as f:
            f.write(str(pid))
        os.kill(pid, signal.SIGSTOP)
        while True:
            signal.pause()
child.stdin.close()
sys.exit(child.wait())
'''


def ssh_home(home: str | Path, farm: "SshdFarm", config: str, files: dict[str, str] | None = None) -> Path:
    """A HOME with a real `~/.ssh/config` (`config`, where `{key}` is the farm's client key
    copied to ~/.ssh/id_deploy and `{ssh}` the ~/.ssh folder) and `files` (name -> text)
    written in ~/.ssh, with the modes ssh expects. Point a child's HOME at it."""
    home = Path(home)
    ssh = home / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    os.chmod(ssh, 0o700)
    key = ssh / "id_deploy"
    shutil.copy(farm.key_file, key)
    os.chmod(key, 0o600)
    for name, text in (files or {}).items():
        (ssh / name).write_text(text)
        os.chmod(ssh / name, 0o600)
    (ssh / "config").write_text(config.replace("{key}", str(key)).replace("{ssh}", str(ssh)))
    os.chmod(ssh / "config", 0o600)
    return home


# ---------------------------------------------------------------- test artifacts

# The restart hook of the test app, following examples/app's contract: run with cwd =
# <deploy_to>/current, (re)start the server from there on shared/.env's PORT, pid in
# shared/app.pid, exit 0 once it answers. Here the "app" is http.server serving the
# release dir, so GET /RELEASE names the release that is live.
RESTART_SCRIPT = r'''#!/usr/bin/env python3
import os, signal, socket, subprocess, sys, time, urllib.request

here = os.getcwd()  # the physical releases/<id> that `current` pointed at
shared = os.path.join(os.path.dirname(os.path.dirname(here)), "shared")
env = dict(l.split("=", 1) for l in open(os.path.join(shared, ".env")).read().splitlines() if "=" in l)
port = int(env["PORT"])
pidfile = os.path.join(shared, "app.pid")
try:
    os.kill(int(open(pidfile).read().strip()), signal.SIGKILL)
except (OSError, ValueError):
    pass
deadline = time.time() + 10
while True:  # the old server's socket is gone once its port binds again
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.close()
        break
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit(f"port {port} stays busy")
        time.sleep(0.02)
log = open(os.path.join(shared, "app.log"), "ab")
p = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", here],
                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
open(pidfile, "w").write(str(p.pid))
want = open(os.path.join(here, "RELEASE")).read().strip()
while time.time() < deadline:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{port}/RELEASE", timeout=1).read().decode().strip() == want:
            sys.exit(0)
    except OSError:
        pass
    if p.poll() is not None:
        sys.exit(f"server exited ({p.returncode})")
    time.sleep(0.02)
sys.exit("server did not answer within 10s")
'''


def make_artifact(out_dir: str | Path, release_id: str, *, files: dict[str, str] | None = None,
                  padding_bytes: int = 0):
    """A release tarball like deploy.build makes: the app at the top level, bin/restart
    (RESTART_SCRIPT), index.html, and optionally `padding_bytes` of incompressible data."""
    import hashlib
    import io
    import tarfile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{release_id}.tar.gz"
    content = {"bin/restart": RESTART_SCRIPT, "index.html": f"<h1>{release_id}</h1>\n", **(files or {})}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in content.items():
            data = text.encode() if isinstance(text, str) else text
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("bin/") else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        if padding_bytes:
            data = os.urandom(padding_bytes)
            info = tarfile.TarInfo("assets/blob.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return Artifact(path=path, sha256=sha, release_id=release_id, git_sha="0" * 40, built_at="2024-01-01T00:00:00Z")


def packed_artifact(out_dir: str | Path, release_id: str, *, files: dict[str, str | bytes] | None = None,
                    padding_bytes: int = 0, seed: int = 0):
    """Like `make_artifact`, but packed by deploy.build.pack itself (normalised tarball with a
    RELEASE.json manifest listing path, sha256, size and mode), so hosts can take it as a
    delta. `padding_bytes` of data fixed by `seed` go to assets/blob.bin: the same seed in
    two releases is an unchanged file."""
    import random

    out_dir = Path(out_dir)
    src = out_dir / f"src-{release_id}"
    if src.exists():
        shutil.rmtree(src)
    content: dict[str, str | bytes] = {"bin/restart": RESTART_SCRIPT, "index.html": f"<h1>{release_id}</h1>\n",
                                       **(files or {})}
    if padding_bytes:
        content["assets/blob.bin"] = random.Random(seed).randbytes(padding_bytes)
    for name, data in content.items():
        f = src / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data.encode() if isinstance(data, str) else data)
        f.chmod(0o755 if name.startswith("bin/") else 0o644)
    art = pack(src, out_dir, git_sha="0" * 40, built_at="2024-01-01T00:00:00Z", release_id=release_id)
    shutil.rmtree(src)
    return art


# ---------------------------------------------------------------- pytest fixtures

@pytest.fixture(scope="session")
def sshd_farm():
    farm = SshdFarm(1)
    yield farm
    farm.stop()


@pytest.fixture
def sshd_hosts(sshd_farm):
    """`sshd_hosts(n)`: n real hosts with fresh, empty roots; cleaned after the test.

    A test that stops a host (farm.stop_host) gets a replacement started for the next test.
    """
    handed: list[SshHost] = []

    def make(n: int = 1) -> list[SshHost]:
        hosts = sshd_farm.grow(n)
        for h in hosts:
            if h.port not in sshd_farm._procs:
                _replace(sshd_farm, h)
        hosts = sshd_farm.grow(n)
        for h in hosts:
            if h not in handed:
                sshd_farm.reset(h)
                handed.append(h)
        return hosts

    yield make
    for h in handed:
        sshd_farm.reset(h)


def _replace(farm: SshdFarm, dead: SshHost) -> None:
    """Drop a stopped host from the farm so grow() starts a fresh one in its place."""
    with farm._lock:
        farm.hosts = [h for h in farm.hosts if h.port != dead.port]
