"""`invoke hosts.setup`: the `[proxy]` installed and started on every host (deploy/hosts/_proxy.py's
commands), or removed. All or nothing: when a host fails, the proxies this call started on the
other hosts are stopped and removed again; a proxy that was already running is left as it was
(its live upstream too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy.errors import HostFailed, SettingsError
from deploy.hosts._group import _close, _failed, _Host, _now, _open_all, _parallel, _read_all
from deploy.hosts._proxy import (MIGRATE_REQ, migrate_req_probe, parse_proxy_status, proxy_remove_command, proxy_setup_command,
                                  proxy_status_command)
from deploy.hosts._ssh import _HostError, _run
from deploy.hosts._targets import targets

if TYPE_CHECKING:
    from deploy.config import AppSection, HostsSection, ProxySection


@dataclass(frozen=True)
class ProxyResult:
    """One host's proxy after hosts.setup: what was done (`started`, `running`, `removed`,
    `absent`, `failed`), where it listens and the app port it serves from."""

    host: str
    ok: bool
    done: str
    listen: int
    upstream: str = ""
    error: str = ""


def _hosts(section: HostsSection, proxy: ProxySection, app: AppSection | None) -> list[_Host]:
    if not proxy.enabled:
        raise SettingsError('proxy.kind = "none": there is no proxy to set up.',
                            'Set kind = "caddy" or "nginx" under [proxy] in the environment\'s settings.')
    return [_Host(t, app=app, proxy=proxy.for_host(i, t.deploy_to)) for i, t in enumerate(targets(section, app))]


def _table(results: list[ProxyResult]) -> str:
    return "\n".join(f"  {r.host}: {r.done}" + (f" ({r.error})" if r.error else "") for r in results)


def setup_proxy(section: HostsSection, proxy: ProxySection, app: AppSection | None = None) -> list[ProxyResult]:
    """Install and start the proxy on every host (first pointed at the host's app port); a
    result per host. HostFailed (the proxies it started removed again) when one fails."""
    hs = _hosts(section, proxy, app)
    done: dict[str, str] = {}

    def one(h: _Host) -> None:
        assert h.proxy is not None
        r = _run(h.conn, h.t, proxy_setup_command(h.proxy, h.t.app_port), section, f"setting up {proxy.kind}", long=True)
        done[h.t.name] = (r.stdout.strip().splitlines() or ["?"])[-1]
        r = _run(h.conn, h.t, proxy_status_command(h.proxy), section, "reading the proxy's upstream")
        h.note = parse_proxy_status(r.stdout).get("upstream", "")

    try:
        _open_all(section, hs, run_id="", release_id="", now=_now(), upload_name=None, lock=False)
        _parallel(hs, one, section.max_parallel)
        if any(h.error for h in hs):
            for h in hs:
                if done.get(h.t.name) == "started" and h.conn is not None and h.proxy is not None:
                    try:
                        _run(h.conn, h.t, proxy_remove_command(h.proxy), section, f"removing the {proxy.kind} it started")
                        done[h.t.name] = "started, then removed again"
                    except _HostError as e:
                        h.error = h.error or f"removing it again failed: {e}"
    finally:
        _close(hs)
    results = [ProxyResult(h.t.name, not h.error, "failed" if h.error else done.get(h.t.name, "?"),
                           h.proxy.listen if h.proxy else 0, h.note, h.error) for h in hs]
    if any(not r.ok for r in results):
        raise HostFailed(f"{proxy.kind} could not be set up on {sum(not r.ok for r in results)} of {len(results)} "
                         f"host(s); the ones this run started were removed again:\n{_table(results)}",
                         "Fix what the table names (is the proxy installed? a port taken?) and run hosts.setup "
                         "again; it is safe to repeat.", results=results)
    return results


def remove_proxy(section: HostsSection, proxy: ProxySection, app: AppSection | None = None) -> list[ProxyResult]:
    """Stop the proxy and remove its files on every host (the undo of setup_proxy)."""
    hs = _hosts(section, proxy, app)

    def one(h: _Host) -> None:
        assert h.proxy is not None
        _run(h.conn, h.t, proxy_remove_command(h.proxy), section, f"removing {proxy.kind}", long=True)

    try:
        _open_all(section, hs, run_id="", release_id="", now=_now(), upload_name=None, lock=False)
        _parallel(hs, one, section.max_parallel)
    finally:
        _close(hs)
    results = [ProxyResult(h.t.name, not h.error, "failed" if h.error else "removed",
                           h.proxy.listen if h.proxy else 0, "", h.error) for h in hs]
    if any(not r.ok for r in results):
        raise HostFailed(f"{proxy.kind} could not be removed on some hosts:\n{_table(results)}",
                         "Run hosts.setup --remove again; it is safe to repeat.", results=results)
    return results


def proxy_unready(section: HostsSection, proxy: ProxySection, path: str = MIGRATE_REQ) -> list[str]:
    """`host: why` for each host whose proxy would drop connections at a switch (caddy on a host
    without net.ipv4.tcp_migrate_req = 1: deploy/hosts/_proxy.py), asked before a promotion
    changes anything, since a host may lose the setting after hosts.setup (set, not kept across a
    reboot). nginx keeps its socket: nothing to ask. HostFailed when a host cannot be asked.
    `path`: the kernel's file; another is for a test of this function only."""
    if proxy.kind != "caddy":
        return []
    what = "checking the kernel setting caddy's switches need"

    def one(h: _Host) -> None:
        h.note = _run(h.conn, h.t, migrate_req_probe(path), section, what).stdout.strip()

    hs = _read_all(section, one, read=False)
    if any(h.error for h in hs):
        raise _failed(what, hs, "before anything was changed")
    return [f"{h.t.name}: {h.note}" for h in hs if h.note != "ok"]
