"""A new team's first hours with the toolkit, on an app that is not our example: npm
workspaces with an extension package, a Postgres Prisma schema with three migrations, no
tests, a `.gitignore` that ignores package-lock.json, three Shopify configs and
`process.env.X` reads in its server code (deploy/testing/adoptapp.py, runnable: a Node
standard-library server, the Prisma stand-ins of deploy/testing/genapp.py).

The test drives it through the real `invoke` CLI from the app's own repository (its own
tasks.py) and follows only what the toolkit prints, as docs/adopting.md tells a reader to:
`invoke init`, then each command; when one fails or warns, the test asserts that the message
names the fix and applies exactly that fix, then runs it again. Local runs on real Postgres
(its own database), staging on two real sshd hosts with its own database and the ledger in a
shared Postgres (DEPLOY_LEDGER_URL), without a Shopify account (--skip-shopify). What a user
would check is asserted: each host's app answers with the release the ledger says and its own
environment's values, the migrations are applied on staging's database, status shows the right
release per environment and never reads another environment's database, a rollback.

The fast tests below check the messages the flow depends on, case by case."""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import urllib.request
from pathlib import Path

import psycopg
import pytest

from deploy.testing.adoptapp import MIGRATIONS, b2b_app, team_invoke
from deploy.testing.stage import free_port


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return json.loads(r.read())


def _set(path: Path, key: str, value: str) -> None:
    """Set `key = value` in the TOML section line that starts with `key` (the line init wrote)."""
    text = path.read_text()
    new, n = re.subn(rf"(?m)^#?\s*{re.escape(key)} = .*$", f"{key} = {value}", text, count=1)
    assert n == 1, f"{key} not in {path}:\n{text}"
    path.write_text(new)


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


class Team:
    """The team's repository and shell: what they exported, what they ran."""

    def __init__(self, root: Path):
        self.root = root
        self.shell: dict[str, str] = {}

    def invoke(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return team_invoke(self.root, *args, extra_env=self.shell, timeout=timeout)

    def commit(self, message: str) -> str:
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-qm", message)
        return _git(self.root, "rev-parse", "HEAD")


def _out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


@pytest.fixture
def team_app(tmp_path):
    tag = secrets.token_hex(3)
    root = b2b_app(tmp_path / f"b2b-{tag}", runnable=True, extension=f"theme-block-{tag}", name=f"b2b-{tag}")
    (root / "tasks.py").write_text("from deploy.tasks import ns\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "the app as the team has it")
    team = Team(root)
    yield team
    team.invoke("app.stop", "--env=local", timeout=60)


def test_a_new_team_takes_its_b2b_app_through_init_local_and_staging_following_only_the_messages(
        team_app, pg_cluster, sshd_farm, sshd_hosts):
    team, root = team_app, team_app.root
    assert not (root / "package-lock.json").read_text() == ""
    assert "package-lock.json" not in _git(root, "ls-files")          # the template's .gitignore keeps it out

    # ---- init: it says what it found and warns about the ignored lockfile with the fix
    r = team.invoke("init", "--app=.")
    assert r.returncode == 0, _out(r)
    assert "ignores package-lock.json" in r.stdout and "Remove that line" in r.stdout
    assert "no test runner found" in r.stdout and "shopify production: shopify.app.prod.toml" in r.stdout
    assert "next:" in r.stdout and "invoke env.check --env=local" in r.stdout
    team.commit("deploy settings from invoke init")

    # The ledger every runner shares (docs/adopting.md: set it before the first promotion, so
    # status sees every environment's history in one place)
    ledger_url = pg_cluster.create_database()
    team.shell["DEPLOY_LEDGER_URL"] = ledger_url

    # ---- env.check local names the local database URL and where to put it
    local_db = pg_cluster.create_database()
    r = team.invoke("env.check", "--env=local")
    assert r.returncode == 2, _out(r)
    assert "Add DATABASE_URL=... to env/local.env." in r.stdout
    with (root / "env/local.env").open("a") as f:
        f.write(f"DATABASE_URL={local_db}\n")
    r = team.invoke("env.check", "--env=local")
    assert r.returncode == 0, _out(r)

    # ---- the first local promotion: the lockfile is not in the commit; the message names the
    # .gitignore line, and the fix it names is applied exactly
    r = team.invoke("promote", "--to=local")
    assert r.returncode == 2, _out(r)
    m = re.search(r"git ignores it: line (\d+) of (\.gitignore) \(`([^`]+)`\)", _out(r))
    assert m, _out(r)
    assert ".deploy/src" not in _out(r) and "`git add package-lock.json`" in _out(r)
    assert not (root / ".deploy/artifacts").exists() or not any((root / ".deploy/artifacts").iterdir())
    lines = (root / m.group(2)).read_text().splitlines(keepends=True)
    assert lines[int(m.group(1)) - 1].strip() == m.group(3)
    del lines[int(m.group(1)) - 1]
    (root / m.group(2)).write_text("".join(lines))
    _git(root, "add", "package-lock.json")
    team.commit("commit the lockfile")

    # ---- the app needs a variable the matrix marks optional locally: the app's own line is
    # shown and the hint names the files the local app reads
    r = team.invoke("promote", "--to=local")
    assert r.returncode != 0, _out(r)
    assert "SESSION_SECRET is not set" in _out(r)
    assert "env/local.local.env" in _out(r) and "invoke env.check --env=local" in _out(r)
    session = f"local-session-{secrets.token_hex(6)}"
    (root / "env/local.local.env").write_text(f"SESSION_SECRET={session}\n")   # git-ignored by init
    assert "env/local.local.env" not in _git(root, "status", "--porcelain", "--untracked-files=all")

    # ---- the app has no page at "/": the hint names [app] health_path, and the log shown is
    # this start's, not the earlier failure's
    r = team.invoke("promote", "--to=local")
    assert r.returncode != 0, _out(r)
    err = r.stderr
    assert "HTTP 404" in err and "health_path in env/local.toml" in err
    assert "SESSION_SECRET is not set" not in err
    _set(root / "env/local.toml", "health_path", '"/healthz"')
    r = team.invoke("promote", "--to=local")
    assert r.returncode == 0, _out(r)
    assert session not in _out(r) and local_db.split("@")[0] not in _out(r)
    local_port = int(re.search(r"serving on http://127\.0\.0\.1:(\d+)", r.stdout).group(1))
    local_app = _health(local_port)
    assert local_app["db"] == _db_name(local_db) and local_app["key"] == "devclient111"
    local_release = local_app["release"]
    team.commit("local health path")

    # ---- staging on two hosts, every key as docs/adopting.md section 9 lists it
    hosts = sshd_hosts(2)
    ports = [free_port() for _ in hosts]
    known = root.parent / "b2b_known_hosts"              # `ssh-keyscan ... > ~/.ssh/b2b_known_hosts`
    known.write_text("".join(subprocess.run(["ssh-keyscan", "-t", "ed25519", "-p", str(h.port), h.host],
                                            capture_output=True, text=True, check=True).stdout for h in hosts))
    for h in hosts:                                       # checking each fingerprint against the host's own
        assert h.known_hosts_line() in known.read_text()
    st = root / "env/staging.toml"
    _set(st, "hosts", "[" + ", ".join(f'"{h.address}"' for h in hosts) + "]")
    _set(st, "deploy_to", f'"{sshd_farm.deploy_to("srv/b2b")}"')
    _set(st, "key_file", f'"{sshd_farm.key_file}"')
    _set(st, "known_hosts", f'"{known}"')
    _set(st, "app_ports", "[" + ", ".join(map(str, ports)) + "]")
    _set(st, "app_url", '"https://b2b-staging.example.net"')   # as the docs' worked example has it
    _set(st, "window_seconds", "2")                       # the test's patience, not a message's fix
    r = team.invoke("hosts.check", "--env=staging")
    assert r.returncode == 0, _out(r)

    # env.check names every missing value and where it goes; no Shopify account: --skip-shopify
    staging_db = pg_cluster.create_database()
    r = team.invoke("env.check", "--env=staging")
    assert r.returncode == 2, _out(r)
    plain, secret = [], []
    for row in r.stdout.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 3 and cells[1] == "missing":
            if f"Add {cells[0]}=... to env/staging.env" in cells[2]:
                plain.append(cells[0])
            elif "Set it in the process environment" in cells[2]:
                secret.append(cells[0])
            else:
                pytest.fail(f"no fix named for {cells[0]}: {cells[2]}")
    assert {"CHECKOUT_FLAG", "REDIS_URL"} <= set(plain)
    assert {"STAGING_DATABASE_URL", "SESSION_SECRET", "SHOPIFY_APP_AUTOMATION_TOKEN"} <= set(secret)
    assert "DATABASE_URL" not in plain + secret           # staging reads its own variable
    env_file = root / "env/staging.env"
    values = {"CHECKOUT_FLAG": "on", "REDIS_URL": f"redis://127.0.0.1:6379/{secrets.randbelow(9)}"}
    env_file.write_text("\n".join(ln for ln in env_file.read_text().splitlines()
                                  if not any(ln.startswith(f"# {n}=") for n in plain))
                        + "\n" + "".join(f"{n}={values.get(n, 'x-' + n.lower())}\n" for n in plain))
    staging_secrets = {n: f"s-{n.lower()}-{secrets.token_hex(5)}" for n in secret
                       if n not in ("STAGING_DATABASE_URL", "SHOPIFY_APP_AUTOMATION_TOKEN")}
    team.shell.update(staging_secrets, STAGING_DATABASE_URL=staging_db)
    r = team.invoke("env.check", "--env=staging")
    assert [ln for ln in r.stdout.splitlines() if "missing" in ln and "|" in ln] == [
        ln for ln in r.stdout.splitlines() if "SHOPIFY_APP_AUTOMATION_TOKEN" in ln and "missing" in ln], r.stdout
    team.commit("staging hosts and values")

    # env.push's plan needs no Shopify token and never sends the deployer's own names
    r = team.invoke("env.push", "--env=staging", "--dry-run")
    assert r.returncode == 0, _out(r)
    pushed = r.stdout.split("variable(s): ", 1)[1].split("\n", 1)[0].split(", ")
    assert "DATABASE_URL" in pushed and "SESSION_SECRET" in pushed
    assert "SHOPIFY_APP_AUTOMATION_TOKEN" not in pushed and "STAGING_DATABASE_URL" not in pushed

    # the laptop's shell exports the local DATABASE_URL, which must never stand in for staging's
    team.shell["DATABASE_URL"] = local_db

    # ---- the first staging promotion: "/" is not a page of this app; the hint names
    # [app] health_path in env/staging.toml (the hosts themselves are fine)
    r = team.invoke("promote", "--to=staging", "--skip-shopify")
    assert r.returncode != 0, _out(r)
    assert "HTTP 404" in r.stderr and "health_path in env/staging.toml" in r.stderr
    assert "Fix the failing hosts" not in r.stderr
    with psycopg.connect(staging_db) as c:                 # the undo left staging's database empty
        assert c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    _set(st, "health_path", '"/healthz"')
    team.commit("staging health path")

    # ---- the hosts are healthy, but the docs' example app_url answers nowhere: the hint names
    # environment.app_url (not the release), and the undo of this first release leaves the hosts
    # on nothing, as its row says
    r = team.invoke("promote", "--to=staging", "--skip-shopify")
    assert r.returncode != 0, _out(r)
    assert "https://b2b-staging.example.net/healthz" in r.stderr
    assert "environment.app_url in env/staging.toml" in r.stderr and "not the healthy new one" not in r.stderr
    undo_row = next(ln for ln in r.stdout.splitlines() if re.match(r"\[\d+/\d+\] release\s+undone", ln))
    assert all(f"{h.address}: -" in undo_row for h in hosts), undo_row
    for h in hosts:
        assert not (Path(sshd_farm.deploy_to("srv/b2b").format(port=h.port)) / "current").exists()
    _set(st, "app_url", '""')
    team.commit("staging has no public URL yet: smoke the hosts")

    team.shell["SHOPIFY_APP_AUTOMATION_TOKEN"] = f"shptka_{secrets.token_hex(8)}"   # a token now exists
    first = team.invoke("promote", "--to=staging", "--skip-shopify")
    assert first.returncode == 0, _out(first)
    release1 = re.search(r"(\S+) recorded live", first.stdout).group(1)
    apps = [_health(p) for p in ports]
    assert [a["release"] for a in apps] == [release1] * 2
    assert {a["db"] for a in apps} == {_db_name(staging_db)}            # staging's own database, not local's
    assert {a["key"] for a in apps} == {"stagingclient222"} and all(a["redis"] for a in apps)
    for h in hosts:
        f = Path(sshd_farm.deploy_to("srv/b2b").format(port=h.port)) / "shared/.env"
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        text = f.read_text()
        assert team.shell["SHOPIFY_APP_AUTOMATION_TOKEN"] not in text and "AUTOMATION_TOKEN" not in text
        assert _db_name(local_db) not in text and "devclient111" not in text
    with psycopg.connect(staging_db) as c:
        assert sorted(r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations")) == sorted(MIGRATIONS)
    with psycopg.connect(local_db) as c:
        assert c.execute("SELECT count(*) FROM _prisma_migrations").fetchone()[0] == len(MIGRATIONS)
    assert _health(local_port)["release"] == local_release                # staging left the laptop's app alone

    # ---- a second release, then the rollback
    server = root / "app/server.mjs"
    server.write_text(server.read_text() + "// second release\n")
    team.commit("second release")
    second = team.invoke("promote", "--to=staging", "--skip-shopify")
    assert second.returncode == 0, _out(second)
    release2 = re.search(r"(\S+) recorded live", second.stdout).group(1)
    assert release2 != release1 and [_health(p)["release"] for p in ports] == [release2] * 2
    back = team.invoke("rollback", "--env=staging", "--skip-shopify")
    assert back.returncode == 0, _out(back)
    assert [_health(p)["release"] for p in ports] == [release1] * 2

    # ---- status: each environment its own release and its own database
    r = team.invoke("status", "--json")
    assert r.returncode == 0, _out(r)
    rows = {row["env"]: row for row in json.loads(r.stdout)}
    assert rows["local"]["release"] == local_release and rows["staging"]["release"] == release1
    assert rows["local"]["pending_migrations"] == 0 and rows["staging"]["pending_migrations"] == 0
    assert rows["production"]["release"] is None and rows["production"]["pending_migrations"] is None
    assert "PRODUCTION_DATABASE_URL" in rows["production"]["pending_migrations_error"]
    assert not (root / ".deploy/ledger.db").exists()      # every run went to the shared ledger
    for secret_value in (*staging_secrets.values(), team.shell["SHOPIFY_APP_AUTOMATION_TOKEN"]):
        for run in (first, second, back, r):
            assert secret_value not in _out(run)


# ---------------------------------------------------------------- the messages the flow follows (fast)

def _repo_with_settings(tmp_path: Path, app_rel: str, *, gitignore: str, lock: bool = True) -> Path:
    """A project whose app (at `app_rel`) is the B2B shape, with init's files rendered in-process."""
    from datetime import date

    from deploy import scaffold

    root = tmp_path / f"proj-{secrets.token_hex(2)}"
    app = root / app_rel if app_rel != "." else root
    b2b_app(app, lockfiles=("package-lock.json",) if lock else (), gitignore_lock=False)
    (app / ".gitignore").write_text(gitignore)
    for rel, text in scaffold.render(scaffold.detect(app), app_rel, date(2026, 1, 2)).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "app")
    return root


@pytest.mark.parametrize("app_rel,rule", [
    (".", "package-lock.json"), (".", "/package-lock.json"), (".", "*-lock.json"), (".", "package-lock.*"),
    ("web", "package-lock.json"),
], ids=["name", "rooted", "glob", "star", "app-in-a-folder"])
def test_preflight_names_the_gitignore_line_that_keeps_the_lockfile_out_of_the_commit(tmp_path, app_rel, rule):
    from deploy import config
    from deploy.errors import SettingsError
    from deploy.flows import steps

    root = _repo_with_settings(tmp_path, app_rel, gitignore=f"node_modules\n# deps\n{rule}\n.env\n")
    s = config.load("local", root)
    with pytest.raises(SettingsError) as e:
        steps.lockfile_committed(s, _git(root, "rev-parse", "HEAD"))
    prefix = "" if app_rel == "." else f"{app_rel}/"
    assert f"line 3 of {prefix}.gitignore (`{rule}`)" in e.value.message
    assert ".deploy" not in e.value.message
    assert e.value.hint.startswith(f"Remove that line from {prefix}.gitignore")
    assert f"`git add {prefix}package-lock.json`" in e.value.hint


@pytest.mark.parametrize("case", ["untracked", "no-lockfile", "negated", "committed"])
def test_preflight_on_a_lockfile_that_is_not_ignored(tmp_path, case):
    from deploy import config
    from deploy.errors import SettingsError
    from deploy.flows import steps

    gitignore = {"negated": "package-lock.*\n!package-lock.json\n"}.get(case, "node_modules\n")
    root = _repo_with_settings(tmp_path, ".", gitignore=gitignore, lock=case != "no-lockfile")
    if case in ("untracked", "negated"):
        _git(root, "rm", "-q", "--cached", "package-lock.json")
        _git(root, "commit", "-qm", "lockfile out")
    s = config.load("local", root)
    sha = _git(root, "rev-parse", "HEAD")
    if case == "committed":
        assert steps.lockfile_committed(s, sha) is None
        return
    with pytest.raises(SettingsError) as e:
        steps.lockfile_committed(s, sha)
    if case == "no-lockfile":
        assert "holds no lockfile" in e.value.message and "npm install" in e.value.hint
    else:
        assert "it is not committed" in e.value.message and "ignores" not in e.value.message
        assert e.value.hint == "Run `git add package-lock.json`, commit, and promote again."


@pytest.mark.parametrize("details,names_app_url", [
    (["no answer: [Errno -2] Name or service not known"], True),
    (["no answer: [Errno -3] Temporary failure in name resolution", "no answer: Name or service not known"], True),
    (["no answer: [Errno 111] Connection refused"], False),
    (["no answer: Name or service not known", "HTTP 500"], False),
], ids=["unknown-name", "two-unresolved", "refused", "one-unresolved-one-500"])
def test_a_smoke_url_nobody_answers_at_names_app_url_not_the_release(details, names_app_url):
    from deploy import smoke
    from deploy.errors import SmokeFailed

    results = [smoke.SmokeResult(f"https://stg-{i}.example.com/healthz", False,
                                 500 if d.startswith("HTTP") else None, d, 3, 5.0) for i, d in enumerate(details)]
    results.append(smoke.SmokeResult("http://127.0.0.1:3000/healthz", True, 200, "ok", 1, 3.0))
    with pytest.raises(SmokeFailed) as e:
        smoke.require(smoke.SmokeReport(tuple(results)))
    assert ("environment.app_url" in e.value.hint) is names_app_url
    assert ("not the healthy new one" in e.value.hint) is not names_app_url
