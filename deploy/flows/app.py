"""`invoke app.start` / `invoke app.stop` for the local environment."""

from __future__ import annotations

from deploy import local
from deploy.errors import SettingsError
from deploy.flows.steps import local_root, restart_local, stop_local


def _local(svc, env: str):
    s = svc.settings(env)
    if not s.is_local:
        raise SettingsError(f"{env} is not a local environment (environment.kind = {s.environment.kind!r}).",
                            "app.start/app.stop manage the server of a local environment; use hosts.* for hosts.")
    return s


def stop(svc, env: str) -> None:
    s = _local(svc, env)
    stopped = stop_local(s)
    svc.term.out(f"{env}: app server stopped" if stopped else f"{env}: no app server was running")


def start(svc, env: str) -> None:
    s = _local(svc, env)
    info = restart_local(s, svc.environ)
    svc.term.out(f"{env}: serving {local.current(local_root(s))} on {info.url} (pid {info.pid})")
