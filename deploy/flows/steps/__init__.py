"""The steps flows are made of, one module per kind of step. Each step wraps one primitive:
`run` does it and records what its `undo` needs in the run's state; `undo` is safe after a
partial or repeated run. Flows import them from here (`steps.build(...)`).

    _common     the release target of an environment, the unreachable-host hint, plan-row helpers,
                the committed lockfile and the variables a promotion does not use
    _preflight  preflight: every check before anything changes
    _gates      gate (evidence) and approvals (staging pass, roles)
    _lock       lock: the release target's own lock for the whole run
    _env        env: shared/.env on the hosts
    _build      build: the artifact, reused or built, the one staging proved
    _image      image (release target "image"): the artifact as an image, pushed once, the digest staging proved
    _verdicts   migrations judged additive or destructive before they run
    _database   backup, migrate, and their mirror on the way back
    _release    release, release_back, rollback_check
    _smoke      smoke, watch
    _shopify    shopify, shopify_back
    _record     record, record_rollback

What a step does when it runs is named, not imported, where it pulls in primitives a plan does
not need (hosts, the build, evidence, go-live checks): `later("deploy.flows.steps.work.<kind>:fn",
...)`, loaded by the engine when the step runs (steps/work/, deploy/deferred.py).
"""

from deploy.flows.steps._build import build
from deploy.flows.steps._common import (TOOLKIT_RECORDS, argv_line, artifact_of, as_touches, lockfile_committed,
                                        not_needed, target, with_skip_hint)
from deploy.flows.steps._database import (backup, database_back, migrate, migrate_touches,
                                          rollback_blockers)
from deploy.flows.steps._env import env_push, pushes_env, shared_env_text
from deploy.flows.steps._gates import approvals, check_promotion_rights, gate
from deploy.flows.steps._image import image, ships_image
from deploy.flows.steps._lock import lock_hosts
from deploy.flows.steps._preflight import preflight
from deploy.flows.steps._record import mark_rolled_back, record, record_rollback
from deploy.flows.steps._release import release, release_back, rollback_check
from deploy.flows.steps._shopify import shopify_back, shopify_push
from deploy.flows.steps._smoke import run_smoke, smoke_after, smoke_bases, smoke_step, watch_step
from deploy.flows.steps._verdicts import (accepted_destructive, migration_gate, migration_verdict_lines,
                                          pending_verdicts, verdict_table)

__all__ = [
    "TOOLKIT_RECORDS", "accepted_destructive", "approvals", "argv_line", "artifact_of", "as_touches", "backup",
    "build", "check_promotion_rights", "database_back", "env_push", "gate", "image", "lock_hosts",
    "lockfile_committed", "mark_rolled_back", "migrate", "migrate_touches", "migration_gate",
    "migration_verdict_lines", "not_needed", "pending_verdicts", "preflight", "pushes_env", "record",
    "record_rollback", "release", "release_back", "rollback_blockers", "rollback_check", "run_smoke",
    "shared_env_text", "ships_image", "shopify_back", "shopify_push", "smoke_after", "smoke_bases", "smoke_step",
    "target", "verdict_table", "watch_step", "with_skip_hint",
]
