"""SSH connections: strict host keys (the known hosts files ssh would read, revoked keys
refused), ProxyJump gateways under the same rule, and one bounded exec per command.
Fabric and paramiko are imported inside the functions (`invoke --list` stays light)."""

from __future__ import annotations

import atexit
import getpass
import os
import socket
import threading
import time
from dataclasses import dataclass

from invoke.exceptions import CommandTimedOut

from deploy.hosts._targets import _ADDRESS, known_hosts_files, parse_known_hosts
from deploy.hosts._values import Target
from deploy.proc import echo, explain


class _HostError(Exception):
    """A step failed on one host; the message names what and is shown in the table."""


def _connect(section, t: Target, config=None, *, run: str = ""):
    """An open Fabric Connection that refuses unknown, changed or revoked host keys:
    the known hosts files ssh would read for the host (or hosts.known_hosts), and the
    same rule for every ProxyJump gateway on the way (Fabric's own gateways add
    unknown keys). HostName, IdentityFile, ProxyCommand come from ssh_config.
    `run`: the connection belongs to that run (the one its earlier operation gave back, when
    still usable; see RUN_IDLE_SECONDS); end its use with `_give_back`."""
    if run:
        key = (run, _host_key(section, t))
        conn = _take_kept(key)
        if conn is None:
            conn = _connect(section, t, config)
            # On the instance itself: Fabric's Connection stores other attributes in its
            # config, which the hosts of one operation share.
            object.__setattr__(conn, "_occ_run_key", key)
        return conn
    from fabric import Config

    config = config or Config()
    opts = config.base_ssh_config.lookup(t.host)
    kwargs: dict = {}
    if section.key_file:
        kwargs = {"key_filename": os.path.expanduser(section.key_file), "look_for_keys": False, "allow_agent": False}
    label = t.name if opts.get("hostname", t.host) == t.host else f"{t.name} (HostName {opts['hostname']})"
    gateway = _gateway(section, config, t.host, opts, kwargs, label, depth=0)
    try:
        c = _strict_connection(section, config, t.host, t.user, t.port, kwargs, gateway, opts, label)
    except _HostError:
        _close_chain(gateway)
        raise
    try:
        c.open()
    except Exception as e:  # noqa: BLE001 - mapped to a message naming the host
        c.close()
        raise _HostError(_ssh_error(section, t, label, e)) from None
    # Paramiko leaves Nagle on; with the peer's delayed ACKs every short command then
    # stalls ~40 ms (measured: 45 ms -> 12 ms per `run` on loopback).
    try:
        c.transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # a gateway/proxy socket; correctness does not depend on it
    return c


# ---------------------------------------------------------------- a run's connections, kept between its operations

# A run that holds the hosts' lock talks to each host in several operations: the lock, the
# release (or rollback), the unlock. Each used to open its own connection (key exchange, host
# key check, login: 60-100 ms a host here). A connection opened for a run (`_connect(run=...)`)
# is given back when its operation ends (`_give_back`) and the run's next operation takes it
# again; releasing the run's lock closes them (`_drop_run`). It is only reused while its
# transport is up, in the process that opened it, and for at most RUN_IDLE_SECONDS after its
# last use (a connection left idle longer, e.g. across a long migration, is replaced: a
# half-open one would otherwise cost a command's timeout). Reading hosts outside a run
# (status, lock.status) always opens fresh connections.
RUN_IDLE_SECONDS = 60.0

_kept: dict[tuple, tuple[object, float, int]] = {}   # (run, host key) -> (connection, last use, pid)
_kept_guard = threading.Lock()


def _host_key(section, t: Target) -> tuple:
    return (t.name, t.host, t.port, t.user, section.key_file, section.known_hosts, section.connect_timeout)


def _usable(conn, used: float, pid: int) -> bool:
    try:
        transport = conn.client.get_transport()
    except Exception:  # noqa: BLE001 - a broken connection is not reused
        return False
    return (pid == os.getpid() and transport is not None and transport.is_active()
            and time.monotonic() - used <= RUN_IDLE_SECONDS)


def _take_kept(key: tuple):
    with _kept_guard:
        found = _kept.pop(key, None)
    if found is None:
        return None
    conn, used, pid = found
    if _usable(conn, used, pid):
        return conn
    if pid == os.getpid():
        _close_chain(conn)
    return None


def _give_back(conn) -> None:
    """The end of an operation's use of `conn`: kept for its run's next operation when it was
    opened for a run and still works, else closed."""
    key = getattr(conn, "_occ_run_key", None)
    if key is not None and _usable(conn, time.monotonic(), os.getpid()):
        with _kept_guard:
            other = _kept.get(key)
            if other is None or other[0] is conn:
                _kept[key] = (conn, time.monotonic(), os.getpid())
                return
    _close_chain(conn)


def _drop_run(run_id: str) -> None:
    """Close every connection kept for `run_id` (its lock is released: the run is over here)."""
    with _kept_guard:
        gone = [k for k in _kept if k[0] == run_id]
        found = [_kept.pop(k) for k in gone]
    for conn, _, pid in found:
        if pid == os.getpid():
            _close_chain(conn)


@atexit.register
def _drop_all() -> None:
    with _kept_guard:
        found = list(_kept.values())
        _kept.clear()
    for conn, _, pid in found:
        if pid == os.getpid():
            _close_chain(conn)


class _KeyRefused(Exception):
    """Raised by the host key policy: the server's key is unknown or revoked."""


_CONNECTION_CLASS = None


def _connection_class():
    """Fabric's Connection, closing its gateway chain with it (Fabric leaves it open)."""
    global _CONNECTION_CLASS
    if _CONNECTION_CLASS is None:
        from fabric import Connection

        class StrictConnection(Connection):
            def close(self):
                try:
                    super().close()
                finally:
                    if isinstance(self.gateway, Connection):
                        self.gateway.close()

        _CONNECTION_CLASS = StrictConnection
    return _CONNECTION_CLASS


def _close_chain(conn) -> None:
    if conn is not None and not isinstance(conn, (str, bool)):
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


def _strict_connection(section, config, host: str, user, port, kwargs: dict, gateway, opts: dict, label: str):
    """A not-yet-open Connection to `host` (an alias is fine) whose client knows exactly
    the keys of its known hosts files, minus revoked ones, and rejects every other key."""
    from paramiko import MissingHostKeyPolicy
    from paramiko.hostkeys import HostKeyEntry

    files, explicit = known_hosts_files(section.known_hosts, opts, home=os.path.expanduser("~"),
                                        local_user=_local_user())
    present = [f for f in files if os.path.isfile(f)]
    missing = [f for f in files if f not in present]
    if explicit and missing:
        raise _HostError(f"known_hosts file {', '.join(missing)} does not exist, so the host key of {label} cannot be "
                         "checked: fix hosts.known_hosts, or remove it to use the files ssh_config names")
    if not present:
        raise _HostError(f"no known hosts file exists for {label} (looked in {', '.join(files) or 'none'}), so its host "
                         "key cannot be checked: add the host's verified key to ~/.ssh/known_hosts "
                         "(ssh-keyscan, compare the fingerprint), or set hosts.known_hosts")
    revoked: set[tuple[str, str]] = set()
    keys: list[tuple[tuple[str, ...], str, str]] = []
    for f in present:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                parsed = parse_known_hosts(fh.read())
        except OSError as e:
            raise _HostError(f"known hosts file {f} cannot be read ({e.strerror}): fix its permissions") from None
        revoked.update(parsed.revoked)
        keys += parsed.entries

    class Policy(MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            if (key.get_name(), key.get_base64()) in revoked:
                raise _KeyRefused(f"host key of {label} is REVOKED (an @revoked line in {', '.join(present)}); "
                                  "refusing to connect: the host must get a new key, then add the verified new key")
            raise _KeyRefused(f"host {c.host}:{c.port} is not in {' or '.join(present)} ({label}): add its verified "
                              f"key (ssh-keyscan -p {c.port} {c.host}, compare the fingerprint, append it to "
                              f"{present[0]})")

    Connection = _connection_class()
    c = Connection(host, user=user, port=port, config=config, gateway=gateway if gateway is not None else False,
                   connect_timeout=max(1, int(round(section.connect_timeout))), connect_kwargs=dict(kwargs))
    table = c.client.get_host_keys()
    for names, keytype, blob in keys:
        if (keytype, blob) in revoked:
            continue  # a revoked key is never trusted, whatever other line lists it
        try:
            entry = HostKeyEntry.from_line(f"{','.join(names)} {keytype} {blob}")
        except Exception:  # noqa: BLE001 - an undecodable key: skipped like a malformed line
            continue
        if entry is None:
            continue
        for name in names:
            if keytype not in (table.lookup(name) or {}):   # the first file that lists it wins
                table.add(name, keytype, entry.key)
    c.client.set_missing_host_key_policy(Policy())
    return c


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


MAX_JUMPS = 8


def _gateway(section, config, host: str, opts: dict, kwargs: dict, label: str, depth: int):
    """What `host` is reached through: an OPEN strict Connection chain for ProxyJump
    (hops left to right; the first hop's own ssh_config ProxyJump applies to it, as
    `ssh -J` does), the ProxyCommand string, or None."""
    jump = str(opts.get("proxyjump") or "").strip()
    if jump.lower() == "none":
        jump = ""
    if not jump:
        cmd = str(opts.get("proxycommand") or "").strip()
        return cmd if cmd and cmd.lower() != "none" else None
    if depth >= MAX_JUMPS:
        raise _HostError(f"ProxyJump for {label} goes through more than {MAX_JUMPS} gateways (a loop in "
                         "~/.ssh/config?): fix the ProxyJump lines")
    prev = None
    try:
        for i, hop in enumerate(h.strip() for h in jump.split(",") if h.strip()):
            m = _ADDRESS.match(hop.removeprefix("ssh://"))
            if not m:
                raise _HostError(f"ProxyJump {hop!r} for {label} is not a host (ssh_config): write [user@]host[:port]")
            hop_host = m["host"].strip("[]")
            if hop_host == host:
                return None  # a wildcard block naming the host as its own gateway (Fabric does the same)
            hop_opts = config.base_ssh_config.lookup(hop_host)
            hop_label = f"gateway {hop} for {label}"
            gw = prev if i else _gateway(section, config, hop_host, hop_opts, kwargs, hop_label, depth + 1)
            prev = gw
            conn = _strict_connection(section, config, hop_host, m["user"] or None,
                                      int(m["port"]) if m["port"] else None, kwargs, gw, hop_opts, hop_label)
            prev = conn
            try:
                conn.open()
            except Exception as e:  # noqa: BLE001 - mapped to a message naming the gateway
                raise _HostError(_gateway_error(hop_label, conn, e)) from None
        return prev
    except _HostError:
        _close_chain(prev)
        raise


def _gateway_error(label: str, conn, e: Exception) -> str:
    from paramiko.ssh_exception import AuthenticationException, BadHostKeyException

    if isinstance(e, _KeyRefused):
        return str(e)
    if isinstance(e, BadHostKeyException):
        return (f"host key of {label} ({conn.host}:{conn.port}) does NOT match the known hosts files; refusing to "
                "connect: verify the new key, then update known_hosts")
    if isinstance(e, AuthenticationException):
        return f"authentication as {conn.user} on {label} ({conn.host}:{conn.port}) failed: check the user and key"
    why = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"cannot reach {label} ({conn.host}:{conn.port}): {why}"


def _ssh_error(section, t: Target, label: str, e: Exception) -> str:
    from paramiko.ssh_exception import BadHostKeyException

    if isinstance(e, _KeyRefused):
        return str(e)
    if isinstance(e, BadHostKeyException):
        return (f"host key of {label} does NOT match the known hosts files (the host was reinstalled, or someone is "
                "in between); refusing to connect: verify the new key, then update known_hosts")
    return _connect_error(section, t, e)


def _connect_error(section, t: Target, e: Exception) -> str:
    from paramiko.ssh_exception import AuthenticationException, BadHostKeyException, SSHException

    known = os.path.expanduser(section.known_hosts)
    if isinstance(e, BadHostKeyException):
        return (f"host key of {t.name} does NOT match {known} (the host was reinstalled, or someone is in between); "
                "refusing to connect: verify the new key, then update known_hosts")
    if isinstance(e, AuthenticationException):
        key = section.key_file or "the SSH agent / default keys"
        return f"authentication as {t.user} on {t.host}:{t.port} failed with {key}: check the user and that the key is authorized"
    if isinstance(e, SSHException) and "known_hosts" in str(e):
        return (f"host {t.host}:{t.port} is not in {known}: add its verified key "
                f"(ssh-keyscan -p {t.port} {t.host}, compare the fingerprint, append to known_hosts)")
    if isinstance(e, (OSError, socket.timeout)):
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        if "Unable to connect" in str(e):
            why = "connection refused"
        return f"cannot reach {t.host}:{t.port} ({why}): is the host up and sshd listening?"
    return f"SSH to {t.name} failed: {type(e).__name__}: {e}"


def quick_timeout(section) -> float:
    """The bound of the toolkit's own short commands (lock, state, switch, status, app_of,
    unlock): a frozen host costs this, not hosts.command_timeout, which stays for hooks,
    unpacking, starting the app and removing release trees."""
    return min(section.command_timeout, max(3 * section.connect_timeout, 30.0))


def _run(conn, t: Target, cmd: str, section, what: str, ok_codes: tuple[int, ...] = (0,), *, long: bool = False,
         stdin: bytes = b""):
    """Run one remote command; a non-listed exit code raises _HostError with stderr's tail.
    `long`: bounded by hosts.command_timeout, else by `quick_timeout`. After a timeout the
    connection is closed: no later command (a cleanup, an unlock) waits on that host again.
    `stdin`: bytes for the command's standard input (at most STDIN_LIMIT). A command that
    takes them checks they all came (a gzip stream, a sha256): a send cut short by the
    command's end or the bound is never taken for the whole."""
    echo(f"{t.name}: {cmd}")   # Invoke's --echo (redacted)
    limit = section.command_timeout if long else quick_timeout(section)
    try:
        r = _exec(conn, cmd, limit, stdin)
    except (CommandTimedOut, _ExecTimedOut):
        _close_quietly(conn)
        raise _HostError(f"{what} timed out after {limit:g}s; {t.name} gets no more commands in this run "
                         "(hosts.command_timeout bounds hooks and unpacking)") from None
    except (OSError, EOFError) as e:
        raise _HostError(f"{what}: connection to {t.name} lost ({e})") from None
    except Exception as e:  # paramiko's SSHException when the transport drops
        raise _HostError(f"{what}: {type(e).__name__}: {e}") from None
    if r.exited not in ok_codes:
        tail = explain(r.stdout, r.stderr, 6)   # a hook's cause lines, then its last lines
        raise _HostError(f"{what} failed (exit {r.exited}): {tail}".rstrip(": "))
    return r


def _close_quietly(conn) -> None:
    """Close a connection whose host stopped answering (its transport: later commands on
    it fail at once instead of waiting for a channel)."""
    try:
        transport = conn.client.get_transport()
        if transport is not None:
            transport.close()
    except Exception:  # noqa: BLE001 - already broken; the timeout is what is reported
        pass


@dataclass(frozen=True)
class _Exec:
    exited: int
    stdout: str
    stderr: str


class _ExecTimedOut(Exception):
    pass


# What a command may get on its standard input: less than the window OpenSSH's sshd opens
# for a session channel (2 MiB), so with OpenSSH the bytes are queued at once; a server with
# a smaller window takes them as the command reads, the wait bounded like the command's.
STDIN_LIMIT = 1 << 20


def _exec(conn, cmd: str, timeout: float, stdin: bytes = b"") -> _Exec:
    """`cmd` on one exec channel of the open connection: its exit status, stdout, stderr.

    What Fabric's `run(hide=True, warn=True, in_stream=False)` gives, without Invoke's
    runner threads and their polling sleeps (three per command): a release is a handful
    of short commands per host, and on 16 hosts those sleeps were most of a rollback."""
    import select

    transport = conn.client.get_transport() if conn is not None else None
    if transport is None or not transport.is_active():
        raise EOFError("the SSH connection is closed")
    try:
        chan = transport.open_session(timeout=max(1.0, min(timeout, 60.0)))
    except Exception as e:  # paramiko's SSHException("Timeout opening channel."): the host froze
        if "timeout" in str(e).lower():
            raise _ExecTimedOut() from None
        raise
    try:
        chan.exec_command(cmd)
        if stdin:
            if len(stdin) > STDIN_LIMIT:
                raise ValueError(f"{len(stdin)} bytes of input exceed STDIN_LIMIT")
            chan.settimeout(max(1.0, min(timeout, 60.0)))
            try:
                chan.sendall(stdin)
            except OSError:
                pass   # the command ended before reading: its exit status says why
        chan.shutdown_write()   # the command sees EOF on stdin after what was sent
        out, err = [], []
        deadline = time.monotonic() + timeout
        while True:
            while chan.recv_ready():
                out.append(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(65536))
            if chan.exit_status_ready():
                # Output may still be in flight after the status: read until the channel's
                # EOF, but not forever (a background child may hold the output open).
                end = min(deadline, time.monotonic() + 5.0)
                while time.monotonic() < end:
                    while chan.recv_ready():
                        out.append(chan.recv(65536))
                    while chan.recv_stderr_ready():
                        err.append(chan.recv_stderr(65536))
                    if chan.eof_received or chan.closed:
                        while chan.recv_ready():
                            out.append(chan.recv(65536))
                        while chan.recv_stderr_ready():
                            err.append(chan.recv_stderr(65536))
                        break
                    select.select([chan], [], [], 0.05)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise _ExecTimedOut()
            select.select([chan], [], [], min(left, 1.0))
            if not transport.is_active():
                raise EOFError("the SSH connection was lost")
        return _Exec(chan.recv_exit_status(), b"".join(out).decode("utf-8", "replace"),
                     b"".join(err).decode("utf-8", "replace"))
    finally:
        chan.close()
