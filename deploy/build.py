"""Build the app once per commit and pack it into a content-addressed artifact.

    artifacts/
      <sha256>.tar.gz          the packed app plus RELEASE.json; named by its own hash
      builds/<key>.json        index: which tarball holds the build of `BuildKey` <key>
                               (<git sha>-<digest of the app folder and the release contract>)

What is built and packed is the `[app]` release contract (config.AppSection): in the
commit's checkout, the package manager's clean install, the build script, then the
devDependencies pruned; the artifact holds the app tree at the commit, the build output
and the production node_modules, installed once here, so the bytes staging proved are
the bytes production runs. The build gets an explicit environment (`build_environment`):
no deploy secret reaches a build script unless `app.build_env` names it.

A build is keyed by what it is made from (`BuildKey`): the commit, the app folder in the
repository and the build part of the release contract, so two apps of one repository, or
one app under two contracts, never share a build. Each is built at most once: `build()`
first looks the key up in the index and reuses the tarball if its hash still verifies. The tarball is reproducible (sorted
entries, fixed owner, modes and mtimes, gzip header without a timestamp, as
reproducible-builds.org's "archives" advice says; deflated in fixed 1 MiB blocks, see
`_GzipWriter`), so the same build output always has
the same SHA-256, and production can insist on the exact bytes staging tested.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from deploy import proc
from deploy.config import AppSection
from deploy.errors import BuildFailed, DeployError, SettingsError
from deploy.parallel import pmap

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
    _check_sha(git_sha)
    return BuildKey(git_sha, os.path.normpath(app_folder), contract_digest(contract))


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


# ---------------------------------------------------------------- the recipe (pure)

# Lockfile -> package manager, in the order npm itself would prefer them.
LOCKFILES = (("package-lock.json", "npm"), ("npm-shrinkwrap.json", "npm"),
             ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"))
INSTALL = {
    # ci / --frozen-lockfile: the lockfile is the truth and is never rewritten by a deploy.
    "npm": ("npm", "ci", "--no-audit", "--no-fund"),
    "pnpm": ("pnpm", "install", "--frozen-lockfile"),
    "yarn": ("yarn", "install", "--frozen-lockfile"),
}
PRUNE = {
    "npm": ("npm", "prune", "--omit=dev", "--no-audit", "--no-fund"),
    "pnpm": ("pnpm", "prune", "--prod"),
    "yarn": ("yarn", "install", "--production", "--frozen-lockfile"),   # yarn 1 has no prune
}
# Yarn 2+ ("berry"): no `--production` install; `workspaces focus` drops devDependencies
# (built in from yarn 4, the workspace-tools plugin before).
YARN_BERRY_INSTALL = ("yarn", "install", "--immutable")
YARN_BERRY_PRUNE = ("yarn", "workspaces", "focus", "--all", "--production")
# Never shipped: git metadata, deploy.source's checkout marker, and the full node_modules a
# cache hit moves aside while it links in the production tree (`_swap_in_prod`).
LINKED = ".deploy-linked-node_modules"
SKIP_TOP = (".git", ".complete", LINKED)


@dataclass(frozen=True)
class Recipe:
    """What building one app runs, as data: each command an argv run in the app folder."""

    pm: str | None                          # npm | pnpm | yarn, None when there is nothing to install
    commands: tuple[tuple[str, ...], ...]   # install, build, prune, in order
    include: tuple[str, ...]                # what the artifact holds, relative to the app folder; () = all
    install: tuple[str, ...] = ()           # commands[0] when the recipe installs dependencies
    prune: tuple[str, ...] = ()             # commands[-1] when the recipe prunes them after the build
    generate: tuple[str, ...] = ()          # the generate command (after the install) when there is one
    # node_modules entries the build writes anew (Prisma's client): a dependency cache entry
    # never holds them, so a cache hit ships this commit's, never one generated for another.
    generated: tuple[str, ...] = ()


def package_json(app_dir: str | Path) -> dict:
    """The app's package.json as a dict; BuildFailed naming the file when it cannot be read."""
    f = Path(app_dir) / "package.json"
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{Path(app_dir)}: no package.json, so there is no app to build here.",
                            "Set environment.app_dir in env/<name>.toml to the app's folder.") from None
    except (OSError, ValueError) as e:
        raise BuildFailed(f"{f} cannot be read: {e}.", "Fix package.json and commit it.") from None
    if not isinstance(data, dict):
        raise BuildFailed(f"{f} is not a JSON object.", "Fix package.json and commit it.")
    return data


def app_name(app_dir: str | Path, folder: str | Path | None = None) -> str:
    """The app's identity in its releases: package.json's name, else the name of `folder`
    (default `app_dir`). A build of a commit's checkout passes the configured app folder:
    the checkout's own folder (.deploy/src/<sha>) would make every commit another app."""
    try:
        name = package_json(app_dir).get("name")
    except (SettingsError, BuildFailed):
        name = None
    name = name if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9@/._-]{1,214}", name or "") else ""
    return name or Path(folder if folder is not None else app_dir).resolve().name


def package_manager(app_dir: str | Path) -> str | None:
    """npm, pnpm or yarn, from the committed lockfile; None when there is none."""
    for name, pm in LOCKFILES:
        if (Path(app_dir) / name).is_file():
            return pm
    return None


def yarn_berry(app_dir: str | Path, pkg: dict) -> bool:
    """Yarn 2 or later: `packageManager: yarn@2+` in package.json, or a .yarnrc.yml."""
    pm = pkg.get("packageManager")
    m = re.match(r"yarn@(\d+)", pm) if isinstance(pm, str) else None
    if m:
        return int(m.group(1)) >= 2
    return (Path(app_dir) / ".yarnrc.yml").is_file()


def _yarn_berry_linker_ok(app: Path) -> None:
    """Plug'n'Play (yarn 2+'s default linker) leaves no node_modules to ship: refuse it."""
    try:
        text = (app / ".yarnrc.yml").read_text(encoding="utf-8")
    except OSError:
        text = ""
    if not re.search(r"^nodeLinker:\s*[\"']?(node-modules|pnpm)[\"']?\s*$", text, re.M):
        raise SettingsError(
            f"{app}: yarn 2+ installs with Plug'n'Play here (no nodeLinker: node-modules in .yarnrc.yml), "
            "which leaves no node_modules for the release to run from.",
            "Add `nodeLinker: node-modules` to .yarnrc.yml and commit it, or set [app] install and "
            "[app] prune in env/<name>.toml to the commands that build a shippable app.")


# ---------------------------------------------------------------- generated code (Prisma)
#
# Code generated from the app's own files is built from more than the lockfile: Prisma's
# client from its schema (by `prisma generate`, and by @prisma/client's install step up to
# Prisma 6), anything else by the app's install scripts. These say which files that is.

PRISMA_CONFIGS = tuple(f"{base}.{ext}" for base in ("prisma.config", ".config/prisma")
                       for ext in ("ts", "mts", "cts", "js", "mjs", "cjs"))
PRISMA_SCHEMAS = ("prisma/schema.prisma", "schema.prisma", "prisma/schema")   # Prisma's defaults
PRISMA_GENERATE = ("node_modules/.bin/prisma", "generate")   # the app's own CLI, as its lockfile installed it
PRISMA_CLIENT_DIR = ".prisma"   # in node_modules: where prisma-client-js writes the client by default
_CONFIG_SCHEMA = re.compile(r"""\bschema\s*:\s*(["'`])([^"'`$]+)\1""")
_RUNS_GENERATE = re.compile(r"\bprisma\b[^&|;\n]*\bgenerate\b")
_RUNS_SCRIPT = re.compile(r"\b(?:npm|pnpm|yarn|bun)\s+(?:run(?:-script)?\s+)?([A-Za-z0-9:_.-]+)")
_SKIP_DIRS = frozenset({"node_modules", ".git"})


def _inside(app: Path, rel: str) -> str | None:
    """`rel` normalised, when it is a path inside the app folder; else None."""
    if not isinstance(rel, str) or not rel.strip() or os.path.isabs(rel):
        return None
    p = os.path.normpath(rel.strip())
    return None if p == "." or p == ".." or p.startswith("../") else p


def _files_under(app: Path, rel: str, suffix: str = "") -> list[str]:
    """`rel` when it is a file; every file under it (ending in `suffix`) when it is a folder,
    node_modules and .git aside; relative to the app folder, sorted."""
    top = app / rel
    if top.is_file():
        return [rel]
    out = []
    if top.is_dir():
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            out += [os.path.relpath(os.path.join(dirpath, f), app) for f in filenames if f.endswith(suffix)]
    return sorted(out)


def prisma_schema_files(app_dir: str | Path, pkg: dict | None = None) -> list[str]:
    """The app's Prisma schema files (relative to it, sorted), wherever Prisma may read them:
    the `schema` a prisma.config.* names (a string literal), package.json's "prisma.schema",
    and the defaults prisma/schema.prisma, schema.prisma and the prisma/schema/ folder (a
    folder: every *.prisma under it). All that exist, not only the one Prisma picks: each
    may be what generates the client. A config that names its schema some other way (an
    expression): every *.prisma in the app."""
    app = Path(app_dir)
    pkg = package_json(app) if pkg is None else pkg
    named: list[str] = []
    unreadable = False
    for cfg in PRISMA_CONFIGS:
        try:
            text = (app / cfg).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = [m.group(2) for m in _CONFIG_SCHEMA.finditer(text)]
        named += found
        unreadable = unreadable or (not found and re.search(r"\bschema\s*:", text) is not None)
    section = pkg.get("prisma")
    if isinstance(section, dict) and isinstance(section.get("schema"), str):
        named.append(section["schema"])
    if unreadable:
        return _files_under(app, ".", ".prisma") if (app / ".").is_dir() else []
    out: set[str] = set()
    for rel in (*named, *PRISMA_SCHEMAS):
        p = _inside(app, rel)
        if p is not None:
            out.update(_files_under(app, p, "" if (app / p).is_file() else ".prisma"))
    return sorted(out)


def scripts_reached(scripts: Mapping, names: Iterable[str]) -> dict[str, str]:
    """The package.json scripts that running `names` runs: each, its pre/post scripts, and
    the scripts those run in turn (`npm run X`, `pnpm X`, `yarn X`), by name."""
    out: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        for n in (name, f"pre{name}", f"post{name}"):
            v = scripts.get(n)
            if isinstance(v, str) and n not in out:
                out[n] = v
                todo += [x for x in _RUNS_SCRIPT.findall(v) if x in scripts]
    return out


def named_files(app_dir: str | Path, commands: Iterable[str]) -> dict[str, str]:
    """sha256 of every file of the app a command line names (a word, or a `--flag=value`'s
    value, that is a path inside the app; a folder: its files), node_modules aside (the
    lockfile covers it): what an install script reads, as far as its words tell."""
    app = Path(app_dir)
    out: dict[str, str] = {}
    for text in commands:
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        for w in words:
            p = _inside(app, w.split("=", 1)[1] if w.startswith("-") and "=" in w else w)
            if p is None or p.split("/", 1)[0] in _SKIP_DIRS or not (app / p).exists():
                continue
            for f in _files_under(app, p):
                out.setdefault(f, sha256_file(app / f))
    return out


def generated_inputs(app_dir: str | Path, pkg: dict | None = None) -> dict[str, str]:
    """sha256 of the files code is generated from at install, by path: the Prisma schema
    files, prisma.config.*, and the files the install lifecycle scripts (and the scripts
    they run) name. Part of the dependency cache key (`deps_key`)."""
    app = Path(app_dir)
    pkg = package_json(app) if pkg is None else pkg
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    out = {rel: sha256_file(app / rel) for rel in prisma_schema_files(app, pkg)}
    out.update({cfg: sha256_file(app / cfg) for cfg in PRISMA_CONFIGS if (app / cfg).is_file()})
    out.update(named_files(app, scripts_reached(scripts, _INSTALL_SCRIPTS).values()))
    return dict(sorted(out.items()))


def _generate_step(app: Path, pkg: dict, c: AppSection) -> tuple[tuple[str, ...], bool]:
    """(the generate argv or (), whether the build writes Prisma's client anew) under the
    contract's `generate` (see AppSection)."""
    if c.generate == "none":
        return (), False
    if isinstance(c.generate, tuple):
        return tuple(c.generate), bool(_RUNS_GENERATE.search(shlex.join(c.generate)))
    if not prisma_schema_files(app, pkg):
        return (), False
    deps = {k: v for f in ("dependencies", "devDependencies", "optionalDependencies")
            if isinstance(pkg.get(f), dict) for k, v in pkg[f].items()}
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}

    def runs_generate(argvs: Iterable[tuple[str, ...]], names: Iterable[str]) -> bool:
        texts = [shlex.join(a) for a in argvs]
        reached = [n for t in texts for n in _RUNS_SCRIPT.findall(t) if n in scripts]
        texts += scripts_reached(scripts, [*names, *reached]).values()
        return any(_RUNS_GENERATE.search(t) for t in texts)

    if runs_generate([c.build] if isinstance(c.build, tuple) else [], ["build"] if c.build == "auto" else []):
        return (), True     # the build generates: its own output is the client
    if runs_generate([c.install] if isinstance(c.install, tuple) else [], _INSTALL_SCRIPTS):
        return (), False    # the install generates (and the cache key holds the schema)
    if "prisma" in deps:
        return PRISMA_GENERATE, True
    if "@prisma/client" in deps:
        raise SettingsError(
            f"{app}/package.json depends on @prisma/client but not on prisma, and nothing in the build runs "
            "`prisma generate`: the release would ship whatever client the install left.",
            "Add prisma to devDependencies (the build then runs node_modules/.bin/prisma generate), or set "
            '[app] generate = [...] in env/<name>.toml to the command that generates it ("none" if the build does).')
    return (), False


def recipe(app_dir: str | Path, contract: AppSection | None = None) -> Recipe:
    """The commands a fresh build of `app_dir` runs under the `[app]` contract."""
    c = contract or AppSection()
    app = Path(app_dir)
    pkg = package_json(app)
    pm = package_manager(app)
    deps = any(pkg.get(k) for k in ("dependencies", "devDependencies", "optionalDependencies"))
    cmds: list[tuple[str, ...]] = []
    installed = False
    pruned = False
    if c.install == "auto":
        if deps:
            if pm is None:
                raise BuildFailed(
                    f"{app}/package.json declares dependencies but no lockfile is committed "
                    "(package-lock.json, pnpm-lock.yaml or yarn.lock).",
                    "Run your package manager's install (e.g. `npm install`) and commit the lockfile: "
                    "a deploy builds only from a lockfile.",
                )
            berry = pm == "yarn" and yarn_berry(app, pkg)
            if berry:
                _yarn_berry_linker_ok(app)
            cmds.append(YARN_BERRY_INSTALL if berry else INSTALL[pm])
            installed = True
    elif c.install != "none":
        cmds.append(tuple(c.install))
        installed = True
    gen, regenerates = _generate_step(app, pkg, c)
    if gen:
        cmds.append(gen)
    if c.build == "auto":
        if isinstance(pkg.get("scripts"), dict) and pkg["scripts"].get("build"):
            cmds.append((pm or "npm", "run", "build"))
    elif c.build != "none":
        cmds.append(tuple(c.build))
    if c.prune == "auto":
        if installed and pm and pkg.get("devDependencies"):
            if pm == "yarn" and yarn_berry(app, pkg):
                cmds.append(YARN_BERRY_PRUNE)
            else:
                cmds.append(PRUNE[pm])
            pruned = True
    elif c.prune != "none":
        cmds.append(tuple(c.prune))
        pruned = True
    return Recipe(pm=pm, commands=tuple(cmds), include=tuple(c.include),
                  install=cmds[0] if installed else (), prune=cmds[-1] if pruned else (), generate=gen,
                  generated=(PRISMA_CLIENT_DIR,) if regenerates else ())


def start_command(contract: AppSection | None, release_dir: str | Path, where: str = "") -> list[str]:
    """The argv that starts the release in `release_dir` (see `start_argv`; `where` names
    the folder in messages)."""
    try:
        pkg = package_json(release_dir)
    except (SettingsError, BuildFailed):
        pkg = {}   # start_argv says what is missing when the start needs package.json
    return start_argv(contract or AppSection(), pkg, where or str(release_dir))


def start_argv(contract: AppSection, pkg: dict, where: str) -> list[str]:
    """`app.start`, or the package.json `start` script run as `sh -c SCRIPT`: what `npm run
    start` runs, minus npm, so the app is the process the toolkit supervises and signals
    reach node, not an npm wrapper (node_modules/.bin goes first on PATH, as npm puts it).
    No start script is an error, locally and on hosts alike (npm's `node server.js`
    fallback is not guessed)."""
    if isinstance(contract.start, tuple):
        return list(contract.start)
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    script = scripts.get("start")
    if isinstance(script, str) and script.strip():
        if isinstance(scripts.get("poststart"), str) and scripts["poststart"].strip():
            raise SettingsError(
                f"{where}/package.json has a poststart script, which `npm start` runs only after the app "
                "exits; the toolkit supervises the start script itself and would never run it.",
                'Move poststart\'s work into the build or the start script, or set [app] start = [...] in '
                "env/<name>.toml.")
        pre = scripts.get("prestart")
        if isinstance(pre, str) and pre.strip():
            return ["sh", "-c", f"{pre} && {script}"]   # as `npm start` runs prestart first
        return ["sh", "-c", script]
    raise SettingsError(
        f"{where}/package.json has no start script, so the toolkit does not know how to start the app.",
        'Add "start" to package.json scripts, or set [app] start = ["node", "build/server.js"] in env/<name>.toml.',
    )


def start_path(release_dir: str | Path, path: str) -> str:
    """PATH for the started app: node_modules/.bin first, as npm run sets it."""
    return f"{Path(release_dir) / 'node_modules' / '.bin'}:{path}"


def build_environment(environ: Mapping[str, str], contract: AppSection | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build's explicit environment: the minimal base (PATH, HOME, locale, TMPDIR, proxies,
    CA files, npm_config_* without credentials), NODE_ENV when set, the names in
    `app.build_env`, and `extra`. Never a deploy secret the settings do not name."""
    c = contract or AppSection()
    names = ("NODE_ENV", *c.build_env)
    return proc.child_env(environ, names, extra)


# ---------------------------------------------------------------- build

def build_commands(app_dir: str | Path, contract: AppSection | None = None) -> list[list[str]]:
    """The commands a fresh build runs in `app_dir`, as data."""
    return [list(c) for c in recipe(app_dir, contract).commands]


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
    _check_sha(git_sha)
    key = key or build_key(git_sha, ".", contract)
    if key.git_sha != git_sha or key.contract != contract_digest(contract):
        raise ValueError(f"build key {key} is not a key of {git_sha} under this contract")
    app = Path(app_dir).resolve()
    store = _writable_dir(Path(artifacts_dir))
    existing = find(store, key)
    if existing is not None:
        return BuildResult(existing, True, time.monotonic() - started)
    # One build per key at a time: builds of a key share its checkout (.deploy/src/<key>),
    # so a second runner waits, then reuses what the first one packed.
    with _lock(store / ".locks" / f"{key.name}.lock"):
        existing = find(store, key)
        if existing is not None:
            return BuildResult(existing, True, time.monotonic() - started)
        return _build_unlocked(app, git_sha, store, contract, env, now, timeout, deps_cache, app_folder,
                               artifacts_dir, started, key)


def _build_unlocked(app, git_sha, store, contract, env, now, timeout, deps_cache, app_folder, artifacts_dir,
                    started, key) -> BuildResult:
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
    cache_root = None
    if contract.deps_cache and plan.install:
        cache_root = Path(deps_cache) if deps_cache is not None else deps_cache_dir(artifacts_dir)
    (app / DEPS / FULL_MARK).unlink(missing_ok=True)   # the build prunes: no longer the full install
    if (app / LINKED).exists():   # left by a killed build (never packed)
        _fs(["rm", "-rf", str(app / LINKED)], "clearing an interrupted build")
    later: list[threading.Thread] = []   # clean-ups that may overlap the pack (_swap_in_prod)
    known: dict[tuple[int, int, int, int], str] = {}   # sha256 of files linked from the cache
    try:
        try:
            ran = _run_recipe(app, plan, child_env, limit, cache_root, contract.keep_builds, later=later, known=known)
            if cache_root is not None:   # bounded by size too (one entry is hundreds of MB)
                prune_deps_cache_to_size(cache_root, contract.cache_max_mb)
        except BuildFailed:
            if cache_root is not None and (app / DEPS).is_dir():
                # The failed build's install is in the cache (`_keep_install`): the checkout need not
                # keep hundreds of MB, and a retry in it links the cache instead of a second `npm ci`
                # (an existing node_modules is never taken for the cache's).
                _fs(["rm", "-rf", str(app / DEPS)], "removing a failed build's node_modules")
            raise
        for rel in plan.include:
            if not (app / rel).exists():
                raise BuildFailed(f"app.include names {rel}, but the build left no {app / rel}.",
                                  "Make the build write it, or remove it from [app] include.")
        with _lock(store / ".locks" / "store.lock", shared=True):   # prune leaves an unindexed tarball alone meanwhile
            artifact = pack(app, store, git_sha=git_sha, built_at=built_at, release_id=new_release_id(git_sha, built),
                            include=plan.include, app=app_name(app, app_folder), known_sha256=known,
                            source={"app_folder": key.app_folder, "contract": key.contract})
            _write_index(store, artifact, key)
    finally:
        for t in later:
            t.join()
    return BuildResult(artifact, False, time.monotonic() - started, tuple(ran))


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
    with _lock(store / ".locks" / "store.lock", wait=False) as free:
        if free:
            for tar in store.glob("*.tar.gz"):
                if not tar.name.startswith(".") and tar.name[:-len(".tar.gz")] not in live_tars:
                    tar.unlink(missing_ok=True)
    for tmp in store.glob(".pack-*"):
        pid = tmp.name.split("-")[1] if tmp.name.count("-") >= 2 else ""
        if not pid.isdigit() or not proc.pid_alive(int(pid)):   # never a running pack's
            tmp.unlink(missing_ok=True)
    return [Path(index).stem for _, index, _, _, legacy in doomed if not legacy]


@contextlib.contextmanager
def _lock(path: Path, *, shared: bool = False, wait: bool = True):
    """An flock on `path` (created); yields False when `wait` is off and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


# ---------------------------------------------------------------- dependency cache

# What an install depends on besides the lockfile: the package.json fields npm/pnpm/yarn
# read when installing (a dependency list out of step with the lockfile must still fail
# like `npm ci` fails), and the root package's install lifecycle scripts.
_INSTALL_FIELDS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies",
                   "peerDependenciesMeta", "bundleDependencies", "bundledDependencies", "overrides",
                   "resolutions", "workspaces", "engines", "os", "cpu", "packageManager", "pnpm")
_INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepare", "preprepare", "postprepare")
_INSTALL_CONFIG = (".npmrc", ".yarnrc", ".yarnrc.yml", "pnpm-workspace.yaml", ".pnpmfile.cjs")
DEPS = "node_modules"
FULL_MARK = ".deploy-full-install"   # in node_modules/: `full_install` finished here


def deps_cache_dir(artifacts_dir: str | Path) -> Path:
    """The build's default dependency cache folder: <artifacts_dir>/../cache/deps."""
    return Path(artifacts_dir).parent / "cache" / "deps"


def deps_key(app_dir: str | Path, plan: Recipe, tool_versions: Mapping[str, str]) -> str | None:
    """The dependency cache key of `app_dir` under `plan` (sha256 hex), or None when the app
    has no lockfile. Same key = same installed node_modules: the lockfile, the install-relevant
    package.json fields, the install scripts (and those they run), the package manager's config
    files, the files code is generated from at install (`generated_inputs`: the Prisma schema,
    prisma.config.*, files the install scripts name), the install and prune argv, what the
    entry leaves out (`Recipe.generated`), the platform and architecture, and the node and
    package manager versions (`tool_versions`). Only inputs are read, never node_modules."""
    app = Path(app_dir)
    lock = next((app / name for name, _ in LOCKFILES if (app / name).is_file()), None)
    if lock is None or not plan.install:
        return None
    pkg = package_json(app)
    scripts = pkg.get("scripts") if isinstance(pkg.get("scripts"), dict) else {}
    facts = {
        "lockfile": [lock.name, sha256_file(lock)],
        "package": {k: pkg[k] for k in _INSTALL_FIELDS if k in pkg},
        "scripts": scripts_reached(scripts, _INSTALL_SCRIPTS),
        "config": {n: sha256_file(app / n) for n in _INSTALL_CONFIG if (app / n).is_file()},
        "generated_from": generated_inputs(app, pkg),
        "install": list(plan.install),
        "prune": list(plan.prune),
        "left_out": list(plan.generated),
        "platform": [os.uname().sysname, os.uname().machine],
        "tools": dict(sorted(tool_versions.items())),
        "format": 3,   # 2: entries hold prod/ (npm) beside full/; 3: generated code's inputs
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def tree_stamp(root: str | Path) -> str:
    """A fingerprint of every file and symlink under `root` (path, type, mode, size, mtime):
    an in-place write to a hard-linked cache file changes it."""
    return _scan_tree(Path(root))[0]


def _scan_tree(root: Path) -> tuple[str, dict[str, tuple]]:
    """`tree_stamp(root)` and, from the same walk, an index of every path under `root`:
    ("d", mtime_ns) for a folder; (kind "f" or "l", st_dev, st_ino, mode, size, mtime_ns,
    symlink target or None) for anything else."""
    h = hashlib.sha256()
    index: dict[str, tuple] = {}

    def walk(path: str, rel: str) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = rel + e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                index[name] = ("d", st.st_mtime_ns)
                walk(e.path, name + "/")
            else:
                link = os.readlink(e.path) if stat.S_ISLNK(st.st_mode) else None
                index[name] = ("f" if link is None else "l", st.st_dev, st.st_ino, st.st_mode, st.st_size,
                               st.st_mtime_ns, link)
                h.update(f"{name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())

    walk(str(root), "")
    return h.hexdigest(), index


def _source_stamp(app: Path) -> str:
    """The checkout's own files, node_modules aside: an install that writes elsewhere
    (a postinstall generating sources) is not cacheable by node_modules alone."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(app):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(app) and d == DEPS))
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, app)}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


TOOLS_FILE = ".tools.json"   # in the cache folder: tool versions by binary (see _tool_versions)


def _tool_identity(tool: str, env: Mapping[str, str]) -> list | None:
    """What `tool --version` answers from, when that is only the files it runs: node's own
    executable, or npm's entry script plus npm's package.json. None (ask the tool every
    time) for anything else: a version manager's shim (asdf, volta, mise, corepack) picks
    the version by folder or setting, which no file here shows."""
    found = shutil.which(tool, path=env.get("PATH"))
    if not found:
        return None
    real = os.path.realpath(found)
    files = [real]
    try:
        if tool == "node":
            with open(real, "rb") as f:
                if f.read(4) != b"\x7fELF" or not os.path.basename(real).startswith("node"):
                    return None
        elif tool == "npm":
            pkg = Path(real).parent.parent / "package.json"
            if not real.endswith(os.sep + os.path.join("bin", "npm-cli.js")) or \
                    json.loads(pkg.read_text(encoding="utf-8")).get("name") != "npm":
                return None
            files.append(str(pkg))
        else:
            return None
        return [[p, *((st := os.stat(p)).st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
                for p in files]
    except (OSError, ValueError, AttributeError):
        return None


def _tool_versions(plan: Recipe, env: Mapping[str, str], cache_root: Path | None = None) -> dict[str, str] | None:
    """node's and the package manager's `--version`, part of the dependency cache key. With
    `cache_root`, an answer is kept in <cache_root>/.tools.json under the identity of the
    files the tool runs (path, device, inode, size, mtime, ctime: `_tool_identity`), and
    reused while they are unchanged; a replaced or edited binary is asked again."""
    tools = list(dict.fromkeys(("node", plan.install[0])))
    known: dict[str, str] = {}
    ids = {t: _tool_identity(t, env) for t in tools} if cache_root is not None else {}
    saved: dict = {}
    if cache_root is not None:
        try:
            saved = json.loads((cache_root / TOOLS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        saved = saved if isinstance(saved, dict) else {}
        for t in tools:
            row = saved.get(t)
            if ids[t] is not None and isinstance(row, dict) and row.get("id") == ids[t] \
                    and isinstance(row.get("version"), str):
                known[t] = row["version"]
    ask = [t for t in tools if t not in known]
    # each is a node start-up: ask both at once
    results = pmap(lambda tool: proc.run([tool, "--version"], env=env, timeout=60), ask, len(ask))
    if not all(r.ok for r in results):
        return None
    fresh = {tool: r.stdout.strip() for tool, r in zip(ask, results)}
    if cache_root is not None and any(ids.get(t) is not None for t in fresh):
        # Identities taken before the probe: a binary replaced meanwhile is asked again next time.
        saved.update({t: {"id": ids[t], "version": v} for t, v in fresh.items() if ids.get(t) is not None})
        with contextlib.suppress(OSError):
            cache_root.mkdir(parents=True, exist_ok=True)
            _atomic_write(cache_root / TOOLS_FILE, (json.dumps(saved, indent=1, sort_keys=True) + "\n").encode())
    return {t: known[t] if t in known else fresh[t] for t in tools}


def _step(argv: Sequence[str], app: Path, env: Mapping[str, str], timeout: float) -> str:
    r = proc.run(list(argv), cwd=app, env=env, timeout=timeout, stream="build")
    if not r.ok:
        raise BuildFailed(
            f"`{r.display}` failed in {app} (exit {r.returncode}):\n{r.explain(20)}",
            "Fix the build (run the same command in the app folder to see it all), then run again.",
        )
    return r.display


def _fs(argv: list[str], what: str) -> None:
    r = proc.run(argv, timeout=1800)
    if not r.ok:
        raise BuildFailed(f"{what} failed: `{r.display}` (exit {r.returncode}): {r.tail(5)}",
                          "Check free space and permissions under .deploy/, then build again.")


# ---- the production tree of a cache entry (npm)
#
# An npm prune's result depends on package.json, the lockfile, npm's config and node_modules
# (npm's arborist reads nothing else for an app with a name, no workspaces and no linked
# folders). So a prune of the cached full install, laid out as a cache hit lays out the
# checkout (cp -al, top-level files unshared), in a folder holding byte-identical copies of
# those files, leaves the node_modules the checkout's own prune would leave after a build
# that did not change node_modules: the entry keeps it as `prod/node_modules` (prod.json
# says from which files), and such a hit links it in instead of running npm.

PROD_INFO = "prod.json"
_PRUNE_INPUTS = ("package.json", "package-lock.json", "npm-shrinkwrap.json", *_INSTALL_CONFIG)
_NPM_OWN = frozenset({".bin", ".package-lock.json", ".store"})   # npm reads or writes these in node_modules/


def _prune_inputs(folder: Path) -> dict[str, list | None] | None:
    """The files besides node_modules an npm prune in `folder` reads, each [sha256,
    executable] or None when absent; None when one is not a regular file."""
    out: dict[str, list | None] = {}
    for name in _PRUNE_INPUTS:
        try:
            st = os.lstat(folder / name)
        except FileNotFoundError:
            out[name] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            return None
        out[name] = [sha256_file(folder / name), bool(st.st_mode & 0o111)]
    return out


def _prod_cacheable(app: Path, plan: Recipe) -> bool:
    """npm's own prune as the recipe's last command, in an app whose package.json has a name
    (else npm names the root after its folder) and no workspaces, and whose lockfile links
    no folder (a link's target lies outside the pruned folder)."""
    if plan.pm != "npm" or plan.prune != PRUNE["npm"] or not plan.commands or plan.commands[-1] != plan.prune:
        return False
    try:
        pkg = package_json(app)
        lock = json.loads((app / "package-lock.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, SettingsError, BuildFailed):
        return False
    packages = lock.get("packages") if isinstance(lock, dict) else None
    return (isinstance(pkg.get("name"), str) and bool(pkg["name"]) and "workspaces" not in pkg
            and not (app / "npm-shrinkwrap.json").exists() and isinstance(packages, dict)
            and not any(isinstance(v, dict) and v.get("link") for v in packages.values()))


def _prune_beside_setup(app: Path, fill: Path) -> tuple[Path, dict] | None:
    """fill/prune: the app's prune inputs (copied now, before the build runs) and a copy of
    fill/full/node_modules laid out as a hit lays out the checkout; None when that fails
    (the entry is then filled without a production tree)."""
    try:
        return _prune_beside_layout(app, fill)
    except (BuildFailed, OSError):
        return None


def _prune_beside_layout(app: Path, fill: Path) -> tuple[Path, dict] | None:
    inputs = _prune_inputs(app)
    if inputs is None:
        return None
    side = fill / "prune"
    side.mkdir()
    for name, v in inputs.items():
        if v is not None:
            _fs(["cp", "-p", str(app / name), str(side / name)], "filling the dependency cache")
    _fs(["cp", "-al", str(fill / "full" / DEPS), str(side / DEPS)], "filling the dependency cache")
    _unshare_top_files(side / DEPS)
    # As in a hit's checkout, npm's hidden lockfile is older than node_modules/ (so npm reads
    # the tree from disk), even when this fill came within npm's 10 ms of the install.
    with contextlib.suppress(OSError):
        lock_ns = os.stat(side / DEPS / ".package-lock.json").st_mtime_ns
        if os.stat(side / DEPS).st_mtime_ns <= lock_ns + 10_000_000:
            os.utime(side / DEPS, ns=(lock_ns + 1_000_000_000,) * 2)
    return side, inputs


def _prune_beside(side: Path, inputs: dict, plan: Recipe, env: Mapping[str, str], timeout: float) -> bool:
    """Run the prune in `side`; True when it succeeded and left its inputs as they were."""
    try:
        r = proc.run(list(plan.prune), cwd=side, env=env, timeout=timeout)
        present = {DEPS, *(n for n, v in inputs.items() if v is not None)}
        return r.ok and _prune_inputs(side) == inputs and set(os.listdir(side)) == present
    except (OSError, DeployError):   # npm gone meanwhile: no production tree, nothing else
        return False


def _npm_context(env: Mapping[str, str]) -> str:
    """A fingerprint of what else steers npm's prune: the npm_config_* variables and NODE_ENV
    of the child's environment (as proc.run builds it) and the user and global npmrc files.
    Credentials (`proc.npm_credential_key`: tokens, passwords, `//registry/:` lines) are left
    out, variables and npmrc lines alike: they do not change what a prune leaves, and not even
    a hash of a short one is written down."""
    from deploy.redact import reveal

    full = {**proc.child_env(os.environ), **env}
    h = hashlib.sha256()
    for k in sorted(full):
        low = k.lower()
        if k == "NODE_ENV" or (low.startswith("npm_config_") and not proc.npm_credential_key(low[11:])):
            h.update(f"{k}\0{reveal(full[k])}\n".encode())
    node = shutil.which("node", path=full.get("PATH"))
    prefix = full.get("npm_config_prefix") or (os.path.dirname(os.path.dirname(os.path.realpath(node))) if node else "")
    for f in (full.get("npm_config_userconfig") or os.path.join(full.get("HOME", "/nonexistent"), ".npmrc"),
              full.get("npm_config_globalconfig") or os.path.join(prefix, "etc", "npmrc")):
        try:
            lines = Path(f).read_bytes().decode("utf-8", "replace").splitlines()
        except OSError:
            h.update(f"{f}\0-\n".encode())
            continue
        kept = [ln for ln in lines if not proc.npm_credential_key(ln.split("=", 1)[0])]
        h.update(f"{f}\0".encode() + "\n".join(kept).encode() + b"\n")
    return h.hexdigest()


def _prod_ready(entry: Path, plan: Recipe) -> dict | None:
    """The entry's prod.json when it has a production tree made by this recipe's prune."""
    try:
        info = json.loads((entry / PROD_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("prune") != list(plan.prune) or not isinstance(info.get("inputs"), dict):
        return None
    return info


def _prod_sha256(info: Mapping) -> dict[tuple[int, int, int, int], str]:
    """prod.json's file hashes by (device, inode, size, mtime_ns): pack reads a file linked
    from the production tree (the same inode, unchanged since: the tree's stamp was checked
    before it was linked) without hashing it again."""
    rows = info.get("sha256")
    try:
        return {(int(r[0]), int(r[1]), int(r[2]), int(r[3])): str(r[4]) for r in rows} if isinstance(rows, list) else {}
    except (TypeError, ValueError, IndexError):
        return {}


def _check_linked(deps: Path, full: Path, index: Mapping[str, tuple]) -> tuple[bool, list[str] | None]:
    """After a build in a checkout whose `deps` (node_modules) was hard-linked from the
    cache's `full` tree, scanned before as `index` (`_scan_tree`): (intact, added).

    intact: every cached file and symlink still has the mode, size and mtime (and inode) it
    had, whether reached through the checkout's link or at its own path, and every cached
    folder its mtime (so nothing was added to or removed from it): all a second
    `tree_stamp` of the entry would tell. added: None when the build changed node_modules
    (a path removed, replaced or added, a top-level file rewritten); else the top-level
    dot-folders the build made (vite's .vite-temp, a generated client: npm never reads
    inside them), possibly none."""
    intact, same = True, True
    added: list[str] = []
    through: set[str] = set()      # cached inodes stat'ed through the checkout's link
    seen = 1                       # node_modules itself
    top = f"{DEPS}/"
    packages = {n[len(top):] for n in index if n.startswith(top) and "/" not in n[len(top):]}
    stack = [(str(deps), top)]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                found = list(it)
        except OSError:   # the build removed or replaced it
            same = False
            continue
        for e in found:
            name = rel + e.name
            want = index.get(name)
            if want is None:
                retired = re.fullmatch(r"\.(.+)-[A-Za-z0-9]{8}", e.name)   # npm's retired-folder names
                if rel == top and e.name.startswith(".") and e.name not in _NPM_OWN \
                        and not (retired and retired.group(1) in packages) and e.is_dir(follow_symlinks=False):
                    added.append(e.name)
                else:
                    same = False
                continue
            seen += 1
            st = e.stat(follow_symlinks=False)
            if want[0] == "d":
                if stat.S_ISDIR(st.st_mode):
                    stack.append((e.path, name + "/"))
                else:
                    same = False
            elif (st.st_dev, st.st_ino) == want[1:3]:
                through.add(name)   # the cache's own inode: a change here is a change in the cache
                if (st.st_mode, st.st_size, st.st_mtime_ns) != want[3:6]:
                    intact = False
            elif not (rel == top and want[0] == "f" and stat.S_ISREG(st.st_mode) and st.st_size == want[4]
                      and st.st_mode & 0o111 == want[3] & 0o111 and filecmp.cmp(e.path, full / name, shallow=False)):
                same = False    # replaced (a top-level file is the build's own copy: same bytes)
    if seen != len(index):
        same = False
    for name, want in index.items():
        if name in through:
            continue
        try:
            st = os.lstat(os.path.join(full, name))
        except OSError:
            return False, None
        now = ("d", st.st_mtime_ns) if stat.S_ISDIR(st.st_mode) else \
            (want[0], st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)
        if now != want[:len(now)]:
            return False, None
    return intact, (added if same else None)


SPARE = "spare"   # in an entry: a hit's full tree, linked, kept for the next hit (`_take_spare`)


def _take_spare(entry: Path, deps: Path) -> dict[str, tuple] | None:
    """Claim the entry's spare linked full tree as the checkout's node_modules (a rename: a
    concurrent build gets it or not, never half) and check it: the index of the entry's
    full tree when the spare is exactly that tree linked (every path, inode and top-level
    byte: `_check_linked`), which saves creating ~650 folders and ~5,600 links. Else None
    and no node_modules (and a damaged entry dropped)."""
    try:
        os.rename(entry / SPARE, deps)
    except OSError:
        return None
    scan = _entry_scan(entry)
    intact, added = _check_linked(deps, entry / "full", scan) if scan is not None else (False, None)
    if intact and added == []:
        return scan
    _fs(["rm", "-rf", str(deps)] + ([] if intact else [str(entry)]), "removing a spare node_modules")
    return None


def _swap_in_prod(app: Path, entry: Path, added: list[str], later: list[threading.Thread] | None) -> None:
    """Replace the checkout's node_modules (the full install, linked) by the entry's
    production tree, linked, keeping the top-level folders the build added. The full tree
    is moved aside (`LINKED`, never packed), then kept as the entry's spare for the next hit
    (checked there before use) or removed in a thread added to `later` (the caller joins
    it), else here."""
    deps, old = app / DEPS, app / LINKED
    if old.exists():
        _fs(["rm", "-rf", str(old)], "clearing an interrupted build")
    os.rename(deps, old)
    _fs(["cp", "-al", str(entry / "prod" / DEPS), str(deps)], "restoring node_modules from the cache")
    for name in added:
        os.rename(old / name, deps / name)
    _unshare_top_files(deps)

    def remove() -> None:
        with contextlib.suppress(DeployError):   # a leftover is never packed; the next swap clears it
            _fs(["rm", "-rf", str(old)], "removing the full node_modules")

    try:
        os.rename(old, entry / SPARE)   # fails when a spare is there already (or across file systems)
        return
    except OSError:
        pass
    if later is None:
        remove()
    else:
        later.append(threading.Thread(target=remove, daemon=True))
        later[-1].start()


def _run_recipe(app: Path, plan: Recipe, env: Mapping[str, str], timeout: float,
                cache_root: Path | None, keep: int, *, hit_ok: bool = True,
                later: list[threading.Thread] | None = None,
                known: dict[tuple[int, int, int, int], str] | None = None) -> list[str]:
    """Run the recipe's commands in `app`; with a cache, the install comes from
    `cache_root/<deps_key>/` when an earlier build with the same key filled it.

    An entry holds `full/node_modules`, as the install left it (before any build wrote into
    it), and for npm (`_prod_cacheable`) `prod/node_modules`, what the prune leaves of it. A
    hit hard-links `full` into the checkout (cp -al) and runs the build there, so what the
    build writes into node_modules (a generated client, a cache) is this commit's own. Then,
    when the build left node_modules as linked (or only added top-level dot-folders, which
    npm never reads) and package.json, the lockfile and npm's config are byte for byte the
    ones `prod` was pruned with (and npm's variables and npmrc files too: `_npm_context`),
    `prod` is linked in instead of running the prune (those folders kept); otherwise the
    prune runs in the checkout exactly as on a miss. The full tree a hit moved aside is
    kept as the entry's spare, which the next hit takes (`_take_spare`) instead of linking
    anew. Cached files are shared, never written: the entry's stamp is checked before use
    and after the build (and after a prune in the checkout), and an entry a build (or
    prune) wrote into is dropped and the build redone without it, refilling it, so the
    artifact is always what a build without the cache packs."""
    if not plan.commands:
        return []
    rest = list(plan.commands[1:])
    key = None
    if cache_root is not None and not (app / DEPS).exists():
        versions = _tool_versions(plan, env, cache_root)
        key = deps_key(app, plan, versions) if versions is not None else None
    entry = cache_root / key if key else None
    scan, spare = None, False
    if entry is not None and hit_ok and entry.exists():
        _touch(entry)   # in use from now: a concurrent prune keeps the most recently used
        sources = _source_files(app)
        scan = _take_spare(entry, app / DEPS)
        spare = scan is not None
    if entry is not None and hit_ok and entry.exists() and not spare:
        # Link while the entry is checked (both only read it); a damaged entry's links go with it.
        failed: list[BaseException] = []

        def link() -> None:
            try:
                _fs(["cp", "-al", str(entry / "full" / DEPS), str(app / DEPS)], "restoring node_modules from the cache")
            except BaseException as e:  # noqa: BLE001 (raised below, in this thread)
                failed.append(e)

        linker = threading.Thread(target=link, daemon=True)
        linker.start()
        try:
            scan = _entry_scan(entry)
        finally:
            linker.join()
        if scan is None:
            _fs(["rm", "-rf", str(entry), str(app / DEPS)], "dropping a damaged cache entry")
        elif failed:
            raise failed[0]
    if scan is not None:
        prod = _prod_ready(entry, plan)
        ran = [f"(dependency cache {key[:12]}) " + (f"mv {entry / SPARE} {DEPS}" if spare else
                                                     f"cp -al {entry / 'full' / DEPS} {DEPS}")]
        if not spare:
            _unshare_top_files(app / DEPS)
        ran += [_step(argv, app, env, timeout) for argv in (rest[:-1] if prod else rest)]
        if prod is None:
            intact = _entry_ok(entry)
        else:
            intact, added = _check_linked(app / DEPS, entry / "full", scan)
            fits = intact and added is not None and _prune_inputs(app) == prod["inputs"] \
                and _npm_context(env) == prod.get("context") \
                and not any((entry / "prod" / DEPS / name).exists() for name in added)
            prod_ok = not fits or _stamp_is(entry / "prod", prod.get("stamp"))
            if fits and prod_ok:
                _swap_in_prod(app, entry, added, later)
                if known is not None:
                    known.update(_prod_sha256(prod))
                ran.append(f"(dependency cache {key[:12]}) cp -al {entry / 'prod' / DEPS} {DEPS}")
            elif intact:
                ran.append(_step(plan.prune, app, env, timeout))
                intact = _entry_ok(entry)   # the prune ran on the links too
                if intact and not prod_ok:
                    # This build is sound (pruned here); the entry is not: refilled next time.
                    _fs(["rm", "-rf", str(entry)], "dropping a damaged cache entry")
                    return ran
        if intact:
            _touch(entry)
            prune_deps_cache(cache_root, keep, protect=(key,))
            return ran
        # The build wrote into a cached file: that entry can no longer be trusted, and
        # neither can this build's output. Drop both; build again without the cache and
        # fill it anew.
        _fs(["rm", "-rf", str(entry), str(app / DEPS)], "dropping a damaged cache entry")
        for rel in sorted(_source_files(app) - sources):
            (app / rel).unlink(missing_ok=True)
        return _run_recipe(app, plan, env, timeout, cache_root, keep, hit_ok=False, later=later, known=known)

    before = _source_stamp(app) if entry is not None else ""
    ran = [_step(plan.commands[0], app, env, timeout)]
    tmp = side = None
    if entry is not None and _source_stamp(app) == before and (app / DEPS).is_dir():
        tmp = cache_root / f".fill-{key[:16]}-{os.getpid()}"
        _fs(["rm", "-rf", str(tmp)], "clearing a cache fill")
        (tmp / "full").mkdir(parents=True)
        # A real copy (reflink where the file system can): the build writes into the checkout's.
        _fs(["cp", "-a", "--reflink=auto", str(app / DEPS), str(tmp / "full" / DEPS)], "filling the dependency cache")
        # What the build generates anew is not kept: a hit's build writes its own (a new
        # folder, never through a link into the entry).
        for name in plan.generated:
            _fs(["rm", "-rf", str(tmp / "full" / DEPS / name)], "filling the dependency cache")
    try:
        if tmp is not None:
            full_stamp = tree_stamp(tmp / "full")
            side = _prune_beside_setup(app, tmp) if _prod_cacheable(app, plan) else None
        # The production tree is pruned beside the build, on its own copy, in a thread: the
        # build stays in this one, where an interrupt reaches it (and kills its process group).
        beside: list[bool] = []
        worker = threading.Thread(target=lambda: beside.append(_prune_beside(*side, plan, env, timeout)),
                                  daemon=True) if side is not None else None
        if worker is not None:
            worker.start()
        try:
            try:
                ran += [_step(argv, app, env, timeout) for argv in rest]
            finally:
                if worker is not None:
                    worker.join()
        except BuildFailed:
            _keep_install(tmp, side, entry, full_stamp if tmp is not None else None)
            raise
        pruned = bool(beside and beside[0])
        if tmp is not None and tree_stamp(tmp / "full") == full_stamp:
            (tmp / "stamp.json").write_text(json.dumps({"full": full_stamp}) + "\n")
            if pruned:
                (tmp / "prod").mkdir()
                os.rename(side[0] / DEPS, tmp / "prod" / DEPS)
                stamp, index = _scan_tree(tmp / "prod")
                info = {"prune": list(plan.prune), "inputs": side[1], "context": _npm_context(env), "stamp": stamp,
                        "sha256": [[*row[1:3], row[4], row[5], sha256_file(tmp / "prod" / rel)]
                                   for rel, row in index.items() if row[0] == "f" and stat.S_ISREG(row[3])]}
                (tmp / PROD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
            if side is not None:
                _fs(["rm", "-rf", str(side[0])], "clearing a cache fill")
            try:
                os.rename(tmp, entry)   # complete entries only; a concurrent filler's wins
                _touch(entry)
            except OSError:
                pass
    finally:
        if tmp is not None and tmp.exists():
            _fs(["rm", "-rf", str(tmp)], "clearing a cache fill")
    if tmp is not None:
        prune_deps_cache(cache_root, keep, protect=(key,))
    return ran


def _keep_install(tmp: Path | None, side, entry: Path | None, full_stamp) -> None:
    """The build failed after a good install: keep the install's copy as the cache entry (its
    `full` tree, no `prod`), so the retry after a fix links it instead of installing again."""
    if tmp is None or entry is None or not (tmp / "full").is_dir() or tree_stamp(tmp / "full") != full_stamp:
        return
    with contextlib.suppress(BuildFailed, OSError):
        if side is not None:
            _fs(["rm", "-rf", str(side[0])], "clearing a cache fill")
        (tmp / "stamp.json").write_text(json.dumps({"full": full_stamp}) + "\n")
        os.rename(tmp, entry)   # complete entries only; a concurrent filler's wins
        _touch(entry)


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
        versions = _tool_versions(plan, child_env, Path(deps_cache))
        key = deps_key(app, plan, versions) if versions is not None else None
        entry = Path(deps_cache) / key if key else None
        if entry is not None and not (entry.exists() and _entry_ok(entry)):
            entry = None
    if entry is not None:
        _fs(["rm", "-rf", str(app / DEPS)], "removing the pruned node_modules")
        _fs(["cp", "-al", str(entry / "full" / DEPS), str(app / DEPS)], "restoring node_modules from the cache")
        _touch(entry)
        ran = (f"(dependency cache {entry.name[:12]}) cp -al {entry / 'full' / DEPS} {DEPS}",)
    else:
        ran = (_step(plan.install, app, child_env, limit),)
    mark.write_text(ran[0] + "\n")
    return FullInstall(f"installed dependencies ({ran[0]})", ran, entry, app)


def check_full_install(done: FullInstall) -> None:
    """After the tool ran in a checkout `full_install` linked from the cache: an entry the
    tool wrote into through the links is dropped (and the checkout's node_modules with it),
    so no later build trusts it."""
    if done.entry is not None and done.entry.exists() and not _entry_ok(done.entry, parts=("full",)):
        _fs(["rm", "-rf", str(done.entry)] + ([str(done.app / DEPS)] if done.app else []),
            "dropping a damaged cache entry")


def _unshare_top_files(deps: Path) -> None:
    """Real copies of node_modules' own top-level files (npm's .package-lock.json, pnpm's
    .modules.yaml, yarn's .yarn-integrity): the prune rewrites them in place, which would
    write through a hard link into the cache entry."""
    for p in deps.iterdir():
        if p.is_file() and not p.is_symlink():
            tmp = p.with_name(p.name + ".unshare")
            _fs(["cp", "-p", str(p), str(tmp)], "restoring node_modules from the cache")
            os.replace(tmp, p)


def _source_files(app: Path) -> set[str]:
    """The checkout's files outside node_modules (to remove what a build added)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(app):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(app) and d == DEPS)]
        out.update(os.path.relpath(os.path.join(dirpath, f), app) for f in filenames)
    return out


def _entry_scan(entry: Path) -> dict[str, tuple] | None:
    """The index of the entry's full tree (`_scan_tree`) when its stamp still matches, else None."""
    try:
        stamp = json.loads((entry / "stamp.json").read_text())
        got, index = _scan_tree(entry / "full")
    except (OSError, ValueError):
        return None
    return index if isinstance(stamp, dict) and stamp.get("full") == got else None


def _stamp_is(root: Path, stamp) -> bool:
    try:
        return tree_stamp(root) == stamp
    except OSError:
        return False


def _entry_ok(entry: Path, parts: tuple[str, ...] = ("full",)) -> bool:
    try:
        stamp = json.loads((entry / "stamp.json").read_text())
        return isinstance(stamp, dict) and all(stamp.get(k) == tree_stamp(entry / k) for k in parts)
    except (OSError, ValueError):
        return False


def _touch(entry: Path) -> None:
    try:
        (entry / "used").write_text(str(time.time()))
    except OSError:
        pass


def prune_deps_cache(cache_root: str | Path, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the `keep` most recently used dependency cache entries (never a
    protected key) and leftovers of interrupted fills; returns the keys removed."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    rows = []
    for d in root.iterdir():
        if d.name.startswith(".fill-"):
            try:
                pid = int(d.name.rsplit("-", 1)[1])
            except ValueError:
                pid = 0
            if pid <= 0 or not proc.pid_alive(pid):
                _fs(["rm", "-rf", str(d)], "removing an interrupted cache fill")
            continue
        if d.is_dir():
            try:
                used = (d / "used").stat().st_mtime
            except OSError:
                used = 0.0
            rows.append((used, d.name))
    rows.sort(reverse=True)
    protect = set(protect)
    doomed = [name for _, name in rows[max(1, keep):] if name not in protect]
    for name in doomed:
        _fs(["rm", "-rf", str(root / name)], "pruning the dependency cache")
    return doomed


def tree_bytes(root: str | Path) -> int:
    """Bytes a folder takes on disk (allocated blocks), each hard-linked file once (the cache's
    entries and the checkouts share files with `cp -al`)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def prune_deps_cache_to_size(cache_root: str | Path, max_mb: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete least recently used dependency cache entries (never a protected key, nor the most
    recently used one) until the cache takes at most `max_mb` MB; returns the keys removed."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    rows = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            try:
                used = (d / "used").stat().st_mtime
            except OSError:
                used = 0.0
            rows.append((used, d.name, tree_bytes(d)))
    total = sum(r[2] for r in rows)
    doomed = []
    protect = set(protect) | {max(rows)[1]} if rows else set(protect)
    for used, name, size in sorted(rows):          # oldest use first
        if total <= max_mb * 1024 * 1024:
            break
        if name in protect:
            continue
        _fs(["rm", "-rf", str(root / name)], "pruning the dependency cache to app.cache_max_mb")
        total -= size
        doomed.append(name)
    return doomed


# ---------------------------------------------------------------- store

def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find(artifacts_dir: str | Path, key: "BuildKey | str") -> Artifact | None:
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


def _write_index(store: Path, artifact: Artifact, key: "BuildKey") -> None:
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
    _atomic_write(index / f"{key.name}.json", (json.dumps(data, indent=2) + "\n").encode())


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

def pack(build_dir: str | Path, artifacts_dir: str | Path, *, git_sha: str, built_at: str, release_id: str,
         include: Iterable[str] = (), app: str = "",
         known_sha256: Mapping[tuple[int, int, int, int], str] | None = None,
         source: Mapping[str, str] | None = None) -> Artifact:
    """Pack `build_dir` (or only its `include` paths) plus a RELEASE.json into
    `<artifacts_dir>/<sha256>.tar.gz`.

    The bytes depend only on the files' contents, their executable bits and the
    manifest: same build output, same hash. `known_sha256`: hashes already known by
    (device, inode, size, mtime_ns), e.g. of files hard-linked from the dependency cache.
    `source`: the build's app folder and contract digest, recorded as the manifest's "source"."""
    known = known_sha256 or {}
    root = Path(build_dir)
    store = Path(artifacts_dir)
    entries = _walk(root, tuple(include))
    # Mode as packed (644 or 755): hosts link an unchanged file from an earlier release only
    # when path, sha256, size and mode all match (deploy.hosts delta uploads).
    files = [
        {"path": rel, "sha256": known.get((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)) or sha256_file(p),
         "size": st.st_size, "mode": 0o755 if st.st_mode & 0o111 else 0o644}
        for rel, p, st in entries if stat.S_ISREG(st.st_mode)
    ]
    # Symlinks and empty folders too, so the manifest describes the whole unpacked tree
    # (hosts verify a release built from a delta against it).
    links = [{"path": rel, "target": os.readlink(p)} for rel, p, st in entries if stat.S_ISLNK(st.st_mode)]
    parents = {rel.rsplit("/", 1)[0] for rel, _, _ in entries if "/" in rel}
    empty = [rel for rel, _, st in entries if stat.S_ISDIR(st.st_mode) and rel not in parents]
    manifest = {"release_id": release_id, "git_sha": git_sha, "built_at": built_at, "files": files,
                "symlinks": links, "empty_dirs": empty}
    if app:
        manifest["app"] = app   # which app this is: an undo never starts another app's release
    if source:
        manifest["source"] = dict(source)   # what it was built from besides the commit (BuildKey)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    mtime = int(datetime.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())

    fd, tmp = tempfile.mkstemp(prefix=f".pack-{os.getpid()}-", suffix=".tar.gz", dir=store)
    try:
        with os.fdopen(fd, "wb") as f:
            raw = _Hashing(f)   # the tarball's sha256 as it is written: no second read
            # Level 1: a few times faster than 6 on a real app's node_modules for a slightly
            # larger file; a commit is packed once, and hosts mostly get deltas.
            with _GzipWriter(raw, compresslevel=1) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    tar.copybufsize = 1 << 20
                    # The manifest first: a reader (a delta upload) gets it without
                    # decompressing the whole tarball.
                    info = _info(MANIFEST, tarfile.REGTYPE, 0o644, mtime)
                    info.size = len(manifest_bytes)
                    tar.addfile(info, io.BytesIO(manifest_bytes))
                    for rel, p, st in entries:
                        info = _tarinfo(rel, p, st, mtime)
                        if info.isreg():
                            with open(p, "rb") as src:
                                tar.addfile(info, src)
                        else:
                            tar.addfile(info)
        digest = raw.hexdigest()
        final = store / f"{digest}.tar.gz"
        os.replace(tmp, final)   # same name means same bytes, so replacing an existing one is harmless
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Artifact(path=final, sha256=digest, release_id=release_id, git_sha=git_sha, built_at=built_at)


class _Hashing:
    """A write-only file that hashes what passes through it."""

    def __init__(self, f):
        self._f = f
        self._h = hashlib.sha256()

    def write(self, data) -> int:
        self._h.update(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class _GzipWriter:
    """Write-only gzip, reproducible: no name and no time in the header (as
    reproducible-builds.org asks), and the deflate stream cut into 1 MiB blocks compressed
    in parallel the way pigz does it: each block primed with the 32 KiB before it and ended
    with a sync flush, the last one ending the stream. The bytes depend only on the data,
    never on the number of threads or on how the writes were cut; any gzip reader reads
    them as one member. zlib releases the GIL, so the blocks compress on every core while
    this thread reads and hashes the files."""

    BLOCK = 1 << 20
    WINDOW = 1 << 15   # deflate's window: what a block's back-references may reach

    def __init__(self, raw, compresslevel: int, workers: int | None = None):
        import collections
        import struct
        import zlib
        from concurrent.futures import ThreadPoolExecutor

        self._zlib, self._struct = zlib, struct
        self._raw = raw
        self._level = compresslevel
        self._workers = workers or max(1, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._workers)
        self._done: collections.deque = collections.deque()   # compressed blocks, in stream order
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._tail = b""
        self._crc = 0
        self._size = 0
        xfl = b"\002" if compresslevel == 9 else b"\004" if compresslevel == 1 else b"\000"
        raw.write(b"\037\213\010\000" + struct.pack("<L", 0) + xfl + b"\377")   # as GzipFile writes it

    def write(self, data) -> int:
        n = len(data)
        if n:
            self._pending.append(bytes(data))
            self._pending_size += n
            self._size += n
            if self._pending_size >= self.BLOCK:
                joined = b"".join(self._pending)
                whole = len(joined) - len(joined) % self.BLOCK
                for i in range(0, whole, self.BLOCK):
                    self._hand_over(joined[i:i + self.BLOCK], last=False)
                self._pending = [joined[whole:]] if whole < len(joined) else []
                self._pending_size = len(joined) - whole
        return n

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        pass

    def _hand_over(self, block: bytes, last: bool) -> None:
        self._crc = self._zlib.crc32(block, self._crc)
        self._done.append(self._pool.submit(_deflate_block, self._zlib, self._level, self._tail, block, last))
        self._tail = block[-self.WINDOW:]
        while len(self._done) > 2 * self._workers:
            self._raw.write(self._done.popleft().result())

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            if kind is None:
                self._hand_over(b"".join(self._pending), last=True)
                while self._done:
                    self._raw.write(self._done.popleft().result())
                self._raw.write(self._struct.pack("<LL", self._crc, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _deflate_block(zlib, level: int, primer: bytes, block: bytes, last: bool) -> bytes:
    args = (level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)
    comp = zlib.compressobj(*args, primer) if primer else zlib.compressobj(*args)
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _walk(root: Path, include: tuple[str, ...] = ()) -> list[tuple[str, Path, os.stat_result]]:
    """(path relative to `root`, path, lstat) of everything packed, sorted by path."""
    out = []
    wanted = [p.strip("/") for p in include]
    top = root.resolve()

    def chosen(rel: str) -> bool:
        if not wanted:
            return rel.split("/", 1)[0] not in SKIP_TOP
        # A path is packed when it is an included path, inside one, or a folder leading to one.
        return any(rel == w or rel.startswith(w + "/") or w.startswith(rel + "/") for w in wanted)

    def visit(folder: str, prefix: str) -> None:
        with os.scandir(folder) as it:
            found = sorted(it, key=lambda e: e.name)
        for e in found:
            rel = prefix + e.name
            if not chosen(rel):
                continue
            p = Path(e.path)
            if rel in RESERVED:
                raise BuildFailed(
                    f"{p}: the build must not write {rel}; the deploy tool writes that name.",
                    f"Rename it in the build script ({', '.join(RESERVED)} are reserved).",
                )
            st = e.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(p)
                resolved = (p.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(top):
                    raise BuildFailed(
                        f"{p} is a symlink to {target}, outside the build folder.",
                        "Copy the file into the app folder instead: a release must not depend on the build machine.",
                    )
            out.append((rel, p, st))
            if stat.S_ISDIR(st.st_mode):
                visit(e.path, rel + "/")

    visit(str(root), "")
    out.sort(key=lambda row: row[0])
    return out


def _info(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tarinfo(rel: str, p: Path, st: os.stat_result, mtime: int) -> tarfile.TarInfo:
    # Only the executable bit survives from the file system: umask and owner differ
    # between machines and would change the hash.
    if stat.S_ISLNK(st.st_mode):
        info = _info(rel, tarfile.SYMTYPE, 0o777, mtime)
        info.linkname = os.readlink(p)
        return info
    if stat.S_ISDIR(st.st_mode):
        return _info(rel, tarfile.DIRTYPE, 0o755, mtime)
    info = _info(rel, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644, mtime)
    info.size = st.st_size
    return info
