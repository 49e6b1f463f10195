"""The reverse proxy in front of the app on each host (`[proxy]`, caddy or nginx), as shell
commands built from one host's settings (`ProxySection.for_host`): point it at an upstream,
print the live upstream's port, install and start it (hosts.setup), stop and remove it.

Both proxies serve on `listen` (all interfaces) and pass every request to 127.0.0.1:<port>:

- **caddy**: one `caddy run` with its admin API on a loopback address (`admin`). The reverse
  proxy handler carries the id `occ_upstream`, so a switch is one `PATCH /id/occ_upstream/upstreams`;
  caddy loads the changed config before it answers and lets requests in flight finish on the old
  one (its config reload is graceful), so the switch is live when the PATCH returns. The live
  upstream is read back from the admin API. A reload binds a new listening socket beside the old
  one (SO_REUSEPORT) and closes the old one: Linux resets the connections still queued on the
  closed socket unless `net.ipv4.tcp_migrate_req = 1` moves them to the new one (measured here:
  15 to 25 reset connections in 100 switches under steady traffic; 0 with it). hosts.setup
  refuses caddy on a host without it (`migrate_req_check`).
- **nginx**: its own master (`-p <config_dir> -c <nginx_conf>`) whose `http` block includes
  `upstream_file` (`upstream occ_app { server 127.0.0.1:<port>; }`). A switch writes the include
  under a temp name, renames it in place, runs `nginx -t` (the old include put back when the test
  fails) and reloads; old workers finish their requests. A reload only signals the master, so the
  switch waits until a probe through the listener (header `X-Occ-Probe: 1`, answered with
  `X-Occ-Upstream: <address>`, a header nginx adds to probes only) names the new upstream: the live
  upstream is what nginx serves from, never what a file says.

Every command needs POSIX sh and curl on the host. Nothing here runs anything: the commands are
sent by deploy/hosts/ (`_run`), and tests/test_proxy.py runs them against real caddy and nginx.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from deploy.hosts._commands import sh

if TYPE_CHECKING:
    from deploy.config import ProxySection

UPSTREAM_ID = "occ_upstream"     # caddy: the @id of the reverse_proxy handler
UPSTREAM_NAME = "occ_app"        # nginx: the upstream block's name
PROBE_HEADER = "X-Occ-Probe"     # nginx: a request with this header gets...
SEEN_HEADER = "X-Occ-Upstream"   # ...the upstream address that answered it
PROXY_SWITCH_FAILED_EXIT = 83    # the proxy could not be pointed at the new upstream (the old one still serves)

# The port at the end of the probe's header, and of caddy's first upstream `"dial":"127.0.0.1:PORT"`.
_SEEN_SED = r"s/^" + SEEN_HEADER + r": *.*:\([0-9][0-9]*\)$/\1/Ip"
_DIAL_SED = r's/.*"dial": *"[^"]*:\([0-9][0-9]*\)".*/\1/p'

# The kernel setting that keeps caddy's reloads from resetting queued connections (Linux 5.14+).
MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"

# sbin is not on a login user's PATH on Debian; nginx lives there.
_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"'


def _resolved(p: ProxySection) -> None:
    if "{" in p.config_dir + p.nginx_conf + p.upstream_file or p.listen_ports or p.admin_ports:
        raise ValueError("Bug: proxy commands take one host's settings: pass s.proxy.for_host(index, deploy_to)")


def _admin_url(p: ProxySection, path: str) -> str:
    return f"http://{p.admin}{path}"


def _nginx(p: ProxySection, *args: str) -> str:
    return f"{_PATH} {sh('nginx', '-p', p.config_dir, '-c', p.nginx_conf, '-e', p.config_dir + '/error.log', *args)}"


def _probe(p: ProxySection) -> str:
    """The upstream port nginx answered a probe from (nothing when it does not answer)."""
    return (f"curl -s -o /dev/null -D - --max-time 2 -H {sh(PROBE_HEADER + ': 1')} "
            f"{sh(f'http://127.0.0.1:{p.listen}/')} 2>/dev/null | tr -d '\\r' | "
            f"sed -n {sh(_SEEN_SED)} | tail -n 1")


def _wait_for(cond: str, timeout: float, message: str, code: int) -> str:
    """Poll the shell condition `cond` every 0.05 s until it holds; else `message`, exit `code`."""
    tries = max(1, int(timeout / 0.05))
    return (f"i=0; until {cond}; do i=$((i + 1)); if [ $i -ge {tries} ]; then {sh('echo', message)} >&2; "
            f"exit {code}; fi; sleep 0.05; done")


def _old_workers(p: ProxySection) -> str:
    """Sets $old to the pids of the nginx master's workers now (children in /proc)."""
    return (f"old=; m=$(cat {sh(p.config_dir + '/nginx.pid')} 2>/dev/null); for f in /proc/[0-9]*/stat; do "
            f"read -r st < \"$f\" 2>/dev/null || continue; st=${{st##*) }}; set -- $st; "
            f"if [ -n \"$m\" ] && [ \"$2\" = \"$m\" ]; then w=${{f#/proc/}}; old=\"$old ${{w%/stat}}\"; fi; done; true")


def upstream_command(p: ProxySection) -> str:
    """Prints the port of the upstream the proxy serves from (nothing when the proxy does not run)."""
    _resolved(p)
    if p.kind == "caddy":
        return (f"curl -fsS --max-time 5 {sh(_admin_url(p, f'/id/{UPSTREAM_ID}/upstreams'))} 2>/dev/null | "
                f"sed -n {sh(_DIAL_SED)} | head -n 1")
    if p.kind == "nginx":
        return _probe(p)
    raise ValueError(f"Bug: proxy.kind = {p.kind!r} has no upstream")


def switch_command(p: ProxySection, port: int) -> str:
    """Points the proxy at 127.0.0.1:`port`; returns (exit 0) once it serves from it. Exit
    PROXY_SWITCH_FAILED_EXIT, the old upstream left in place, when it cannot be switched."""
    _resolved(p)
    port = int(port)
    if not 0 < port < 65536:
        raise ValueError(f"Bug: upstream port {port} is out of range")
    if p.kind == "caddy":
        body = json.dumps([{"dial": f"127.0.0.1:{port}"}], separators=(",", ":"))
        patch = (f"curl -fsS --max-time {p.switch_timeout:g} -X PATCH -H 'Content-Type: application/json' "
                 f"-d {sh(body)} {sh(_admin_url(p, f'/id/{UPSTREAM_ID}/upstreams'))}")
        return (f"{{ {patch} >/dev/null || {{ echo {sh(f'caddy at {p.admin} refused the switch to port {port}')} >&2; "
                f"exit {PROXY_SWITCH_FAILED_EXIT}; }}; }} && "
                + _wait_for(f'[ "$({upstream_command(p)})" = {port} ]', p.switch_timeout,
                            f"caddy at {p.admin} does not serve from port {port}", PROXY_SWITCH_FAILED_EXIT))
    if p.kind == "nginx":
        f = p.upstream_file
        text = f"upstream {UPSTREAM_NAME} {{ server 127.0.0.1:{port}; }}\n"
        fail = f"exit {PROXY_SWITCH_FAILED_EXIT}"
        tries = max(1, int(p.switch_timeout / 0.05))
        return "\n".join([
            f"printf %s {sh(text)} > {sh(f + '.new')} || {fail}",
            f"cp -p {sh(f)} {sh(f + '.prev')} 2>/dev/null || rm -f {sh(f + '.prev')}",
            f"mv -f {sh(f + '.new')} {sh(f)} || {fail}",
            f"if ! {_nginx(p, '-t', '-q')}; then if [ -e {sh(f + '.prev')} ]; then mv -f {sh(f + '.prev')} {sh(f)}; "
            f"fi; echo {sh(f'nginx -t refused the config with upstream port {port}; the old one stays')} >&2; {fail}; fi",
            _old_workers(p),
            f"{_nginx(p, '-s', 'reload')} || {fail}",
            # The old workers stop accepting when the master's signal reaches them; until they are
            # gone a new connection may still be served from the old upstream (bounded: a worker
            # busy with a long request may outlive the wait; it no longer accepts by then).
            f'i=0; while ( for w in $old; do kill -0 "$w" 2>/dev/null && exit 0; done; exit 1 ) && [ $i -lt {tries} ]; '
            f"do i=$((i + 1)); sleep 0.05; done",
            _wait_for(f'[ "$({_probe(p)})" = {port} ]', p.switch_timeout,
                      f"nginx on port {p.listen} does not serve from port {port} after the reload", PROXY_SWITCH_FAILED_EXIT)])
    raise ValueError(f"Bug: proxy.kind = {p.kind!r} cannot be switched")


# ---------------------------------------------------------------- installing (hosts.setup)

def caddy_config(p: ProxySection, port: int) -> str:
    """Caddy's JSON config: the admin API on loopback, not persisted; one server on `listen`
    passing everything to 127.0.0.1:`port`; no automatic HTTPS (TLS is the operator's front's)."""
    return json.dumps({
        "admin": {"listen": p.admin, "config": {"persist": False}},
        "storage": {"module": "file_system", "root": f"{p.config_dir}/data"},
        "logging": {"logs": {"default": {"writer": {"output": "file", "filename": f"{p.config_dir}/caddy.log"}}}},
        "apps": {"http": {"servers": {"occ": {
            "listen": [f":{p.listen}"],
            "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "reverse_proxy", "@id": UPSTREAM_ID,
                                    "upstreams": [{"dial": f"127.0.0.1:{port}"}]}]}],
        }}}},
    }, indent=2) + "\n"


def nginx_config(p: ProxySection) -> str:
    """nginx's main config: its pid, logs and temp files under config_dir (it runs as the
    login user), the upstream include, one server on `listen`, and the probe header."""
    d = p.config_dir
    temps = "\n".join(f"    {k}_temp_path {d}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# written by the deploy toolkit (invoke hosts.setup); the upstream is {p.upstream_file}
pid {d}/nginx.pid;
error_log {d}/error.log;
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temps}
    include {p.upstream_file};
    map $http_{PROBE_HEADER.lower().replace('-', '_')} $occ_seen {{ default ""; "1" $upstream_addr; }}
    server {{
        listen {p.listen};
        location / {{
            proxy_pass http://{UPSTREAM_NAME};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            add_header {SEEN_HEADER} $occ_seen always;
        }}
    }}
}}
"""


def _write(path: str, text: str) -> str:
    """Write `path` under a temp name and rename it in place, only when its bytes change."""
    return (f"printf %s {sh(text)} > {sh(path + '.new')} && {{ cmp -s {sh(path + '.new')} {sh(path)} && "
            f"rm -f {sh(path + '.new')} || mv -f {sh(path + '.new')} {sh(path)}; }}")


def _running(pidfile: str) -> str:
    return f'{{ [ -s {sh(pidfile)} ] && kill -0 "$(cat {sh(pidfile)})" 2>/dev/null; }}'


def migrate_req_check(path: str = MIGRATE_REQ) -> str:
    """Exit 1 with what to do unless the kernel moves a closed listening socket's queued
    connections to its SO_REUSEPORT sibling (`path` holds 1): without it every caddy switch can
    reset a connection that arrives in that instant. `path` is the kernel's file; another is
    for a test of this command only."""
    fix = ("As root on this host: sysctl -w net.ipv4.tcp_migrate_req=1, and keep it across reboots: "
           "echo net.ipv4.tcp_migrate_req=1 > /etc/sysctl.d/60-caddy-switch.conf. "
           'Or use kind = "nginx" under [proxy] (its reloads keep the listening socket).')
    off = ("caddy resets connections at each switch on this host: every config change makes it close its "
           "listening socket, and net.ipv4.tcp_migrate_req = 0 lets Linux reset the connections queued there. ")
    old = ("caddy resets connections at each switch on this host: every config change makes it close its "
           "listening socket, and this kernel has no net.ipv4.tcp_migrate_req (Linux 5.14 and newer have it) to "
           'move the connections queued there. Use kind = "nginx" under [proxy], or a newer kernel.')
    return (f"if [ ! -r {sh(path)} ]; then echo {sh(old)} >&2; exit 1; fi; "
            f"if [ \"$(cat {sh(path)})\" != 1 ]; then echo {sh(off + fix)} >&2; exit 1; fi")


def migrate_req_probe(path: str = MIGRATE_REQ) -> str:
    """Prints `ok`, or the line migrate_req_check refuses with (exit 0 either way): what a
    promotion asks each caddy host before anything changes."""
    return f"( {migrate_req_check(path)} ) 2>&1 && echo ok || true"


def proxy_setup_command(p: ProxySection, port: int) -> str:
    """Install and start the proxy (idempotent): its config (first pointed at 127.0.0.1:`port`,
    the host's app port) and its process. A proxy that already runs keeps its live upstream.
    Prints `started` when it started the proxy, `running` when it was running."""
    _resolved(p)
    d = p.config_dir
    need = f"command -v curl >/dev/null 2>&1 || {{ echo 'curl is not installed on this host' >&2; exit 1; }}"
    if p.kind == "caddy":
        pidfile = f"{d}/caddy.pid"
        conf = f"{d}/caddy.json"
        env = (f"HOME={sh(d)} XDG_DATA_HOME={sh(d + '/data')} XDG_CONFIG_HOME={sh(d + '/config')}")
        start = (f"{_PATH} command -v caddy >/dev/null 2>&1 || {{ echo 'caddy is not installed on this host' >&2; "
                 f"exit 1; }}; {env} {_PATH} setsid caddy run --config {sh(conf)} --pidfile {sh(pidfile)} "
                 f"< /dev/null >> {sh(d + '/caddy.log')} 2>&1 &")
        up = f"curl -fsS --max-time 2 {sh(_admin_url(p, f'/id/{UPSTREAM_ID}'))} >/dev/null 2>&1"
        return "\n".join([
            need, migrate_req_check(), f"mkdir -p {sh(d + '/data')} {sh(d + '/config')} || exit 1",
            f"if {_running(pidfile)} && {up}; then echo running; exit 0; fi",
            f"{_write(conf, caddy_config(p, port))} || exit 1",
            start,
            _wait_for(up, 15, f"caddy did not answer on its admin API {p.admin} (see {d}/caddy.log)", 1),
            "echo started"])
    if p.kind == "nginx":
        pidfile = f"{d}/nginx.pid"
        text = f"upstream {UPSTREAM_NAME} {{ server 127.0.0.1:{int(port)}; }}\n"
        return "\n".join([
            need, f"{_PATH} command -v nginx >/dev/null 2>&1 || {{ echo 'nginx is not installed on this host' >&2; exit 1; }}",
            f"mkdir -p {sh(d + '/tmp')} || exit 1",
            f"[ -e {sh(p.upstream_file)} ] || printf %s {sh(text)} > {sh(p.upstream_file)} || exit 1",
            f"{_write(p.nginx_conf, nginx_config(p))} || exit 1",
            f"{_nginx(p, '-t', '-q')} || exit 1",
            f"if {_running(pidfile)}; then {_nginx(p, '-s', 'reload')} || exit 1; echo running; exit 0; fi",
            f"{_nginx(p)} < /dev/null || exit 1",
            _wait_for(f'[ -n "$({_probe(p)})" ]', 15, f"nginx did not answer on port {p.listen} (see {d}/error.log)",
                      1),
            "echo started"])
    raise ValueError(f"Bug: proxy.kind = {p.kind!r} cannot be set up")


def proxy_remove_command(p: ProxySection) -> str:
    """The undo of proxy_setup_command: stop the proxy and remove config_dir."""
    _resolved(p)
    d = p.config_dir
    pidfile = f"{d}/{'caddy' if p.kind == 'caddy' else 'nginx'}.pid"
    stop = (f"if {_running(pidfile)}; then pid=$(cat {sh(pidfile)}); kill -TERM \"$pid\"; i=0; "
            f"while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; fi")
    return f"{stop}; rm -rf {sh(d)}"


def proxy_status_command(p: ProxySection) -> str:
    """`kind=<caddy|nginx> running=<0|1> upstream=<port or empty>` (parse_proxy_status)."""
    _resolved(p)
    pidfile = f"{p.config_dir}/{'caddy' if p.kind == 'caddy' else 'nginx'}.pid"
    return (f"if {_running(pidfile)}; then r=1; else r=0; fi; "
            f"printf 'kind={p.kind} running=%s upstream=%s\\n' \"$r\" \"$({upstream_command(p)})\"")


def parse_proxy_status(text: str) -> dict[str, str]:
    """proxy_status_command's line as a dict (kind, running, upstream)."""
    line = (text.strip().splitlines() or [""])[-1]
    return dict(part.split("=", 1) for part in line.split() if "=" in part)
