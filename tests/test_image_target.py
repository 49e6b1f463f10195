"""The image target on real hosts: sshd hosts running rootless podman (each with a storage of its
own: `[image] runtime_args` puts podman's --root/--runroot/--tmpdir under the host's deploy_to,
so two hosts on this machine really hold separate images, see deploy/testing/imagehosts.py), a
caddy proxy per host, and images pushed to the real distribution registry on loopback (TLS with
its own CA, htpasswd auth). The target is driven as the promote and rollback steps drive it,
with the engine's StepContext as the run state."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deploy import config, facts, hosts
from deploy.engine import Console, StepContext
from deploy.errors import HostFailed
from deploy.facts import ImageRef, ImageReleaseFacts
from deploy.hosts import app_key, setup_proxy
from deploy.hosts._values import Target
from deploy.targets import target_for
from deploy.targets.image import HostsImage
from deploy.testing.imagehosts import (HOST_RUN_ARGS, HOST_RUNTIME_ARGS, host_images, host_podman, push_app_image,
                                       remove_all_containers)
from deploy.testing.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(registry, node_image):
    """Three versions of the small app by digest: two good ones and one whose health fails."""
    return {v: push_app_image(registry, node_image, v) for v in ("v1", "v2", "v3-broken")}


class Env:
    def __init__(self, farm, hosts, registry, tmp: Path):
        self.farm, self.hosts, self.registry = farm, hosts, registry
        self.app_ports = [free_port() + 0 for _ in hosts]
        self.listen = [free_port() for _ in hosts]
        self.admin = [free_port() for _ in hosts]
        self.secret = f"app-secret-{hashlib.sha256(str(time.time()).encode()).hexdigest()[:16]}"
        self.raw = {
            "environment": {"kind": "remote"},
            "app": {"health_path": "/healthz", "ready_timeout": 20.0},
            "hosts": {"hosts": [h.address for h in hosts], "user": hosts[0].user, "key_file": str(farm.key_file),
                      "known_hosts": str(farm.known_hosts), "deploy_to": farm.deploy_to(),
                      "app_ports": self.app_ports, "connect_timeout": 5.0},
            "release": {"target": "image"},
            "image": {"registry": registry.address, "repository": "occ/tiny", "ca_file": str(registry.ca_file),
                      "runtime": "auto", "runtime_args": list(HOST_RUNTIME_ARGS), "run_args": list(HOST_RUN_ARGS),
                      "stop_timeout": 2, "keep": 2},
            "proxy": {"kind": "caddy", "listen_ports": self.listen, "admin_ports": self.admin, "drain_seconds": 0.2},
        }
        self.environ = {"REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password}
        self.out = io.StringIO()
        self.tmp = tmp

    @property
    def s(self) -> config.Settings:
        return config.parse(self.raw, name="staging", file=Path("env/staging.toml"), root=self.tmp)

    def target(self) -> HostsImage:
        t = target_for(self.s)
        assert isinstance(t, HostsImage)
        return t

    def state(self, run_id: str, ref: str | None = None) -> StepContext:
        ctx = StepContext(run_id=run_id, env="staging", state={}, console=Console(self.out))
        if ref:
            ctx.put(ImageRef(reference=ref, digest=ref.rsplit("@", 1)[1], registry=self.registry.address,
                             repository="occ/tiny"))
        return ctx

    def deploy_to(self, h) -> str:
        return str(h.root / "srv/occ")

    def get(self, i: int, path: str = "/version"):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.listen[i]}{path}", timeout=5) as r:
            return json.loads(r.read())

    def versions(self) -> list[str]:
        return [self.get(i)["release"] for i in range(len(self.hosts))]


@pytest.fixture
def env(sshd_farm, sshd_hosts, registry, tmp_path):
    hosts = sshd_hosts(2)
    e = Env(sshd_farm, hosts, registry, tmp_path)
    s = e.s
    for h in hosts:
        h.write("srv/occ/shared/.env", f"APP_SECRET={e.secret}\nMULTI_WORD='two words # not a comment'\n", 0o600)
    setup_proxy(s.hosts, s.proxy, s.app)   # what `invoke hosts.setup` does: caddy on every host
    yield e
    for h in hosts:
        remove_all_containers(h, e.deploy_to(h))


def _release(e: Env, run_id: str, release_id: str, ref: str) -> str:
    """As promote runs it: the run's lock step, the release step, the lock freed when the run ends."""
    ctx = e.state(run_id, ref)
    t = e.target()
    t.lock(run_id, release_id)
    try:
        return t.release(ctx, release_id, None, e.environ)   # type: ignore[arg-type]
    finally:
        t.unlock(run_id)


def test_image_release_runs_the_digest_on_two_hosts_behind_the_proxy_and_rolls_back_without_a_pull(env, images):
    t = env.target()
    assert "podman" in t.prepare(env.environ)
    out = _release(env, "run-1", "20260101000000-aaaaaaa", images["v1"])
    assert "live on 2 host(s)" in out
    assert env.versions() == ["v1", "v1"]
    want = hashlib.sha256(env.secret.encode()).hexdigest()
    assert [env.get(i)["secret_sha256"] for i in range(2)] == [want, want]   # shared/.env reached the container
    assert env.get(0)["multi"] == "two words # not a comment"
    # each host holds its own copy of the image: separate storages
    d1 = images["v1"].rsplit("@", 1)[1]
    assert all(host_images(h, env.deploy_to(h)) == [d1] for h in env.hosts)

    _release(env, "run-2", "20260101000100-bbbbbbb", images["v2"])
    assert env.versions() == ["v2", "v2"]
    assert t.serving() == {h.address: "20260101000100-bbbbbbb" for h in env.hosts}
    live = t.digests()
    assert {ref for _, ref in live.values()} == {images["v2"]}
    back = t.way_back(None)
    assert (back.to, back.current) == ("20260101000000-aaaaaaa", "20260101000100-bbbbbbb")

    # A rollback to an image the hosts still hold needs no pull: with a login the registry
    # refuses, any pull would fail the rollback.
    ctx = env.state("run-3")
    t.rollback(ctx, "20260101000000-aaaaaaa", expect="20260101000100-bbbbbbb",
               environ={**env.environ, "REGISTRY_PASSWORD": "not-the-password"})
    assert env.versions() == ["v1", "v1"]
    assert t.serving() == {h.address: "20260101000000-aaaaaaa" for h in env.hosts}


@pytest.mark.parametrize("releases", [2, 3], ids=["one-before", "two-before"])
def test_with_previous_running_the_container_served_before_stays_up_and_a_rollback_starts_nothing(env, images,
                                                                                                 releases):
    env.raw["image"]["previous_running"] = True
    ids = [f"2026010100{i:02d}00-{c * 7}" for i, c in zip(range(releases), "abc")]
    refs = [images["v1"], images["v2"], images["v1"]][:releases]
    for i, (rid, ref) in enumerate(zip(ids, refs)):
        _release(env, f"run-{i}", rid, ref)
    targets = hosts.targets(env.s.hosts, env.s.app)
    live, prev = ids[-1], ids[-2]

    def started(h, t, rid):
        return host_podman(h, env.deploy_to(h), "inspect", "--format", "{{.State.StartedAt}}",
                           f"occ-{app_key(t)}-{rid}").stdout.strip()

    for h, t in zip(env.hosts, targets):
        _wait(lambda: sorted(_ps(env, h)) == sorted(f"occ-{app_key(t)}-{r}" for r in (live, prev)),
              what="the live and the previous container, no other")   # an older one is stopped
    before = [started(h, t, prev) for h, t in zip(env.hosts, targets)]
    env.target().rollback(env.state("run-rb"), prev, expect=live, environ=env.environ)
    assert env.target().serving() == {h.address: prev for h in env.hosts}
    assert env.versions() == [["v1", "v2"][releases - 2]] * 2
    assert [started(h, t, prev) for h, t in zip(env.hosts, targets)] == before   # not started again
    for h, t in zip(env.hosts, targets):   # the one rolled back from is now the previous: still up
        _wait(lambda: sorted(_ps(env, h)) == sorted(f"occ-{app_key(t)}-{r}" for r in (live, prev)),
              what="both containers after the rollback")


@pytest.fixture
def env1(sshd_farm, sshd_hosts, registry, tmp_path):
    """One host, `[image] previous_running` on: a one-server team's rollback."""
    hosts = sshd_hosts(1)
    e = Env(sshd_farm, hosts, registry, tmp_path)
    e.raw["image"]["previous_running"] = True
    e.raw["app"]["ready_timeout"] = 3.0
    hosts[0].write("srv/occ/shared/.env", f"APP_SECRET={e.secret}\n", 0o600)
    setup_proxy(e.s.hosts, e.s.proxy, e.s.app)
    yield e
    remove_all_containers(hosts[0], e.deploy_to(hosts[0]))


@pytest.mark.parametrize("healthy", [True, False], ids=["healthy", "frozen"])
def test_one_host_rollback_to_the_running_previous_container_checks_its_health_before_the_switch(env1, images,
                                                                                                 healthy):
    """On one host the kept container's health check shares the switch's round trip: the proxy
    moves only after the check passed; a container that does not answer (frozen) is not switched
    to, the live release keeps serving, and the rollback says nothing switched."""
    e, h = env1, env1.hosts[0]
    t = hosts.targets(e.s.hosts, e.s.app)[0]
    _release(e, "run-1", "20260101000000-aaaaaaa", images["v1"])
    _release(e, "run-2", "20260101000100-bbbbbbb", images["v2"])
    prev = f"occ-{app_key(t)}-20260101000000-aaaaaaa"
    _wait(lambda: prev in _ps(e, h), what="the previous container kept running")
    started = host_podman(h, e.deploy_to(h), "inspect", "--format", "{{.State.StartedAt}}", prev).stdout.strip()
    if healthy:
        e.target().rollback(e.state("run-rb"), "20260101000000-aaaaaaa", expect="20260101000100-bbbbbbb",
                            environ=e.environ)
        assert e.versions() == ["v1"]
        assert e.target().serving() == {h.address: "20260101000000-aaaaaaa"}
        assert host_podman(h, e.deploy_to(h), "inspect", "--format", "{{.State.StartedAt}}",
                           prev).stdout.strip() == started   # switched to, not started again
        return
    assert host_podman(h, e.deploy_to(h), "kill", "--signal", "STOP", prev).returncode == 0
    with pytest.raises(HostFailed) as err:
        e.target().rollback(e.state("run-rb"), "20260101000000-aaaaaaa", expect="20260101000100-bbbbbbb",
                            environ=e.environ)
    msg = " ".join(err.value.message.split())   # the table wraps its cells
    assert "checking 20260101000000-aaaaaaa's container on port" in msg and "within 3s" in msg
    assert "before any proxy switched; nothing changed" in msg
    assert e.versions() == ["v2"]
    assert e.target().serving() == {h.address: "20260101000100-bbbbbbb"}


def test_a_release_whose_health_fails_is_undone_and_the_old_container_keeps_serving(env, images):
    _release(env, "run-1", "20260101000000-aaaaaaa", images["v1"])
    ctx = env.state("run-2", images["v3-broken"])
    with pytest.raises(HostFailed) as e:
        env.target().release(ctx, "20260101000200-ccccccc", None, env.environ)   # type: ignore[arg-type]
    assert "did not become healthy" in e.value.message or "no 2xx/3xx" in e.value.message
    assert env.versions() == ["v1", "v1"]
    # the engine undoes the failed step too: safe, and the old container still serves
    env.target().switch_back(ctx, "20260101000200-ccccccc", env.environ)
    assert env.versions() == ["v1", "v1"]
    facts = ctx.get(ImageReleaseFacts)
    assert facts is not None and set(facts.previous.values()) == {"20260101000000-aaaaaaa"}
    d1 = images["v1"].rsplit("@", 1)[1]
    assert all(host_images(h, env.deploy_to(h)) == [d1] for h in env.hosts)   # the broken image went


def test_undo_of_a_release_goes_back_to_the_previous_container(env, images):
    _release(env, "run-1", "20260101000000-aaaaaaa", images["v1"])
    ctx = env.state("run-2", images["v2"])
    env.target().release(ctx, "20260101000100-bbbbbbb", None, env.environ)   # type: ignore[arg-type]
    assert env.versions() == ["v2", "v2"]
    env.target().switch_back(ctx, "20260101000100-bbbbbbb", env.environ)
    assert env.versions() == ["v1", "v1"]
    env.target().switch_back(ctx, "20260101000100-bbbbbbb", env.environ)   # repeated: nothing more happens
    assert env.versions() == ["v1", "v1"]
    assert env.target().serving() == {h.address: "20260101000000-aaaaaaa" for h in env.hosts}


# ---------------------------------------------------------------- a killed release: resume and abort

CHILD = Path(__file__).with_name("image_child.py")


def _serving_port(env: Env, i: int) -> int | None:
    """The port the proxy of host `i` serves from (its admin API)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{env.admin[i]}/id/occ_upstream/upstreams", timeout=2) as r:
            return int(json.loads(r.read())[0]["dial"].rsplit(":", 1)[1])
    except OSError:
        return None


def _start_child(env: Env, d: Path, run_id: str, release_id: str, ref: str) -> subprocess.Popen:
    d.mkdir(parents=True, exist_ok=True)
    (d / "spec.json").write_text(json.dumps({"raw": env.raw, "root": str(env.tmp), "run_id": run_id,
                                             "release_id": release_id, "ref": ref, "environ": env.environ}))
    return subprocess.Popen([sys.executable, str(CHILD), str(d)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def _wait(cond, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("when", ["before-switch", "after-switch"])
@pytest.mark.parametrize("then", ["resume", "abort"])
def test_a_killed_release_resumes_or_aborts_and_one_container_always_serves(env, images, tmp_path, when, then):
    first, second = "20260101000000-aaaaaaa", "20260101000100-bbbbbbb"
    _release(env, "run-1", first, images["v1"])
    old_ports = [_serving_port(env, i) for i in range(2)]
    if when == "before-switch":
        # The new app answers its health path only after 4 s: the kill lands while it is checked.
        for h in env.hosts:
            h.write("srv/occ/shared/.env", f"APP_SECRET={env.secret}\nREADY_AFTER_MS=4000\n", 0o600)
    else:
        env.raw["proxy"]["drain_seconds"] = 5.0   # the kill lands while the old containers drain
    d = tmp_path / "child"
    child = _start_child(env, d, "run-2", second, images["v2"])
    try:
        if when == "before-switch":
            names = [f"occ-{app_key(t)}-{second}" for t in hosts.targets(env.s.hosts, env.s.app)]
            _wait(lambda: all(any(n in ln for ln in _ps(env, h)) for n, h in zip(names, env.hosts)), what="new containers")
        else:
            _wait(lambda: all(_serving_port(env, i) not in (None, old_ports[i]) for i in range(2)), what="the switch")
        assert env.versions() in (["v1", "v1"], ["v2", "v2"])   # someone serves on every host
    finally:
        child.kill()
        child.wait()
    assert env.versions() == (["v1", "v1"] if when == "before-switch" else ["v2", "v2"])
    state = facts.loads((d / "state.json").read_text())
    ctx = StepContext(run_id="run-2", env="staging", state=state, console=Console(env.out))
    assert ctx.get(ImageReleaseFacts).previous == {h.address: first for h in env.hosts}   # recorded before any change
    t = env.target()
    if then == "resume":
        t.release(ctx, second, None, env.environ)   # type: ignore[arg-type]
        assert env.versions() == ["v2", "v2"]
        assert t.serving() == {h.address: second for h in env.hosts}
        # the old containers are stopped by the finish the release leaves running on each host
        _wait(lambda: not any(first in ln for h in env.hosts for ln in _ps(env, h)), what="the old containers to stop")
    else:
        t.switch_back(ctx, second, env.environ)
        assert env.versions() == ["v1", "v1"]
        assert t.serving() == {h.address: first for h in env.hosts}
        t.switch_back(ctx, second, env.environ)   # an abort repeated changes nothing
        assert env.versions() == ["v1", "v1"]
        running = [ln for h in env.hosts for ln in _ps(env, h)]
        assert not any(second in ln for ln in running), running


def _ps(env: Env, h) -> list[str]:
    r = host_podman(h, env.deploy_to(h), "ps", "--format", "{{.Names}}")
    return r.stdout.split()


# ---------------------------------------------------------------- leaks

def _cmdlines() -> list[bytes]:
    out = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(p.read_bytes())
        except OSError:
            pass
    return out


def _scan_tree(root: Path, secrets: dict[str, str], skip=()) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if any(str(p).startswith(str(s)) for s in skip) or not p.is_file() or p.is_symlink():
            continue
        try:
            data = p.read_bytes()
        except OSError:
            continue
        found += [f"{p}: {name}" for name, v in secrets.items() if v.encode() in data]
    return found


def test_no_registry_login_or_app_secret_reaches_a_command_line_the_output_or_a_host_file(env, images):
    seen: list[bytes] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.extend(_cmdlines())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    errors = []
    try:
        t = env.target()
        errors.append(t.prepare(env.environ))
        errors.append(_release(env, "run-1", "20260101000000-aaaaaaa", images["v1"]))
        ctx = env.state("run-2", images["v3-broken"])
        with pytest.raises(HostFailed) as e:
            t.release(ctx, "20260101000200-ccccccc", None, env.environ)   # type: ignore[arg-type]
        errors.append(e.value.message)
        errors.append(t.switch_back(ctx, "20260101000200-ccccccc", env.environ))
        t.unlock("run-2")
        errors.append(_release(env, "run-3", "20260101000300-ddddddd", images["v2"]))
        errors.append(repr(t.digests()))
        errors.append("\n".join(c.what for c in t.release_shows("r9")))
    finally:
        stop.set()
        sampler.join()
    secrets = {"registry password": env.registry.password, "registry user": env.registry.username,
               "app secret": env.secret}
    assert len(seen) > 100
    assert any(b"--env-file" in c for c in seen) and any(b"pull" in c and b"--authfile" in c for c in seen), \
        "the sampler never saw the hosts' podman commands: it proves nothing"
    assert not [name for name, v in secrets.items() if any(v.encode() in c for c in seen)], "a secret was in ps"
    text = env.out.getvalue() + "\n".join(errors) + json.dumps(env.raw)
    assert not [name for name, v in secrets.items() if v in text]
    found = []
    for h in env.hosts:
        d = Path(env.deploy_to(h))
        # The registry login must be nowhere on the host, the runtime's own storage included.
        found += _scan_tree(h.root, {"registry password": env.registry.password})
        runroot = Path(f"/tmp/occ-run-{app_key(Target('', '', 0, '', str(d)))}")
        found += _scan_tree(runroot, {"registry password": env.registry.password})
        # The app's secret lives in shared/.env and in the runtime's container config (podman
        # keeps a container's environment): nowhere else, no env file left behind.
        found += _scan_tree(h.root, {"app secret": env.secret}, skip=(d / "shared", d / "containers"))
        assert not list((d / "image").glob(".work-*"))
    assert not found, found
