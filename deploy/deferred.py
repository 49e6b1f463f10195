"""Code named by where it lives ("package.module:name") and imported when it is used, not when
the module naming it loads: the one declared way to defer a toolkit import.

Showing a plan (`--dry-run`) needs what each step does, undoes and would touch; only running a
step needs the primitives that do the work (hosts over SSH, the build, backups, images, the
go-live checks, the Shopify push). So a step factory passes `later("deploy.flows.steps.work.gates:gate",
s, sha)` as its `run` (or `undo`, `finish`): the engine calls it like any step function and its
module is imported then. `deploy.targets.TARGETS` names its classes the same way, so an
environment loads only its own release target. tests/test_layers.py reads every such name as an
import of the module that writes it (the layers and the no-loop rule apply to it), and
tests/test_plan_imports.py checks that each name resolves and that a promote or rollback dry run
imports none of the step work. A package's re-exports are deferred the same way (`exports`, PEP 562),
so importing one of its modules does not load them all.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

#: what a deferred name looks like; tests/test_layers.py finds them in the source by it
REF = re.compile(r"^deploy(\.[a-z_][a-z0-9_]*)+:[A-Za-z_][A-Za-z0-9_]*\Z")


def resolve(ref: str) -> Any:
    """The object `ref` ("package.module:name") names, its module imported now."""
    if not REF.match(ref):
        raise ValueError(f"{ref!r} is not 'deploy.<module>:<name>'")
    module, _, name = ref.partition(":")
    found = getattr(importlib.import_module(module), name, None)
    if found is None:
        raise ValueError(f"{ref!r}: {module} has no {name}")
    return found


@dataclass(frozen=True)
class Later:
    """A step function: `ref`'s function called with what the engine passes (a run's context; nothing
    for `shows`), then `args` and `kwargs`."""

    ref: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, *head: Any) -> Any:
        fn: Callable[..., Any] = resolve(self.ref)
        return fn(*head, *self.args, **dict(self.kwargs))


def later(ref: str, *args: Any, **kwargs: Any) -> Later:
    """A step function that imports and calls `ref` only when the step runs (module docstring)."""
    if not REF.match(ref):
        raise ValueError(f"{ref!r} is not 'deploy.<module>:<function>'")
    return Later(ref, args, tuple(kwargs.items()))


def exports(package: str, table: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's re-exports, each module imported when one of its names is first used (PEP 562):
    `__getattr__, __dir__ = exports(__name__, {"deploy.backups.store": ("Backup", "latest"), ...})`.

    The package keeps its old import paths (`from deploy.backups import Backup`) without loading
    every module to show a plan. The same names are imported under `if TYPE_CHECKING:` for the type
    checker; tests/test_layers.py reads the table's modules as imports of the package (layers and
    loops) and checks that both lists agree."""
    where: dict[str, str] = {}
    for module, names in table.items():
        if not module.startswith("deploy."):
            raise ValueError(f"{package} exports from {module!r}: only toolkit modules are named")
        for name in names:
            if name in where:
                raise ValueError(f"{package} exports {name!r} from both {where[name]} and {module}")
            where[name] = module
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value   # later uses find it without this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
