"""The smoke and watch steps: HTTP checks of the app after a change, and the watch window (which
runs from deploy/flows/steps/work/smoke.py)."""

from __future__ import annotations

from deploy import smoke
from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch, later

from deploy.flows.steps._common import target


def smoke_bases(s: Settings, state: dict) -> list[str]:
    """What the smoke checks ask: the URLs the release target says the app answers on (a remote
    environment's public URL and each host's origin; the local app's URL once started)."""
    return target(s).origins(state)


def run_smoke(s: Settings, state: dict, release_id: str | None):
    """The environment's smoke checks against the app and each host; SmokeFailed with every result."""
    checks = smoke.checks_for(s.smoke, smoke_bases(s, state), s.app.health_path)
    report = smoke.check(checks, release_id=release_id, retries=s.smoke.retries, backoff=s.smoke.backoff)
    smoke.require(report)
    return report


def smoke_step(s: Settings, release_id: str) -> Step:
    def run(ctx: StepContext):
        report = run_smoke(s, ctx.state, release_id)
        return f"{len(report.results)} check(s) passed on {release_id}"

    what = (f"{len(s.smoke.checks)} configured HTTP check(s)" if s.smoke.checks
            else f"HTTP check: {s.app.health_path} answers 2xx/3xx")
    def shows() -> list[Touch]:
        bases = smoke_bases(s, {}) or [f"http://{s.local.host}:{s.local.port}"]
        return [Touch("http", f"GET {c.url}") for c in smoke.checks_for(s.smoke, bases, s.app.health_path)]

    return Step("smoke", f"{what} against the app" + (" and each host" if target(s).shared else ""), run=run,
                shows=shows)


def watch_step(s: Settings, environ) -> Step:
    w = s.watch
    skip = "watch.window_seconds = 0" if w.window_seconds <= 0 else None
    return Step("watch", f"poll health for {w.window_seconds:g}s; triggers: error ratio > {w.max_error_ratio}, "
                         f"p95 > {w.max_p95_ms:g} ms" + (", decision log" if w.decision_log_check else ""),
                run=later("deploy.flows.steps.work.smoke:watch", s, environ), skip=skip)


def smoke_after(s: Settings, target: str) -> Step:
    """Mirror of `smoke_step`: the smoke checks against the restored release."""
    def run(ctx: StepContext):
        report = run_smoke(s, ctx.state, target)
        return f"{len(report.results)} check(s) passed on {target}"

    return Step("smoke", f"HTTP checks against {target}", run=run)
