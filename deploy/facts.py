"""Run state as stored in the ledger: exact, typed, and free of secrets by type.

A step records what its undo and later steps need in the run's state. The ledger stores
that state exactly as JSON (never redacted: a masked migration name or path read back as
the truth would make an undo do the wrong thing), and refuses a `Secret` anywhere in it,
because a secret is never a fact.

A fact may be a frozen dataclass marked with `@fact` (`MigrateFacts`, `ShopifyFacts`): it
is stored with its type (`{"__fact__": "module:Name", ...fields}`) and read back as that
type, so a later step or another flow (rollback, drill) reads typed fields instead of
string keys. Only classes under the `deploy` package are read back.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import PurePath
from typing import Any

from deploy.errors import DeployError

TAG = "__fact__"
_FACTS: dict[str, type] = {}


class StateError(DeployError):
    """Run state that must not be stored (a bug in a step, not a user error)."""


def fact(cls):
    """Mark a frozen dataclass as a step fact that the ledger stores by type."""
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__name__}: a step fact must be a frozen dataclass")
    _FACTS[_name(cls)] = cls
    return cls


def _name(cls) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value: Any, where: str) -> Any:
    from deploy.redact import Secret

    if isinstance(value, Secret):
        raise StateError(
            f"Bug: a Secret was put into the run state at {where}; the ledger stores no secret.",
            "This is a bug in the toolkit (a step recorded a secret as a fact). Please report it; "
            "the run was stopped before the value was written anywhere.",
        )
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = _name(type(value))
        if name not in _FACTS:
            raise StateError(f"Bug: {type(value).__name__} at {where} is a dataclass not marked @fact.",
                             "Mark it with deploy.facts.fact (a frozen dataclass) or store plain values.")
        out = {TAG: name}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name), f"{where}.{f.name}")
        return out
    raise StateError(f"Bug: {type(value).__name__} at {where} cannot be stored in the run state.",
                     "Store strings, numbers, lists, dicts or @fact dataclasses.")


def dumps(state: dict) -> str:
    """The exact JSON of `state`; StateError (before anything is written) on a Secret."""
    return json.dumps(_encode(state, "state"), sort_keys=True)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if TAG in value:
            name = value[TAG]
            cls = _FACTS.get(name) or _load(name)
            kwargs = {k: _decode(v) for k, v in value.items() if k != TAG}
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in kwargs.items() if k in known})
        return {k: _decode(v) for k, v in value.items()}
    return value


def _load(name: str) -> type:
    module, _, qual = name.partition(":")
    if not (module == "deploy" or module.startswith("deploy.")):
        raise DeployError(f"The run state names a fact type {name!r} outside the toolkit.",
                          "The ledger row was not written by this toolkit; inspect it by hand.")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise DeployError(f"The run state names a fact type {name!r} this toolkit version does not have.",
                          "Use the toolkit version that wrote the run (see `git log deploy/`).") from None
    if _name(obj) not in _FACTS:
        raise DeployError(f"{name!r} in the run state is not a step fact.", "Inspect the ledger row by hand.")
    return obj


def loads(text: str | None) -> dict:
    """The state `dumps` stored, with its facts as their types."""
    return _decode(json.loads(text or "{}"))
