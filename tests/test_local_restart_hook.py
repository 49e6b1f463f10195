"""The toolkit's app supervisor (`<deploy_to>/bin/app`, deploy.hosts.SUPERVISOR), run here
against real node processes in a Capistrano layout: what every host without a restart
hook runs after a switch. (The same script over real SSH: tests/test_hosts.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from deploy import hosts, local, proc
from deploy.testing.app import app_artifact  # noqa: F401  (fixture)
from deploy.testing.stage import free_port

R1, R2 = "20240301120000-a1b2c3d", "20240302120000-a1b2c3d"
START = ["sh", "-c", "node build/server.mjs"]   # the example's start script, as the toolkit runs it

ENVDUMP = """import { createServer } from "node:http";
createServer((req, res) => res.end(JSON.stringify(process.env))).listen(Number(process.env.APP_PORT), "127.0.0.1");
"""


@pytest.fixture
def deploy_to(tmp_path):
    root = tmp_path / "srv"
    (root / "shared").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "app").write_text(hosts.SUPERVISOR)
    (root / "bin" / "app").chmod(0o755)
    yield root
    pid_file = root / "run" / "app.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def app(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "bin" / "app"), *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def get(port: int, path: str = "/version") -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(200):
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            import time

            time.sleep(0.05)
    raise AssertionError(f"nothing answers on port {port}")


def pid_of(root: Path) -> int:
    return int((root / "run" / "app.pid").read_text().split()[0])   # then start time, boot id, token


def test_supervisor_starts_restarts_and_stops_the_release_in_current(app_artifact, deploy_to):
    port = free_port()
    (deploy_to / "shared" / ".env").write_text('# shared by every release\nHOST="127.0.0.1"\n')
    for rid in (R1, R2):
        local.place(app_artifact, deploy_to, rid)
    local.switch(deploy_to, R1)

    r = app(deploy_to, "start", "PORT", str(port), "--", *START)
    assert r.returncode == 0, r.stderr
    pid1 = pid_of(deploy_to)
    assert get(port)["release"] == R1
    assert app(deploy_to, "status").stdout.strip() == f"running {pid1}"

    local.switch(deploy_to, R2)
    r = app(deploy_to, "restart", "PORT", str(port), "--", *START)
    assert r.returncode == 0, r.stderr
    pid2 = pid_of(deploy_to)
    assert pid2 != pid1 and proc.group_members(pid1) == [] and proc.group_members(pid2)
    assert get(port)["release"] == R2
    assert "listening on" in (deploy_to / "logs" / "app.log").read_text()

    stopped = app(deploy_to, "stop")
    assert stopped.returncode == 0 and f"stopped {pid2}" in stopped.stdout
    assert proc.group_members(pid2) == [] and not (deploy_to / "run" / "app.pid").exists()
    st = app(deploy_to, "status")
    assert (st.returncode, st.stdout.strip()) == (3, "stopped")
    with pytest.raises(OSError):
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://127.0.0.1:{port}/", timeout=1)


def test_stop_ends_the_whole_process_group_not_only_the_leader(app_artifact, deploy_to):
    port = free_port()
    local.place(app_artifact, deploy_to, R1)
    local.switch(deploy_to, R1)
    # sh stays the parent here (a command follows node), so node is a grandchild of the pid.
    assert app(deploy_to, "start", "PORT", str(port), "--", "sh", "-c", "node build/server.mjs; echo after").returncode == 0
    get(port)
    pid = pid_of(deploy_to)
    members = proc.group_members(pid)
    assert len(members) >= 2, "sh and node are both in the app's process group"
    assert app(deploy_to, "stop").returncode == 0
    assert proc.group_members(pid) == [] and all(not Path(f"/proc/{m}").exists() or m not in proc.group_members(pid)
                                            for m in members)


def test_the_app_gets_an_explicit_environment(app_artifact, deploy_to):
    port = free_port()
    path = local.place(app_artifact, deploy_to, R1)
    (path / "envdump.mjs").write_text(ENVDUMP)
    local.switch(deploy_to, R1)
    (deploy_to / "shared" / ".env").write_text("SHOP_NAME='demo shop'\nexport FLAG = on\nAPP_PORT=1\n")
    caller = {**os.environ, "DATABASE_URL": "postgresql://u:leaked-pw@h/db", "SHOPIFY_API_SECRET": "leaked-2"}
    assert app(deploy_to, "start", "APP_PORT", str(port), "--", "node", "envdump.mjs", env=caller).returncode == 0
    seen = get(port, "/")
    assert seen["SHOP_NAME"] == "demo shop" and seen["FLAG"] == "on"
    assert seen["APP_PORT"] == str(port)             # the settings' port wins over shared/.env
    assert "DATABASE_URL" not in seen and "SHOPIFY_API_SECRET" not in seen
    assert seen["PATH"].startswith(f"{path.resolve()}/node_modules/.bin:")
    assert set(seen) <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "DEPLOY_APP_ROOT", "DEPLOY_APP_TOKEN", "SHOP_NAME", "FLAG",
                         "APP_PORT"}


def test_a_pid_that_is_not_this_apps_is_never_signalled(deploy_to):
    (deploy_to / "run").mkdir()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)   # a group leader, but not ours
    try:
        (deploy_to / "run" / "app.pid").write_text(f"{stranger.pid}\n")
        st = app(deploy_to, "status")
        assert (st.returncode, st.stdout.strip()) == (3, "stopped")
        assert app(deploy_to, "stop").returncode == 0
        assert stranger.poll() is None, "the stranger must still run"
    finally:
        stranger.kill()
        stranger.wait()


def test_an_app_that_cannot_listen_is_reported_stopped_with_its_error_logged(app_artifact, deploy_to):
    local.place(app_artifact, deploy_to, R1)
    local.switch(deploy_to, R1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert app(deploy_to, "start", "PORT", str(port), "--", *START).returncode == 0
        import time

        deadline = time.monotonic() + 120   # a guard against a hang on a loaded machine, not a timing check
        while app(deploy_to, "status").returncode == 0:
            assert time.monotonic() < deadline, (deploy_to / "logs" / "app.log").read_text()
            time.sleep(0.05)
    log = (deploy_to / "logs" / "app.log").read_text()
    assert "EADDRINUSE" in log, log


def test_status_and_stop_right_after_start_see_the_app(app_artifact, deploy_to):
    local.place(app_artifact, deploy_to, R1)
    local.switch(deploy_to, R1)
    for _ in range(5):   # start returns only once the app leads its own group and carries the marker
        assert app(deploy_to, "start", "PORT", "1", "--", "sleep", "60").returncode == 0
        pid = pid_of(deploy_to)
        assert app(deploy_to, "status").stdout.strip() == f"running {pid}"
        assert app(deploy_to, "stop").stdout.strip() == f"stopped {pid}"
        assert proc.group_members(pid) == []
