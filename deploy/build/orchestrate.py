"""Build orchestration: the artifact of a build key, reused when already built and verified,
else built once (a lock per key) in the commit's checkout under the `[app]` contract (the
recipe, through the dependency cache when on) and packed.

The build gets an explicit environment (`build_environment`): no deploy secret reaches a
build script unless `app.build_env` names it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.build.artifact import Artifact, BuildKey, build_key, contract_digest, find, write_index
from deploy.build.cache import DepsCache, deps_cache_dir, prune_deps_cache_to_size, run_recipe
from deploy.build.fullinstall import FULL_MARK
from deploy.build.ops import fs, lock, writable_dir
from deploy.build.packing import PackStats, pack_counted, prune_members
from deploy.build.recipes import DEPS, LINKED, Recipe, app_name, build_environment, recipe
from deploy.config import AppSection
from deploy.errors import BuildFailed
from deploy.source import check_sha, new_release_id


@dataclass(frozen=True)
class BuildResult:
    """What `build` did: the artifact, whether it was reused, how long it took and what ran."""

    artifact: Artifact
    reused: bool                     # True: an earlier build of this commit was verified and reused
    duration: float                  # seconds, including npm
    commands: tuple[str, ...] = ()   # what ran (display form), empty when reused
    pack: PackStats | None = None    # what packing read (None when reused): the dependency member reused or packed


def build(
    app_dir: str | Path,
    git_sha: str,
    artifacts_dir: str | Path,
    *,
    contract: AppSection | None = None,
    env: Mapping[str, str] | None = None,
    now: datetime | None = None,
    timeout: float | None = None,
    deps_cache: str | Path | None = None,
    app_folder: str | Path | None = None,
    key: BuildKey | None = None,
) -> BuildResult:
    """The artifact for `git_sha`: reused if already built and verified, else built in
    `app_dir` (which must hold that commit's sources) under the `[app]` contract and packed.

    `env` is the deployer's environment (default: this process's) from which the build's
    explicit environment is picked (`build_environment`). `deps_cache`: the dependency
    cache folder (default: <artifacts_dir>/../cache/deps; see `deps_key`), used when
    `app.deps_cache` is on and the recipe installs dependencies. `app_folder`: the configured
    app folder, whose name is the app's when package.json has none (`app_name`). `key`: what
    the build is stored under (default `build_key(git_sha, ".", contract)`); its app folder
    and contract digest are written into RELEASE.json."""
    contract = contract or AppSection()
    started = time.monotonic()
    check_sha(git_sha)
    key = key or build_key(git_sha, ".", contract)
    if key.git_sha != git_sha or key.contract != contract_digest(contract):
        raise ValueError(f"build key {key} is not a key of {git_sha} under this contract")
    app = Path(app_dir).resolve()
    store = writable_dir(Path(artifacts_dir))
    existing = find(store, key)
    if existing is not None:
        return BuildResult(existing, True, time.monotonic() - started)
    # One build per key at a time: builds of a key share its checkout (.deploy/src/<key>),
    # so a second runner waits, then reuses what the first one packed.
    with lock(store / ".locks" / f"{key.name}.lock"):
        existing = find(store, key)
        if existing is not None:
            return BuildResult(existing, True, time.monotonic() - started)
        return _build_unlocked(app, git_sha, store, contract, env, now, timeout, deps_cache, app_folder,
                               artifacts_dir, started, key)


def _build_unlocked(app: Path, git_sha: str, store: Path, contract: AppSection, env: Mapping[str, str] | None,
                    now: datetime | None, timeout: float | None, deps_cache: str | Path | None,
                    app_folder: str | Path | None, artifacts_dir: str | Path, started: float,
                    key: BuildKey) -> BuildResult:
    """`build` once the key's lock is held and nothing verified was found."""
    plan = recipe(app, contract)
    environ = os.environ if env is None else env
    built = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    built_at = built.strftime("%Y-%m-%dT%H:%M:%SZ")
    child_env = build_environment(environ, contract, {
        "GIT_SHA": git_sha,
        "BUILT_AT": built_at,
        "SOURCE_DATE_EPOCH": str(int(built.timestamp())),
        "npm_config_update_notifier": "false",
    })
    path = child_env.get("PATH", "")
    tools = [a[0] for a in plan.commands]
    if any(t in ("npm", "pnpm", "yarn", "npx", "node") for t in tools):
        proc.which("node", path=path)   # npm is itself a node script: name node first
    for t in dict.fromkeys(tools):
        if os.sep not in t:
            proc.which(t, path=path)
    limit = timeout or contract.build_timeout
    cache = None
    if contract.deps_cache and plan.install:
        cache = DepsCache(Path(deps_cache) if deps_cache is not None else deps_cache_dir(artifacts_dir),
                          contract.keep_builds)
    (app / DEPS / FULL_MARK).unlink(missing_ok=True)   # the build prunes: no longer the full install
    if (app / LINKED).exists():   # left by a killed build (never packed)
        fs(["rm", "-rf", str(app / LINKED)], "clearing an interrupted build")
    ran: list[str] = []
    try:
        for again in (False, True):
            ran += _run(app, plan, child_env, limit, cache, contract)
            with lock(store / ".locks" / "store.lock", shared=True):   # prune leaves an unindexed tarball alone meanwhile
                artifact, stats = pack_counted(
                    app, store, git_sha=git_sha, built_at=built_at, release_id=new_release_id(git_sha, built),
                    include=plan.include, app=app_name(app, app_folder),
                    known_sha256=cache.known_sha256 if cache is not None else None,
                    source={"app_folder": key.app_folder, "contract": key.contract},
                    members=members_dir(cache.root) if cache is not None else None,
                    known_tree=cache.known_tree if cache is not None else None)
                # The cache's stat walks ran while it packed: nothing is indexed before they held.
                if cache is None or cache.confirmed():
                    write_index(store, artifact, key)
                    break
            # The cached tree changed during the build: nothing of it is kept (the tarball, never
            # indexed, goes with the store's next prune; a dependency member it packed goes now)
            # and the commit is built again without that entry.
            if stats.deps_member == "packed" and stats.member is not None:
                stats.member.unlink(missing_ok=True)
                stats.member.with_suffix(".json").unlink(missing_ok=True)
            if again:   # a miss verifies before it packs: not reached
                raise BuildFailed("The dependency cache changed while the build ran, twice.",
                                  "Find what writes into .deploy/cache during builds, then build again.")
            ran.append("(dependency cache) the cached tree changed during the build: built again without it")
        if cache is not None and stats.member is not None:
            prune_members(members_dir(cache.root), contract.keep_builds, protect=(stats.member.name[:-3],))
    finally:
        if cache is not None:
            cache.wait()   # clean-ups that overlapped the pack
    return BuildResult(artifact, False, time.monotonic() - started, tuple(ran), stats)


def _run(app: Path, plan: Recipe, env: Mapping[str, str], limit: float, cache: DepsCache | None,
         contract: AppSection) -> list[str]:
    """The recipe's commands in `app` (through the dependency cache when there is one); what ran."""
    try:
        ran = run_recipe(app, plan, env, limit, cache)
        if cache is not None and cache.filled:   # bounded by size too (one entry is hundreds of MB);
            # only a fill adds to it: a hit does not walk the whole cache to measure it
            prune_deps_cache_to_size(cache.root, contract.cache_max_mb)
    except BuildFailed:
        if cache is not None and (app / DEPS).is_dir():
            # The failed build's install is in the cache (`DepsCache.fill`): the checkout need not
            # keep hundreds of MB, and a retry in it links the cache instead of a second `npm ci`
            # (an existing node_modules is never taken for the cache's).
            fs(["rm", "-rf", str(app / DEPS)], "removing a failed build's node_modules")
        raise
    for rel in plan.include:
        if not (app / rel).exists():
            raise BuildFailed(f"app.include names {rel}, but the build left no {app / rel}.",
                              "Make the build write it, or remove it from [app] include.")
    return ran


def members_dir(deps_cache: Path) -> Path:
    """The kept dependency members (deploy.build.packing), beside the dependency cache: <cache>/../packed."""
    return deps_cache.parent / "packed"
