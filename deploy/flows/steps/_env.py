"""The env step: the app's variables file (shared/.env on hosts) written on the release target from
env/ and the secrets, and put back by its undo."""

from __future__ import annotations

from deploy import envs
from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.locations import app_database_url

from deploy.flows.steps._common import as_touches, target


def pushes_env(s: Settings) -> bool:
    """A promotion writes the variables file on the release target itself (hosts.push_env): the `env` step."""
    return target(s).writes_env


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
    """Write the variables file on every place of the release target (shared/.env on hosts); the
    undo puts the previous file back."""
    t = target(s)

    def run(ctx: StepContext):
        names = t.push_env(shared_env_text(s, environ), ctx.id)
        return f"shared/.env written on {len(names)} host(s) (0600)"

    def undo(ctx: StepContext):
        names = t.restore_env(ctx.id)
        return f"previous shared/.env back on {len(names)} host(s)"

    def finish(ctx: StepContext):
        names = t.finish_env(ctx.id)
        return f"previous shared/.env copies removed on {len(names)} host(s)"

    def shows() -> list[Touch]:
        return as_touches(t.env_shows(f"the {s.name} variables (names only here), 0600, atomic"))

    return Step("env", f"write {t.env_file()} on every host from env/ and the secrets",
                run=run, undo=undo, undo_does="put the previous shared/.env back", finish=finish, shows=shows)
