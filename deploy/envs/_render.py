"""What is written from the matrix and the values: docs/deployment/env_matrix.md (`env.matrix`),
a developer's app .env (`env.dotenv`) and the hosts' `shared/.env` text (`env.push`), in the
project's dotenv dialect (python-dotenv's rules, no `${VAR}` expansion)."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy.envs._matrix import MATRIX_FILE, DOC_FILE, REGENERATE, SOURCE_TEXT, SOURCES, Matrix, where_to_set
from deploy.envs._values import EnvValues, resolve
from deploy.errors import SettingsError
from deploy.redact import reveal


def _table(rows: list[list[str]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


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


_BARE = re.compile(r"^[A-Za-z0-9_./:@,+=%?&~-]*\Z")


def _dotenv_quote(value: str) -> str:
    if _BARE.match(value):
        return value
    # python-dotenv decodes \\ \" \n \r inside double quotes (dotenv/parser.py, decode_escapes);
    # a raw CR would not survive: Python's text mode reads it as a line end.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


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
