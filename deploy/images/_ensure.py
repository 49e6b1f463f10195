"""Build the image of a build key once, push it, and name it by digest from then on.

`ensure_image` is what the promotion's image step calls; `image_shows` is what --dry-run
prints (the exact build and push commands, the login shown as a placeholder)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build import Artifact, BuildKey
from deploy.build.ops import lock
from deploy.config import Settings
from deploy.errors import DeployError, ImageFailed, SettingsError, ToolMissing
from deploy.facts import ImageRef
from deploy.images import _index as index
from deploy.images._buildfile import containerfile
from deploy.images._ping import check_registry
from deploy.images._tool import (AUTH_PLACEHOLDER, CERT_PLACEHOLDER, Access, build_argv, check_docker_tls,
                                 credentials, inspect_argv, push_argv, registry_flags, remove_argv, tool, tool_env)
from deploy.locations import build_key, checkout_if_there, find_artifact, source_dir
from deploy.startup import package_json, start_argv

RULES = 1   # the version of how an image is made from its inputs (a change makes new tags)


@dataclass(frozen=True)
class ImageCommand:
    """One thing the image step would run or write, for --dry-run (`where`: "local")."""

    where: str
    what: str


@dataclass(frozen=True)
class ImageResult:
    ref: ImageRef
    reused: bool            # True: pushed earlier for this key, found in the registry, nothing built
    duration: float


def toolkit_build(s: Settings) -> bool:
    return s.image.build == "toolkit"


def image_tag(s: Settings, key: BuildKey) -> str:
    """`<commit>-<16 hex>`: the commit, and a digest of what else the image is made from (app
    folder, [app] build keys, how the image is built: base, start command, port)."""
    im, a = s.image, s.app
    recipe: dict[str, object] = {"rules": RULES, "build": im.build}
    if toolkit_build(s):
        recipe.update(base=im.base, start=a.start, port=a.port, port_var=a.port_var)
    h = hashlib.sha256(json.dumps([key.app_folder, key.contract, recipe], sort_keys=True).encode()).hexdigest()[:16]
    return f"{key.git_sha}-{h}"


def _tag_ref(s: Settings, tag: str) -> str:
    return f"{s.image.registry}/{s.image.repository}:{tag}"


# ---------------------------------------------------------------- failures

_AUTH = ("unauthorized", "authentication required", "incorrect username or password", "denied:", "401")
_TLS = ("x509:", "certificate signed by unknown authority", "certificate verify failed", "tls: failed to verify",
        "certificate is not valid", "certificate has expired")
_PLAIN = ("server gave http response to https client",)
_DOWN = ("connection refused", "no such host", "i/o timeout", "network is unreachable", "no route to host",
         "connection reset", "server misbehaving", "timeout awaiting", "context deadline exceeded")
_MISSING = ("manifest unknown", "name unknown", "not found", "manifest_unknown", "does not exist")


def registry_trouble(s: Settings, r: proc.CommandResult, doing: str) -> ImageFailed | None:
    """The failure of a command that talked to the registry as one clear error (login refused,
    certificate not trusted, plain HTTP, unreachable), or None when it was something else."""
    im = s.image
    text = f"{r.stdout}\n{r.stderr}".lower()
    if any(w in text for w in _TLS):
        what = (f"The TLS certificate of the registry {im.registry} is not trusted while {doing}",
                "Set image.ca_file to the CA (PEM) that signed the registry's certificate"
                + (f" (the one set, {im.ca_file}, did not)" if im.ca_file else "")
                + "; image.insecure = true turns verification off and is for a test registry only.")
    elif any(w in text for w in _PLAIN):
        what = (f"The registry {im.registry} answers plain HTTP, not HTTPS, while {doing}",
                "Serve it over TLS, or set image.insecure = true if a plain-HTTP registry is what you mean.")
    elif any(w in text for w in _AUTH):
        who = (f"the login in {im.username_var}/{im.password_var}" if im.username_var
               else "an anonymous client (image.username_var is \"\")")
        what = (f"The registry {im.registry} refused {who} while {doing}",
                f"Check {im.username_var} and {im.password_var}: the account must exist and be allowed to push "
                f"to {im.repository}." if im.username_var else
                "Name the variables that hold the registry login in image.username_var and image.password_var.")
    elif r.returncode == 124 or any(w in text for w in _DOWN):
        what = (f"The registry {im.registry} cannot be reached while {doing}",
                "Check image.registry (host:port) and that the registry is up and reachable from this machine, "
                "then promote again.")
    else:
        return None
    return ImageFailed(f"{what[0]}: `{r.display}` (exit {r.returncode}).\n{r.explain()}", what[1])


def _failed(s: Settings, r: proc.CommandResult, doing: str, hint: str, **fields: str) -> ImageFailed:
    return registry_trouble(s, r, doing) or ImageFailed(
        f"{doing[0].upper()}{doing[1:]} failed: `{r.display}` (exit {r.returncode}).\n{r.explain()}", hint, **fields)


# ---------------------------------------------------------------- the image

def _in_registry(s: Settings, name: str, acc: Access, ref: ImageRef, env: Mapping[str, str]) -> bool:
    """Is `ref`'s digest in the registry? ImageFailed when the registry cannot say."""
    checker = "skopeo" if shutil.which("skopeo", path=env.get("PATH") or os.environ.get("PATH")) else name
    if checker == "podman":
        raise ToolMissing("`skopeo` was not found on PATH: the toolkit asks the registry with it whether an "
                          "image pushed earlier is still there.", "Install it: apt-get install -y skopeo.")
    r = proc.run(inspect_argv(checker, ref.reference, flags=acc.flags("skopeo") if checker == "skopeo" else []),
                 env=env, timeout=s.image.push_timeout)
    if r.ok:
        return True
    trouble = registry_trouble(s, r, f"checking that {ref.reference} is still in the registry")
    text = f"{r.stdout}\n{r.stderr}".lower()
    if trouble is None and any(w in text for w in _MISSING):
        return False
    raise trouble or ImageFailed(
        f"Cannot tell whether {ref.reference} is in the registry: `{r.display}` (exit {r.returncode}).\n{r.explain()}",
        "Check the registry, then promote again.")


def _epoch(built_at: str) -> int | None:
    try:
        return int(datetime.fromisoformat(built_at.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def _labels(s: Settings, commit: str, artifact: Artifact | None) -> dict[str, str]:
    out = {"org.opencontainers.image.revision": commit}
    if s.environment.repo_url:
        out["org.opencontainers.image.source"] = s.environment.repo_url
    if artifact is not None:
        out["org.occ.release-id"] = artifact.release_id
        out["org.occ.artifact-sha256"] = artifact.sha256
    return out


def _unpack(artifact: Artifact, dest: Path) -> None:
    """The artifact's tree into `dest` (links and modes as packed; nothing may point outside)."""
    dest.mkdir(mode=0o700)
    try:
        with tarfile.open(artifact.path, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise ImageFailed(f"The artifact {artifact.path} cannot be unpacked for the image: {e}.",
                          "Check free space under .deploy/, or remove the artifact so the build makes it again.",
                          file=str(artifact.path)) from None


def _build(s: Settings, name: str, acc: Access, env: Mapping[str, str], *, commit: str, artifact: Artifact | None,
           ref: str, work: Path) -> list[str]:
    """Build `ref` here; returns the argv it ran."""
    im = s.image
    flags = acc.flags("podman")
    if toolkit_build(s):
        if artifact is None:
            raise ImageFailed(f"No artifact of {commit[:12]} to build the image from.",
                              "The build step makes it: run the promotion again.")
        context = work / "context"
        _unpack(artifact, context)
        start = start_argv(s.app, package_json(context), f"the artifact of {commit[:12]}")
        cfile = work / "Containerfile"
        cfile.write_text(containerfile(base=im.base, start=start, port=s.app.port, port_var=s.app.port_var,
                                       labels=_labels(s, commit, artifact)))
        argv = build_argv(name, containerfile=str(cfile), context=str(context), ref=ref, labels={},
                          timestamp=_epoch(artifact.built_at), flags=flags)
        hint = (f"Check image.base ({im.base}): it must be pullable from this machine "
                "and carry node and sh.")
        where: dict[str, str] = {}
    else:
        app = source_dir(s, commit)    # the commit's checkout, the one the build step used
        dockerfile = app / im.build
        if not dockerfile.is_file():
            raise ImageFailed(
                f"image.build = {im.build!r}: there is no such file in the app folder at commit {commit[:12]} "
                f"({s.environment.app_dir}/{im.build}).",
                f'Commit the Dockerfile there, fix image.build in env/{s.name}.toml, or use image.build = "toolkit".',
                file=f"{s.environment.app_dir}/{im.build}")
        argv = build_argv(name, containerfile=str(dockerfile), context=str(app), ref=ref,
                          labels=_labels(s, commit, artifact), timestamp=None, flags=flags)
        hint = f"Fix {s.environment.app_dir}/{im.build} (or what it runs) and commit; the build ran as shown."
        where = {"file": f"{s.environment.app_dir}/{im.build}"}
    r = proc.run(argv, env=env, timeout=im.build_timeout, stream="image build")
    if not r.ok:
        raise _failed(s, r, f"building the image {ref}", hint, **where)
    return argv


def _push(s: Settings, name: str, acc: Access, env: Mapping[str, str], ref: str) -> str:
    """Push `ref`; the registry's manifest digest."""
    assert acc.dir is not None
    digest_file = acc.dir / "digest"
    r = proc.run(push_argv(name, ref, digest_file=str(digest_file), flags=acc.flags("podman")), env=env,
                 timeout=s.image.push_timeout)
    if not r.ok:
        raise _failed(s, r, f"pushing {ref}", "Check the registry and image.repository, then promote again.")
    if name == "podman":
        digest = digest_file.read_text().strip() if digest_file.exists() else ""
    else:   # docker push ends with "<tag>: digest: sha256:... size: N"
        found = [w for line in r.stdout.splitlines() if "digest:" in line for w in line.split() if w.startswith("sha256:")]
        digest = found[-1] if found else ""
    if not index.DIGEST.match(digest):
        raise ImageFailed(f"Pushed {ref}, but {name} reported no digest ({digest!r}).\n{r.explain()}",
                          "Promote again; if it repeats, check the container tool's version.")
    return digest


def build_image(s: Settings, artifact: Artifact | None, environ: Mapping[str, str], *, commit: str) -> ImageResult:
    """The image of the environment's build of `commit` in the registry, named by digest:
    pushed earlier for this build key and still in the registry (nothing built or pushed), or
    built here from the same checkout (the toolkit's build file over `artifact`'s tree, or the
    app's own Dockerfile), tagged with the commit, pushed, and recorded."""
    started = time.monotonic()
    im = s.image
    if not (im.registry and im.repository):
        raise SettingsError(f"{s.file}: the image target needs image.registry and image.repository.",
                            'Set them under [image], e.g. registry = "ghcr.io", repository = "acme/app".')
    name = tool(im, environ.get("PATH"))
    if name == "docker":
        check_docker_tls(im)
    creds = credentials(s, environ)
    key = build_key(s, commit)
    tag = image_tag(s, key)
    ref = _tag_ref(s, tag)
    work_root = index.images_dir(s.root) / "work"
    with lock(index.images_dir(s.root) / ".locks" / f"{tag}.lock"):
        with Access(s, name, creds) as acc:
            check_registry(s, creds, timeout=min(30.0, s.image.push_timeout))
            env = {**tool_env(environ), **acc.env}
            hit = index.read(s.root, im.registry, im.repository, tag)
            if hit is not None and _same_artifact(s, hit, artifact):
                if _in_registry(s, name, acc, hit, env):
                    return ImageResult(hit, True, time.monotonic() - started)
                index.forget(s.root, hit)
            work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
            for left in work_root.glob(f"{tag}-*"):   # a killed run's unpacked tree (this tag's lock is ours)
                shutil.rmtree(left, ignore_errors=True)
            work = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=work_root))
            try:
                _build(s, name, acc, env, commit=commit, artifact=artifact, ref=ref, work=work)
                digest = _push(s, name, acc, env, ref)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            proc.run(remove_argv(name, ref), env=env, timeout=120)   # the registry holds it now; hosts pull it
            out = ImageRef(f"{im.registry}/{im.repository}@{digest}", digest, im.registry, im.repository, tag)
            index.write(s.root, out, key=key.name, artifact_sha256=artifact.sha256 if artifact else "",
                        built_at=datetime.now().astimezone().isoformat(timespec="seconds"))
            return ImageResult(out, False, time.monotonic() - started)


def _same_artifact(s: Settings, hit: ImageRef, artifact: Artifact | None) -> bool:
    """A toolkit image is the artifact's tree: an entry made from other bytes (the artifact was
    pruned and built again differently) is not reused."""
    if not toolkit_build(s) or artifact is None:
        return True
    path = index._entry(s.root, hit.registry, hit.repository, hit.tag)
    try:
        return bool(json.loads(path.read_text()).get("artifact_sha256") == artifact.sha256)
    except (OSError, ValueError):
        return False


def ensure_image(s: Settings, artifact: Artifact | None, environ: Mapping[str, str], *, commit: str) -> ImageRef:
    """The digest reference of the environment's image of `commit` (see `build_image`)."""
    return build_image(s, artifact, environ, commit=commit).ref


# ---------------------------------------------------------------- --dry-run

def image_shows(s: Settings, commit: str, environ: Mapping[str, str] | None = None) -> list[ImageCommand]:
    """What the image step would run for `commit`: the exact build and push commands, the login
    as placeholders (the auth file it writes from the variables `image.*_var` name)."""
    im = s.image
    try:
        name = tool(im, (environ or os.environ).get("PATH"))
    except DeployError:
        name = "podman" if im.runtime == "auto" else im.runtime
    key = build_key(s, commit)
    tag = image_tag(s, key)
    ref = _tag_ref(s, tag)
    kind = "podman" if name == "podman" else "docker"
    cert = CERT_PLACEHOLDER if im.ca_file else None
    login = ([ImageCommand("local", f"write {AUTH_PLACEHOLDER} (0600, removed afterwards) from ${im.username_var} "
                                    f"and ${im.password_var}")] if im.username_var else
             [ImageCommand("local", f"write {AUTH_PLACEHOLDER} (0600) with no login: an anonymous registry")])
    hit = index.read(s.root, im.registry, im.repository, tag)
    if hit is not None:
        check = inspect_argv("skopeo", hit.reference, flags=registry_flags(im, "skopeo", cert_dir=cert))
        return login + [ImageCommand("local", f"reuse {hit.reference} (pushed for {tag}), if the registry still has it: "
                                              f"{shlex.join(check)}")]
    flags = registry_flags(im, kind, cert_dir=cert)
    out: list[ImageCommand] = []
    if toolkit_build(s):
        art = find_artifact(s, commit)
        tree = checkout_if_there(s, commit) or s.app_dir
        try:
            start = start_argv(s.app, package_json(tree), str(tree))
        except DeployError:
            start = ["<[app] start>"]
        work = f"{index.images_dir(s.root)}/work/<temp>"
        tree_from = str(art.path) if art else "<the build step's artifact>"
        out += [ImageCommand("local", f"unpack {tree_from} -> {work}/context"),
                ImageCommand("local", f"write {work}/Containerfile: FROM {im.base}; COPY . /app; "
                                      f"ENV {s.app.port_var}={s.app.port}; CMD {json.dumps(start)}")]
        built = _epoch(art.built_at) if art else None
        argv = build_argv(name, containerfile=f"{work}/Containerfile", context=f"{work}/context", ref=ref, labels={},
                          timestamp=built if built is not None else 0, flags=flags)
        line = shlex.join(argv)
        if built is None and name == "podman":
            line = line.replace("--timestamp 0", "--timestamp <commit time>")
    else:
        app = checkout_if_there(s, commit)
        ctx = str(app) if app else f"{s.root}/.deploy/src/{key.name}/<app folder>"
        argv = build_argv(name, containerfile=f"{ctx}/{im.build}", context=ctx, ref=ref,
                          labels=_labels(s, commit, None), timestamp=None, flags=flags)
        line = shlex.join(argv)
    out.append(ImageCommand("local", line))
    out += login
    out.append(ImageCommand("local", shlex.join(push_argv(name, ref, digest_file="<temp>/digest", flags=flags))))
    out.append(ImageCommand("local", f"record {ref} -> <digest> in .deploy/images/index (0600)"))
    return out
