"""The image target with the React Router example: its artifact built by the release contract,
made into an image by deploy/images (the toolkit's build file over the local Node base image),
pushed to the loopback registry over TLS with a login, then released by digest to two sshd hosts
running podman (each with a storage of its own) behind caddy, released again (the same digest:
no pull), and rolled back by digest to the first image, with no pull while the hosts hold it."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from deploy import build as b
from deploy import config, hosts
from deploy.engine import Console, StepContext
from deploy.facts import ImageRef
from deploy.images import build_image
from deploy.locations import artifacts_dir, build_key, source_dir
from deploy.source import commit_time
from deploy.targets import target_for
from deploy.targets.image import HostsImage
from deploy.testing.images import podman
from deploy.testing.imagehosts import HOST_RUN_ARGS, HOST_RUNTIME_ARGS, authfile, host_images, remove_all_containers
from deploy.testing.ports import free_port
from deploy.testing.shopify_app import copy_shopify_app, http_get

pytestmark = [pytest.mark.slow, pytest.mark.containers]


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_the_react_router_example_is_released_by_digest_to_two_hosts_again_and_rolled_back(
        tmp_path, registry, node_image, podman_env, shopify_app_installed, sshd_farm, sshd_hosts):
    root = tmp_path / "project"
    (root / "env").mkdir(parents=True)
    app = copy_shopify_app(root / "shopify-app", with_node_modules=shopify_app_installed)
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    host_list = sshd_hosts(2)
    app_ports, listen, admin = ([free_port() for _ in host_list] for _ in range(3))
    raw = {
        "environment": {"kind": "remote", "app_dir": str(app)},
        "app": {"health_path": "/", "ready_timeout": 60.0},
        "hosts": {"hosts": [h.address for h in host_list], "user": host_list[0].user,
                  "key_file": str(sshd_farm.key_file), "known_hosts": str(sshd_farm.known_hosts),
                  "deploy_to": sshd_farm.deploy_to(), "app_ports": app_ports},
        "release": {"target": "image"},
        "image": {"registry": registry.address, "repository": "occ/shopify-app-hosts", "base": node_image,
                  "ca_file": str(registry.ca_file), "runtime_args": list(HOST_RUNTIME_ARGS),
                  "run_args": list(HOST_RUN_ARGS), "stop_timeout": 3},
        "proxy": {"kind": "caddy", "listen_ports": listen, "admin_ports": admin, "drain_seconds": 0.5},
    }
    s = config.parse(raw, name="staging", file=Path("env/staging.toml"), root=root)
    environ = {**podman_env, "REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password}
    sha = git(app, "rev-parse", "HEAD")
    art = b.build(source_dir(s, sha), sha, artifacts_dir(s), contract=s.app, now=commit_time(s.app_dir, sha),
                  app_folder=s.app_dir, key=build_key(s, sha)).artifact
    first = build_image(s, art, environ, commit=sha).ref
    # A second image of the same app (its own layer on top): what the promotion after a fix ships.
    second_tag = f"{registry.address}/occ/shopify-app-hosts:second"
    work = tmp_path / "second"
    work.mkdir()
    (work / "Containerfile").write_text(f"FROM {first.reference}\nLABEL occ.test=second\n")
    auth = authfile(work, registry)
    podman("pull", "--authfile", str(auth), "--cert-dir", str(registry.cert_dir), first.reference, env=podman_env)
    podman("build", "-q", "-t", second_tag, str(work), env=podman_env)
    podman("push", "--authfile", str(auth), "--cert-dir", str(registry.cert_dir), "--digestfile",
           str(work / "digest"), second_tag, env=podman_env)
    second = f"{registry.address}/occ/shopify-app-hosts@{(work / 'digest').read_text().strip()}"

    for h in host_list:
        h.write("srv/occ/shared/.env", "HOST=127.0.0.1\nDATABASE_URL=file:/tmp/app.db\nNODE_ENV=production\n", 0o600)
    hosts.setup_proxy(s.hosts, s.proxy, s.app)   # what `invoke hosts.setup` does: caddy on every host
    out = io.StringIO()
    target = target_for(s)
    assert isinstance(target, HostsImage)

    def release(run_id: str, release_id: str, ref: str) -> float:
        ctx = StepContext(run_id=run_id, env="staging", state={}, console=Console(out))
        ctx.put(ImageRef(reference=ref, digest=ref.rsplit("@", 1)[1]))
        started = time.monotonic()
        target.lock(run_id, release_id)
        try:
            target.release(ctx, release_id, art, environ)
        finally:
            target.unlock(run_id)
        return time.monotonic() - started

    def pages() -> list[str]:
        out = []
        for p in listen:
            status, body = http_get(f"http://127.0.0.1:{p}/", timeout=10)
            assert status == 200, body[:300]
            out.append(body)
        return out

    try:
        target.prepare(environ)
        release("run-1", "20260101000000-aaaaaaa", first.reference)
        assert all("OCC Operator Control Center" in p for p in pages())
        assert target.digests() == {h.address: ("20260101000000-aaaaaaa", first.reference) for h in host_list}
        release("run-2", "20260101000100-bbbbbbb", second)
        assert all("OCC Operator Control Center" in p for p in pages())
        assert {ref for _, ref in target.digests().values()} == {second}
        # Promoted again (same digest, another release id): nothing to pull, a fresh container.
        release("run-3", "20260101000200-ccccccc", second)
        # Rolled back by digest to the first image, the registry down: the hosts still hold it.
        back = target.way_back(None)
        assert back.to == "20260101000100-bbbbbbb"
        registry.down()
        try:
            target.rollback(StepContext(run_id="run-4", env="staging", state={}, console=Console(out)),
                            "20260101000000-aaaaaaa", expect="20260101000200-ccccccc", environ=environ)
        finally:
            registry.start()
        assert all("OCC Operator Control Center" in p for p in pages())
        assert {ref for _, ref in target.digests().values()} == {first.reference}
        for h in host_list:
            held = host_images(h, str(h.root / "srv/occ"))
            assert first.digest in held and second.rsplit("@", 1)[1] in held
    finally:
        for h in host_list:
            remove_all_containers(h, str(h.root / "srv/occ"))
