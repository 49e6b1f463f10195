"""The reports over an environment's values: `env.check` (every variable of one
environment judged: missing, placeholder, invalid, a secret in a committed file, unknown
keys) and `env.parity` (staging against production under each variable's parity rule)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from deploy.envs._matrix import MATRIX_FILE, Matrix, Variable, convert, is_placeholder, validate_value, where_to_set
from deploy.envs._render import _table
from deploy.envs._values import EnvValues, _committed_secret, _pick, _read_sources, _rel, _Sources, resolve
from deploy.errors import SettingsError
from deploy.redact import MASK, MIN_LENGTH, Secret, redact, reveal


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
        Secret(src.committed.values[var.name] or "")
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
