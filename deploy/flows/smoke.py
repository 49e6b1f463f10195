"""`invoke smoke`: the environment's smoke checks against the running app."""

from __future__ import annotations

from deploy import local
from deploy import smoke as sm
from deploy.errors import SettingsError
from deploy.facts import Serving, put
from deploy.targets.local import local_root
from deploy.services import Services
from deploy.flows.steps import smoke_bases


def main(svc: Services, env: str, release: str | None) -> int:
    """The smoke checks of `env` (`release`: the id /version must name); 0 when all pass."""
    s = svc.settings(env)
    state: dict = {}
    if s.is_local:
        info = local.status(local_root(s), s.local.host)
        if info is None:
            raise SettingsError(f"The {env} app is not running.", f"Start it: invoke app.start --env={env}.")
        put(state, Serving(info.url))
        release = release or info.release_id
    report = sm.check(sm.checks_for(s.smoke, smoke_bases(s, state), s.app.health_path), release_id=release,
                      retries=s.smoke.retries, backoff=s.smoke.backoff)
    svc.term.out(report.table())
    return 0 if report.ok else 1
