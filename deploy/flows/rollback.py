"""`invoke rollback --env=ENV [--to=RELEASE]`: on-call's way back, first time, in seconds.

Previous (or named) web release, previous Shopify app version, optionally the database
(down-migrations or the pre-deploy backup), then smoke against the restored release.
A rollback that fails part-way is left in place (not undone: that would bring back the
release being fled) and says exactly which part failed; re-running it is safe.
"""

from __future__ import annotations

from deploy import shopify
from deploy.config import Settings
from deploy.engine import Console, Plan, Runner, StepContext
from deploy.errors import DeployError, SettingsError
from deploy.flows import common, steps
from deploy.ledger import Ledger, ReleaseRow, ReleaseStatus, RunStatus
from deploy.services import Services


def target_release(s: Settings, led: Ledger, to: str | None) -> tuple[str | None, str | None]:
    """(release to go back to, release now live): from the release target's own record, or
    from the ledger first (what was promoted) and the target when the ledger knows nothing."""
    target = steps.target(s)
    if not target.ledger_first:
        back = target.way_back(to)
        return back.to, back.current
    live = led.live_release(s.name)
    if to:
        return to, live.release_id if live else None
    unfinished = _unfinished(led, s.name, live)
    if unfinished:
        return unfinished
    rels = [r for r in led.releases(s.name, limit=50) if r.status == ReleaseStatus.SUPERSEDED]
    if rels and live:
        return rels[0].release_id, live.release_id
    back = target.way_back(None)   # a runner that does not share the ledger that made the releases
    return back.to, back.current


def _unfinished(led: Ledger, env: str, live: ReleaseRow | None) -> tuple[str, str] | None:
    """(target, fled) of the last rollback when it stopped after the hosts switched (the ledger
    already says its target is live): running `invoke rollback` again finishes that one, it
    does not go back one release further."""
    last = led.runs(env, flow="rollback", limit=1)
    if not last or last[0].status not in (RunStatus.FAILED_IN_PLACE, RunStatus.FAILED) or not live:
        return None
    args = last[0].args or {}
    if args.get("to") == live.release_id and args.get("from") and args["from"] != args["to"]:
        return args["to"], args["from"]
    return None


def plan(s: Settings, led: Ledger, *, to: str | None, db: str, skip_shopify: bool, environ, skipped=()) -> Plan:
    if db not in ("keep", "down", "restore"):
        raise SettingsError(f"--db={db!r} is not one of keep, down, restore.",
                            "keep leaves the database as it is; down runs down.sql of the rolled-back release's "
                            "migrations; restore loads the backup taken before it was deployed.")
    target, current = target_release(s, led, to)
    live = led.live_release(s.name)
    rows = led.releases(s.name, limit=100)
    # What the release being fled recorded (the live one; `current` when finishing a rollback
    # that stopped after its switch, which the ledger already records).
    fled_row = next((r for r in rows if r.release_id == current), live) if current else live
    fled_sha = fled_row.sha if fled_row else None
    fled = common.promotion_of(led, s.name, fled_row.release_id if fled_row else None)
    target_row = next((r for r in rows if r.release_id == target), None)
    if target is None:
        raise DeployError(f"{s.name} has no earlier release in the ledger to roll back to.",
                          "Name one with --to=RELEASE (see `invoke hosts.releases --env=...`).")

    shop_skip = "--skip-shopify given" if skip_shopify else shopify.skip_reason(s)
    db_skip = None
    if s.database.provider == "none":
        db_skip = "no database for this environment"
    elif db == "keep":
        db_skip = "--db=keep: the database stays as it is (schema changes are backward compatible)"
    # Each step is the way back of the promote step of the same name (deploy/flows/steps/).
    blockers = (lambda: []) if db_skip else (
        lambda: steps.rollback_blockers(s, db, fled, fled_sha, current, environ))
    seq = [
        steps.rollback_check(s, led, live, current, blockers),
        steps.release_back(s, target, current, environ, ledger=led, target_known=target_row is not None,
                           skipped=skipped),
        steps.shopify_back(s, target_row.shopify_version if target_row else None, environ, skip=shop_skip),
        steps.database_back(s, db, fled, fled_sha, current, environ, skip=db_skip),
        steps.smoke_after(s, target),
        steps.record_rollback(s, led, target, current, target_known=target_row is not None),
    ]
    return Plan("rollback", s.name, seq, sha=target_row.sha if target_row else None, release_id=target,
                args={"to": target, "from": current, "db": db, "skip_shopify": skip_shopify,
                      **({"skip_hosts": list(skipped)} if skipped else {})},
                header=[("environment", s.name), ("from", current or "-"), ("to", target), ("database", db)])


def main(svc: Services, env: str, *, to=None, db="keep", skip_shopify=False, dry_run=False, yes=False, skip_hosts=()) -> None:
    s = svc.settings(env)
    s, skipped = common.skipping_hosts(s, skip_hosts)
    led = svc.ledger()
    p = plan(s, led, to=to, db=db, skip_shopify=skip_shopify, environ=svc.environ_for(s.name), skipped=skipped)
    if dry_run:
        svc.term.out(p.table() + "\n\nwhat each step would run or touch:\n" + p.commands() + "\n\ndry run: nothing was changed.")
        return
    # Refused before anyone is asked and before any host switches (the check step asks again under the lock).
    check = p.step("check").run
    assert check is not None
    check(StepContext(run_id=None, env=s.name, state={}, console=Console()))
    if db != "keep" or s.environment.protected:
        svc.term.out(p.table() + "\n")
        svc.term.confirm(f"Roll {env} back to {p.release_id}" + (f" and its database ({db})" if db != "keep" else "") + "?",
                    yes)
    outcome = Runner(led, Console(), rollback=False).execute(p)
    common.report(s, led, outcome, title=f"rollback {s.name}", kind="rollback")
    if outcome.ok:
        svc.term.out(f"time to rollback: {outcome.duration:.1f}s")
    for h in skipped:
        svc.term.out(f"{h}: skipped (--skip-host, recorded in run {outcome.run_id}); it still serves what it served. "
                     f"Once it answers again, bring it in line with {common.bring_back(s, p.release_id)}.")
    common.fail_if_not_ok(outcome, led, flow="rollback")
