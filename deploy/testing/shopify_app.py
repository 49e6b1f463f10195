"""The React Router Shopify example (examples/shopify-app) for tests and benchmarks: a
private copy with its pinned dependencies installed once per test session, its test runs
(Vitest, Playwright) and its built server, always stopped.

Fixtures (a pytest plugin; test modules may also import them by name):
- `shopify_app_installed`: one copy of examples/shopify-app per test session under a temp
  dir, with `npm ci` run in it (devDependencies included: Vitest, Vite, @react-router/dev).
  Tests may build in it (build/ is the copy's), but must not change its sources.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import proc
from deploy.testing.ports import free_port  # below the ephemeral range: no bind(0) takes it first

SHOPIFY_APP = Path(__file__).resolve().parents[2] / "examples" / "shopify-app"
# Debian's chromium by default; CHROMIUM_PATH points at another build (playwright.config.js reads it too).
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
# What a copy of the sources leaves out: installs, build output, test output, sample evidence.
GENERATED = ("node_modules", "build", ".react-router", "evidence", "test-results", "playwright-report")


def copy_shopify_app(dest: Path, *, with_node_modules: Path | None = None) -> Path:
    """A copy of examples/shopify-app without generated files; with `with_node_modules`,
    that folder's installed node_modules is copied in too (saves a second `npm ci`)."""
    shutil.copytree(SHOPIFY_APP, dest, ignore=shutil.ignore_patterns(*GENERATED))
    if with_node_modules is not None:
        shutil.copytree(with_node_modules / "node_modules", dest / "node_modules", symlinks=True)
    return dest


def node_env(**extra: str) -> dict[str, str]:
    """An explicit environment for npm/node children (deploy.proc.child_env's minimal base:
    PATH, HOME for npm's cache, npm settings, proxies) plus `extra`; nothing else of ours."""
    return proc.child_env(extra={"npm_config_update_notifier": "false", "npm_config_fund": "false",
                                 "npm_config_audit": "false", **extra})


def npm(app: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run `npm <args>` (or `npx <args>` when args[0] == "npx") in `app`; the whole output on failure."""
    argv = list(args) if args[0] == "npx" else ["npm", *args]
    p = subprocess.run(argv, cwd=app, env=env or node_env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` failed in {app} ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def install(app: Path) -> Path:
    """`npm ci` in `app`: exactly the lockfile's versions."""
    npm(app, "ci")
    return app


@pytest.fixture(scope="session")
def shopify_app_installed(tmp_path_factory) -> Path:
    return install(copy_shopify_app(tmp_path_factory.mktemp("shopify-app") / "app"))


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET, errors included; no proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(app: Path, database_url: str, *, timeout: float = 30) -> Server:
    """`npm start` (react-router-serve ./build/server/index.js) in a built `app`, PORT from
    the environment, until "/" answers; stop it with .stop() or a `with` block."""
    port = free_port()
    log = app / f"server-{port}.log"
    env = node_env(PORT=str(port), HOST="127.0.0.1", DATABASE_URL=database_url, NODE_ENV="production")
    with open(log, "wb") as out:
        p = subprocess.Popen(["npm", "start"], cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", p, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise AssertionError(f"the server exited ({p.returncode}):\n{log.read_text()[-3000:]}")
        try:
            http_get(server.url + "/", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    raise AssertionError(f"the server did not answer on {server.url} within {timeout}s:\n{log.read_text()[-3000:]}")
