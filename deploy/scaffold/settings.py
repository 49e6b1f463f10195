"""The settings file `init` writes per environment, `env/<env>.toml`: the release contract,
where the app runs, its database, Shopify config, gate, smoke and watch, each key's base
said in a comment."""

from __future__ import annotations

from pathlib import Path

from deploy.scaffold.detection import install_argv
from deploy.scaffold.facts import AppFacts
from deploy.scaffold.variables import toml_str


def local_db_url(f: AppFacts) -> str:
    ds = f.datasource
    if ds and ds.url.startswith("file:"):
        return ds.url
    for e in f.env_example:
        if ds and e.name == ds.url_var and e.value.startswith("file:"):
            return e.value
    return "file:./dev.sqlite"


def env_toml(f: AppFacts, env: str, app_rel: str) -> str:
    todo = f.database_todo()
    # Never guess a database: an unsupported provider is not rendered as sqlite or postgresql.
    ds = f.datasource if not todo else None
    provider = ds.provider if ds else "none"
    shop = f.shopify_config(env)
    mig = f.migrations_dir or "prisma/migrations"
    out = [f"# `{env}`: written by `invoke init` for the app at `{app_rel}`. Every path below says its base.",
           "", "[environment]"]
    if env == "local":
        what = {"sqlite": "SQLite", "postgresql": "Postgres"}.get(provider, "no database")
        out += ['kind = "local"', f'description = "this machine: {app_rel}, {what}"']
    else:
        out += ['kind = "remote"', f'description = "{env}"']
    out += [f"app_dir = {toml_str(app_rel)}                 # the app folder, relative to the project root (DEPLOY_ROOT)"]
    if env != "local":
        out += [f'app_url = ""                # the public URL of the app in {env} (e.g. "https://{env}.example.com"): '
                "smoke-checked after each release once set; empty: the hosts only"]
    if env == "production":
        out += ["protected = true", "requires_staging_run = true", 'staging_env = "staging"']
    out += ["", "[app]",
            "# The release contract, the same on every environment. \"auto\" is what was detected:",
            f"# install `{' '.join(install_argv(f.package_manager, lockfile=bool(f.lockfile)))}`"
            + (f", build `{f.scripts['build']}`" if f.scripts.get("build") else ", no build script")
            + ", dev dependencies pruned,",
            "# start `" + (f.start_script or '(no start script: set start = ["node", "server.js"])') + "`.",
            'start = "auto"',
            'port_var = "PORT"                  # the variable the app reads its port from',
            'health_path = "/"                  # 2xx/3xx passes (a Shopify app\'s / redirects to its auth)']
    if env == "local":
        out += ["", "[local]", 'root = ".deploy/local"           # releases/, current, logs; relative to the project root',
                'host = "127.0.0.1"', "port = 0                         # a free loopback port, kept across releases"]
    else:
        out += ["", "[hosts]", f'hosts = ["deploy@{env}-1.example.internal"]   # user@host[:port], one per server',
                'deploy_to = "/srv/app"                # on each host (absolute)',
                'shared_files = [".env"]               # relative to <deploy_to>/shared/, linked into each release',
                "push_env = true                       # each promotion writes shared/.env from env/ and the secrets",
                '# key_file = "~/.ssh/deploy_ed25519"  # the SSH key (default: ssh_config, the agent, ~/.ssh/id_*)',
                '# known_hosts = "~/.ssh/known_hosts"  # host keys to trust (unknown or changed keys are refused)',
                "# app_ports = [3000]                  # one app port per host (default: app.port, 3000)"]
        if f.dockerfile:
            out += image_lines(f, env)
    out += ["", "[database]"]
    if todo:
        out += ["# TODO(invoke init): THE DATABASE IS NOT SET UP. " + todo + ".",
                "# Set provider (\"sqlite\" or \"postgresql\"), url or url_var and migrations_dir (relative to",
                "# app_dir) below by hand; until then no promotion migrates or backs up the app's database."]
    app_var = (ds.url_var if ds else "") or "DATABASE_URL"
    if env == "local":
        out += [f'provider = "{provider}"' if ds else 'provider = "none"']
        if ds and provider == "sqlite":
            out += [f"url = {toml_str(local_db_url(f))}             # Prisma style: relative to the folder of "
                    f"schema.prisma ({app_rel}/{Path(mig).parent.as_posix()})"]
        elif ds:
            out += [f'url_var = "{app_var}"                # read from env/local.env (or env/local.local.env), '
                    "as env.check reports it",
                    f'direct_url_var = "{ds.direct_url_var}"' if ds.direct_url_var else
                    'direct_url_var = ""                  # no directUrl in the schema']
    else:
        if ds:
            up = env.upper()
            out += ['provider = "postgresql"                 # staging and production run on Postgres',
                    f'url_var = "{up}_DATABASE_URL"        # this environment\'s own variable (a secret): a shell '
                    "holding another environment's URL is never read for this one",
                    f'app_url_var = "{app_var}"            # the name the app reads it by (env.push writes it so)',
                    (f'direct_url_var = "{up}_DIRECT_URL"' if ds.direct_url_var else 'direct_url_var = ""')]
        else:
            out += ['provider = "none"']
    if ds:
        pg_mig = mig
        if env != "local" and provider == "sqlite":
            pg_mig = (Path(mig).parent / "postgres" / "migrations").as_posix()
            out += [f"# {app_rel}/{mig} is written for SQLite: keep a Postgres schema and its migrations",
                    "# beside it (docs/runbooks/prisma_staging_postgres.md) and point migrations_dir there."]
        out += [f"migrations_dir = {toml_str(pg_mig)}   # relative to app_dir (Prisma's migrations folder)",
                'backup_dir = ".deploy/backups"              # relative to the project root']
    out += ["", "[shopify]"]
    if env == "local" or shop is None:
        why = "no Shopify push from a laptop" if env == "local" else f.shopify_choice(env)[1]
        out += [f'config = ""                     # {why}: the Shopify step is skipped']
    else:
        out += [f"config = {toml_str(shop.name or 'shopify.app.toml')}        # {shop.file} in app_dir: "
                f"{f.shopify_choice(env)[1]}"]
    out += ["", "[gate]"]
    if env == "local":
        out += ["required = []                  # the laptop promotes without evidence; staging gates"]
    elif not f.tests:
        out += ["# No test runner was found in the app, so no evidence is required yet: promotions are",
                "# proven only by the smoke checks and the watch (the app starts and answers health_path),",
                "# not by tests. Add Vitest and its report, then require it (docs/adopting.md, \"Starting",
                "# without tests\"):  required = [\"vitest\"]",
                "required = []",
                'evidence_dir = "evidence"      # relative to the project root', "max_age_hours = 24"]
    else:
        out += ['required = ["vitest"]          # add "playwright", "lighthouse" once CI writes them',
                'evidence_dir = "evidence"      # relative to the project root', "max_age_hours = 24"]
    out += ["", "[smoke]", "retries = 5                    # no checks listed: app.health_path on the app and each host",
            "", "[watch]", f"window_seconds = {2 if env == 'local' else 60}"]
    return "\n".join(out) + "\n"


def image_lines(f: AppFacts, env: str) -> list[str]:
    """The image target's settings, commented out, for an app with a Dockerfile: a team that
    releases images uncomments them (the toolkit's docs/runbooks/deployment_staging.md, section 7)."""
    out = ["", f"# {f.dockerfile} found: to release a container image by digest instead of a file tree, uncomment",
           "# these (and add [proxy]: each host's proxy switches to the new container once it is healthy).",
           "# [release]", '# target = "image"', "# [image]",
           '# registry = "ghcr.io"                 # host[:port] of your registry (TLS verified; ca_file for a private CA)',
           '# repository = "acme/app"              # the same for staging and production: production runs staging\'s digest',
           '# build = "toolkit"                    # the artifact on `base`, started by [app] start; or '
           f'"{f.dockerfile}" (the app\'s own)',
           '# base = "docker.io/library/node:20-bookworm-slim"',
           '# username_var = "REGISTRY_USERNAME"   # NAMES of the variables holding the registry login (secrets)',
           '# password_var = "REGISTRY_PASSWORD"']
    if f.dockerfile_migrates:
        out += [f"# Note: {f.dockerfile}: {f.dockerfile_migrates}",
                "# on every container start. The toolkit migrates from the promoted commit under its lock, after a",
                "# backup: keep build = \"toolkit\", or give the image a start command without the migration."]
    return out

