"""One environment's values, resolved from its dotenv files and the deployer's secrets.

Non-secret values come from the committed `env/<env>.env` (python-dotenv syntax, read
without `${VAR}` interpolation); secrets only from the process environment passed in as a
mapping, or for the environments in `matrix.local_files` from the git-ignored
`env/<env>.local.env`. `deployer_environ` is the one view every task takes of them.
"""

from __future__ import annotations

import io
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from deploy.config import read_text
from deploy.envs._matrix import (DOC_FILE, MATRIX_FILE, Matrix, Variable, convert, load_matrix, validate_value,
                                 where_to_set)
from deploy.errors import SettingsError
from deploy.redact import Secret, reveal


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
            Secret(src.committed.values[var.name] or "")  # registered, so no later output can show it
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
