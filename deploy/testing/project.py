"""A throwaway project for end-to-end tests: the example app and the env/ files copied
into a fresh git repository, driven through the real `invoke` command line.

`DEPLOY_ROOT` points the toolkit at it, so the tests exercise the working tree's code
against a project whose state they fully own (ledger, releases, deployment log).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy import config
from deploy.ledger import Ledger
from deploy.targets.local import local_root
from deploy.tasks import toolkit_ns
from deploy.testing.shopify_app import copy_shopify_app

REPO = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@dataclass
class Project:
    root: Path
    env: dict = field(default_factory=dict)

    def invoke(self, *args: str, timeout: float = 180, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        e = {**os.environ, "DEPLOY_ROOT": str(self.root), "PYTHONPATH": str(REPO), **self.env, **(extra_env or {})}
        e.pop("DEPLOY_LEDGER_URL", None) if "DEPLOY_LEDGER_URL" not in self.env else None
        e.pop("GITHUB_STEP_SUMMARY", None) if "GITHUB_STEP_SUMMARY" not in (extra_env or {}) else None
        return subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=self.root, env=e,
                              capture_output=True, text=True, timeout=timeout)

    def commit(self, message: str = "change") -> str:
        _git(self.root, "add", "-A")
        _git(self.root, "commit", "-qm", message)
        return _git(self.root, "rev-parse", "HEAD")

    @property
    def head(self) -> str:
        return _git(self.root, "rev-parse", "HEAD")

    def write_env(self, name: str, text: str) -> Path:
        p = self.root / "env" / f"{name}.toml"
        p.write_text(text)
        return p

    def local_root(self, env: str = "local") -> Path:
        """The release root of the app `env` deploys (one per app under [local] root)."""
        return local_root(config.load(env, self.root))

    def ledger(self):
        return Ledger.open(self.root, self.env.get("DEPLOY_LEDGER_URL"))


def make_project(dest: Path) -> Project:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "examples" / "app", dest / "examples" / "app",
                    ignore=shutil.ignore_patterns("node_modules", "build", ".env"))
    # env/staging.toml and env/production.toml deploy the React Router example.

    copy_shopify_app(dest / "examples" / "shopify-app")
    shutil.copytree(REPO / "docs", dest / "docs")
    (dest / "feedback").mkdir()
    shutil.copy2(REPO / "feedback" / "deployment.md", dest / "feedback" / "deployment.md")
    (dest / "env").mkdir()
    for f in (REPO / "env").iterdir():
        if f.is_file() and not f.name.endswith(".local.env"):
            shutil.copy2(f, dest / "env" / f.name)
    (dest / ".gitignore").write_text("/.deploy/\n/evidence/\n.env\nnode_modules/\n/examples/app/build/\n"
                                     "/examples/app/prisma/*.sqlite*\n")
    _git(dest, "init", "-q", "-b", "main")
    p = Project(dest)
    p.commit("initial")
    return p


def stop_local_apps(p: Project) -> None:
    """`invoke app.stop --env=local`, unless the local environment's [local] root was never
    made (then no local app can run: the stop would only cost a CLI start)."""
    try:
        s = config.load("local", p.root)
        base = s.path(s.local.root)
    except Exception:  # noqa: BLE001 - settings a test broke: let the task itself try
        base = None
    if base is None or base.exists():
        p.invoke("app.stop", "--env=local", timeout=30)


@pytest.fixture
def project(tmp_path):
    """A fresh example project; every local app server it started is stopped afterwards."""
    p = make_project(tmp_path / "project")
    yield p
    stop_local_apps(p)


def all_tasks() -> dict:
    """Every task of the toolkit's collection by its dotted name (`db.migrate`), as `invoke
    --list` names them. `deploy.tasks` is the same file as the repository's tasks.py."""
    out = {}

    def walk(coll, prefix=""):
        for name, t in coll.tasks.items():
            out[prefix + name] = t
        for name, sub in coll.collections.items():
            walk(sub, prefix + name + ".")

    walk(toolkit_ns)
    return out
