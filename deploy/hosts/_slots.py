"""Zero downtime on one host: with a proxy (`[proxy]`, deploy/hosts/_proxy.py) the app runs on
one port of a pair (the host's app port, and that plus `proxy.spare_port_offset`), each port
supervised on its own (`bin/app --slot PORT`, pidfile run/app-PORT.pid, its release in
run/app-PORT.release). Putting a release live on a host (`converge`):

    1. read the host: the proxy's live upstream, and per port whether its app runs and which release
    2. the live port already runs the release (a resumed or repeated run): `current` points at it,
       the other port is stopped; done
    3. else `current` switches, the release starts on the other port, and is health-checked there
       (on the host: GET 127.0.0.1:<port><app.health_path>); a failure stops it and puts `current` back:
       the proxy was never switched, the old app kept serving
    4. the proxy switches to the new port (returns once it serves from it)
    5. the old app keeps running `proxy.drain_seconds` (requests in flight finish), then stops

A rollback and an undo converge on the release they go back to, the same way. A run killed at any
point leaves the proxy on one port whose app runs: a resume converges on the release, an abort
on the previous one, each from what the host shows (step 1), never from what the run remembers.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from deploy.config import AppSection
from deploy.errors import SettingsError
from deploy.hosts._commands import (_and, _p, fenced, install_supervisor_command, parse_start_facts, sh, start_facts_command,
                                    stop_app_command, supervisor_path, switch_command, unlink_current_command)
from deploy.hosts._proxy import parse_proxy_status, proxy_status_command
from deploy.hosts._proxy import switch_command as proxy_switch_command
from deploy.hosts._ssh import _HostError, _run
from deploy.startup import start_argv

if TYPE_CHECKING:
    from deploy.config import ProxySection
    from deploy.hosts._group import _Host
    from deploy.hosts._values import Target


# ---------------------------------------------------------------- commands (pure)

def slot_ports(t: Target, p: ProxySection) -> tuple[int, int]:
    """The host's pair of app ports."""
    return t.app_port, t.app_port + p.spare_port_offset


def slot_command(t: Target, port: int, action: str, port_var: str = "", argv=()) -> str:
    """`bin/app --slot PORT start|restart|stop|status ...`."""
    if action in ("start", "restart"):
        return sh(supervisor_path(t), "--slot", port, action, port_var, port, "--", *argv)
    return sh(supervisor_path(t), "--slot", port, action)


def slots_state_command(t: Target, p: ProxySection) -> str:
    """The proxy's status line, `current`, and a `slot PORT running|stopped RELEASE` line per port."""
    lines = [proxy_status_command(p), f"printf 'current=%s\\n' \"$(readlink {sh(_p(t, 'current'))} 2>/dev/null)\""]
    for port in slot_ports(t, p):
        # The host's app port may still run the app started before the proxy mode (bin/app's own pidfile).
        legacy = f" || {sh(supervisor_path(t), 'status')} >/dev/null 2>&1" if port == t.app_port else ""
        lines.append(f"if [ -x {sh(supervisor_path(t))} ] && {{ {slot_command(t, port, 'status')} >/dev/null 2>&1"
                     f"{legacy}; }}; then s=running; else s=stopped; fi; printf 'slot {port} %s %s\\n' \"$s\" "
                     f"\"$(cat {sh(_p(t, 'run', f'app-{port}.release'))} 2>/dev/null)\"")
    return "; ".join(lines)


def parse_slots_state(text: str) -> tuple[dict[str, str], str | None, dict[int, tuple[bool, str]]]:
    """(proxy status, current release, port -> (running, release)) from slots_state_command's output."""
    proxy: dict[str, str] = {}
    current = None
    slots: dict[int, tuple[bool, str]] = {}
    for line in text.splitlines():
        if line.startswith("kind="):
            proxy = parse_proxy_status(line)
        elif line.startswith("current="):
            link = line.split("=", 1)[1].strip()
            current = link.rsplit("/", 1)[-1] if link else None
        elif line.startswith("slot "):
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit():
                slots[int(parts[1])] = (parts[2] == "running", parts[3] if len(parts) > 3 else "")
    return proxy, current, slots


def start_slot_command(t: Target, port: int, release_id: str, port_var: str, argv) -> str:
    """Install bin/app, note the port's release, and (re)start the app of `port` from `current`."""
    return _and(install_supervisor_command(t), sh("mkdir", "-p", _p(t, "run")),
                f"printf '%s\\n' {sh(release_id)} > {sh(_p(t, 'run', f'app-{port}.release'))}",
                slot_command(t, port, "restart", port_var, argv))


def slot_health_command(t: Target, port: int, path: str, timeout: float) -> str:
    """On the host, GET 127.0.0.1:`port``path` until it answers 2xx/3xx (redirects not followed);
    exit 1 at once when the port's app exited, or after `timeout` seconds (a subshell: it can be chained)."""
    url = f"http://127.0.0.1:{port}{path}"
    return (f"( end=$(( $(date +%s) + {max(1, int(timeout + 0.999))} )); "
            f"while :; do code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 {sh(url)} 2>/dev/null); "
            f"case $code in 2??|3??) exit 0 ;; esac; "
            f"if ! {slot_command(t, port, 'status')} >/dev/null 2>&1; then "
            f"echo \"the app on port {port} exited\" >&2; exit 1; fi; "
            f"if [ $(date +%s) -ge $end ]; then echo \"no 2xx/3xx from {url} (last: ${{code:-no answer}}) "
            f"within {timeout:g}s\" >&2; exit 1; fi; sleep 0.1; done )")


def stop_slot_command(t: Target, port: int) -> str:
    """Stop the app of `port`; for the host's app port also the app supervised before the proxy
    mode (bin/app's own pidfile, or its systemd unit)."""
    cmd = f"if [ -x {sh(supervisor_path(t))} ]; then {slot_command(t, port, 'stop')}; fi"
    if port == t.app_port:
        cmd += "; " + stop_app_command(t)
    return cmd + f"; rm -f {sh(_p(t, 'run', f'app-{port}.release'))}"


# ---------------------------------------------------------------- on a host

def _argv(section, h: _Host, release_id: str) -> list[str]:
    app = h.app or AppSection()
    pkg: dict = {}
    if not isinstance(app.start, tuple):
        r = _run(h.conn, h.t, start_facts_command(h.t, release_id, want_package=True, probe_systemd=False),
                 section, "reading the start command")
        _, text = parse_start_facts(r.stdout)
        try:
            pkg = json.loads(text or "")
        except ValueError:
            raise _HostError(f"releases/{release_id}/package.json is missing or not JSON, so the start script "
                             "is unknown (set [app] start)") from None
    try:
        return start_argv(app, pkg if isinstance(pkg, dict) else {}, f"releases/{release_id}")
    except SettingsError as e:
        raise _HostError(e.message) from None


def _proxy_of(h: _Host) -> ProxySection:
    """The host's proxy settings (a host reaches this module only in proxy mode)."""
    if h.proxy is None:
        raise _HostError("no [proxy] is set for this host, so it has no second port to start on")
    return h.proxy


def _read(section, h: _Host) -> tuple[int | None, str | None, dict[int, tuple[bool, str]]]:
    t, p = h.t, _proxy_of(h)
    r = _run(h.conn, t, slots_state_command(t, p), section, "reading the proxy and the app's ports")
    proxy, current, slots = parse_slots_state(r.stdout)
    if proxy.get("running") != "1":
        raise _HostError(f"the {p.kind} proxy is not running on this host (start it with `invoke hosts.setup`)")
    live = proxy.get("upstream", "")
    return (int(live) if live.isdigit() else None), current, slots


def converge(section, h: _Host, release_id: str | None) -> None:
    """Make `release_id` the one the host's proxy serves (module docstring), or with None stop
    every port's app and remove `current` (the undo of a first release)."""
    t, p = h.t, _proxy_of(h)
    app_port, spare = slot_ports(t, p)
    live, current, slots = _read(section, h)
    if release_id is None:
        _run(h.conn, t, fenced(t, h.fence, "; ".join([stop_slot_command(t, app_port), stop_slot_command(t, spare),
                                                      unlink_current_command(t)])),
             section, "stopping the app on both ports and removing current (there was no previous release)")
        return
    if live in (app_port, spare) and slots.get(live) == (True, release_id):
        # Already served (a resumed run, or a repeat): only `current` and the other port are put right.
        other = spare if live == app_port else app_port
        cmds = [] if current == release_id else [switch_command(t, release_id)]
        _run(h.conn, t, fenced(t, h.fence, _and(*cmds, stop_slot_command(t, other)) if cmds
                               else stop_slot_command(t, other)),
             section, f"{release_id} already live behind the proxy: stopping port {other}")
        h.switched = True
        h.release = release_id
        return
    new = spare if live == app_port else app_port
    app = h.app
    port_var = app.port_var if app else "PORT"
    argv = _argv(section, h, release_id)
    timeout = section.health_timeout or (app.ready_timeout if app else 30.0)
    try:
        # Two round trips: `current` and the start; then health and, only when it passed, the proxy.
        # The free port already running this release (a killed run started it, and its health
        # check may still switch the proxy to it) is kept, never restarted under the proxy.
        keep = slots.get(new) == (True, release_id)
        first = _and(switch_command(t, release_id) if current != release_id else "",
                     "" if keep else start_slot_command(t, new, release_id, port_var, argv))
        if first:
            _run(h.conn, t, fenced(t, h.fence, first), section,
                 f"switching current and starting {release_id} on port {new}", long=True)
        # The health wait is outside the fence; the switch after it checks the fence: a killed run's
        # command still waiting here never switches the proxy after another run took the host.
        _run(h.conn, t, f"{slot_health_command(t, new, app.health_path if app else '/', timeout)} && "
                        f"{{ {fenced(t, h.fence, proxy_switch_command(p, new))}\n}}",
             section, f"health check of {release_id} on port {new} (then the {p.kind} switch to it)", long=True)
    except _HostError as e:
        # Never switched to: stop it, `current` back to what it was; the proxy still serves the old app.
        serving = slots.get(live, (False, ""))[1] if live else ""
        before = serving or (current if current != release_id else None)
        back = switch_command(t, before) if before else unlink_current_command(t)
        try:
            _run(h.conn, t, fenced(t, h.fence, "; ".join([stop_slot_command(t, new), back])), section,
                 f"stopping port {new} and putting current back")
        except _HostError as e2:
            raise _HostError(f"{e}; putting it back FAILED: {e2}") from None
        raise _HostError(f"{e} (the proxy was not switched: port {live or '-'} kept serving)") from None
    h.switched = True
    h.release = release_id
    if live in (app_port, spare):
        if p.drain_seconds and slots.get(live, (False, ""))[0]:
            time.sleep(p.drain_seconds)
        try:
            _run(h.conn, t, fenced(t, h.fence, stop_slot_command(t, live)), section,
                 f"stopping the old app on port {live}", long=True)
        except _HostError as e:
            h.note = (h.note + "; " if h.note else "") + f"the old app on port {live} could not be stopped: {e}"
