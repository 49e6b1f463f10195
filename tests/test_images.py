"""The image of a commit, on real parts: the React Router example built by the toolkit's
release contract, its artifact made into an image (the toolkit's build file over the local
Node base image), pushed to the distribution registry on loopback over TLS with a login, read
back by digest, pulled by digest and run; built once per build key; every registry failure one
clear error; the registry's password in no output, file, ledger-bound fact or process list."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from deploy import build as b
from deploy import config
from deploy.errors import DeployError, ImageFailed, SettingsError
from deploy.engine import Console, StepContext
from deploy.facts import ArtifactFacts, ImageRef, PromotionRecord, dumps_state
from deploy.flows import steps
from deploy.ledger import Ledger, RunStatus
from deploy.images import build_image, image_shows, image_tag, registry_ready
from deploy.locations import artifacts_dir, build_key, source_dir
from deploy.source import commit_time
from deploy.testing.images import podman
from deploy.testing.ports import free_port
from deploy.testing.registry import Registry
from deploy.testing.shopify_app import copy_shopify_app, http_get

pytestmark = [pytest.mark.slow, pytest.mark.containers]

REPOSITORY = "occ/shopify-app"


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


class Project:
    """A project root whose staging environment releases examples/shopify-app as an image."""

    def __init__(self, root: Path, app: Path, registry, node_image: str, podman_env: dict[str, str]):
        self.root, self.app, self.registry = root, app, registry
        self.node_image, self.podman_env = node_image, podman_env
        self.sha = git(app, "rev-parse", "HEAD")

    def settings(self, env: str = "staging", environment: str = "", target: str = "image",
                 **image: object) -> config.Settings:
        values = {"registry": self.registry.address, "repository": REPOSITORY, "base": self.node_image,
                  "ca_file": str(self.registry.ca_file), **image}
        lines = [f"{k} = {v!r}".replace("'", '"') if not isinstance(v, bool) else f"{k} = {str(v).lower()}"
                 for k, v in values.items()]
        (self.root / "env" / f"{env}.toml").write_text(
            f'[environment]\nkind = "remote"\napp_dir = "{self.app}"\napp_url = "https://occ.example"\n{environment}\n'
            f'[release]\ntarget = "{target}"\n\n[app]\nhealth_path = "/"\n\n[image]\n' + "\n".join(lines) + "\n")
        return config.load(env, self.root)

    def environ(self, password: str | None = None) -> dict[str, str]:
        return {**self.podman_env, "REGISTRY_USERNAME": self.registry.username,
                "REGISTRY_PASSWORD": self.registry.password if password is None else password}

    def artifact(self, s: config.Settings) -> b.Artifact:
        return b.build(source_dir(s, self.sha), self.sha, artifacts_dir(s), contract=s.app,
                       now=commit_time(s.app_dir, self.sha), app_folder=s.app_dir, key=build_key(s, self.sha)).artifact


@pytest.fixture(scope="module")
def project(tmp_path_factory, registry, node_image, podman_env) -> Project:
    root = tmp_path_factory.mktemp("image-project")
    (root / "env").mkdir()
    app = copy_shopify_app(root / "shopify-app")
    git(app, "init", "-q", "-b", "main")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "app")
    return Project(root, app, registry, node_image, podman_env)


@pytest.fixture(scope="module")
def built(project):
    """The example's artifact (the release contract: npm ci, build, prune) and its image."""
    s = project.settings()
    art = project.artifact(s)
    first = build_image(s, art, project.environ(), commit=project.sha)
    return s, art, first


def run_by_digest(project, ref: ImageRef, tmp_path: Path) -> str:
    """Pull `ref` by digest with a login of its own and serve the app from it; the landing page."""
    auth = tmp_path / "pull-auth.json"
    login = subprocess.run(["podman", "login", "--authfile", str(auth), "--cert-dir", str(project.registry.cert_dir),
                            "-u", project.registry.username, "--password-stdin", project.registry.address],
                           input=project.registry.password, capture_output=True, text=True, env=project.podman_env)
    assert login.returncode == 0, login.stderr
    pulled = subprocess.run(["podman", "pull", "--authfile", str(auth), "--cert-dir", str(project.registry.cert_dir),
                             ref.reference], capture_output=True, text=True, env=project.podman_env, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    port = free_port()
    name = f"occ-image-test-{port}"
    podman("run", "-d", "--rm", "--name", name, "--network=host", "-e", f"PORT={port}", "-e", "HOST=127.0.0.1",
           "-e", f"DATABASE_URL=file:/tmp/app.db", ref.reference, env=project.podman_env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/", timeout=2)
                return body
            except OSError:
                if time.monotonic() > deadline:
                    logs = podman("logs", name, check=False, env=project.podman_env)
                    raise AssertionError(f"the image did not serve on {port}:\n{logs.stdout}{logs.stderr}")
                time.sleep(0.3)
    finally:
        podman("rm", "-f", "-t", "2", name, check=False, env=project.podman_env)
        podman("rmi", "-f", ref.reference, check=False, env=project.podman_env)


def test_the_examples_image_is_pushed_over_tls_with_a_login_and_runs_by_digest(project, built, tmp_path):
    s, art, first = built
    ref = first.ref
    assert not first.reused
    tag = image_tag(s, build_key(s, project.sha))
    assert tag.startswith(project.sha) and ref.tag == tag
    # The digest the step recorded is the registry's own for the commit's tag.
    assert project.registry.digest(REPOSITORY, tag) == ref.digest
    assert ref.reference == f"{project.registry.address}/{REPOSITORY}@{ref.digest}"
    body = run_by_digest(project, ref, tmp_path)
    assert "OCC Operator Control Center" in body


def test_the_same_build_key_is_built_and_pushed_once(project, built):
    s, art, first = built
    before = set(project.registry.tags(REPOSITORY))
    t0 = time.monotonic()
    again = build_image(s, art, project.environ(), commit=project.sha)
    assert again.reused and again.ref == first.ref
    assert set(project.registry.tags(REPOSITORY)) == before
    # Nothing was built: the tagged image was removed after the push and is not back.
    local = podman("image", "exists", f"{s.image.registry}/{REPOSITORY}:{first.ref.tag}", check=False,
                   env=project.podman_env)
    assert local.returncode == 1
    assert time.monotonic() - t0 < 10
    # --dry-run says so too: the digest is reused once the registry confirms it has it.
    shown = "\n".join(c.what for c in image_shows(s, project.sha, project.environ()))
    assert f"reuse {first.ref.reference}" in shown and "skopeo inspect --raw" in shown
    assert "podman build" not in shown and "podman push" not in shown


def test_an_image_gone_from_the_registry_is_built_and_pushed_again(project, built):
    s, art, first = built
    project.registry.request(f"/v2/{REPOSITORY}/manifests/{first.ref.digest}", method="DELETE")
    assert project.registry.digest(REPOSITORY, first.ref.digest) is None
    # What a run killed mid-build of this tag left behind is cleared by the next build of it.
    work = project.root / ".deploy" / "images" / "work"
    left = work / f"{first.ref.tag}-killed" / "context"
    left.mkdir(parents=True)
    (left / "half-unpacked.js").write_text("x")
    again = build_image(s, art, project.environ(), commit=project.sha)
    assert not again.reused
    assert list(work.iterdir()) == []
    assert project.registry.digest(REPOSITORY, again.ref.digest) == again.ref.digest
    # Built from the same tree at the commit's time: the same image, the same digest.
    assert again.ref.digest == first.ref.digest


def _stopped_registry_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize("case", ["wrong-password", "unknown-ca", "unreachable", "no-login-configured"])
def test_registry_failures_are_one_clear_error_naming_the_registry_before_anything_is_built(project, built, case):
    s, art, _ = built
    registry = project.registry
    environ = project.environ()
    if case == "wrong-password":
        s = project.settings(repository="occ/other-" + case)
        environ = project.environ(password="not-" + registry.password[:10])
        want, hint = "refused the login in REGISTRY_USERNAME/REGISTRY_PASSWORD", "Check REGISTRY_USERNAME and REGISTRY_PASSWORD"
    elif case == "unknown-ca":
        s = project.settings(repository="occ/other-" + case, ca_file="")
        want, hint = "is not trusted", "Set image.ca_file"
    elif case == "unreachable":
        s = project.settings(registry=_stopped_registry_address())
        want, hint = "cannot be reached", "Check image.registry"
    else:
        s = project.settings(repository="occ/other-" + case, username_var="", password_var="")
        want, hint = "asks for a login, and none is configured", "image.username_var"
    t0 = time.monotonic()
    with pytest.raises(ImageFailed) as e:
        build_image(s, art, environ, commit=project.sha)
    assert want in e.value.message and s.image.registry in e.value.message
    assert hint in (e.value.hint or "")
    # The promotion's preflight asks the same, before the lock, the backup or any build.
    with pytest.raises(ImageFailed) as pre:
        registry_ready(s, environ)
    assert pre.value.message == e.value.message
    assert time.monotonic() - t0 < 20          # asked first: no build ran
    assert registry.tags("occ/other-" + case) == []


def test_preflight_says_the_registry_answers_and_takes_the_login(project, built):
    assert registry_ready(project.settings(), project.environ()) == (
        f"podman; registry {project.registry.address} answers, login ok")


def test_unset_credential_variables_are_named(project, built):
    s, art, _ = built
    environ = {k: v for k, v in project.environ().items() if k != "REGISTRY_PASSWORD"}
    with pytest.raises(SettingsError) as e:
        build_image(s, art, environ, commit=project.sha)
    assert "REGISTRY_PASSWORD" in e.value.message and "not set" in e.value.message


def test_own_dockerfile_missing_at_the_commit_names_the_file(project, built):
    s = project.settings(build="deploy/Containerfile")
    _, art, _ = built
    with pytest.raises(ImageFailed) as e:
        build_image(s, art, project.environ(), commit=project.sha)
    assert "deploy/Containerfile" in e.value.message and project.sha[:12] in e.value.message
    assert e.value.file and e.value.file.endswith("deploy/Containerfile")


OWN_DOCKERFILE = """\
FROM {base}
WORKDIR /app
COPY package.json ./
RUN ["node", "-e", "require('fs').writeFileSync('/app/built.txt', 'made by RUN at ' + require('./package.json').name)"]
CMD ["node", "-e", "require('http').createServer((q, r) => r.end(require('fs').readFileSync('/app/built.txt'))).listen(process.env.PORT, '127.0.0.1')"]
"""


def test_the_apps_own_dockerfile_is_built_from_the_commits_checkout_with_its_run_steps(project, built, tmp_path):
    """image.build names a Dockerfile: built from .deploy/src (the commit, not the working
    tree), its RUN step run by the deployer's container settings (runc, ulimits), pushed."""
    _, art, _ = built
    (project.app / "docker").mkdir(exist_ok=True)
    (project.app / "docker" / "Containerfile").write_text(OWN_DOCKERFILE.format(base=project.node_image))
    git(project.app, "add", "docker/Containerfile")
    git(project.app, "commit", "-qm", "own build file")
    sha = git(project.app, "rev-parse", "HEAD")
    # An edit left in the working tree is not what is built.
    (project.app / "docker" / "Containerfile").write_text("FROM scratch-not-committed\n")
    s = project.settings(build="docker/Containerfile", repository="occ/own-dockerfile")
    result = build_image(s, None, project.environ(), commit=sha)
    assert not result.reused and result.ref.tag.startswith(sha)
    assert project.registry.digest("occ/own-dockerfile", result.ref.tag) == result.ref.digest
    body = run_by_digest(project, result.ref, tmp_path)
    assert body == "made by RUN at occ-shopify-app"


def test_dry_run_shows_the_exact_build_and_push_with_the_login_as_a_placeholder(project, built):
    s = project.settings(repository="occ/dry-run")
    shown = [c.what for c in image_shows(s, project.sha, project.environ())]
    text = "\n".join(shown)
    assert "podman build -f" in text and f"{project.registry.address}/occ/dry-run:{project.sha}" in text
    assert f"--cert-dir '<private cert dir>'" in text and "--authfile '<private auth file>'" in text
    assert "podman push --authfile '<private auth file>'" in text and "--digestfile" in text
    assert "$REGISTRY_USERNAME and $REGISTRY_PASSWORD" in text
    assert project.registry.password not in text and project.registry.username not in text


def test_the_registry_password_is_in_no_output_file_fact_or_process_list(project, built, tmp_path, capfd):
    """The leak scan: a build and push of a fresh key, with `ps` sampled all along."""
    s = project.settings(repository="occ/leak-scan")
    _, art, _ = built
    password = project.registry.password
    seen: list[str] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    try:
        result = build_image(s, art, project.environ(), commit=project.sha)
    finally:
        stop.set()
        t.join()
    assert any("podman push" in x for x in seen), "the process list was not sampled during the push"
    assert not [x for x in seen if password in x or project.registry.username in x]
    out, err = capfd.readouterr()
    assert password not in out + err
    assert password not in dumps_state({"ImageRef": result.ref})
    for f in (project.root / ".deploy").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert password.encode() not in data, f
        if f.is_file() and "images" in f.parts:
            assert f.stat().st_mode & 0o077 == 0, f"{f} is readable by others"
    assert not list(Path("/tmp").glob("occ-registry-*/auth.json")), "a login file was left behind"


def _staging_run(ledger: Ledger, sha: str, ref: ImageRef) -> str:
    """A succeeded staging promotion of `sha` that ran `ref`, as the runner records it."""
    run_id = ledger.start_run(env="staging", flow="promote", sha=sha, steps=["image"], args={})
    ledger.update_run(run_id, status=RunStatus.SUCCEEDED, state={"ImageRef": ref})
    return run_id


@pytest.mark.parametrize("staged", ["same-digest", "other-digest", "no-staging-image"])
def test_production_runs_only_the_digest_staging_proved_for_the_commit(project, built, staged, tmp_path):
    s_staging, art, first = built
    ledger = Ledger.open(tmp_path)
    other = "sha256:" + ("0123456789abcdef" * 4)
    if staged != "no-staging-image":
        digest = first.ref.digest if staged == "same-digest" else other
        run_id = _staging_run(ledger, project.sha, ImageRef(f"{first.ref.registry}/{REPOSITORY}@{digest}", digest,
                                                              first.ref.registry, REPOSITORY, first.ref.tag))
        assert PromotionRecord.of(ledger.run(run_id)).image_digest == digest
    prod = project.settings("production", 'requires_staging_run = true\nstaging_env = "staging"\nprotected = true\n')
    assert steps.ships_image(prod)
    step = steps.image(prod, project.sha, project.environ(), ledger)
    ctx = StepContext(run_id=None, env="production", state={}, console=Console(io.StringIO()))
    ctx.put(ArtifactFacts.of(art))
    if staged == "other-digest":
        with pytest.raises(ImageFailed) as e:
            step.run(ctx)
        assert other in e.value.message and first.ref.digest in e.value.message
        assert "exactly the image staging proved" in e.value.message
        assert ctx.get(ImageRef) is None           # nothing for the release target to run
    else:
        line = step.run(ctx)
        assert ctx.get(ImageRef) == first.ref and "reused" in line   # the same key: nothing built or pushed


def test_promote_dry_run_through_the_cli_shows_the_image_build_and_push_between_build_and_backup(tmp_path):
    """`invoke promote --to=staging --dry-run` on an image environment: the exact build and push,
    the login as a placeholder, nothing run, no credential in the output."""
    from deploy.testing.project import make_project

    p = make_project(tmp_path / "project")
    text = (p.root / "env/staging.toml").read_text().replace(
        "[hosts]", '[release]\ntarget = "image"\n\n[image]\nregistry = "registry.example:5000"\n'
                   'repository = "acme/occ-app"\n\n[proxy]\nkind = "caddy"\n\n[hosts]', 1)
    p.write_env("staging", text)
    sha = p.commit("the image target")
    secret = "pw-" + os.urandom(6).hex()
    r = p.invoke("promote", "--to=staging", "--dry-run",
                 extra_env={"REGISTRY_USERNAME": "ci-bot-" + os.urandom(3).hex(), "REGISTRY_PASSWORD": secret})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.index("\nbuild:") < out.index("\nimage:") < out.index("\nbackup:")
    image = out[out.index("\nimage:"):out.index("\nbackup:")]
    assert f"podman build -f" in image and f"registry.example:5000/acme/occ-app:{sha}-" in image
    assert "--authfile '<private auth file>'" in image and "podman push" in image
    assert "CMD [\"sh\", \"-c\", \"react-router-serve ./build/server/index.js\"]" in image
    assert secret not in out + r.stderr and "ci-bot-" not in out + r.stderr
    assert "dry run: nothing was changed" in out and not (p.root / ".deploy" / "images").exists()


def test_a_plain_http_registry_is_refused_unless_insecure_is_said_and_then_pushed_to(project, built, tmp_path):
    _, art, _ = built
    plain = Registry(tmp_path / "plain-registry", tls=False)
    try:
        s = project.settings(registry=plain.address, repository="occ/plain", ca_file="")
        with pytest.raises(ImageFailed) as e:
            build_image(s, art, project.environ(), commit=project.sha)
        assert f"TLS with the registry {plain.address} failed" in e.value.message
        assert "image.insecure = true" in (e.value.hint or "")
        s = project.settings(registry=plain.address, repository="occ/plain", ca_file="", insecure=True)
        environ = {**project.environ(), "REGISTRY_USERNAME": plain.username, "REGISTRY_PASSWORD": plain.password}
        result = build_image(s, art, environ, commit=project.sha)
        assert plain.digest("occ/plain", result.ref.tag) == result.ref.digest
    finally:
        plain.stop()


def test_a_ca_the_container_tool_trusts_for_the_registry_is_trusted_by_the_check_too(project, built):
    """podman reads /etc/containers/certs.d/<registry>/*.crt: a CA installed there (and not named in
    image.ca_file) lets both the toolkit's registry check and the push verify the registry."""
    _, art, _ = built
    folder = Path("/etc/containers/certs.d") / project.registry.address
    if not os.access(Path("/etc/containers"), os.W_OK):
        pytest.fail("this test installs a CA under /etc/containers/certs.d: run the suite as root (as CI does)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / "ca.crt").write_bytes(project.registry.ca_file.read_bytes())
        s = project.settings(repository="occ/system-ca", ca_file="")
        result = build_image(s, art, project.environ(), commit=project.sha)
        assert project.registry.digest("occ/system-ca", result.ref.tag) == result.ref.digest
    finally:
        shutil.rmtree(folder, ignore_errors=True)
