"""Which hosts, as whom, checked against which known hosts (pure): `[hosts]` settings and
ssh_config (User, Port, UserKnownHostsFile, GlobalKnownHostsFile) resolved to `Target`s."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy.config import AppSection
from deploy.errors import SettingsError
from deploy.hosts._values import Target

if TYPE_CHECKING:
    from deploy.config import HostsSection

_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
_ADDRESS = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?$")


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


# ---------------------------------------------------------------- skipping dead hosts

def skipping(section: HostsSection, names, app: AppSection | None = None) -> tuple[HostsSection, list[str]]:
    """`section` without the hosts named in `names` (`--skip-host`: an entry as written in
    hosts.hosts, its `user@host:port`, or `host:port`; repeated or comma-separated), and
    the skipped hosts' full names. Their app_ports and health_urls go with them, so smoke
    and health never ask a skipped host. An unknown name, a name that fits two hosts, or
    skipping every host is a SettingsError: the operator says exactly which host is dead."""
    import dataclasses

    wanted = [n.strip() for raw in (names or ()) for n in str(raw).split(",") if n.strip()]
    if not wanted:
        return section, []
    all_targets = targets(section, app)
    keep = list(range(len(all_targets)))
    skipped: list[str] = []
    for name in wanted:
        hits = [i for i, t in enumerate(all_targets)
                if name in (section.hosts[i].strip(), t.name, f"{t.host}:{t.port}", t.host)]
        if len(hits) != 1:
            known = ", ".join(t.name for t in all_targets)
            what = "fits no host" if not hits else f"fits {len(hits)} hosts"
            raise SettingsError(f"--skip-host={name} {what} of hosts.hosts ({known}).",
                                "Name the dead host as user@host:port, as `invoke hosts.check` lists it.")
        if hits[0] in keep:
            keep.remove(hits[0])
            skipped.append(all_targets[hits[0]].name)
    if not keep:
        raise SettingsError("--skip-host names every host: there would be nothing left to act on.",
                            "Skip only the hosts that cannot be reached (invoke hosts.check shows which).")
    pick = lambda seq: tuple(seq[i] for i in keep) if seq else seq  # noqa: E731
    return dataclasses.replace(section, hosts=pick(section.hosts), app_ports=pick(section.app_ports),
                               health_urls=pick(section.health_urls)), skipped
