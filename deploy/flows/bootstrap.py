"""`invoke bootstrap`: a working local app (.env, database, migrations, seed, tools)."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import bootstrap
from deploy.services import Services


def main(svc: Services) -> int:
    """Set up (or check again) the local environment; the report's exit code."""
    r = bootstrap.bootstrap(svc.root, svc.settings("local"), svc.environ, datetime.now(timezone.utc))
    svc.term.out(bootstrap.render(r))
    return r.exit_code
