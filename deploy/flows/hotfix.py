"""`invoke hotfix.drill --env=staging`: the hotfix and rollback
procedures exercised for real and recorded, so "exercised" is a fact in the ledger.

Phases, each timed: baseline (the drill environment runs what production runs), deploy
(a hotfix candidate through the gated fast path, watch shortened), detect (a rollback
trigger is forced, as on-call would on a bad hotfix), rollback (`invoke rollback`'s own
plan), verify (smoke proves the restored release answers).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

from deploy import build, feedback
from deploy.engine import Console, Runner, StepContext
from deploy.errors import DeployError, SettingsError
from deploy.flows import common, promote, rollback
from deploy.ledger import Ledger, whoami
from deploy.services import Services


def _phase(durations: dict, name: str, fn):
    t0 = time.monotonic()
    try:
        return fn()
    finally:
        durations[name] = round(time.monotonic() - t0, 3)


def _run(led: Ledger, plan, durations, name):
    outcome = _phase(durations, name, lambda: Runner(led, Console()).execute(plan))
    if not outcome.ok:
        common.fail_if_not_ok(outcome, led)
    return outcome


def drill(svc: Services, env: str, *, sha: str | None, production: str = "production", watch_seconds: float = 2.0) -> dict:
    s = svc.settings(env)
    if s.environment.protected or env == production:
        raise SettingsError(f"{env} is protected: drills run on a rehearsal environment.",
                            "Run the drill on staging: invoke hotfix.drill --env=staging.")
    led = svc.ledger()
    # The fast path: gates still required, the watch window shortened.
    fast = dataclasses.replace(s, watch=dataclasses.replace(s.watch, window_seconds=min(s.watch.window_seconds or 0,
                                                                                        watch_seconds)))
    durations: dict[str, float] = {}
    started = time.time()
    outcome, note = "failed", None
    candidate = common.app_sha(s, sha)
    prod_live = led.live_release(production)
    baseline_row = prod_live or led.live_release(env)
    baseline_sha = baseline_row.sha if baseline_row else None
    try:
        if not baseline_sha:
            raise DeployError(f"Neither {production} nor {env} has a live release to drill from.",
                              f"Promote once first: invoke promote --to={env}.")
        # 1. baseline: what production runs, on the drill environment (its gate was passed when it shipped).
        live = led.live_release(env)
        if (live.sha if live else None) != baseline_sha:
            rid = build.new_release_id(baseline_sha, datetime.now(timezone.utc))
            plan = promote.plan(fast, sha=baseline_sha, release_id=rid, ledger=led, environ=svc.environ).skip(
                "gate", f"baseline {baseline_sha[:12]} passed its gate when it shipped to {production}")
            _run(led, plan, durations, "baseline")
        else:
            durations["baseline"] = 0.0
        now_live = led.live_release(env)
        assert now_live is not None, "the baseline step left a live release"
        baseline = now_live.release_id
        # 2. deploy the hotfix candidate through the gated fast path.
        rid = build.new_release_id(candidate, datetime.now(timezone.utc))
        if rid == baseline:
            time.sleep(1.0)  # release ids have one-second resolution
            rid = build.new_release_id(candidate, datetime.now(timezone.utc))
        _run(led, promote.plan(fast, sha=candidate, release_id=rid, ledger=led, environ=svc.environ), durations, "deploy")
        # 3. detect: the drill forces the trigger on-call would pull on a bad hotfix.
        _phase(durations, "detect", lambda: svc.term.out(f"drill: forcing a rollback trigger on {rid}"))
        # 4. rollback with the on-call plan, 5. verify smoke on the restored release.
        rb = rollback.plan(s, led, to=baseline, db="down", skip_shopify=False, environ=svc.environ)
        smoke_step = rb.step("smoke")  # timed on its own as the verify phase
        _run(led, rb.without("smoke"), durations, "rollback")

        ctx = StepContext(run_id=None, env=env, state={}, console=Console())
        smoke_run = smoke_step.run
        assert smoke_run is not None
        _phase(durations, "verify", lambda: smoke_run(ctx))
        outcome = "passed"
    except DeployError as e:
        note = e.message.splitlines()[0][:300]
        raise
    finally:
        finished = time.time()
        total = round(finished - started, 3)
        rec = dict(durations, total=total)
        led.record_drill(env=env, procedure="hotfix", started_at=started, finished_at=finished, outcome=outcome,
                         durations=rec, note=note)
        if "rollback" in durations:
            led.record_drill(env=env, procedure="rollback", started_at=started, finished_at=finished,
                             outcome=outcome, durations={k: durations[k] for k in ("rollback", "verify")
                                                         if k in durations}, note=note)
        feedback.append(s.root, feedback.Entry(kind="drill", env=env, outcome=outcome, who=whoami(), sha=candidate,
                                               duration=total, text=" ".join(f"{k} {v:.1f}s" for k, v in
                                                                            durations.items()) + (f"; {note}" if note else "")))
        svc.term.out("drill " + outcome + ": " + ", ".join(f"{k} {v:.2f}s" for k, v in rec.items()))
    return rec
