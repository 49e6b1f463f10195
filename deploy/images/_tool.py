"""The container tool on this machine (podman or docker) and the argv of every command the
image target runs here: build, push, check a digest in the registry. Pure, except `tool()`
(which looks at PATH) and `Access` (a private folder for the registry login and CA).

Registry credentials never reach a command line: `Access` writes them into an auth file
(mode 0600, in a private temp folder, removed afterwards) that podman reads with
`--authfile` and docker as `$DOCKER_CONFIG/config.json`. TLS is verified unless the settings
say `insecure = true`; `ca_file` is copied into a cert folder (`--cert-dir`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy.config import ImageSection, Settings
from deploy.errors import SettingsError, ToolMissing
from deploy.redact import Secret

# Variables a container tool reads for its own configuration (no credential among them): the
# deployer's containers.conf (runtime, ulimits), storage and registries files, docker's daemon.
TOOL_ENV = ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "BUILDAH_ISOLATION",
            "STORAGE_DRIVER", "DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")

AUTH_PLACEHOLDER = "<private auth file>"
CERT_PLACEHOLDER = "<private cert dir>"


def tool(im: ImageSection, path: str | None = None) -> str:
    """The container tool to use here: `image.runtime`, or podman (else docker) for "auto"."""
    path = os.environ.get("PATH") if path is None else path
    wanted = ("podman", "docker") if im.runtime == "auto" else (im.runtime,)
    for name in wanted:
        if shutil.which(name, path=path):
            return name
    raise ToolMissing(f"No container tool: {' or '.join(wanted)} was not found on PATH (image.runtime = "
                      f"{im.runtime!r}).",
                      "Install podman (Debian: apt-get install -y podman runc skopeo) or Docker, or set "
                      "image.runtime to the one you have.")


def tool_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The container tool's own configuration variables from the deployer's environment."""
    return {k: environ[k] for k in TOOL_ENV if k in environ}


@dataclass(frozen=True)
class Credentials:
    username: Secret
    password: Secret


def credentials(s: Settings, environ: Mapping[str, str]) -> Credentials | None:
    """The registry login from the variables `image.username_var`/`password_var` name (None:
    an anonymous registry, both names ""); SettingsError naming an unset variable."""
    im = s.image
    if not im.username_var:
        return None
    missing = [v for v in (im.username_var, im.password_var) if not environ.get(v)]
    if missing:
        raise SettingsError(
            f"{s.file}: the registry login for {im.registry or 'the registry'} is read from "
            f"{' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not set.",
            f"Set {im.username_var} and {im.password_var} (CI secrets, or env/{s.name}.local.env), or set "
            'image.username_var = "" and image.password_var = "" for an anonymous registry.')
    return Credentials(Secret(environ[im.username_var]), Secret(environ[im.password_var]))


class Access:
    """A private folder (0700) holding the registry login as an auth file (0600) and the extra
    CA as a cert dir, for one run of commands; removed on exit. `flags(kind)` gives the argv
    flags that point a command at them, `env` the variables (docker's config folder)."""

    def __init__(self, s: Settings, tool_name: str, creds: Credentials | None):
        self.im, self.tool = s.image, tool_name
        self.root = s.root
        self.creds = creds
        self.dir: Path | None = None

    def __enter__(self) -> "Access":
        self.dir = Path(tempfile.mkdtemp(prefix="occ-registry-"))   # 0700
        try:
            self._fill()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _fill(self) -> None:
        assert self.dir is not None
        auths = {}
        if self.creds is not None:
            token = base64.b64encode(f"{self.creds.username.reveal()}:{self.creds.password.reveal()}".encode()).decode()
            auths[self.im.registry] = {"auth": token}
        fd = os.open(self.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
        if self.im.ca_file:
            certs = self.dir / "certs"
            certs.mkdir(mode=0o700)
            src = Path(os.path.expanduser(self.im.ca_file))
            src = src if src.is_absolute() else self.root / src
            try:
                shutil.copyfile(src, certs / "ca.crt")
            except OSError as e:
                raise SettingsError(f"image.ca_file = {self.im.ca_file!r}: {src} cannot be read ({e.strerror}).",
                                    "Point image.ca_file at the PEM file of the CA that signed the registry's "
                                    "certificate (relative to the project root, or absolute).") from None

    def __exit__(self, *exc: object) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    @property
    def auth_file(self) -> Path:
        assert self.dir is not None
        return self.dir / "auth.json" if self.tool != "docker" else self.dir / "config.json"

    @property
    def cert_dir(self) -> Path | None:
        return self.dir / "certs" if self.dir is not None and self.im.ca_file else None

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_CONFIG": str(self.dir)} if self.tool == "docker" and self.dir else {}

    def flags(self, kind: str = "podman") -> list[str]:
        """--authfile / --cert-dir / --tls-verify for podman or skopeo (docker takes none: it reads
        $DOCKER_CONFIG, and its daemon owns TLS)."""
        return registry_flags(self.im, kind if self.tool != "docker" or kind == "skopeo" else "docker",
                              str(self.auth_file), str(self.cert_dir) if self.cert_dir else None)


def registry_flags(im: ImageSection, kind: str, auth_file: str = AUTH_PLACEHOLDER,
                   cert_dir: str | None = CERT_PLACEHOLDER) -> list[str]:
    """The flags that give a podman or skopeo command the login, the CA and the TLS choice."""
    if kind == "docker":
        return []
    out = ["--authfile", auth_file]
    if im.insecure:
        out.append("--tls-verify=false")
    elif im.ca_file and cert_dir:
        out += ["--cert-dir", cert_dir]
    return out


def check_docker_tls(im: ImageSection) -> None:
    """Docker's daemon owns registry TLS: the toolkit cannot pass it a CA or skip verification."""
    if im.insecure:
        raise SettingsError("image.insecure = true with Docker: the Docker daemon decides which registries "
                            "may skip TLS verification, not the toolkit.",
                            f'Add "{im.registry}" to "insecure-registries" in /etc/docker/daemon.json, or use podman.')
    if im.ca_file:
        raise SettingsError("image.ca_file with Docker: the Docker daemon reads a registry's CA only from "
                            f"/etc/docker/certs.d/{im.registry}/ca.crt.",
                            "Install the CA there and remove image.ca_file, or use podman.")


def build_argv(tool_name: str, *, containerfile: str, context: str, ref: str, labels: Mapping[str, str],
               timestamp: int | None, flags: list[str]) -> list[str]:
    """`<tool> build`: one file, one context, one tag, labels; podman's --timestamp makes the
    toolkit's build reproducible (same tree and time, same layers)."""
    argv = [tool_name, "build", "-f", containerfile, "-t", ref]
    if tool_name == "podman":
        argv += flags
        if timestamp is not None:
            argv += ["--timestamp", str(timestamp)]
    for k, v in sorted(labels.items()):
        argv += ["--label", f"{k}={v}"]
    return argv + [context]


def push_argv(tool_name: str, ref: str, *, digest_file: str, flags: list[str]) -> list[str]:
    """`<tool> push`; podman writes the registry's manifest digest to `digest_file`."""
    if tool_name == "podman":
        return ["podman", "push", *flags, "--digestfile", digest_file, ref]
    return ["docker", "push", ref]


def inspect_argv(tool_name: str, ref: str, *, flags: list[str]) -> list[str]:
    """Ask the registry for `ref`'s manifest (a digest reference): it is there, or it is not."""
    if tool_name == "skopeo":
        return ["skopeo", "inspect", "--raw", *flags, f"docker://{ref}"]
    return ["docker", "manifest", "inspect", ref]


def remove_argv(tool_name: str, ref: str) -> list[str]:
    return [tool_name, "rmi", ref] if tool_name == "podman" else ["docker", "image", "rm", ref]
