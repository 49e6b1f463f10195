"""`invoke init`: the starting files for putting the toolkit on an existing app.

Two halves, as everywhere in the toolkit: `detect` reads an app folder into `AppFacts`
(package manager from the lockfile, start/build scripts, Prisma provider and migrations
folder from `schema.prisma`, the Shopify configs `shopify.app[.<name>].toml`, the
variables of `.env.example`), and `render` turns those facts into files (relative path ->
text) without touching anything. `write` is the only part that changes the disk: it never
replaces an existing file unless `force`, and says which files it kept.

The parsers are deliberately small: they read what Shopify's React Router template and
Prisma write (`datasource db { provider = "sqlite" url = "file:dev.sqlite" }`, dotenv
lines, the top-level keys of the app TOML), not every syntax those formats allow.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, Mapping, Sequence

from deploy import build
from deploy.errors import SettingsError

__all__ = [
    "PackageManager", "EnvVar", "Datasource", "ShopifyConfig", "AppFacts", "WriteResult",
    "package_manager", "install_argv", "parse_datasource", "parse_env_example", "parse_shopify_config",
    "detect", "render", "write", "ignore_rules", "notices", "ignores", "code_variables", "workflow_configs",
    "ENVIRONMENTS",
]

PackageManager = Literal["npm", "yarn", "pnpm"]   # what deploy.build knows how to install with

ENVIRONMENTS = ("local", "staging", "production")

# Names that hold credentials wherever they appear (a key that is public, such as
# SHOPIFY_API_KEY, the app's client id, is listed apart).
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|_KEY$|^KEY$|DATABASE_URL$|DIRECT_URL$")
_PUBLIC = {"SHOPIFY_API_KEY", "SHOPIFY_APP_URL", "SCOPES", "PORT", "NODE_ENV", "HOST"}


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class EnvVar:
    """One line of `.env.example`: the name, its example value, the comment above it."""

    name: str
    value: str = ""
    comment: str = ""


@dataclass(frozen=True)
class Datasource:
    provider: str                    # sqlite | postgresql | mysql | ...
    url: str = ""                    # a literal URL (`url = "file:dev.sqlite"`), else ""
    url_var: str = ""                # `url = env("DATABASE_URL")` -> DATABASE_URL
    direct_url_var: str = ""         # `directUrl = env("DIRECT_URL")`


@dataclass(frozen=True)
class ShopifyConfig:
    name: str                        # "" for shopify.app.toml, else the <name> of shopify.app.<name>.toml
    file: str
    client_id: str = ""
    application_url: str = ""
    scopes: str = ""
    title: str = ""                  # the app's `name` in the file

    @property
    def role(self) -> str:
        """What the file's name says it is: production, staging, dev, or "" (shopify.app.toml,
        or a name that says none of them)."""
        return _role_of(self.name)

    def says_dev(self) -> str:
        """Why this config is a development app ("" when nothing says so): its file suffix,
        its app name, or its URL (localhost, a tunnel, example.com, a `dev` label)."""
        if self.role == "dev":
            return f"its name ({self.file}) says dev"
        if any(w in _DEV_WORDS for w in re.split(r"[^a-z0-9]+", self.title.lower())):
            return f"its app name {self.title!r} says dev"
        host = re.sub(r"^[a-z]+://", "", self.application_url.lower()).split("/", 1)[0].split(":", 1)[0]
        labels = re.split(r"[.-]", host)
        if host and (host in ("localhost", "127.0.0.1") or host.endswith(_TUNNELS) or host == "example.com"
                     or host.endswith(".example.com") or any(w in _DEV_WORDS for w in labels)):
            return f"its application_url {self.application_url} is a development or placeholder address"
        return ""


@dataclass(frozen=True)
class AppFacts:
    """What `detect` found in an app folder; every path is relative to the app folder."""

    app: Path
    package_manager: PackageManager = "npm"
    lockfile: str = ""
    scripts: Mapping[str, str] = field(default_factory=dict)
    node_engine: str = ""
    schema: str = ""                 # prisma/schema.prisma
    datasource: Datasource | None = None
    migrations_dir: str = ""         # prisma/migrations (beside the schema, as Prisma looks for it)
    shopify: tuple[ShopifyConfig, ...] = ()
    env_example: tuple[EnvVar, ...] = ()
    prisma: bool = False             # prisma or @prisma/client is a dependency
    prisma_config: str = ""          # prisma.config.ts (or .js/.mjs/.cjs/.mts/.cts) when there is one
    lockfiles: tuple[str, ...] = ()  # every lockfile there (the first is the one used)
    lock_ignored: str = ""           # the .gitignore line that ignores the lockfile
    dependencies: bool = False       # package.json declares dependencies
    code_vars: tuple[EnvVar, ...] = ()   # what the app reads: process.env.X, the Dockerfile's ENV/ARG
    workflow_configs: tuple[tuple[str, str, str], ...] = ()   # (env, config file, workflow file) from --config
    tests: str = ""                  # the test runner found (vitest, jest, ...), "" when none

    def database_todo(self) -> str:
        """Why the database settings could not be written from what was found ("" when they
        could): a Prisma app whose datasource was not found, or a provider the toolkit does
        not run (only sqlite and postgresql)."""
        ds = self.datasource
        if ds is not None and ds.provider not in ("sqlite", "postgresql"):
            return (f"{self.schema} has datasource provider {ds.provider or '(none)'!r}; the toolkit migrates, "
                    "backs up and restores only sqlite and postgresql databases")
        if ds is None and (self.prisma or self.schema or self.prisma_config):
            where = (f"{self.schema} has no datasource block" if self.schema else
                     "no schema was found (package.json prisma.schema, prisma/schema.prisma, prisma/schema/*.prisma"
                     + (f", {self.prisma_config}'s schema" if self.prisma_config else "") + ")")
            return f"Prisma is a dependency but {where}"
        return ""

    @property
    def start_script(self) -> str:
        return self.scripts.get("start", "")

    def shopify_config(self, env: str) -> ShopifyConfig | None:
        """The config an environment deploys with (`shopify_choice`)."""
        return self.shopify_choice(env)[0]

    def shopify_choice(self, env: str) -> tuple[ShopifyConfig | None, str]:
        """(config, why) for `env`: a file whose suffix says the environment (`prod`,
        `production`, `staging`, `dev`, ...), else the one the app's own workflows pass to
        `--config` for it, else (production only) shopify.app.toml when nothing about it says
        dev; local: a dev config, else shopify.app.toml when no other environment has it.
        Production never gets a config whose name, app name or URL says dev."""
        want = "dev" if env == "local" else env
        by_file = {c.file: c for c in self.shopify}
        named = [c for c in self.shopify if c.role == want]
        if named:
            c = named[0]
            return c, f"its name says {want}" + (f" ({len(named) - 1} other(s) too; the first is taken)"
                                                  if len(named) > 1 else "")
        for wenv, file, wf in self.workflow_configs:
            if wenv == want and file in by_file:
                c = by_file[file]
                if env == "production" and c.says_dev():
                    continue
                return c, f"{wf} deploys it with --config"
        plain = by_file.get("shopify.app.toml")
        if env == "production":
            if plain is None:
                return None, "no shopify.app.prod.toml or shopify.app.production.toml"
            why = plain.says_dev()
            if why:
                return None, f"shopify.app.toml is not given to production: {why}"
            return plain, "no config is named for production, and nothing in shopify.app.toml says dev"
        if env == "local":
            if plain is not None and all(self.shopify_choice(e)[0] is not plain for e in ("staging", "production")):
                return plain, "no config is named dev, and no other environment uses shopify.app.toml"
            return None, "no dev config (shopify.app.dev.toml)"
        return None, f"no shopify.app.{env}.toml (or a workflow passing --config for {env})"


@dataclass(frozen=True)
class WriteResult:
    written: tuple[str, ...]
    kept: tuple[str, ...]            # existed and were left alone (no --force)


_ROLES = {"production": "production", "prod": "production", "live": "production", "prd": "production",
          "staging": "staging", "stage": "staging", "stg": "staging", "preview": "staging",
          "dev": "dev", "development": "dev", "develop": "dev", "local": "dev", "test": "dev", "sandbox": "dev"}
_DEV_WORDS = {"dev", "development", "local", "localhost", "test", "sandbox"}
_TUNNELS = (".trycloudflare.com", ".ngrok.io", ".ngrok-free.app", ".ngrok.app", ".loca.lt", ".localhost")


def _role_of(name: str) -> str:
    """production | staging | dev | "" from a config suffix (`prod`, `my-app-staging`, ...)."""
    for word in reversed([w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]):
        if word in _ROLES:
            return _ROLES[word]
    return ""


# ---------------------------------------------------------------- detection (pure over text)

def package_manager(app: Path) -> PackageManager:
    """The package manager whose lockfile `app` holds (deploy.build's rule); npm when none."""
    pm = build.package_manager(app)
    return "yarn" if pm == "yarn" else "pnpm" if pm == "pnpm" else "npm"   # LOCKFILES names no other


def install_argv(pm: PackageManager, *, lockfile: bool = True) -> tuple[str, ...]:
    """The clean, lockfile-exact install deploy.build runs for `pm` (npm without a
    lockfile: `npm install`, which writes one)."""
    return build.INSTALL[pm] if lockfile else ("npm", "install", "--no-audit", "--no-fund")


_BLOCK = re.compile(r"datasource\s+\w+\s*\{(?P<body>[^}]*)\}", re.S)
_STR = r'"((?:[^"\\]|\\.)*)"'
_ENV_CALL = re.compile(r'env\(\s*' + _STR + r'\s*\)')


def _field(body: str, key: str) -> str | None:
    m = re.search(rf"^\s*{key}\s*=\s*(.+?)\s*(?://.*)?$", body, re.M)
    return m.group(1).strip() if m else None


def parse_datasource(text: str) -> Datasource | None:
    """The `datasource` block of a schema.prisma (comments ignored), or None."""
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    m = _BLOCK.search(text)
    if not m:
        return None
    body = m.group("body")
    prov = _field(body, "provider") or ""
    pm = re.fullmatch(_STR, prov)
    provider = pm.group(1) if pm else prov
    out = {"url": "", "url_var": "", "direct_url_var": ""}
    for key, lit, var in (("url", "url", "url_var"), ("directUrl", None, "direct_url_var")):
        raw = _field(body, key)
        if not raw:
            continue
        env = _ENV_CALL.fullmatch(raw)
        if env:
            out[var] = env.group(1)
        elif lit:
            s = re.fullmatch(_STR, raw)
            out[lit] = s.group(1) if s else ""
    return Datasource(provider, out["url"], out["url_var"], out["direct_url_var"])


def parse_env_example(text: str) -> tuple[EnvVar, ...]:
    """The variables of a `.env.example` (dotenv syntax: `NAME=value`, `export NAME=value`,
    quotes stripped, `# comment` lines kept as the next variable's description)."""
    out: list[EnvVar] = []
    comment: list[str] = []
    seen = set()
    for line in text.splitlines():
        s = line.strip()
        if not s:
            comment = []
            continue
        if s.startswith("#"):
            comment.append(s.lstrip("#").strip())
            continue
        m = re.match(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", s)
        if not m:
            comment = []
            continue
        name, value = m.group(1).upper(), m.group(2).strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if name not in seen:
            seen.add(name)
            out.append(EnvVar(name, value, " ".join(c for c in comment if c)))
        comment = []
    return tuple(out)


def parse_shopify_config(file_name: str, text: str) -> ShopifyConfig:
    """The keys of a shopify.app[.<name>].toml the toolkit seeds variables from."""
    m = re.fullmatch(r"shopify\.app(?:\.([-\w]+))?\.toml", file_name)
    name = (m.group(1) or "") if m else ""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{file_name}: not valid TOML ({e}).", "Fix it (shopify app config link rewrites it).") \
            from None
    scopes = raw.get("access_scopes", {}).get("scopes", "") if isinstance(raw.get("access_scopes"), dict) else ""
    return ShopifyConfig(name, file_name, str(raw.get("client_id", "") or ""),
                         str(raw.get("application_url", "") or ""), str(scopes or ""), str(raw.get("name", "") or ""))


def detect(app: Path) -> AppFacts:
    """Read an app folder into `AppFacts`; SettingsError naming the file when one is unreadable."""
    app = Path(app)
    if not (app / "package.json").is_file():
        raise SettingsError(f"{app} has no package.json: it is not a Node app folder.",
                            "Pass --app=PATH pointing at the app (the folder with package.json and shopify.app.toml).")
    text = _read(app / "package.json")
    try:
        package = json.loads(text)
        if not isinstance(package, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise SettingsError(f"{app / 'package.json'} is not valid JSON ({e}).") from None
    pm = package_manager(app)
    lock = next((n for n, _ in build.LOCKFILES if (app / n).is_file()), "")
    raw_scripts = package.get("scripts")
    if raw_scripts is not None and not isinstance(raw_scripts, dict):
        raise SettingsError(f"{app / 'package.json'}: \"scripts\" is a {type(raw_scripts).__name__}, not an object "
                            "of name -> command.", 'Write it as "scripts": {"start": "...", "build": "..."}.')
    scripts = {k: v for k, v in (raw_scripts or {}).items() if isinstance(v, str)}
    engines = package["engines"] if isinstance(package.get("engines"), dict) else {}

    deps = {k: v for key in ("dependencies", "devDependencies")
            if isinstance(package.get(key), dict) for k, v in package[key].items()}
    uses_prisma = "prisma" in deps or "@prisma/client" in deps
    prisma_config = next((n for n in (f"prisma.config.{e}" for e in ("ts", "mts", "cts", "js", "mjs", "cjs"))
                          if (app / n).is_file()), "")
    candidates = []
    prisma = package["prisma"] if isinstance(package.get("prisma"), dict) else {}
    if isinstance(prisma.get("schema"), str):
        candidates.append(prisma["schema"])
    if prisma_config:
        # `schema: "prisma/schema"` in defineConfig({...}): a file or a folder, relative to the config.
        m = re.search(r"""\bschema\s*:\s*(["'`])([^"'`]+)\1""", _read(app / prisma_config))
        if m:
            candidates.append(m.group(2))
    candidates += ["prisma/schema.prisma", "prisma/schema"]
    schema_rel, ds = "", None
    for cand in candidates:
        p = app / cand
        if not p.resolve().is_relative_to(app.resolve()):
            continue
        # A folder is a multi-file schema (prismaSchemaFolder): the datasource is in one of its
        # .prisma files, and Prisma looks for migrations beside that file.
        files = sorted(p.rglob("*.prisma")) if p.is_dir() else [p] if p.is_file() else []
        files = [x for x in files if "migrations" not in x.relative_to(app).parts]
        if not files:
            continue
        schema_rel = Path(os.path.normpath(files[0].relative_to(app))).as_posix()
        for x in files:
            ds = parse_datasource(_read(x))
            if ds is not None:
                schema_rel = Path(os.path.normpath(x.relative_to(app))).as_posix()
                break
        break
    mig = ""
    if schema_rel:
        cand = (Path(schema_rel).parent / "migrations").as_posix()
        mig = cand if (app / cand).is_dir() or ds is not None else ""

    configs = []
    for p in sorted(app.glob("shopify.app*.toml")):
        if re.fullmatch(r"shopify\.app(\.[-\w]+)?\.toml", p.name):
            configs.append(parse_shopify_config(p.name, _read(p)))
    env_vars: tuple[EnvVar, ...] = ()
    for name in (".env.example", ".env.sample", "example.env"):
        if (app / name).is_file():
            env_vars = parse_env_example(_read(app / name))
            break
    lockfiles = tuple(n for n, _ in build.LOCKFILES if (app / n).is_file())
    ignored = ""
    if (app / ".gitignore").is_file():
        try:   # a .gitignore that is not UTF-8 is reported by init's own .gitignore step
            text = (app / ".gitignore").read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        ignored = ignores(text, lock or _LOCK_OF.get(pm, "package-lock.json"))
    runners = ("vitest", "jest", "mocha", "@playwright/test", "ava", "tap")
    tests = next((r for r in runners if r in deps), "")
    if not tests and re.search(r"\b(vitest|jest|mocha|playwright|node --test)\b", scripts.get("test", "")):
        tests = scripts["test"].split()[0]
    return AppFacts(app, pm, lock, scripts, str(engines.get("node", "") or ""), schema_rel, ds, mig,
                    tuple(configs), env_vars, uses_prisma, prisma_config, lockfiles, ignored, bool(deps),
                    code_variables(app), workflow_configs(app), tests)


_LOCK_OF = {"npm": "package-lock.json", "pnpm": "pnpm-lock.yaml", "yarn": "yarn.lock"}


def ignores(gitignore: str, name: str) -> str:
    """The last .gitignore line that ignores the file `name` at the folder's top ("" when
    none does, or a later `!` line brings it back): the common forms, not every rule git has."""
    import fnmatch

    hit = ""
    for line in gitignore.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        neg = s.startswith("!")
        pat = s[1:] if neg else s
        pat = pat.lstrip("/").rstrip()
        if pat.endswith("/") or "/" in pat.strip("*"):
            continue
        if fnmatch.fnmatchcase(name, pat):
            hit = "" if neg else s
    return hit


_CODE_EXT = {".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".jsx", ".tsx"}
_SKIP_DIRS = {"node_modules", ".git", "build", "dist", ".cache", "public", "coverage", ".deploy", ".shopify",
              ".react-router", ".next", "tests", "test", "__tests__", "e2e"}
_PROCESS_ENV = re.compile(r"""process\.env(?:\.([A-Z][A-Z0-9_]*)\b|\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\])""")
_DOCKER_ENV = re.compile(r"^\s*(?:ENV|ARG)\s+([A-Z][A-Z0-9_]*)\b", re.M)
# Set by the toolkit or the platform, not by a team's env/ files.
_NOT_APP_VARS = {"PORT", "HOST", "NODE_ENV", "CI", "HOME", "PATH", "PWD", "TZ", "DEPLOY_APP_ROOT"}


def code_variables(app: Path, limit: int = 3000) -> tuple[EnvVar, ...]:
    """The variables the app's own code reads (`process.env.X`, `process.env["X"]`, outside
    tests and dependencies) and its Dockerfile sets (`ENV`/`ARG`), each with where it was
    first seen. Extensions' code is read too: it is built from the same repository."""
    seen: dict[str, str] = {}
    count = 0
    for dirpath, dirnames, filenames in os.walk(app):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.suffix not in _CODE_EXT or re.search(r"\.(test|spec)\.|^(playwright|vitest|jest|vite|eslint|"
                                                      r"prettier|postcss|tailwind)\.config\.", fn):
                continue
            count += 1
            if count > limit:
                break
            try:
                if p.stat().st_size > 512 * 1024:
                    continue
                text = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for m in _PROCESS_ENV.finditer(text):
                seen.setdefault(m.group(1) or m.group(2), p.relative_to(app).as_posix())
    for name in ("Dockerfile", "dockerfile"):
        if (app / name).is_file():
            for m in _DOCKER_ENV.finditer(_read(app / name)):
                seen.setdefault(m.group(1), name)
    return tuple(EnvVar(n, "", f"read by the app ({w})") for n, w in sorted(seen.items())
                 if n not in _NOT_APP_VARS)


_CONFIG_FLAG = re.compile(r"""--config(?:=|\s+)["']?([\w.-]+)""")


def workflow_configs(app: Path) -> tuple[tuple[str, str, str], ...]:
    """(environment, config file, workflow) for every `--config X` in the app's own GitHub
    workflows, the environment taken from the workflow's file name or its `environment:`."""
    out = []
    folder = app / ".github" / "workflows"
    if not folder.is_dir():
        return ()
    for p in sorted(folder.glob("*.y*ml")):
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        m = re.search(r"^\s*environment:\s*(?:\n\s*name:\s*)?[\"']?([\w-]+)", text, re.M)
        env = _role_of(p.stem) or (_role_of(m.group(1)) if m else "")
        if not env:
            continue
        for c in _CONFIG_FLAG.finditer(text):
            name = c.group(1)
            file = name if name.startswith("shopify.app") else f"shopify.app.{name}.toml"
            out.append((env, file, f".github/workflows/{p.name}"))
    return tuple(out)


def _read(path: Path) -> str:
    """A text file of the app; SettingsError naming it when it cannot be read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}).",
                            "Save the file as UTF-8 and run `invoke init` again.") from None
    except OSError as e:
        raise SettingsError(f"{path}: cannot be read ({e.strerror or e}).",
                            "Check the file's permissions and run `invoke init` again.") from None



def notices(f: AppFacts, app_rel: str) -> list[str]:
    """What `invoke init` tells the reader about the app beyond the files: each a line that
    says what was found, what it means for a promotion and what to do."""
    out = []
    order = ", ".join(n for n, _ in build.LOCKFILES)
    lock = f.lockfile or _LOCK_OF.get(f.package_manager, "package-lock.json")
    if not f.lockfile and f.dependencies:
        out.append(f"warning: {app_rel} has no lockfile ({order}): `invoke promote` refuses to build an app whose "
                   f"dependencies are not locked. Run `{f.package_manager} install` in {app_rel} and commit {lock}.")
    if f.lock_ignored:
        out.append(f"warning: {app_rel}/.gitignore ignores {lock} (line `{f.lock_ignored}`): a promotion builds "
                   f"from a git commit, which will not hold the lockfile, so the build is refused. Remove that line, "
                   f"then `git add {app_rel}/{lock}` and commit.")
    if len(f.lockfiles) > 1:
        others = ", ".join(f.lockfiles[1:])
        out.append(f"note: {app_rel} has {len(f.lockfiles)} lockfiles: {f.lockfile} is used ({f.package_manager}), "
                   f"because it comes first in the toolkit's order ({order}); {others} is ignored. Delete the one "
                   "your team does not use, so everyone installs the same tree.")
    for env in ENVIRONMENTS:
        c, why = f.shopify_choice(env)
        if env == "local" and c is None and not f.shopify:
            continue
        out.append(f"shopify {env}: " + (f"{c.file} ({why})" if c else f"none, the Shopify step is skipped ({why})"))
    known = {f.datasource.url_var, f.datasource.direct_url_var} if f.datasource else set()
    seeded = [e.name for e in f.code_vars if e.name not in known and e.name not in {x.name for x in f.env_example}]
    if seeded:
        out.append(f"variables read by the app's code or Dockerfile, added to env/variables.toml: {', '.join(seeded)} "
                   "(`invoke env.check --env=ENV` names each until it has a value)")
    try:
        plan = build.build_commands(f.app)
    except Exception:  # noqa: BLE001 - an app the build refuses was warned about above
        plan = []
    if plan:
        out.append("build plan (what promote runs in the commit's checkout): "
                   + "; ".join(" ".join(c) for c in plan))
        gen = any("generate" in c for c in plan)
        if f.package_manager == "pnpm" and f.prisma and gen:
            out.append("note: pnpm 10 does not run dependencies' build scripts, so Prisma's client is not "
                       "generated by the install: the build plan runs `prisma generate` after it.")
    if not f.tests:
        out.append("note: no test runner found (vitest, jest, ...): staging and production get gate.required = [] "
                   "(no evidence; the smoke checks and the watch are the only proof). docs/adopting.md says how to "
                   "add Vitest and require it.")
    return out


# ---------------------------------------------------------------- rendering (pure: facts -> files)

def _q(s: str) -> str:
    return json.dumps(s)


def _is_secret(name: str) -> bool:
    return name not in _PUBLIC and bool(_SECRET_NAME.search(name))


def _kind(name: str, value: str) -> str:
    v = value.strip()
    if name.endswith("_URL") or re.match(r"^(https?|postgres(ql)?|file|mysql|redis)://?", v) or v.startswith("file:"):
        return "url"
    if name == "PORT" or (v.isdigit() and len(v) < 10):
        return "int"
    if v.lower() in ("true", "false"):
        return "bool"
    return "string"


def _variables(f: AppFacts) -> list[dict]:
    """One entry per variable the app reads: from .env.example, the Shopify app config, the
    datasource, and the toolkit's own (the automation token). Values per environment."""
    # A literal `url = "file:dev.sqlite"` (the template's) still means DATABASE_URL elsewhere:
    # Postgres needs `url = env("DATABASE_URL")`, which the staging settings point out.
    db_var = ((f.datasource.url_var or "DATABASE_URL") if f.datasource else "")
    direct = (f.datasource.direct_url_var if f.datasource else "") or ""
    by: dict[str, dict] = {}

    def add(name, description, *, value="", kind=None, secret=None, parity=None, source=None,
            local_value=None, values=None, known=False, only=None, only_local=False):
        """`known`: the toolkit knows this variable better than a .env.example comment does.
        `only`: required in that environment only (a deployer variable of one environment);
        `only_local`: the app's own name for a URL that hosts get through env.push."""
        v = by.setdefault(name, {"name": name, "values": {}})
        if only:
            v["only"] = only
        if only_local:
            v["only_local"] = True
        if known or "description" not in v:
            v["description"] = description
        v["kind"] = kind or v.get("kind") or _kind(name, value)
        v["secret"] = _is_secret(name) if secret is None else secret
        v["parity"] = parity or v.get("parity") or "differs"
        v["source"] = source or v.get("source")
        if local_value is not None and not v["values"].get("local"):
            v["values"]["local"] = local_value
        for env, val in (values or {}).items():
            if val and not v["values"].get(env):
                v["values"][env] = val

    for e in f.env_example:
        kind = _kind(e.name, e.value)
        add(e.name, e.comment or f"{e.name} (from the app's .env.example)", value=e.value, kind=kind,
            parity="free" if not _is_secret(e.name) else "differs",
            local_value=e.value if e.value and not _is_secret(e.name) and e.name != db_var else None)
    for e in f.code_vars:
        # What the code reads is what the app needs: seeded with no value (env.check names it
        # until it is set), never with another environment's.
        if e.name != db_var and e.name != direct:
            add(e.name, f"{e.name}: {e.comment}", kind=_kind(e.name, ""), parity="differs" if _is_secret(e.name)
                else "free")
    for env in ENVIRONMENTS:
        # Each environment's values come from its own config only (shopify_choice).
        c = f.shopify_config(env)
        if c is None:
            continue
        add("SHOPIFY_API_KEY", "Client ID of the environment's Shopify app (client_id of its shopify.app toml; "
                               "public)", kind="string", secret=False, source="shopify-partners",
            parity="differs", values={env: c.client_id}, known=True)
        add("SHOPIFY_APP_URL", "Public HTTPS URL of the app (application_url of its shopify.app toml)",
            kind="url", secret=False, parity="differs", values={env: c.application_url}, known=True)
        if c.scopes:
            add("SCOPES", "Access scopes the app requests (access_scopes.scopes)", kind="string", secret=False,
                parity="same", values={env: c.scopes}, known=True)
    if f.shopify:
        add("SHOPIFY_API_SECRET", "Client secret of the environment's Shopify app", kind="string", secret=True,
            source="shopify-partners")
        add("SHOPIFY_APP_AUTOMATION_TOKEN", "App Automation Token the deploy uses for `shopify app deploy` "
                                            "(Dev Dashboard; expires after 1, 3 or 6 months)",
            kind="string", secret=True, source="shopify-partners")
    if db_var:
        provider = f.datasource.provider if f.datasource else ""
        example = next((e.value for e in f.env_example if e.name == db_var), "")
        if provider == "sqlite":
            local_url = (f.datasource.url if f.datasource else "") or (example if example.startswith("file:") else "") or "file:./dev.sqlite"
            what = "a SQLite file locally"
        else:
            # A Postgres app's local database is Postgres: the app's own example URL, else the
            # developer fills it in (env.check names it); never a SQLite file, never staging's.
            local_url = example if re.match(r"postgres(ql)?://", example) else ""
            what = "a Postgres database on this machine locally"
        add(db_var, f"Prisma datasource URL the app reads ({what}; on hosts env.push writes the environment's)",
            kind="url", secret=True, source="runner", local_value=local_url or None, known=True,
            only_local=True)
        for env in ENVIRONMENTS[1:]:
            # The deployer reads each environment's URL from its own variable: a shell that holds
            # one environment's URL can never make a task act on or report another's database.
            add(f"{env.upper()}_DATABASE_URL", f"URL of the {env} database (the deployer's; the app gets it as "
                f"{db_var} through env.push)", kind="url", secret=True, source="runner", only=env, known=True)
            if direct:
                add(f"{env.upper()}_DIRECT_URL", f"Direct (session) URL of the {env} database for migrations and "
                    f"pg_dump (Prisma's directUrl; the app gets it as {direct})", kind="url", secret=True,
                    source="runner", only=env, known=True)
    if direct:
        add(direct, "Direct (session) connection for migrations and pg_dump (Prisma's directUrl)", kind="url",
            secret=True, only_local=True)
    return list(by.values())


def _matrix(f: AppFacts, today: date) -> str:
    lines = [
        "# The variable matrix of this app: one [variables.NAME] table per variable the app or the",
        "# deploy reads (seeded by `invoke init` from the app's .env.example, its shopify.app*.toml and",
        "# schema.prisma). Per variable: description, owner, type, parity (same | differs | free,",
        "# staging against production) and, per environment, required / secret / source.",
        "# Plain values live in env/<env>.env, secrets in the process environment (GitHub environment",
        "# secrets in CI) or the git-ignored env/<env>.local.env. Check with `invoke env.check --env=NAME`.",
        "#",
        f"# last_rotated = {today.isoformat()} below is the day `invoke init` ran: set it to the day each",
        "# secret's current value was issued.",
        "",
        "[matrix]",
        f"environments = [{', '.join(_q(e) for e in ENVIRONMENTS)}]",
        '''production = ["production"]''',
        '''local_files = ["local"]''',
    ]
    for v in _variables(f):
        name = v["name"]
        lines += ["", f"[variables.{name}]", f"description = {_q(v['description'])}", 'owner = "team"',
                  f"type = {_q(v['kind'])}", f"parity = {_q(v['parity'])}"]
        if v["secret"] and v.get("only"):
            lines += ["secret = true", "rotation_days = 90", f"source = {_q(v['source'] or 'runner')}",
                      "required = false"]
            lines.append(f"{v['only']} = {{ required = true, last_rotated = {today.isoformat()} }}")
        elif v["secret"] and v.get("only_local"):
            # The app's name for it; each remote environment's value comes from <ENV>_DATABASE_URL.
            lines += ["secret = true", "rotation_days = 90", f"source = {_q(v['source'] or 'runner')}",
                      "required = false", 'local = { secret = false, source = "dotenv", required = true }']
        elif v["secret"]:
            lines += ["secret = true", "rotation_days = 90",
                      f"source = {_q(v['source'] or 'runner')}"]
            # Locally nothing is a secret: a SQLite file, dev credentials (or none at all).
            local_has = bool(v["values"].get("local"))
            lines.append(f"local = {{ secret = false, source = \"dotenv\"{'' if local_has else ', required = false'} }}")
            for env in ENVIRONMENTS[1:]:
                lines.append(f"{env} = {{ last_rotated = {today.isoformat()} }}")
        else:
            if v["source"] and v["source"] != "dotenv":
                lines.append(f"source = {_q(v['source'])}")
            for env in ENVIRONMENTS:
                if env == "local" and not v["values"].get("local"):
                    lines.append("local = { required = false }")
    return "\n".join(lines) + "\n"


def _dotenv(f: AppFacts, env: str) -> str:
    head = {
        "local": "# Plain values for `local` (this machine), python-dotenv syntax; nothing here is a secret.",
        "staging": "# Plain (non-secret) values for `staging`. Secrets come from the GitHub environment \"staging\".",
        "production": "# Plain (non-secret) values for `production`. Secrets come from the GitHub environment "
                      "\"production\".",
    }[env]
    lines = [head, "# Declared in env/variables.toml; check with `invoke env.check --env=" + env + "`."]
    for v in _variables(f):
        if v["secret"] and env != "local":
            continue
        val = v["values"].get(env, "")
        if v.get("only") or (v.get("only_local") and env != "local"):
            continue          # a deployer variable of one environment, or the app's name on hosts
        if env == "local" and not val and not v.get("only_local"):
            continue
        if not val:
            lines.append(f"# {v['name']}=   (fill in: {v['description']})")
        else:
            lines.append(f"{v['name']}={val}")
    return "\n".join(lines) + "\n"


def _local_db_url(f: AppFacts) -> str:
    ds = f.datasource
    if ds and ds.url.startswith("file:"):
        return ds.url
    for e in f.env_example:
        if ds and e.name == ds.url_var and e.value.startswith("file:"):
            return e.value
    return "file:./dev.sqlite"


def _env_toml(f: AppFacts, env: str, app_rel: str) -> str:
    todo = f.database_todo()
    # Never guess a database: an unsupported provider is not rendered as sqlite or postgresql.
    ds = f.datasource if not todo else None
    provider = ds.provider if ds else "none"
    shop = f.shopify_config(env)
    mig = f.migrations_dir or "prisma/migrations"
    out = [f"# `{env}`: written by `invoke init` for the app at `{app_rel}`. Every path below says its base.",
           "", "[environment]"]
    if env == "local":
        what = {"sqlite": "SQLite", "postgresql": "Postgres"}.get(provider, "no database")
        out += ['kind = "local"', f'description = "this machine: {app_rel}, {what}"']
    else:
        out += ['kind = "remote"', f'description = "{env}"']
    out += [f"app_dir = {_q(app_rel)}                 # the app folder, relative to the project root (DEPLOY_ROOT)"]
    if env != "local":
        out += [f'app_url = ""                # the public URL of the app in {env} (e.g. "https://{env}.example.com"): '
                "smoke-checked after each release once set; empty: the hosts only"]
    if env == "production":
        out += ["protected = true", "requires_staging_run = true", 'staging_env = "staging"']
    out += ["", "[app]",
            "# The release contract, the same on every environment. \"auto\" is what was detected:",
            f"# install `{' '.join(install_argv(f.package_manager, lockfile=bool(f.lockfile)))}`"
            + (f", build `{f.scripts['build']}`" if f.scripts.get("build") else ", no build script")
            + ", dev dependencies pruned,",
            "# start `" + (f.start_script or '(no start script: set start = ["node", "server.js"])') + "`.",
            'start = "auto"',
            'port_var = "PORT"                  # the variable the app reads its port from',
            'health_path = "/"                  # 2xx/3xx passes (a Shopify app\'s / redirects to its auth)']
    if env == "local":
        out += ["", "[local]", 'root = ".deploy/local"           # releases/, current, logs; relative to the project root',
                'host = "127.0.0.1"', "port = 0                         # a free loopback port, kept across releases"]
    else:
        out += ["", "[hosts]", f'hosts = ["deploy@{env}-1.example.internal"]   # user@host[:port], one per server',
                'deploy_to = "/srv/app"                # on each host (absolute)',
                'shared_files = [".env"]               # relative to <deploy_to>/shared/, linked into each release',
                "push_env = true                       # each promotion writes shared/.env from env/ and the secrets",
                '# key_file = "~/.ssh/deploy_ed25519"  # the SSH key (default: ssh_config, the agent, ~/.ssh/id_*)',
                '# known_hosts = "~/.ssh/known_hosts"  # host keys to trust (unknown or changed keys are refused)',
                "# app_ports = [3000]                  # one app port per host (default: app.port, 3000)"]
    out += ["", "[database]"]
    if todo:
        out += ["# TODO(invoke init): THE DATABASE IS NOT SET UP. " + todo + ".",
                "# Set provider (\"sqlite\" or \"postgresql\"), url or url_var and migrations_dir (relative to",
                "# app_dir) below by hand; until then no promotion migrates or backs up the app's database."]
    app_var = (ds.url_var if ds else "") or "DATABASE_URL"
    if env == "local":
        out += [f'provider = "{provider}"' if ds else 'provider = "none"']
        if ds and provider == "sqlite":
            out += [f"url = {_q(_local_db_url(f))}             # Prisma style: relative to the folder of "
                    f"schema.prisma ({app_rel}/{Path(mig).parent.as_posix()})"]
        elif ds:
            out += [f'url_var = "{app_var}"                # read from env/local.env (or env/local.local.env), '
                    "as env.check reports it",
                    f'direct_url_var = "{ds.direct_url_var}"' if ds.direct_url_var else
                    'direct_url_var = ""                  # no directUrl in the schema']
    else:
        if ds:
            up = env.upper()
            out += ['provider = "postgresql"                 # staging and production run on Postgres',
                    f'url_var = "{up}_DATABASE_URL"        # this environment\'s own variable (a secret): a shell '
                    "holding another environment's URL is never read for this one",
                    f'app_url_var = "{app_var}"            # the name the app reads it by (env.push writes it so)',
                    (f'direct_url_var = "{up}_DIRECT_URL"' if ds.direct_url_var else 'direct_url_var = ""')]
        else:
            out += ['provider = "none"']
    if ds:
        pg_mig = mig
        if env != "local" and provider == "sqlite":
            pg_mig = (Path(mig).parent / "postgres" / "migrations").as_posix()
            out += [f"# {app_rel}/{mig} is written for SQLite: keep a Postgres schema and its migrations",
                    "# beside it (docs/runbooks/prisma_staging_postgres.md) and point migrations_dir there."]
        out += [f"migrations_dir = {_q(pg_mig)}   # relative to app_dir (Prisma's migrations folder)",
                'backup_dir = ".deploy/backups"              # relative to the project root']
    out += ["", "[shopify]"]
    if env == "local" or shop is None:
        why = "no Shopify push from a laptop" if env == "local" else f.shopify_choice(env)[1]
        out += [f'config = ""                     # {why}: the Shopify step is skipped']
    else:
        out += [f"config = {_q(shop.name or 'shopify.app.toml')}        # {shop.file} in app_dir: "
                f"{f.shopify_choice(env)[1]}"]
    out += ["", "[gate]"]
    if env == "local":
        out += ["required = []                  # the laptop promotes without evidence; staging gates"]
    elif not f.tests:
        out += ["# No test runner was found in the app, so no evidence is required yet: promotions are",
                "# proven only by the smoke checks and the watch (the app starts and answers health_path),",
                "# not by tests. Add Vitest and its report, then require it (docs/adopting.md, \"Starting",
                "# without tests\"):  required = [\"vitest\"]",
                "required = []",
                'evidence_dir = "evidence"      # relative to the project root', "max_age_hours = 24"]
    else:
        out += ['required = ["vitest"]          # add "playwright", "lighthouse" once CI writes them',
                'evidence_dir = "evidence"      # relative to the project root', "max_age_hours = 24"]
    out += ["", "[smoke]", "retries = 5                    # no checks listed: app.health_path on the app and each host",
            "", "[watch]", f"window_seconds = {2 if env == 'local' else 60}"]
    return "\n".join(out) + "\n"


# ---- the GitHub workflows `init` writes (the toolkit's own are the model: .github/workflows/)
#
# Hardening, as in ours: actions pinned to commit SHAs (the tag in the comment), the Shopify CLI
# pinned, each secret given to the one step that needs it, workflow values reach `run:` scripts
# through `env:` only, npm and pip cached, a first step that names every required secret or
# variable that is not set. Production takes the evidence and artifact the staging run of the
# same commit proved (found with `gh run list`, never pasted) and runs no test itself.
SHOPIFY_CLI_VERSION = "3.94.3"          # the release the toolkit's contract test checked
PG_MAJOR_DEFAULT = "17"                 # pg_dump must be at least the server's major: vars.PG_MAJOR overrides
ACTIONS = {
    "checkout": "actions/checkout@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0",
    "setup-node": "actions/setup-node@49933ea5288caeca8642d1e84afbd3f7d6820020 # v4.4.0",
    "setup-python": "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0",
    "cache": "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3",
    "upload-artifact": "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02 # v4.6.2",
    "download-artifact": "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093 # v4.3.0",
}
# What every deploying job needs besides the app's own secrets (docs/adopting.md says where each comes from).
WORKFLOW_VARS = ("DEPLOY_TOOLKIT", "DEPLOY_KNOWN_HOSTS")       # repository or environment variables
WORKFLOW_SECRETS = ("DEPLOY_SSH_KEY", "DEPLOY_LEDGER_URL")     # environment secrets


def _e(expr: str) -> str:
    return "${{ " + expr + " }}"


def _indent(text: str, n: int) -> str:
    return "".join((" " * n + ln) if ln.strip() else ln for ln in text.splitlines(keepends=True))


def _env_block(pairs: Sequence[tuple[str, str]], n: int = 10) -> str:
    return "".join(f"{' ' * n}{k}: {v}\n" for k, v in pairs) or f"{' ' * n}NO_SECRETS: \"\"\n"


def _app_secrets(f: AppFacts) -> list[str]:
    return [v["name"] for v in _variables(f) if v["secret"]]


def _check_inputs_step(f: AppFacts, env: str) -> str:
    """Fail fast: every secret and variable the job reads is set, else the names of the missing."""
    names = [*WORKFLOW_VARS, *WORKFLOW_SECRETS, *_app_secrets(f)]
    pairs = [(n, _e(f"vars.{n}") if n in WORKFLOW_VARS else _e(f"secrets.{n}")) for n in names]
    return (
        f"      - name: Required secrets and variables are set\n"
        f"        env:\n{_env_block(pairs)}"
        f"        run: |\n"
        f"          missing=\"\"\n"
        f"          for name in {' '.join(names)}; do\n"
        f"            [ -n \"$(printenv \"$name\")\" ] || missing=\"$missing $name\"\n"
        f"          done\n"
        f"          if [ -n \"$missing\" ]; then\n"
        f"            echo \"::error::not set for environment {env}:$missing (Settings > Secrets and variables > Actions, "
        f"or the environment's own; docs/adopting.md says what each is)\"\n"
        f"            exit 1\n"
        f"          fi\n"
    )


def _node_cache(f: AppFacts) -> str:
    if not f.lockfile or f.package_manager not in ("npm", "yarn"):
        return ""   # pnpm's cache needs pnpm on PATH first; no lockfile, nothing to key on
    return (f"          cache: {f.package_manager}\n"
            f"          cache-dependency-path: {_e('env.APP_DIR')}/{f.lockfile}\n")


def _setup_steps(f: AppFacts, *, ref: str = "", tools: bool = True) -> str:
    """Checkout, Node and Python (cached), the toolkit; with `tools`: the pinned Shopify CLI, a
    pg_dump matching the server, and the SSH key and known hosts."""
    with_ref = f"          ref: {ref}\n" if ref else ""
    out = (
        f"      - uses: {ACTIONS['checkout']}\n"
        f"        with:\n{with_ref}"
        f"          fetch-depth: 0   # promote resolves the SHA and checks the tree is clean\n"
        f"          persist-credentials: false\n\n"
        f"      - uses: {ACTIONS['setup-node']}\n"
        f"        with:\n"
        f"          node-version: 20   # Shopify CLI 3.x runs on Node 20\n{_node_cache(f)}\n"
        f"      - uses: {ACTIONS['setup-python']}\n"
        f"        with:\n"
        f"          python-version: \"3.11\"\n\n"
        f"      - name: Cache pip's downloads\n"
        f"        uses: {ACTIONS['cache']}\n"
        f"        with:\n"
        f"          path: ~/.cache/pip\n"
        f"          key: pip-{_e('runner.os')}-py3.11-{_e('vars.DEPLOY_TOOLKIT')}\n\n"
        f"      - name: Install the deploy toolkit\n"
        f"        env:\n"
        f"          DEPLOY_TOOLKIT: {_e('vars.DEPLOY_TOOLKIT')}   # pip requirement, e.g. git+https://github.com/ORG/TOOLKIT@TAG\n"
        f"        run: pip install \"$DEPLOY_TOOLKIT\"\n"
    )
    if not tools:
        return out
    out += (
        f"\n      - name: Install the Shopify CLI (pinned)\n"
        f"        run: npm install --global \"@shopify/cli@$SHOPIFY_CLI_VERSION\"\n"
    )
    if f.datasource and f.datasource.provider == "postgresql":
        pg_major = f"vars.PG_MAJOR || '{PG_MAJOR_DEFAULT}'"
        out += (
            f"\n      - name: PostgreSQL client matching the server (pg_dump must be at least its major version)\n"
            f"        env:\n"
            f"          PG_MAJOR: {_e(pg_major)}\n"
            f"        run: |\n"
            f"          sudo /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y\n"
            f"          sudo apt-get install -y --no-install-recommends \"postgresql-client-$PG_MAJOR\"\n"
            f"          echo \"/usr/lib/postgresql/$PG_MAJOR/bin\" >> \"$GITHUB_PATH\"\n"
        )
    out += (
        f"\n      - name: SSH key and known hosts for the hosts\n"
        f"        env:\n"
        f"          DEPLOY_SSH_KEY: {_e('secrets.DEPLOY_SSH_KEY')}\n"
        f"          DEPLOY_KNOWN_HOSTS: {_e('vars.DEPLOY_KNOWN_HOSTS')}\n"
        f"        run: |\n"
        f"          install -m 700 -d ~/.ssh\n"
        f"          ( umask 077 && printf '%s\\n' \"$DEPLOY_SSH_KEY\" > ~/.ssh/id_ed25519 )\n"
        f"          printf '%s\\n' \"$DEPLOY_KNOWN_HOSTS\" > ~/.ssh/known_hosts\n"
    )
    return out


def _evidence_steps(f: AppFacts, env: str) -> str:
    install = " ".join(install_argv(f.package_manager, lockfile=bool(f.lockfile)))
    return (
        f"      - name: Install the app and make the evidence (Vitest JSON)\n"
        f"        working-directory: {_e('env.APP_DIR')}\n"
        f"        run: |\n"
        f"          {install}\n"
        f"          mkdir -p \"$GITHUB_WORKSPACE/evidence\"\n"
        f"          npx vitest run --reporter=default --reporter=json --outputFile.json=\"$GITHUB_WORKSPACE/evidence/vitest.json\"\n\n"
        f"      - name: Bind the reports to this commit (invoke evidence.collect)\n"
        f"        run: invoke evidence.collect --sha=\"$SHA\" --env={env} --files=evidence/vitest.json\n"
    )


def _promote_steps(f: AppFacts, env: str) -> str:
    secrets = _env_block([(n, _e(f"secrets.{n}")) for n in _app_secrets(f)])
    return (
        f"      - name: Check the variables (invoke env.check)\n"
        f"        env:\n{secrets}"
        f"        run: invoke env.check --env={env}\n\n"
        f"      - name: Promote (invoke promote)\n"
        f"        env:\n{secrets}"
        f"          DEPLOY_LEDGER_URL: {_e('secrets.DEPLOY_LEDGER_URL')}   # one ledger: locks, history, staging's record\n"
        f"        run: invoke promote --to={env} --sha=\"$SHA\" --yes\n"
    )


def _upload(name: str, path: str, days: int) -> str:
    return (
        f"        uses: {ACTIONS['upload-artifact']}\n"
        f"        with:\n"
        f"          name: {name}\n"
        f"          path: {path}\n"
        f"          include-hidden-files: true\n"
        f"          if-no-files-found: error\n"
        f"          retention-days: {days}\n"
    )


def _download(name: str, path: str, run_id: str = "") -> str:
    other = f"          run-id: {run_id}\n          github-token: {_e('github.token')}\n" if run_id else ""
    return (
        f"        uses: {ACTIONS['download-artifact']}\n"
        f"        with:\n"
        f"          name: {name}\n"
        f"          path: {path}\n{other}"
    )


def _keep_for_production(sha: str) -> str:
    return (
        f"      - name: Keep the evidence and the artifact for production (the bytes staging tested)\n"
        f"        if: success()\n"
        f"        uses: {ACTIONS['upload-artifact']}\n"
        f"        with:\n"
        f"          name: staging-proof-{sha}\n"
        f"          path: |\n"
        f"            evidence/\n"
        f"            .deploy/artifacts/\n"
        f"          include-hidden-files: true   # .deploy and .lighthouseci are dot-folders\n"
        f"          if-no-files-found: error\n"
        f"          retention-days: 90\n"
    )


def _header(what: str) -> str:
    return (f"# {what}\n"
            "# Written by `invoke init`; every command is a toolkit task (`invoke --list`). Hardening, as the\n"
            "# toolkit's own workflows: actions pinned to commit SHAs, the Shopify CLI pinned, npm and pip\n"
            "# cached, each secret given to the one step that needs it, workflow values reach `run:`\n"
            "# scripts through `env:` only, and a first step that names any secret or variable not set.\n")


def _job(name: str, env: str, title: str, body: str, *, extra: str = "", timeout: int = 45,
         sha: str = "github.sha") -> str:
    return (
        f"  {name}:\n"
        f"    name: {title}\n{extra}"
        f"    runs-on: ubuntu-24.04\n"
        f"    timeout-minutes: {timeout}\n"
        f"    environment:\n"
        f"      name: {env}\n"
        f"    concurrency:\n"
        f"      group: deploy-{env}\n"
        f"      cancel-in-progress: false   # never kill a promotion half way; the next one waits\n"
        f"    env:\n"
        f"      SHA: {_e(sha)}\n"
        f"      DEPLOY_WHO: {_e('github.actor')}\n"
        f"    steps:\n{body}"
    )


def _top(name: str, trigger: str, app_rel: str, *, actions_read: bool = False) -> str:
    perms = "  contents: read\n" + ("  actions: read       # artifacts and runs of another workflow run\n"
                                    if actions_read else "")
    return (f"name: {name}\n\non:\n{trigger}\n\npermissions:\n{perms}\n"
            f"env:\n  APP_DIR: {app_rel}\n  SHOPIFY_CLI_VERSION: {SHOPIFY_CLI_VERSION}\n"
            f"  PYTHONUNBUFFERED: \"1\"\n\njobs:\n")


_SHA_CHECK = (
    "      - name: The input is a full commit SHA\n"
    "        run: |\n"
    "          if ! printf '%s' \"$SHA\" | grep -Eq '^[0-9a-f]{40}$'; then\n"
    "            echo \"::error::sha must be 40 lowercase hex characters\"\n"
    "            exit 2\n"
    "          fi\n"
)
_SHA_INPUT = ("  workflow_dispatch:\n    inputs:\n      sha:\n"
              "        description: \"Commit to promote (40 hex characters; a deploy-staging run of it succeeded)\"\n"
              "        required: true\n        type: string")


def _find_staging_run() -> str:
    """The newest succeeded deploy-staging run of $SHA, as the step output `run_id`."""
    return (
        "      - name: Find the staging run of this commit\n"
        "        id: staging\n"
        "        env:\n"
        f"          GH_TOKEN: {_e('github.token')}\n"
        f"          REPO: {_e('github.repository')}\n"
        "        run: |\n"
        "          run_id=$(gh run list --repo \"$REPO\" --workflow deploy-staging.yml --commit \"$SHA\" \\\n"
        "            --status success --limit 1 --json databaseId --jq '.[0].databaseId // empty')\n"
        "          if [ -z \"$run_id\" ]; then\n"
        "            echo \"::error::no succeeded deploy-staging run of $SHA: promote it to staging first\"\n"
        "            exit 1\n"
        "          fi\n"
        "          echo \"run_id=$run_id\" >> \"$GITHUB_OUTPUT\"\n"
    )


def _workflow(f: AppFacts, env: str, app_rel: str) -> str:
    if env == "staging":
        body = "\n".join([_check_inputs_step(f, env), _setup_steps(f), _evidence_steps(f, env),
                          _promote_steps(f, env), _keep_for_production(_e("github.sha"))])
        return (_header("Push to main -> the app's tests make the evidence -> `invoke promote --to=staging`;\n"
                        "# the evidence and artifact are kept for production.")
                + _top("deploy-staging", "  push:\n    branches: [main]", app_rel)
                + _job("deploy", env, "promote to staging", body))
    body = "\n".join([
        _SHA_CHECK, _check_inputs_step(f, env), _find_staging_run(),
        _setup_steps(f, ref=_e("inputs.sha")),   # before the download: checkout empties the workspace
        "      - name: The evidence and artifact staging proved (the download fails when that run has none)\n"
        + _download(f"staging-proof-{_e('inputs.sha')}", ".", _e("steps.staging.outputs.run_id")),
        "      - name: Judge staging's evidence (invoke gate)\n"
        f"        run: invoke gate --env={env} --sha=\"$SHA\"\n",
        _promote_steps(f, env)])
    return (_header("Run by hand after staging: the evidence and artifact the staging run of the commit proved\n"
                    "# -> `invoke promote --to=production` (no test is re-run, nothing is rebuilt).")
            + _top("deploy-production", _SHA_INPUT, app_rel, actions_read=True)
            + _job("deploy", env, "promote to production", body, timeout=60, sha="inputs.sha"))


def _rollback_workflow(f: AppFacts, app_rel: str) -> str:
    trigger = ("  workflow_dispatch:\n    inputs:\n"
               "      environment:\n        description: \"Environment to roll back\"\n        required: true\n"
               "        type: choice\n        options: [staging, production]\n"
               "      db:\n        description: \"Database: keep it, down-migrate this release's migrations, or restore "
               "the pre-deploy backup\"\n        required: true\n        type: choice\n"
               "        options: [keep, down, restore]\n        default: keep")
    check = _check_inputs_step(f, "the chosen environment")
    secrets = _env_block([(n, _e(f"secrets.{n}")) for n in _app_secrets(f)])
    body = "\n".join([
        check, _setup_steps(f),
        "      - name: Roll back (invoke rollback)\n"
        f"        env:\n{secrets}"
        f"          DEPLOY_LEDGER_URL: {_e('secrets.DEPLOY_LEDGER_URL')}\n"
        "          TARGET: " + _e("inputs.environment") + "\n"
        "          DB_MODE: " + _e("inputs.db") + "\n"
        "        run: invoke rollback --env=\"$TARGET\" --db=\"$DB_MODE\" --yes\n"])
    job = _job("rollback", _e("inputs.environment"), f"roll back {_e('inputs.environment')}", body, timeout=30)
    return (_header("On-call's way back (docs/runbooks/rollback.md): previous release, previous Shopify version,\n"
                    "# the database as chosen; waits for the chosen environment's reviewers.")
            + _top("rollback", trigger, app_rel) + job)


def _hotfix_workflow(f: AppFacts, app_rel: str) -> str:
    trigger = (_SHA_INPUT.replace("Commit to promote (40 hex characters; a deploy-staging run of it succeeded)",
                                  "The hotfix commit (40 hex characters, on the hotfix branch)")
               + "\n      environment:\n        description: \"How far: staging only, or staging then production\"\n"
                 "        required: true\n        type: choice\n        options: [staging, production]\n"
                 "        default: staging")
    staging = "\n".join([_SHA_CHECK, _check_inputs_step(f, "staging"), _setup_steps(f, ref=_e("inputs.sha")),
                         _evidence_steps(f, "staging"), _promote_steps(f, "staging"),
                         _keep_for_production(_e("inputs.sha"))])
    production = "\n".join([
        _check_inputs_step(f, "production"), _setup_steps(f, ref=_e("inputs.sha")),
        "      - name: The evidence and artifact this run's staging job proved\n"
        + _download(f"staging-proof-{_e('inputs.sha')}", "."),
        "      - name: Judge staging's evidence (invoke gate)\n"
        "        run: invoke gate --env=production --sha=\"$SHA\"\n",
        _promote_steps(f, "production")])
    return (_header("A hotfix through the same gated path (docs/runbooks/hotfix.md): its tests, staging, then\n"
                    "# production with this run's evidence and artifact when asked.")
            + _top("hotfix", trigger, app_rel)
            + _job("staging", "staging", "promote the hotfix to staging", staging, sha="inputs.sha") + "\n"
            + _job("production", "production", "promote the hotfix to production", production, timeout=60,
                   sha="inputs.sha", extra="    needs: staging\n    if: inputs.environment == 'production'\n"))


def _runbooks(f: AppFacts, app_rel: str, tasks: Sequence[str]) -> dict[str, str]:
    """The runbooks `invoke runbooks.check` expects (deploy.runbooks.RUNBOOKS), written for this
    app: each procedure step is a real task; the staging runbook lists every task, so each is
    in some runbook."""
    pm = f.package_manager
    db = f.datasource.provider if f.datasource else "none"
    shop = ", ".join(c.file for c in f.shopify) or "none"
    found = (f"Detected by `invoke init` in `{app_rel}`: package manager **{pm}** ({f.lockfile or 'no lockfile'}), "
             f"start script `{f.start_script or '(none)'}`, Prisma provider **{db}** with migrations in "
             f"`{f.migrations_dir or '(none)'}`, Shopify configs {shop}.")
    every = "\n".join(f"invoke {name} --help" for name in tasks)
    return {
        "deployment_staging.md": f"""# Runbook: deploying to staging

{found}

A promotion takes everything from one commit of the app: the artifact (built once, reused), the
migrations and the Shopify configuration (`shopify app deploy --path` on that commit's checkout).

```sh
invoke env.check --env=staging
invoke evidence.collect --sha=HEAD --env=staging --files=evidence/vitest.json
invoke gate --env=staging
invoke promote --to=staging --dry-run
invoke promote --to=staging
invoke status
```

If a promotion was killed: `invoke promote --to=staging --resume` finishes it,
`invoke promote --to=staging --abort` undoes it. `invoke lock.status --env=staging` shows who
holds the environment.

## Every task

```sh
{every}
```
""",
        "rollback.md": """# Runbook: rolling back

```sh
invoke rollback --env=staging --dry-run
invoke rollback --env=staging --yes
invoke rollback --env=production --db=restore --yes
invoke hosts.releases --env=production
invoke shopify.versions --env=production
```

`--db=keep` (default) leaves the database; `--db=restore` loads the backup taken before the
release being rolled back (Prisma migrations are forward-only: no down.sql).
""",
        "hotfix.md": """# Runbook: a hotfix

Rehearse it on staging first; the drill is recorded and timed:

```sh
invoke hotfix.drill --env=staging
invoke promote --to=staging --sha=HOTFIX_SHA
invoke promote --to=production --sha=HOTFIX_SHA
```
""",
        "local_bootstrap.md": f"""# Runbook: a working local app

```sh
invoke bootstrap
invoke promote --to=local
invoke app.stop --env=local
invoke rollback --env=local
```

`invoke bootstrap` and `invoke promote --to=local` use the same database: `database.url` of
`env/local.toml` (relative to the folder of `{f.schema or 'prisma/schema.prisma'}`).
""",
        "prisma_staging_postgres.md": f"""# Runbook: the Prisma database on staging and production

Migrations in `{f.migrations_dir or 'prisma/migrations'}` are {db}; staging and production run
Postgres, with their own migrations folder (`database.migrations_dir` in env/<env>.toml,
relative to the app folder).

```sh
invoke db.status --env=staging
invoke db.backup --env=staging
invoke db.verify-backup --env=staging
invoke db.migrate --env=staging
invoke db.restore --env=staging --yes
```

Prisma writes no down.sql: a failed promotion restores the backup taken just before it, or,
after a first promotion, empties the database again.
""",
        "go_live.md": """# Runbook: going live (production)

```sh
invoke approve --env=production --role=product --by=NAME
invoke golive.check --env=production
invoke promote --to=production --yes
```

Production gets exactly the artifact staging proved, after the approvals its settings require.
""",
    }


def render(f: AppFacts, app_rel: str, today: date, tasks: Sequence[str] = ()) -> dict[str, str]:
    """Every starting file for the app at `app_rel` (relative to the project root): path ->
    text. `tasks`: the task names the runbooks list (the toolkit's, at `invoke init`)."""
    files = {f"env/{env}.toml": _env_toml(f, env, app_rel) for env in ENVIRONMENTS}
    files["env/variables.toml"] = _matrix(f, today)
    for env in ENVIRONMENTS:
        files[f"env/{env}.env"] = _dotenv(f, env)
    for env in ENVIRONMENTS[1:]:
        files[f".github/workflows/deploy-{env}.yml"] = _workflow(f, env, app_rel)
    files[".github/workflows/rollback.yml"] = _rollback_workflow(f, app_rel)
    files[".github/workflows/hotfix.yml"] = _hotfix_workflow(f, app_rel)
    for name, text in _runbooks(f, app_rel, tasks).items():
        files[f"docs/runbooks/{name}"] = text
    return files


def ignore_rules(f: AppFacts, app_rel: str) -> dict[str, str]:
    """What must stay out of git, as (a path to test with `git check-ignore`) -> (the rule to
    add to .gitignore): the toolkit's state, local secrets, the local SQLite database."""
    rules = {".deploy/ledger.db": "/.deploy/", "env/local.local.env": "/env/*.local.env",
             "evidence/manifest.json": "/evidence/", "feedback/deployment.md": "/feedback/"}
    if f.datasource and f.datasource.provider == "sqlite" and f.schema:
        url = _local_db_url(f)
        name = url.split(":", 1)[1].split("?", 1)[0]
        if name and not name.startswith("/"):
            base = (Path(app_rel) / Path(f.schema).parent).as_posix()
            db = Path(os.path.normpath(f"{base}/{name}")).as_posix()
            if not db.startswith("../"):           # an app outside the project has its own .gitignore
                rules[db] = f"/{db}*"
    return rules


IGNORE_HEADER = "# deploy toolkit: its state, local secrets and the local database stay out of git"


def add_ignore_rules(gitignore: Path, rules: Sequence[str]) -> None:
    """Append `rules` to `gitignore` (created when missing) under IGNORE_HEADER; what the
    file holds is kept as it is, and a rule already in it is not written twice."""
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    new = [r for r in rules if r not in have]
    if not new:
        return
    lines = ([""] if text.strip() else []) + ([IGNORE_HEADER] if IGNORE_HEADER not in have else []) + new
    sep = "" if not text or text.endswith("\n") else "\n"
    tmp = gitignore.with_name(".gitignore.init-tmp")
    tmp.write_text(text + sep + "\n".join(lines) + "\n", encoding="utf-8")
    if gitignore.exists():
        os.chmod(tmp, gitignore.stat().st_mode & 0o777)
    os.replace(tmp, gitignore)


def write(root: Path, files: Mapping[str, str], *, force: bool = False) -> WriteResult:
    """Write `files` under `root`; an existing file is kept unless `force` (then replaced)."""
    written, kept = [], []
    for rel, text in files.items():
        p = Path(root) / rel
        if p.exists() and not force:
            kept.append(rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.init-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        written.append(rel)
    return WriteResult(tuple(written), tuple(kept))
