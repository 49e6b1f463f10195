"""Build the app once per commit and pack it into a content-addressed artifact.

    artifacts/
      <sha256>.tar.gz          the packed build/ plus RELEASE.json; named by its own hash
      by-sha/<git sha>.json    index: which tarball holds this commit's build

A commit is built at most once: `build()` first looks the commit up in the index and
reuses the tarball if its hash still verifies. The tarball is reproducible (sorted
entries, fixed owner, modes and mtimes, gzip header without a timestamp, as
reproducible-builds.org's "archives" advice says), so the same build output always has
the same SHA-256, and production can insist on the exact bytes staging tested.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.errors import BuildFailed, SettingsError

DEFAULT_ARTIFACTS_DIR = ".deploy/artifacts"
MANIFEST = "RELEASE.json"
RESERVED = (MANIFEST, "RELEASE")       # written by pack() and by the release step
GIT_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class Artifact:
    """A packed build: `path` is a .tar.gz whose top level holds the built app and
    `RELEASE.json` (release_id, git_sha, built_at, files)."""

    path: Path
    sha256: str          # of the tarball, 64 lowercase hex
    release_id: str      # "<UTC yyyymmddHHMMSS>-<sha7>", valid as a directory and a Shopify version
    git_sha: str
    built_at: str        # ISO 8601 UTC


@dataclass(frozen=True)
class BuildResult:
    artifact: Artifact
    reused: bool                     # True: an earlier build of this commit was verified and reused
    duration: float                  # seconds, including npm
    commands: tuple[str, ...] = ()   # what ran (display form), empty when reused


# ---------------------------------------------------------------- ids and git

def new_release_id(git_sha: str, now: datetime) -> str:
    """`<UTC yyyymmddHHMMSS>-<sha7>`: sorts by time, names its commit, and is valid as a
    directory name and as a Shopify `--version` ([a-zA-Z0-9._-], <= 100 chars)."""
    _check_sha(git_sha)
    if now.tzinfo is None:
        raise ValueError("new_release_id needs an aware datetime (UTC)")
    return f"{now.astimezone(timezone.utc):%Y%m%d%H%M%S}-{git_sha[:7]}"


def git_head(root: str | Path) -> str:
    """The full SHA of HEAD in `root`, or SettingsError saying why there is none."""
    r = proc.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
    if r.ok and GIT_SHA.match(r.stdout.strip()):
        return r.stdout.strip()
    probe = proc.run(["git", "-C", str(root), "rev-parse", "--git-dir"])
    if not probe.ok:
        raise SettingsError(
            f"{root} is not inside a git repository, so there is no commit to deploy ({probe.tail(2)}).",
            "Run from a clone of the project, or pass --sha=<commit>.",
        )
    raise SettingsError(
        f"{root}: the git repository has no commits yet, so there is no SHA to deploy.",
        "Commit the project first (git commit), then run again.",
    )


def git_dirty(root: str | Path) -> list[str]:
    """Paths `git status` reports as changed or untracked (ignored files excluded)."""
    r = proc.run(["git", "-C", str(root), "status", "--porcelain=v1", "--untracked-files=normal"])
    if not r.ok:
        raise SettingsError(f"{root}: `git status` failed: {r.tail(3)}", "Run from a clone of the project.")
    return [line[3:] for line in r.stdout.splitlines() if line.strip()]


def git_is_clean(root: str | Path) -> bool:
    """True when the working tree matches HEAD: the build will be exactly that commit."""
    return not git_dirty(root)


def _check_sha(git_sha: str) -> None:
    if not isinstance(git_sha, str) or not GIT_SHA.match(git_sha):
        raise SettingsError(
            f"{git_sha!r} is not a git commit SHA (7 to 64 lowercase hex digits).",
            "Pass the full SHA, e.g. --sha=$(git rev-parse HEAD).",
        )


# ---------------------------------------------------------------- build

def build_commands(app_dir: str | Path) -> list[list[str]]:
    """The commands a fresh build runs in `app_dir`, as data."""
    app = Path(app_dir)
    cmds: list[list[str]] = []
    if (app / "package-lock.json").is_file():
        # ci, not install: the lockfile is the truth and is never rewritten by a deploy.
        cmds.append(["npm", "ci", "--no-audit", "--no-fund"])
    elif _has_dependencies(app):
        raise BuildFailed(
            f"{app}/package.json declares dependencies but there is no package-lock.json.",
            "Run `npm install` and commit package-lock.json: a deploy builds only from a lockfile.",
        )
    cmds.append(["npm", "run", "build"])
    return cmds


def build(
    app_dir: str | Path,
    git_sha: str,
    artifacts_dir: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
    timeout: float = 900.0,
) -> BuildResult:
    """The artifact for `git_sha`: reused if already built and verified, else built with
    npm in `app_dir` (which must hold that commit's sources) and packed."""
    started = time.monotonic()
    _check_sha(git_sha)
    app = Path(app_dir).resolve()
    store = _writable_dir(Path(artifacts_dir))
    existing = find(store, git_sha)
    if existing is not None:
        return BuildResult(existing, True, time.monotonic() - started)

    if not (app / "package.json").is_file():
        raise SettingsError(
            f"{app}: no package.json, so there is no app to build here.",
            "Set environment.app_dir in env/<name>.toml to the app's folder.",
        )
    path = (env or {}).get("PATH", os.environ.get("PATH"))
    proc.which("node", path=path)   # npm is itself a node script: name node first
    proc.which("npm", path=path)

    built = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    built_at = built.strftime("%Y-%m-%dT%H:%M:%SZ")
    child_env = {
        **(env or {}),
        "GIT_SHA": git_sha,
        "BUILT_AT": built_at,
        "SOURCE_DATE_EPOCH": str(int(built.timestamp())),
        "npm_config_update_notifier": "false",
    }
    ran = []
    for argv in build_commands(app):
        r = proc.run(argv, cwd=app, env=child_env, timeout=timeout)
        ran.append(r.display)
        if not r.ok:
            raise BuildFailed(
                f"`{r.display}` failed in {app} (exit {r.returncode}):\n{r.tail(20)}",
                "Fix the build (run the same command in the app folder to see it all), then run again.",
            )
    out = app / "build"
    if not out.is_dir():
        raise BuildFailed(f"`npm run build` succeeded but wrote no {out}/.", "Make the build script write build/.")
    artifact = pack(out, store, git_sha=git_sha, built_at=built_at, release_id=new_release_id(git_sha, built))
    _write_index(store, artifact)
    return BuildResult(artifact, False, time.monotonic() - started, tuple(ran))


def _has_dependencies(app: Path) -> bool:
    try:
        pkg = json.loads((app / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BuildFailed(f"{app}/package.json cannot be read: {e}.") from None
    return any(pkg.get(k) for k in ("dependencies", "devDependencies", "optionalDependencies"))


# ---------------------------------------------------------------- store

def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find(artifacts_dir: str | Path, git_sha: str) -> Artifact | None:
    """The stored artifact for `git_sha` if its tarball exists and its hash verifies."""
    index = Path(artifacts_dir) / "by-sha" / f"{git_sha}.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        art = Artifact(
            path=Path(artifacts_dir) / f"{data['sha256']}.tar.gz",
            sha256=data["sha256"],
            release_id=data["release_id"],
            git_sha=data["git_sha"],
            built_at=data["built_at"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if art.git_sha != git_sha or not art.path.is_file() or sha256_file(art.path) != art.sha256:
        return None   # a truncated or edited tarball is rebuilt, never shipped
    return art


def verify(artifact: Artifact) -> None:
    """BuildFailed unless the tarball on disk still has the recorded SHA-256."""
    if not Path(artifact.path).is_file():
        raise BuildFailed(f"Artifact {artifact.path} is missing.", "Build again: invoke build --sha=" + artifact.git_sha)
    actual = sha256_file(artifact.path)
    if actual != artifact.sha256:
        raise BuildFailed(
            f"Artifact {artifact.path} has SHA-256 {actual}, expected {artifact.sha256}: it changed after it was built.",
            "Delete it and build again; never ship an artifact whose hash does not verify.",
        )


def read_manifest(artifact: Artifact | str | Path) -> dict:
    """RELEASE.json from inside a tarball."""
    path = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
    with tarfile.open(path, "r:gz") as tar:
        f = tar.extractfile(MANIFEST)
        if f is None:
            raise BuildFailed(f"{path} has no {MANIFEST}.")
        return json.loads(f.read().decode("utf-8"))


def _write_index(store: Path, artifact: Artifact) -> None:
    by_sha = store / "by-sha"
    by_sha.mkdir(parents=True, exist_ok=True)
    data = {
        "git_sha": artifact.git_sha,
        "sha256": artifact.sha256,
        "file": artifact.path.name,
        "release_id": artifact.release_id,
        "built_at": artifact.built_at,
    }
    _atomic_write(by_sha / f"{artifact.git_sha}.json", (json.dumps(data, indent=2) + "\n").encode())


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _writable_dir(path: Path) -> Path:
    return proc.ensure_writable(
        path, "the artifacts folder",
        "Point the artifacts folder at a writable place (default .deploy/artifacts under the project root).")


# ---------------------------------------------------------------- pack

def pack(build_dir: str | Path, artifacts_dir: str | Path, *, git_sha: str, built_at: str, release_id: str) -> Artifact:
    """Pack `build_dir` plus a RELEASE.json into `<artifacts_dir>/<sha256>.tar.gz`.

    The bytes depend only on the files' contents, their executable bits and the
    manifest: same build output, same hash."""
    root = Path(build_dir)
    store = Path(artifacts_dir)
    entries = _walk(root)
    files = [
        {"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size}
        for rel, p in entries if p.is_file() and not p.is_symlink()
    ]
    manifest = {"release_id": release_id, "git_sha": git_sha, "built_at": built_at, "files": files}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    mtime = int(datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())

    fd, tmp = tempfile.mkstemp(prefix=".pack-", suffix=".tar.gz", dir=store)
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" and mtime=0 keep the gzip header free of the temp name and the clock.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for rel, p in entries:
                        info = _tarinfo(rel, p, mtime)
                        if info.isreg():
                            with open(p, "rb") as f:
                                tar.addfile(info, f)
                        else:
                            tar.addfile(info)
                    info = _info(MANIFEST, tarfile.REGTYPE, 0o644, mtime)
                    info.size = len(manifest_bytes)
                    tar.addfile(info, io.BytesIO(manifest_bytes))
        digest = sha256_file(tmp)
        final = store / f"{digest}.tar.gz"
        os.replace(tmp, final)   # same name means same bytes, so replacing an existing one is harmless
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Artifact(path=final, sha256=digest, release_id=release_id, git_sha=git_sha, built_at=built_at)


def _walk(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel in RESERVED:
                raise BuildFailed(
                    f"{p}: the build must not write {rel}; the deploy tool writes that name.",
                    f"Rename it in the build script ({', '.join(RESERVED)} are reserved).",
                )
            if p.is_symlink():
                target = os.readlink(p)
                resolved = (p.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(root.resolve()):
                    raise BuildFailed(
                        f"{p} is a symlink to {target}, outside the build folder.",
                        "Copy the file into build/ instead: a release must not depend on the build machine.",
                    )
            out.append((rel, p))
    return sorted(out)


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tarinfo(rel: str, p: Path, mtime: int) -> tarfile.TarInfo:
    # Only the executable bit survives from the file system: umask and owner differ
    # between machines and would change the hash.
    if p.is_symlink():
        info = _info(rel, tarfile.SYMTYPE, 0o777, mtime)
        info.linkname = os.readlink(p)
        return info
    if p.is_dir():
        return _info(rel, tarfile.DIRTYPE, 0o755, mtime)
    st = p.stat()
    info = _info(rel, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644, mtime)
    info.size = st.st_size
    return info
