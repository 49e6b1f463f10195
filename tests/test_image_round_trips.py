"""The image target's host commands that fold several steps into one round trip: the start and
its health check (the run's port carried in the shell), and the finish that asks the runtime on
the host which containers to stop. Run with sh and, for the runtime, real podman (runc, explicit
ulimits, a storage of the test's own)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tarfile

import pytest

from deploy.hosts import _containers as c
from deploy.hosts._values import Target

REF = "registry.example:5000/acme/app@sha256:" + "ab" * 32


def _t(deploy_to: str = "/srv/occ") -> Target:
    return Target(name="d@h:22", host="h", port=22, user="d", deploy_to=deploy_to, app_port=3000)


def _sh(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- start, then health, in one command

HEALTH = "echo \"health on $port\"; exit 0"


@pytest.mark.parametrize("run, code, out, err", [
    ("echo port=41234", 0, ["port=41234", "health on 41234"], ""),
    # a container kept from a killed attempt: the run command ends with `exit 0`
    ("echo port=41999; exit 0", 0, ["port=41999", "health on 41999"], ""),
    ("echo no-port-here", 1, ["no-port-here"], "the start printed no port"),
    ("echo 'pick failed' >&2; exit 88", 88, [], "pick failed"),
    ("echo port=4x1", 1, ["port=4x1"], "the start printed no port"),
], ids=["started", "kept-container-exits-0", "no-port", "run-failed-keeps-its-code", "port-not-a-number"])
def test_the_start_and_its_health_check_share_one_command_and_the_runs_port(run, code, out, err):
    r = _sh(c.run_then_health_command(run, HEALTH))
    assert r.returncode == code
    assert r.stdout.split("\n")[:len(out)] == out
    assert err in r.stderr
    if code:
        assert "health on" not in r.stdout, "no health check after a failed start"


@pytest.mark.parametrize("path", ["/healthz", "/up?probe=1", "/"], ids=["plain", "query", "root"])
def test_the_health_check_on_the_shells_port_quotes_the_path_and_keeps_the_port_a_variable(path):
    cmd = c.health_command(_t(), c.Runtime("podman"), "r1", c.PORT_VAR, path, 5)
    assert f'"http://127.0.0.1:$port"{shlex.quote(path)}' in cmd
    with pytest.raises(ValueError):
        c.health_command(_t(), c.Runtime("podman"), "r1", "$(reboot)", path, 5)


def test_the_registry_ca_can_travel_in_the_command_leaving_stdin_to_the_login(tmp_path):
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB'x\"$y`z\n-----END CERTIFICATE-----\n"
    r = _sh(c.ca_command(_t(str(tmp_path)), "reg.example:5000", pem=pem) + " </dev/null")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "image/certs/reg.example:5000/ca.crt").read_bytes() == pem


# ---------------------------------------------------------------- the finish asks the runtime on the host

PODMAN_ARGS = ("--root", "{deploy_to}/storage", "--runroot", "/tmp/occ-rt-{key}", "--tmpdir", "{deploy_to}/tmp",
               "--runtime=runc")


@pytest.fixture
def podman_host(tmp_path):
    if not shutil.which("podman"):
        pytest.skip("podman is not installed")
    t = _t(str(tmp_path / "srv"))
    (tmp_path / "srv/tmp").mkdir(parents=True)
    rt = c.Runtime("podman", c.fill_args(PODMAN_ARGS, t))
    with tarfile.open(tmp_path / "root.tar", "w") as tar:
        (tmp_path / "marker").write_text("x")
        tar.add(tmp_path / "marker", arcname="marker")
    assert _sh(rt("import", str(tmp_path / "root.tar"), "occ-test-empty")).returncode == 0
    yield t, rt
    _sh(rt("rm", "-a", "-f") + " >/dev/null 2>&1; " + rt("system", "reset", "-f") + " >/dev/null 2>&1")
    subprocess.run(["rm", "-rf", f"/tmp/occ-rt-{c.app_key(t)}"], check=False)


def _names(rt: c.Runtime) -> set[str]:
    r = _sh(rt("ps", "-a", "--format", "{{.Names}}"))
    return set(r.stdout.split())


@pytest.mark.parametrize("made, keep", [
    (["r1", "r2", "r3"], ["r3"]),
    (["r1", "r2", "r3"], ["r3", "r2"]),           # previous_running: the one served before stays
    (["r2"], ["r2"]),                              # nothing else there
    (["r1", "r4"], ["r9"]),                        # the kept one is not there (yet)
], ids=["old-and-leftover-go", "previous-kept-running", "nothing-to-stop", "all-others-go"])
def test_the_finish_stops_every_container_of_the_environment_but_the_kept_ones(podman_host, made, keep):
    t, rt = podman_host
    other_env = "occ-0123456789-r1"                # another environment's container on the same host
    for name in [c.container_name(t, r) for r in made] + [other_env]:
        assert _sh(rt("create", "--name", name, "occ-test-empty", "/marker")).returncode == 0
    r = _sh(c.stop_others_command(t, rt, keep, stop_timeout=1))
    assert r.returncode == 0, r.stderr
    assert _names(rt) == {c.container_name(t, k) for k in keep if k in made} | {other_env}


def test_the_release_state_read_asks_the_runtime_nothing_and_lists_each_containers_port(tmp_path):
    t, rt = _t(str(tmp_path)), c.Runtime("podman")
    (tmp_path / "image").mkdir()
    assert "podman" not in c.image_state_command(t, rt, images=False, containers=False)
    assert '{{index .Labels "occ.port"}}' in c.image_state_command(t, rt)
    assert '{{.Label "occ.port"}}' in c.image_state_command(t, c.Runtime("docker"))
    st = c.parse_image_state("== current\n== records\n== images\n== containers\n"
                             "occ-x-a running 41001\nocc-x-b exited 41002\nocc-x-c running\n")
    assert (st.running_port("occ-x-a"), st.running_port("occ-x-b"), st.running_port("occ-x-c")) == (41001, None, None)
