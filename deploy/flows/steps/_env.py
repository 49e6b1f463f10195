"""The env step: shared/.env written on every host from env/ and the secrets, and put back by its undo."""

from __future__ import annotations

from deploy import envs, hosts
from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.locations import app_database_url

from deploy.flows.steps._common import target


def pushes_env(s: Settings) -> bool:
    """A promotion writes shared/.env on the hosts itself (hosts.push_env): the `env` step."""
    return target(s).shared and s.hosts.push_env


def shared_env_text(s: Settings, environ) -> str:
    """shared/.env for the hosts of `s`: the environment's matrix values (what env.check
    reports) and its database URL under database.app_url_var."""
    values = dict(envs.app_values(s.root, s.name, environ))
    # The Shopify CLI's token deploys the app's configuration; the app never reads it, so it
    # stays on the deploying machine and is never written onto the app's hosts.
    values.pop(s.shopify.token_var, None)
    for name in (s.database.url_var, s.database.direct_url_var):
        if name and name != s.database.app_url_var and name.startswith(f"{s.name.upper()}_"):
            values.pop(name, None)   # the deployer's own name for it; the app reads app_url_var
    if s.database.provider == "postgresql":
        values[s.database.app_url_var] = app_database_url(s, environ) or ""   # postgresql: a URL, or SettingsError
    return envs.render_shared_env(s.name, values)


def env_push(s: Settings, environ) -> Step:
    """Write shared/.env on every host (hosts.push_env); the undo puts the previous file back."""

    def run(ctx: StepContext):
        names = hosts.push_env(s.hosts, shared_env_text(s, environ), run_id=ctx.id)
        return f"shared/.env written on {len(names)} host(s) (0600)"

    def undo(ctx: StepContext):
        names = hosts.restore_env(s.hosts, run_id=ctx.id)
        return f"previous shared/.env back on {len(names)} host(s)"

    def finish(ctx: StepContext):
        names = hosts.finish_env(s.hosts, run_id=ctx.id)
        return f"previous shared/.env copies removed on {len(names)} host(s)"

    def shows() -> list[Touch]:
        return [Touch(t.name, f"{t.deploy_to}/shared/.env: the {s.name} variables (names only here), 0600, atomic")
                for t in hosts.targets(s.hosts, s.app)]

    return Step("env", f"write {s.hosts.deploy_to}/shared/.env on every host from env/ and the secrets",
                run=run, undo=undo, undo_does="put the previous shared/.env back", finish=finish, shows=shows)
