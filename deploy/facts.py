"""Run state as stored in the ledger: exact, typed, and free of secrets by type.

A step records what its undo and later steps need in the run's state. The ledger stores
that state exactly as JSON (never redacted: a masked migration name or path read back as
the truth would make an undo do the wrong thing), and refuses a `Secret` anywhere in it,
because a secret is never a fact.

The run state holds facts only: frozen dataclasses marked with `@fact`, one per type
(`StepContext.put(MigrateFacts(...))`, `StepContext.get(MigrateFacts)`). Each is stored with
its type's name (`{"MigrateFacts": {"__fact__": "MigrateFacts", ...fields}}`) and read back as
that type, so a later step or another flow (rollback, drill: `PromotionRecord`) reads typed
fields instead of string keys. The step facts live here, not next to the steps, so a stored
run reads back whichever module its steps have moved to.

Runs stored by earlier versions (plain string keys such as `"migrations_before"`): a
`--resume` or `--abort` of such a killed run is refused with what to do (`legacy_keys`);
a finished promotion's record is still read (`PromotionRecord.of`), for rollback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from deploy import build   # the package: Artifact's module (tarfile, hashlib) loads only when a fact is read
from deploy.errors import DeployError
from deploy.redact import Secret

if TYPE_CHECKING:
    from deploy.build import Artifact
    from deploy.migrations import MigrationLint

TAG = "__fact__"
_FACTS: dict[str, type] = {}
F = TypeVar("F")


class StoredRun(Protocol):
    """What a fact reads of a run the ledger stored (deploy.ledger.RunRow has this shape;
    the ledger imports this module, so the type is named here, not imported from there)."""

    @property
    def id(self) -> str: ...
    @property
    def env(self) -> str: ...
    @property
    def release_id(self) -> str | None: ...
    @property
    def sha(self) -> str | None: ...
    @property
    def state(self) -> dict[str, Any]: ...
State = dict[str, Any]   # a run's state: fact type name -> fact (or, from earlier versions, plain values)


class StateError(DeployError):
    """Run state that must not be stored (a bug in a step, not a user error)."""


def fact(cls: type[F]) -> type[F]:
    """Mark a frozen dataclass as a step fact that the ledger stores by type."""
    if not dataclasses.is_dataclass(cls) or not getattr(cls, "__dataclass_params__").frozen:
        raise TypeError(f"{cls.__name__}: a step fact must be a frozen dataclass")
    name = _name(cls)
    if name in _FACTS and _FACTS[name] is not cls:
        raise TypeError(f"{name}: a step fact of that name exists already ({_FACTS[name].__module__})")
    _FACTS[name] = cls
    return cls


def _name(cls: type) -> str:
    return str(cls.__qualname__)


def _encode(value: Any, where: str) -> Any:
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
        out: dict[str, Any] = {TAG: name}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name), f"{where}.{f.name}")
        return out
    raise StateError(f"Bug: {type(value).__name__} at {where} cannot be stored in the run state.",
                     "Store strings, numbers, lists, dicts or @fact dataclasses.")


def dumps(state: dict[str, Any]) -> str:
    """The exact JSON of `state`; StateError (before anything is written) on a Secret."""
    return json.dumps(_encode(state, "state"), sort_keys=True)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if TAG in value:
            cls = _FACTS.get(value[TAG])
            if cls is None:
                # A type this version does not have (renamed, or a test's): kept as stored, so
                # reading the ledger never fails; resume/abort refuse it (legacy_keys).
                return {k: _decode(v) for k, v in value.items()}
            kwargs = {k: _decode(v) for k, v in value.items() if k != TAG}
            fields = {f.name: f for f in dataclasses.fields(cls)}
            # JSON has no tuple: a field typed tuple[...] reads back as one, so state round-trips equal.
            try:
                return cls(**{k: tuple(v) if isinstance(v, list) and str(fields[k].type).startswith("tuple") else v
                              for k, v in kwargs.items() if k in fields})
            except TypeError:
                # Stored before its type gained a required field: kept as stored, like an unknown
                # type, so status and rollback still read the run; resume/abort refuse it.
                return {k: _decode(v) for k, v in value.items()}
        return {k: _decode(v) for k, v in value.items()}
    return value


def loads(text: str | None) -> State:
    """The state `dumps` stored, with its facts as their types."""
    state: State = _decode(json.loads(text or "{}"))
    return state


def dumps_state(state: State) -> str:
    """The exact JSON of a run's state: every entry a fact, stored under its type's name."""
    for key, value in state.items():
        if not (dataclasses.is_dataclass(value) and _FACTS.get(key) is type(value)):
            raise StateError(f"Bug: the run state entry {key!r} is not a step fact stored under its type's name.",
                             "Record facts with StepContext.put(SomeFacts(...)), never by a string key.")
    return dumps(state)


def get(state: State, cls: type[F]) -> F | None:
    """The `cls` fact in a run's state, or None."""
    value = state.get(_name(cls))
    return value if isinstance(value, cls) else None


def put(state: State, value: object) -> None:
    """Record `value` (a @fact instance) in a run's state, replacing the fact of its type."""
    cls = type(value)
    if _FACTS.get(_name(cls)) is not cls:
        raise StateError(f"Bug: {cls.__name__} is not a step fact.", "Mark it with deploy.facts.fact.")
    _encode(value, _name(cls))  # a Secret is refused now, in the step that put it, not at the next save
    state[_name(cls)] = value


def drop(state: State, cls: type) -> None:
    state.pop(_name(cls), None)


def legacy_keys(state: State) -> list[str]:
    """Entries of a run's state written by an earlier version (plain keys, not facts)."""
    return sorted(k for k, v in state.items() if _FACTS.get(k) is None or not isinstance(v, _FACTS[k]))


# ----------------------------------------------------------------------------- the step facts

@fact
@dataclasses.dataclass(frozen=True)
class ArtifactFacts:
    """build: the packed artifact every later step ships (and production re-checks)."""

    path: str
    sha256: str
    release_id: str
    git_sha: str
    built_at: str

    @classmethod
    def of(cls, art: Artifact) -> "ArtifactFacts":
        return cls(str(art.path), art.sha256, art.release_id, art.git_sha, art.built_at)

    def artifact(self) -> Artifact:
        return build.Artifact(Path(self.path), self.sha256, self.release_id, self.git_sha, self.built_at)


@fact
@dataclasses.dataclass(frozen=True)
class ImageRef:
    """image (release target "image"): the container image built from the artifact and pushed,
    named by digest from then on (deploy/images/). `reference` is `<registry>/<repository>@<digest>`,
    what hosts pull and run; `tag` is the commit-named tag it was pushed under (for people)."""

    reference: str
    digest: str                             # "sha256:<64 hex>", the registry's manifest digest
    registry: str = ""
    repository: str = ""
    tag: str = ""


@fact
@dataclasses.dataclass(frozen=True)
class ImageReleaseFacts:
    """release (target "image"): what each host served before (release and proxy port, None:
    nothing), recorded before anything changes; the hosts where this release pulled its image
    (an undo removes it there); locked_out: another run held the hosts, nothing was changed."""

    ref: str = ""
    previous: dict[str, str | None] = dataclasses.field(default_factory=dict)
    ports: dict[str, int | None] = dataclasses.field(default_factory=dict)
    pulled: tuple[str, ...] = ()
    locked_out: bool = False


@fact
@dataclasses.dataclass(frozen=True)
class BackupFacts:
    """backup: the copy taken before migrate (None: there was no database file yet)."""

    path: str | None


@fact
@dataclasses.dataclass(frozen=True)
class DatabaseBefore:
    existed: bool
    empty: bool
    schemas: tuple[str, ...]


@fact
@dataclasses.dataclass(frozen=True)
class MigrationCheck:
    """The verdict on one migration before it ran (deploy/migrations/_lint.py): whether the
    previous release can run on the schema it leaves, why not, and the linter's findings."""

    name: str
    kind: str                               # "additive" | "destructive"
    reasons: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    has_down: bool = False
    accepted: bool = False                  # destructive, accepted without down.sql (settings or flag)

    @classmethod
    def of(cls, lint: MigrationLint, accepted: bool = False) -> "MigrationCheck":
        return cls(lint.name, lint.kind, tuple(lint.reasons), tuple(str(f) for f in lint.findings), lint.has_down,
                   accepted)


@fact
@dataclasses.dataclass(frozen=True)
class MigrateFacts:
    """migrate: what the database held before this run migrated it, and the verdict on each
    migration it was about to apply (an undo keeps the additive ones)."""

    before: tuple[str, ...]                 # migrations applied before
    database: DatabaseBefore | None = None
    checks: tuple[MigrationCheck, ...] | None = None   # None: recorded before verdicts existed


@fact
@dataclasses.dataclass(frozen=True)
class LocalReleaseFacts:
    """release (local): the release `current` named before the switch."""

    previous: str | None


@fact
@dataclasses.dataclass(frozen=True)
class HostsReleaseFacts:
    """release (hosts): each host's release before the switch; or that another run held the hosts."""

    previous: dict[str, str | None] = dataclasses.field(default_factory=dict)   # host -> release (None: it had none)
    locked_out: bool = False


@fact
@dataclasses.dataclass(frozen=True)
class Serving:
    """Where the local app answers now (release and rollback write it; smoke and watch read it)."""

    url: str


@fact
@dataclasses.dataclass(frozen=True)
class ShopifyFacts:
    """shopify: the app version pushed (None before the push) and the one active before it."""

    version: str | None
    previous: str | None


@fact
@dataclasses.dataclass(frozen=True)
class RecordFacts:
    """record: the release that was live before this one."""

    previous_live: str | None


@fact
@dataclasses.dataclass(frozen=True)
class PromotionRecord:
    """What a promotion recorded for whoever undoes it later (rollback, drill): read from its
    run in the ledger, typed, instead of another flow's state keys."""

    run_id: str
    env: str
    release_id: str | None
    sha: str | None
    artifact_sha256: str | None = None
    image_digest: str | None = None                   # release target "image": the digest it ran (ImageRef)
    backup: str | None = None                         # the pg_dump/SQLite copy taken before it migrated
    migrations_before: tuple[str, ...] | None = None  # applied before it migrated (None: it never got there)
    shopify_previous: str | None = None               # the app version active before its push
    shopify_version: str | None = None

    @classmethod
    def of(cls, run: StoredRun) -> "PromotionRecord":
        st = run.state or {}
        art, bak, mig, shop = (get(st, ArtifactFacts), get(st, BackupFacts), get(st, MigrateFacts),
                               get(st, ShopifyFacts))
        img = get(st, ImageRef)
        if not legacy_keys(st) or not st:
            return cls(run_id=run.id, env=run.env, release_id=run.release_id, sha=run.sha,
                       artifact_sha256=art.sha256 if art else None, image_digest=img.digest if img else None,
                       backup=bak.path if bak else None,
                       migrations_before=tuple(mig.before) if mig else None,
                       shopify_previous=shop.previous if shop else None,
                       shopify_version=shop.version if shop else None)
        # A promotion stored by an earlier version (plain keys): read, for rollback of its release.
        old_art, old_shop, before = st.get("artifact") or {}, st.get("shopify") or {}, st.get("migrations_before")
        return cls(run_id=run.id, env=run.env, release_id=run.release_id, sha=run.sha,
                   artifact_sha256=old_art.get("sha256") if isinstance(old_art, dict) else None,
                   backup=st.get("backup"), migrations_before=tuple(before) if before is not None else None,
                   shopify_previous=old_shop.get("previous"), shopify_version=old_shop.get("version"))
