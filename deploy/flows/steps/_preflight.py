"""The preflight step: everything a promotion needs is checked before anything changes (settings,
variables, tools, a clean tree, the lockfile, the database URL, the migrations, the target); the
checks themselves run from deploy/flows/steps/work/preflight.py."""

from __future__ import annotations

from typing import Mapping

from deploy.config import Settings
from deploy.engine import Step, Touch, later

from deploy.flows.steps._verdicts import migration_verdict_lines


def preflight(s: Settings, sha: str, environ: Mapping[str, str], *, skip_shopify: bool,
              accept_destructive: tuple[str, ...] = ()) -> Step:
    def shows() -> list[Touch]:
        return [Touch("database", line) for line in migration_verdict_lines(s, sha, environ, accept_destructive)]

    run = later("deploy.flows.steps.work.preflight:check", s, sha, environ, skip_shopify=skip_shopify,
                accept_destructive=accept_destructive)
    return Step("preflight", "settings, variables (env.check), tools, clean tree, database URL, migrations "
                             "(additive or destructive: squawk)", run=run,
                shows=shows if s.database.provider != "none" else None)
