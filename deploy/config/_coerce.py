"""Parsing a TOML table into the section dataclasses: unknown sections and keys refused, each
value coerced to its field's type (Literal, unions, tuples, bool, int, float, str, date), every
error naming the file and the key; then the cross-field checks (_checks) over the whole.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import types
import typing
from pathlib import Path
from typing import Any, Literal

from deploy.config._checks import check
from deploy.config._sections import Settings
from deploy.errors import SettingsError


_SECTIONS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("name", "file", "root")}


def parse(raw: dict[str, Any], *, name: str, file: Path, root: Path) -> Settings:
    """Build `Settings` from a parsed TOML table; every error names the file and key."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise SettingsError(
            f"{file}: unknown section [{unknown[0]}].",
            f"Allowed sections: {', '.join(sorted(_SECTIONS))}.",
        )
    values: dict[str, Any] = {}
    hints = _type_hints(Settings)
    for key, value in raw.items():
        values[key] = _coerce(hints[key], value, file, key)
    settings = Settings(name=name, file=file, root=root, **values)
    check(settings)
    return settings


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    """A settings class's field types, resolved once per process: every settings file read
    (and every table parsed by `parse_table`) would otherwise evaluate each section's string
    annotations again, a cost `--dry-run` paid on every load."""
    return typing.get_type_hints(tp)


def _coerce(tp: Any, value: Any, file: Path, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SettingsError(f"{file}: [{key}] must be a table, not {type(value).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        hints = _type_hints(tp)
        out = {}
        for k, v in value.items():
            if k not in fields:
                raise SettingsError(
                    f"{file}: unknown key {key}.{k}.",
                    f"Allowed keys in [{key}]: {', '.join(fields)}.",
                )
            out[k] = _coerce(hints[k], v, file, f"{key}.{k}")
        return tp(**out)
    if origin is Literal:
        if value not in args:
            raise SettingsError(
                f"{file}: {key} = {value!r} is not allowed.",
                f"Allowed values: {', '.join(repr(a) for a in args)}.",
            )
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, file, key)
        errors = []
        for a in inner:   # the first alternative that accepts the value
            try:
                return _coerce(a, value, file, key)
            except SettingsError as e:
                errors.append(e.message)
        raise SettingsError(f"{file}: {key} = {value!r} is not allowed.",
                            "It may be: " + "; or ".join(_describe(a) for a in inner) + ".")
    if origin is tuple:
        if not isinstance(value, list):
            raise SettingsError(f"{file}: {key} must be a list, not {type(value).__name__} ({value!r}).")
        return tuple(_coerce(args[0], v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{file}: {key} must be true or false, not {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{file}: {key} must be a whole number, not {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{file}: {key} must be a number, not {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{file}: {key} must be a string, not {value!r}.")
        return value
    if tp is datetime.date:
        # TOML's local date (2026-10-01, unquoted); a date-time or a quoted string is not one.
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
            raise SettingsError(f"{file}: {key} must be a date like 2026-10-01 (no quotes), not {value!r}.")
        return value
    raise SettingsError(f"{file}: {key} has a type this version cannot read ({tp}).")


def parse_table(tp: Any, value: Any, file: Path, key: str) -> Any:
    """One TOML table parsed into the frozen dataclass `tp` by the settings' own validator
    (unknown keys, types, allowed values, each error naming the file and the key)."""
    return _coerce(tp, value, file, key)


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings (an argv)"
    return getattr(tp, "__name__", str(tp))
