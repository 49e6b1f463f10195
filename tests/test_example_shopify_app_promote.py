"""The React Router Shopify example, living in its own git repository, promoted to
`local` through the real `invoke` command line: built by the release contract's defaults,
started with its own start script, its Session table migrated, "/" answering; promoted
again; rolled back to the first release."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from deploy.testing.shopify_app import SHOPIFY_APP, copy_shopify_app, http_get
from deploy.facts import Serving, get

pytestmark = pytest.mark.slow

ENV = Path(__file__).parent / "fixtures" / "shopify_app_env"


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def app_repo(tmp_path) -> Path:
    """examples/shopify-app as its own git repository, one commit."""
    app = copy_shopify_app(tmp_path / "shopify-app")
    shutil.copytree(SHOPIFY_APP / "evidence", app / "evidence")      # its committed sample evidence
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    return app


def served_release(url: str) -> str:
    status, body = http_get(url.rstrip("/") + "/")
    assert status == 200, body[-500:]
    m = re.search(r'data-testid="release">([^<]+)</code>', body)
    assert m, body[-500:]
    return m.group(1)


def test_the_app_in_its_own_repository_is_promoted_twice_and_rolled_back(project, app_repo, tmp_path):
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    text = (ENV / "local.toml").read_text().replace("{app_dir}", str(app_repo)).replace("{db}", str(db))
    project.write_env("local", text)
    project.commit("the shopify app's local environment")

    first = project.invoke("promote", "--to=local", timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    led = project.ledger()
    run1 = led.runs("local")[0]
    assert run1.status == "succeeded"
    assert run1.sha == git(app_repo, "rev-parse", "HEAD")          # the app repository's commit
    url = get(run1.state, Serving).url
    assert served_release(url) == run1.release_id
    with sqlite3.connect(db) as c:                                  # Prisma's bookkeeping, in the app's database
        assert [r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations")] == [
            "20250601120000_create_session_table"]
    status, body = http_get(url + "/app")
    assert status == 200 and "0<!-- --> stored sessions" in body

    # What runs is the artifact: the app's own start script, from the release folder, with
    # production dependencies only.
    current = project.local_root() / "current"
    assert (current / "build" / "server" / "index.js").is_file()
    assert (current / "node_modules" / "@react-router" / "serve").is_dir()
    assert not (current / "node_modules" / "vitest").exists()

    (app_repo / "app" / "routes" / "_index.jsx").write_text(
        (app_repo / "app" / "routes" / "_index.jsx").read_text().replace("Orders, decisions", "Orders and decisions"))
    git(app_repo, "commit", "-qam", "second")
    second = project.invoke("promote", "--to=local", timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = project.ledger().runs("local")[0]
    assert run2.release_id != run1.release_id and run2.sha == git(app_repo, "rev-parse", "HEAD")
    url2 = get(run2.state, Serving).url
    assert served_release(url2) == run2.release_id
    assert "Orders and decisions" in http_get(url2 + "/")[1]

    back = project.invoke("rollback", "--env=local", timeout=300)
    assert back.returncode == 0, back.stdout + back.stderr
    assert served_release(url2) == run1.release_id
    assert "Orders, decisions" in http_get(url2 + "/")[1]
    assert project.ledger().live_release("local").release_id == run1.release_id


def test_a_release_whose_server_dies_at_start_goes_back_to_the_apps_previous_release(project, app_repo, tmp_path):
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    text = (ENV / "local.toml").read_text().replace("{app_dir}", str(app_repo)).replace("{db}", str(db))
    project.write_env("local", text)
    project.commit("the shopify app's local environment")
    good = project.invoke("promote", "--to=local", timeout=900)
    assert good.returncode == 0, good.stdout + good.stderr
    run1 = project.ledger().runs("local")[0]

    # The server bundle throws when react-router-serve imports it: the process exits at start.
    entry = app_repo / "app" / "entry.server.jsx"
    entry.write_text(entry.read_text() + '\nthrow new Error("the server cannot start");\n')
    git(app_repo, "commit", "-qam", "a server that cannot start")
    bad = project.invoke("promote", "--to=local", timeout=900)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr + bad.stdout
    led = project.ledger()
    run2 = led.runs("local")[0]
    assert run2.status == "rolled_back" and run2.failed_step == "release", (run2.status, run2.failed_step)
    assert served_release(get(run1.state, Serving).url) == run1.release_id
    assert led.live_release("local").release_id == run1.release_id
    assert led.lock("local") is None
