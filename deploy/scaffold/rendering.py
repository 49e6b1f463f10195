"""Facts to files, touching nothing: `render` (every starting file, path -> text) and
`ignore_rules` (what must stay out of git)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Sequence

from deploy.scaffold.facts import ENVIRONMENTS, AppFacts
from deploy.scaffold.runbook_files import runbooks
from deploy.scaffold.settings import env_toml, local_db_url
from deploy.scaffold.variables import dotenv_text, matrix_toml
from deploy.scaffold.workflows import hotfix_workflow, rollback_workflow, workflow


def render(f: AppFacts, app_rel: str, today: date, tasks: Sequence[str] = ()) -> dict[str, str]:
    """Every starting file for the app at `app_rel` (relative to the project root): path ->
    text. `tasks`: the task names the runbooks list (the toolkit's, at `invoke init`)."""
    files = {f"env/{env}.toml": env_toml(f, env, app_rel) for env in ENVIRONMENTS}
    files["env/variables.toml"] = matrix_toml(f, today)
    for env in ENVIRONMENTS:
        files[f"env/{env}.env"] = dotenv_text(f, env)
    for env in ENVIRONMENTS[1:]:
        files[f".github/workflows/deploy-{env}.yml"] = workflow(f, env, app_rel)
    files[".github/workflows/rollback.yml"] = rollback_workflow(f, app_rel)
    files[".github/workflows/hotfix.yml"] = hotfix_workflow(f, app_rel)
    for name, text in runbooks(f, app_rel, tasks).items():
        files[f"docs/runbooks/{name}"] = text
    return files


def ignore_rules(f: AppFacts, app_rel: str) -> dict[str, str]:
    """What must stay out of git, as (a path to test with `git check-ignore`) -> (the rule to
    add to .gitignore): the toolkit's state, local secrets, the local SQLite database."""
    rules = {".deploy/ledger.db": "/.deploy/", "env/local.local.env": "/env/*.local.env",
             "evidence/manifest.json": "/evidence/", "feedback/deployment.md": "/feedback/"}
    if f.datasource and f.datasource.provider == "sqlite" and f.schema:
        url = local_db_url(f)
        name = url.split(":", 1)[1].split("?", 1)[0]
        if name and not name.startswith("/"):
            base = (Path(app_rel) / Path(f.schema).parent).as_posix()
            db = Path(os.path.normpath(f"{base}/{name}")).as_posix()
            if not db.startswith("../"):           # an app outside the project has its own .gitignore
                rules[db] = f"/{db}*"
    return rules
