"""Smoke checks after a release, and the watch window that may trigger a rollback.

Many targets, one report (as Fabric's GroupResult): every URL is checked, each with its
own retries, and `require()` fails once with a table of all of them. Judging a response
(`judge`) and a window of samples (`judge_window`) are pure functions; the HTTP and the
waiting happen in `check` and `watch`, whose clock and sleep are passed in.

Standard library only, imported lazily: `tasks.py` imports this at start-up.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from deploy.config import SmokeCheck, SmokeSection, WatchSection
from deploy.errors import DeployError, SmokeFailed
from deploy.parallel import pmap
from deploy.redact import mask_url

MAX_BODY = 1 << 20     # a health answer is small; never read a runaway body whole


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class SmokeResult:
    url: str
    ok: bool
    status: int | None     # None: no HTTP answer (refused, timed out)
    detail: str            # "ok", or what was wrong on the last attempt
    attempts: int
    latency_ms: float      # of the last attempt


@dataclass(frozen=True)
class SmokeReport:
    results: tuple[SmokeResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> tuple[SmokeResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    def table(self) -> str:
        from tabulate import tabulate

        rows = [
            (mask_url(r.url), "ok" if r.ok else "FAIL", r.status if r.status is not None else "-",
             r.attempts, f"{r.latency_ms:.0f}", r.detail)
            for r in self.results
        ]
        return tabulate(rows, headers=("url", "result", "status", "attempts", "ms", "detail"))


@dataclass(frozen=True)
class Sample:
    at: float              # clock() seconds since the watch began
    url: str
    ok: bool
    status: int | None
    latency_ms: float
    detail: str


@dataclass(frozen=True)
class WatchReport:
    samples: tuple[Sample, ...]
    error_ratio: float
    p95_ms: float
    trigger: str | None    # None, "consecutive_failures", "error_ratio", "p95_latency", "extra_check"
    detail: str            # why the trigger fired ("" when none did)
    duration: float        # clock() seconds watched

    @property
    def ok(self) -> bool:
        return self.trigger is None


# ---------------------------------------------------------------- pure judging

def judge(check: SmokeCheck, status: int | None, body: bytes, release_id: str | None = None) -> str | None:
    """What is wrong with this answer to `check`, or None when it passes."""
    if check.status == 0:
        if status is None or not 200 <= status < 400:
            return f"expected a 2xx or 3xx answer, got {status}"
    elif status != check.status:
        return f"expected status {check.status}, got {status}"
    text = body.decode("utf-8", errors="replace")
    if check.contains and check.contains not in text:
        return f"body does not contain {check.contains!r}"
    if check.json_field:
        try:
            doc = json.loads(text)
        except ValueError:
            return f"body is not JSON (wanted field {check.json_field!r})"
        value, found = _field(doc, check.json_field)
        if not found or value in (None, ""):
            return f"JSON field {check.json_field!r} is missing"
        if "{release}" in check.json_value and release_id is None:
            return None   # no release to compare with (a stand-alone smoke run): present is enough
        expected = check.json_value.replace("{release}", release_id or "")
        if str(value) != expected:
            return f"{check.json_field} = {value!r}, expected {expected!r}"
    return None


def _field(doc, dotted: str):
    cur = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None, False
        cur = cur[part]
    return cur, True


def p95(values: Sequence[float]) -> float:
    """95th percentile by nearest rank (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def judge_window(
    samples: Sequence[Sample],
    *,
    max_error_ratio: float,
    max_p95_ms: float,
    max_consecutive_failures: int = 3,
    min_samples: int = 5,
    final: bool = False,
) -> tuple[str, str] | None:
    """The trigger (name, detail) a window of samples fires, or None.

    Ratio and p95 are judged once `min_samples` are in (or at the end of the window), so
    one early blip of one sample is not "100 % errors"; a URL failing
    `max_consecutive_failures` polls in a row fires at once."""
    streak: dict[str, int] = {}
    last: dict[str, Sample] = {}
    for s in samples:
        streak[s.url] = 0 if s.ok else streak.get(s.url, 0) + 1
        last[s.url] = s
    for url, n in streak.items():
        if n >= max_consecutive_failures:
            return "consecutive_failures", f"{mask_url(url)} failed {n} times in a row ({last[url].detail})"
    if not samples or (len(samples) < min_samples and not final):
        return None
    ratio = sum(1 for s in samples if not s.ok) / len(samples)
    if ratio > max_error_ratio:
        return "error_ratio", f"{ratio:.0%} of {len(samples)} requests failed (limit {max_error_ratio:.0%})"
    q = p95([s.latency_ms for s in samples])
    if q > max_p95_ms:
        return "p95_latency", f"p95 latency {q:.0f} ms over {len(samples)} requests (limit {max_p95_ms:.0f} ms)"
    return None


# ---------------------------------------------------------------- settings to targets

def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/") if path.startswith("/") else path


def default_checks(base_url: str, health_path: str = "/") -> list[SmokeCheck]:
    """The app's health path (app.health_path) answers 2xx or 3xx: the release contract's check."""
    return [SmokeCheck(url=join_url(base_url, health_path), status=0)]


def checks_for(section: SmokeSection, base_urls: Iterable[str], health_path: str = "/") -> list[SmokeCheck]:
    """The checks to run: configured ones whose url is a "/path" are run against every base
    URL (the app and each host), absolute ones as they are; none configured: the health path."""
    bases = [b for b in dict.fromkeys(base_urls) if b]
    if not section.checks:
        return [c for b in bases for c in default_checks(b, health_path)]
    out: list[SmokeCheck] = []
    for c in section.checks:
        if c.url.startswith("/"):
            out.extend(_replace(c, url=join_url(b, c.url)) for b in bases)
        else:
            out.append(c)
    return out


def watch_urls(section: WatchSection, base_urls: Iterable[str], health_path: str = "/") -> list[str]:
    """The URLs the watch polls: watch.urls ("/path" joined to every base), or the health path."""
    bases = [b for b in dict.fromkeys(base_urls) if b]
    out: list[str] = []
    for u in section.urls or (health_path,):
        if u.startswith("/"):
            out.extend(join_url(b, u) for b in bases)
        else:
            out.append(u)
    return list(dict.fromkeys(out))


def _replace(check: SmokeCheck, **kw) -> SmokeCheck:
    return dataclasses.replace(check, **kw)


# ---------------------------------------------------------------- HTTP

def _get(url: str, timeout: float) -> tuple[int | None, bytes, float, str | None]:
    """One GET, no redirects followed, no exception: (status, body, latency ms, error)."""
    # The HTTP client (urllib.request pulls in http.client and email) is the standard library's,
    # loaded on the first request: a plan (--dry-run) builds its smoke URLs from this module
    # without ever asking one.
    import urllib.error
    import urllib.request

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):   # a 302 is an answer to judge, not to follow
            return None

    handlers: list = [_NoRedirect()]
    if (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1"):
        handlers.append(urllib.request.ProxyHandler({}))   # loopback never goes through a proxy
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"User-Agent": "occ-deploy-smoke/1", "Cache-Control": "no-cache"})
    start = time.perf_counter()
    try:
        with opener.open(req, timeout=timeout) as r:
            body = r.read(MAX_BODY)
            return r.status, body, (time.perf_counter() - start) * 1000, None
    except urllib.error.HTTPError as e:
        try:
            body = e.read(MAX_BODY)
        except OSError:
            body = b""
        return e.code, body, (time.perf_counter() - start) * 1000, None
    except (TimeoutError, socket.timeout):
        return None, b"", (time.perf_counter() - start) * 1000, f"timed out after {timeout:g}s"
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            why = f"timed out after {timeout:g}s"
        else:
            why = getattr(reason, "strerror", None) or str(reason)
        return None, b"", (time.perf_counter() - start) * 1000, f"no answer: {why}"
    except (OSError, ValueError) as e:   # reset mid-body, bad URL, bad status line
        return None, b"", (time.perf_counter() - start) * 1000, f"no answer: {e}"


def probe(url: str, timeout: float = 1.0) -> str:
    """One health probe: '' when `url` answers 2xx or 3xx (redirects are not followed: a
    Shopify app's / redirects to its auth), else what was wrong."""
    status, _, _, err = _get(url, timeout)
    if status is not None and 200 <= status < 400:
        return ""
    return err or f"HTTP {status}"


# ---------------------------------------------------------------- smoke

def check(
    checks: Sequence[SmokeCheck],
    *,
    release_id: str | None = None,
    retries: int = 3,
    backoff: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> SmokeReport:
    """Run every check (in parallel), each up to 1 + `retries` times with exponential
    backoff (backoff, 2*backoff, ...); never raises for a failing target."""

    def one(c: SmokeCheck) -> SmokeResult:
        problem: str | None
        attempts, problem, status, latency = 0, "not run", None, 0.0
        for attempt in range(retries + 1):
            if attempt:
                sleep(backoff * 2 ** (attempt - 1))
            attempts += 1
            status, body, latency, error = _get(c.url, c.timeout)
            problem = error or judge(c, status, body, release_id)
            if problem is None:
                return SmokeResult(c.url, True, status, "ok", attempts, latency)
        return SmokeResult(c.url, False, status, problem, attempts, latency)

    if not checks:
        raise SmokeFailed("There are no smoke checks to run.", "Declare [[smoke.checks]] or pass the app's URL.")
    return SmokeReport(tuple(pmap(one, checks, 16)))


def require(report: SmokeReport | WatchReport) -> None:
    """SmokeFailed with every target's outcome (a smoke report) or the trigger (a watch report)."""
    if isinstance(report, WatchReport):
        if report.trigger is not None:
            raise SmokeFailed(
                f"Watch trigger {report.trigger!r} fired after {report.duration:.0f}s: {report.detail}",
                "The new release is not healthy under load; the flow rolls it back.",
            )
        return
    if report.ok:
        return
    n, m = len(report.failed), len(report.results)
    hint = "The release answering is not the healthy new one; the flow rolls back. Re-check with: invoke smoke --env=<env>"
    unreached = [r.url for r in report.failed if r.status is None and _NO_HOST.search(r.detail or "")]
    if unreached and len(unreached) == n:
        # Nothing answered at that name at all: the URL, not the release, is what is wrong.
        hint = (f"No server answers at {', '.join(unreached)} (its name does not resolve): the URL is wrong, not "
                "the release. Set environment.app_url in env/<env>.toml to the app's public URL, or to \"\" to "
                "smoke-check the hosts only, commit, then promote again.")
    raise SmokeFailed(f"{n} of {m} smoke check{'s' if m != 1 else ''} failed:\n{report.table()}", hint)


_NO_HOST = re.compile(r"Name or service not known|nodename nor servname|No address associated|"
                      r"Temporary failure in name resolution|getaddrinfo failed", re.I)


# ---------------------------------------------------------------- watch

def watch(
    urls: Sequence[str],
    *,
    window: float,
    interval: float,
    max_error_ratio: float,
    max_p95_ms: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    extra_check: Callable[[], str | None] | None = None,
    timeout: float = 5.0,
    max_consecutive_failures: int = 3,
    min_samples: int = 5,
) -> WatchReport:
    """Poll `urls` every `interval` for `window` seconds; stop early when a trigger fires.

    `extra_check()` (e.g. the decision-log health check) runs each round and returns a
    problem description or None; a DeployError it raises counts as a problem."""
    start = clock()
    samples: list[Sample] = []
    fired: tuple[str, str] | None = None
    if window > 0 and min_samples > 0:
        # A window shorter than interval x min_samples (a local watch of 2 s at the default 2 s)
        # would take one round: poll often enough that the window holds min_samples rounds.
        interval = min(interval, window / min_samples)
    if window > 0 and urls:
        while True:
            at = clock() - start
            for url, (status, _body, ms, error) in zip(urls, pmap(lambda u: _get(u, timeout), urls, 16)):
                ok = error is None and status is not None and 200 <= status < 400
                samples.append(Sample(at, url, ok, status, ms, "ok" if ok else (error or f"status {status}")))
            if extra_check is not None:
                try:
                    problem = extra_check()
                except DeployError as e:
                    problem = e.message
                if problem:
                    fired = ("extra_check", problem)
                    break
            done = clock() - start + interval > window
            fired = judge_window(
                samples, max_error_ratio=max_error_ratio, max_p95_ms=max_p95_ms,
                max_consecutive_failures=max_consecutive_failures, min_samples=min_samples, final=done,
            )
            if fired or done:
                break
            sleep(interval)
    lat = [s.latency_ms for s in samples]
    ratio = (sum(1 for s in samples if not s.ok) / len(samples)) if samples else 0.0
    return WatchReport(
        samples=tuple(samples),
        error_ratio=ratio,
        p95_ms=p95(lat),
        trigger=fired[0] if fired else None,
        detail=fired[1] if fired else "",
        duration=clock() - start,
    )
