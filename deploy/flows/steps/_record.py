"""The record steps: the ledger's release rows after a promotion or a rollback."""

from __future__ import annotations

from deploy.config import Settings
from deploy.engine import Step, StepContext
from deploy.facts import ArtifactFacts, RecordFacts, ShopifyFacts
from deploy.ledger import ReleaseStatus



def record(s: Settings, sha: str, release_id: str, ledger) -> Step:
    def run(ctx: StepContext):
        art, shop = ctx.get(ArtifactFacts), ctx.get(ShopifyFacts)
        if ctx.get(RecordFacts) is None:
            live = ledger.live_release(s.name)
            ctx.put(RecordFacts(live.release_id if live else None))
            ctx.checkpoint()
        ledger.record_release(env=s.name, release_id=release_id, sha=sha, artifact_sha256=art.sha256 if art else None,
                              run_id=ctx.run_id, shopify_version=shop.version if shop else None)
        return f"{release_id} recorded live"

    def undo(ctx: StepContext):
        if not any(r.release_id == release_id for r in ledger.releases(s.name, limit=100)):
            return "no release row was written"
        ledger.set_release_status(s.name, release_id, ReleaseStatus.ROLLED_BACK)
        facts = ctx.get(RecordFacts)
        prev = facts.previous_live if facts else None
        if prev:
            ledger.set_release_status(s.name, prev, ReleaseStatus.LIVE)
        return f"{release_id} marked rolled back"

    return Step("record", "ledger release row (the deployment log and CI summary follow the run)", run=run, undo=undo,
                undo_does="mark the release rolled back")


def mark_rolled_back(s: Settings, ledger, target: str, current: str | None, target_known: bool) -> None:
    if ledger is None:
        return
    if current and current != target:
        ledger.set_release_status(s.name, current, ReleaseStatus.ROLLED_BACK)
    if target_known:
        ledger.set_release_status(s.name, target, ReleaseStatus.LIVE)


def record_rollback(s: Settings, ledger, target: str, current: str | None, *, target_known: bool) -> Step:
    """Mirror of `record`: the ledger's releases say `target` is live and `current` rolled back
    (already so since the switch: release_back records it; repeated here for a plan without hosts)."""
    def run(ctx: StepContext):
        mark_rolled_back(s, ledger, target, current, target_known)
        return f"{target} live; {current or '-'} rolled back"

    return Step("record", "ledger: target live, current rolled back", run=run)
