"""Build the app once per build key and pack it into a content-addressed artifact.

What is built and packed is the `[app]` release contract (config.AppSection): in the
commit's checkout, the package manager's clean install, the build script, then the
devDependencies pruned; the artifact holds the app tree at the commit, the build output and
the production node_modules, installed once here, so the bytes staging proved are the bytes
production runs.

One job per module (each re-exported here, as `__all__` lists):

    recipes.py      the package-manager recipe, as data (pure)
    cachekey.py     what a dependency cache entry is keyed by
    entry.py        one cache entry on disk, and its checks
    prodtree.py     an entry's npm production tree; linking trees in and out
    cache.py        the dependency cache: hit, fill, verify, prune (`DepsCache`, `run_recipe`)
    fullinstall.py  the full install given back to a checkout after the build
    artifact.py     the artifact store: Artifact, BuildKey, find, verify, index, prune
    packing.py      reproducible packing (isal's threaded gzip; the dependencies a gzip member kept per content)
    orchestrate.py  `build`: reuse or build once per key, then pack
    ops.py          low-level operations the others share

Which commit and its release id are deploy.source's; how the app starts is deploy.startup's
(re-exported here for callers of the build).
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.build.artifact import (CONTRACT_FIELDS, DEFAULT_ARTIFACTS_DIR, MANIFEST, Artifact, BuildKey, build_key,
                                       contract_digest, find, prune, read_manifest, verify)
    from deploy.build.cache import DepsCache, deps_cache_dir, prune_deps_cache, prune_deps_cache_to_size
    from deploy.build.cachekey import deps_key
    from deploy.build.fullinstall import FullInstall, check_full_install, full_install
    from deploy.build.ops import sha256_file, tree_bytes
    from deploy.build.orchestrate import BuildResult, build
    from deploy.build.packing import pack
    from deploy.build.recipes import (INSTALL, LOCKFILES, PRUNE, Recipe, app_name, build_commands, build_environment,
                                     package_manager, recipe)
    from deploy.source import git_dirty, git_head, git_is_clean, new_release_id
    from deploy.startup import package_json, start_argv, start_command, start_path
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.build.artifact": ("CONTRACT_FIELDS", "DEFAULT_ARTIFACTS_DIR", "MANIFEST", "Artifact", "BuildKey",
                                  "build_key", "contract_digest", "find", "prune", "read_manifest", "verify"),
        "deploy.build.cache": ("DepsCache", "deps_cache_dir", "prune_deps_cache", "prune_deps_cache_to_size"),
        "deploy.build.cachekey": ("deps_key",),
        "deploy.build.fullinstall": ("FullInstall", "check_full_install", "full_install"),
        "deploy.build.ops": ("sha256_file", "tree_bytes"),
        "deploy.build.orchestrate": ("BuildResult", "build"),
        "deploy.build.packing": ("pack",),
        "deploy.build.recipes": ("INSTALL", "LOCKFILES", "PRUNE", "Recipe", "app_name", "build_commands",
                                 "build_environment", "package_manager", "recipe"),
        "deploy.source": ("git_dirty", "git_head", "git_is_clean", "new_release_id"),
        "deploy.startup": ("package_json", "start_argv", "start_command", "start_path"),
    })

__all__ = [
    "app_name",
    "Artifact",
    "build",
    "build_commands",
    "build_environment",
    "build_key",
    "BuildKey",
    "BuildResult",
    "check_full_install",
    "contract_digest",
    "CONTRACT_FIELDS",
    "DEFAULT_ARTIFACTS_DIR",
    "deps_cache_dir",
    "deps_key",
    "DepsCache",
    "find",
    "full_install",
    "FullInstall",
    "git_dirty",
    "git_head",
    "git_is_clean",
    "INSTALL",
    "LOCKFILES",
    "MANIFEST",
    "new_release_id",
    "pack",
    "package_json",
    "package_manager",
    "PRUNE",
    "prune",
    "prune_deps_cache",
    "prune_deps_cache_to_size",
    "read_manifest",
    "Recipe",
    "recipe",
    "sha256_file",
    "start_argv",
    "start_command",
    "start_path",
    "tree_bytes",
    "verify",
]
