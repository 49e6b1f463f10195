"""`invoke app.start` / `invoke app.stop` for the local environment."""

from __future__ import annotations

from deploy import envs, local
from deploy.errors import SettingsError
from deploy.flows.steps import not_needed
from deploy.targets.local import local_root, restart_app, stop_app
from deploy.services import Services


def _local(svc: Services, env: str):
    s = svc.settings(env)
    if not s.is_local:
        raise SettingsError(f"{env} is not a local environment (environment.kind = {s.environment.kind!r}).",
                            "app.start/app.stop manage the server of a local environment; use hosts.* for hosts.")
    return s


def stop(svc: Services, env: str) -> None:
    s = _local(svc, env)
    stopped = stop_app(s)
    svc.term.out(f"{env}: app server stopped" if stopped else f"{env}: no app server was running")


def start(svc: Services, env: str) -> None:
    s = _local(svc, env)
    environ = svc.environ_for(s.name)
    # Everything the app needs is checked before the running app is stopped: a missing
    # variable or release leaves the live app as it is.
    if (s.root / envs.MATRIX_FILE).is_file():
        m = envs.load_matrix(s.root)
        if s.name in m.environments:
            report = envs.check(m, s.name, s.root, svc.environ, not_needed=not_needed(s, skip_shopify=True))
            if not report.ok:
                bad = ", ".join(f"{r.variable} ({r.status})" for r in report.errors)
                raise SettingsError(f"{env}: the app was not restarted (the running one, if any, was left as it is): "
                                    f"{bad}.\n{envs.render_check(report)}",
                                    f"Set them in env/{env}.env (secrets: env/{env}.local.env or the shell), "
                                    f"then run `invoke app.start --env={env}` again.")
    if local.current(local_root(s)) is None:
        raise SettingsError(f"{env} has no release to start yet.", f"Promote one first: invoke promote --to={env}.")
    info = restart_app(s, environ)
    svc.term.out(f"{env}: serving {local.current(local_root(s))} on {info.url} (pid {info.pid})")
