"""The registry and base-image fixtures give a real registry (TLS with its own CA, htpasswd
auth) and a Node base image made without a public registry."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest

from deploy.testing.images import podman

pytestmark = pytest.mark.containers


def test_registry_answers_its_user_over_tls_verified_by_its_own_ca(registry):
    status, headers, body = registry.request("/v2/")
    assert status == 200 and json.loads(body) == {}
    assert headers.get("docker-distribution-api-version") == "registry/2.0"


@pytest.mark.parametrize("case", ["no-credentials", "wrong-password"])
def test_registry_refuses_a_client_without_its_password(registry, case):
    req = urllib.request.Request(f"https://{registry.address}/v2/")
    if case == "wrong-password":
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{registry.username}:not-it".encode()).decode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10, context=registry.ssl_context())
    assert e.value.code == 401


def test_registry_certificate_is_not_trusted_without_its_ca(registry):
    with pytest.raises(urllib.error.URLError) as e:
        urllib.request.urlopen(f"https://{registry.address}/v2/", timeout=10, context=ssl.create_default_context())
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)


def test_node_image_runs_node_20_and_pushes_to_the_registry_by_digest(registry, node_image, podman_env, tmp_path):
    out = podman("run", "--rm", "--network=none", node_image, "sh", "-c", "node -v", env=podman_env).stdout
    assert out.startswith("v20.")
    ref = f"{registry.address}/fixture/base:t{tmp_path.name[-6:].replace('_', '')}"
    podman("tag", node_image, ref, env=podman_env)
    auth = tmp_path / "auth.json"
    login = subprocess.run(["podman", "login", "--authfile", str(auth), "--cert-dir", str(registry.cert_dir),
                            "-u", registry.username, "--password-stdin", registry.address],
                           input=registry.password, capture_output=True, text=True, env=podman_env, timeout=60)
    assert login.returncode == 0, login.stderr
    push = subprocess.run(["podman", "push", "--authfile", str(auth), "--cert-dir", str(registry.cert_dir),
                           "--digestfile", str(tmp_path / "digest"), ref],
                          capture_output=True, text=True, env=podman_env, timeout=120)
    assert push.returncode == 0, push.stderr
    digest = (tmp_path / "digest").read_text().strip()
    assert digest.startswith("sha256:") and registry.digest("fixture/base", ref.rsplit(":", 1)[1]) == digest
    podman("rmi", ref, env=podman_env)
