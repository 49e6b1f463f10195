"""The image target's host commands as data (deploy/hosts/_containers.py) and the shell pieces
that carry values, run by the real sh on this machine: no secret on a command line, the app's
variables read by the dotenv dialect into an env file, what the runtime cannot carry refused
by name, facts parsed, prune decided."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from deploy import config
from deploy.errors import SettingsError
from deploy.hosts import _containers as c
from deploy.hosts._values import Target
from deploy.targets import target_for
from deploy.targets.image import HostsImage

REF = "registry.example:5000/acme/app@sha256:" + "ab" * 32
PODMAN = c.Runtime("podman", ("--root", "/srv/occ/containers"), ("--ulimit", "nofile=1024:1024"))
DOCKER = c.Runtime("docker")


def _t(deploy_to="/srv/occ", app_port=3000) -> Target:
    return Target(name="d@h:22", host="h", port=22, user="d", deploy_to=deploy_to, app_port=app_port)


# ---------------------------------------------------------------- the registry login

@pytest.mark.parametrize("rt, auth, insecure, ca, has, lacks", [
    (PODMAN, True, False, True, ["--authfile \"$w/auth.json\"", "--cert-dir /srv/occ/image/certs/registry.example:5000",
                                 "cat > \"$w/auth.json\"", "rm -rf \"$w\"", "umask 077"], ["--tls-verify", "--creds"]),
    (PODMAN, True, True, False, ["--tls-verify=false", "--authfile"], ["--cert-dir"]),
    (PODMAN, False, False, False, ["podman --root /srv/occ/containers pull " + REF], ["authfile", "cat >"]),
    (DOCKER, True, False, True, ["docker --config \"$w\" pull", "cat > \"$w/config.json\""], ["--cert-dir", "--authfile"]),
], ids=["podman-login-ca", "podman-insecure", "podman-anonymous", "docker-login"])
def test_pull_takes_the_login_on_stdin_into_a_private_file_removed_after(rt, auth, insecure, ca, has, lacks):
    cmd = c.pull_command(_t(), rt, REF, auth=auth, insecure=insecure, ca=ca)
    for x in has:
        assert x in cmd, x
    for x in lacks:
        assert x not in cmd, x
    assert cmd.startswith(f"if {rt('image', 'inspect', REF)} >/dev/null 2>&1; then")   # no pull when it is there


@pytest.mark.parametrize("password", ["hunter2", "p@ss word", "'; rm -rf / #", "ünïcødé-🔑"],
                         ids=["plain", "space", "shell", "unicode"])
def test_the_registry_password_is_only_ever_in_the_auth_file_sent_on_stdin(password):
    import base64
    import json

    body = c.auth_json("registry.example:5000", "deployer", password)
    auth = json.loads(body)["auths"]["registry.example:5000"]["auth"]
    assert base64.b64decode(auth).decode() == f"deployer:{password}"
    for rt in (PODMAN, DOCKER):
        for cmd in (c.pull_command(_t(), rt, REF, auth=True), c.login_check_command(_t(), rt, "registry.example:5000")):
            assert password not in cmd and "deployer" not in cmd


@pytest.mark.parametrize("ref", ["acme/app:latest", "registry/acme/app:v1", "r/a@sha256:abc", "r/a@sha256:" + "A" * 64,
                                 "r/a@sha256:" + "ab" * 32 + "; id", ""],
                         ids=["tag", "registry-tag", "short-digest", "upper-hex", "injected", "empty"])
def test_only_a_reference_by_digest_is_ever_pulled_or_run(ref):
    with pytest.raises(ValueError):
        c.pull_command(_t(), PODMAN, ref, auth=False)
    with pytest.raises(ValueError):
        c.run_command(_t(), PODMAN, "r1", ref, port_var="PORT", app_port=3000, first_port=3000, span=5)


def test_run_passes_the_variables_as_an_env_file_and_labels_release_and_digest():
    cmd = c.run_command(_t(), PODMAN, "20260101-abc", REF, port_var="PORT", app_port=3000, first_port=3000, span=5)
    name = c.container_name(_t(), "20260101-abc")
    assert name.startswith("occ-") and name.endswith("-20260101-abc")
    for x in [f"--name {name}", "--label occ.release=20260101-abc", "--label occ.digest=sha256:" + "ab" * 32,
              "--network=host", "--env-file \"$w/env\"", "--env \"PORT=$port\"", "--ulimit nofile=1024:1024 " + REF,
              "rm -rf \"$w\""]:
        assert x in cmd, x
    pub = c.run_command(_t(), PODMAN, "r1", REF, port_var="PORT", app_port=3000, first_port=3000, span=5,
                        network="publish")
    assert "-p \"127.0.0.1:$port:3000\"" in pub and "--env \"PORT=3000\"" in pub and "--network" not in pub


def test_two_environments_on_one_host_never_share_a_container_name():
    assert c.container_name(_t("/srv/staging"), "r1") != c.container_name(_t("/srv/production"), "r1")


# ---------------------------------------------------------------- shared/.env into the env file, by real sh

def _env_file(tmp_path: Path, text: bytes, port_var: str = "PORT") -> subprocess.CompletedProcess[str]:
    t = _t(str(tmp_path))
    (tmp_path / "shared").mkdir(exist_ok=True)
    (tmp_path / "shared" / ".env").write_bytes(text)
    w = tmp_path / "w"
    w.mkdir(exist_ok=True)
    script = f"w={w}; {{ {c._env_file(t, port_var)}; }} && cat \"$w/env\""
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})


@pytest.mark.parametrize("text, lines", [
    (b"A=1\nB='two words # kept'\nexport C=\"x\\ty\"\n# comment\nD=plain # comment\n",
     ["A=1", "B=two words # kept", "C=x\ty", "D=plain"]),
    (b"PORT=9999\nKEEP=1\n", ["KEEP=1"]),
    (b"\xef\xbb\xbfA=bom\r\nB=crlf\r\n", ["A=bom", "B=crlf"]),
    (b"EMPTY=\nEQ=a=b=c\n", ["EMPTY=", "EQ=a=b=c"]),
], ids=["dialect", "port-var-is-the-toolkits", "bom-crlf", "empty-and-equals"])
def test_shared_env_becomes_the_env_file_by_the_dotenv_dialect(tmp_path, text, lines):
    r = _env_file(tmp_path, text)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines


@pytest.mark.parametrize("text, key, why", [
    (b"OK=1\nCERT=\"line1\\nline2\"\n", "CERT", "line break"),
    (b"KEY_PEM='-----BEGIN\nabc\n-----END'\n", "KEY_PEM", "line break"),
    (b"TRAIL=\"value\\r\"\n", "TRAIL", "carriage return"),
], ids=["escaped-newline", "multi-line-quoted", "trailing-cr"])
def test_a_value_the_env_file_cannot_carry_is_refused_naming_the_key_never_the_value(tmp_path, text, key, why):
    r = _env_file(tmp_path, text)
    assert r.returncode == c.ENV_UNCARRIED_EXIT
    assert key in r.stderr and why in r.stderr
    assert "line1" not in r.stderr and "abc" not in r.stderr and "value" not in r.stderr.replace("its value", "")


def test_a_line_the_dialect_cannot_parse_stops_the_start_naming_the_line(tmp_path):
    r = _env_file(tmp_path, b"GOOD=1\nnot a binding\n")
    assert r.returncode == c.ENV_UNCARRIED_EXIT and "line 2" in r.stderr


def test_the_free_port_is_the_first_nothing_listens_on(tmp_path):
    with socket.socket() as s1:
        s1.bind(("127.0.0.1", 0))
        s1.listen()
        first = s1.getsockname()[1]
        r = subprocess.run(["sh", "-c", c._pick_port(first, 3) + " && echo $port"], capture_output=True, text=True)
        assert r.returncode == 0 and int(r.stdout) == first + 1 or _busy(first + 1)
        r = subprocess.run(["sh", "-c", c._pick_port(first, 1) + " && echo $port"], capture_output=True, text=True)
        assert r.returncode == c.NO_FREE_PORT_EXIT and f"no free port in {first}-{first}" in r.stderr


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- facts and decisions

def test_state_output_is_parsed_into_records_current_and_containers():
    other = REF.replace("ab" * 32, "cd" * 32)
    text = ("== current\n20260102-b 41001\n== records\n20260101-a " + REF + " -\n20260102-b " + other + " 20260101-a\n"
            "== images\n" + REF + "\nregistry.example:5000/acme/other@sha256:" + "ef" * 32 + "\n"
            "== containers\nocc-x-20260102-b Up 3 minutes ago\nocc-x-20260101-a exited\n")
    st = c.parse_image_state(text)
    assert (st.current, st.port) == ("20260102-b", 41001)
    assert [(r.release, r.previous, r.present) for r in st.records] == [("20260101-a", None, True),
                                                                       ("20260102-b", "20260101-a", False)]
    assert st.running("occ-x-20260102-b") and not st.running("occ-x-20260101-a") and st.exists("occ-x-20260101-a")
    empty = c.parse_image_state("== current\n== records\n== images\n== containers\n")
    assert (empty.current, empty.port, empty.records) == (None, None, ())


# ---------------------------------------------------------------- the finish in the background

def _sh(cmd: str) -> float:
    started = time.monotonic()
    subprocess.run(["sh", "-c", cmd], check=True, timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("seconds", [0.4, 0.9, 1.3], ids=["short", "medium", "long"])
def test_the_finish_returns_at_once_and_the_next_state_read_waits_until_it_ended(tmp_path, seconds):
    t = _t(str(tmp_path))
    (tmp_path / "image").mkdir()
    done = tmp_path / "done"
    launched = _sh(c.background_finish_command(t, f"sleep {seconds}; touch {done}"))
    assert launched < seconds / 2   # detached from the session
    assert list((tmp_path / "image").glob(".finish-*"))          # marked while it runs
    waited = _sh(c.image_state_command(t, c.Runtime("true")))
    assert done.exists(), "the state read came back before the finish ended"
    assert waited < seconds + 2
    assert not list((tmp_path / "image").glob(".finish-*"))


@pytest.mark.parametrize("content", ["999999", "", "not-a-pid"], ids=["dead-pid", "empty", "garbage"])
def test_a_finish_killed_with_its_host_does_not_hold_up_the_next_state_read(tmp_path, content):
    t = _t(str(tmp_path))
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / ".finish-4242").write_text(content + "\n")
    assert _sh(c.wait_finish_command(t)) < 1.0
    assert not (tmp_path / "image" / ".finish-4242").exists()


def _rec(rid, ref=REF):
    return c.Record(rid, ref, None, True)


@pytest.mark.parametrize("records, keep, protect, drop, refs", [
    (["r1", "r2", "r3", "r4"], 2, ["r4", "r3"], ["r1", "r2"], ["img-r1", "img-r2"]),
    (["r1", "r2", "r3", "r4"], 2, ["r4", "r1"], ["r2"], ["img-r2"]),        # a rolled-back-to live release stays
    (["r1", "r2"], 3, ["r2"], [], []),
], ids=["oldest-go", "live-protected", "under-keep"])
def test_prune_keeps_the_newest_and_the_protected_and_their_images(records, keep, protect, drop, refs):
    recs = [_rec(r, f"reg/x@sha256:{'0' * 63}{i}") for i, r in enumerate(records)]
    names = {f"reg/x@sha256:{'0' * 63}{i}": f"img-{r}" for i, r in enumerate(records)}
    got_drop, got_refs = c.prune_images(recs, keep, protect)
    assert got_drop == drop and [names[x] for x in got_refs] == refs


def test_an_image_still_named_by_a_kept_record_is_not_removed():
    drop, refs = c.prune_images([_rec("r1"), _rec("r2"), _rec("r3")], 1, ["r3"])
    assert drop == ["r1", "r2"] and refs == []   # r3 (kept) runs the same digest


# ---------------------------------------------------------------- settings and the seam

def _settings(raw: dict, name="staging") -> config.Settings:
    return config.parse(raw, name=name, file=Path(f"env/{name}.toml"), root=Path("/p"))


IMAGE = {"registry": "registry.example:5000", "repository": "acme/app"}


def test_target_image_on_hosts_is_the_image_target_and_refused_for_a_local_environment():
    t = target_for(_settings({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1"]},
                              "release": {"target": "image"}, "image": IMAGE}))
    assert isinstance(t, HostsImage) and t.shared and t.ledger_first
    with pytest.raises(SettingsError, match="runs on \\[hosts\\]"):
        target_for(_settings({"environment": {"kind": "local"}, "release": {"target": "image"}, "image": IMAGE},
                             "local"))


@pytest.mark.parametrize("image, match", [
    ({"run_args": ["--name", "x"]}, "run_args sets --name"),
    ({"run_args": ["--network=bridge"]}, "run_args sets --network"),
    ({"run_args": ["--env-file", "/etc/x"]}, "run_args sets --env-file"),
    ({"port_span": 0}, "port_span"),
    ({"stop_timeout": 9999}, "stop_timeout"),
    ({"network": "bridge"}, "image.network"),
], ids=["name", "network", "env-file", "span", "stop", "network-kind"])
def test_image_host_settings_that_would_fight_the_target_are_refused_naming_the_key(image, match):
    with pytest.raises(SettingsError, match=match):
        _settings({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1"]}, "release": {"target": "image"},
                   "image": {**IMAGE, **image}})


def test_dry_run_shows_pull_run_health_proxy_and_stop_per_host_with_placeholders():
    s = _settings({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1", "web2"], "app_ports": [4000, 4000]},
                   "release": {"target": "image"}, "app": {"health_path": "/healthz"},
                   "image": {**IMAGE, "runtime_args": ["--root", "{deploy_to}/c"]},
                   "proxy": {"kind": "caddy"}})
    shows = HostsImage(s).release_shows("20260101-abc")
    assert {x.where for x in shows} == {"deploy@web1:22", "deploy@web2:22"}
    text = "\n".join(x.what for x in shows)
    assert "@sha256:<digest of the build>" in text and "--authfile" in text and "<registry login>" in text
    assert "--root /srv/occ/c" in text and "run -d --name occ-" in text and "/healthz" in text
    assert "proxy: switch to <port>" in text and "127.0.0.1:<port>" in text
    assert "REGISTRY_PASSWORD" not in text
