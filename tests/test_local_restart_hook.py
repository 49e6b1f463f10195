"""The example app's `bin/restart`, the contract remote hosts run after a switch:
cwd = <deploy_to>/current, ../shared/{.env, app.pid, app.log}, waits for /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from deploy.testing.stage import free_port

from deploy import local
from deploy.testing.app import app_artifact  # noqa: F401  (fixture)

R1, R2 = "20240301120000-a1b2c3d", "20240302120000-a1b2c3d"


def _free_port() -> int:
    return free_port()


@pytest.fixture
def deploy_to(tmp_path):
    root = tmp_path / "srv"
    (root / "shared").mkdir(parents=True)
    yield root
    pid_file = root / "shared" / "app.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _restart(root: Path) -> subprocess.CompletedProcess:
    cur = root / "current"
    # As a shell would run it after `cd current`: PWD is the logical (symlinked) path.
    return subprocess.run(["./bin/restart"], cwd=cur, env={**os.environ, "PWD": str(cur), "RESTART_TIMEOUT": "10"},
                          capture_output=True, text=True, timeout=30)


def _version(port: int) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/version", timeout=5) as r:
        return json.loads(r.read())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_restart_hook_starts_then_replaces_the_server_from_current(app_artifact, deploy_to):
    port = _free_port()
    (deploy_to / "shared" / ".env").write_text(f'# shared by every release\nPORT={port}\nHOST="127.0.0.1"\n')
    for rid in (R1, R2):
        local.place(app_artifact, deploy_to, rid)
    local.switch(deploy_to, R1)

    first = _restart(deploy_to)
    assert first.returncode == 0, first.stderr
    pid1 = int((deploy_to / "shared" / "app.pid").read_text())
    assert _version(port)["release"] == R1

    local.switch(deploy_to, R2)
    second = _restart(deploy_to)
    assert second.returncode == 0, second.stderr
    pid2 = int((deploy_to / "shared" / "app.pid").read_text())
    assert pid2 != pid1 and not _alive(pid1) and _alive(pid2)
    assert _version(port)["release"] == R2
    assert "listening on" in (deploy_to / "shared" / "app.log").read_text()


def test_restart_hook_fails_with_the_log_tail_when_the_port_is_taken(app_artifact, deploy_to):
    local.place(app_artifact, deploy_to, R1)
    local.switch(deploy_to, R1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (deploy_to / "shared" / ".env").write_text(f"PORT={port}\n")
        r = _restart(deploy_to)
    assert r.returncode != 0
    assert "the server exited" in r.stderr and "EADDRINUSE" in r.stderr
