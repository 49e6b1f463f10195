"""The watch step when it runs: the app's health polled for the window, with the decision log's
health as an extra trigger when the settings ask for it."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import decisionlog, smoke
from deploy.config import Settings
from deploy.engine import StepContext
from deploy.redact import Secret

from deploy.flows.steps._common import target


def watch(ctx: StepContext, s: Settings, environ) -> str:
    """Health polled over `[watch]`'s window on the URLs the release target serves; SmokeFailed on a trigger."""
    urls = smoke.watch_urls(s.watch, target(s).origins(ctx.state), s.app.health_path)
    extra = _decision_log_check(s, environ) if s.watch.decision_log_check else None
    w = s.watch
    rep = smoke.watch(urls, window=w.window_seconds, interval=w.interval_seconds,
                      max_error_ratio=w.max_error_ratio, max_p95_ms=w.max_p95_ms, extra_check=extra,
                      timeout=w.timeout_seconds, max_consecutive_failures=w.max_consecutive_failures,
                      min_samples=w.min_samples)
    smoke.require(rep)
    return f"{len(rep.samples)} samples, error ratio {rep.error_ratio:.2f}, p95 {rep.p95_ms:.0f} ms"


def _decision_log_check(s: Settings, environ):
    def check():
        url = environ.get(s.decision_log.url_var)
        if not url:
            return f"{s.decision_log.url_var} is not set"
        h = decisionlog.health(Secret(url), s.decision_log, datetime.now(timezone.utc))
        return None if h.ok else "; ".join(h.reasons)

    return check
