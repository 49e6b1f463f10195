"""The package-manager recipe: what building one app runs, as data (install, generate,
build, prune, what the artifact holds) from its lockfile, package.json and the `[app]`
contract, and which of the app's files code is generated from at install. Pure: it reads
files and runs nothing."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from deploy import proc
from deploy.build.ops import sha256_file
from deploy.config import AppSection
from deploy.errors import BuildFailed, SettingsError
from deploy.startup import package_json


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
DEPS = "node_modules"
# The full node_modules a dependency cache hit moves aside while it links in the production
# tree (deploy.build.prodtree.swap_in_prod): never packed.
LINKED = ".deploy-linked-node_modules"
# The root package's install lifecycle scripts: what an install runs besides the packages.
INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepare", "preprepare", "postprepare")


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
    scripts = pkg["scripts"] if isinstance(pkg.get("scripts"), dict) else {}
    out = {rel: sha256_file(app / rel) for rel in prisma_schema_files(app, pkg)}
    out.update({cfg: sha256_file(app / cfg) for cfg in PRISMA_CONFIGS if (app / cfg).is_file()})
    out.update(named_files(app, scripts_reached(scripts, INSTALL_SCRIPTS).values()))
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
    scripts = pkg["scripts"] if isinstance(pkg.get("scripts"), dict) else {}

    def runs_generate(argvs: Iterable[tuple[str, ...]], names: Iterable[str]) -> bool:
        texts = [shlex.join(a) for a in argvs]
        reached = [n for t in texts for n in _RUNS_SCRIPT.findall(t) if n in scripts]
        texts += scripts_reached(scripts, [*names, *reached]).values()
        return any(_RUNS_GENERATE.search(t) for t in texts)

    if runs_generate([c.build] if isinstance(c.build, tuple) else [], ["build"] if c.build == "auto" else []):
        return (), True     # the build generates: its own output is the client
    if runs_generate([c.install] if isinstance(c.install, tuple) else [], INSTALL_SCRIPTS):
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


def build_environment(environ: Mapping[str, str], contract: AppSection | None = None,
                      extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build's explicit environment: the minimal base (PATH, HOME, locale, TMPDIR, proxies,
    CA files, npm_config_* without credentials), NODE_ENV when set, the names in
    `app.build_env`, and `extra`. Never a deploy secret the settings do not name."""
    c = contract or AppSection()
    names = ("NODE_ENV", *c.build_env)
    return proc.child_env(environ, names, extra)


def build_commands(app_dir: str | Path, contract: AppSection | None = None) -> list[list[str]]:
    """The commands a fresh build runs in `app_dir`, as data."""
    return [list(c) for c in recipe(app_dir, contract).commands]
