"""Image-target hosts for tests and benchmarks: sshd hosts (deploy/testing/sshd.py) that run
podman with a container storage of their own, a caddy proxy each, and small app images pushed to
the registry fixture (deploy/testing/registry.py) by digest.

Separate hosts on one machine: the farm's hosts are sshd processes of this machine logged in to
as one user, so without care they would share that user's podman storage (one image store, one
set of containers) and a pull on one host would make the image "present" on the other. Each
host's podman therefore gets `--root`, `--runroot` and `--tmpdir` under its own deploy_to (the
settings' `[image] runtime_args`, `{deploy_to}` filled per host; the runroot, which podman wants
under 50 characters, is /tmp/occ-run-<hash of deploy_to>): two hosts really hold separate
images, and a test can see that a rollback did not pull. `--runtime=runc` and the ulimits are
this sandbox's needs (../shared/FACTS.md), set the same way (`runtime_args`, `run_args`).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from deploy.hosts._containers import app_key
from deploy.hosts._values import Target
from deploy.testing.images import container_env, podman

#: per-host podman storage and this sandbox's runtime, as `[image] runtime_args`
HOST_RUNTIME_ARGS = ("--root", "{deploy_to}/containers/storage", "--runroot", "/tmp/occ-run-{key}",
                     "--tmpdir", "{deploy_to}/containers/tmp", "--runtime=runc")
HOST_RUN_ARGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

# A small app: /healthz (500 when its version names "broken", 503 for READY_AFTER_MS after its
# start), /version (its version, and a
# hash of APP_SECRET so a test sees the variable arrived without the value being shown), / .
SERVER = r'''
import http from "node:http";
import crypto from "node:crypto";
import fs from "node:fs";
const version = fs.readFileSync("/app/version.txt", "utf8").trim();
const broken = version.includes("broken");
const sha = (v) => crypto.createHash("sha256").update(v || "").digest("hex");
const readyAt = Date.now() + Number(process.env.READY_AFTER_MS || 0);
const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.statusCode = broken ? 500 : Date.now() < readyAt ? 503 : 200;
    res.end(String(res.statusCode));
    return;
  }
  if (req.url === "/version") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ release: version, secret_sha256: sha(process.env.APP_SECRET), multi: process.env.MULTI_WORD || "" }));
    return;
  }
  res.end(version + "\n");
});
server.keepAliveTimeout = 1000;
server.listen(Number(process.env.PORT), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
'''


def authfile(folder: Path, registry) -> Path:
    """A podman auth file (0600) in `folder` holding `registry`'s login (for a test's own pushes and pulls)."""
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    path = folder / "auth.json"
    path.write_text(json.dumps({"auths": {registry.address: {"auth": token}}}))
    os.chmod(path, 0o600)
    return path


def push_app_image(registry, base: str, version: str, repository: str = "occ/tiny") -> str:
    """Build the small app (`version` baked in) FROM `base`, push it to `registry` and return
    its reference by digest (`<registry>/<repository>@sha256:...`)."""
    env = container_env()
    with tempfile.TemporaryDirectory(prefix="occ-app-image-") as tmp:
        d = Path(tmp)
        (d / "server.mjs").write_text(SERVER)
        (d / "version.txt").write_text(version + "\n")
        (d / "Containerfile").write_text(f"FROM {base}\nWORKDIR /app\nCOPY server.mjs version.txt /app/\n"
                                         'CMD ["node", "/app/server.mjs"]\n')
        local = f"localhost/occ-test-app:{version}"
        podman("build", "-q", "-t", local, "-f", str(d / "Containerfile"), str(d), env=env, timeout=600)
        digest_file = d / "digest"
        auth = authfile(d, registry)
        podman("push", "--authfile", str(auth), "--cert-dir", str(registry.cert_dir), "--digestfile",
               str(digest_file), local, f"docker://{registry.address}/{repository}:{version}", env=env, timeout=600)
        return f"{registry.address}/{repository}@{digest_file.read_text().strip()}"


def host_podman(host, deploy_to: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """podman on `host` as its login user, with that host's storage (HOST_RUNTIME_ARGS)."""
    key = app_key(Target(name="", host="", port=0, user="", deploy_to=deploy_to))
    flags = [a.replace("{deploy_to}", deploy_to).replace("{key}", key) for a in HOST_RUNTIME_ARGS]
    cmd = shlex.join(("podman", *flags, *args))
    return subprocess.run(["ssh", "-i", str(host.key_file), "-o", f"UserKnownHostsFile={host.known_hosts}",
                           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(host.port),
                           f"{host.user}@{host.host}", cmd], capture_output=True, text=True, timeout=timeout)


def remove_all_containers(host, deploy_to: str) -> None:
    """Stop and remove every container of the host's storage (test cleanup)."""
    host_podman(host, deploy_to, "rm", "-f", "-a", "-t", "0", timeout=120)


def host_images(host, deploy_to: str) -> list[str]:
    """The image digests the host's storage holds."""
    r = host_podman(host, deploy_to, "images", "--digests", "--format", "{{.Digest}}")
    return sorted({line.strip() for line in r.stdout.splitlines() if line.strip().startswith("sha256:")})
