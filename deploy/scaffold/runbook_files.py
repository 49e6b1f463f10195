"""The runbooks `init` writes for the app (the ones `invoke runbooks.check` expects), each
procedure step a real task."""

from __future__ import annotations

from typing import Sequence

from deploy.scaffold.facts import AppFacts


def runbooks(f: AppFacts, app_rel: str, tasks: Sequence[str]) -> dict[str, str]:
    """The runbooks `invoke runbooks.check` expects (deploy.runbooks.RUNBOOKS), written for this
    app: each procedure step is a real task; the staging runbook lists every task, so each is
    in some runbook."""
    pm = f.package_manager
    db = f.datasource.provider if f.datasource else "none"
    shop = ", ".join(c.file for c in f.shopify) or "none"
    found = (f"Detected by `invoke init` in `{app_rel}`: package manager **{pm}** ({f.lockfile or 'no lockfile'}), "
             f"start script `{f.start_script or '(none)'}`, Prisma provider **{db}** with migrations in "
             f"`{f.migrations_dir or '(none)'}`, Shopify configs {shop}.")
    every = "\n".join(f"invoke {name} --help" for name in tasks)
    return {
        "deployment_staging.md": f"""# Runbook: deploying to staging

{found}

A promotion takes everything from one commit of the app: the artifact (built once, reused), the
migrations and the Shopify configuration (`shopify app deploy --path` on that commit's checkout).

```sh
invoke env.check --env=staging
invoke evidence.collect --sha=HEAD --env=staging --files=evidence/vitest.json
invoke gate --env=staging
invoke promote --to=staging --dry-run
invoke promote --to=staging
invoke status
```

If a promotion was killed: `invoke promote --to=staging --resume` finishes it,
`invoke promote --to=staging --abort` undoes it. `invoke lock.status --env=staging` shows who
holds the environment.

## Every task

```sh
{every}
```
""",
        "rollback.md": """# Runbook: rolling back

```sh
invoke rollback --env=staging --dry-run
invoke rollback --env=staging --yes
invoke rollback --env=production --db=restore --yes
invoke hosts.releases --env=production
invoke shopify.versions --env=production
```

`--db=keep` (default) leaves the database; `--db=restore` loads the backup taken before the
release being rolled back (Prisma migrations are forward-only: no down.sql).
""",
        "hotfix.md": """# Runbook: a hotfix

Rehearse it on staging first; the drill is recorded and timed:

```sh
invoke hotfix.drill --env=staging
invoke promote --to=staging --sha=HOTFIX_SHA
invoke promote --to=production --sha=HOTFIX_SHA
```
""",
        "local_bootstrap.md": f"""# Runbook: a working local app

```sh
invoke bootstrap
invoke promote --to=local
invoke app.stop --env=local
invoke rollback --env=local
```

`invoke bootstrap` and `invoke promote --to=local` use the same database: `database.url` of
`env/local.toml` (relative to the folder of `{f.schema or 'prisma/schema.prisma'}`).
""",
        "prisma_staging_postgres.md": f"""# Runbook: the Prisma database on staging and production

Migrations in `{f.migrations_dir or 'prisma/migrations'}` are {db}; staging and production run
Postgres, with their own migrations folder (`database.migrations_dir` in env/<env>.toml,
relative to the app folder).

```sh
invoke db.status --env=staging
invoke db.backup --env=staging
invoke db.verify-backup --env=staging
invoke db.migrate --env=staging
invoke db.restore --env=staging --yes
```

Prisma writes no down.sql: a failed promotion restores the backup taken just before it, or,
after a first promotion, empties the database again.
""",
        "go_live.md": """# Runbook: going live (production)

```sh
invoke approve --env=production --role=product --by=NAME
invoke golive.check --env=production
invoke promote --to=production --yes
```

Production gets exactly the artifact staging proved, after the approvals its settings require.
""",
    }
