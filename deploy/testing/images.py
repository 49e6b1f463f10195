"""Container helpers for tests and benchmarks: podman as this sandbox needs it, and a Node 20
base image made locally (no public registry is reachable here).

This kernel's hybrid cgroup layout needs `runc` (podman's default `crun` refuses it) and the
sandbox cannot raise rlimits, so every container gets explicit ulimits (../shared/FACTS.md).
Both are written once into a containers.conf (`[engine] runtime`, `[containers]
default_ulimits`) that `CONTAINERS_CONF` points at: podman, buildah and skopeo children started
by the toolkit read it from the environment the test hands them, and `podman()` below also
passes them as flags.

The base image is the host's own `node` binary, the libraries `ldd` lists for it, `sh` and
`env`, and the CA bundle, imported as a rootfs tar (`podman import`) and tagged
`localhost/occ-node:20` (a real user pulls a public Node image instead). It is made once and
reused while the host's node binary is the same one (a label records which).

Fixtures (loaded as a pytest plugin by tests/conftest.py):
- `containers_conf`: the containers.conf path (session); `podman_env`: a minimal environment
  for podman children with CONTAINERS_CONF set.
- `node_image`: the base image's tag (session); fails (does not skip) when podman is missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

RUNTIME = "runc"
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")
NODE_IMAGE = "localhost/occ-node:20"
_LABEL = "org.occ.base-source"

CONTAINERS_CONF_TEXT = (
    "# Written by deploy.testing.images: runc (crun refuses this kernel's hybrid cgroups) and\n"
    "# ulimits under the sandbox's hard limits (it cannot raise them).\n"
    "[containers]\n"
    f"default_ulimits = [{', '.join(repr(u).replace(chr(39), chr(34)) for u in ULIMITS)}]\n"
    "[engine]\n"
    f'runtime = "{RUNTIME}"\n'
)


class PodmanMissing(RuntimeError):
    pass


def podman_exe() -> str:
    found = shutil.which("podman")
    if not found:
        raise PodmanMissing("`podman` was not found on PATH. The image tests need it: "
                            "apt-get install -y podman runc buildah skopeo (Debian/Ubuntu).")
    return found


def write_containers_conf(folder: str | Path) -> Path:
    """containers.conf for this sandbox in `folder`; returns its path."""
    path = Path(folder) / "containers.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONTAINERS_CONF_TEXT)
    return path


def shared_containers_conf() -> Path:
    """One containers.conf for the whole machine's test runs (same text every time)."""
    folder = Path(tempfile.gettempdir()) / "occ-containers"
    path = folder / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF_TEXT:
        folder.mkdir(exist_ok=True)
        tmp = folder / f".containers.conf.{os.getpid()}"
        tmp.write_text(CONTAINERS_CONF_TEXT)
        os.replace(tmp, path)
    return path


def container_env(conf: Path | None = None, **extra: str) -> dict[str, str]:
    """A minimal environment for podman, buildah and skopeo children."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": os.environ.get("HOME", "/root"),
           "CONTAINERS_CONF": str(conf or shared_containers_conf())}
    if os.environ.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = os.environ["XDG_RUNTIME_DIR"]
    env.update(extra)
    return env


_WITH_ULIMITS = {"run", "create", "build"}


def podman_argv(*args: str) -> list[str]:
    """podman with --runtime=runc and, for commands that make containers, the ulimits."""
    argv = [podman_exe(), f"--runtime={RUNTIME}", *args]
    if args and args[0] in _WITH_ULIMITS:
        flags = [x for u in ULIMITS for x in ("--ulimit", u)]
        argv[3:3] = flags
    return argv


def podman(*args: str, check: bool = True, input: bytes | str | None = None, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run podman (see `podman_argv`) with a minimal environment; raises with its stderr when
    `check` and it fails."""
    p = subprocess.run(podman_argv(*args), input=input.decode() if isinstance(input, bytes) else input,
                       capture_output=True, text=True, timeout=timeout, env=env or container_env())
    if check and p.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
    return p


# ---------------------------------------------------------------- the base image

def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])   # the loader
    return libs


def _base_files() -> dict[str, str]:
    """In-image path -> host file for the base image."""
    node = os.path.realpath(shutil.which("node") or "/usr/bin/node")
    sh = os.path.realpath(shutil.which("dash") or shutil.which("sh") or "/bin/sh")
    env = os.path.realpath(shutil.which("env") or "/usr/bin/env")
    files = {"/usr/bin/node": node, "/bin/sh": sh, "/usr/bin/env": env}
    for binary in (node, sh, env):
        for lib in _libraries(binary):
            files[lib] = os.path.realpath(lib)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(bundle):
        files[bundle] = os.path.realpath(bundle)
    return files


def base_source() -> str:
    """What the base image is made of: changes when the host's node (or a library) changes."""
    h = hashlib.sha256()
    for dest, src in sorted(_base_files().items()):
        st = os.stat(src)
        h.update(f"{dest}\0{src}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _rootfs_tar(path: Path) -> None:
    files = _base_files()
    dirs = {"/tmp", "/app", "/root", "/etc", "/bin", "/usr/bin", "/usr/local/bin"}
    for dest in files:
        parent = os.path.dirname(dest)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    with tarfile.open(path, "w") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "/tmp" else 0o755
            tar.addfile(info)
        for dest, src in sorted(files.items()):
            info = tar.gettarinfo(src, dest.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(src, "rb") as f:
                tar.addfile(info, f)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/app:/bin/sh\n"),
                           ("etc/group", "root:x:0:\nnode:x:1000:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def _label(tag: str, env: dict[str, str]) -> str | None:
    p = podman("image", "inspect", "--format", f'{{{{ index .Labels "{_LABEL}" }}}}', tag, check=False, env=env)
    return p.stdout.strip() if p.returncode == 0 else None


def ensure_node_image(tag: str = NODE_IMAGE, *, env: dict[str, str] | None = None) -> str:
    """The Node base image `tag`, made from the host's node unless it already is (returns `tag`).
    Safe to call from several test processes at once (a file lock serialises the import)."""
    env = env or container_env()
    source = base_source()
    if _label(tag, env) == source:
        return tag
    lock = Path(tempfile.gettempdir()) / "occ-node-image.lock"
    with open(lock, "w") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        if _label(tag, env) == source:
            return tag
        with tempfile.TemporaryDirectory(prefix="occ-node-rootfs-") as tmp:
            tar = Path(tmp) / "rootfs.tar"
            _rootfs_tar(tar)
            podman("import",
                   "--change", 'ENV PATH=/usr/local/bin:/usr/bin:/bin',
                   "--change", "WORKDIR /app",
                   "--change", f"LABEL {_LABEL}={source}",
                   "--change", 'CMD ["node"]',
                   str(tar), tag, env=env, timeout=600)
    return tag


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def containers_conf() -> Path:
    """containers.conf for this sandbox (runc, ulimits): point CONTAINERS_CONF at it."""
    podman_exe()
    return shared_containers_conf()


@pytest.fixture(scope="session")
def podman_env(containers_conf) -> dict[str, str]:
    """A minimal environment for podman/buildah/skopeo children (CONTAINERS_CONF set)."""
    return container_env(containers_conf)


@pytest.fixture(scope="session")
def node_image(podman_env) -> str:
    """`localhost/occ-node:20`: a Node 20 base image made from the host's node (made once)."""
    return ensure_node_image(env=podman_env)
