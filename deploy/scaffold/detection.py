"""What the app has: `detect` reads an app folder into `AppFacts`.

Package manager and lockfiles, package.json's scripts and dependencies, the Prisma schema and
its datasource, the Shopify configs `shopify.app[.<name>].toml`, the variables of
`.env.example`, what the code reads (`process.env.X`, the Dockerfile's ENV/ARG), the
`--config` the app's own workflows pass, the test runner, its own Dockerfile and whether its
start migrates (`dockerfile_facts`: the image target's choice). A new thing `init` should
notice about an app is read here, into a field of `AppFacts`.

The parsers are deliberately small: they read what Shopify's React Router template and
Prisma write (`datasource db { provider = "sqlite" url = "file:dev.sqlite" }`, dotenv
lines, the top-level keys of the app TOML), not every syntax those formats allow.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import tomllib
from pathlib import Path

from deploy import build
from deploy.errors import SettingsError
from deploy.scaffold.facts import AppFacts, Datasource, EnvVar, PackageManager, ShopifyConfig, role_of


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
        ignored = ignores(text, lock or LOCK_OF.get(pm, "package-lock.json"))
    runners = ("vitest", "jest", "mocha", "@playwright/test", "ava", "tap")
    tests = next((r for r in runners if r in deps), "")
    if not tests and re.search(r"\b(vitest|jest|mocha|playwright|node --test)\b", scripts.get("test", "")):
        tests = scripts["test"].split()[0]
    return AppFacts(app, pm, lock, scripts, str(engines.get("node", "") or ""), schema_rel, ds, mig,
                    tuple(configs), env_vars, uses_prisma, prisma_config, lockfiles, ignored, bool(deps),
                    code_variables(app), workflow_configs(app), tests, *dockerfile_facts(app, scripts))


DOCKERFILES = ("Dockerfile", "Containerfile", "dockerfile")
_START_LINE = re.compile(r"^\s*(?:CMD|ENTRYPOINT)\s+(.+)$", re.M | re.I)
_RUNS_SCRIPT = re.compile(r"\b(?:npm|pnpm|yarn)\s+(?:run(?:-script)?\s+)?([\w:.-]+)")
_MIGRATES = re.compile(r"\b(?:prisma\s+migrate\s+deploy|prisma\s+db\s+push|migrate\s+deploy)\b")


def dockerfile_facts(app: Path, scripts: dict[str, str]) -> tuple[str, str]:
    """(the app's Dockerfile, how its start migrates the database): the first of DOCKERFILES
    in the app folder, and whether its CMD/ENTRYPOINT runs a migration, directly or through
    package.json scripts it names (Shopify's template: `npm run docker-start` ->
    `npm run setup` -> `prisma migrate deploy`), three scripts deep."""
    name = next((n for n in DOCKERFILES if (app / n).is_file()), "")
    if not name:
        return "", ""
    for m in _START_LINE.finditer(_read(app / name)):
        command = m.group(1).strip()
        if command.startswith("["):      # exec form: a JSON array of words
            try:
                words = json.loads(command)
                command = " ".join(str(w) for w in words) if isinstance(words, list) else command
            except ValueError:
                pass
        if _MIGRATES.search(command):
            return name, f"its command (`{command}`) runs a migration itself"
        for s in _RUNS_SCRIPT.findall(command):
            chain = _script_chain(scripts, "start" if s in ("start", "run") else s)
            if chain:
                return name, f"its start (`npm run {s}`) runs `{chain}`"
    return name, ""


def _script_chain(scripts: dict[str, str], name: str, depth: int = 3) -> str:
    """The migration command `name` runs, following `npm run X` up to `depth` scripts, or ""."""
    body = scripts.get(name, "")
    found = _MIGRATES.search(body)
    if found:
        return found.group(0)
    if depth > 0:
        for inner in _RUNS_SCRIPT.findall(body):
            hit = _script_chain(scripts, inner, depth - 1)
            if hit:
                return hit
    return ""


LOCK_OF = {"npm": "package-lock.json", "pnpm": "pnpm-lock.yaml", "yarn": "yarn.lock"}


def ignores(gitignore: str, name: str) -> str:
    """The last .gitignore line that ignores the file `name` at the folder's top ("" when
    none does, or a later `!` line brings it back): the common forms, not every rule git has."""
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
        env = role_of(p.stem) or (role_of(m.group(1)) if m else "")
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
