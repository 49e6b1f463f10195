"""The local release target against the real example app: place, switch, prune, and a
real server answering /version for the release `current` points at."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from deploy import local, proc
from deploy.build import Artifact
from deploy.errors import BuildFailed, HostFailed, SettingsError
from deploy.testing.app import app_artifact, local_root  # noqa: F401  (fixtures)

R1, R2, R3 = "20240301120000-a1b2c3d", "20240302120000-a1b2c3d", "20240303120000-a1b2c3d"


def _get_json(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as r:
        return json.loads(r.read())


def _refused(url: str) -> bool:
    try:
        _get_json(url)
    except OSError:
        return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# ---------------------------------------------------------------- layout

def test_place_unpacks_into_its_own_release_folder_with_a_release_file(app_artifact, local_root):
    path = local.place(app_artifact, local_root, R1)
    assert path == local_root / "releases" / R1
    assert (path / "RELEASE").read_text() == R1 + "\n"
    assert (path / "build" / "server.mjs").is_file() and (path / "package.json").is_file()
    assert json.loads((path / "RELEASE.json").read_text())["git_sha"] == app_artifact.git_sha
    assert local.releases(local_root) == [R1]
    assert [p.name for p in (local_root / "releases").iterdir()] == [R1]   # no temp folder left behind


def test_switch_is_a_relative_symlink_and_returns_the_previous_release(app_artifact, local_root):
    for rid in (R1, R2):
        local.place(app_artifact, local_root, rid)
    assert local.current(local_root) is None
    assert local.switch(local_root, R1) is None
    assert local.switch(local_root, R2) == R1
    link = local_root / "current"
    assert link.is_symlink() and os.readlink(link) == f"releases/{R2}"
    assert local.current(local_root) == R2 and local.previous(local_root) == R1
    log = (local_root / "revisions.log").read_text().splitlines()
    assert log[0].endswith(f"from - to {R1}") and log[1].endswith(f"from {R1} to {R2}")
    assert not list(local_root.glob(".current*"))


def test_switch_to_an_unknown_release_names_the_known_ones(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    with pytest.raises(SettingsError, match=f"Known releases: {R1}"):
        local.switch(local_root, R2)


def test_prune_keeps_the_newest_and_never_current_or_previous(app_artifact, local_root):
    ids = [f"2024030{d}120000-a1b2c3d" for d in range(1, 7)]
    for rid in ids:
        local.place(app_artifact, local_root, rid)
    local.switch(local_root, ids[1])
    local.switch(local_root, ids[0])       # a rollback: current is the oldest, previous the second
    removed = local.prune(local_root, keep=2)
    assert removed == ids[2:4]
    assert local.releases(local_root) == [ids[0], ids[1], ids[4], ids[5]]
    assert local.prune(local_root, keep=2) == []


def test_remove_undoes_place_but_never_removes_current(app_artifact, local_root):
    for rid in (R1, R2):
        local.place(app_artifact, local_root, rid)
    local.switch(local_root, R1)
    assert local.remove(local_root, R2) is True and local.releases(local_root) == [R1]
    assert local.remove(local_root, R2) is False
    with pytest.raises(SettingsError, match="is current"):
        local.remove(local_root, R1)
    assert local.releases(local_root) == [R1]


def test_place_refuses_an_artifact_whose_hash_does_not_verify(app_artifact, local_root, tmp_path):
    forged = Artifact(app_artifact.path, "0" * 64, app_artifact.release_id, app_artifact.git_sha, app_artifact.built_at)
    with pytest.raises(BuildFailed, match="expected 0000"):
        local.place(forged, local_root, R1)
    assert local.releases(local_root) == []


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"], ids=["parent-is-a-file", "read-only-filesystem"])
def test_unwritable_root_is_a_clear_error_naming_the_path(app_artifact, tmp_path, where):
    # Tests run as root, which ignores file modes: make the folder impossible instead.
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        root = tmp_path / "file" / "local"
    else:
        root = Path("/proc/occ-deploy-local")
    with pytest.raises(SettingsError, match="cannot be written") as e:
        local.place(app_artifact, root, R1)
    assert str(root) in str(e.value) and "[local] root" in e.value.hint


# ---------------------------------------------------------------- the server

def test_start_serves_current_then_restart_serves_the_new_release(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    first = local.start(local_root, "127.0.0.1", 0)
    assert first.release_id == R1 and first.url == f"http://127.0.0.1:{first.port}"
    assert (local_root / "app.pid").read_text().splitlines()[0] == str(first.pid)
    assert (local_root / "app.port").read_text().strip() == str(first.port)
    version = _get_json(first.url + "/version")
    assert version == {"release": R1, "sha": app_artifact.git_sha, "built_at": "2024-03-01T12:00:00Z"}
    assert _get_json(first.url + "/healthz") == {"ok": True}
    assert local.status(local_root).pid == first.pid

    local.place(app_artifact, local_root, R2)
    local.switch(local_root, R2)
    # The old server keeps answering for the release it started from until restarted.
    assert _get_json(first.url + "/version")["release"] == R1
    second = local.restart(local_root, "127.0.0.1", 0)
    assert second.pid != first.pid and not _pid_alive(first.pid)
    assert second.port == first.port      # port 0 reuses the last port while it is free
    assert _get_json(second.url + "/version")["release"] == R2


def test_stop_is_idempotent_and_really_stops(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    info = local.start(local_root)
    assert local.stop(local_root) is True
    assert not _pid_alive(info.pid) and _refused(info.url + "/healthz")
    assert not (local_root / "app.pid").exists()
    assert local.stop(local_root) is False
    assert local.status(local_root) is None


def test_a_stale_pidfile_is_not_a_running_server(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    (local_root / "app.pid").write_text(f"{os.getpid()}\n")   # alive, but not a node server.mjs
    assert local.status(local_root) is None
    assert local.stop(local_root) is False
    info = local.start(local_root)
    assert _get_json(info.url + "/version")["release"] == R1


def test_explicit_port_in_use_is_a_settings_error_naming_the_port(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SettingsError, match=f"Port {port} on 127.0.0.1 is already in use"):
            local.start(local_root, "127.0.0.1", port)
    assert local.status(local_root) is None


def test_start_twice_is_refused_with_the_running_pid(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    info = local.start(local_root)
    with pytest.raises(SettingsError, match=f"already running \\(pid {info.pid}"):
        local.start(local_root)


def test_start_without_a_release_says_to_deploy_first(local_root):
    with pytest.raises(SettingsError, match="no release to start"):
        local.start(local_root)


def test_a_server_that_crashes_at_start_fails_with_its_log_and_leaves_nothing_running(app_artifact, local_root):
    path = local.place(app_artifact, local_root, R3)
    (path / "build" / "server.mjs").write_text("console.error('fatal: cannot open database'); process.exit(4);\n")
    local.switch(local_root, R3)
    with pytest.raises(HostFailed, match="exited with code 4") as e:
        local.start(local_root, timeout=5)
    assert "fatal: cannot open database" in str(e.value)
    assert local.status(local_root) is None and not (local_root / "app.pid").exists()


def test_server_gets_extra_environment_and_a_secret_stays_out_of_files(app_artifact, local_root):
    from deploy.redact import Secret

    path = local.place(app_artifact, local_root, R1)
    (path / "build" / "server.mjs").write_text(
        (path / "build" / "server.mjs").read_text().replace(
            'release: readText("RELEASE", process.cwd()) || "unreleased",',
            'release: (readText("RELEASE", process.cwd()) || "unreleased") + ":" + (process.env.DATABASE_URL ? "db" : "nodb"),',
        )
    )
    local.switch(local_root, R1)
    info = local.start(local_root, env={"DATABASE_URL": Secret("file:/tmp/x.db?password=hunter2")})
    assert _get_json(info.url + "/version")["release"] == f"{R1}:db"
    written = "".join(p.read_text(errors="replace") for p in local_root.rglob("*") if p.is_file() and p.suffix != ".mjs")
    assert "hunter2" not in written


# ---------------------------------------------------------------- the [app] contract locally

from deploy.config import AppSection  # noqa: E402

ENVDUMP = """import { createServer } from "node:http";
createServer((req, res) => {
  if (req.url === "/") { res.writeHead(302, { location: "/login" }); return res.end(); }
  if (req.url === "/login") { res.writeHead(500); return res.end("needs a shop"); }
  res.end(JSON.stringify(process.env));
}).listen(Number(process.env.APP_PORT), process.env.HOST);
"""


def test_the_start_command_gets_an_explicit_environment_and_a_redirect_is_healthy(app_artifact, local_root,
                                                                                 monkeypatch):
    path = local.place(app_artifact, local_root, R1)
    (path / "envdump.mjs").write_text(ENVDUMP)
    local.switch(local_root, R1)
    monkeypatch.setenv("SHOPIFY_API_SECRET", "deployer-secret-1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:deployer-pw@h/db")
    contract = AppSection(start=("node", "envdump.mjs"), port_var="APP_PORT", health_path="/")
    info = local.start(local_root, app=contract, env={"SHOP_NAME": "demo", "DATABASE_URL": "file:/tmp/app.db"})
    # "/" answers 302 to a page that fails: healthy all the same (a Shopify app's / redirects).
    seen = _get_json(info.url + "/env")
    assert seen["APP_PORT"] == str(info.port) and seen["HOST"] == "127.0.0.1"
    assert seen["SHOP_NAME"] == "demo" and seen["DATABASE_URL"] == "file:/tmp/app.db"
    assert "SHOPIFY_API_SECRET" not in seen and "deployer-pw" not in json.dumps(seen)
    assert seen["PATH"].startswith(f"{path.resolve()}/node_modules/.bin:")
    assert local.status(local_root).pid == info.pid


def test_stop_ends_the_apps_whole_process_group(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    # sh stays the parent (a command follows node): node is a grandchild of the pidfile's pid.
    info = local.start(local_root, app=AppSection(start=("sh", "-c", "node build/server.mjs; echo after"),
                                                  health_path="/healthz"))
    assert len(proc.group_members(info.pid)) >= 2
    assert local.stop(local_root) is True
    assert proc.group_members(info.pid) == [] and _refused(info.url + "/healthz")


def test_a_health_path_that_never_answers_2xx_or_3xx_fails_and_leaves_nothing_running(app_artifact, local_root):
    local.place(app_artifact, local_root, R1)
    local.switch(local_root, R1)
    with pytest.raises(HostFailed, match="did not answer .*/nope with 2xx/3xx within 1s") as e:
        local.start(local_root, app=AppSection(health_path="/nope"), timeout=1)
    assert "HTTP 404" in str(e.value)
    assert local.status(local_root) is None and not (local_root / "app.pid").exists()


def test_the_local_app_gets_its_database_url_and_only_the_runtime_variables_named(tmp_path):
    from deploy import config
    from deploy.targets import local as local_target

    raw = {"environment": {"kind": "local"}, "app": {"runtime_env": ["SHOPIFY_API_KEY", "NOT_SET"]},
           "database": {"provider": "sqlite", "url": "file:dev.sqlite"}}
    s = config.parse(raw, name="local", file=tmp_path / "env/local.toml", root=tmp_path)
    env = local_target.app_env(s, {"SHOPIFY_API_KEY": "key-1", "SHOPIFY_API_SECRET": "secret-1", "HOME": "/root"})
    assert sorted(env) == ["DATABASE_URL", "SHOPIFY_API_KEY"]
    assert env["SHOPIFY_API_KEY"] == "key-1" and env["DATABASE_URL"].startswith("file:/")
    # One release root per app: another app_dir is another root under [local] root.
    other = config.parse({**raw, "environment": {"kind": "local", "app_dir": "apps/web"}}, name="local",
                         file=tmp_path / "env/local.toml", root=tmp_path)
    assert local_target.local_root(s).parent == local_target.local_root(other).parent == tmp_path / ".deploy/local"
    assert local_target.local_root(s).name.startswith("app-") and local_target.local_root(other).name.startswith("web-")
