"""The artifact store: what a packed build is (`Artifact`, its RELEASE.json manifest), what
it is stored under (`BuildKey`: commit, app folder, contract digest), and finding,
verifying, indexing and pruning builds.

    artifacts/
      <sha256>.tar.gz          the packed app plus RELEASE.json; named by its own hash
      builds/<key>.json        index: which tarball holds the build of `BuildKey` <key>
                               (<git sha>-<digest of the app folder and the release contract>)
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from deploy import proc
from deploy.build.ops import atomic_write, lock, sha256_file
from deploy.config import AppSection
from deploy.errors import BuildFailed, SettingsError
from deploy.source import check_sha


DEFAULT_ARTIFACTS_DIR = ".deploy/artifacts"
MANIFEST = "RELEASE.json"
RESERVED = (MANIFEST, "RELEASE")       # written by pack() and by the release step


@dataclass(frozen=True)
class Artifact:
    """A packed build: `path` is a .tar.gz whose top level holds the built app and
    `RELEASE.json` (release_id, git_sha, built_at, files)."""

    path: Path
    sha256: str          # of the tarball, 64 lowercase hex
    release_id: str      # "<UTC yyyymmddHHMMSS>-<sha7>", valid as a directory and a Shopify version
    git_sha: str
    built_at: str        # ISO 8601 UTC


INDEX = "builds"
LEGACY_INDEX = "by-sha"    # the older layout, one build per commit: never read, removed by prune
# The [app] keys a build's output depends on (the rest say how it runs), and the version of
# the recipe rules ("auto" means other commands when they change: 2 added `generate`).
CONTRACT_FIELDS = ("install", "generate", "build", "prune", "include", "build_env")
RECIPE_RULES = 2


def contract_digest(contract: AppSection | None = None) -> str:
    """A digest of the release contract's build part (`CONTRACT_FIELDS`), 16 hex digits."""
    c = contract or AppSection()
    facts = {"rules": RECIPE_RULES, **{k: getattr(c, k) for k in CONTRACT_FIELDS}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuildKey:
    """What a build is made from, and so what its artifact and checkout are stored under:
    the commit, the app folder relative to the repository's top level, and the build part
    of the release contract (`contract_digest`)."""

    git_sha: str
    app_folder: str = "."
    contract: str = ""

    @property
    def name(self) -> str:
        """`<git sha>-<16 hex digits of the app folder and contract>`: a file and folder name."""
        h = hashlib.sha256(json.dumps([self.app_folder, self.contract]).encode()).hexdigest()[:16]
        return f"{self.git_sha}-{h}"


def build_key(git_sha: str, app_folder: str = ".", contract: AppSection | None = None) -> BuildKey:
    """The key of building `app_folder` (relative to its repository) at `git_sha` under `contract`."""
    check_sha(git_sha)
    return BuildKey(git_sha, os.path.normpath(app_folder), contract_digest(contract))


def find(artifacts_dir: str | Path, key: BuildKey | str) -> Artifact | None:
    """The stored artifact built for `key` (a bare git SHA: `build_key(sha)`, the default
    app folder and contract) if its tarball exists and its hash verifies."""
    key = build_key(key) if isinstance(key, str) else key
    index = Path(artifacts_dir) / INDEX / f"{key.name}.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        art = Artifact(
            path=Path(artifacts_dir) / f"{data['sha256']}.tar.gz",
            sha256=data["sha256"],
            release_id=data["release_id"],
            git_sha=data["git_sha"],
            built_at=data["built_at"],
        )
        same = (data["git_sha"], data["app_folder"], data["contract"]) == (key.git_sha, key.app_folder, key.contract)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same or not art.path.is_file() or sha256_file(art.path) != art.sha256:
        return None   # another build's index, or a truncated or edited tarball: rebuilt, never shipped
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


def write_index(store: Path, artifact: Artifact, key: BuildKey) -> None:
    """Record (atomically) that `artifact` is the build of `key`: builds/<key name>.json."""
    index = store / INDEX
    index.mkdir(parents=True, exist_ok=True)
    data = {
        "git_sha": artifact.git_sha,
        "app_folder": key.app_folder,
        "contract": key.contract,
        "sha256": artifact.sha256,
        "file": artifact.path.name,
        "release_id": artifact.release_id,
        "built_at": artifact.built_at,
    }
    atomic_write(index / f"{key.name}.json", (json.dumps(data, indent=2) + "\n").encode())


def prune(artifacts_dir: str | Path, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the newest `keep` builds (by build time), never one whose git SHA is in
    `protect` (live or previous somewhere, or just built: every build of that commit);
    returns the names (`BuildKey.name`) of the builds removed. Tarballs no kept index points
    to (an interrupted pack) go too, and so do indexes of the older layout (by-sha/<git sha>.json,
    one build per commit), which no lookup reads any more."""
    store = Path(artifacts_dir)
    if keep < 1:
        raise SettingsError(f"keep = {keep}: at least 1 build must be kept.", "Use app.keep_builds >= 1.")
    if not (store / INDEX).is_dir() and not (store / LEGACY_INDEX).is_dir():
        return []
    rows = []
    for f in [*(store / INDEX).glob("*.json"), *(store / LEGACY_INDEX).glob("*.json")]:
        # Newest = most recently built (the index file's mtime). `built_at` is the commit's
        # time (reproducible bytes), so commits made in the same second would tie on it.
        try:
            when = f.stat().st_mtime_ns
        except OSError:
            when = 0
        legacy = f.parent.name == LEGACY_INDEX
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            row = (when, str(data["built_at"]), str(f), str(data["git_sha"]), str(data["sha256"]), legacy)
        except (OSError, ValueError, KeyError, TypeError):
            row = (when, "", str(f), f.stem.split("-", 1)[0], "", legacy)
        rows.append(row)
    rows.sort(reverse=True)
    current = [r[1:] for r in rows if not r[5]]
    protect = set(protect)
    kept = current[:keep] + [r for r in current[keep:] if r[2] in protect]
    doomed = [r for r in current[keep:] if r[2] not in protect] + [r[1:] for r in rows if r[5]]
    live_tars = {r[3] for r in kept}
    for _, index, _, _, _ in doomed:
        Path(index).unlink(missing_ok=True)
    for tar in {r[3] for r in doomed} - live_tars:
        if tar:
            (store / f"{tar}.tar.gz").unlink(missing_ok=True)
    # A tarball no index points to is an interrupted pack, or a concurrent build's between
    # its pack and its index: swept only while no build is packing.
    with lock(store / ".locks" / "store.lock", wait=False) as free:
        if free:
            for orphan in store.glob("*.tar.gz"):
                if not orphan.name.startswith(".") and orphan.name[:-len(".tar.gz")] not in live_tars:
                    orphan.unlink(missing_ok=True)
    for tmp in store.glob(".pack-*"):
        pid = tmp.name.split("-")[1] if tmp.name.count("-") >= 2 else ""
        if not pid.isdigit() or not proc.pid_alive(int(pid)):   # never a running pack's
            tmp.unlink(missing_ok=True)
    return [Path(index).stem for _, index, _, _, legacy in doomed if not legacy]
