"""The variable matrix: `env/variables.toml` parsed into types (what each variable is, who
owns it, per environment whether it is required, secret and where its value comes from),
and the pure rules of what value fits a variable and where it is set."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from deploy.config import parse_table, read_text
from deploy.errors import SettingsError
from deploy.redact import reveal

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

_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*\Z")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")


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
class _MatrixSpec:
    """[matrix]"""

    environments: tuple[str, ...] = ()
    production: tuple[str, ...] = ()
    local_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class _VariableSpec:
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
class _RuleSpec:
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
    head = parse_table(_MatrixSpec, raw["matrix"], file, "matrix")
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
        var = parse_table(_VariableSpec, own, file, k)
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
        over = parse_table(_RuleSpec, spec.get(env, {}), file, ek)
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
