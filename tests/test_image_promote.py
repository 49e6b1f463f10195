"""The image target through the real CLI: `invoke promote --to=staging` with `[release] target =
"image"` on two sshd hosts running rootless podman (a storage of their own each: `[image]
runtime_args`, see deploy/testing/imagehosts.py) behind caddy (`invoke hosts.setup`), the
example app built, made into an image, pushed to the loopback registry (TLS, login) and run by
digest; promoted again after a change; `invoke rollback` back to the first digest; the
registry's login and the app's secret in no output, ledger row or host file."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from deploy.testing.imagehosts import HOST_RUN_ARGS, HOST_RUNTIME_ARGS, remove_all_containers
from deploy.testing.ports import free_port
from deploy.testing.stage import stage_toml

pytestmark = [pytest.mark.slow, pytest.mark.containers]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _live_digest(text: str) -> str:
    """The one digest `invoke hosts.releases` shows live on every host."""
    found = re.findall(r"live image \S+@(sha256:[0-9a-f]{64})", text)
    assert len(found) == 2 and len(set(found)) == 1, text
    return found[0]


def test_promote_runs_the_image_by_digest_behind_the_proxy_again_and_rolls_back(stage, registry, node_image,
                                                                                  podman_env):
    p = stage.project
    listen, admin = [free_port() for _ in stage.hosts], [free_port() for _ in stage.hosts]
    text = stage_toml(stage.farm, stage.hosts, stage.app_ports)
    text = text.replace('checks = [{ url = "/healthz" }, { url = "/version", json_field = "release" }]',
                        'checks = [{ url = "/healthz" }]')
    text += f'''
[release]
target = "image"

[image]
registry = "{registry.address}"
repository = "occ/stage-app"
base = "{node_image}"
ca_file = "{registry.ca_file}"
runtime_args = {json.dumps(list(HOST_RUNTIME_ARGS))}
run_args = {json.dumps(list(HOST_RUN_ARGS))}
stop_timeout = 2

[proxy]
kind = "caddy"
listen_ports = {json.dumps(listen)}
admin_ports = {json.dumps(admin)}
drain_seconds = 0.2
'''
    p.write_env("staging", text)
    p.commit("staging releases images")
    app_secret = "app-secret-value-9f3e1c7a"
    for h in stage.hosts:
        h.write("srv/occ/shared/.env", f"HOST=127.0.0.1\nAPP_SECRET={app_secret}\n", 0o600)
    p.env.update({"CONTAINERS_CONF": podman_env["CONTAINERS_CONF"], "REGISTRY_USERNAME": registry.username,
                  "REGISTRY_PASSWORD": registry.password})
    outputs = []
    try:
        r = p.invoke("hosts.setup", "--env=staging", "--yes")
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        stage.collect_evidence()
        r = p.invoke("promote", "--to=staging", "--yes", timeout=900)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        led = p.ledger()
        first = led.runs("staging")[0]
        assert first.status == "succeeded"
        assert all(_get(port, "/healthz")[0] == 200 for port in listen)
        r = p.invoke("hosts.releases", "--env=staging")
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0 and r.stdout.count(f"[{first.release_id}]") == 2, r.stdout
        first_digest = _live_digest(r.stdout)

        (p.root / "examples/app/README.md").write_text("a change\n")
        p.commit("a change")
        stage.collect_evidence()
        r = p.invoke("promote", "--to=staging", "--yes", timeout=900)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        second = p.ledger().runs("staging")[0]
        assert second.release_id != first.release_id and second.status == "succeeded"
        r = p.invoke("hosts.releases", "--env=staging")
        assert r.stdout.count(f"[{second.release_id}]") == 2, r.stdout
        assert _live_digest(r.stdout) != first_digest   # a new commit: a new image

        r = p.invoke("rollback", "--env=staging", "--yes", timeout=600)
        outputs.append(r.stdout + r.stderr)
        assert r.returncode == 0, r.stdout + r.stderr
        r = p.invoke("hosts.releases", "--env=staging")
        outputs.append(r.stdout + r.stderr)
        assert r.stdout.count(f"[{first.release_id}]") == 2, r.stdout
        assert _live_digest(r.stdout) == first_digest   # rolled back by digest
        assert all(_get(port, "/healthz")[0] == 200 for port in listen)
        assert p.ledger().live_release("staging").release_id == first.release_id
    finally:
        for h in stage.hosts:
            remove_all_containers(h, str(h.root / "srv/occ"))
    # Leak scan: the registry login and the app's secret in no output, ledger or host file.
    secrets = {"registry password": registry.password, "registry user": registry.username, "app secret": app_secret}
    text = "\n".join(outputs)
    assert not [k for k, v in secrets.items() if v in text]
    found = []
    for f in (p.root / ".deploy").rglob("*"):
        if f.is_file() and not f.name.endswith(".tar.gz"):
            data = f.read_bytes()
            found += [f"{f}: {k}" for k, v in secrets.items() if v.encode() in data]
    for h in stage.hosts:
        for f in h.root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                data = f.read_bytes()
                if registry.password.encode() in data:
                    found.append(f"{f}: registry password")
                if app_secret.encode() in data and "/shared/" not in str(f) and "/containers/" not in str(f):
                    found.append(f"{f}: app secret")
    assert not found, found
