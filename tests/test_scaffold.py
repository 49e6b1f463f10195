"""`invoke init`: detection and rendering as data, then the real CLI on an app in the shape of
Shopify's React Router template, used the way docs/adopting.md says (its own git repository,
a tasks.py that imports the toolkit's tasks), whose settings `env.check` and `promote
--dry-run` accept."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pytest

from deploy import config, envs, scaffold
from deploy.testing.project import REPO, _git

FIXTURE = REPO / "tests/fixtures/rr_app"
TODAY = date(2026, 11, 30)


# ---------------------------------------------------------------- detection (data)

@pytest.mark.parametrize("text, expected", [
    ('datasource db {\n  provider = "sqlite"\n  url      = "file:dev.sqlite"\n}\n',
     scaffold.Datasource("sqlite", "file:dev.sqlite")),
    ('datasource db {\n  provider  = "postgresql"\n  url       = env("DATABASE_URL")\n'
     '  directUrl = env("DIRECT_URL")\n}\n', scaffold.Datasource("postgresql", "", "DATABASE_URL", "DIRECT_URL")),
    ('// datasource old { provider = "mysql" }\ndatasource db {\n  provider = "postgresql" // Supabase\n'
     '  url = env("POSTGRES_PRISMA_URL")\n}\n', scaffold.Datasource("postgresql", "", "POSTGRES_PRISMA_URL")),
    ('generator client {\n  provider = "prisma-client-js"\n}\n', None),
], ids=["template-sqlite-literal", "postgres-with-direct-url", "comments-ignored", "no-datasource"])
def test_parse_datasource(text, expected):
    assert scaffold.parse_datasource(text) == expected


def test_parse_env_example_keeps_names_values_and_comments():
    text = ('# Shopify app\nSHOPIFY_API_KEY=\nexport SCOPES="write_products,read_orders"\n\n'
            "DATABASE_URL='file:dev.sqlite'\nPORT=3000 # the dev port\nnot a line\nPORT=4000\n")
    assert scaffold.parse_env_example(text) == (
        scaffold.EnvVar("SHOPIFY_API_KEY", "", "Shopify app"),
        scaffold.EnvVar("SCOPES", "write_products,read_orders"),
        scaffold.EnvVar("DATABASE_URL", "file:dev.sqlite"),
        scaffold.EnvVar("PORT", "3000"),
    )


@pytest.mark.parametrize("lockfile, pm, argv", [
    ("package-lock.json", "npm", ("npm", "ci", "--no-audit", "--no-fund")),
    ("yarn.lock", "yarn", ("yarn", "install", "--frozen-lockfile")),
    ("pnpm-lock.yaml", "pnpm", ("pnpm", "install", "--frozen-lockfile")),
    (None, "npm", ("npm", "install", "--no-audit", "--no-fund")),
], ids=["npm", "yarn", "pnpm", "none"])
def test_package_manager_comes_from_the_lockfile(tmp_path, lockfile, pm, argv):
    if lockfile:
        (tmp_path / lockfile).write_text("")
    assert scaffold.package_manager(tmp_path) == pm
    assert scaffold.install_argv(pm, lockfile=lockfile is not None) == argv


def test_detect_reads_a_react_router_template_app():
    f = scaffold.detect(FIXTURE)
    assert (f.package_manager, f.lockfile) == ("npm", "package-lock.json")
    assert f.start_script == "react-router-serve ./build/server/index.js"
    assert f.scripts["build"] == "react-router build"
    assert f.schema == "prisma/schema.prisma" and f.migrations_dir == "prisma/migrations"
    assert f.datasource == scaffold.Datasource("sqlite", "file:dev.sqlite")
    assert [(c.name, c.file) for c in f.shopify] == [("staging", "shopify.app.staging.toml"), ("", "shopify.app.toml")]
    # The template's only file has the placeholder https://example.com: production is not given it.
    assert f.shopify_config("production") is None and "example.com" in f.shopify_choice("production")[1]
    assert f.shopify_config("staging").client_id == "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
    assert [e.name for e in f.env_example] == ["SHOPIFY_API_KEY", "SHOPIFY_API_SECRET", "SHOPIFY_APP_URL", "SCOPES",
                                               "DATABASE_URL", "PORT", "NODE_ENV"]


def test_detect_refuses_a_folder_without_package_json(tmp_path):
    with pytest.raises(Exception) as e:
        scaffold.detect(tmp_path)
    assert "no package.json" in str(e.value)


def _prisma_app(root: Path, files: dict[str, str], deps=None) -> Path:
    """A minimal Prisma app: package.json with `deps` (default @prisma/client and prisma) and `files`."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    deps = {"@prisma/client": "^6.7.0", "prisma": "^6.7.0"} if deps is None else deps
    (root / "package.json").write_text(json.dumps({"name": "shop", "scripts": {"start": "node s.js"},
                                                   "dependencies": deps}))
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


PG = 'datasource db {\n  provider = "postgresql"\n  url = env("DATABASE_URL")\n}\n'
MODEL = "model Shop {\n  id Int @id\n}\n"


def test_detect_reads_a_multi_file_schema_folder_and_a_prisma_config(tmp_path):
    app = _prisma_app(tmp_path / "folder", {"prisma/schema/models.prisma": MODEL, "prisma/schema/db.prisma": PG})
    (app / "prisma/schema/migrations").mkdir()
    f = scaffold.detect(app)
    assert (f.schema, f.migrations_dir) == ("prisma/schema/db.prisma", "prisma/schema/migrations")
    assert f.datasource == scaffold.Datasource("postgresql", "", "DATABASE_URL") and f.database_todo() == ""
    app = _prisma_app(tmp_path / "config", {"db/main.prisma": PG,
                                            "prisma.config.ts": 'import { defineConfig } from "prisma/config";\n'
                                                                'export default defineConfig({ schema: "db/main.prisma" });\n'})
    f = scaffold.detect(app)
    assert (f.schema, f.datasource.provider, f.prisma_config) == ("db/main.prisma", "postgresql", "prisma.config.ts")


@pytest.mark.parametrize("files, says", [
    ({"prisma/schema.prisma": PG.replace("postgresql", "mysql")}, "provider 'mysql'"),
    ({"prisma.config.ts": "export default defineConfig({ schema: process.env.SCHEMA })\n"}, "prisma.config.ts"),
    ({}, "no schema was found"),
    ({"prisma/schema.prisma": MODEL}, "has no datasource block"),
], ids=["mysql", "config-without-a-literal-path", "no-schema", "no-datasource"])
def test_a_prisma_database_that_cannot_be_set_up_is_a_loud_todo_not_a_guess(tmp_path, files, says):
    f = scaffold.detect(_prisma_app(tmp_path / "app", files))
    assert says in f.database_todo()
    rendered = scaffold.render(f, "app", TODAY)
    for env in scaffold.ENVIRONMENTS:
        text = rendered[f"env/{env}.toml"]
        assert "TODO(invoke init): THE DATABASE IS NOT SET UP" in text and says in text
        assert tomllib.loads(text)["database"] == {"provider": "none"}      # never sqlite or postgresql guessed


def test_an_app_without_prisma_has_no_database_and_no_todo(tmp_path):
    f = scaffold.detect(_prisma_app(tmp_path / "app", {}, deps={"express": "4"}))
    assert f.database_todo() == "" and "TODO" not in scaffold.render(f, "app", TODAY)["env/staging.toml"]


# ---------------------------------------------------------------- rendering (data)

@pytest.fixture
def rendered(tmp_path):
    files = scaffold.render(scaffold.detect(FIXTURE), "app", TODAY)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path, files


def test_rendered_settings_are_valid_and_say_what_was_detected(rendered):
    root, files = rendered
    from deploy.runbooks import RUNBOOKS

    assert sorted(files) == sorted([".github/workflows/deploy-production.yml", ".github/workflows/deploy-staging.yml",
                                    ".github/workflows/rollback.yml", ".github/workflows/hotfix.yml",
                                    *(f"docs/runbooks/{n}" for n in RUNBOOKS), "env/local.env", "env/local.toml",
                                    "env/production.env", "env/production.toml", "env/staging.env",
                                    "env/staging.toml", "env/variables.toml"])
    local = config.load("local", root)
    assert local.is_local and local.environment.app_dir == "app"
    assert (local.database.provider, local.database.url) == ("sqlite", "file:dev.sqlite")
    assert local.database.migrations_dir == "prisma/migrations" and local.shopify.config == ""
    assert (local.app.start, local.app.port_var, local.app.health_path) == ("auto", "PORT", "/")
    assert "start `react-router-serve ./build/server/index.js`" in files["env/local.toml"]
    staging = config.load("staging", root)
    assert staging.database.provider == "postgresql" and staging.shopify.config == "staging"
    assert staging.database.migrations_dir == "prisma/postgres/migrations"   # the SQLite folder cannot serve Postgres
    production = config.load("production", root)
    # The template's shopify.app.toml has the placeholder URL https://example.com: not production's.
    assert production.shopify.config == "" and production.environment.requires_staging_run
    assert "react-router-serve ./build/server/index.js" in files["docs/runbooks/deployment_staging.md"]


def test_rendered_matrix_is_seeded_from_env_example_and_shopify_configs(rendered):
    root, files = rendered
    m = envs.load_matrix(root)
    by = {v.name: v for v in m.variables}
    assert {"SHOPIFY_API_KEY", "SHOPIFY_API_SECRET", "SHOPIFY_APP_URL", "SCOPES", "DATABASE_URL", "PORT", "NODE_ENV",
            "SHOPIFY_APP_AUTOMATION_TOKEN"} <= set(by)
    assert by["SHOPIFY_API_SECRET"].on("staging").secret and not by["SHOPIFY_API_SECRET"].on("local").secret
    assert by["DATABASE_URL"].on("production").secret and by["SCOPES"].parity == "same"
    assert "SHOPIFY_API_KEY=0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e" in files["env/staging.env"]
    assert "DATABASE_URL=file:dev.sqlite" in files["env/local.env"]
    assert "SECRET" not in files["env/staging.env"].replace("# ", "")     # secrets never in committed files
    assert envs.check(m, "local", root, {}).ok
    yaml = pytest.importorskip("yaml")
    for name in ("deploy-staging", "deploy-production"):
        doc = yaml.safe_load(files[f".github/workflows/{name}.yml"])
        steps = doc["jobs"]["deploy"]["steps"]
        assert all("@" in s["uses"] and len(s["uses"].split("@")[1]) == 40 for s in steps if "uses" in s)
    wf = files[".github/workflows/deploy-staging.yml"]
    assert "SHOPIFY_API_SECRET: ${{ secrets.SHOPIFY_API_SECRET }}" in wf and "npm ci" in wf
    assert "${{ github.sha }}" not in wf.split("run:", 1)[1].split("\n", 1)[0]


def test_ignore_rules_cover_state_local_secrets_and_the_sqlite_file():
    f = scaffold.detect(FIXTURE)
    assert scaffold.ignore_rules(f, ".") == {".deploy/ledger.db": "/.deploy/", "env/local.local.env": "/env/*.local.env",
                                             "prisma/dev.sqlite": "/prisma/dev.sqlite*",
                                             "evidence/manifest.json": "/evidence/",
                                             "feedback/deployment.md": "/feedback/"}
    assert scaffold.ignore_rules(f, "web")["web/prisma/dev.sqlite"] == "/web/prisma/dev.sqlite*"


def test_init_adds_the_gitignore_rules_that_are_missing_and_keeps_the_rest(team_app):
    (team_app / ".gitignore").write_text("node_modules/\n# mine\nbuild")      # no final newline
    r = team_invoke(team_app, "init", "--app=.")
    assert "added to .gitignore" in r.stdout and "/.deploy/ /env/*.local.env /evidence/ /feedback/ /prisma/dev.sqlite*" in r.stdout
    assert (team_app / ".gitignore").read_text() == (
        f"node_modules/\n# mine\nbuild\n\n{scaffold.IGNORE_HEADER}\n/.deploy/\n/env/*.local.env\n/evidence/\n/feedback/\n/prisma/dev.sqlite*\n")
    for sample in (".deploy/ledger.db", "env/staging.local.env", "prisma/dev.sqlite", "prisma/dev.sqlite-journal"):
        assert subprocess.run(["git", "-C", str(team_app), "check-ignore", "-q", "--no-index", sample]).returncode == 0
    again = team_invoke(team_app, "init", "--app=.")
    assert "added to .gitignore" not in again.stdout
    assert (team_app / ".gitignore").read_text().count("/.deploy/") == 1


def test_init_with_a_gitignore_it_cannot_read_names_the_rules_and_changes_nothing(team_app):
    raw = b"node_modules/\n\xff\xfe not text\n"
    (team_app / ".gitignore").write_bytes(raw)
    r = team_invoke(team_app, "init", "--app=.")
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr
    assert "could not be updated (not UTF-8 text)" in r.stdout and "/.deploy/ /env/*.local.env" in r.stdout
    assert (team_app / ".gitignore").read_bytes() == raw


def test_init_leaves_a_gitignore_that_has_the_rules_alone(team_app):
    text = "/.deploy/\n/env/*.local.env\nprisma/*.sqlite*\n/evidence/\n/feedback/\n"
    (team_app / ".gitignore").write_text(text)
    assert "added to .gitignore" not in team_invoke(team_app, "init", "--app=.").stdout
    assert (team_app / ".gitignore").read_text() == text


def test_write_keeps_existing_files_unless_forced(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env/local.toml").write_text("# mine\n")
    files = {"env/local.toml": "new\n", "env/staging.toml": "new\n"}
    r = scaffold.write(tmp_path, files)
    assert r.written == ("env/staging.toml",) and r.kept == ("env/local.toml",)
    assert (tmp_path / "env/local.toml").read_text() == "# mine\n"
    r = scaffold.write(tmp_path, files, force=True)
    assert r.written == ("env/local.toml", "env/staging.toml") and (tmp_path / "env/local.toml").read_text() == "new\n"


# ---------------------------------------------------------------- the real CLI, as an adopting team

def team_invoke(root: Path, *args: str) -> subprocess.CompletedProcess:
    """`invoke` run in the team's repository with its own tasks.py; the toolkit importable
    as if pip-installed (no DEPLOY_ROOT: the project is found from the current folder)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOY_ROOT", "DEPLOY_LEDGER_URL")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def team_app(tmp_path):
    root = tmp_path / "shop-app"
    shutil.copytree(FIXTURE, root)
    (root / "tasks.py").write_text("from deploy.tasks import ns  # the toolkit's tasks (docs/adopting.md)\n")
    (root / ".gitignore").write_text("/.deploy/\n.env\nnode_modules/\n/build/\nprisma/*.sqlite*\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "the app")
    return root


def test_init_writes_settings_that_env_check_and_promote_dry_run_accept(team_app):
    r = team_invoke(team_app, "init", "--app=.")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "npm (package-lock.json)" in r.stdout and "Prisma sqlite (prisma/migrations)" in r.stdout
    assert "wrote env/variables.toml" in r.stdout
    assert tomllib.loads((team_app / "env/local.toml").read_text())["environment"]["app_dir"] == "."
    _git(team_app, "add", "-A")
    _git(team_app, "commit", "-qm", "deploy settings from invoke init")

    r = team_invoke(team_app, "env.check", "--env=local")
    assert r.returncode == 0, r.stdout + r.stderr
    r = team_invoke(team_app, "promote", "--to=local", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"commit: {_git(team_app, 'rev-parse', 'HEAD')}" in r.stdout and "dry run: nothing was changed" in r.stdout
    r = team_invoke(team_app, "promote", "--to=staging", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--config staging" in r.stdout
    r = team_invoke(team_app, "runbooks.check")       # the runbooks name only real tasks, and every task
    assert r.returncode == 0, r.stdout + r.stderr
    r = team_invoke(team_app, "env.check", "--env=staging")          # what is left to fill in, named
    assert r.returncode != 0 and "PORT" in r.stdout and "SHOPIFY_APP_AUTOMATION_TOKEN" in r.stdout
    assert not (team_app / ".deploy").exists()


def test_init_is_idempotent_and_never_overwrites_without_force(team_app):
    assert team_invoke(team_app, "init", "--app=.").returncode == 0
    mine = team_app / "env/staging.toml"
    mine.write_text(mine.read_text().replace("staging-1.example.internal", "10.0.0.5"))
    before = {p: p.read_text() for p in (team_app / "env").iterdir()}
    r = team_invoke(team_app, "init", "--app=.")
    assert r.returncode == 0, r.stderr
    assert "wrote" not in r.stdout and "kept  env/staging.toml (exists; --force replaces it)" in r.stdout
    assert {p: p.read_text() for p in (team_app / "env").iterdir()} == before
    r = team_invoke(team_app, "init", "--app=.", "--force")
    assert "wrote env/staging.toml" in r.stdout and "10.0.0.5" not in mine.read_text()


def test_init_warns_and_names_what_to_set_for_a_mysql_prisma_app(team_app, tmp_path):
    app = _prisma_app(tmp_path / "mysql-app", {"prisma/schema.prisma": PG.replace("postgresql", "mysql")})
    r = team_invoke(team_app, "init", f"--app={app}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: prisma/schema.prisma has datasource provider 'mysql'" in r.stdout
    assert "Set database.provider (sqlite or postgresql), url or url_var, and migrations_dir" in r.stdout
    assert tomllib.loads((team_app / "env/staging.toml").read_text())["database"]["provider"] == "none"


@pytest.mark.parametrize("files, says", [
    ({"package.json": '{"name": "shop", "scripts": ["build", "start"]}'},
     'package.json: "scripts" is a list, not an object'),
    ({"prisma/schema.prisma": b'datasource db {\n  provider = "sqlite" // caf\xe9\n}\n'},
     "prisma/schema.prisma: not UTF-8 text"),
    ({".env.example": b"# Cl\xe9 de l'API\nSHOPIFY_API_KEY=\n"}, ".env.example: not UTF-8 text"),
    ({"package.json": b'{"name": "caf\xe9"}'}, "package.json: not UTF-8 text"),
], ids=["scripts-list", "schema-latin1", "env-example-latin1", "package-json-latin1"])
def test_init_names_an_unreadable_app_file_without_a_traceback(team_app, tmp_path, files, says):
    app = _prisma_app(tmp_path / "app", {})
    for rel, content in files.items():
        (app / rel).parent.mkdir(parents=True, exist_ok=True)
        (app / rel).write_bytes(content if isinstance(content, bytes) else content.encode())
    r = team_invoke(team_app, "init", f"--app={app}")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and says in r.stderr and str(app) in r.stderr
    assert not (team_app / "env").exists()                    # nothing written


def test_init_on_a_folder_that_is_not_an_app_is_one_clear_error(team_app, tmp_path):
    r = team_invoke(team_app, "init", f"--app={tmp_path / 'nothing'}")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "is not a folder" in r.stderr
    (tmp_path / "empty").mkdir()
    r = team_invoke(team_app, "init", f"--app={tmp_path / 'empty'}")
    assert r.returncode != 0 and "no package.json" in r.stderr


# ---------------------------------------------------------------- a Dockerfile: the image target offered

TEMPLATE_DOCKERFILE = """FROM node:20-alpine
RUN apk add --no-cache openssl
EXPOSE 3000
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json* ./
RUN npm ci --omit=dev && npm cache clean --force
COPY . .
RUN npm run build
CMD ["npm", "run", "docker-start"]
"""


def _app_with(tmp_path: Path, name: str, text: str, scripts: dict[str, str]) -> Path:
    import json

    app = tmp_path / "app"
    shutil.copytree(FIXTURE, app)
    pkg = json.loads((app / "package.json").read_text())
    pkg["scripts"].update(scripts)
    (app / "package.json").write_text(json.dumps(pkg, indent=2))
    if name:
        (app / name).write_text(text)
    return app


def _uncommented(toml: str) -> str:
    lines, on = [], False
    for line in toml.splitlines():
        if line == "# [release]":
            on = True
        if on and line.startswith("# "):
            lines.append(line[2:])
            on = not line.startswith("# password_var")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, text, scripts, migrates", [
    ("Dockerfile", TEMPLATE_DOCKERFILE,
     {"docker-start": "npm run setup && npm run start", "setup": "prisma generate && prisma migrate deploy"},
     "its start (`npm run docker-start`) runs `prisma migrate deploy`"),
    ("Containerfile", 'FROM node:20-bookworm-slim\nCOPY . /app\nCMD ["npm", "start"]\n', {}, ""),
    ("Dockerfile", "FROM node:20\nCOPY . .\nCMD npx prisma migrate deploy && node build/server.js\n", {},
     "its command (`npx prisma migrate deploy && node build/server.js`) runs a migration itself"),
], ids=["shopify-template-docker-start-migrates", "containerfile-plain-start", "shell-cmd-migrates"])
def test_init_offers_the_image_target_for_an_app_with_a_dockerfile(tmp_path, name, text, scripts, migrates):
    app = _app_with(tmp_path, name, text, scripts)
    facts = scaffold.detect(app)
    assert (facts.dockerfile, facts.dockerfile_migrates) == (name, migrates)
    files = scaffold.render(facts, "app", TODAY)
    said = "\n".join(scaffold.notices(facts, "app"))
    assert f"image target: app/{name} found" in said
    assert ("runs `prisma migrate deploy`" in said or "runs a migration itself" in said) == bool(migrates)
    root = tmp_path / "project"
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    # As written, nothing changes: the tree target stays until a person uncomments the block.
    assert config.load("staging", root).release.target == "tree"
    assert "# [image]" not in files["env/local.toml"]
    for env in ("staging", "production"):
        (root / f"env/{env}.toml").write_text(_uncommented(files[f"env/{env}.toml"]))
        s = config.load(env, root)
        assert s.release.target == "image" and s.image.build == "toolkit"
        assert (s.image.registry, s.image.repository) == ("ghcr.io", "acme/app")
        assert (s.image.username_var, s.image.password_var) == ("REGISTRY_USERNAME", "REGISTRY_PASSWORD")
    assert ("keep build = \"toolkit\"" in files["env/staging.toml"]) == bool(migrates)


def test_init_offers_no_image_target_without_a_dockerfile(tmp_path):
    facts = scaffold.detect(_app_with(tmp_path, "", "", {}))
    assert facts.dockerfile == ""
    files = scaffold.render(facts, "app", TODAY)
    assert "[image]" not in files["env/staging.toml"]
    assert not [n for n in scaffold.notices(facts, "app") if "image target" in n]
