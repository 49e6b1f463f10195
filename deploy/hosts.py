"""Web releases on hosts over SSH (Fabric), Capistrano's layout with Kamal's lock.

On every host, under `deploy_to`:

    releases/<release-id>/   one unpacked artifact each, with a RELEASE file (the id)
    current -> releases/<id> switched atomically: `ln -s` to a temp name, then `mv -T`
                             (rename(2) replaces the link in one step; rm + ln would leave
                             a moment with no `current`; Capistrano's deploy:symlink:release)
    shared/                  files linked into every release (`.env`, ...)
    .deploy-lock/details     the remote lock: `mkdir` is the atomic step (Kamal's lock.rb)
    revisions.log            one line per release, rollback and undo (Capistrano)

`release()` runs in phases over all hosts in parallel (a thread per host, at most
`max_parallel`), with a barrier between them:

    1. connect, take the lock, read the host's state
    2. prepare: upload the tarball, verify its sha256, unpack into releases/<id>,
       link shared files, run `before_switch`
    3. switch `current`, run `restart` in it, check health
    4. finish: prune old releases, log, unlock

A failure in 1-2 on any host leaves every host on its old release (half-made release
dirs removed); a failure in 3 switches the hosts that switched back. Every host's
outcome is collected and reported once (`HostFailed`, like Fabric's GroupException).

Remote commands are built as argv lists and quoted in one place (`sh`); the configured
hook strings are the operator's own shell and are run as written.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from typing import TYPE_CHECKING

from deploy.errors import DeployError, HostFailed, LockHeld, SettingsError

if TYPE_CHECKING:
    from deploy.build import Artifact
    from deploy.config import AppSection, HostsSection

__all__ = [
    "Target", "HostResult", "HostCheck", "HostReleases", "LockInfo",
    "targets", "release", "undo_release", "rollback", "check", "releases", "current_release",
    "lock_status", "break_lock", "validate_release_id", "sh",
    "resolve_login", "known_hosts_files", "parse_known_hosts", "KnownHostsText",
]

RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
_ADDRESS = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")
LOCK_DIR = ".deploy-lock"
LOCK_HELD_EXIT = 75
CHECKSUM_EXIT = 76
SHARED_MISSING_EXIT = 77


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Target:
    """One host as the settings describe it, with its placeholders resolved."""

    name: str            # user@host:port, how messages name it
    host: str
    port: int
    user: str
    deploy_to: str
    health_url: str = ""
    app_port: int = 0    # the port the app listens on there (app.port, or hosts.app_ports[i])


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    release: str | None          # the release this host is on afterwards, as far as we know
    previous: str | None         # the release it was on before
    duration: float
    error: str = ""
    uploaded: int = 0            # bytes sent to this host over SFTP (artifact, delta, lists)
    transfer: str = ""           # "full", "delta from <id>: ...", "delta from <id> failed verification (...); sent in full", "none"


@dataclass(frozen=True)
class HostCheck:
    host: str
    ok: bool
    writable: bool = False
    free_mb: int | None = None
    current: str | None = None
    error: str = ""


@dataclass(frozen=True)
class HostReleases:
    host: str
    releases: tuple[str, ...]
    current: str | None


@dataclass(frozen=True)
class LockInfo:
    host: str
    holder: str
    run_id: str
    acquired_at: datetime | None
    release: str = ""

    def age_minutes(self, now: datetime) -> float | None:
        if self.acquired_at is None:
            return None
        return (now - self.acquired_at).total_seconds() / 60


@dataclass(frozen=True)
class HostState:
    """What phase 1 reads from a host: `current`, the release dirs, an earlier upload."""

    current: str | None
    releases: tuple[str, ...]
    upload_sha256: str | None


# ---------------------------------------------------------------- validation (pure)

def validate_release_id(release_id: str) -> str:
    """A release id is a directory name and a Shopify version: `[A-Za-z0-9._-]`, <= 100, no `..`."""
    if not isinstance(release_id, str) or not RELEASE_ID.match(release_id) or ".." in release_id:
        raise SettingsError(
            f"Release id {release_id!r} is not allowed.",
            "Use 1-100 of A-Z a-z 0-9 . _ - starting with a letter or digit, without '..' "
            "(build ids look like 20240501120000-abc1234).",
        )
    return release_id


def _validate_path(value: str, key: str, *, absolute: bool) -> str:
    parts = value.split("/")
    if (not value or not _SAFE_PATH.match(value) or ".." in parts
            or (absolute and not value.startswith("/")) or (not absolute and value.startswith("/"))):
        kind = "an absolute path" if absolute else "a relative path"
        raise SettingsError(
            f"hosts.{key} = {value!r} is not a safe path.",
            f"Use {kind} of letters, digits and . _ / + - only, without '..'.",
        )
    return value


def targets(section: HostsSection, app: AppSection | None = None, ssh_config=None) -> list[Target]:
    """The hosts of a `HostsSection`, parsed and validated, placeholders resolved; the health
    URL defaults to http://{host}:{app_port}<app.health_path>.

    User and port come from the entry (user@host:port), else the settings, else the
    host's `~/.ssh/config` block (`ssh_config`: anything with `lookup(host) -> dict`,
    default the user's and the system's ssh_config as Fabric reads them), else
    `deploy` and 22. The host stays as written (an ssh_config alias is fine: HostName,
    IdentityFile, ProxyJump and the known hosts files are applied when connecting)."""
    from deploy.config import AppSection

    app = app or AppSection()
    if not section.hosts:
        raise SettingsError("hosts.hosts is empty: there is no host to release to.",
                            'List the hosts under [hosts] (hosts = ["deploy@10.0.0.5"]).')
    if section.health_urls and len(section.health_urls) != len(section.hosts):
        raise SettingsError(
            f"hosts.health_urls has {len(section.health_urls)} entries for {len(section.hosts)} hosts.",
            "Give one health URL per host, in the order of hosts.hosts, or use health_url with {host}.",
        )
    for f in section.shared_files:
        _validate_path(f, "shared_files", absolute=False)
    if ssh_config is None:
        ssh_config = _ssh_config()
    out: list[Target] = []
    for i, entry in enumerate(section.hosts):
        m = _ADDRESS.match(entry.strip())
        if not m:
            raise SettingsError(f"hosts.hosts[{i}] = {entry!r} is not a host.", "Write host, user@host or user@host:port.")
        host = m["host"].strip("[]")
        user, port = resolve_login(m["user"], int(m["port"] or 0), section.user, section.port,
                                   ssh_config.lookup(host), where=f"hosts.hosts[{i}] = {entry!r}")
        name = f"{user}@{host}:{port}"
        app_port = section.app_ports[i] if section.app_ports else app.port
        fill = {"host": host, "port": port, "user": user, "name": name, "app_port": app_port}
        url_host = f"[{host}]" if ":" in host else host
        try:
            deploy_to = section.deploy_to.format(**fill).rstrip("/")
            health = (section.health_urls[i] if section.health_urls else section.health_url).format(**fill)
        except (KeyError, IndexError, ValueError) as e:
            raise SettingsError(f"hosts.deploy_to/health_url has an unknown placeholder ({e}).",
                                "Placeholders: {host} {port} {app_port} {user} {name}.") from None
        if not health and not section.health_command:
            health = f"http://{url_host}:{app_port}{app.health_path}"
        _validate_path(deploy_to, "deploy_to", absolute=True)
        out.append(Target(name=name, host=host, port=port, user=user, deploy_to=deploy_to, health_url=health,
                          app_port=app_port))
    if len({t.name for t in out}) != len(out):
        raise SettingsError("hosts.hosts lists the same host twice.", "Remove the duplicate entry.")
    return out


# ---------------------------------------------------------------- ssh_config (pure parts)

DEFAULT_USER = "deploy"
DEFAULT_PORT = 22
# ssh_config(5): the defaults OpenSSH reads when UserKnownHostsFile/GlobalKnownHostsFile are not set.
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def resolve_login(entry_user: str | None, entry_port: int, settings_user: str, settings_port: int,
                  ssh_options: dict, *, where: str = "") -> tuple[str, int]:
    """(user, port) for one host: the entry, else the settings (set explicitly), else its
    ssh_config block (`User`, `Port`), else `deploy` and 22."""
    user = entry_user or settings_user or str(ssh_options.get("user") or "") or DEFAULT_USER
    raw = ssh_options.get("port")
    cfg_port = 0
    if raw not in (None, ""):
        try:
            cfg_port = int(str(raw).strip())
        except ValueError:
            cfg_port = -1
        if not 0 < cfg_port < 65536:
            raise SettingsError(
                f"{where or 'a host'}: ssh_config (~/.ssh/config or /etc/ssh/ssh_config) gives Port {raw!r}, "
                "which is not a port.",
                "Fix the Port line of that Host block, or set the port in the entry (user@host:port).")
    port = entry_port or settings_port or cfg_port or DEFAULT_PORT
    if not 0 < port < 65536:
        raise SettingsError(f"{where or 'a host'}: port {port} is out of range.", "Use a port from 1 to 65535.")
    return user, port


def _ssh_config():
    """The user's (~/.ssh/config) and the system's ssh_config, read as Fabric reads them."""
    from fabric import Config

    return Config().base_ssh_config


def _expand_ssh_path(path: str, home: str, local_user: str) -> str:
    """`~`, `%d` (home) and `%u` (local user) as ssh_config(5) expands them in file names."""
    if path.startswith("~"):
        path = home + path[1:]
    return path.replace("%d", home).replace("%u", local_user).replace("%%", "%")


def known_hosts_files(settings_value: str, ssh_options: dict, *, home: str, local_user: str = "") -> tuple[tuple[str, ...], bool]:
    """The known hosts files for one host and whether the settings named them.

    `hosts.known_hosts` (set: one or more paths separated by spaces) replaces
    everything; otherwise the host's UserKnownHostsFile (default ~/.ssh/known_hosts and
    ~/.ssh/known_hosts2) then GlobalKnownHostsFile (default /etc/ssh/ssh_known_hosts and
    /etc/ssh/ssh_known_hosts2), as ssh reads them. "none" names no file."""
    if settings_value.strip():
        return tuple(_expand_ssh_path(p, home, local_user) for p in settings_value.split()), True
    out: list[str] = []
    for key, default in (("userknownhostsfile", USER_KNOWN_HOSTS), ("globalknownhostsfile", GLOBAL_KNOWN_HOSTS)):
        value = ssh_options.get(key)
        paths = str(value).split() if value else list(default)
        out += [_expand_ssh_path(p, home, local_user) for p in paths if p.lower() != "none"]
    return tuple(dict.fromkeys(out)), False


@dataclass(frozen=True)
class KnownHostsText:
    """One known_hosts file, read tolerantly: plain entries, revoked keys, lines skipped."""

    entries: tuple[tuple[tuple[str, ...], str, str], ...]   # (host names or |1| hashes, key type, base64 key)
    revoked: tuple[tuple[str, str], ...]                    # (key type, base64 key) of @revoked lines
    skipped: tuple[int, ...] = ()                           # line numbers of @cert-authority and malformed lines


def parse_known_hosts(text: str) -> KnownHostsText:
    """sshd(8)'s known_hosts format. `@cert-authority` lines (certificates are not
    checked here) and lines that are not `names keytype base64 [comment]` are skipped
    instead of failing the whole file, as paramiko's loader does ("Incorrect padding")."""
    import base64
    import binascii

    entries, revoked, skipped = [], [], []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        ok = len(fields) >= 3 and marker in ("", "@revoked")
        if ok:
            try:
                base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                ok = False
        if not ok:
            skipped.append(n)
        elif marker == "@revoked":
            revoked.append((fields[1], fields[2]))
        else:
            names = tuple(h for h in fields[0].split(",") if h and not h.startswith("!"))
            entries.append((names, fields[1], fields[2]))
    return KnownHostsText(tuple(entries), tuple(revoked), tuple(skipped))


# ---------------------------------------------------------------- commands as data

def sh(*argv: object) -> str:
    """The one place remote argv is quoted."""
    return shlex.join(str(a) for a in argv)


def _and(*cmds: str) -> str:
    return " && ".join(c for c in cmds if c)


def _fail(code: int, message: str) -> str:
    return f"{{ {sh('echo', message)} >&2; exit {code}; }}"


def _p(t: Target, *parts: str) -> str:
    return "/".join((t.deploy_to, *parts))


def lock_details(holder: str, run_id: str, release_id: str, now: datetime) -> str:
    return f"holder={holder}\nrun_id={run_id}\nrelease={release_id}\nacquired_at={now.isoformat()}\n"


def parse_lock_details(host: str, text: str) -> LockInfo:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        at = datetime.fromisoformat(values.get("acquired_at", ""))
    except ValueError:
        at = None
    return LockInfo(host=host, holder=values.get("holder", "unknown"), run_id=values.get("run_id", ""),
                    acquired_at=at, release=values.get("release", ""))


def state_command(t: Target, upload: str | None = None) -> str:
    """Print `current`, the release dirs and (optionally) an upload's sha256, in sections."""
    parts = [
        "echo '== current'", f"readlink {sh(_p(t, 'current'))} || true",
        "echo '== releases'", f"ls -1 {sh(_p(t, 'releases'))} 2>/dev/null || true",
        "echo '== upload'",
    ]
    if upload:
        parts.append(f"sha256sum {sh(upload)} 2>/dev/null || true")
    return "; ".join(parts)


def parse_state(text: str) -> HostState:
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            sections[cur] = []
        elif cur is not None and line.strip():
            sections[cur].append(line.strip())
    link = (sections.get("current") or [""])[0]
    current = link.rstrip("/").rsplit("/", 1)[-1] if link else None
    rels = tuple(sorted(r for r in sections.get("releases", []) if not r.startswith(".")))
    up = (sections.get("upload") or [""])[0].split()
    return HostState(current=current, releases=rels, upload_sha256=up[0] if up else None)


def lock_command(t: Target, details: str) -> str:
    """mkdir is the atomic test-and-set; on contention print the holder's details."""
    lock = _p(t, LOCK_DIR)
    return (
        f"mkdir -p {sh(_p(t, 'releases'))} {sh(_p(t, 'shared'))} {sh(_p(t, '.uploads'))} && "
        f"if mkdir {sh(lock)} 2>/dev/null; then printf %s {sh(details)} > {sh(lock + '/details')}; "
        f"else cat {sh(lock + '/details')} 2>/dev/null; exit {LOCK_HELD_EXIT}; fi"
    )


def unlock_command(t: Target) -> str:
    return sh("rm", "-rf", _p(t, LOCK_DIR))


def unpack_command(t: Target, release_id: str, sha256: str, upload: str, previous: str | None,
                   shared_files: Sequence[str]) -> str:
    """Verify, unpack into a hidden partial dir, write RELEASE, link shared files, then rename into place."""
    final = _p(t, "releases", release_id)
    partial = _p(t, "releases", f".partial-{release_id}")
    steps = [
        "umask 022",   # the artifact's 644/755 modes, whatever the login's umask (delta links rely on them)
        f"{{ printf '%s  %s\\n' {sh(sha256)} {sh(upload)} | sha256sum -c --status || "
        f"{_fail(CHECKSUM_EXIT, f'sha256 of the uploaded artifact does not match {sha256}')}; }}",
        sh("rm", "-rf", partial, final),
        sh("mkdir", "-p", partial),
        sh("tar", "-xzf", upload, "--no-same-permissions", "-C", partial),
        *_into_place(t, release_id, previous, shared_files),
        sh("rm", "-f", upload),
    ]
    return _and(*steps)


def _into_place(t: Target, release_id: str, previous: str | None, shared_files: Sequence[str]) -> list[str]:
    """A populated partial dir: write RELEASE and .previous, link shared files, rename it into place."""
    final = _p(t, "releases", release_id)
    partial = _p(t, "releases", f".partial-{release_id}")
    steps = [
        f"printf '%s\\n' {sh(release_id)} > {sh(partial + '/RELEASE')}",
        f"printf '%s\\n' {sh(previous or '')} > {sh(partial + '/.previous')}",
    ]
    for f in shared_files:
        src = _p(t, "shared", f)
        dst = f"{partial}/{f}"
        steps.append(f"{{ test -e {sh(src)} || {_fail(SHARED_MISSING_EXIT, f'shared file {src} is missing')}; }}")
        steps.append(sh("mkdir", "-p", os.path.dirname(dst)))
        steps.append(sh("rm", "-rf", dst))
        steps.append(sh("ln", "-s", src, dst))
    steps.append(sh("mv", "-T", partial, final))
    return steps


DELTA_MISMATCH_EXIT = 78


def delta_upload_name(release_id: str) -> str:
    return f"{release_id}.delta.tar.gz"


def delta_unpack_command(t: Target, release_id: str, base: str, upload: str, previous: str | None,
                         shared_files: Sequence[str]) -> str:
    """Build releases/<id> from a delta: hard-link the unchanged files from releases/<base>
    (`ctl/links`, NUL-separated), unpack the new ones (`files/`), then verify the whole tree
    against the artifact's manifest before anything else: every file's sha256 (`ctl/sums`,
    sha256sum -c), every file's mode and size, every symlink and empty dir, and no other
    entry (`ctl/tree`, sorted `find` lines). Exit DELTA_MISMATCH_EXIT when the tree is not
    the artifact's (e.g. a file of the base release was changed in place): the caller sends
    the full artifact instead."""
    partial = _p(t, "releases", f".partial-{release_id}")
    work = _p(t, ".uploads", f"{release_id}.d")
    ctl = work + "/ctl"
    src = _p(t, "releases", base)
    what = f"the tree built from {base} does not match the artifact's manifest"
    tree = ("find . -mindepth 1 \\( -type f -printf 'f %m %s %P\\n' \\) -o \\( -type l -printf 'l %P -> %l\\n' \\)"
            " -o \\( -type d -empty -printf 'd %P\\n' \\)")
    steps = [
        "umask 022",
        sh("rm", "-rf", partial, _p(t, "releases", release_id), work),
        sh("mkdir", "-p", work),
        sh("tar", "-xzf", upload, "--no-same-permissions", "-C", work),
        sh("mv", "-T", work + "/files", partial),
        # cp --parents recreates each path under partial; -l links instead of copying, so an
        # unchanged file costs a directory entry, not its bytes (rsync --link-dest's idea).
        f"{{ ! test -s {sh(ctl + '/links')} || "
        f"{{ cd {sh(src)} && xargs -0 cp -l --parents -t {sh(partial)} -- < {sh(ctl + '/links')}; }} || "
        f"{{ printf '%s\\n' {sh(what + ': a file to link is missing or unreadable in ' + base)} >&2; "
        f"exit {DELTA_MISMATCH_EXIT}; }}; }}",
        f"cd {sh(partial)}",
        f"{{ out=$(LC_ALL=C sha256sum -c --quiet --strict {sh(ctl + '/sums')} 2>&1) || "
        f"{{ printf '%s\\n' {sh(what + ':')} \"$out\" | head -n 4 >&2; exit {DELTA_MISMATCH_EXIT}; }}; }}",
        f"{{ {tree} | LC_ALL=C sort > {sh(ctl + '/found')}; }}",
        f"{{ cmp -s {sh(ctl + '/found')} {sh(ctl + '/tree')} || {{ printf '%s\\n' {sh(what + ' (modes, sizes or entries):')} >&2; "
        f"diff {sh(ctl + '/tree')} {sh(ctl + '/found')} | head -n 4 >&2; exit {DELTA_MISMATCH_EXIT}; }}; }}",
        "cd /",
        *_into_place(t, release_id, previous, shared_files),
        sh("rm", "-rf", upload, work),
    ]
    return _and(*steps)


def switch_command(t: Target, release_id: str) -> str:
    """Point `current` at releases/<id>: a new link under a temp name, renamed over `current`."""
    tmp = _p(t, f".current-{release_id}")
    return _and(
        sh("test", "-d", _p(t, "releases", release_id)),
        sh("ln", "-sfn", f"releases/{release_id}", tmp),
        sh("mv", "-T", tmp, _p(t, "current")),
    )


def unlink_current_command(t: Target) -> str:
    """A first release undone: there was no `current` before it."""
    return sh("rm", "-f", _p(t, "current"))


def hook_command(t: Target, hook: str, cwd: str, env: dict[str, str]) -> str:
    """`cd` then the operator's hook with release variables exported.

    The exports are part of the remote command line (visible in the host's `ps`), so
    no secret may be among them: `_check_env` refuses `Secret` values."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"cd {sh(cwd)} && export {exports} && {hook}"


def prune_list(releases_: Iterable[str], keep: int, protect: Iterable[str]) -> list[str]:
    """Releases to delete: all but the newest `keep` by name (ids start with a UTC stamp), never a protected one."""
    ordered = sorted(set(releases_))
    protect = {p for p in protect if p}
    old = ordered[:-keep] if keep > 0 else ordered
    return [r for r in old if r not in protect]


def finish_command(t: Target, prune: Sequence[str], log_line: str, unlock: bool) -> str:
    cmds = [f"printf '%s\\n' {sh(log_line)} >> {sh(_p(t, 'revisions.log'))}"]
    if prune:
        cmds.append(sh("rm", "-rf", *[_p(t, "releases", r) for r in prune]))
    if unlock:
        cmds.append(unlock_command(t))
    return "; ".join(cmds)


# ---------------------------------------------------------------- supervising the app (commands as data)

# The toolkit's own supervisor, installed as <deploy_to>/bin/app on every release: hosts
# need nothing from the app beyond the [app] contract. POSIX sh, setsid and /proc only.
SUPERVISOR = r'''#!/bin/sh
# The app supervisor the deploy toolkit installs as <deploy_to>/bin/app (rewritten on every
# release; do not edit). It needs only POSIX sh, setsid and /proc.
#
#   app start|restart PORT_VAR PORT -- ARGV...  stop the app, then start ARGV in <deploy_to>/current,
#                                               in its own session (pid = process group, in run/app.pid)
#   app stop                                    TERM the app's process group; KILL what is left after 10 s
#   app status                                  "running PID" (exit 0) or "stopped" (exit 3)
#   app run PORT_VAR PORT -- ARGV...            exec ARGV with the app's environment (a systemd unit runs this)
#
# The app's environment is explicit: PATH (node_modules/.bin first), HOME, LANG, the
# variables in shared/.env, PORT_VAR=PORT, and DEPLOY_APP_ROOT (how stop() knows its app);
# nothing else of the SSH session. Output goes to logs/app.log.
set -u
root=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
# Every process forked from here carries the marker from its first instant (/proc/PID/environ
# of a forked child is its parent's until it execs).
export DEPLOY_APP_ROOT="$root"
pidfile="$root/run/app.pid"
log="$root/logs/app.log"

# Any process of group $1 that is not a zombie (fields after "comm)": state ppid pgrp ...).
group_alive() {
  g=$1
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null < "$f" || continue
    s=${s##*) }
    set -- $s
    [ "$3" = "$g" ] && [ "$1" != Z ] && return 0
  done
  return 1
}

# Process $1 exists and has not exited (a zombie has).
not_zombie() {
  read -r s 2>/dev/null < "/proc/$1/stat" || return 1
  s=${s##*) }
  set -- $s
  [ "$1" != Z ]
}

# The pid in the pidfile, if its group is alive and its leader (when still there) is this root's app.
app_pid() {
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  if [ -r "/proc/$pid/environ" ]; then
    tr '\000' '\n' < "/proc/$pid/environ" | grep -qxF "DEPLOY_APP_ROOT=$root" || return 1
  fi
  group_alive "$pid" || return 1
  echo "$pid"
}

stop() {
  if pid=$(app_pid); then
    kill -TERM -"$pid" 2>/dev/null
    i=0
    while group_alive "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if group_alive "$pid"; then
      kill -KILL -"$pid" 2>/dev/null
      i=0
      while group_alive "$pid" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    echo "stopped $pid"
  fi
  rm -f "$pidfile"
}

start() {
  [ $# -ge 4 ] && [ "$3" = -- ] || { echo "usage: app start PORT_VAR PORT -- ARGV..." >&2; exit 2; }
  command -v setsid >/dev/null 2>&1 || { echo "setsid is not installed on this host (util-linux)" >&2; exit 1; }
  stop >/dev/null
  mkdir -p "$root/run" "$root/logs"
  cd "$root/current" || { echo "no release: $root/current is missing" >&2; exit 1; }
  printf -- '--- %s starting %s on port %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(cat RELEASE 2>/dev/null)" "$2" >> "$log"
  # In the background of a non-interactive shell the child is no group leader, so setsid
  # makes it one without forking: $! is the app's pid, session and process group.
  setsid "$root/bin/app" run "$@" < /dev/null >> "$log" 2>&1 &
  pid=$!
  echo "$pid" > "$pidfile"
  # Return once the child leads its own process group (setsid has run), so a status or stop
  # right after this sees the app; or once it is gone.
  i=0
  while [ $i -lt 500 ] && not_zombie "$pid" && ! group_alive "$pid"; do sleep 0.01; i=$((i + 1)); done
  echo "started $pid"
}

run() {
  port_var=$1 port=$2
  shift 3
  cd "$root/current" || exit 1
  here=$(pwd -P)   # this release, not whatever `current` points to later
  exec env -i "PATH=$here/node_modules/.bin:${PATH:-/usr/local/bin:/usr/bin:/bin}" "HOME=${HOME:-/}" \
    "LANG=${LANG:-C.UTF-8}" "DEPLOY_APP_ROOT=$root" "$root/bin/app" _exec "$port_var" "$port" -- "$@"
}

# With a clean environment: the variables of shared/.env, then the port, then the app.
_exec() {
  port_var=$1 port=$2
  shift 3
  cr=$(printf '\r')
  if [ -r "$root/shared/.env" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      line=${line%"$cr"}
      line=${line#"${line%%[![:space:]]*}"}
      case $line in '' | '#'*) continue ;; esac
      case $line in 'export '*) line=${line#export } ;; esac
      case $line in *=*) ;; *) continue ;; esac
      key=${line%%=*} val=${line#*=}
      key=${key%"${key##*[![:space:]]}"}
      val=${val#"${val%%[![:space:]]*}"}
      case $key in '' | [0-9]* | *[!A-Za-z0-9_]*) continue ;; esac
      case $val in
        \"*\") val=${val#\"} val=${val%\"} ;;
        \'*\') val=${val#\'} val=${val%\'} ;;
      esac
      export "$key=$val"
    done < "$root/shared/.env"
  fi
  export "$port_var=$port" "DEPLOY_APP_ROOT=$root"
  exec "$@"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  start | restart) start "$@" ;;
  stop) stop ;;
  status) if pid=$(app_pid); then echo "running $pid"; else echo stopped; exit 3; fi ;;
  run) run "$@" ;;
  _exec) _exec "$@" ;;
  *) echo "usage: app start|restart|stop|status|run" >&2; exit 2 ;;
esac
'''
APP_STOPPED_EXIT = 3


def supervisor_path(t: Target) -> str:
    return _p(t, "bin", "app")


def install_supervisor_command(t: Target) -> str:
    """Write bin/app (temp name, then rename: a running `app` is never half-written)."""
    tmp = _p(t, "bin", ".app.new")
    return _and(sh("mkdir", "-p", _p(t, "bin")), f"printf %s {sh(SUPERVISOR)} > {sh(tmp)}",
                sh("chmod", "755", tmp), sh("mv", "-f", tmp, supervisor_path(t)))


def supervise_command(t: Target, action: str, port_var: str = "", port: int = 0,
                      argv: Sequence[str] = ()) -> str:
    """`bin/app start|restart PORT_VAR PORT -- ARGV` / `bin/app stop|status`."""
    if action in ("start", "restart"):
        return sh(supervisor_path(t), action, port_var, port, "--", *argv)
    if action in ("stop", "status"):
        return sh(supervisor_path(t), action)
    raise ValueError(f"unknown supervisor action {action!r}")


def unit_name(t: Target) -> str:
    """The systemd user unit of the app under this deploy_to (one per deploy_to)."""
    import hashlib

    return f"occ-app-{hashlib.sha256(t.deploy_to.encode()).hexdigest()[:12]}.service"


def _systemd_quote(arg: str) -> str:
    # systemd.service(5) "Command lines": double quotes, backslash escapes, and "$"/"%"
    # doubled so that neither variable expansion nor specifiers touch the argument.
    esc = str(arg).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{esc}"'


def unit_text(t: Target, port_var: str, port: int, argv: Sequence[str]) -> str:
    """A user unit that runs the app through `bin/app run` (the same explicit environment as
    the sh supervisor), restarted on failure, stopped as a whole control group."""
    cmd = " ".join(_systemd_quote(a) for a in (supervisor_path(t), "run", port_var, str(port), "--", *argv))
    return ("[Unit]\n"
            f"Description=app released by the deploy toolkit under {t.deploy_to}\n"
            "[Service]\n"
            f"WorkingDirectory={t.deploy_to}/current\n"
            f"ExecStart={cmd}\n"
            "Restart=on-failure\n"
            "KillMode=control-group\n"
            f"StandardOutput=append:{t.deploy_to}/logs/app.log\n"
            f"StandardError=append:{t.deploy_to}/logs/app.log\n"
            "[Install]\n"
            "WantedBy=default.target\n")


def systemd_restart_command(t: Target, unit: str) -> str:
    """Install the unit (if changed, systemd reloads it) and restart it."""
    name = unit_name(t)
    path = f'"$HOME"/.config/systemd/user/{name}'
    return _and('mkdir -p "$HOME"/.config/systemd/user', sh("mkdir", "-p", _p(t, "logs")),
                f"printf %s {sh(unit)} > {path}", "systemctl --user daemon-reload",
                sh("systemctl", "--user", "restart", name))


def stop_app_command(t: Target) -> str:
    """Stop the app whichever way it was supervised (the undo of a first release)."""
    return (f"if [ -x {sh(supervisor_path(t))} ]; then {supervise_command(t, 'stop')}; fi; "
            f"if command -v systemctl >/dev/null 2>&1; then "
            f"{sh('systemctl', '--user', 'stop', unit_name(t))} 2>/dev/null; fi; true")


_APP_LINE = r's/^  "app": "\(.*\)",\{0,1\}$/\1/p'


def app_of_command(t: Target, *release_ids: str) -> str:
    """Print `<release id> <app>` per release, the app read from its RELEASE.json (the build
    writes it with sorted keys, two-space indent, so `"app"` is a line of its own)."""
    parts = []
    for rid in release_ids:
        manifest = _p(t, "releases", rid, "RELEASE.json")
        parts.append(f"printf '%s ' {sh(rid)}; {{ sed -n {sh(_APP_LINE)} {sh(manifest)} 2>/dev/null | head -n 1 | tr -d '\\n'; echo; }}")
    return "; ".join(parts)


def parse_app_of(text: str) -> dict[str, str]:
    """release id -> app ('' when the release does not say: built before releases named their app)."""
    out = {}
    for line in text.splitlines():
        rid, _, name = line.strip().partition(" ")
        if rid:
            out[rid] = name.strip()
    return out


def same_app(apps: dict[str, str], a: str, b: str) -> bool:
    """Two releases are of the same app unless both name their app and the names differ."""
    return not (apps.get(a) and apps.get(b) and apps[a] != apps[b])


def start_facts_command(t: Target, release_id: str, *, want_package: bool, probe_systemd: bool) -> str:
    """What choosing the start needs from the host, in sections: can this user run a
    systemd user unit; the release's package.json (for the start script)."""
    parts = []
    if probe_systemd:
        parts += ["echo '== supervisor'",
                  "if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; "
                  "then echo systemd; else echo sh; fi"]
    if want_package:
        pkg = _p(t, "releases", release_id, "package.json")
        parts += ["echo '== package'", f"cat {sh(pkg)} 2>/dev/null || true"]
    return "; ".join(parts)


def parse_start_facts(text: str) -> tuple[str | None, str | None]:
    """(supervisor "systemd"/"sh" or None, package.json text or None)."""
    sup, pkg, cur = None, [], None
    for line in text.splitlines():
        if line in ("== supervisor", "== package"):
            cur = line[3:]
        elif cur == "supervisor" and line.strip():
            sup = line.strip()
        elif cur == "package":
            pkg.append(line)
    return sup, ("\n".join(pkg) if cur == "package" or pkg else None)


# ---------------------------------------------------------------- connections

class _HostError(Exception):
    """A step failed on one host; the message names what and is shown in the table."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _holder() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _connect(section, t: Target, config=None):
    """An open Fabric Connection that refuses unknown, changed or revoked host keys:
    the known hosts files ssh would read for the host (or hosts.known_hosts), and the
    same rule for every ProxyJump gateway on the way (Fabric's own gateways add
    unknown keys). HostName, IdentityFile, ProxyCommand come from ssh_config."""
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
    keys = []
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


def _run(conn, t: Target, cmd: str, section, what: str, ok_codes: tuple[int, ...] = (0,), *, long: bool = False):
    """Run one remote command; a non-listed exit code raises _HostError with stderr's tail.
    `long`: bounded by hosts.command_timeout, else by `quick_timeout`. After a timeout the
    connection is closed: no later command (a cleanup, an unlock) waits on that host again."""
    from invoke.exceptions import CommandTimedOut

    from deploy.proc import echo

    echo(f"{t.name}: {cmd}")   # Invoke's --echo (redacted)
    limit = section.command_timeout if long else quick_timeout(section)
    try:
        r = _exec(conn, cmd, limit)
    except (CommandTimedOut, _ExecTimedOut):
        _close_quietly(conn)
        raise _HostError(f"{what} timed out after {limit:g}s; {t.name} gets no more commands in this run "
                         "(hosts.command_timeout bounds hooks and unpacking)") from None
    except (OSError, EOFError) as e:
        raise _HostError(f"{what}: connection to {t.name} lost ({e})") from None
    except Exception as e:  # paramiko's SSHException when the transport drops
        raise _HostError(f"{what}: {type(e).__name__}: {e}") from None
    if r.exited not in ok_codes:
        tail = "\n".join((r.stderr.strip() or r.stdout.strip()).splitlines()[-6:])
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


def _exec(conn, cmd: str, timeout: float) -> _Exec:
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
        chan.shutdown_write()   # no input: the command sees EOF on stdin
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


def _redacted(text: str) -> str:
    from deploy.redact import redact

    return redact(text)


# ---------------------------------------------------------------- parallel map

@dataclass
class _Host:
    """Per-host bookkeeping for one operation (mutable; results are frozen)."""

    t: Target
    conn: object = None
    state: HostState | None = None
    locked: bool = False
    prepared: bool = False
    made_dir: bool = False
    switched: bool = False
    release: str | None = None
    pending: str = ""                     # the release being prepared here
    lock_info: LockInfo | None = None     # another run's lock found on this host
    probe: tuple[bool, int | None] | None = None
    error: str = ""
    started: float = field(default_factory=time.monotonic)
    app: AppSection | None = None         # the release contract: start, port_var, health
    supervisor: str = ""                  # "systemd" or "sh" once chosen for this host
    uploaded: int = 0                     # bytes sent over SFTP in this operation
    transfer: str = ""                    # how the release reached the host (HostResult.transfer)


def _parallel(hosts: Sequence[_Host], fn: Callable[[_Host], None], max_parallel: int) -> None:
    """Run fn on every host that has no error yet; an error is recorded on the host."""
    live = [h for h in hosts if not h.error]

    def one(h: _Host) -> None:
        try:
            fn(h)
        except _HostError as e:
            h.error = _redacted(str(e))
        except DeployError as e:
            h.error = _redacted(e.message)
        except Exception as e:  # noqa: BLE001 - one host's surprise must not hide the others'
            h.error = _redacted(f"{type(e).__name__}: {e}")

    _each(live, one, max_parallel)


def _each(items: Sequence, fn: Callable, max_parallel: int) -> None:
    """fn on every item, at most `max_parallel` at once (one item runs inline): the one
    thread pool of every phase over hosts."""
    items = list(items)
    if len(items) <= 1:
        for it in items:
            fn(it)
        return
    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(items)))) as pool:
        list(pool.map(fn, items))


def _close(hosts: Sequence[_Host]) -> None:
    for h in hosts:
        if h.conn is not None:
            try:
                h.conn.close()
            except Exception:  # noqa: BLE001
                pass


def _table(results: Sequence[HostResult]) -> str:
    from tabulate import tabulate

    rows = [(r.host, "ok" if r.ok else "FAILED", r.previous or "-", r.release or "-", f"{r.duration:.1f}s",
             " ".join(r.error.split())[:600]) for r in results]
    return tabulate(rows, headers=["host", "result", "before", "now on", "time", "error"],
                    maxcolwidths=[None, None, None, None, None, 70])


def _results(hosts: Sequence[_Host], *, failed_override: str = "") -> list[HostResult]:
    out = []
    for h in hosts:
        prev = h.state.current if h.state else None
        now_on = h.release if h.release is not None else prev
        out.append(HostResult(host=h.t.name, ok=not h.error, release=now_on, previous=prev,
                              duration=round(time.monotonic() - h.started, 3), error=h.error,
                              uploaded=h.uploaded, transfer=h.transfer))
    return out


# ---------------------------------------------------------------- phase 1: connect, lock, read

def _open_all(section, hs: list[_Host], *, run_id: str, release_id: str, now: datetime,
              upload_name: str | None, lock: bool) -> None:
    from fabric import Config

    config = Config()
    details = lock_details(_holder(), run_id, release_id, now)

    def open_one(h: _Host) -> None:
        h.conn = _connect(section, h.t, config)
        upload = _p(h.t, ".uploads", upload_name) if upload_name else None
        state = state_command(h.t, upload)
        if lock:
            # One round trip: take the lock, then read the state under it.
            r = _run(h.conn, h.t, f"{lock_command(h.t, details)} && {{ {state}; }}", section,
                     f"taking the lock {_p(h.t, LOCK_DIR)}", ok_codes=(0, LOCK_HELD_EXIT))
            if r.exited == LOCK_HELD_EXIT:
                info = parse_lock_details(h.t.name, r.stdout)
                if info.run_id != run_id:
                    h.lock_info = info
                    raise _HostError(f"locked by {info.holder} (run {info.run_id or '?'}, "
                                     f"since {info.acquired_at or '?'})")
                # Our own lock from a killed attempt of this run is taken over (resume).
                r = _run(h.conn, h.t, state, section, "reading the release state")
            h.locked = True
        else:
            r = _run(h.conn, h.t, state, section, "reading the release state")
        h.state = parse_state(r.stdout)

    _parallel(hs, open_one, section.max_parallel)


def _space_note(section, h: _Host, local: Path, upload: str) -> str:
    """Why an upload failed, when the reason is the host's disk (SFTP only says "size mismatch")."""
    try:
        # The partial upload goes first: it is useless and holds the space.
        r = _run(h.conn, h.t, f"rm -f {sh(upload)}; "
                              f"df -Pk {sh(h.t.deploy_to)} 2>/dev/null | tail -n 1", section, "checking free space")
        free_kb = int(r.stdout.split()[3])
    except Exception:  # noqa: BLE001 - best effort: the upload error is reported either way
        return ""
    need_kb = local.stat().st_size // 1024 + 1
    if free_kb < need_kb * 2:
        return (f" (no space left on device: {free_kb // 1024} MB free under {h.t.deploy_to}, the artifact "
                f"needs {need_kb // 1024 + 1} MB plus room to unpack; free space on the host, then run again)")
    return ""


def _unlock_all(section, hs: Sequence[_Host]) -> None:
    """Release the locks we hold; a host we cannot unlock keeps its error (and its lock)."""

    def one(h: _Host) -> None:
        try:
            _run(h.conn, h.t, unlock_command(h.t), section, "releasing the lock")
            h.locked = False
        except _HostError as e:
            h.error = (h.error + f"; lock not released: {e}").lstrip("; ")

    _each([h for h in hs if h.locked and h.conn is not None], one, section.max_parallel)


def _raise_if_locked(hs: Sequence[_Host], section, now: datetime) -> None:
    infos = [h.lock_info for h in hs if h.lock_info is not None]
    if not infos:
        return
    _unlock_all(section, hs)
    _close(hs)
    who = "; ".join(
        f"{i.host}: held by {i.holder}, run {i.run_id or '?'}"
        + (f", for {i.age_minutes(now):.0f} min" if i.acquired_at else "")
        for i in infos
    )
    raise LockHeld(
        f"The deploy lock {LOCK_DIR} is held on {len(infos)} of {len(hs)} hosts ({who}).",
        f"Wait for that run to finish (`invoke lock.status --env=<env>` shows it). If it died, finish it with "
        f"`invoke promote --to=<env> --resume` or `--abort`, or break the lock with "
        f"`invoke lock.release --env=<env> --force` (host locks older than {section.lock_max_age_minutes} min go).",
    )


# ---------------------------------------------------------------- the run's lock on its own

def acquire_lock(section: HostsSection, *, run_id: str, release_id: str = "", now: datetime | None = None) -> list[str]:
    """Take the deploy lock for `run_id` on every host (re-entrant for the same run), or
    none: LockHeld naming the holder, HostFailed when a host cannot be reached.

    The first host is the primary and is locked before the others (as Kamal locks its
    primary), so two runners that share no ledger cannot each win half of the hosts."""
    now = now or _now()
    hs = [_Host(t) for t in targets(section)]
    try:
        for group in (hs[:1], hs[1:]):
            if not group:
                continue
            _open_all(section, group, run_id=run_id, release_id=release_id or "-", now=now, upload_name=None,
                      lock=True)
            _raise_if_locked(hs, section, now)
            if any(h.error for h in hs):
                _unlock_all(section, hs)
                raise _failed("taking the deploy lock", hs, "; no host was changed")
        return [h.t.name for h in hs]
    finally:
        _close(hs)


def release_lock(section: HostsSection, *, run_id: str) -> list[str]:
    """Release the deploy lock on every host where `run_id` holds it; others are left alone."""
    freed: list[str] = []

    def one(h: _Host) -> None:
        r = _run(h.conn, h.t, f"cat {sh(_p(h.t, LOCK_DIR, 'details'))} 2>/dev/null || true", section,
                 "reading the lock")
        if r.stdout.strip() and parse_lock_details(h.t.name, r.stdout).run_id == run_id:
            _run(h.conn, h.t, unlock_command(h.t), section, "releasing the lock")
            freed.append(h.t.name)

    hs = _read_all(section, one)
    bad = [h for h in hs if h.error]
    if bad:
        raise _failed("releasing the deploy lock", hs, "")
    return freed


# ---------------------------------------------------------------- release

def release(section: HostsSection, artifact: Artifact, *, run_id: str, now: datetime | None = None,
            env: dict[str, str] | None = None, keep_lock: bool = False,
            app: AppSection | None = None) -> list[HostResult]:
    """Release `artifact` to every host; all switch, or none stays switched.

    Returns one HostResult per host (in settings order) when every host is on the new
    release and healthy; raises HostFailed carrying every host's outcome otherwise, and
    LockHeld when another run holds a host's lock. A re-run with the same `run_id`
    (after a crash) takes over its own lock and finishes the release.
    `keep_lock`: the run took the lock itself (acquire_lock) and releases it when it ends.
    """
    release_id = validate_release_id(artifact.release_id)
    env = _check_env(env)
    if not re.fullmatch(r"[0-9a-f]{64}", artifact.sha256 or ""):
        raise SettingsError(f"Artifact {artifact.path} has no valid sha256 ({artifact.sha256!r}).",
                            "Rebuild the artifact; its checksum is verified on every host.")
    local = Path(artifact.path)
    if not local.is_file():
        raise SettingsError(f"Artifact {local} does not exist.", "Build it first (invoke build).")
    ts = targets(section, app)
    now = now or _now()
    hs = [_Host(t, app=app) for t in ts]
    upload_name = f"{release_id}.tar.gz"
    try:
        _open_all(section, hs, run_id=run_id, release_id=release_id, now=now, upload_name=upload_name, lock=True)
        _raise_if_locked(hs, section, now)
        if any(h.error for h in hs):
            _abort_before_switch(section, hs, unlock=not keep_lock)
            raise _failed(f"release {release_id}", hs, "before any host switched; every host stays on its release")

        delta = _Delta(local) if section.delta else None
        try:
            _parallel(hs, lambda h: _prepare(section, h, artifact, local, release_id, upload_name, env or {}, delta),
                      section.max_parallel)
        finally:
            if delta is not None:
                delta.close()
        if any(h.error for h in hs):
            _abort_before_switch(section, hs, unlock=not keep_lock)
            raise _failed(f"release {release_id}", hs,
                          "while preparing, before any host switched; every host stays on its release")

        stopped = _roll_out(section, hs, release_id, env or {})
        if any(h.error for h in hs):
            _switch_back(section, hs, release_id, env or {})
            if not keep_lock:
                _unlock_all(section, hs)
            raise _failed(f"release {release_id}", hs, stopped + _after_switch_summary(hs))

        def finish(h: _Host) -> None:
            prev = h.state.current if h.state else None
            prune = prune_list((*h.state.releases, release_id), section.keep_releases, (release_id, prev))
            line = f"{now.isoformat()} release {release_id} (was {prev or '-'}) by {_holder()} run {run_id}"
            _run(h.conn, h.t, finish_command(h.t, prune, line, unlock=not keep_lock), section,
                 "pruning and unlocking", long=bool(prune))
            h.locked = keep_lock

        _parallel(hs, finish, section.max_parallel)
        results = _results(hs)
        if any(not r.ok for r in results):
            raise HostFailed(
                f"release {release_id}: every host switched and is healthy, but finishing failed on some:\n"
                + _table(results), "Check the lock and disk on those hosts.", results=results)
        return results
    finally:
        _close(hs)


def _failed(what: str, hs: Sequence[_Host], summary: str) -> HostFailed:
    results = _results(hs)
    bad = [r for r in results if not r.ok]
    return HostFailed(
        f"{what} failed on {len(bad)} of {len(results)} hosts {summary}.\n{_table(results)}",
        "Fix the failing hosts (the error column says what), then run the release again.",
        results=results,
    )


def _prepare(section, h: _Host, artifact, local: Path, release_id: str, upload_name: str, env,
             delta: "_Delta | None" = None) -> None:
    t = h.t
    st = h.state
    if st.current == release_id:
        # Re-running a release that is live (a resumed run): nothing to unpack, never touch the live dir.
        h.transfer = "none"
        return _hook_before_switch(section, h, release_id, env)
    upload = _p(t, ".uploads", upload_name)
    # Set before the upload: a failed upload's partial file is removed by the cleanup too.
    h.pending = release_id
    h.made_dir = True
    base = _delta_base(st, release_id) if delta is not None and st.upload_sha256 != artifact.sha256 else None
    if base is not None and _prepare_delta(section, h, delta, release_id, base):
        h.prepared = True
        return _hook_before_switch(section, h, release_id, env)
    if st.upload_sha256 != artifact.sha256:
        _upload(section, h, local, upload)
    h.transfer = (h.transfer + "; sent in full") if h.transfer else "full"
    _run(h.conn, t, unpack_command(t, release_id, artifact.sha256, upload, st.current, section.shared_files),
         section, f"unpacking releases/{release_id}", long=True)
    h.prepared = True
    _hook_before_switch(section, h, release_id, env)


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
    import hashlib
    import tarfile

    from deploy.build import MANIFEST

    with tarfile.open(path, "r:gz") as tar:
        first = tar.next()
        if first is not None and first.isreg() and first.name == MANIFEST:
            raw = tar.extractfile(first).read()
            found = _manifest_tree(raw)
            if found is not None:
                return [TreeEntry(MANIFEST, "f", 0o644, len(raw), hashlib.sha256(raw).hexdigest()), *found]
    return _scan_tree(path)


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
    from deploy.build import MANIFEST

    linked, sent = [], []
    for e in entries:
        if e.kind != "f":
            continue
        if e.path != MANIFEST and base.get(e.path) == (e.sha256, e.mode, e.size):
            linked.append(e.path)
        else:
            sent.append(e.path)
    return linked, sent


class _Delta:
    """One release's delta material, shared by the hosts' threads: the artifact's tree (read
    once) and one delta tarball per distinct set of files to send."""

    def __init__(self, local: Path):
        import tempfile
        import threading

        self.local = local
        self.lock = threading.Lock()
        self._tree: list[TreeEntry] | None | bool = False
        self._tars: dict[str, Path] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="occ-delta-"))

    def tree(self) -> list[TreeEntry] | None:
        with self.lock:
            if self._tree is False:
                try:
                    self._tree = artifact_tree(self.local)
                except Exception:  # noqa: BLE001 - an unreadable tarball is sent whole, and checked there
                    self._tree = None
            return self._tree

    def tarball(self, linked: Sequence[str], sent: Sequence[str]) -> Path:
        """`ctl/{links,sums,tree}` + `files/<the sent files, symlinks, empty dirs>`, gzip."""
        import gzip
        import hashlib
        import io
        import tarfile

        key = hashlib.sha256("\0".join(linked).encode() + b"\1" + "\0".join(sent).encode()).hexdigest()
        with self.lock:
            if key in self._tars:
                return self._tars[key]
            entries = self._tree or []
            want = set(sent)
            ctl = {
                "links": b"".join(p.encode() + b"\0" for p in linked),
                "sums": "".join(f"{e.sha256}  {e.path}\n" for e in entries if e.kind == "f").encode(),
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

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def _prepare_delta(section, h: _Host, delta: _Delta, release_id: str, base: str) -> bool:
    """Send only what releases/<base> lacks and build the release from both, verified on the
    host. False (the caller sends the full artifact) when no delta applies or the built tree
    does not match the manifest; the reason is kept in h.transfer."""
    from deploy.build import MANIFEST

    t = h.t
    # The base's manifest first: a host whose releases carry none (older builds) costs one
    # SFTP stat, and the artifact's tree is not read at all.
    base_map = base_files(_sftp_read(section, h, _p(t, "releases", base, MANIFEST)) or b"")
    if not base_map:
        return False
    entries = delta.tree()
    if not entries:
        return False
    linked, sent = delta_plan(entries, base_map)
    if not linked:
        h.transfer = f"delta from {base}: nothing to link"
        return False
    tar = delta.tarball(linked, sent)
    upload = _p(t, ".uploads", delta_upload_name(release_id))
    _upload(section, h, tar, upload)
    r = _run(h.conn, t, delta_unpack_command(t, release_id, base, upload, h.state.current, section.shared_files),
             section, f"building releases/{release_id} from {base}", ok_codes=(0, DELTA_MISMATCH_EXIT), long=True)
    if r.exited == DELTA_MISMATCH_EXIT:
        why = " ".join((r.stderr.strip().splitlines() or [""])[1:3])
        h.transfer = f"delta from {base} failed verification ({why[:200]})"
        _run(h.conn, t, sh("rm", "-rf", _p(t, "releases", f".partial-{release_id}"), upload,
                           _p(t, ".uploads", f"{release_id}.d")), section, "removing the unverified tree", long=True)
        return False
    h.transfer = f"delta from {base}: {len(sent)} file(s) sent, {len(linked)} linked"
    return True


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

    from paramiko import SFTPClient

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
        chan = transport.open_session(timeout=stall)
        chan.settimeout(stall)
        chan.invoke_subsystem("sftp")
        sftp = SFTPClient(chan)
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


def _sftp_read(section, h: _Host, remote: str, limit: int = 64 << 20) -> bytes | None:
    """The bytes of `remote` on h's host over SFTP (None when it does not exist or is larger
    than `limit`), bounded like an upload by hosts.upload_stall_timeout."""
    import io

    from paramiko import SFTPClient

    stall = max(1.0, float(section.upload_stall_timeout))
    sftp = None
    try:
        chan = h.conn.transport.open_session(timeout=stall)
        chan.settimeout(stall)
        chan.invoke_subsystem("sftp")
        sftp = SFTPClient(chan)
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


def _check_env(env: dict[str, str] | None) -> dict[str, str]:
    from deploy.redact import Secret

    env = dict(env or {})
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise SettingsError(f"Hook variable name {k!r} is not a shell variable name.")
        if isinstance(v, Secret):
            raise SettingsError(
                f"Hook variable {k} holds a secret; hook variables travel on the remote command line.",
                "Keep secrets in <deploy_to>/shared/.env on the host (linked into every release).",
            )
    return env


def hook_env(section: HostsSection, environ) -> dict[str, str]:
    """The deployer's variables that hosts.hook_env names, for the before_switch and
    restart hooks (which get these, the release variables and the host login's own
    environment: nothing else of the deployer's). SettingsError for an unset name or a
    value holding a secret: hook variables travel on the remote command line."""
    from deploy.redact import Secret, redact

    out: dict[str, str] = {}
    for name in section.hook_env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SettingsError(f"hosts.hook_env: {name!r} is not a shell variable name.")
        value = environ.get(name)
        if value is None:
            raise SettingsError(f"hosts.hook_env names {name}, but {name} is not set.",
                                f"Export {name}, or remove it from hosts.hook_env.")
        if isinstance(value, Secret) or redact(value) != value:
            raise SettingsError(
                f"hosts.hook_env names {name}, which holds a secret; hook variables travel on the remote "
                "command line.", "Keep secrets in <deploy_to>/shared/.env on the host (linked into every release).")
        out[name] = str(value)
    return out


def _hook_env(section, h: _Host, release_id: str, extra) -> dict[str, str]:
    return {"RELEASE_ID": release_id, "PREVIOUS_RELEASE": (h.state.current or "") if h.state else "",
            "DEPLOY_TO": h.t.deploy_to, "DEPLOY_HOST": h.t.name, **extra}


def _hook_before_switch(section, h: _Host, release_id: str, env) -> None:
    if section.before_switch:
        _run(h.conn, h.t, hook_command(h.t, section.before_switch, _p(h.t, "releases", release_id),
                                       _hook_env(section, h, release_id, env)),
             section, "before_switch hook", long=True)


def _abort_before_switch(section, hs: Sequence[_Host], unlock: bool = True) -> None:
    """Remove the half-made release dirs and unlock; no host has switched."""
    for h in hs:
        if h.conn is None:
            continue
        try:
            if h.made_dir and h.state and h.state.current != h.pending:
                rid = h.pending
                _run(h.conn, h.t, sh("rm", "-rf", _p(h.t, "releases", rid), _p(h.t, "releases", f".partial-{rid}"),
                                     _p(h.t, ".uploads", f"{rid}.tar.gz"), _p(h.t, ".uploads", delta_upload_name(rid)),
                                     _p(h.t, ".uploads", f"{rid}.d")), section, "cleaning up", long=True)
        except _HostError as e:
            h.error = h.error or f"cleanup failed: {e}"
    if unlock:
        _unlock_all(section, hs)


def batches(n: int, batch_size: int | str) -> list[range]:
    """Index ranges of `n` hosts in rollout batches: `batch_size` hosts each (an int), or a
    share of them ("25%": rounded up, at least 1)."""
    if isinstance(batch_size, str):
        m = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", batch_size)
        if not m or not 1 <= int(m[1]) <= 100:
            raise SettingsError(f"hosts.batch_size = {batch_size!r} is not a share of the hosts.",
                                'Use a whole number of hosts (e.g. 1) or a percentage from "1%" to "100%".')
        size = max(1, -(-n * int(m[1]) // 100))
    else:
        if isinstance(batch_size, bool) or batch_size < 1:
            raise SettingsError(f"hosts.batch_size = {batch_size!r}: a batch needs at least 1 host.",
                                'Use a whole number of hosts (e.g. 1) or a percentage such as "25%".')
        size = batch_size
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def _roll_out(section, hs: Sequence[_Host], release_id: str, env) -> str:
    """Switch, restart and health-check the hosts: all at once (hosts.rollout = "all"), or in
    batches (hosts.rollout = "rolling", hosts.batch_size), each batch healthy before the next
    starts, so a load balancer always has the other hosts to send requests to. The first
    batch with a failing host stops the rollout; later batches are not touched. Returns a
    note for the failure message ('' when all at once or nothing failed)."""
    if section.rollout != "rolling":
        _parallel(hs, lambda h: _go_live(section, h, release_id, env), section.max_parallel)
        return ""
    groups = batches(len(hs), section.batch_size)
    for k, idx in enumerate(groups, 1):
        group = [hs[i] for i in idx]
        _parallel(group, lambda h: _go_live(section, h, release_id, env), section.max_parallel)
        if any(h.error for h in group):
            left = len(hs) - idx.stop
            return (f"in rolling batch {k} of {len(groups)} (the rollout stopped there"
                    + (f"; {left} host(s) of later batches were not touched" if left else "") + "), ")
    return ""


SWITCH_FAILED_EXIT = 79
HOOK_FAILED_EXIT = 81
HEALTH_PENDING_EXIT = 82


def go_live_command(t: Target, release_id: str, switch: bool, hook: str, health_command: str) -> str:
    """With a restart hook, one round trip: switch `current`, run the hook, try the health
    command once. Exit SWITCH_FAILED_EXIT (nothing switched), HOOK_FAILED_EXIT (its own code
    on stderr as `__hook_exit=N`) or HEALTH_PENDING_EXIT (not healthy yet: keep checking)."""
    parts = []
    if switch:
        parts.append(f"{{ {switch_command(t, release_id)}; }} || exit {SWITCH_FAILED_EXIT}")
    parts.append(f"( {hook} ) || {{ rc=$?; echo __hook_exit=$rc >&2; exit {HOOK_FAILED_EXIT}; }}")
    if health_command:
        parts.append(f"( cd {sh(_p(t, 'current'))} && {health_command} ) >/dev/null 2>&1 || exit {HEALTH_PENDING_EXIT}")
    return "; ".join(parts)


def _go_live(section, h: _Host, release_id: str, env) -> None:
    t = h.t
    if section.restart:
        hook = hook_command(t, section.restart, _p(t, "current"), _hook_env(section, h, release_id, env))
        r = _run(h.conn, t, go_live_command(t, release_id, h.state.current != release_id, hook,
                                            section.health_command),
                 section, "switching current and restarting",
                 ok_codes=(0, SWITCH_FAILED_EXIT, HOOK_FAILED_EXIT, HEALTH_PENDING_EXIT), long=True)
        lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
        if r.exited == SWITCH_FAILED_EXIT:
            raise _HostError(f"switching current failed: {' '.join(lines[-3:])}".rstrip(": "))
        h.switched = True
        h.release = release_id
        if r.exited == HOOK_FAILED_EXIT:
            code = next((ln.split("=", 1)[1] for ln in reversed(lines) if ln.startswith("__hook_exit=")), "?")
            tail = "\n".join([ln for ln in lines if not ln.startswith("__hook_exit=")][-6:])
            raise _HostError(f"restart hook failed (exit {code}): {tail}".rstrip(": "))
        if r.exited == 0 and (section.health_command or not t.health_url):
            return
        return _health(section, h)
    if h.state.current != release_id:
        _run(h.conn, t, switch_command(t, release_id), section, "switching current")
    h.switched = True
    h.release = release_id
    _start_app(section, h, release_id, env, "restart")
    _health(section, h)


def _contract(h: _Host) -> AppSection:
    from deploy.config import AppSection

    return h.app or AppSection()


def _start_app(section, h: _Host, release_id: str, env, what: str) -> None:
    """Restart the app on `current`: the operator's restart hook when one is set, else the
    toolkit's supervisor (a systemd user unit where usable, else bin/app)."""
    t = h.t
    if section.restart:
        _run(h.conn, t, hook_command(t, section.restart, _p(t, "current"), _hook_env(section, h, release_id, env)),
             section, f"{what} hook" if what == "restart" else f"restart hook ({what})", long=True)
        return
    from deploy.build import start_argv

    app = _contract(h)
    want_pkg = not isinstance(app.start, tuple)
    probe = section.supervisor == "auto" and not h.supervisor
    pkg_text = None
    if want_pkg or probe:
        r = _run(h.conn, t, start_facts_command(t, release_id, want_package=want_pkg, probe_systemd=probe),
                 section, "reading the start command")
        found, pkg_text = parse_start_facts(r.stdout)
        if probe:
            h.supervisor = found or "sh"
    h.supervisor = h.supervisor or section.supervisor
    pkg = {}
    if want_pkg:
        import json

        try:
            pkg = json.loads(pkg_text or "")
        except ValueError:
            raise _HostError(f"releases/{release_id}/package.json is missing or not JSON, so the start script "
                             "is unknown (set [app] start)") from None
    try:
        argv = start_argv(app, pkg if isinstance(pkg, dict) else {}, f"releases/{release_id}")
    except SettingsError as e:
        raise _HostError(e.message) from None
    if h.supervisor == "systemd":
        cmd = _and(install_supervisor_command(t), systemd_restart_command(t, unit_text(t, app.port_var, t.app_port, argv)))
    else:
        cmd = _and(install_supervisor_command(t), supervise_command(t, "restart", app.port_var, t.app_port, argv))
    _run(h.conn, t, cmd, section, f"starting the app ({what})", long=True)


def _ready_timeout(section, h: _Host) -> float:
    return section.health_timeout or _contract(h).ready_timeout


def _health(section, h: _Host) -> None:
    t = h.t
    timeout = _ready_timeout(section, h)
    if section.health_command:
        cmd = f"cd {sh(_p(t, 'current'))} && {section.health_command}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                _run(h.conn, t, cmd, section, "health command", long=True)
                return
            except _HostError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
    if t.health_url:
        supervised = not section.restart and h.supervisor == "sh"
        deadline = time.monotonic() + timeout
        while True:
            err = http_health(t.health_url, min(1.0, max(0.1, deadline - time.monotonic())))
            if not err:
                return
            # Between probes, ask the supervisor: an app that exited fails now, not after the timeout.
            gone = supervised and _run(h.conn, t, supervise_command(t, "status"), section, "app status",
                                       ok_codes=(0, APP_STOPPED_EXIT)).exited == APP_STOPPED_EXIT
            if gone or time.monotonic() >= deadline:
                why = "the app exited" if gone else f"{err}, waited {timeout:g}s"
                raise _HostError(f"health check {t.health_url} failed ({why}){_app_log_tail(section, h)}")


def _app_log_tail(section, h: _Host) -> str:
    """The last lines of the app's log on the host, for the error message (best effort)."""
    if section.restart:
        return ""
    try:
        r = _run(h.conn, h.t, f"tail -n 8 {sh(_p(h.t, 'logs', 'app.log'))} 2>/dev/null || true", section, "reading the log")
    except _HostError:
        return ""
    text = r.stdout.strip()
    return f"; last lines of {_p(h.t, 'logs', 'app.log')}:\n{text}" if text else ""


def http_health(url: str, timeout: float, interval: float = 0.1) -> str:
    """GET `url` until it answers 2xx/3xx (redirects not followed) or `timeout` passes;
    '' when healthy, else the last problem."""
    from deploy.smoke import probe

    deadline = time.monotonic() + timeout
    while True:
        last = probe(url, timeout=min(5.0, max(0.5, timeout)))
        if not last:
            return ""
        if time.monotonic() >= deadline:
            return f"{last} (waited {timeout:g}s)"
        time.sleep(interval)


def _switch_back(section, hs: Sequence[_Host], release_id: str, env) -> None:
    """Return every host that switched to its previous release (and restart it there)."""

    def back(h: _Host) -> None:
        if not h.switched or h.conn is None:
            return
        prev = h.state.current
        if prev == release_id:
            return
        try:
            prev = _if_same_app(section, h, release_id, prev) if prev else None
            _restore(section, h, prev, env)
            h.release = prev
            h.switched = False
        except _HostError as e:
            h.error = (h.error + f"; switching back to {prev or '(none)'} FAILED: {e}").lstrip("; ")

    _each(hs, back, section.max_parallel)


def _restore(section, h: _Host, prev: str | None, env) -> None:
    t = h.t
    if prev:
        _run(h.conn, t, switch_command(t, prev), section, f"switching back to {prev}")
        _start_app(section, h, prev, env, "after switching back")
        if not section.restart:
            _health(section, h)   # the supervisor returns at once; a hook returns when its app is up
    else:
        # There was no release before: no app may be left running (the hook's app is the
        # operator's to stop; the toolkit's supervisor or unit is stopped here).
        cmd = unlink_current_command(t) if section.restart else _and(stop_app_command(t), unlink_current_command(t))
        _run(h.conn, t, cmd, section, "stopping the app and removing current (there was no previous release)")


def _if_same_app(section, h: _Host, release_id: str, prev: str) -> str | None:
    """`prev` when it is a release of the same app as `release_id`, else None: going back to
    another app's release (the environment switched apps) would start the wrong app, so the
    undo stops the app instead, as after a first release."""
    r = _run(h.conn, h.t, app_of_command(h.t, release_id, prev), section, "reading which app the releases are")
    return prev if same_app(parse_app_of(r.stdout), release_id, prev) else None


def _after_switch_summary(hs: Sequence[_Host]) -> str:
    stuck = [h.t.name for h in hs if h.switched]
    if stuck:
        return (f"after switching; could NOT switch back {', '.join(stuck)} "
                "(undo_release with the same run id will retry)")
    return "after switching; every host that switched was returned to its previous release"


# ---------------------------------------------------------------- undo, rollback

def undo_release(section: HostsSection, release_id: str, *, run_id: str, now: datetime | None = None,
                 env: dict[str, str] | None = None, keep_lock: bool = False,
                 app: AppSection | None = None) -> list[HostResult]:
    """Undo `release(..)` of `release_id`: hosts on it go back to the release they were
    on before it (recorded in releases/<id>/.previous), hosts elsewhere are left alone.
    Safe to repeat, and to run after the release's process was killed (same run id)."""
    validate_release_id(release_id)
    env = _check_env(env)
    now = now or _now()
    hs = [_Host(t, app=app) for t in targets(section, app)]
    try:
        _open_all(section, hs, run_id=run_id, release_id=release_id, now=now, upload_name=None, lock=True)
        _raise_if_locked(hs, section, now)

        def one(h: _Host) -> None:
            t = h.t
            cmd = _and(sh("rm", "-rf", _p(t, "releases", f".partial-{release_id}")),
                       f"cat {sh(_p(t, 'releases', release_id, '.previous'))} 2>/dev/null || true")
            r = _run(h.conn, t, cmd, section, "reading the previous release")
            if h.state.current != release_id:
                h.release = h.state.current
                return
            prev = (r.stdout.strip().splitlines() or [""])[0] or None
            if prev is not None:
                validate_release_id(prev)
                prev = _if_same_app(section, h, release_id, prev)
            _restore(section, h, prev, env or {})
            h.release = prev
            line = f"{now.isoformat()} undo {release_id} -> {prev or '-'} by {_holder()} run {run_id}"
            _run(h.conn, t, finish_command(t, [], line, unlock=False), section, "logging")

        _parallel(hs, one, section.max_parallel)
        if not keep_lock:
            _unlock_all(section, hs)
        results = _results(hs)
        # For an undo, `previous` is what the host was on before the undo.
        if any(not r.ok for r in results):
            raise HostFailed(f"undo of release {release_id} failed on {sum(not r.ok for r in results)} of "
                             f"{len(results)} hosts.\n{_table(results)}",
                             "Fix the failing hosts and run the undo again; it is safe to repeat.", results=results)
        return results
    finally:
        _close(hs)


def rollback(section: HostsSection, to: str | None = None, *, run_id: str, now: datetime | None = None,
             env: dict[str, str] | None = None, app: AppSection | None = None) -> list[HostResult]:
    """Switch every host to release `to` (default: the release before current, which
    must be the same on all hosts), restart and check health. Checks every host before
    switching any; a failure after switching returns the switched hosts."""
    if to is not None:
        validate_release_id(to)
    env = _check_env(env)
    now = now or _now()
    hs = [_Host(t, app=app) for t in targets(section, app)]
    try:
        _open_all(section, hs, run_id=run_id, release_id=to or "rollback", now=now, upload_name=None, lock=True)
        _raise_if_locked(hs, section, now)
        if not any(h.error for h in hs):
            for h in hs:
                target = to or previous_of(h.state)
                if target is None:
                    h.error = f"no release before {h.state.current or '(none)'} to roll back to"
                elif target not in h.state.releases:
                    h.error = f"release {target} is not on this host (has: {', '.join(h.state.releases) or 'none'})"
            for h in hs:
                target = to or previous_of(h.state)
                if not h.error and h.state.current and target != h.state.current:
                    r = _run(h.conn, h.t, app_of_command(h.t, h.state.current, target), section,
                             "reading which app the releases are")
                    apps = parse_app_of(r.stdout)
                    if not same_app(apps, h.state.current, target):
                        h.error = (f"release {target} is of app {apps[target]}, but {h.state.current} (current) is "
                                   f"of app {apps[h.state.current]}: a rollback never starts another app")
            wanted = {to or previous_of(h.state) for h in hs}
            if not any(h.error for h in hs) and len(wanted) > 1:
                for h in hs:
                    h.error = f"hosts disagree on the previous release (this one: {previous_of(h.state)})"
        if any(h.error for h in hs):
            _unlock_all(section, hs)
            raise _failed("rollback", hs, "before any host switched; nothing changed")
        target = to or previous_of(hs[0].state)
        stopped = _roll_out(section, hs, target, env or {})
        if any(h.error for h in hs):
            _switch_back(section, hs, target, env or {})
            _unlock_all(section, hs)
            raise _failed(f"rollback to {target}", hs, stopped + _after_switch_summary(hs))

        def log(h: _Host) -> None:
            line = f"{now.isoformat()} rollback {h.state.current or '-'} -> {target} by {_holder()} run {run_id}"
            _run(h.conn, h.t, finish_command(h.t, [], line, unlock=True), section, "logging and unlocking")
            h.locked = False

        _parallel(hs, log, section.max_parallel)
        return _results(hs)
    finally:
        _close(hs)


def previous_of(state: HostState) -> str | None:
    """The release before current by name order (Capistrano's rollback target)."""
    if state.current not in state.releases:
        return None
    i = state.releases.index(state.current)
    return state.releases[i - 1] if i > 0 else None


# ---------------------------------------------------------------- read-only views

def _read_all(section, fn: Callable[[_Host], None]) -> list[_Host]:
    hs = [_Host(t) for t in targets(section)]
    try:
        _open_all(section, hs, run_id="", release_id="", now=_now(), upload_name=None, lock=False)
        _parallel(hs, fn, section.max_parallel)
    finally:
        _close(hs)
    return hs


def releases(section: HostsSection) -> list[HostReleases]:
    """Every host's release dirs (name order) and which one is current."""
    hs = _read_all(section, lambda h: None)
    bad = [h for h in hs if h.error]
    if bad:
        raise _failed("listing releases", hs, "")
    return [HostReleases(host=h.t.name, releases=h.state.releases, current=h.state.current) for h in hs]


def current_release(section: HostsSection) -> dict[str, str | None]:
    """host -> the release `current` points at (None: never released)."""
    return {r.host: r.current for r in releases(section)}


def check(section: HostsSection) -> list[HostCheck]:
    """Can we release? Connect (host key checked), deploy_to writable, free space, current release."""

    def one(h: _Host) -> None:
        t = h.t
        probe = _p(t, f".write-test-{os.getpid()}")
        cmd = (f"mkdir -p {sh(t.deploy_to)} 2>/dev/null; "
               f"if touch {sh(probe)} 2>/dev/null && rm -f {sh(probe)}; then echo writable=1; else echo writable=0; fi; "
               f"df -Pk {sh(t.deploy_to)} 2>/dev/null | tail -n 1")
        r = _run(h.conn, t, cmd, section, "checking deploy_to")
        h.probe = parse_check(r.stdout)

    hs = _read_all(section, one)
    out = []
    for h in hs:
        if h.error:
            out.append(HostCheck(host=h.t.name, ok=False, error=h.error))
            continue
        writable, free_mb = h.probe
        problems = []
        if not writable:
            problems.append(f"{h.t.deploy_to} is not writable by {h.t.user}")
        if free_mb is not None and free_mb < section.min_free_mb:
            problems.append(f"only {free_mb} MB free under {h.t.deploy_to} (need {section.min_free_mb})")
        out.append(HostCheck(host=h.t.name, ok=not problems, writable=writable, free_mb=free_mb,
                             current=h.state.current, error="; ".join(problems)))
    return out


def parse_check(text: str) -> tuple[bool, int | None]:
    """`writable=0|1` then a `df -Pk` data line -> (writable, free MB)."""
    writable = "writable=1" in text
    free = None
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[3].isdigit():
            free = int(cols[3]) // 1024
    return writable, free


# ---------------------------------------------------------------- the lock

def lock_status(section: HostsSection) -> list[LockInfo]:
    """The hosts whose deploy lock is held, with holder, run id and time."""
    found: list[LockInfo] = []

    def one(h: _Host) -> None:
        r = _run(h.conn, h.t, f"cat {sh(_p(h.t, LOCK_DIR, 'details'))} 2>/dev/null || "
                              f"{{ test -d {sh(_p(h.t, LOCK_DIR))} && echo holder=unknown; }} || true",
                 section, "reading the lock")
        if r.stdout.strip():
            found.append(parse_lock_details(h.t.name, r.stdout))

    hs = _read_all(section, one)
    if any(h.error for h in hs):
        raise _failed("reading the lock", hs, "")
    order = {t.name: i for i, t in enumerate(targets(section))}
    return sorted(found, key=lambda i: order[i.host])


def break_lock(section: HostsSection, *, now: datetime | None = None, force: bool = False) -> list[LockInfo]:
    """Remove locks older than `lock_max_age_minutes` (any age with `force`); returns those removed.

    Raises LockHeld naming the holders of the younger locks it left in place."""
    now = now or _now()
    held = lock_status(section)
    stale = [i for i in held if force or (i.age_minutes(now) is not None and
                                          i.age_minutes(now) >= section.lock_max_age_minutes)]
    fresh = [i for i in held if i not in stale]
    names = {i.host for i in stale}
    if names:
        def one(h: _Host) -> None:
            if h.t.name in names:
                _run(h.conn, h.t, unlock_command(h.t), section, "breaking the lock")

        hs = _read_all(section, one)
        if any(h.error for h in hs):
            raise _failed("breaking the lock", hs, "")
    if fresh:
        raise LockHeld(
            "Not breaking a lock younger than {} min: ".format(section.lock_max_age_minutes)
            + "; ".join(f"{i.host} held by {i.holder}, run {i.run_id}, {i.age_minutes(now) or 0:.0f} min" for i in fresh),
            "Wait for that run, or break it anyway with force=True if you know it is dead.",
        )
    return stale
