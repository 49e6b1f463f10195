"""Where a release goes, behind one interface: the seam promote and rollback call.

A target puts a built artifact live somewhere, takes it back, goes back to an earlier
release and says what is live; flows know the order of steps and record it. A flow gets its
target from `target_for(settings)` and never asks which kind it has. The interface
(`_base.ReleaseTarget`):

    prepare(environ)              what a release will need is there (preflight; changes nothing)
    lock / unlock / unlock_reachable
                                  the target's own lock for a whole run, when others may change it
    release(state, id, artifact)  put the artifact live (promote's `release` step)
    switch_back(state, id)        the undo of release: back to what was live before it
    way_back(to), still_serving   where a rollback goes; is the plan's live release still live
    rollback(state, to, expect)   go back to an earlier release (rollback's `release` step)
    serving() / releases()        what is live per place, and what each place holds
    prune()                       drop releases beyond the settings' keep count
    *_text(), *_shows()           plan rows and the exact commands, for --dry-run

Targets (`[release] target` in env/<name>.toml; the environment's kind picks the place):

    tree     releases/<id> trees and an atomic `current` switch: on this machine for a local
             environment (`local.LocalTree`), on SSH hosts for a remote one (`tree.HostsTree`,
             over deploy/hosts/)
    image    the commit's container image, by digest, on SSH hosts behind each host's proxy
             (`image.HostsImage`, over deploy/hosts/_images.py); remote environments only

Step facts stay the flows' vocabulary (deploy/facts.py): a target reads and writes the
run's state through `RunState` (the engine's StepContext has that shape), so an undo after
a kill finds what the run did.

Adding a target: a module here with a class that implements every method of
`ReleaseTarget` (tests/test_targets.py fails on a missing one), its name added to
`config.ReleaseSection.target` and its classes named in `TARGETS` below. The classes are
imported from their modules (`deploy.targets.tree`, ...), not from this package.
promote, rollback and the steps stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploy.targets._base import (METHODS, Command, PlaceLock, PlaceReleases, ReleaseTarget, RunState,
                                  Unlocked, WayBack)
from deploy.deferred import resolve
from deploy.errors import SettingsError

if TYPE_CHECKING:
    from deploy.config import Settings

#: every `[release] target` value, and the classes that implement it (local, remote), named
#: ("module:Class", deploy/deferred.py) so an environment imports only its own target: a local
#: one never loads deploy/hosts/ or deploy/images/
TARGETS: dict[str, tuple[str | None, str]] = {
    "tree": ("deploy.targets.local:LocalTree", "deploy.targets.tree:HostsTree"),
    "image": (None, "deploy.targets.image:HostsImage"),   # a local environment runs its tree on this machine
}


def target_for(s: Settings) -> ReleaseTarget:
    """The release target of environment `s`: `[release] target` (default "tree"), on this
    machine for a local environment, else on its hosts."""
    local_ref, remote_ref = TARGETS[s.release.target]   # config refuses any other value, naming the allowed ones
    if s.is_local:
        if local_ref is None:
            raise SettingsError(f"{s.file}: release.target = {s.release.target!r} runs on [hosts]; a local environment "
                                "releases a tree on this machine.",
                                "Remove release.target from this file (or set it to \"tree\"), or make the "
                                "environment remote (environment.kind = \"remote\") with [hosts].")
        return target_class(local_ref)(s)
    return target_class(remote_ref)(s)


def target_class(ref: str) -> type[ReleaseTarget]:
    """The class a TARGETS entry names, its module imported now."""
    cls: type[ReleaseTarget] = resolve(ref)
    return cls


__all__ = ["METHODS", "TARGETS", "Command", "PlaceLock", "PlaceReleases", "ReleaseTarget", "RunState", "Unlocked",
           "WayBack", "target_class", "target_for"]
