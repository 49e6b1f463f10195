"""The app on a host: hooks and their variables, switching `current` (all at once or in
rolling batches), starting the app (restart hook, systemd user unit or bin/app), health,
and going back to the previous release."""

from __future__ import annotations

import re
import shlex
import time
from typing import TYPE_CHECKING, Sequence

from deploy import proc
from deploy.config import AppSection
from deploy.errors import SettingsError
from deploy.hosts._commands import (APP_STOPPED_EXIT, HEALTH_PENDING_EXIT, HOOK_FAILED_EXIT, SWITCH_FAILED_EXIT, _and,
                                    _p, app_of_command, fenced, go_live_command, health_check_command, hook_command,
                                    install_supervisor_command, log_tail_command, parse_app_of, parse_start_facts,
                                    same_app, start_facts_command, stop_app_command, supervise_command,
                                    switch_command, systemd_restart_command, unit_text, unlink_current_command)
from deploy.hosts._group import _Host, _parallel
from deploy.hosts._slots import converge
from deploy.hosts._ssh import _HostError, _run
from deploy.parallel import pmap
from deploy.redact import Secret, redact
from deploy.rollout import balancer_argv, batches
from deploy.smoke import probe
from deploy.startup import start_argv

if TYPE_CHECKING:
    from deploy.config import HostsSection


# ---------------------------------------------------------------- hooks

def _check_env(env: dict[str, str] | None) -> dict[str, str]:
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
    return {"RELEASE_ID": release_id, "PREVIOUS_RELEASE": (h.known.current or "") if h.state else "",
            "DEPLOY_TO": h.t.deploy_to, "DEPLOY_HOST": h.t.name, **extra}


def _hook_before_switch(section, h: _Host, release_id: str, env) -> None:
    """Last check of the prepare phase, on every host before any switches: the toolkit's
    supervisor reads shared/.env at each start, and a file it cannot give the app as written
    stops the release here, naming the line and the name; then the operator's hook."""
    if not section.restart:
        _run(h.conn, h.t, _and(install_supervisor_command(h.t), supervise_command(h.t, "check-env")),
             section, "checking shared/.env")
    if section.before_switch:
        _run(h.conn, h.t, hook_command(h.t, section.before_switch, _p(h.t, "releases", release_id),
                                       _hook_env(section, h, release_id, env)),
             section, "before_switch hook", long=True)


# ---------------------------------------------------------------- switching, starting, health, going back

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
        if k > 1 and section.settle_seconds:
            time.sleep(section.settle_seconds)   # the balancer takes the last batch back before this one goes
        if _balancer(section, group, "out"):
            if section.drain_seconds:
                time.sleep(section.drain_seconds)   # requests in flight finish before the app stops
            _parallel(group, lambda h: _go_live(section, h, release_id, env), section.max_parallel)
            # Back in even when the batch failed: its hosts are switched back next, and a host
            # left out of the balancer would serve nothing.
            _balancer(section, group, "in")
        if any(h.error for h in group):
            left = len(hs) - idx.stop
            return (f"in rolling batch {k} of {len(groups)} (the rollout stopped there"
                    + (f"; {left} host(s) of later batches were not touched" if left else "") + "), ")
    return ""


def _upstream(h: _Host) -> str:
    """The address the load balancer sends this host's requests to: its proxy's listen port
    when a per-host proxy fronts the app, else the app's port."""
    proxy = getattr(h, "proxy", None)
    return f"{h.t.host}:{proxy.listen if proxy is not None else h.t.app_port}"


def _balancer(section, group: Sequence[_Host], action: str) -> bool:
    """Run `hosts.balancer` for a batch (rollout.balancer_argv) on this machine; False, with
    every host of the batch failed and the command's tail in its error, when it fails. True
    when no balancer is set."""
    if not section.balancer:
        return True
    argv = balancer_argv(section.balancer, action, [_upstream(h) for h in group])
    r = proc.run(argv, timeout=section.command_timeout)
    if r.ok:
        return True
    for h in group:
        h.error = h.error or (f"the load balancer command ({action}) failed (exit {r.returncode}): "
                              f"{shlex.join(argv)}: {r.tail(3)}")
    return False


def _go_live(section, h: _Host, release_id: str, env) -> None:
    t = h.t
    if h.proxy is not None:
        return converge(section, h, release_id)   # beside the live app, then the proxy switches (_slots.py)
    if section.restart:
        hook = hook_command(t, section.restart, _p(t, "current"), _hook_env(section, h, release_id, env))
        r = _run(h.conn, t, go_live_command(t, release_id, h.known.current != release_id, hook,
                                            section.health_command, h.fence),
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
    if h.known.current != release_id:
        _run(h.conn, t, fenced(t, h.fence, switch_command(t, release_id)), section, "switching current")
    h.switched = True
    h.release = release_id
    _start_app(section, h, release_id, env, "restart")
    _health(section, h)


def _contract(h: _Host) -> AppSection:
    return h.app or AppSection()


def _start_app(section, h: _Host, release_id: str, env, what: str) -> None:
    """Restart the app on `current`: the operator's restart hook when one is set, else the
    toolkit's supervisor (a systemd user unit where usable, else bin/app)."""
    t = h.t
    if section.restart:
        _run(h.conn, t, fenced(t, h.fence, hook_command(t, section.restart, _p(t, "current"),
                                                         _hook_env(section, h, release_id, env))),
             section, f"{what} hook" if what == "restart" else f"restart hook ({what})", long=True)
        return
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
        cmd = _and(install_supervisor_command(t), supervise_command(t, "check-env"),
                   systemd_restart_command(t, unit_text(t, app.port_var, t.app_port, argv)))
    else:
        cmd = _and(install_supervisor_command(t), supervise_command(t, "restart", app.port_var, t.app_port, argv))
    _run(h.conn, t, fenced(t, h.fence, cmd), section, f"starting the app ({what})", long=True)


def _ready_timeout(section, h: _Host) -> float:
    return section.health_timeout or _contract(h).ready_timeout


def _health(section, h: _Host) -> None:
    t = h.t
    timeout = _ready_timeout(section, h)
    if section.health_command:
        cmd = health_check_command(t, section.health_command)
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
        r = _run(h.conn, h.t, log_tail_command(h.t), section, "reading the log")
    except _HostError:
        return ""
    text = r.stdout.strip()
    return f"; last lines of {_p(h.t, 'logs', 'app.log')}:\n{text}" if text else ""


def http_health(url: str, timeout: float, interval: float = 0.1) -> str:
    """GET `url` until it answers 2xx/3xx (redirects not followed) or `timeout` passes;
    '' when healthy, else the last problem."""
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
        prev = h.known.current
        if prev == release_id:
            return
        try:
            prev = _if_same_app(section, h, release_id, prev) if prev else None
            _restore(section, h, prev, env)
            h.release = prev
            h.switched = False
        except _HostError as e:
            h.error = (h.error + f"; switching back to {prev or '(none)'} FAILED: {e}").lstrip("; ")

    pmap(back, hs, section.max_parallel)


def _restore(section, h: _Host, prev: str | None, env) -> None:
    t = h.t
    if h.proxy is not None:
        return converge(section, h, prev)
    if prev:
        _run(h.conn, t, fenced(t, h.fence, switch_command(t, prev)), section, f"switching back to {prev}")
        _start_app(section, h, prev, env, "after switching back")
        if not section.restart:
            _health(section, h)   # the supervisor returns at once; a hook returns when its app is up
    else:
        # There was no release before: no app may be left running (the hook's app is the
        # operator's to stop; the toolkit's supervisor or unit is stopped here).
        cmd = unlink_current_command(t) if section.restart else _and(stop_app_command(t), unlink_current_command(t))
        _run(h.conn, t, fenced(t, h.fence, cmd), section,
             "stopping the app and removing current (there was no previous release)")


def _if_same_app(section, h: _Host, release_id: str, prev: str) -> str | None:
    """`prev` when it is a release of the same app as `release_id`, else None: going back to
    another app's release (the environment switched apps) would start the wrong app, so the
    undo stops the app instead, as after a first release."""
    if release_id in h.known.releases and prev in h.known.releases:
        apps = h.known.app_of()   # both were there when the state was read
    else:
        r = _run(h.conn, h.t, app_of_command(h.t, release_id, prev), section, "reading which app the releases are")
        apps = parse_app_of(r.stdout)
    return prev if same_app(apps, release_id, prev) else None


def _after_switch_summary(hs: Sequence[_Host]) -> str:
    stuck = [h.t.name for h in hs if h.switched]
    if stuck:
        return (f"after switching; {', '.join(stuck)} could not be switched back at once (an undo of this release "
                "tries again: in a promotion its `release` row says whether that worked, else `invoke hosts.rollback`)")
    return "after switching; every host that switched was returned to its previous release"
