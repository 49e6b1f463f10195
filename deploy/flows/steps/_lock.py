"""The lock step: the release target's own lock, held for the whole run."""

from __future__ import annotations

from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.errors import HostFailed, PlanChanged

from deploy.flows.steps._common import as_touches, target, with_skip_hint


def lock_hosts(s: Settings, release_id: str, *, shown: dict[str, str | None] | None = None) -> Step:
    """The remote lock, taken before anything changes: runners that share no ledger
    (another CI system, a laptop) still exclude each other, and the loser stops here.
    It lasts until the run ends: released when the whole run has succeeded (after
    `record`), or by this step's undo, the last of the undo chain; never at the release.
    `shown`: host -> the release its `current` pointed at when a person confirmed the plan;
    once the lock is held, a host on anything else stops the run (PlanChanged) before any change."""

    t = target(s)

    def run(ctx: StepContext):
        try:
            names = t.lock(ctx.id, release_id)
        except HostFailed as e:
            raise with_skip_hint(e, s.name, f"invoke promote --to={s.name}") from None
        if shown is not None:
            # Read under the host lock: a runner of another ledger that shares only the hosts
            # may have released between the question and this lock.
            now = t.serving()
            stale = [h for h in dict.fromkeys([*shown, *now]) if now.get(h) != shown.get(h)]
            if stale:   # this step's undo (or its finish, under --no-rollback) frees the host locks
                raise PlanChanged(
                    f"The hosts of {s.name} changed after the plan was shown: "
                    + ", ".join(f"{h} served {shown.get(h) or 'nothing'}, now {now.get(h) or 'nothing'}"
                                for h in stale) + ". Nothing was changed.",
                    "Another run (perhaps of another ledger) released meanwhile. Look again "
                    f"(`invoke hosts.releases --env={s.name}`), then run it again to confirm a plan of what is "
                    "live now.")
        return f"deploy lock held on {len(names)} host(s)"

    def undo(ctx: StepContext):
        # A host that cannot be reached must not keep the ledger lock (and with it every
        # other host) held: its lock, if this run took it, is named and left to lock.release.
        unlocked = t.unlock_reachable(ctx.id)
        freed, dead = unlocked.freed, unlocked.unreachable
        note = "released on " + (f"{len(freed)} host(s)" if freed else "no host (this run held none there)")
        if dead:
            note += (f"; {', '.join(dead)} could not be reached: a lock of this run there is removed with "
                     f"`invoke lock.release --env={s.name} --force` once it is back")
        return note

    def finish(ctx: StepContext):
        freed = t.unlock(ctx.id)
        return f"deploy lock released on {len(freed)} host(s)"

    def shows() -> list[Touch]:
        return as_touches(t.lock_shows())

    return Step("lock", t.lock_text(), run=run, undo=undo, undo_does="release this run's host locks", finish=finish, shows=shows)
