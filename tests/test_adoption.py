"""docs/adopting.md, followed to the letter on the React Router Shopify example living in its
own git repository: a tasks.py over `deploy.tasks`, `invoke init`, then `promote --to=local`
(answers on its health path), a second promotion, and `rollback` back to the first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.testing.project import REPO, _git
from deploy.testing.shopify_app import copy_shopify_app, http_get

pytestmark = pytest.mark.slow


def team_invoke(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`invoke` in the team's repository, the toolkit importable as if pip-installed, no DEPLOY_ROOT."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOY_ROOT", "DEPLOY_LEDGER_URL")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def shop(tmp_path):
    root = copy_shopify_app(tmp_path / "shop")
    (root / "tasks.py").write_text("from deploy.tasks import ns  # docs/adopting.md, step 2\n")
    (root / ".gitignore").write_text("/.deploy/\n.env\nnode_modules/\n/build/\nprisma/*.sqlite*\n/evidence/\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "the app")
    yield root
    team_invoke(root, "app.stop", "--env=local", timeout=60)


def test_a_react_router_app_in_its_own_repository_is_promoted_promoted_again_and_rolled_back(shop):
    r = team_invoke(shop, "init", "--app=.")
    assert r.returncode == 0, r.stdout + r.stderr
    _git(shop, "add", "-A")
    _git(shop, "commit", "-qm", "deploy settings (invoke init)")
    sha = _git(shop, "rev-parse", "HEAD")

    first = team_invoke(shop, "promote", "--to=local")
    assert first.returncode == 0, first.stdout + first.stderr
    from deploy.ledger import Ledger

    led = Ledger.open(shop)
    run1 = led.runs("local")[0]
    assert run1.sha == sha and run1.status == "succeeded"
    status, _ = http_get(run1.state["app_url"] + "/")            # app.health_path, as init wrote it
    assert status in (200, 302)
    assert (shop / "prisma/dev.sqlite").is_file()                 # env/local.toml's database, beside the schema

    second = team_invoke(shop, "promote", "--to=local")
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = led.runs("local")[0]
    assert run2.release_id != run1.release_id and "reused" in second.stdout

    back = team_invoke(shop, "rollback", "--env=local")
    assert back.returncode == 0, back.stdout + back.stderr
    assert led.live_release("local")["release_id"] == run1.release_id
    current = [os.readlink(c) for c in (shop / ".deploy/local").glob("**/current")]
    assert len(current) == 1 and current[0].endswith(run1.release_id)
    status, _ = http_get(run1.state["app_url"] + "/")
    assert status in (200, 302)
