"""The release steps: the artifact put live on the release target, the undo that switches back,
rollback's switch to an earlier release, and its first check under the lock."""

from __future__ import annotations

from typing import Callable

from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.errors import DeployError, HostFailed, SettingsError
from deploy.flows.common import still_live
from deploy.ledger import Ledger, ReleaseRow

from deploy.flows.steps._common import artifact_of, as_touches, target, with_skip_hint
from deploy.flows.steps._record import mark_rolled_back


def release(s: Settings, release_id: str, environ) -> Step:
    """Put the built artifact live on the environment's release target; the undo switches back."""
    t = target(s)

    def run(ctx: StepContext):
        return t.release(ctx, release_id, artifact_of(ctx), environ)

    def undo(ctx: StepContext):
        try:
            return t.switch_back(ctx, release_id, environ)
        except HostFailed as e:
            # An undo's failure is shown by its message alone: the way on goes there.
            e = with_skip_hint(e, s.name, f"invoke promote --to={s.name} --abort")
            if any(not r.reachable for r in e.results):
                e.message += f"\n{e.hint}"
            raise e from None

    return Step("release", t.release_text(release_id), run=run, undo=undo, undo_does=t.switch_back_text(),
                shows=lambda: as_touches(t.release_shows(release_id)))


# `invoke rollback`'s steps are each the way back of the promote step of the same name
# (release here; shopify, database = backup + migrate, smoke and record beside theirs). A rollback
# is not undone: that would bring back the release being fled; re-running it is safe.
def release_back(s: Settings, target_id: str, current: str | None, environ, *, ledger=None,
                 target_known: bool = False, skipped=()) -> Step:
    """Mirror of `release`: the release target back to `target_id`, restarted. Places on anything
    but `current` or `target_id` stop it before any switch (PlanChanged); once switched, the ledger
    says so at once (`status` is what the target serves, whatever fails later)."""
    t = target(s)

    def run(ctx: StepContext):
        try:
            done = t.rollback(ctx, target_id, expect=current, environ=environ)
        except HostFailed as e:
            raise with_skip_hint(e, s.name, f"invoke rollback --env={s.name}") from None
        mark_rolled_back(s, ledger, target_id, current, target_known)
        return done + "".join(f", {h}: skipped (--skip-host)" for h in skipped)

    return Step("release", f"switch every host back to {target_id}, restart", run=run,
                shows=lambda: as_touches(t.rollback_shows(target_id)))


def rollback_check(s: Settings, ledger: Ledger, shown: ReleaseRow | None, current: str | None,
                   blockers: Callable[[], list[str]]) -> Step:
    """The first step of a rollback, under the environment's lock: the live release the plan
    showed (ledger release and commit; for local, `current`) is still the live one, and
    nothing the rollback needs is missing (`blockers()`). Changes nothing."""
    def run(ctx: StepContext):
        still_live(ledger, s.name, shown)
        target(s).still_serving(current)
        found = blockers()
        if found:
            raise SettingsError("The rollback cannot be completed, so it did not start: " + "; ".join(found) + ".",
                                f"Use --db=keep (or another --db), or fix the cause; `invoke rollback --env={s.name} "
                                "--dry-run` lists what is checked.")
        return f"{(shown.release_id if shown else None) or current or '-'} still live; nothing missing"

    def shows() -> list[Touch]:
        try:
            found = blockers()
        except DeployError as e:
            found = [f"cannot be checked now: {e.message}"]
        out = [Touch("ledger", f"{(shown.release_id if shown else None) or current or '-'} is still live when the lock "
                             "is held")]
        return out + [Touch("WARNING", f"refused before any host switches: {b}") for b in found]

    return Step("check", "the live release shown is still live; down.sql / backup present and verified", run=run,
                shows=shows)
