"""`invoke app.start` / `invoke app.stop` for the local environment."""

from __future__ import annotations

import os

from deploy import cli
from deploy.errors import SettingsError


def _local(env: str):
    s = cli.settings(env)
    if not s.is_local:
        raise SettingsError(f"{env} is not a local environment (environment.kind = {s.environment.kind!r}).",
                            "app.start/app.stop manage the server of a local environment; use hosts.* for hosts.")
    return s


def stop(env: str) -> None:
    from deploy.flows.steps import stop_local

    s = _local(env)
    stopped = stop_local(s)
    cli.out(f"{env}: app server stopped" if stopped else f"{env}: no app server was running")


def start(env: str) -> None:
    from deploy import local
    from deploy.flows.steps import local_root, restart_local

    s = _local(env)
    info = restart_local(s, os.environ)
    cli.out(f"{env}: serving {local.current(local_root(s))} on {info.url} (pid {info.pid})")
