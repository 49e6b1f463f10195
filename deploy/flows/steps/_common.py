"""What the step modules share: the environment's release target, the hint naming unreachable
hosts, and the small converters from commands to plan rows."""

from __future__ import annotations

import shlex

from deploy.config import Settings
from deploy.engine import StepContext, Touch
from deploy.facts import ArtifactFacts
from deploy.errors import DeployError, HostFailed
from deploy.targets import Command, ReleaseTarget, target_for


def argv_line(argv) -> str:
    return shlex.join(str(a) for a in argv)


def artifact_of(ctx: StepContext):
    art = ctx.get(ArtifactFacts)
    if art is None:
        raise DeployError("Bug: no artifact was recorded before the release step.",
                          "This is a bug in the toolkit (the build step records it); please report it.")
    return art.artifact()


def target(s: Settings) -> ReleaseTarget:
    """The environment's release target (deploy/targets/)."""
    return target_for(s)


def as_touches(commands: list[Command]) -> list[Touch]:
    return [Touch(c.where, c.what) for c in commands]


def with_skip_hint(err: HostFailed, env: str, again: str) -> HostFailed:
    """`err` with a hint naming the hosts that could not be reached at all and the command that
    acts on the others (`again` plus `--skip-host`); unchanged when every host answered."""
    dead = [r.host for r in err.results if not r.reachable]
    if not dead:
        return err
    skip = " ".join(f"--skip-host={h}" for h in dead)
    if again.startswith("invoke promote --to=") and "--abort" not in again:
        then = f"A promotion needs every host; meanwhile `invoke rollback --env={env} {skip}` acts on the others."
    else:
        then = f"Or act on the reachable hosts only: `{again} {skip}` (the skipped host is recorded)."
    err.hint = (f"{', '.join(dead)} cannot be reached over SSH (nothing could be changed there). Bring it back "
                f"(`invoke hosts.check --env={env}` shows it), then run again. {then}")
    return err
