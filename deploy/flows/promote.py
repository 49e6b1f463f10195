"""`invoke promote --to=ENV`: the product's main job."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone

from deploy.config import Settings
from deploy.engine import Console, Plan, Runner, Step, later
from deploy.errors import HostFailed, SettingsError
from deploy.facts import Serving
from deploy.flows import common, steps
from deploy.ledger import RunStatus
from deploy.services import Services
from deploy.source import new_release_id


def plan(s: Settings, *, sha: str, release_id: str, skip_shopify: bool = False, environ=None, ledger=None,
         accept_destructive=(), confirm=None, hosts_shown=None) -> Plan:
    """Every step of a promotion of `sha` to `s`, in order; nothing runs here. `accept_destructive`:
    destructive migrations accepted without down.sql (--accept-destructive); `confirm(question)`:
    a person asked before the migrate undo discards rows written since the backup (None: nobody);
    `hosts_shown`: each host's current release as shown before the confirmation (checked under the host lock)."""
    environ = os.environ if environ is None else environ
    accept = tuple(accept_destructive or ())
    seq = [steps.preflight(s, sha, environ, skip_shopify=skip_shopify, accept_destructive=accept)]
    if steps.target(s).shared:
        seq.append(steps.lock_hosts(s, release_id, shown=hosts_shown))
    if s.environment.requires_staging_run or s.approvals.required_roles:
        seq.append(steps.approvals(s, sha, ledger))
    if s.environment.golive_required:
        seq.append(golive_step(s, sha, environ, ledger))
    seq += [
        steps.gate(s, sha),
        steps.build(s, sha, release_id, ledger),
        *([steps.image(s, sha, environ, ledger)] if steps.ships_image(s) else []),
        steps.backup(s, sha, environ),
        steps.migrate(s, environ, sha, accept=accept, confirm=confirm),
        *([steps.env_push(s, environ)] if steps.pushes_env(s) else []),
        steps.release(s, release_id, environ),
        steps.shopify_push(s, release_id, sha, environ, skip=skip_shopify),
        steps.smoke_step(s, release_id),
        steps.watch_step(s, environ),
        steps.record(s, sha, release_id, ledger),
    ]
    header = [("environment", f"{s.name} ({s.environment.description or s.environment.kind})"),
              ("commit", sha), ("release", release_id)]
    return Plan("promote", s.name, seq, sha=sha, release_id=release_id,
                args={"sha": sha, "release_id": release_id, "skip_shopify": skip_shopify,
                      **({"accept_destructive": list(accept)} if accept else {})}, header=header,
                resume_cmd=f"invoke promote --to={s.name} --resume", abort_cmd=f"invoke promote --to={s.name} --abort")


def golive_step(s: Settings, sha: str, environ, ledger):
    return Step("golive", "go-live checklist: evidence, decision log, backup, drills, secrets, parity, approvals",
                run=later("deploy.flows.steps.work.golive:checklist", s, sha, environ, ledger))


def main(svc: Services, env: str, *, sha=None, dry_run=False, skip_shopify=False, resume=False, abort=False, yes=False,
         no_rollback=False, break_lock=False, skip_hosts=(), accept_destructive=()) -> None:
    s = svc.settings(env, flag="--to")
    if skip_hosts and not abort:
        raise SettingsError("--skip-host only goes with --abort: a promotion (or its --resume) needs every host.",
                            f"Bring the host back, or undo the run on the others: invoke promote --to={env} --abort "
                            f"--skip-host=HOST.")
    s, skipped = common.skipping_hosts(s, skip_hosts)
    if resume and abort:
        raise SettingsError("--resume and --abort contradict each other.", "Pass one of them.")
    if dry_run and (resume or abort):
        raise SettingsError(f"--dry-run (or invoke --dry) cannot go with --{'resume' if resume else 'abort'}: "
                            "finishing or undoing a killed run has no dry run.",
                            f"`invoke lock.status --env={env}` and `invoke status` show the run; drop --dry to "
                            f"{'finish' if resume else 'undo'} it.")
    if break_lock and not (resume or abort):
        raise SettingsError("--break-lock only goes with --resume or --abort (it takes over a killed run's lock).",
                            f"Pass --abort or --resume too, e.g. invoke promote --to={env} --abort --break-lock.")
    if resume or abort:
        led = svc.ledger()
        run = common.unfinished_run(led, s.name, "promote")
        # --abort: a person is there to say whether rows written since the backup may go (`--yes`
        # says it without a terminal); an automatic undo (of a failed --resume) asks nobody.
        ask = (lambda question: svc.term.confirm(question, yes)) if abort else None
        p = plan(s, ledger=led, environ=svc.environ_for(s.name), confirm=ask,
                 **{k: v for k, v in run.args.items() if k != "skip_hosts"})
        runner = Runner(led, Console(), rollback=not no_rollback)
        outcome = (runner.resume(p, run.id, break_lock=break_lock) if resume
                   else runner.abort(p, run.id, break_lock=break_lock))
        target = steps.target(s)
        if abort and outcome.status == RunStatus.ABORTED and target.shared:
            # An abort repeated after a failed one re-runs the release's undo, which takes the
            # hosts' lock for the run while the lock step (undone the first time) is not run again.
            target.unlock_reachable(run.id)
        if skipped:
            common.record_skipped(svc, led, s, run.id, run.args, skipped)
    else:
        full = common.app_sha(s, sha)
        release_id = new_release_id(full, datetime.now(timezone.utc))
        if dry_run:
            p = plan(s, sha=full, release_id=release_id, skip_shopify=skip_shopify, environ=svc.environ_for(s.name),
                     accept_destructive=accept_destructive)
            svc.term.out(p.table())
            svc.term.out("\nwhat each step would run or touch:\n" + p.commands())
            svc.term.out("\ndry run: nothing was changed.")
            return
        led = svc.ledger()
        on_hosts = None
        if s.environment.protected and steps.target(s).shared:
            try:   # what the hosts serve, which a runner of another ledger may change too
                on_hosts = steps.target(s).serving()
            except HostFailed as e:
                raise steps.with_skip_hint(e, s.name, f"invoke promote --to={s.name}") from None
        p = plan(s, sha=full, release_id=release_id, skip_shopify=skip_shopify, environ=svc.environ_for(s.name),
                 ledger=led, accept_destructive=accept_destructive, hosts_shown=on_hosts)
        if s.environment.protected:
            shown = led.live_release(s.name)
            svc.term.out(p.table() + f"\nlive now: {shown.release_id if shown else 'none'}"
                         + (f" ({shown.sha[:12]})" if shown and shown.sha else "")
                         + ("\nhosts serve: " + ", ".join(f"{h}: {c or 'nothing'}" for h, c in on_hosts.items())
                            if on_hosts else "") + "\n")
            svc.term.confirm(f"Promote {full[:12]} to {s.name}?", yes)
            p = dataclasses.replace(p, guard=lambda: common.still_live(led, s.name, shown))
        outcome = Runner(led, Console(), rollback=not no_rollback).execute(p)
    common.report(s, led, outcome, title=f"promote {s.name}", kind="promote")
    common.fail_if_not_ok(outcome, led)
    serving = outcome.fact(Serving)
    if serving:   # a target that serves the app from this machine says where
        svc.term.out(f"the app: {serving.url}{s.app.health_path}  (stop it with: invoke app.stop --env={s.name})")
