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
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from deploy import config
from deploy.engine import Console, StepContext
from deploy.errors import HostFailed
from deploy.facts import ImageRef, ImageReleaseFacts
from deploy.hosts import _proxy
from deploy.hosts._ssh import _connect, _run
from deploy.targets import HostsImage, target_for
from deploy.testing.imagehosts import (HOST_RUN_ARGS, HOST_RUNTIME_ARGS, host_images, push_app_image,
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
    for i, h in enumerate(hosts):
        h.write("srv/occ/shared/.env", f"APP_SECRET={e.secret}\nMULTI_WORD='two words # not a comment'\n", 0o600)
        t = next(t for t in __import__("deploy").hosts.targets(s.hosts, s.app) if t.port == h.port)
        conn = _connect(s.hosts, t)
        try:
            _run(conn, t, _proxy.setup_command(s.proxy.for_host(i, t.deploy_to), e.app_ports[i]), s.hosts,
                 "starting caddy", long=True)
        finally:
            conn.close()
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

    # The registry goes away: a rollback to an image the hosts still hold needs no pull.
    env.registry.down()
    try:
        ctx = env.state("run-3")
        t.rollback(ctx, "20260101000000-aaaaaaa", expect="20260101000100-bbbbbbb", environ=env.environ)
    finally:
        env.registry.start()
    assert env.versions() == ["v1", "v1"]
    assert t.serving() == {h.address: "20260101000000-aaaaaaa" for h in env.hosts}


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
