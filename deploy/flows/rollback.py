"""`invoke rollback --env=ENV [--to=RELEASE]`: on-call's way back, first time, in seconds.

Previous (or named) web release, previous Shopify app version, optionally the database
(down-migrations or the pre-deploy backup), then smoke against the restored release.
A rollback that fails part-way is left in place (not undone: that would bring back the
release being fled) and says exactly which part failed; re-running it is safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy import cli
from deploy.config import Settings
from deploy.engine import Console, Plan, Runner, Step, StepContext
from deploy.errors import DeployError, SettingsError
from deploy.flows import common, steps


def target_release(s: Settings, led, to: str | None) -> tuple[str | None, str]:
    """(release to go back to, release now live)."""
    if s.is_local:
        from deploy import local

        root = steps.local_root(s)   # this app's releases only
        now = local.current(root)
        if to:
            if to not in local.releases(root):
                raise SettingsError(f"Release {to} is not in {root}/releases.",
                                    f"Known: {', '.join(local.releases(root)[-5:]) or '(none)'}.")
            return to, now
        prev = local.previous(root)
        if not prev:
            older = [r for r in local.releases(root) if now and r < now]
            prev = older[-1] if older else None
        if not prev:
            raise DeployError(f"{s.name} has no earlier release to roll back to (current: {now or 'none'}).")
        return prev, now
    live = led.live_release(s.name)
    if to:
        return to, (live or {}).get("release_id")
    rels = [r for r in led.releases(s.name, limit=50) if r["status"] in ("superseded",)]
    if rels and live:
        return rels[0]["release_id"], live["release_id"]
    return _from_hosts(s)


def _from_hosts(s: Settings) -> tuple[str | None, str | None]:
    """(previous, current) as the hosts see them: for a runner that does not share the
    ledger that made the releases. Every host must agree on current."""
    if not s.hosts.hosts:
        return None, None
    from deploy import hosts

    seen = hosts.releases(s.hosts)
    currents = {h.current for h in seen}
    if len(currents) != 1 or None in currents:
        raise DeployError(
            "The hosts are not on one release: " + ", ".join(f"{h.host}: {h.current or '-'}" for h in seen),
            f"Name the release to go back to: invoke rollback --env={s.name} --to=RELEASE.")
    current = currents.pop()
    common = sorted(set.intersection(*(set(h.releases) for h in seen)))
    older = [r for r in common if r < current]
    return (older[-1] if older else None), current


def plan(s: Settings, led, *, to: str | None, db: str, skip_shopify: bool, environ) -> Plan:
    if db not in ("keep", "down", "restore"):
        raise SettingsError(f"--db={db!r} is not one of keep, down, restore.",
                            "keep leaves the database as it is; down runs down.sql of the rolled-back release's "
                            "migrations; restore loads the backup taken before it was deployed.")
    target, current = target_release(s, led, to)
    live = led.live_release(s.name) or {}
    fled = common.promotion_of(led, s.name, live.get("release_id"))  # what the release being fled recorded
    target_row = next((r for r in led.releases(s.name, limit=100) if r["release_id"] == target), {})

    def release_back(ctx: StepContext):
        if s.is_local:
            from deploy import local

            root = steps.local_root(s)
            if local.current(root) != target:
                local.switch(root, target)
            info = steps.restart_local(s, environ)
            ctx.state["app_url"] = info.url
            return f"{current or '-'} -> {target} ({info.url})"
        from deploy import hosts

        results = hosts.rollback(s.hosts, target if to or target else None, run_id=ctx.run_id,
                                 env=hosts.hook_env(s.hosts, environ), app=s.app)
        return ", ".join(f"{r.host}: {r.previous or '-'} -> {r.release}" for r in results)

    def shopify_back(ctx: StepContext):
        from deploy import shopify

        version = target_row.get("shopify_version")
        res = shopify.rollback(s, version, environ)
        return f"app version {res.version} live (was {res.previous or '-'})" + (f"; {res.note}" if res.note else "")

    def database_back(ctx: StepContext):
        from deploy import backups, migrations

        url = steps.database_url(s, environ)
        mdir = steps.migrations_dir(s)
        base = steps.sqlite_base(s)
        if db == "restore":
            b = fled.backup if fled else None
            if not b or not Path(b).exists():
                raise DeployError(f"The backup taken before {current} is not on this machine ({b or 'none recorded'}).",
                                  "Restore a specific file with `invoke db.restore --env=... --file=...`.")
            backups.restore(b, url, sqlite_base=base, db=s.database)
            return f"restored {Path(b).name}"
        if fled is None or fled.migrations_before is None:
            # Without the list, "this release's migrations" is unknown: guessing could drop them all.
            raise DeployError(f"The ledger has no record of which migrations {current or 'the live release'} applied "
                              "(it was not made by a promotion that reached migrate), so --db=down cannot tell "
                              "which to undo; nothing was changed in the database.",
                              f"Undo a known number with `invoke db.rollback --env={s.name} --steps=N`, or use "
                              "--db=restore / --db=keep.")
        before = set(fled.migrations_before)
        st = migrations.status(url, mdir, sqlite_base=base, db=s.database)
        ours = [n for n in st.applied if n not in before]
        if not ours:
            return f"{current} applied no migration: nothing to undo"
        res = migrations.rollback(url, mdir, steps=len(ours), sqlite_base=base, db=s.database)
        return f"down-migrated {', '.join(res.rolled_back)}"

    def smoke_after(ctx: StepContext):
        report = steps.run_smoke(s, ctx.state, target)
        return f"{len(report.results)} check(s) passed on {target}"

    def record(ctx: StepContext):
        if current:
            led.set_release_status(s.name, current, "rolled_back")
        if target_row:
            led.set_release_status(s.name, target, "live")
        return f"{target} live; {current or '-'} rolled back"

    from deploy import shopify

    shop_skip = "--skip-shopify given" if skip_shopify else shopify.skip_reason(s)
    db_skip = None
    if s.database.provider == "none":
        db_skip = "no database for this environment"
    elif db == "keep":
        db_skip = "--db=keep: the database stays as it is (schema changes are backward compatible)"
    seq = [
        Step("release", f"switch every host back to {target}, restart", run=release_back),
        Step("shopify", f"re-release app version {target_row.get('shopify_version') or 'before the current one'}",
             run=shopify_back, skip=shop_skip),
        Step("database", {"down": "down.sql of the rolled-back release's migrations",
                          "restore": "restore the backup taken before the rolled-back release"}.get(db, "keep"),
             run=database_back, skip=db_skip),
        Step("smoke", f"HTTP checks against {target}", run=smoke_after),
        Step("record", "ledger: target live, current rolled back", run=record),
    ]
    if target is None:
        raise DeployError(f"{s.name} has no earlier release in the ledger to roll back to.",
                          "Name one with --to=RELEASE (see `invoke hosts.releases --env=...`).")
    return Plan("rollback", s.name, seq, sha=target_row.get("sha"), release_id=target,
                args={"to": target, "db": db, "skip_shopify": skip_shopify},
                header=[("environment", s.name), ("from", current or "-"), ("to", target), ("database", db)])


def main(env: str, *, to=None, db="keep", skip_shopify=False, dry_run=False, yes=False) -> None:
    s = cli.settings(env)
    led = cli.ledger()
    p = plan(s, led, to=to, db=db, skip_shopify=skip_shopify, environ=os.environ)
    if dry_run:
        cli.out(p.table() + "\n\ndry run: nothing was changed.")
        return
    if db != "keep" or s.environment.protected:
        cli.out(p.table() + "\n")
        cli.confirm(f"Roll {env} back to {p.release_id}" + (f" and its database ({db})" if db != "keep" else "") + "?",
                    yes)
    outcome = Runner(led, Console(), rollback=False).execute(p)
    common.report(s, led, outcome, title=f"rollback {s.name}", kind="rollback")
    if outcome.ok:
        cli.out(f"time to rollback: {outcome.duration:.1f}s")
    common.fail_if_not_ok(outcome, led, flow="rollback")
