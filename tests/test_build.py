"""Building the example app with real npm: once per commit, reproducible, verified."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deploy import build as b
from deploy import trash
from deploy.build import artifact, cachekey, fullinstall, ops, packing, recipes
from deploy.build import entry as cache_entry
from deploy.errors import BuildFailed, SettingsError, ToolMissing
from deploy.testing.app import (  # noqa: F401  (fixtures)
    BUILT_AT, SHA_A, SHA_B, app_artifact, copy_example_app, example_app,
)


def _set_build_script(app: Path, script: str) -> None:
    pkg = json.loads((app / "package.json").read_text())
    pkg["scripts"]["build"] = script
    (app / "package.json").write_text(json.dumps(pkg, indent=2))


# ---------------------------------------------------------------- release ids and git

@pytest.mark.parametrize(
    "sha, now, expected",
    [
        (SHA_A, datetime(2024, 3, 1, 12, 0, 5, tzinfo=timezone.utc), "20240301120005-a1b2c3d"),
        (SHA_B, datetime(2024, 3, 1, 13, 0, 5, tzinfo=timezone(timedelta(hours=1))), "20240301120005-b2c3d4e"),
        ("abcdef1", datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), "19991231235959-abcdef1"),
    ],
    ids=["utc", "offset-converted-to-utc", "short-sha"],
)
def test_release_id_is_utc_timestamp_and_sha7(sha, now, expected):
    assert b.new_release_id(sha, now) == expected


@pytest.mark.parametrize("sha", ["", "HEAD", "ABCDEF1", "abc", "g" * 40], ids=["empty", "ref", "upper", "short", "not-hex"])
def test_release_id_refuses_what_is_not_a_sha(sha):
    with pytest.raises(SettingsError, match="not a git commit SHA"):
        b.new_release_id(sha, BUILT_AT)


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def test_git_head_and_cleanliness_of_a_real_repository(tmp_path):
    _git(tmp_path, "init", "-q")
    with pytest.raises(SettingsError, match="no commits yet"):
        b.git_head(tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    assert not b.git_is_clean(tmp_path)
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "commit", "-q", "-m", "one")
    head = b.git_head(tmp_path)
    assert head == _git(tmp_path, "rev-parse", "HEAD").strip() and len(head) == 40
    assert b.git_is_clean(tmp_path)
    (tmp_path / "a.txt").write_text("two\n")
    assert b.git_dirty(tmp_path) == ["a.txt"]


def test_git_head_outside_a_repository_says_so(tmp_path):
    with pytest.raises(SettingsError, match="not inside a git repository") as e:
        b.git_head(tmp_path)
    assert str(tmp_path) in str(e.value)


# ---------------------------------------------------------------- build once per commit

def test_second_build_of_the_same_commit_reuses_the_artifact_without_npm(example_app, tmp_path):
    store = tmp_path / "artifacts"
    first = b.build(example_app, SHA_A, store, now=BUILT_AT)
    assert not first.reused
    assert first.commands == ("npm run build",)   # no dependencies: nothing to install or prune
    assert first.artifact.path == store / f"{first.artifact.sha256}.tar.gz"
    index = json.loads((store / "builds" / f"{b.build_key(SHA_A).name}.json").read_text())
    assert index["sha256"] == first.artifact.sha256 and index["app_folder"] == "."
    mtime = first.artifact.path.stat().st_mtime_ns

    # Evidence that npm does not run again: its output folder is gone and the build
    # script is now broken; a real build would recreate build/ or fail.
    shutil.rmtree(example_app / "build")
    _set_build_script(example_app, "node -e \"process.exit(1)\"")
    second = b.build(example_app, SHA_A, store, now=BUILT_AT + timedelta(hours=1))

    assert second.reused and second.commands == ()
    assert second.artifact == first.artifact
    assert second.artifact.path.stat().st_mtime_ns == mtime
    assert not (example_app / "build").exists()


def test_a_tampered_artifact_is_rebuilt_not_reused(example_app, tmp_path):
    store = tmp_path / "artifacts"
    first = b.build(example_app, SHA_A, store, now=BUILT_AT).artifact
    with open(first.path, "ab") as f:
        f.write(b"x")
    with pytest.raises(BuildFailed, match="changed after it was built"):
        b.verify(first)
    assert b.find(store, SHA_A) is None
    again = b.build(example_app, SHA_A, store, now=BUILT_AT)
    assert not again.reused
    assert again.artifact.sha256 == first.sha256   # same inputs, same bytes
    b.verify(again.artifact)


@pytest.mark.slow
def test_same_sources_and_inputs_give_the_same_hash(tmp_path):
    one = b.build(copy_example_app(tmp_path / "one"), SHA_A, tmp_path / "s1", now=BUILT_AT).artifact
    two = b.build(copy_example_app(tmp_path / "two"), SHA_A, tmp_path / "s2", now=BUILT_AT).artifact
    other_commit = b.build(copy_example_app(tmp_path / "three"), SHA_B, tmp_path / "s3", now=BUILT_AT).artifact
    assert one.sha256 == two.sha256
    assert one.path.read_bytes() == two.path.read_bytes()
    assert other_commit.sha256 != one.sha256


def test_tarball_layout_is_normalised_and_carries_a_manifest(app_artifact):
    raw = app_artifact.path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"      # gzip MTIME field: no build clock in the header
    assert hashlib.sha256(raw).hexdigest() == app_artifact.sha256 and app_artifact.path.name == f"{app_artifact.sha256}.tar.gz"
    with tarfile.open(app_artifact.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        manifest = json.loads(tar.extractfile("RELEASE.json").read())
    assert names[1:] == sorted(names[1:]) and names[0] == "RELEASE.json"   # the manifest first: cheap to read
    # The app tree at the commit plus the build output: what the release runs from.
    assert {"package.json", "server.mjs", "build/server.mjs", "build/build.json", "prisma/schema.prisma",
            "prisma/migrations/migration_lock.toml", "scripts/build.mjs"} <= set(names)
    assert not any(n.startswith("bin/") for n in names)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mtime for m in members} == {int(BUILT_AT.timestamp())}
    modes = {m.name: m.mode for m in members}
    assert modes["build"] == 0o755 and modes["server.mjs"] == 0o644
    assert manifest["git_sha"] == SHA_A and manifest["built_at"] == "2024-03-01T12:00:00Z"
    assert manifest["app"] == "occ-example-app"   # package.json's name: which app the release is
    assert manifest["release_id"] == app_artifact.release_id == "20240301120000-a1b2c3d"
    regular = {m.name for m in members if m.isreg()} - {"RELEASE.json"}
    assert {f["path"] for f in manifest["files"]} == regular
    assert {f["mode"] for f in manifest["files"]} <= {0o644, 0o755}
    assert {(x["path"], x["target"]) for x in manifest["symlinks"]} == {(m.name, m.linkname) for m in members if m.issym()}
    with tarfile.open(app_artifact.path) as tar:
        build_json = json.loads(tar.extractfile("build/build.json").read())
        server = tar.extractfile("build/server.mjs").read()
    entry = next(f for f in manifest["files"] if f["path"] == "build/server.mjs")
    assert entry["sha256"] == hashlib.sha256(server).hexdigest() and entry["size"] == len(server)
    assert build_json["git_sha"] == SHA_A   # GIT_SHA reached the app's own build script


# ---------------------------------------------------------------- failures

def test_missing_node_is_named(example_app, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(ToolMissing, match="`node`"):
        b.build(example_app, SHA_A, tmp_path / "artifacts", env={"PATH": str(empty)})


def test_missing_npm_is_named_when_node_is_there(example_app, tmp_path):
    only_node = tmp_path / "bin"
    only_node.mkdir()
    (only_node / "node").symlink_to(shutil.which("node"))
    with pytest.raises(ToolMissing, match="`npm`") as e:
        b.build(example_app, SHA_A, tmp_path / "artifacts", env={"PATH": str(only_node)})
    assert "npm" in (e.value.hint or "")


def test_failing_build_reports_the_last_lines_and_stores_nothing(example_app, tmp_path):
    _set_build_script(example_app, "node -e \"console.error('step 1 ok'); console.error('boom: cannot find module x'); process.exit(3)\"")
    store = tmp_path / "artifacts"
    with pytest.raises(BuildFailed) as e:
        b.build(example_app, SHA_A, store, now=BUILT_AT)
    assert "npm run build" in str(e.value) and "boom: cannot find module x" in str(e.value)
    assert list(store.glob("*.tar.gz")) == [] and b.find(store, SHA_A) is None


def test_dependencies_without_a_lockfile_are_refused(example_app, tmp_path):
    (example_app / "package-lock.json").unlink()
    pkg = json.loads((example_app / "package.json").read_text())
    pkg["dependencies"] = {"left-pad": "1.3.0"}
    (example_app / "package.json").write_text(json.dumps(pkg))
    with pytest.raises(BuildFailed, match="no lockfile is committed") as e:
        b.build(example_app, SHA_A, tmp_path / "artifacts")
    assert "package-lock.json" in str(e.value)


def test_a_build_writing_a_reserved_name_is_refused(example_app, tmp_path):
    _set_build_script(example_app, "node scripts/build.mjs && node -e \"require('fs').writeFileSync('RELEASE','x')\"")
    with pytest.raises(BuildFailed, match="must not write RELEASE"):
        b.build(example_app, SHA_A, tmp_path / "artifacts", now=BUILT_AT)


def test_unwritable_artifacts_folder_is_named(example_app, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SettingsError, match="the artifacts folder cannot be written") as e:
        b.build(example_app, SHA_A, blocker / "artifacts")
    assert str(blocker / "artifacts") in str(e.value)


def test_not_an_app_folder(tmp_path):
    with pytest.raises(SettingsError, match="no package.json"):
        b.build(tmp_path, SHA_A, tmp_path / "artifacts")


# ---------------------------------------------------------------- the recipe: [app] settings -> commands (data)

from deploy.config import AppSection  # noqa: E402


def _pkg(tmp_path: Path, pkg: dict, *lockfiles: str) -> Path:
    app = tmp_path / "pkg"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(pkg))
    for f in lockfiles:
        (app / f).write_text("")
    return app


FULL = {"dependencies": {"react": "1"}, "devDependencies": {"vite": "1"}, "scripts": {"build": "vite build"}}


@pytest.mark.parametrize("pkg, lockfiles, contract, expected", [
    (FULL, ["package-lock.json"], AppSection(),
     [("npm", "ci", "--no-audit", "--no-fund"), ("npm", "run", "build"), ("npm", "prune", "--omit=dev", "--no-audit", "--no-fund")]),
    (FULL, ["pnpm-lock.yaml"], AppSection(),
     [("pnpm", "install", "--frozen-lockfile"), ("pnpm", "run", "build"), ("pnpm", "prune", "--prod")]),
    (FULL, ["yarn.lock"], AppSection(),
     [("yarn", "install", "--frozen-lockfile"), ("yarn", "run", "build"), ("yarn", "install", "--production", "--frozen-lockfile")]),
    ({"dependencies": {"react": "1"}, "scripts": {"build": "x"}}, ["package-lock.json"], AppSection(),
     [("npm", "ci", "--no-audit", "--no-fund"), ("npm", "run", "build")]),
    ({"scripts": {"build": "x"}}, ["package-lock.json"], AppSection(), [("npm", "run", "build")]),
    ({"dependencies": {"a": "1"}}, ["package-lock.json"], AppSection(), [("npm", "ci", "--no-audit", "--no-fund")]),
    (FULL, ["package-lock.json"], AppSection(install="none", build=("make", "web"), prune="none"), [("make", "web")]),
    (FULL, ["package-lock.json"], AppSection(install=("npm", "ci", "--ignore-scripts"), prune=("true",)),
     [("npm", "ci", "--ignore-scripts"), ("npm", "run", "build"), ("true",)]),
], ids=["npm", "pnpm", "yarn", "no-dev-deps-no-prune", "no-deps-no-install", "no-build-script",
        "custom-build-nothing-else", "custom-install-and-prune"])
def test_recipe_from_the_lockfile_and_the_app_settings(tmp_path, pkg, lockfiles, contract, expected):
    app = _pkg(tmp_path, pkg, *lockfiles)
    assert list(b.recipe(app, contract).commands) == expected


@pytest.mark.parametrize("pkg, yarnrc", [
    ({**FULL, "packageManager": "yarn@4.5.0"}, "nodeLinker: node-modules\n"),
    (FULL, "nodeLinker: \"node-modules\"\nenableTelemetry: false\n"),
], ids=["packageManager", "yarnrc"])
def test_yarn_2_or_later_installs_immutable_and_prunes_with_workspaces_focus(tmp_path, pkg, yarnrc):
    app = _pkg(tmp_path, pkg, "yarn.lock")
    (app / ".yarnrc.yml").write_text(yarnrc)
    plan = b.recipe(app)
    assert plan.commands == (("yarn", "install", "--immutable"), ("yarn", "run", "build"),
                             ("yarn", "workspaces", "focus", "--all", "--production"))
    assert plan.install == plan.commands[0] and plan.prune == plan.commands[-1]


def test_yarn_2_plug_n_play_is_refused_naming_the_settings(tmp_path):
    app = _pkg(tmp_path, {**FULL, "packageManager": "yarn@3.6.4"}, "yarn.lock")
    with pytest.raises(SettingsError, match="Plug'n'Play") as e:
        b.recipe(app)
    assert "nodeLinker: node-modules" in e.value.hint and "[app] install" in e.value.hint
    assert b.recipe(app, AppSection(install=("yarn", "install"), prune=("true",))).commands[-1] == ("true",)
    # yarn 1 stays yarn 1
    (tmp_path / "one").mkdir()
    assert b.recipe(_pkg(tmp_path / "one", {**FULL, "packageManager": "yarn@1.22.19"}, "yarn.lock")).prune == \
        ("yarn", "install", "--production", "--frozen-lockfile")


@pytest.mark.parametrize("contract, pkg, expected", [
    (AppSection(), {"scripts": {"start": "react-router-serve ./build/server/index.js"}},
     ["sh", "-c", "react-router-serve ./build/server/index.js"]),
    (AppSection(start=("node", "build/server.mjs")), {}, ["node", "build/server.mjs"]),
    (AppSection(start=("node", "build/server.mjs")), {"scripts": {"start": "x"}}, ["node", "build/server.mjs"]),
    (AppSection(), {"scripts": {"prestart": "node migrate.js", "start": "node server.js"}},
     ["sh", "-c", "node migrate.js && node server.js"]),
], ids=["start-script-without-npm", "explicit-argv", "explicit-argv-wins", "prestart-first"])
def test_start_argv(contract, pkg, expected):
    assert b.start_argv(contract, pkg, "x") == expected


def test_a_poststart_script_is_refused_naming_it():
    with pytest.raises(SettingsError, match="poststart") as e:
        b.start_argv(AppSection(), {"scripts": {"start": "node s.js", "poststart": "echo done"}}, "releases/r1")
    assert "releases/r1/package.json" in e.value.message and "[app] start" in e.value.hint


def test_no_start_script_is_a_clear_settings_error():
    with pytest.raises(SettingsError, match="no start script") as e:
        b.start_argv(AppSection(), {"scripts": {"build": "x"}}, "releases/r1")
    assert "[app] start" in e.value.hint


def test_include_packs_only_the_named_paths(example_app, tmp_path):
    art = b.build(example_app, SHA_A, tmp_path / "artifacts", now=BUILT_AT,
                  contract=AppSection(include=("build", "package.json"))).artifact
    with tarfile.open(art.path) as tar:
        names = sorted(tar.getnames())
    assert names == ["RELEASE.json", "build", "build/build.json", "build/server.mjs", "package.json"]


def test_include_of_a_path_the_build_did_not_write_is_refused(example_app, tmp_path):
    with pytest.raises(BuildFailed, match="app.include names dist"):
        b.build(example_app, SHA_A, tmp_path / "artifacts", now=BUILT_AT, contract=AppSection(include=("dist",)))


# ---------------------------------------------------------------- the build's environment

def test_the_build_sees_no_deploy_secret_unless_named(example_app, tmp_path):
    """A build script that dumps process.env into its output: the artifact holds no secret."""
    _set_build_script(example_app, "node scripts/build.mjs && node -e \"require('fs').writeFileSync("
                                   "'build/env.json', JSON.stringify(process.env))\"")
    secrets = {"DATABASE_URL": "postgresql://u:hunter2-db@h/db", "SHOPIFY_API_SECRET": "shpss_topsecret77",
               "SHOPIFY_APP_AUTOMATION_TOKEN": "atkn_secret_123", "SESSION_SECRET": "sess-secret-9",
               "npm_config__authToken": "npm-token-xyz", "PUBLIC_FLAG": "visible-1"}
    environ = {**os.environ, **secrets}
    art = b.build(example_app, SHA_A, tmp_path / "artifacts", now=BUILT_AT, env=environ,
                  contract=AppSection(build_env=("PUBLIC_FLAG",))).artifact
    with tarfile.open(art.path) as tar:
        raw = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isreg())
        seen = json.loads(tar.extractfile("build/env.json").read())
    for name, value in secrets.items():
        if name == "PUBLIC_FLAG":
            assert seen[name] == value   # named in app.build_env: passed
        else:
            assert name not in seen and value.encode() not in raw, name
    assert seen["GIT_SHA"] == SHA_A and "PATH" in seen


# ---------------------------------------------------------------- pruning old builds

def test_prune_keeps_the_newest_builds_and_every_protected_one(tmp_path):
    store = tmp_path / "artifacts"
    store.mkdir()
    shas = [f"{i:x}" * 40 for i in range(1, 6)]
    for i, sha in enumerate(shas):
        out = tmp_path / f"out{i}"
        out.mkdir()
        (out / "f.txt").write_text(sha)
        art = b.pack(out, store, git_sha=sha, built_at=f"2024-03-0{i + 1}T00:00:00Z", release_id=f"r{i}")
        artifact.write_index(store, art, b.build_key(sha))
    # An index of the older layout (one build per commit) is never read, and pruned.
    (store / "by-sha").mkdir()
    (store / "by-sha" / f"{shas[4]}.json").write_text(json.dumps({"git_sha": shas[4], "sha256": "0" * 64,
                                                                  "built_at": "2024-01-01T00:00:00Z"}))
    removed = b.prune(store, keep=2, protect=[shas[0]])
    assert sorted(removed) == sorted(b.build_key(sha).name for sha in shas[1:3])
    assert [sha for sha in shas if b.find(store, sha)] == [shas[0], shas[3], shas[4]]
    assert len(list(store.glob("*.tar.gz"))) == 3 and list((store / "by-sha").iterdir()) == []
    assert b.prune(store, keep=2, protect=[shas[0]]) == []


def test_prune_leaves_a_concurrent_runs_pack_and_unindexed_tarball_alone(tmp_path):
    store = tmp_path / "artifacts"
    store.mkdir()
    live = store / f".pack-{os.getpid()}-abc.tar.gz"      # this process is packing it
    dead = store / ".pack-999999999-abc.tar.gz"          # a killed run's leftover
    packed = store / f"{'e' * 64}.tar.gz"                 # packed, its index not written yet
    for f in (live, dead, packed):
        f.write_bytes(b"x")
    (store / "builds").mkdir()
    with ops.lock(store / ".locks" / "store.lock", shared=True):   # what build() holds from pack to index
        b.prune(store, keep=1)
        assert live.exists() and packed.exists() and not dead.exists()
    b.prune(store, keep=1)
    assert live.exists() and not packed.exists()


def test_two_builds_of_the_same_commit_at_once_build_it_once(tmp_path):
    import threading

    from deploy.testing.depsapp import make_deps_app

    app = make_deps_app(tmp_path / "app")
    store = tmp_path / "artifacts"
    gate = threading.Barrier(2)
    results, errors = [], []

    def one():
        gate.wait()
        try:
            results.append(_cache_build(app, store, tmp_path / "cache", deps_cache=False))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].artifact == results[1].artifact and len(list(store.glob("*.tar.gz"))) == 1


def test_source_checkouts_are_pruned_to_the_newest_n_and_the_protected(tmp_path):
    from deploy import source

    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    _git(repo, "init", "-q")
    shas = []
    for i in range(4):
        (repo / "app" / "package.json").write_text(json.dumps({"name": "a", "version": f"1.0.{i}"}))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"v{i}")
        shas.append(_git(repo, "rev-parse", "HEAD").strip())
    dest = tmp_path / "src"
    for i, sha in enumerate(shas):
        app = source.checkout(repo / "app", sha, dest)
        assert json.loads((app / "package.json").read_text())["version"] == f"1.0.{i}"
        os.utime(dest / sha / ".complete", (1_700_000_000 + i, 1_700_000_000 + i))
    (dest / ".abc123-partial").mkdir()      # a checkout another build is still extracting
    removed = source.prune(dest, keep=2, protect=[shas[0]])
    assert sorted(removed) == sorted([shas[1]])
    trash.drain()   # renamed aside at once, deleted in the background (deploy.trash)
    assert sorted(p.name for p in dest.iterdir()) == sorted([shas[0], shas[2], shas[3], ".abc123-partial"])


# ---------------------------------------------------------------- dependency cache

def _entries(cache):
    """The cache's entries (its dot-files are bookkeeping: interrupted fills, tool versions)."""
    return [d for d in cache.iterdir() if not d.name.startswith(".")]


def _cache_build(app, store, cache, **kw):
    from deploy.config import AppSection

    return b.build(app, SHA_A, store, now=BUILT_AT, deps_cache=cache, contract=AppSection(**kw))


def test_dependency_cache_gives_the_same_artifact_as_a_build_without_it(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    plain = _cache_build(make_deps_app(tmp_path / "plain"), tmp_path / "s0", cache, deps_cache=False)
    assert not cache.exists() and plain.commands[0].startswith("npm ci")
    miss = _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    assert miss.commands[0].startswith("npm ci") and len(_entries(cache)) == 1
    hit = _cache_build(make_deps_app(tmp_path / "two"), tmp_path / "s2", cache)
    assert not any(c.startswith("npm ci") for c in hit.commands), hit.commands
    assert hit.commands[0].startswith("(dependency cache") and hit.commands[1:-1] == plain.commands[1:-1]
    # The build left node_modules alone: the entry's production tree replaces the prune.
    assert plain.commands[-1].startswith("npm prune") and hit.commands[-1].endswith("/prod/node_modules node_modules")
    # Byte for byte what a build without the cache packs; the dev dependency is pruned either way.
    assert plain.artifact.sha256 == miss.artifact.sha256 == hit.artifact.sha256
    names = {f["path"] for f in b.read_manifest(hit.artifact)["files"]}
    assert "node_modules/leftpad/index.js" in names and not any(n.startswith("node_modules/devtool") for n in names)
    assert "dist/out.txt" in names


def test_a_changed_lockfile_misses_the_dependency_cache(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    bumped = make_deps_app(tmp_path / "two", version="1.0.1")
    second = _cache_build(bumped, tmp_path / "s2", cache)
    assert second.commands[0].startswith("npm ci")
    assert len(_entries(cache)) == 2
    files = {f["path"]: f for f in b.read_manifest(second.artifact)["files"]}
    assert json.loads(tarfile.open(second.artifact.path).extractfile(
        "node_modules/leftpad/package.json").read())["version"] == "1.0.1"
    assert "node_modules/leftpad/index.js" in files


def test_a_build_that_writes_into_cached_files_drops_the_entry_and_builds_without_it(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    plain = _cache_build(make_deps_app(tmp_path / "plain", damage_cache=True), tmp_path / "s0", cache,
                         deps_cache=False)
    # A cold build's install is linked into its checkout (deploy.build.cache.fill): a build that
    # writes into it ships its own output, and keeps no entry.
    cold = _cache_build(make_deps_app(tmp_path / "cold", damage_cache=True), tmp_path / "sc", cache)
    assert cold.artifact.sha256 == plain.artifact.sha256 and _entries(cache) == []
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)   # same lockfile, a tidy build
    (entry,) = _entries(cache)
    again = _cache_build(make_deps_app(tmp_path / "two", damage_cache=True), tmp_path / "s2", cache)
    assert again.commands[-2:] == plain.commands[-2:] and any(c.startswith("npm ci") for c in again.commands)
    assert again.artifact.sha256 == plain.artifact.sha256
    assert not entry.exists() or cache_entry.entry_ok(entry)   # the damaged entry is gone (or refilled intact)


def test_full_install_after_a_build_links_the_caches_full_entry_and_drops_it_when_written_into(tmp_path):
    from deploy.config import AppSection
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    app = make_deps_app(tmp_path / "app")
    _cache_build(app, tmp_path / "s1", cache)
    assert not (app / "node_modules/devtool").exists()            # the build pruned dev dependencies
    done = b.full_install(app, AppSection(), deps_cache=cache)
    (entry,) = _entries(cache)
    assert done.ran[0].startswith("(dependency cache") and done.entry == entry
    linked = app / "node_modules/devtool/index.js"
    assert linked.stat().st_ino == (entry / "full/node_modules/devtool/index.js").stat().st_ino
    assert b.full_install(app, AppSection(), deps_cache=cache).summary == "dependencies already installed"
    b.check_full_install(done)
    assert entry.exists()                                          # untouched: kept
    with open(linked, "a") as f:                                   # a tool writing through the link
        f.write("// changed\n")
    b.check_full_install(done)
    assert not entry.exists() and not (app / "node_modules").exists()
    # A build in the checkout removes the mark: its prune leaves no full install behind.
    b.full_install(app, AppSection(deps_cache=False))
    _cache_build(app, tmp_path / "s2", cache, deps_cache=False)
    assert not (app / "node_modules" / fullinstall.FULL_MARK).exists()


def test_a_cache_hit_ships_what_this_commits_build_wrote_into_node_modules(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one", schema="model A"), tmp_path / "s1", cache)
    hit = _cache_build(make_deps_app(tmp_path / "two", schema="model B"), tmp_path / "s2", cache)
    assert hit.commands[0].startswith("(dependency cache"), hit.commands
    plain = _cache_build(make_deps_app(tmp_path / "plain", schema="model B"), tmp_path / "s0", cache,
                         deps_cache=False)
    client = tarfile.open(hit.artifact.path).extractfile("node_modules/.gen/client.js").read().decode()
    assert "model B" in client and "model A" not in client
    assert hit.artifact.sha256 == plain.artifact.sha256
    # A new top-level dot-folder is one npm never reads: the production tree is linked and
    # the folder kept in it, as npm's prune keeps it.
    assert hit.commands[-1].endswith("/prod/node_modules node_modules") and plain.commands[-1].startswith("npm prune")


def test_a_cache_hit_links_the_pruned_tree_only_when_the_build_added_nothing_npm_reads(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    (entry,) = _entries(cache)
    prod = entry / "prod" / "node_modules"
    assert (prod / "leftpad/index.js").is_file() and not (prod / "devtool").exists()
    # The production tree shares the full install's files (one copy on disk).
    assert (prod / "leftpad/index.js").stat().st_ino == (entry / "full/node_modules/leftpad/index.js").stat().st_ino
    # Files written into a runtime package (kept by npm's prune), into a dev package (removed
    # with it) and a new package folder (extraneous: removed): only npm's prune knows.
    writes = {"node_modules/leftpad/generated.js": "module.exports = 1;\n",
              "node_modules/devtool/cache.json": "{}\n",
              "node_modules/extra/package.json": '{"name": "extra", "version": "1.0.0"}\n'}
    hit = _cache_build(make_deps_app(tmp_path / "two", build_writes=writes), tmp_path / "s2", cache)
    plain = _cache_build(make_deps_app(tmp_path / "plain", build_writes=writes), tmp_path / "s0", cache,
                         deps_cache=False)
    assert hit.commands[0].startswith("(dependency cache") and hit.commands[-1] == plain.commands[-1]
    assert hit.commands[-1].startswith("npm prune")
    assert hit.artifact.sha256 == plain.artifact.sha256
    names = {f["path"] for f in b.read_manifest(hit.artifact)["files"]}
    assert "node_modules/leftpad/generated.js" in names
    assert not any(n.startswith(("node_modules/devtool/", "node_modules/extra/")) for n in names)
    # The entry is untouched (the build's files were the checkout's own) and still links
    # its production tree for a tidy build.
    tidy = _cache_build(make_deps_app(tmp_path / "three"), tmp_path / "s3", cache)
    assert tidy.commands[-1].endswith("/prod/node_modules node_modules") and cache_entry.entry_ok(entry)


def test_full_install_after_a_build_that_linked_the_production_tree(tmp_path):
    from deploy.config import AppSection
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    app = make_deps_app(tmp_path / "two", schema="model A")
    hit = _cache_build(app, tmp_path / "s2", cache)
    (entry,) = _entries(cache)
    assert hit.commands[-1].endswith("/prod/node_modules node_modules")
    deps = app / "node_modules"
    assert not (deps / "devtool").exists() and (deps / ".gen/client.js").is_file() and not (app / recipes.LINKED).exists()
    assert (deps / "leftpad/index.js").stat().st_ino == (entry / "prod/node_modules/leftpad/index.js").stat().st_ino
    done = b.full_install(app, AppSection(), deps_cache=cache)
    assert done.entry == entry and (deps / "devtool/index.js").stat().st_ino == \
        (entry / "full/node_modules/devtool/index.js").stat().st_ino
    b.check_full_install(done)
    assert entry.exists() and cache_entry.entry_ok(entry)


def test_the_full_tree_a_hit_moved_aside_serves_the_next_hit_only_while_it_is_exactly_the_cached_one(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    plain = _cache_build(make_deps_app(tmp_path / "plain"), tmp_path / "s0", cache, deps_cache=False)
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    (entry,) = _entries(cache)
    spare = entry / cache_entry.SPARE
    # The cold build's install, moved into the entry and linked back, is kept as the spare.
    assert spare.is_dir() and (spare / "devtool/index.js").stat().st_ino == \
        (entry / "full/node_modules/devtool/index.js").stat().st_ino
    first = _cache_build(make_deps_app(tmp_path / "two"), tmp_path / "s2", cache)
    assert first.commands[0].endswith(f"mv {spare} node_modules") and spare.is_dir()
    # Taken by the next hit (a rename), checked, and put back after it.
    app = make_deps_app(tmp_path / "three")
    second = _cache_build(app, tmp_path / "s3", cache)
    assert second.commands[0].endswith(f"mv {spare} node_modules") and spare.is_dir()
    assert not (app / recipes.LINKED).exists()
    # A spare with a stray file, or one file replaced, is found out by the check after the
    # build: that build is dropped and run again on the entry's tree linked anew.
    (spare / "leftpad/stray.js").write_text("// left by someone\n")
    third = _cache_build(make_deps_app(tmp_path / "four"), tmp_path / "s4", cache)
    os.unlink(spare / "leftpad/index.js")
    (spare / "leftpad/index.js").write_text("module.exports = () => 'other';\n")
    fourth = _cache_build(make_deps_app(tmp_path / "five"), tmp_path / "s5", cache)
    for r in (third, fourth):
        redo = next(i for i, c in enumerate(r.commands) if "not the cached tree after the build" in c)
        assert r.commands[redo + 1].endswith(f"cp -al {entry / 'full' / 'node_modules'} node_modules"), r.commands
    for r in (first, second, third, fourth):
        assert r.commands[0].startswith("(dependency cache") and r.commands[-1].endswith("/prod/node_modules node_modules")
        assert r.artifact.sha256 == plain.artifact.sha256
    # Written through one of its links, the cache itself changed: the entry is dropped and refilled.
    with open(spare / "leftpad/index.js", "a") as f:
        f.write("// changed in place\n")
    again = _cache_build(make_deps_app(tmp_path / "six"), tmp_path / "s6", cache)
    redo = next(i for i, c in enumerate(again.commands) if "changed during the build" in c)
    assert again.commands[redo + 1].startswith("npm ci") and again.artifact.sha256 == plain.artifact.sha256
    assert cache_entry.entry_ok(entry) and (spare / "leftpad/index.js").stat().st_ino == \
        (entry / "full/node_modules/leftpad/index.js").stat().st_ino   # the refill's own install is the new spare


def test_a_cache_hit_with_another_package_json_prunes_in_the_checkout(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    def bumped(dest):   # same lockfile and dependencies (same key), another version in package.json
        app = make_deps_app(dest)
        pkg = json.loads((app / "package.json").read_text())
        (app / "package.json").write_text(json.dumps({**pkg, "version": "0.2.0"}, indent=2) + "\n")
        return app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    hit = _cache_build(bumped(tmp_path / "two"), tmp_path / "s2", cache)
    plain = _cache_build(bumped(tmp_path / "plain"), tmp_path / "s0", cache, deps_cache=False)
    assert hit.commands[0].startswith("(dependency cache") and hit.commands[-1].startswith("npm prune")
    assert hit.artifact.sha256 == plain.artifact.sha256


def test_a_cache_hit_with_other_npm_settings_in_its_environment_prunes_in_the_checkout(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    env = {**os.environ, "npm_config_loglevel": "warn"}   # npm reads it; the entry was pruned without it
    hit = b.build(make_deps_app(tmp_path / "two"), SHA_A, tmp_path / "s2", now=BUILT_AT, deps_cache=cache, env=env)
    assert hit.commands[0].startswith("(dependency cache") and hit.commands[-1].startswith("npm prune")
    same = b.build(make_deps_app(tmp_path / "three"), SHA_A, tmp_path / "s3", now=BUILT_AT, deps_cache=cache)
    assert same.commands[-1].endswith("/prod/node_modules node_modules")
    assert hit.artifact.sha256 == same.artifact.sha256


def test_a_damaged_production_tree_is_not_linked_and_its_entry_is_refilled(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    plain = _cache_build(make_deps_app(tmp_path / "plain"), tmp_path / "s0", cache, deps_cache=False)
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)
    (entry,) = _entries(cache)
    (entry / "prod/node_modules/leftpad/stray.js").write_text("// not from npm\n")
    hit = _cache_build(make_deps_app(tmp_path / "two"), tmp_path / "s2", cache)
    assert hit.commands[0].startswith("(dependency cache") and hit.commands[-1].startswith("npm prune")
    assert hit.artifact.sha256 == plain.artifact.sha256
    assert not entry.exists()
    again = _cache_build(make_deps_app(tmp_path / "three"), tmp_path / "s3", cache)
    assert again.commands[0].startswith("npm ci") and cache_entry.entry_ok(entry) and (entry / "prod").is_dir()


def test_tool_versions_are_kept_per_binary_and_asked_again_when_it_changes(tmp_path):
    # The machine's npm, its folder hard-linked here with its package.json and entry script
    # copied (so rewriting them leaves the machine's npm alone); node is the machine's.
    real = Path(os.path.realpath(shutil.which("npm"))).parent.parent
    pkg = tmp_path / "lib/npm"
    pkg.parent.mkdir()
    subprocess.run(["cp", "-al", str(real), str(pkg)], check=True)
    for rel in ("package.json", "bin/npm-cli.js"):
        data, mode = (pkg / rel).read_bytes(), (pkg / rel).stat().st_mode
        (pkg / rel).unlink()
        (pkg / rel).write_bytes(data)
        os.chmod(pkg / rel, mode)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "npm").symlink_to(pkg / "bin/npm-cli.js")
    env = {"PATH": f"{bindir}:{os.path.dirname(shutil.which('node'))}:/usr/bin:/bin"}
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    npm = subprocess.run([str(bindir / "npm"), "--version"], capture_output=True, text=True, env=env).stdout.strip()
    plan = b.Recipe(pm="npm", commands=(b.INSTALL["npm"],), include=(), install=b.INSTALL["npm"])
    root = tmp_path / "cache"
    assert cachekey.tool_versions(plan, env, root) == {"node": node, "npm": npm}
    # Kept per binary, and what is kept is what is answered: no tool is asked again.
    saved = json.loads((root / cachekey.TOOLS_FILE).read_text())
    saved["node"]["version"], saved["npm"]["version"] = "v0.0.0-kept", "0.0.0-kept"
    (root / cachekey.TOOLS_FILE).write_text(json.dumps(saved))
    assert cachekey.tool_versions(plan, env, root) == {"node": "v0.0.0-kept", "npm": "0.0.0-kept"}
    # npm's package.json rewritten (an upgrade in place): npm is asked again; node's answer stays.
    (pkg / "package.json").write_bytes((pkg / "package.json").read_bytes())
    assert cachekey.tool_versions(plan, env, root) == {"node": "v0.0.0-kept", "npm": npm}
    assert cachekey.tool_versions(plan, env) == {"node": node, "npm": npm}   # no cache folder: both asked


@pytest.mark.parametrize("size", [0, 5, (1 << 20) - 1, 1 << 20, (3 << 20) + 12345], ids=lambda n: f"{n}-bytes")
def test_parallel_gzip_is_one_gzip_stream_whatever_the_threads_and_the_cuts(size):
    import gzip
    import io
    import random

    rnd = random.Random(size)
    data = bytes(rnd.getrandbits(8) for _ in range(min(size, 4096))) * (size // 4096 + 1)
    data = (data[:size // 2] + b"abc" * size)[:size]   # incompressible and repetitive parts

    def packed(workers, cuts):
        out = io.BytesIO()
        with packing.gzip_writer(out, compresslevel=1, threads=workers) as gz:
            i = 0
            while i < len(data):
                n = cuts[i % len(cuts)]
                gz.write(data[i:i + n])
                i += n
        return out.getvalue()

    one = packed(1, [1 << 22])
    assert gzip.decompress(one) == data
    assert packed(3, [1, 511, 16384, 70000]) == one == packed(2, [1 << 20])
    assert one[:8] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00"   # no name, no time
    with gzip.GzipFile(fileobj=io.BytesIO(one)) as f:   # a streaming reader too
        assert f.read() == data


def test_pack_streams_a_manifest_first_tarball_that_hashes_to_its_name(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a/big.bin").write_bytes(os.urandom(3 << 20) + b"x" * (5 << 20))   # several blocks
    (tree / "small.txt").write_text("hello\n")
    store = tmp_path / "store"
    store.mkdir()
    art = b.pack(tree, store, git_sha=SHA_A, built_at="2024-03-01T00:00:00Z", release_id="r1")
    assert hashlib.sha256(art.path.read_bytes()).hexdigest() == art.sha256 == art.path.name[:64]
    with tarfile.open(art.path, "r:gz") as tar:
        names = tar.getnames()
        assert names[0] == b.MANIFEST and tar.extractfile("a/big.bin").read() == (tree / "a/big.bin").read_bytes()
    assert b.pack(tree, store, git_sha=SHA_A, built_at="2024-03-01T00:00:00Z", release_id="r1") == art


def test_an_entry_dropped_because_a_build_wrote_into_it_is_filled_again(tmp_path):
    from deploy.testing.depsapp import make_deps_app

    cache = tmp_path / "cache"
    _cache_build(make_deps_app(tmp_path / "one"), tmp_path / "s1", cache)   # filled by a tidy build
    (entry,) = _entries(cache)
    again = _cache_build(make_deps_app(tmp_path / "two", damage_cache=True), tmp_path / "s2", cache)
    assert any(c.startswith("npm ci") for c in again.commands)
    # The build that dropped it wrote into its own fresh install too (linked into the checkout,
    # deploy.build.cache.fill): that install is not kept; the next tidy build fills the entry.
    assert not entry.exists()
    refill = _cache_build(make_deps_app(tmp_path / "refill"), tmp_path / "sr", cache)
    assert refill.commands[0].startswith("npm ci") and cache_entry.entry_ok(entry)
    third = _cache_build(make_deps_app(tmp_path / "three"), tmp_path / "s3", cache)   # same key, a tidy build
    assert third.commands[0].startswith("(dependency cache") and cache_entry.entry_ok(entry)


def test_dependency_cache_keeps_the_most_recently_used_entries(tmp_path):
    import os
    import time

    root = tmp_path / "cache"
    for i, name in enumerate(["a" * 64, "b" * 64, "c" * 64]):
        (root / name).mkdir(parents=True)
        (root / name / "used").write_text("")
        os.utime(root / name / "used", (time.time() - 100 + i, time.time() - 100 + i))
    (root / ".fill-dead-999999999").mkdir()
    removed = b.prune_deps_cache(root, keep=1, protect=["a" * 64])
    assert removed == ["b" * 64]
    trash.drain()
    assert sorted(p.name for p in root.iterdir()) == ["a" * 64, "c" * 64]


def test_the_npm_context_of_a_pruned_tree_leaves_credentials_out(tmp_path):
    """What decides whether a cached production tree still fits: npm's settings, never its
    credentials, not even as a hash (a short token's hash can be guessed)."""
    home = tmp_path / "home"
    home.mkdir()
    npmrc = home / ".npmrc"
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "npm_config_registry": "https://r.example/"}

    def context(env: dict, rc: str) -> str:
        npmrc.write_text(rc)
        return cachekey.npm_context(env)

    plain = context(base, "fund=false\n")
    assert context({**base, "npm_config__authToken": "1", "NPM_TOKEN": "2"}, "fund=false\n") == plain
    assert context(base, "fund=false\n//r.example/:_authToken=3\n_password=4\n") == plain
    assert context({**base, "npm_config_omit": "optional"}, "fund=false\n") != plain     # a setting counts
    assert context(base, "fund=false\nlegacy-peer-deps=true\n") != plain                # so does an npmrc line
