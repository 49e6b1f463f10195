"""A team's own app, not our example: npm workspaces with an extension package, a Postgres
Prisma schema, no tests, a .gitignore that ignores package-lock.json, three Shopify configs
(shopify.app.toml is the DEV app), process.env uses in server code and the Dockerfile.

Pure tests run `scaffold.detect`/`render` on file trees (fast); the CLI tests run `invoke init`
and the tasks through the real command line; the real-part tests start the local app and read
its environment, and push shared/.env to sshd hosts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import pytest

from deploy import envs, scaffold
from deploy.testing.adoptapp import b2b_app, team_invoke

REPO = Path(__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


# ---------------------------------------------------------------- pure: detect and render (fast)

@pytest.mark.parametrize("prod_name", ["prod", "production", "b2b-prod", "live"],
                         ids=["prod", "production", "named-prod", "live"])
def test_production_gets_the_config_named_for_it_never_the_dev_app(tmp_path, prod_name):
    f = scaffold.detect(b2b_app(tmp_path, prod_name=prod_name))
    prod, why = f.shopify_choice("production")
    assert prod is not None and prod.file == f"shopify.app.{prod_name}.toml", why
    assert f.shopify_choice("staging")[0].file == "shopify.app.staging.toml"
    files = scaffold.render(f, ".", date(2026, 1, 2))
    penv = files["env/production.env"]
    assert "devclient111" not in penv and "trycloudflare" not in penv
    assert "prodclient333" in penv
    assert "stagingclient222" in files["env/staging.env"] and "prodclient333" not in files["env/staging.env"]


@pytest.mark.parametrize("dev_url", ["https://b2b-dev.trycloudflare.com", "http://localhost:3000",
                                     "https://example.com", "https://dev.b2b.example.net"],
                         ids=["tunnel", "localhost", "example-com", "dev-label"])
def test_a_lone_shopify_app_toml_that_says_dev_is_not_given_to_production(tmp_path, dev_url):
    app = b2b_app(tmp_path, dev_url=dev_url)
    (app / "shopify.app.prod.toml").unlink()
    (app / "shopify.app.toml").write_text(f'client_id = "devclient111"\nname = "B2B"\napplication_url = "{dev_url}"\n')
    f = scaffold.detect(app)
    prod, why = f.shopify_choice("production")
    assert prod is None and "dev" in why.lower() or "development" in why
    files = scaffold.render(f, ".", date(2026, 1, 2))
    assert "devclient111" not in files["env/production.env"]
    assert 'config = ""' in files["env/production.toml"].split("[shopify]")[1]


def test_the_apps_own_workflow_config_flag_maps_an_oddly_named_config(tmp_path):
    app = b2b_app(tmp_path, prod_name="main-store", workflows={
        "release-production.yml": "jobs:\n  d:\n    steps:\n      - run: shopify app deploy --config main-store\n",
    })
    f = scaffold.detect(app)
    prod, why = f.shopify_choice("production")
    assert prod.file == "shopify.app.main-store.toml" and "release-production.yml" in why


def test_a_postgres_apps_local_database_is_postgres_and_each_env_reads_its_own_url(tmp_path):
    f = scaffold.detect(b2b_app(tmp_path))
    files = scaffold.render(f, ".", date(2026, 1, 2))
    local = tomllib.loads(files["env/local.toml"])
    assert local["database"]["provider"] == "postgresql"
    assert "SQLite" not in files["env/local.toml"] and "sqlite" not in files["env/local.env"]
    assert "file:" not in files["env/local.env"]
    urls = {env: tomllib.loads(files[f"env/{env}.toml"])["database"]["url_var"] for env in scaffold.ENVIRONMENTS}
    assert len(set(urls.values())) == 3, urls
    for env in ("staging", "production"):
        db = tomllib.loads(files[f"env/{env}.toml"])["database"]
        assert db["app_url_var"] == "DATABASE_URL" and db["direct_url_var"] != "DIRECT_URL"
    m = envs.parse_matrix(tomllib.loads(files["env/variables.toml"]), file=tmp_path / "env/variables.toml")
    assert m.variable("STAGING_DATABASE_URL").on("staging").required
    assert not m.variable("STAGING_DATABASE_URL").on("production").required


@pytest.mark.parametrize("secret_var", ["SESSION_SECRET", "APP_SESSION_KEY"], ids=["session-secret", "session-key"])
def test_the_matrix_is_seeded_from_what_the_code_and_dockerfile_read(tmp_path, secret_var):
    f = scaffold.detect(b2b_app(tmp_path, secret_var=secret_var))
    names = {e.name for e in f.code_vars}
    assert {secret_var, "REDIS_URL", "CRON_SECRET", "ENCRYPTION_KEY", "CHECKOUT_FLAG"} <= names
    assert "PORT" not in names and "NODE_ENV" not in names
    m = envs.parse_matrix(tomllib.loads(scaffold.render(f, ".", date(2026, 1, 2))["env/variables.toml"]),
                          file=tmp_path / "variables.toml")
    assert m.variable(secret_var).on("production").secret
    assert m.variable("CRON_SECRET").on("staging").required


@pytest.mark.parametrize("line", ["package-lock.json", "/package-lock.json", "*.json", "package-lock.*"],
                         ids=["name", "rooted", "glob", "star"])
def test_init_warns_with_the_fix_when_gitignore_ignores_the_lockfile(tmp_path, line):
    app = b2b_app(tmp_path, gitignore_lock=False)
    (app / ".gitignore").write_text(f"node_modules\n{line}\n")
    f = scaffold.detect(app)
    assert f.lock_ignored == line
    text = "\n".join(scaffold.notices(f, "web"))
    assert "ignores package-lock.json" in text and "Remove that line" in text and "refused" in text


def test_a_negated_rule_brings_the_lockfile_back(tmp_path):
    assert scaffold.ignores("*.json\n!package-lock.json\n", "package-lock.json") == ""


def test_init_warns_that_promote_refuses_an_app_without_a_lockfile(tmp_path):
    f = scaffold.detect(b2b_app(tmp_path, lockfiles=()))
    text = "\n".join(scaffold.notices(f, "web"))
    assert "no lockfile" in text and "refuses" in text and "npm install" in text


def test_two_lockfiles_name_the_other_and_why(tmp_path):
    f = scaffold.detect(b2b_app(tmp_path, lockfiles=("package-lock.json", "pnpm-lock.yaml")))
    text = "\n".join(scaffold.notices(f, "web"))
    assert "pnpm-lock.yaml is ignored" in text and "package-lock.json is used (npm)" in text


def test_an_app_without_tests_gets_an_honest_smoke_only_gate(tmp_path):
    f = scaffold.detect(b2b_app(tmp_path))
    assert f.tests == ""
    staging = scaffold.render(f, ".", date(2026, 1, 2))["env/staging.toml"]
    assert tomllib.loads(staging)["gate"]["required"] == []
    assert "proven only by the smoke checks" in staging.replace("\n# ", " ")


def test_init_ignores_evidence_feedback_and_deploy(tmp_path):
    rules = set(scaffold.ignore_rules(scaffold.detect(b2b_app(tmp_path)), ".").values())
    assert {"/.deploy/", "/evidence/", "/feedback/"} <= rules


def test_shared_env_text_is_read_the_same_by_python_dotenv(tmp_path):
    from dotenv import dotenv_values
    import io

    values = {"A": "plain-1", "B": "has space and $HOME", "C": 'dq"inside', "D": "x#y"}
    text = envs.render_shared_env("staging", values)
    assert dotenv_values(stream=io.StringIO(text), interpolate=True) == values


def test_shared_env_carries_multi_line_quoted_and_backslashed_values_exactly():
    from dotenv import dotenv_values
    import io

    values = {"PEM": "-----BEGIN KEY-----\nMIIB+/=\n-----END KEY-----\n", "Q": "it's \"x\" \\n \\", "CR": "a\r\nb",
              "HASH": " # not a comment", "U": "h\u00e9 \u2603", "E": ""}
    text = envs.render_shared_env("staging", values)
    assert dotenv_values(stream=io.StringIO(text, newline=None), interpolate=False) == values


def test_shared_env_refuses_a_nul_byte_and_names_the_variable():
    from deploy.errors import SettingsError

    with pytest.raises(SettingsError) as e:
        envs.render_shared_env("staging", {"WEBHOOK_KEY": "a\0secret"})
    assert "WEBHOOK_KEY" in e.value.message and "secret" not in e.value.message


# ---------------------------------------------------------------- the real CLI, as the adopting team

@pytest.fixture
def b2b_repo(tmp_path):
    root = b2b_app(tmp_path / "b2b")
    (root / "tasks.py").write_text("from deploy.tasks import ns\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "the app")
    r = team_invoke(root, "init", "--app=.")
    assert r.returncode == 0, r.stdout + r.stderr
    root.joinpath("init.out").write_text(r.stdout)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "deploy settings from invoke init")
    return root


def test_init_on_the_b2b_shape_says_what_it_found_and_what_to_fix(b2b_repo):
    out = (b2b_repo / "init.out").read_text()
    assert "ignores package-lock.json" in out and "Remove that line" in out
    assert "shopify production: shopify.app.prod.toml" in out and "shopify staging: shopify.app.staging.toml" in out
    assert "shopify local: shopify.app.toml" in out
    for name in ("SESSION_SECRET", "REDIS_URL", "CRON_SECRET", "ENCRYPTION_KEY"):
        assert name in out
    assert "no test runner found" in out
    ignore = (b2b_repo / ".gitignore").read_text()
    assert "/evidence/" in ignore and "/feedback/" in ignore and "/.deploy/" in ignore
    prod = (b2b_repo / "env/production.env").read_text()
    assert "prodclient333" in prod and "devclient111" not in prod and "trycloudflare" not in prod
    local = (b2b_repo / "env/local.env").read_text()
    assert "prodclient333" not in local and "stagingclient222" not in local and "file:" not in local


def test_an_apps_task_list_leaves_out_the_toolkits_own_tasks(b2b_repo):
    r = team_invoke(b2b_repo, "--list")
    assert r.returncode == 0, r.stderr
    assert "promote" in r.stdout and "env.push" in r.stdout
    for internal in ("reliability.report", "log.readiness", "log.blocker"):
        assert internal not in r.stdout


def test_gate_and_promote_agree_on_an_empty_gate(b2b_repo):
    r = team_invoke(b2b_repo, "gate", "--env=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gate OPEN" in r.stdout and "gate.required is empty" in r.stdout
    r = team_invoke(b2b_repo, "promote", "--to=staging", "--dry-run", "--skip-shopify")
    assert "skipped: gate.required is empty" in r.stdout, r.stdout + r.stderr


def test_env_check_does_not_require_the_shopify_token_when_the_step_is_skipped(b2b_repo):
    def token_row(out: str) -> str:
        return next(ln for ln in out.splitlines() if "SHOPIFY_APP_AUTOMATION_TOKEN" in ln and ln.count("|") > 2)

    r = team_invoke(b2b_repo, "env.check", "--env=staging")
    assert "missing" in token_row(r.stdout)                 # staging pushes to Shopify: the token is needed
    toml = b2b_repo / "env/staging.toml"
    toml.write_text(toml.read_text().replace('config = "staging"', 'config = ""'))
    r = team_invoke(b2b_repo, "env.check", "--env=staging")
    row = token_row(r.stdout)
    assert "missing" not in row and "not needed" in row and "skipped" in row


def test_local_database_url_from_env_files_is_the_one_every_task_uses(b2b_repo, pg_url):
    r = team_invoke(b2b_repo, "env.check", "--env=local")
    assert r.returncode == 2 and "DATABASE_URL" in r.stdout and "env/local.env" in r.stdout
    with (b2b_repo / "env/local.env").open("a") as f:
        f.write(f"DATABASE_URL={pg_url}\n")
    r = team_invoke(b2b_repo, "env.check", "--env=local")
    assert "DATABASE_URL" in r.stdout and "from env/local.env" in r.stdout
    r = team_invoke(b2b_repo, "db.status", "--env=local")          # no DATABASE_URL in the shell
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is not set" not in r.stdout + r.stderr and "20240101000000_init" in r.stdout


def test_status_never_reads_production_from_the_local_database_url_in_the_shell(b2b_repo, pg_url):
    with (b2b_repo / "env/local.env").open("a") as f:
        f.write(f"DATABASE_URL={pg_url}\n")
    r = team_invoke(b2b_repo, "status", "--json", extra_env={"DATABASE_URL": pg_url})
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["env"]: row for row in json.loads(r.stdout)["environments"]} if isinstance(
        json.loads(r.stdout), dict) else {row["env"]: row for row in json.loads(r.stdout)}
    assert rows["local"]["pending_migrations"] == 1
    for env in ("staging", "production"):
        assert rows[env]["pending_migrations"] is None, rows[env]
        assert f"{env.upper()}_DATABASE_URL" in (rows[env]["pending_migrations_error"] or "")


# ---------------------------------------------------------------- real parts: the local app's environment

def _app_environ(project) -> dict[str, str]:
    """The environment of the app `promote --to=local` started, as the kernel holds it."""
    pid = int((project.local_root() / "app.pid").read_text().split()[0])
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(x.decode().split("=", 1) for x in raw if b"=" in x)


@pytest.mark.parametrize("level,flag", [("warn", "false"), ("error", "true")], ids=["warn", "error"])
def test_env_files_reach_the_local_app_and_the_shell_does_not_override_them(project, level, flag):
    import secrets as pysecrets

    session = f"s-{pysecrets.token_hex(8)}"
    env = project.root / "env/local.env"
    text = env.read_text().replace("LOG_LEVEL=debug", f"LOG_LEVEL={level}")
    env.write_text(text.replace("FEATURE_BULK_ACTIONS=true", f"FEATURE_BULK_ACTIONS={flag}"))
    (project.root / "env/local.local.env").write_text(f"SESSION_SECRET={session}\n")   # git-ignored
    project.commit("local values")
    r = project.invoke("promote", "--to=local", extra_env={"LOG_LEVEL": "info", "PAYMENTS_MODE": "live"})
    assert r.returncode == 0, r.stdout + r.stderr
    got = _app_environ(project)
    assert got["LOG_LEVEL"] == level and got["FEATURE_BULK_ACTIONS"] == flag
    assert got["SESSION_SECRET"] == session and got["PAYMENTS_MODE"] == "mock"
    assert session not in r.stdout + r.stderr


@pytest.mark.parametrize("missing", ["PAYMENTS_MODE", "ANALYTICS_MODE"], ids=["payments", "analytics"])
def test_app_start_names_a_missing_variable_and_leaves_the_running_app_up(project, missing):
    r = project.invoke("promote", "--to=local")
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int((project.local_root() / "app.pid").read_text().split()[0])
    env = project.root / "env/local.env"
    env.write_text("\n".join(ln for ln in env.read_text().splitlines() if not ln.startswith(f"{missing}=")) + "\n")
    r = project.invoke("app.start", "--env=local")
    assert r.returncode == 2, r.stdout + r.stderr
    assert missing in r.stdout + r.stderr and "was not restarted" in r.stdout + r.stderr
    assert Path(f"/proc/{pid}").exists()                  # the live app was not stopped
    assert int((project.local_root() / "app.pid").read_text().split()[0]) == pid


# ---------------------------------------------------------------- real parts: shared/.env on sshd hosts

def test_env_push_writes_shared_env_0600_on_every_host_with_what_env_check_reports(stage):
    before = [h.root / "srv/occ/shared/.env" for h in stage.hosts]
    r = stage.project.invoke("env.push", "--env=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    for p in before:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        text = p.read_text()
        assert f"DATABASE_URL={stage.db_url}" in text or f'DATABASE_URL="{stage.db_url}"' in text
        assert "PAYMENTS_MODE=" in text and "HOST=127.0.0.1" not in text
        assert not list(p.parent.glob(".env.before-*")) and not list(p.parent.glob(".env.push-*"))
    assert stage.db_url not in r.stdout + r.stderr            # names only, never values
    assert "DATABASE_URL" in r.stdout


@pytest.mark.parametrize("had_file", [True, False], ids=["replaced", "created"])
def test_a_pushed_shared_env_is_undone_to_exactly_the_file_before(stage, had_file):
    from deploy import config, hosts

    s = config.load("staging", stage.project.root)
    files = [h.root / "srv/occ/shared/.env" for h in stage.hosts]
    for i, p in enumerate(files):
        if had_file:
            p.write_text(f"HOST=127.0.0.1\nOLD_{i}=kept\n")
            p.chmod(0o640)
        else:
            p.unlink()
    old = [(p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) if p.exists() else None for p in files]
    run = "run-" + os.urandom(4).hex()
    hosts.push_env(s.hosts, "NEW=1\n", run_id=run)
    hosts.push_env(s.hosts, "NEWER=2\n", run_id=run)       # a resumed push keeps the first copy
    assert all(p.read_text() == "NEWER=2\n" for p in files)
    hosts.restore_env(s.hosts, run_id=run)
    assert [(p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) if p.exists() else None for p in files] == old


def test_preflight_finds_a_missing_shared_env_before_the_build(stage):
    victim = stage.hosts[1]
    (victim.root / "srv/occ/shared/.env").unlink()
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "shared/.env is missing on 1 host(s)" in out and victim.address.split("@")[1] in out
    assert "invoke env.push --env=staging" in out
    assert not (stage.project.root / ".deploy/artifacts").exists() or not any(
        (stage.project.root / ".deploy/artifacts").glob("*.tar.gz"))


def test_env_push_to_a_protected_environment_needs_yes_and_changes_nothing_without_it(stage):
    toml = stage.project.root / "env/staging.toml"
    toml.write_text(toml.read_text().replace('kind = "remote"', 'kind = "remote"\nprotected = true', 1))
    stage.project.commit("staging protected")
    files = [h.root / "srv/occ/shared/.env" for h in stage.hosts]
    before = [p.read_bytes() for p in files]
    r = stage.project.invoke("env.push", "--env=staging", extra_env={"CI": "1"})
    assert r.returncode == 7, r.stdout + r.stderr
    assert "--yes" in r.stdout + r.stderr and [p.read_bytes() for p in files] == before
    r = stage.project.invoke("env.push", "--env=staging", "--yes", extra_env={"CI": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(b"PAYMENTS_MODE=" in p.read_bytes() for p in files)


def test_the_shared_env_commands_are_exactly_these():
    from deploy.hosts import (Target, env_finish_command, env_present_command, env_push_command,
                              env_restore_command)

    t = Target(name="deploy@h:22", host="h", port=22, user="deploy", deploy_to="/srv/b2b")
    d = "/srv/b2b/shared"
    assert env_push_command(t, "r1", "ab" * 32) == (
        f"umask 077 && mkdir -p {d} && {{ [ -e {d}/.env.before-r1 ] || [ -e {d}/.env.none-r1 ] || "
        f"{{ if [ -e {d}/.env ]; then cp -p {d}/.env {d}/.env.before-r1.tmp && mv -f {d}/.env.before-r1.tmp "
        f"{d}/.env.before-r1; else : > {d}/.env.none-r1; fi; }}; }} && cat > {d}/.env.push-r1 && "
        f"{{ printf '%s  %s\\n' {'ab' * 32} {d}/.env.push-r1 | sha256sum -c --status || {{ rm -f {d}/.env.push-r1; "
        f"echo 'shared/.env: the bytes received are not the bytes sent' >&2; exit 1; }}; }} && "
        f"chmod 600 {d}/.env.push-r1 && mv -f {d}/.env.push-r1 {d}/.env")
    assert env_restore_command(t, "r1") == (
        f"rm -f {d}/.env.push-r1; if [ -e {d}/.env.before-r1 ]; then mv -f {d}/.env.before-r1 {d}/.env; "
        f"elif [ -e {d}/.env.none-r1 ]; then rm -f {d}/.env {d}/.env.none-r1; fi")
    assert env_finish_command(t, "r1") == f"rm -f {d}/.env.before-r1 {d}/.env.none-r1"
    assert env_present_command(t) == f"if [ -f {d}/.env ]; then echo present; else echo missing; fi"
