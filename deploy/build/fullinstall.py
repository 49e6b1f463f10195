"""The build's full install given back to a checkout after the build pruned it, for a tool
that needs the dev dependencies later (the Shopify CLI builds extensions with them): the
build's own install argv and environment, or the dependency cache's `full` tree linked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy.build.cachekey import deps_key, tool_versions
from deploy.build.entry import entry_ok, touch
from deploy.build.ops import fs, step
from deploy.build.recipes import DEPS, build_environment, recipe
from deploy.config import AppSection

FULL_MARK = ".deploy-full-install"   # in node_modules/: `full_install` finished here


@dataclass(frozen=True)
class FullInstall:
    """What `full_install` did: `ran` in display form (empty: nothing to install or already
    there), `entry` the cache entry whose `full` node_modules is hard-linked into the app."""

    summary: str
    ran: tuple[str, ...] = ()
    entry: Path | None = None
    app: Path | None = None


def full_install(app_dir: str | Path, contract: AppSection | None = None, *, env: Mapping[str, str] | None = None,
                 deps_cache: str | Path | None = None, timeout: float | None = None) -> FullInstall:
    """Give `app_dir` (the commit's checkout: after a build it holds the pruned production
    node_modules) back its full install, dev dependencies included, for a tool that needs
    them after the build (the Shopify CLI builds the app's extensions with them).

    It is the build's install, not another one: the recipe's install argv (`[app] install`
    or the lockfile's clean install) in the build's environment (`build_environment`: the
    names in `app.build_env` included), or, when `app.deps_cache` is on and the cache
    (`deps_cache`, default none) holds this install, its `full` node_modules hard-linked
    as a build with a cache hit does. Done once per checkout (a mark in node_modules; a
    build removes it). Call `check_full_install` when the tool is done."""
    contract = contract or AppSection()
    app = Path(app_dir)
    plan = recipe(app, contract)
    if not plan.install:
        return FullInstall("no dependencies to install")
    mark = app / DEPS / FULL_MARK
    if mark.is_file():
        return FullInstall("dependencies already installed")
    child_env = build_environment(os.environ if env is None else env, contract,
                                  {"npm_config_update_notifier": "false"})
    limit = timeout or contract.build_timeout
    entry = None
    if contract.deps_cache and deps_cache is not None:
        versions = tool_versions(plan, child_env, Path(deps_cache))
        key = deps_key(app, plan, versions) if versions is not None else None
        entry = Path(deps_cache) / key if key else None
        if entry is not None and not (entry.exists() and entry_ok(entry)):
            entry = None
    if entry is not None:
        fs(["rm", "-rf", str(app / DEPS)], "removing the pruned node_modules")
        fs(["cp", "-al", str(entry / "full" / DEPS), str(app / DEPS)], "restoring node_modules from the cache")
        touch(entry)
        ran = (f"(dependency cache {entry.name[:12]}) cp -al {entry / 'full' / DEPS} {DEPS}",)
    else:
        ran = (step(plan.install, app, child_env, limit),)
    mark.write_text(ran[0] + "\n")
    return FullInstall(f"installed dependencies ({ran[0]})", ran, entry, app)


def check_full_install(done: FullInstall) -> None:
    """After the tool ran in a checkout `full_install` linked from the cache: an entry the
    tool wrote into through the links is dropped (and the checkout's node_modules with it),
    so no later build trusts it."""
    if done.entry is not None and done.entry.exists() and not entry_ok(done.entry, parts=("full",)):
        fs(["rm", "-rf", str(done.entry)] + ([str(done.app / DEPS)] if done.app else []),
            "dropping a damaged cache entry")
