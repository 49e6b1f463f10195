"""What `invoke init` knows about an app, as values: `AppFacts` (what `detect` found) and its
parts (`EnvVar`, `Datasource`, `ShopifyConfig`), with the rules that read a Shopify config's
role (production, staging, dev) from its name, app name and URL."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

PackageManager = Literal["npm", "yarn", "pnpm"]   # what deploy.build knows how to install with

ENVIRONMENTS = ("local", "staging", "production")


@dataclass(frozen=True)
class EnvVar:
    """One line of `.env.example`: the name, its example value, the comment above it."""

    name: str
    value: str = ""
    comment: str = ""


@dataclass(frozen=True)
class Datasource:
    provider: str                    # sqlite | postgresql | mysql | ...
    url: str = ""                    # a literal URL (`url = "file:dev.sqlite"`), else ""
    url_var: str = ""                # `url = env("DATABASE_URL")` -> DATABASE_URL
    direct_url_var: str = ""         # `directUrl = env("DIRECT_URL")`


@dataclass(frozen=True)
class ShopifyConfig:
    name: str                        # "" for shopify.app.toml, else the <name> of shopify.app.<name>.toml
    file: str
    client_id: str = ""
    application_url: str = ""
    scopes: str = ""
    title: str = ""                  # the app's `name` in the file

    @property
    def role(self) -> str:
        """What the file's name says it is: production, staging, dev, or "" (shopify.app.toml,
        or a name that says none of them)."""
        return role_of(self.name)

    def says_dev(self) -> str:
        """Why this config is a development app ("" when nothing says so): its file suffix,
        its app name, or its URL (localhost, a tunnel, example.com, a `dev` label)."""
        if self.role == "dev":
            return f"its name ({self.file}) says dev"
        if any(w in _DEV_WORDS for w in re.split(r"[^a-z0-9]+", self.title.lower())):
            return f"its app name {self.title!r} says dev"
        host = re.sub(r"^[a-z]+://", "", self.application_url.lower()).split("/", 1)[0].split(":", 1)[0]
        labels = re.split(r"[.-]", host)
        if host and (host in ("localhost", "127.0.0.1") or host.endswith(_TUNNELS) or host == "example.com"
                     or host.endswith(".example.com") or any(w in _DEV_WORDS for w in labels)):
            return f"its application_url {self.application_url} is a development or placeholder address"
        return ""


@dataclass(frozen=True)
class AppFacts:
    """What `detect` found in an app folder; every path is relative to the app folder."""

    app: Path
    package_manager: PackageManager = "npm"
    lockfile: str = ""
    scripts: Mapping[str, str] = field(default_factory=dict)
    node_engine: str = ""
    schema: str = ""                 # prisma/schema.prisma
    datasource: Datasource | None = None
    migrations_dir: str = ""         # prisma/migrations (beside the schema, as Prisma looks for it)
    shopify: tuple[ShopifyConfig, ...] = ()
    env_example: tuple[EnvVar, ...] = ()
    prisma: bool = False             # prisma or @prisma/client is a dependency
    prisma_config: str = ""          # prisma.config.ts (or .js/.mjs/.cjs/.mts/.cts) when there is one
    lockfiles: tuple[str, ...] = ()  # every lockfile there (the first is the one used)
    lock_ignored: str = ""           # the .gitignore line that ignores the lockfile
    dependencies: bool = False       # package.json declares dependencies
    code_vars: tuple[EnvVar, ...] = ()   # what the app reads: process.env.X, the Dockerfile's ENV/ARG
    workflow_configs: tuple[tuple[str, str, str], ...] = ()   # (env, config file, workflow file) from --config
    tests: str = ""                  # the test runner found (vitest, jest, ...), "" when none
    dockerfile: str = ""             # the app's own Dockerfile (or Containerfile), "" when none: the image target
    dockerfile_migrates: str = ""    # how its start migrates the database ("" when it does not, as far as read)

    def database_todo(self) -> str:
        """Why the database settings could not be written from what was found ("" when they
        could): a Prisma app whose datasource was not found, or a provider the toolkit does
        not run (only sqlite and postgresql)."""
        ds = self.datasource
        if ds is not None and ds.provider not in ("sqlite", "postgresql"):
            return (f"{self.schema} has datasource provider {ds.provider or '(none)'!r}; the toolkit migrates, "
                    "backs up and restores only sqlite and postgresql databases")
        if ds is None and (self.prisma or self.schema or self.prisma_config):
            where = (f"{self.schema} has no datasource block" if self.schema else
                     "no schema was found (package.json prisma.schema, prisma/schema.prisma, prisma/schema/*.prisma"
                     + (f", {self.prisma_config}'s schema" if self.prisma_config else "") + ")")
            return f"Prisma is a dependency but {where}"
        return ""

    @property
    def start_script(self) -> str:
        return self.scripts.get("start", "")

    def shopify_config(self, env: str) -> ShopifyConfig | None:
        """The config an environment deploys with (`shopify_choice`)."""
        return self.shopify_choice(env)[0]

    def shopify_choice(self, env: str) -> tuple[ShopifyConfig | None, str]:
        """(config, why) for `env`: a file whose suffix says the environment (`prod`,
        `production`, `staging`, `dev`, ...), else the one the app's own workflows pass to
        `--config` for it, else (production only) shopify.app.toml when nothing about it says
        dev; local: a dev config, else shopify.app.toml when no other environment has it.
        Production never gets a config whose name, app name or URL says dev."""
        want = "dev" if env == "local" else env
        by_file = {c.file: c for c in self.shopify}
        named = [c for c in self.shopify if c.role == want]
        if named:
            c = named[0]
            return c, f"its name says {want}" + (f" ({len(named) - 1} other(s) too; the first is taken)"
                                                  if len(named) > 1 else "")
        for wenv, file, wf in self.workflow_configs:
            if wenv == want and file in by_file:
                c = by_file[file]
                if env == "production" and c.says_dev():
                    continue
                return c, f"{wf} deploys it with --config"
        plain = by_file.get("shopify.app.toml")
        if env == "production":
            if plain is None:
                return None, "no shopify.app.prod.toml or shopify.app.production.toml"
            why = plain.says_dev()
            if why:
                return None, f"shopify.app.toml is not given to production: {why}"
            return plain, "no config is named for production, and nothing in shopify.app.toml says dev"
        if env == "local":
            if plain is not None and all(self.shopify_choice(e)[0] is not plain for e in ("staging", "production")):
                return plain, "no config is named dev, and no other environment uses shopify.app.toml"
            return None, "no dev config (shopify.app.dev.toml)"
        return None, f"no shopify.app.{env}.toml (or a workflow passing --config for {env})"


_ROLES = {"production": "production", "prod": "production", "live": "production", "prd": "production",
          "staging": "staging", "stage": "staging", "stg": "staging", "preview": "staging",
          "dev": "dev", "development": "dev", "develop": "dev", "local": "dev", "test": "dev", "sandbox": "dev"}
_DEV_WORDS = {"dev", "development", "local", "localhost", "test", "sandbox"}
_TUNNELS = (".trycloudflare.com", ".ngrok.io", ".ngrok-free.app", ".ngrok.app", ".loca.lt", ".localhost")


def role_of(name: str) -> str:
    """production | staging | dev | "" from a config suffix (`prod`, `my-app-staging`, ...)."""
    for word in reversed([w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]):
        if word in _ROLES:
            return _ROLES[word]
    return ""
