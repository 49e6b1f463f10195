"""docs/adopting.md, followed on the React Router Shopify example as a team would on its own
app: the app is its own git repository and the project root, a tasks.py imports the
toolkit's tasks, `invoke init --app=.` writes the settings, and `invoke promote --to=local`
(twice) and `invoke rollback --env=local` run from the app's folder through the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.testing.project import REPO
from deploy.testing.shopify_app import copy_shopify_app, http_get

pytestmark = pytest.mark.slow

TASKS_PY = "from deploy.tasks import ns  # promote, rollback, gate, evidence.collect, env.check, db.*, init, ...\n"


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def invoke(app: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    # Run from the app's folder: invoke finds its tasks.py there, the toolkit finds env/ there
    # (no DEPLOY_ROOT, as adopting.md describes); PYTHONPATH: the toolkit under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOY_", "GITHUB_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=app, env=env, capture_output=True,
                          text=True, timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def serving(out: str) -> tuple[str, str]:
    """(release id, app URL) from promote's output."""
    m = re.search(r"release\s+done\s+\S+\s+(\S+) serving on (http://\S+)", out)
    assert m, out
    return m.group(1), m.group(2)


def release_on(url: str) -> str:
    status, body = http_get(url + "/")
    assert status == 200, body[-500:]
    return re.search(r'data-testid="release">([^<]+)</code>', body).group(1)


@pytest.fixture
def app(tmp_path):
    app = copy_shopify_app(tmp_path / "my-shopify-app")
    (app / "tasks.py").write_text(TASKS_PY)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "the app")
    yield app
    invoke(app, "app.stop", "--env=local", timeout=60)


def test_following_adopting_md_the_app_is_promoted_twice_and_rolled_back(app):
    out = ok(invoke(app, "init", "--app=."))
    assert "npm (package-lock.json)" in out and "Prisma sqlite (prisma/migrations)" in out
    for f in ("env/local.toml", "env/staging.toml", "env/production.toml", "env/variables.toml"):
        assert (app / f).is_file(), f
    git(app, "add", "-A")
    git(app, "commit", "-qm", "deploy settings from invoke init")
    ok(invoke(app, "env.check", "--env=local"))

    out = ok(invoke(app, "promote", "--to=local"))
    first, url = serving(out)
    assert first.endswith(git(app, "rev-parse", "--short=7", "HEAD"))       # the app repository's commit
    assert release_on(url) == first
    status, body = http_get(url + "/app")                                    # the Session table is there
    assert status == 200 and "stored sessions" in body

    page = app / "app" / "routes" / "_index.jsx"
    page.write_text(page.read_text().replace("Orders, decisions", "Orders and decisions"))
    git(app, "commit", "-qam", "second")
    out = ok(invoke(app, "promote", "--to=local"))
    second, url2 = serving(out)
    assert second != first and url2 == url                                  # the port is kept across releases
    assert release_on(url) == second and "Orders and decisions" in http_get(url + "/")[1]

    ok(invoke(app, "rollback", "--env=local", timeout=300))
    assert release_on(url) == first and "Orders, decisions" in http_get(url + "/")[1]
    assert git(app, "status", "--porcelain") == ""        # the toolkit's state (.deploy/) is ignored by git
