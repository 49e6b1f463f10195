"""The variable matrix, each environment's values, and the checks over them.

`env/variables.toml` declares every variable the Operator Control Center app reads:
what it is, who owns it, where its value comes from, and per environment whether it is
required and whether it is a secret. Values live apart from the matrix:

- non-secret values in the committed `env/<env>.env` (python-dotenv syntax);
- secret values only in the process environment (a GitHub environment secret on the
  runner), passed in by the caller as a mapping, never read implicitly; for the
  environments listed in `matrix.local_files` also in the git-ignored
  `env/<env>.local.env`. A secret with a value in a committed file is an error.

The process environment is read for secrets only: a developer's shell that happens to
export PORT or NODE_ENV must not change what `env.check --env=production` judges.

Everything here is pure over its inputs except `load_matrix`, the file reads in
`resolve`/`check`, and the two writers (`write_matrix_doc`, `write_dotenv`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import io
import os
import re
import tempfile
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from deploy.config import parse_table, read_text
from deploy.errors import SettingsError
from deploy.redact import MASK, MIN_LENGTH, Secret, redact, reveal

__all__ = [
    "MATRIX_FILE", "DOC_FILE", "VarType", "EnvRule", "Variable", "Matrix", "EnvValues",
    "CheckRow", "CheckReport", "ParityRow", "ParityReport", "DotenvResult",
    "load_matrix", "parse_matrix", "resolve", "check", "render_check", "parity",
    "parity_from_files", "render_parity", "render_matrix", "write_matrix_doc", "write_dotenv",
    "validate_value", "is_placeholder", "where_to_set", "deployer_environ", "app_values", "render_shared_env",
]

MATRIX_FILE = "env/variables.toml"
DOC_FILE = "docs/deployment/env_matrix.md"
REGENERATE = "invoke env.matrix"

Kind = Literal["string", "url", "int", "bool", "enum"]
Parity = Literal["same", "differs", "free"]
Source = Literal["dotenv", "runner", "supabase", "shopify-partners"]
KINDS: tuple[str, ...] = typing.get_args(Kind)
PARITY_RULES: tuple[str, ...] = typing.get_args(Parity)
SOURCES: tuple[str, ...] = typing.get_args(Source)
SOURCE_TEXT = {
    "dotenv": "the committed env/<env>.env file",
    "runner": "the CI runner (GitHub environment secret, Settings > Environments)",
    "supabase": "the Supabase dashboard (Project Settings > Database / API)",
    "shopify-partners": "the Shopify Dev Dashboard (app > Settings)",
}

_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


# ---------------------------------------------------------------- the matrix

@dataclass(frozen=True)
class VarType:
    kind: Kind = "string"
    values: tuple[str, ...] = ()           # enum only
    min: int | None = None                 # int only
    max: int | None = None
    pattern: str | None = None             # string only; full match

    def describe(self) -> str:
        if self.kind == "enum":
            return "enum: " + ", ".join(self.values)
        if self.kind == "int" and (self.min is not None or self.max is not None):
            return f"int {'' if self.min is None else self.min}..{'' if self.max is None else self.max}"
        return self.kind


@dataclass(frozen=True)
class EnvRule:
    """How one variable behaves in one environment."""

    required: bool
    secret: bool
    source: Source
    last_rotated: dt.date | None = None


@dataclass(frozen=True)
class Variable:
    name: str
    description: str
    owner: str
    type: VarType
    parity: Parity
    rotation_days: int | None
    where: str
    rules: tuple[tuple[str, EnvRule], ...]

    def on(self, env: str) -> EnvRule:
        for name, rule in self.rules:
            if name == env:
                return rule
        raise SettingsError(f"{self.name} has no rule for environment {env!r}.")

    def is_secret_anywhere(self) -> bool:
        return any(r.secret for _, r in self.rules)


@dataclass(frozen=True)
class Matrix:
    file: Path
    environments: tuple[str, ...]
    production: tuple[str, ...]
    local_files: tuple[str, ...]
    variables: tuple[Variable, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def root(self) -> Path:
        return self.file.parent.parent

    def has(self, name: str) -> bool:
        return any(v.name == name for v in self.variables)

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        near = difflib.get_close_matches(name, self.names, n=1)
        raise SettingsError(
            f"{name} is not a variable of the matrix {self.file}.",
            (f"Did you mean {near[0]}? " if near else "")
            + f"Declare it under [variables.{name}] in {MATRIX_FILE} first.",
        )

    def require_env(self, env: str) -> None:
        if env not in self.environments:
            raise SettingsError(
                f"Unknown environment {env!r}: {self.file} declares {', '.join(self.environments)}.",
                "Pass one of those, or add it to [matrix].environments.",
            )


def load_matrix(root: Path) -> Matrix:
    """Read and validate `env/variables.toml` under the project root."""
    path = Path(root) / MATRIX_FILE
    try:
        raw = tomllib.loads(read_text(path))
    except FileNotFoundError:
        raise SettingsError(f"{path} does not exist: there is no variable matrix.",
                            "Run from the project root, or set DEPLOY_ROOT to it.") from None
    except tomllib.TOMLDecodeError as e:
        raise SettingsError(f"{path}: not valid TOML ({e}).", "Fix the syntax and run again.") from None
    return parse_matrix(raw, file=path)


def _fail(file: Path, key: str, message: str, hint: str | None = None) -> SettingsError:
    return SettingsError(f"{file}: {key}: {message}", hint)


# The matrix as written: typed like the settings and parsed by the settings' own validator
# (config.parse_table: unknown keys, types, allowed values). What one field's type cannot
# say (an enum needs values, a secret needs a rotation period, ...) is checked below.

@dataclass(frozen=True)
class MatrixSpec:
    """[matrix]"""

    environments: tuple[str, ...] = ()
    production: tuple[str, ...] = ()
    local_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class VariableSpec:
    """[variables.NAME], without its environment tables."""

    description: str = ""
    owner: str = ""
    parity: Parity | None = None
    type: Kind = "string"
    values: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    pattern: str | None = None
    source: Source = "dotenv"
    secret: bool = False
    required: bool = True
    rotation_days: int | None = None
    where: str = ""


@dataclass(frozen=True)
class RuleSpec:
    """[variables.NAME.<env>]: what differs in one environment (None: the variable's value)."""

    required: bool | None = None
    secret: bool | None = None
    source: Source | None = None
    last_rotated: dt.date | None = None


def _unique(file: Path, key: str, names: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(names)) != len(names):
        raise _fail(file, key, "lists a name twice.")
    return names


def parse_matrix(raw: Mapping[str, Any], *, file: Path) -> Matrix:
    """Build a `Matrix` from parsed TOML; every error names the file and the key."""
    file = Path(file)
    unknown = sorted(set(raw) - {"matrix", "variables"})
    if unknown:
        raise _fail(file, unknown[0], "unknown top-level key.", "Allowed: [matrix] and [variables.NAME] tables.")
    if not isinstance(raw.get("matrix"), dict):
        raise _fail(file, "matrix", "the [matrix] table is missing.", 'Add [matrix] with environments = ["local", ...].')
    head = parse_table(MatrixSpec, raw["matrix"], file, "matrix")
    envs = _unique(file, "matrix.environments", head.environments)
    if not envs:
        raise _fail(file, "matrix.environments", "must name at least one environment.")
    for e in envs:
        if not _ENV_NAME.match(e):
            raise _fail(file, "matrix.environments", f"{e!r} is not a valid environment name.",
                        "Use lower-case letters, digits, '-' or '_'.")
    for k in ("production", "local_files"):
        for e in _unique(file, f"matrix.{k}", getattr(head, k)):
            if e not in envs:
                raise _fail(file, f"matrix.{k}", f"{e!r} is not one of matrix.environments ({', '.join(envs)}).")
    table = raw.get("variables", {})
    if not isinstance(table, dict) or not table:
        raise _fail(file, "variables", "no variables declared.", "Add one [variables.NAME] table per variable.")
    variables = tuple(_parse_variable(file, name, spec, envs) for name, spec in table.items())
    return Matrix(file=file, environments=envs, production=head.production,
                  local_files=head.local_files, variables=variables)


def _parse_variable(file: Path, name: str, spec: Any, envs: tuple[str, ...]) -> Variable:
    k = f"variables.{name}"
    if not _VAR_NAME.match(name):
        raise _fail(file, k, "variable names are upper-case letters, digits and '_' (e.g. DATABASE_URL).")
    if not isinstance(spec, dict):
        raise _fail(file, k, f"must be a table, not {spec!r}.")
    own = {key: v for key, v in spec.items() if key not in envs}
    try:
        var = parse_table(VariableSpec, own, file, k)
    except SettingsError as e:
        if e.message.startswith(f"{file}: unknown key"):
            raise SettingsError(e.message, f"{e.hint} Or an environment table: {', '.join(envs)}.") from None
        raise
    for req in ("description", "owner", "parity"):
        if not getattr(var, req):
            raise _fail(file, f"{k}.{req}", "is missing.", "Every variable needs description, owner and parity.")
    assert var.parity is not None
    if var.type == "enum":
        if not _unique(file, f"{k}.values", var.values):
            raise _fail(file, f"{k}.values", "an enum needs its allowed values.", 'e.g. values = ["mock", "live"]')
    elif "values" in own:
        raise _fail(file, f"{k}.values", f"only an enum has values (type is {var.type!r}).")
    for bound in ("min", "max"):
        if bound in own and var.type != "int":
            raise _fail(file, f"{k}.{bound}", f"only an int has {bound} (type is {var.type!r}).")
    if var.pattern is not None:
        if var.type != "string":
            raise _fail(file, f"{k}.pattern", f"only a string has a pattern (type is {var.type!r}).")
        try:
            re.compile(var.pattern)
        except re.error as e:
            raise _fail(file, f"{k}.pattern", f"not a valid regular expression ({e}).") from None
    rotation = var.rotation_days
    if rotation is not None and not 1 <= rotation <= 3650:
        raise _fail(file, f"{k}.rotation_days", f"{rotation} is out of range.", "Use 1 to 3650 days.")
    rules = []
    for env in envs:
        ek = f"{k}.{env}"
        over = parse_table(RuleSpec, spec.get(env, {}), file, ek)
        required = var.required if over.required is None else over.required
        secret = var.secret if over.secret is None else over.secret
        source = var.source if over.source is None else over.source
        last = over.last_rotated
        if secret and source == "dotenv":
            raise _fail(file, f"{ek}.source", "a secret cannot come from a committed dotenv file.",
                        "Use runner, supabase or shopify-partners, or mark it secret = false here.")
        if not secret and source == "runner":
            raise _fail(file, f"{ek}.source", "non-secret values are read from env/<env>.env, not from the runner.",
                        "Use dotenv (or the service that issues the value), or mark the variable secret.")
        if last is not None and not secret:
            raise _fail(file, f"{ek}.last_rotated", f"{name} is not a secret in {env}; it has no rotation date.")
        if secret and rotation is None:
            raise _fail(file, f"{k}.rotation_days", f"{name} is a secret in {env} but has no rotation period.",
                        "Add rotation_days = N (how often it must be rotated).")
        if secret and required and last is None:
            raise _fail(file, f"{ek}.last_rotated", f"{name} is a required secret in {env} with no last-rotated date.",
                        f"Add {env} = {{ last_rotated = YYYY-MM-DD }} (the date the current value was issued).")
        rules.append((env, EnvRule(required=required, secret=secret, source=source, last_rotated=last)))
    return Variable(name=name, description=var.description, owner=var.owner,
                    type=VarType(kind=var.type, values=var.values, min=var.min, max=var.max, pattern=var.pattern),
                    parity=var.parity, rotation_days=rotation, where=var.where, rules=tuple(rules))


# ---------------------------------------------------------------- value rules (pure)

_PLACEHOLDER_WORD = re.compile(r"(?i)^\s*(todo|tbd|fixme|xxx+|replace[-_ ]?me)\s*$")
_CHANGEME = re.compile(r"(?i)change[-_]?me")
_ANGLE = re.compile(r"<[^<>]+>")


def is_placeholder(value: str) -> bool:
    """Empty, `changeme` anywhere, `TODO`-like words, or a `<...>` template slot."""
    v = reveal(value)
    return v.strip() == "" or bool(_PLACEHOLDER_WORD.match(v) or _CHANGEME.search(v) or _ANGLE.search(v))


def validate_value(vtype: VarType, value: str) -> str | None:
    """Why `value` does not fit `vtype` (never quoting the value), or None."""
    v = reveal(value)
    if vtype.kind == "url":
        try:
            parts = urlsplit(v)
            parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            return "not a parseable URL"
        if not parts.scheme:
            return "not a URL: no scheme (e.g. https://)"
        # Prisma's SQLite URLs are `file:./dev.sqlite`: a path, no host (Prisma docs, "SQLite connector").
        if parts.scheme == "file":
            return None if parts.path else "a file: URL needs a path"
        if not parts.hostname:
            return "not a URL: no host"
        return None
    if vtype.kind == "int":
        if not re.fullmatch(r"[+-]?\d+", v.strip()):
            return "not a whole number"
        n = int(v)
        if vtype.min is not None and n < vtype.min:
            return f"below the minimum {vtype.min}"
        if vtype.max is not None and n > vtype.max:
            return f"above the maximum {vtype.max}"
        return None
    if vtype.kind == "bool":
        return None if v.strip().lower() in ("true", "false", "1", "0") else "not a boolean (use true/false or 1/0)"
    if vtype.kind == "enum":
        return None if v in vtype.values else f"not one of {', '.join(vtype.values)}"
    if vtype.pattern and not re.fullmatch(vtype.pattern, v):
        return f"does not match the pattern {vtype.pattern}"
    return None


def convert(vtype: VarType, value: str) -> Any:
    """A validated value as its Python type (int, bool or str)."""
    v = reveal(value)
    if vtype.kind == "int":
        return int(v)
    if vtype.kind == "bool":
        return v.strip().lower() in ("true", "1")
    return value


def where_to_set(matrix: Matrix, var: Variable, env: str) -> str:
    """One sentence: where this environment's value of `var` is set, and where to get it."""
    rule = var.on(env)
    origin = var.where or SOURCE_TEXT[rule.source].replace("<env>", env)
    if rule.secret:
        places = f"the process environment (GitHub environment {env!r} secret {var.name} on the runner)"
        if env in matrix.local_files:
            places += f", or env/{env}.local.env (git-ignored) on your machine"
        return f"Set it in {places}; the value comes from {origin}."
    if rule.source == "dotenv":
        return f"Add {var.name}=... to env/{env}.env."
    return f"Add {var.name}=... to env/{env}.env; the value comes from {origin}."


# ---------------------------------------------------------------- reading values

@dataclass(frozen=True)
class _EnvFile:
    path: Path
    values: Mapping[str, str | None]
    lines: Mapping[str, int]
    unparsed: tuple[int, ...]             # lines python-dotenv skips


def _read_dotenv(path: Path) -> _EnvFile:
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    text = read_text(path)
    # interpolate=False: `${X}` must not pull values out of os.environ behind the caller's back.
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    lines: dict[str, int] = {}
    unparsed = []
    for b in parse_stream(io.StringIO(text)):
        if b.error:
            unparsed.append(b.original.line)
        elif b.key is not None:
            lines[b.key] = b.original.line
    return _EnvFile(path=path, values=types.MappingProxyType(dict(values)),
                    lines=types.MappingProxyType(lines), unparsed=tuple(unparsed))


@dataclass(frozen=True)
class _Sources:
    env: str
    committed: _EnvFile
    local: _EnvFile | None
    environ: Mapping[str, str]


def _rel(matrix: Matrix, path: Path) -> str:
    try:
        return str(path.relative_to(matrix.root))
    except ValueError:
        return str(path)


def _read_sources(matrix: Matrix, env: str, root: Path, environ: Mapping[str, str]) -> _Sources:
    matrix.require_env(env)
    committed = Path(root) / "env" / f"{env}.env"
    if not committed.is_file():
        raise SettingsError(f"{committed} does not exist: environment {env!r} has no committed values.",
                            f"Create env/{env}.env with its non-secret values (see {DOC_FILE}).")
    local = None
    lpath = Path(root) / "env" / f"{env}.local.env"
    if env in matrix.local_files and lpath.is_file():
        local = _read_dotenv(lpath)
    # Only the matrix's secrets are taken from the environment; see the module docstring.
    secrets = {v.name for v in matrix.variables if v.on(env).secret}
    picked = {k: environ[k] for k in secrets if k in environ}
    return _Sources(env=env, committed=_read_dotenv(committed), local=local, environ=picked)


def _pick(matrix: Matrix, src: _Sources, var: Variable) -> tuple[str | None, str]:
    """(value, origin) for one variable, or (None, "") when unset. Secrets skip the committed file."""
    if var.on(src.env).secret:
        if var.name in src.environ:
            return src.environ[var.name], "environment"
        if src.local is not None and var.name in src.local.values:
            return src.local.values[var.name] or "", _rel(matrix, src.local.path)
        return None, ""
    if src.local is not None and var.name in src.local.values:
        return src.local.values[var.name] or "", _rel(matrix, src.local.path)
    if var.name in src.committed.values:
        return src.committed.values[var.name] or "", _rel(matrix, src.committed.path)
    return None, ""


def _committed_secret(src: _Sources, var: Variable) -> int | None:
    """The line of a secret's non-empty value in the committed file, if there is one."""
    if var.on(src.env).secret and (src.committed.values.get(var.name) or "").strip():
        return src.committed.lines.get(var.name, 0)
    return None


@dataclass(frozen=True)
class EnvValues:
    """One environment's resolved values; secrets are `Secret`s."""

    env: str
    matrix: Matrix
    values: Mapping[str, str]
    origins: Mapping[str, str]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def get(self, name: str) -> str:
        """The value of `name`, or a SettingsError naming it, the environment and where to set it."""
        var = self.matrix.variable(name)
        if name not in self.values:
            need = "required but" if var.on(self.env).required else "optional and"
            raise SettingsError(f"{name} is {need} not set for environment {self.env!r}.",
                                where_to_set(self.matrix, var, self.env))
        return self.values[name]

    def typed(self, name: str) -> Any:
        """`get(name)` validated against the matrix type and converted (int, bool, str)."""
        var = self.matrix.variable(name)
        value = self.get(name)
        why = validate_value(var.type, value)
        if why:
            shown = "(secret)" if isinstance(value, Secret) else repr(value)
            raise SettingsError(f"{name} in environment {self.env!r} ({self.origins[name]}) = {shown}: {why}.",
                                f"Expected {var.type.describe()}. {where_to_set(self.matrix, var, self.env)}")
        return convert(var.type, value)

    def child_env(self) -> dict[str, str]:
        """Plain values for a child process's environment (the one place secrets are revealed)."""
        return {k: reveal(v) for k, v in self.values.items()}


def resolve(matrix: Matrix, env_name: str, root: Path, environ: Mapping[str, str]) -> EnvValues:
    """Every set variable of `env_name`; raises on a secret in a committed file or an unreadable line."""
    src = _read_sources(matrix, env_name, root, environ)
    for f in (src.committed, src.local):
        if f is not None and f.unparsed:
            raise SettingsError(f"{f.path}: line {f.unparsed[0]} cannot be parsed as dotenv (KEY=value).",
                                "Fix or remove the line; python-dotenv would skip it silently.")
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    for var in matrix.variables:
        line = _committed_secret(src, var)
        if line is not None:
            Secret(src.committed.values[var.name])  # registered, so no later output can show it
            raise SettingsError(
                f"{src.committed.path}: line {line}: {var.name} is a secret in {env_name!r} and must not be committed.",
                f"Remove the line, rotate {var.name} (the value is in git history), then "
                + where_to_set(matrix, var, env_name),
            )
        value, origin = _pick(matrix, src, var)
        if value is None or value.strip() == "":
            continue
        values[var.name] = Secret(value) if var.on(env_name).secret else value
        origins[var.name] = origin
    return EnvValues(env=env_name, matrix=matrix, values=types.MappingProxyType(values),
                     origins=types.MappingProxyType(origins))


def deployer_environ(root: Path, env_name: str, environ: Mapping[str, str]) -> Mapping[str, str]:
    """What a task acting on `env_name` reads: `environ` with every variable of the matrix
    replaced by exactly the value `env.check --env=NAME` reports (a plain value from
    env/<env>.local.env or env/<env>.env, a secret from the process or env/<env>.local.env),
    and left out when env.check finds none. One view: what the check passes is what the
    promotion, the database tasks and the local app use. Without a matrix, or for an
    environment the matrix does not declare: `environ` as it is."""
    if not (Path(root) / MATRIX_FILE).is_file():
        return environ
    matrix = load_matrix(root)
    if env_name not in matrix.environments:
        return environ
    values = resolve(matrix, env_name, root, environ)
    out = {k: v for k, v in environ.items() if not matrix.has(k)}
    out.update(values.values)
    return types.MappingProxyType(out)


def app_values(root: Path, env_name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The matrix variables of `env_name` that have a value (secrets as `Secret`): what the
    environment's app is given (the local app's environment, `shared/.env` on hosts)."""
    if not (Path(root) / MATRIX_FILE).is_file():
        return {}
    matrix = load_matrix(root)
    if env_name not in matrix.environments:
        return {}
    return dict(resolve(matrix, env_name, root, environ).values)


def render_shared_env(env_name: str, values: Mapping[str, str]) -> str:
    """The text of `<deploy_to>/shared/.env` for `env_name` (plain text: secrets revealed, so
    it goes only to the hosts, never to a terminal). One `KEY=value` line per variable in the
    project's dotenv dialect, which the hosts' supervisor reads by python-dotenv's own rules
    (deploy/hosts/_supervisor.py): any value, multi-line keys included, reaches the app as it
    is (the dialect has no `${VAR}` expansion: the toolkit and the supervisor read with none).
    Only a NUL byte has no form in an environment: SettingsError naming the variable (not the
    value)."""
    lines = [f"# {env_name}: written by `invoke env.push --env={env_name}` from env/ and the deployer's "
             "secrets; do not edit here (the next push replaces it)."]
    for name in sorted(values):
        v = reveal(values[name])
        if "\0" in v:
            raise SettingsError(f"{name} ({env_name}) holds a NUL byte, which no environment variable can carry.",
                                f"Give {name} a value without it (e.g. base64 for binary data).")
        lines.append(f"{name}={_dotenv_quote(v)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- env.check

Status = Literal["ok", "missing", "placeholder", "invalid", "unknown", "secret-in-file"]
ERROR_STATUSES = frozenset({"missing", "placeholder", "invalid", "secret-in-file"})


@dataclass(frozen=True)
class CheckRow:
    variable: str
    status: Status
    detail: str

    @property
    def is_error(self) -> bool:
        return self.status in ERROR_STATUSES


@dataclass(frozen=True)
class CheckReport:
    env: str
    rows: tuple[CheckRow, ...]

    @property
    def errors(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if r.is_error)

    @property
    def warnings(self) -> tuple[CheckRow, ...]:
        return tuple(r for r in self.rows if r.status == "unknown")

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else SettingsError.exit_code


def check(matrix: Matrix, env_name: str, root: Path, environ: Mapping[str, str],
          not_needed: Mapping[str, str] | None = None) -> CheckReport:
    """Judge every variable of `env_name`: one row each, plus unknown keys and unreadable lines.
    `not_needed`: variable -> why this run does not use it (the Shopify token when the Shopify
    step is skipped); such a variable is not an error when it is unset."""
    src = _read_sources(matrix, env_name, root, environ)
    rows: list[CheckRow] = []
    for f in (src.committed, src.local):
        if f is None:
            continue
        for line in f.unparsed:
            rows.append(CheckRow(f"{_rel(matrix, f.path)}:{line}", "invalid",
                                 "line cannot be parsed as KEY=value; python-dotenv skips it"))
    for var in matrix.variables:
        row = _check_one(matrix, src, var)
        if row.status in ("missing", "placeholder") and var.name in (not_needed or {}):
            row = CheckRow(var.name, "ok", f"not needed: {(not_needed or {})[var.name]}")
        rows.append(row)
    for f in (src.committed, src.local):
        if f is None:
            continue
        for key in f.values:
            if not matrix.has(key):
                rows.append(CheckRow(key, "unknown",
                                     f"in {_rel(matrix, f.path)} but not in {MATRIX_FILE} (warning; the app may ignore it)"))
    return CheckReport(env=env_name, rows=tuple(rows))


def _check_one(matrix: Matrix, src: _Sources, var: Variable) -> CheckRow:
    env = src.env
    rule = var.on(env)
    line = _committed_secret(src, var)
    if line is not None:
        Secret(src.committed.values[var.name])
        return CheckRow(var.name, "secret-in-file",
                        f"a secret with a value in committed {_rel(matrix, src.committed.path)} line {line}: "
                        "remove it and rotate the secret")
    value, origin = _pick(matrix, src, var)
    label = "secret" if rule.secret else "value"
    if value is None or (value.strip() == "" and not rule.required):
        if rule.required:
            return CheckRow(var.name, "missing", f"required, not set: {where_to_set(matrix, var, env)}")
        return CheckRow(var.name, "ok", "optional, not set")
    if rule.secret:
        Secret(value)
    if is_placeholder(value):
        shown = "value not shown" if rule.secret else repr(value)
        return CheckRow(var.name, "placeholder", f"placeholder {label} in {origin} ({shown}); set the real one")
    why = validate_value(var.type, value)
    if why:
        shown = "" if rule.secret else f" {value!r}"
        return CheckRow(var.name, "invalid", f"{label}{shown} in {origin}: {why} (expected {var.type.describe()})")
    if rule.secret and len(reveal(value)) < MIN_LENGTH:
        # redact masks no value this short (it would mask every "1" in the output): say so, but
        # do not block: run state is stored exactly whatever the value, so nothing breaks.
        return CheckRow(var.name, "ok", f"secret from {origin}; warning: too short to be masked in output, "
                                        f"rotate it to a longer value (at least {MIN_LENGTH} characters)")
    return CheckRow(var.name, "ok", f"{'secret ' if rule.secret else ''}from {origin}")


def _table(rows: list[list[str]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def render_check(report: CheckReport) -> str:
    """The check table and a one-line summary, redacted."""
    body = _table([[r.variable, r.status, r.detail] for r in report.rows], ["variable", "status", "detail"])
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "ok" if report.ok else f"{n_err} error(s)"
    return redact(f"env.check {report.env}: {verdict}, {n_warn} warning(s)\n\n{body}\n")


# ---------------------------------------------------------------- env.parity

@dataclass(frozen=True)
class ParityRow:
    variable: str
    rule: str
    left: str                              # display form: value, *** for a secret, (unset)
    right: str
    verdict: Literal["match", "differ", "not compared"]
    problem: bool
    detail: str


@dataclass(frozen=True)
class ParityReport:
    left_env: str
    right_env: str
    rows: tuple[ParityRow, ...]

    @property
    def differences(self) -> tuple[ParityRow, ...]:
        return tuple(r for r in self.rows if r.problem)

    @property
    def exit_code(self) -> int:
        return 1 if self.differences else 0


def _shown(values: EnvValues, name: str) -> str:
    if name not in values.values:
        return "(unset)"
    v = values.values[name]
    return MASK if isinstance(v, Secret) else v


def _normal(var: Variable, value: str) -> Any:
    """Compare `true` and `1` as equal booleans, `08080` and `8080` as equal ports."""
    plain = reveal(value)
    return convert(var.type, plain) if validate_value(var.type, plain) is None else plain


def parity(matrix: Matrix, left: EnvValues, right: EnvValues) -> ParityReport:
    """`left` (staging) against `right` (production) under each variable's parity rule."""
    a, b = left.env, right.env
    rows = []
    for var in matrix.variables:
        la, lb = _shown(left, var.name), _shown(right, var.name)
        has_a, has_b = var.name in left.values, var.name in right.values
        same = has_a and has_b and _normal(var, left.values[var.name]) == _normal(var, right.values[var.name])
        if var.parity == "free":
            rows.append(ParityRow(var.name, "free", la, lb, "not compared", False, "may differ"))
        elif var.parity == "same":
            if same or (not has_a and not has_b):
                rows.append(ParityRow(var.name, "same", la, lb, "match", False, ""))
            else:
                rows.append(ParityRow(var.name, "same", la, lb, "differ", True,
                                      f"{a} {la} vs {b} {lb}: a {a} dry run would not behave like {b}"))
        else:
            if not (has_a and has_b):
                unset = " and ".join(e for e, has in ((a, has_a), (b, has_b)) if not has)
                rows.append(ParityRow(var.name, "differs", la, lb, "not compared", False, f"not set in {unset} here"))
            elif same:
                rows.append(ParityRow(var.name, "differs", la, lb, "match", True,
                                      f"equal in {a} and {b}: {a} would act on {b}'s resources"))
            else:
                rows.append(ParityRow(var.name, "differs", la, lb, "differ", False, ""))
    return ParityReport(left_env=a, right_env=b, rows=tuple(rows))


def parity_from_files(matrix: Matrix, root: Path, left: str = "staging", right: str = "production",
                      left_environ: Mapping[str, str] | None = None,
                      right_environ: Mapping[str, str] | None = None) -> ParityReport:
    """Parity of two environments; each side's secrets only from its own mapping (default: none).

    One runner job holds one GitHub environment's secrets, so passing the same
    os.environ for both sides would make every `differs` secret look equal.
    """
    return parity(matrix, resolve(matrix, left, root, left_environ or {}),
                  resolve(matrix, right, root, right_environ or {}))


def render_parity(report: ParityReport) -> str:
    """The parity table, then the list of differences that make a dry run unrepresentative."""
    a, b = report.left_env, report.right_env
    body = _table([[r.variable, r.rule, r.left, r.right, r.verdict, r.detail] for r in report.rows],
                  ["variable", "rule", a, b, "verdict", "detail"])
    diffs = report.differences
    if diffs:
        tail = f"{len(diffs)} parity difference(s) make a {a} dry run unrepresentative of {b}:\n" + "".join(
            f"  - {r.variable} ({r.rule}): {r.detail}\n" for r in diffs)
    else:
        tail = f"{a} is at parity with {b}.\n"
    return redact(f"env.parity {a} vs {b}\n\n{body}\n\n{tail}")


# ---------------------------------------------------------------- env.matrix

def _cell(text: str) -> str:
    # GitHub markdown would take `<env>` for an HTML tag and drop it.
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def render_matrix(matrix: Matrix) -> str:
    """docs/deployment/env_matrix.md: declarations only, never a value."""
    headers = ["Variable", "Description", "Owner", "Type", *matrix.environments, "Parity", "Rotation"]
    rows = []
    for v in matrix.variables:
        cells = []
        for env in matrix.environments:
            r = v.on(env)
            cells.append(f"{'required' if r.required else 'optional'}, {'secret' if r.secret else 'plain'}, {r.source}")
        rotation = f"every {v.rotation_days} days" if v.rotation_days and v.is_secret_anywhere() else "-"
        rows.append([f"`{v.name}`", _cell(v.description), _cell(v.owner), _cell(v.type.describe()),
                     *cells, v.parity, rotation])
    sources = "\n".join(f"- `{k}`: {SOURCE_TEXT[k]}" for k in SOURCES)
    prod = ", ".join(matrix.production) or "(none)"
    return (
        "# Environment variable matrix\n\n"
        f"<!-- Generated from {MATRIX_FILE} by `{REGENERATE}`; do not edit by hand. -->\n\n"
        "Every variable the Operator Control Center reads, per environment: required or optional, "
        "secret or plain, and where the value comes from. Plain values are committed in `env/<env>.env`; "
        "secrets come only from the process environment (GitHub environment secrets on the runner)"
        + (f", or the git-ignored `env/<env>.local.env` for {', '.join(matrix.local_files)}" if matrix.local_files else "")
        + ". No value appears in this document.\n\n"
        + _table(rows, headers) + "\n\n"
        "## Parity rules (staging against production)\n\n"
        "- `same`: must be equal, or a staging dry run does not show what production will do "
        "(feature flags, `*_MODE` mock/live toggles).\n"
        "- `differs`: must not be equal, or staging acts on production's resources (databases, app credentials).\n"
        "- `free`: may differ (log level, port).\n\n"
        "Check with `invoke env.parity`.\n\n"
        "## Sources\n\n" + sources + "\n\n"
        "## Rotation\n\n"
        f"Secrets are rotated within their period; `invoke secrets.rotation` reports each secret's age "
        f"per environment (ok, due soon within 14 days, overdue) and fails when a secret of {prod} is overdue. "
        "Record a rotation with `invoke secrets.rotated NAME --env=ENV --by=WHO` (appends to `env/rotations.log`).\n"
    )


def write_matrix_doc(matrix: Matrix, root: Path) -> Path:
    """Write docs/deployment/env_matrix.md; returns its path."""
    path = Path(root) / DOC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, render_matrix(matrix), force=True)
    return path


# ---------------------------------------------------------------- env.dotenv

@dataclass(frozen=True)
class DotenvResult:
    path: Path
    filled: tuple[str, ...]
    blank_secrets: tuple[str, ...]
    unset: tuple[str, ...]


_BARE = re.compile(r"^[A-Za-z0-9_./:@,+=%?&~-]*$")


def _dotenv_quote(value: str) -> str:
    if _BARE.match(value):
        return value
    # python-dotenv decodes \\ \" \n \r inside double quotes (dotenv/parser.py, decode_escapes);
    # a raw CR would not survive: Python's text mode reads it as a line end.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def render_dotenv(matrix: Matrix, values: EnvValues) -> tuple[str, DotenvResult]:
    """The app's .env text for one environment: plain values filled, secrets as empty keys."""
    env = values.env
    out = [f"# The app's environment for {env!r}, written by `invoke env.dotenv --env={env}` from {MATRIX_FILE}.",
           "# Secrets are left empty: fill them in yourself. Never commit this file.", ""]
    filled, blank, unset = [], [], []
    for var in matrix.variables:
        rule = var.on(env)
        out.append(f"# {var.description} ({var.owner}; {var.type.describe()})")
        if rule.secret:
            out.append(f"# secret: {where_to_set(matrix, var, env)}")
            out.append(f"{var.name}=")
            blank.append(var.name)
        elif var.name in values.values:
            out.append(f"{var.name}={_dotenv_quote(values.values[var.name])}")
            filled.append(var.name)
        else:
            out.append(f"# {'required' if rule.required else 'optional'}, not set in env/{env}.env")
            out.append(f"# {var.name}=")
            unset.append(var.name)
        out.append("")
    return "\n".join(out), DotenvResult(Path(), tuple(filled), tuple(blank), tuple(unset))


def write_dotenv(matrix: Matrix, env: str, path: Path, *, root: Path | None = None,
                 force: bool = False) -> DotenvResult:
    """Write the app's .env for `env`; refuses to replace an existing file unless `force`."""
    root = Path(root) if root is not None else matrix.root
    values = resolve(matrix, env, root, {})
    text, result = render_dotenv(matrix, values)
    path = Path(path)
    if path.exists() and not force:
        raise SettingsError(f"{path} already exists; it was not overwritten.",
                            "Pass --force to replace it (secrets you filled in by hand would be lost).")
    _atomic_write(path, text, force=force, mode=0o600)
    return DotenvResult(path, result.filled, result.blank_secrets, result.unset)


def _atomic_write(path: Path, text: str, *, force: bool, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        if force:
            os.replace(tmp, path)
        else:
            # link() fails if the target exists: no window where a concurrent file is clobbered.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise SettingsError(f"{path} already exists; it was not overwritten.",
                                    "Pass --force to replace it.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
