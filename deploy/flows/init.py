"""`invoke init --app=PATH`: the starting files for putting the toolkit on an existing app."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from deploy import proc, runbooks, scaffold
from deploy.errors import SettingsError
from deploy.services import Services


def main(svc: Services, app: str, namespace, *, force: bool = False) -> None:
    """Write the starting files for the app in `app`; its runbook lists `namespace`'s tasks
    (tasks.py's Invoke collection, passed down so this flow never imports the task layer)."""
    # Files go to the project being set up: DEPLOY_ROOT, else the folder `invoke` runs in
    # (there is no env/ yet to find it by).
    root = Path(svc.environ["DEPLOY_ROOT"]).resolve() if svc.environ.get("DEPLOY_ROOT") else Path.cwd().resolve()
    folder = (root / app).resolve() if not Path(app).is_absolute() else Path(app).resolve()
    if not folder.is_dir():
        raise SettingsError(f"--app={app}: {folder} is not a folder.", "Pass the app's folder (with package.json).")
    facts = scaffold.detect(folder)
    rel = os.path.relpath(folder, root)
    tasks = runbooks.user_facing(runbooks.tasks_of(namespace))
    files = scaffold.render(facts, rel, datetime.now(timezone.utc).date(), tasks)
    result = scaffold.write(root, files, force=force)
    ds = facts.datasource
    svc.term.out(f"app {rel}: {facts.package_manager} ({facts.lockfile or 'no lockfile'}), "
            f"start `{facts.start_script or '-'}`, Prisma {ds.provider if ds else 'none'} "
            f"({facts.migrations_dir or 'no migrations'}), Shopify configs "
            f"{', '.join(c.file for c in facts.shopify) or 'none'}, "
            f"{len(facts.env_example)} variable(s) in .env.example, {len(facts.code_vars)} read by its code")
    for line in scaffold.notices(facts, rel):
        svc.term.out(line)
    todo = facts.database_todo()
    if todo:
        svc.term.out(f"warning: {todo}: env/<env>.toml got [database] provider = \"none\" and a TODO. "
                     "Set database.provider (sqlite or postgresql), url or url_var, and migrations_dir there.")
    for f in result.written:
        svc.term.out(f"wrote {f}")
    for f in result.kept:
        svc.term.out(f"kept  {f} (exists; --force replaces it)")
    missing = _not_ignored(root, scaffold.ignore_rules(facts, rel))
    if missing:
        try:
            scaffold.add_ignore_rules(root / ".gitignore", missing)
        except (OSError, UnicodeError) as e:
            why = getattr(e, "strerror", None) or "not UTF-8 text"
            svc.term.out(f"warning: {root / '.gitignore'} could not be updated ({why}): add these rules to it "
                         "yourself (state, local secrets and the local database stay out of git): " + " ".join(missing))
        else:
            svc.term.out("added to .gitignore (state, local secrets and the local database stay out of git): "
                         + " ".join(missing))
    svc.term.out("next: fill in env/staging.env, env/production.env and [hosts] in env/<env>.toml, then "
            "`invoke env.check --env=local` and `invoke promote --to=local`")


def _not_ignored(root: Path, rules: dict[str, str]) -> list[str]:
    """The rules whose sample path git does not ignore yet (none outside a git repository)."""

    out = []
    for sample, rule in rules.items():
        r = proc.run(["git", "-C", str(root), "check-ignore", "-q", "--no-index", sample])
        if r.returncode == 1:
            out.append(rule)
    return out
