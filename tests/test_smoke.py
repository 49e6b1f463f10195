"""Smoke checks and the watch window against real HTTP servers on loopback: a healthy
one, one that answers 500, a slow one, one that hangs, one that redirects."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploy import smoke
from deploy.config import SmokeCheck, SmokeSection, WatchSection
from deploy.errors import DeployError, SmokeFailed

RELEASE = "20240301120000-a1b2c3d"
SLOW_S = 0.15


class _Handler(BaseHTTPRequestHandler):
    counters: dict[str, int] = {}
    lock = threading.Lock()

    def log_message(self, *args):   # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes | str, ctype="application/json", headers=()):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _count(self, key: str) -> int:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        route = parts[0]
        if route == "healthz":
            self._send(200, '{"ok":true}')
        elif route == "version":
            self._send(200, json.dumps({"release": RELEASE, "sha": "a1b2c3d", "build": {"node": "20"}}))
        elif route == "error":
            self._send(500, "internal error", "text/plain")
        elif route == "slow":
            time.sleep(SLOW_S)
            self._send(200, '{"ok":true}')
        elif route == "hang":
            self.server.release_hangs.wait(30)   # set at teardown so no thread outlives the test
            self._send(200, '{"ok":true}')
        elif route == "redirect":
            self._send(302, "", headers=[("Location", "/healthz")])
        elif route == "html":
            self._send(200, "<html>ok</html>", "text/html")
        elif route == "flaky":            # /flaky/<key>/<n>: the first n calls per key answer 503
            n = self._count(parts[1])
            self._send(503 if n <= int(parts[2]) else 200, '{"ok":true}')
        elif route == "every":            # /every/<key>/<k>: every k-th call per key answers 500
            n = self._count(parts[1])
            self._send(500 if n % int(parts[2]) == 0 else 200, '{"ok":true}')
        else:
            self._send(404, '{"error":"not found"}')


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.release_hangs = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.release_hangs.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def refused_url():
    with socket.socket() as s:     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/healthz"


class FakeClock:
    """clock() and sleep() for watch(): sleeping advances time, nothing waits."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# ---------------------------------------------------------------- one check, one answer

CASES = [
    # id, path, check fields, release id, ok, status, detail contains
    ("healthz-ok", "/healthz", dict(contains='"ok":true'), None, True, 200, "ok"),
    ("version-names-the-new-release", "/version", dict(json_field="release"), RELEASE, True, 200, "ok"),
    ("version-names-another-release", "/version", dict(json_field="release"), "20240302000000-b2c3d4e", False, 200,
     f"release = '{RELEASE}', expected '20240302000000-b2c3d4e'"),
    ("version-without-a-release-to-compare", "/version", dict(json_field="release"), None, True, 200, "ok"),
    ("explicit-json-value", "/version", dict(json_field="sha", json_value="a1b2c3d"), None, True, 200, "ok"),
    ("nested-json-field", "/version", dict(json_field="build.node", json_value="20"), None, True, 200, "ok"),
    ("json-field-missing", "/version", dict(json_field="commit"), RELEASE, False, 200, "JSON field 'commit' is missing"),
    ("server-error", "/error", {}, None, False, 500, "expected status 200, got 500"),
    ("body-lacks-substring", "/healthz", dict(contains="database"), None, False, 200, "does not contain 'database'"),
    ("not-json", "/html", dict(json_field="release"), RELEASE, False, 200, "not JSON"),
    ("expected-redirect", "/redirect", dict(status=302), None, True, 302, "ok"),
    ("redirect-is-not-followed", "/redirect", {}, None, False, 302, "expected status 200, got 302"),
    ("not-found", "/nope", {}, None, False, 404, "got 404"),
    ("hang-times-out", "/hang", dict(timeout=0.3), None, False, None, "timed out after 0.3s"),
]


@pytest.mark.parametrize("path, fields, release, ok, status, detail", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_smoke_check_judges_a_real_answer(server, path, fields, release, ok, status, detail):
    report = smoke.check([SmokeCheck(url=server + path, **fields)], release_id=release, retries=0)
    (r,) = report.results
    assert (r.ok, r.status, r.attempts) == (ok, status, 1)
    assert detail in r.detail
    assert report.ok is ok


def test_refused_connection_is_a_failure_with_no_status(refused_url):
    (r,) = smoke.check([SmokeCheck(url=refused_url, timeout=1)], retries=0).results
    assert not r.ok and r.status is None and r.detail.startswith("no answer")


# ---------------------------------------------------------------- retries

def test_retries_with_exponential_backoff_until_the_target_recovers(server):
    slept: list[float] = []
    (r,) = smoke.check([SmokeCheck(url=server + "/flaky/recovers/2")], retries=3, backoff=0.1, sleep=slept.append).results
    assert r.ok and r.attempts == 3 and r.status == 200
    assert slept == [0.1, 0.2]


def test_gives_up_after_the_last_retry_with_the_last_problem(server):
    slept: list[float] = []
    (r,) = smoke.check([SmokeCheck(url=server + "/flaky/stays-down/99")], retries=2, backoff=0.5, sleep=slept.append).results
    assert not r.ok and r.attempts == 3 and r.status == 503 and "got 503" in r.detail
    assert slept == [0.5, 1.0]


# ---------------------------------------------------------------- many targets, one report

def test_every_target_is_checked_and_require_fails_once_with_all_of_them(server, refused_url):
    checks = [
        SmokeCheck(url=server + "/healthz"),
        SmokeCheck(url=server + "/error"),
        SmokeCheck(url=refused_url, timeout=1),
        SmokeCheck(url=server + "/version", json_field="release"),
    ]
    report = smoke.check(checks, release_id=RELEASE, retries=1, sleep=lambda s: None)
    assert [r.url for r in report.results] == [c.url for c in checks]
    assert [r.ok for r in report.results] == [True, False, False, True]
    assert [r.attempts for r in report.results] == [1, 2, 2, 1]
    with pytest.raises(SmokeFailed) as e:
        smoke.require(report)
    text = str(e.value)
    assert text.startswith("2 of 4 smoke checks failed")
    for c in checks:
        assert c.url in text
    assert "expected status 200, got 500" in text and "no answer" in text
    smoke.require(smoke.check([checks[0]], retries=0))   # all ok: no error


def test_no_checks_at_all_is_an_error_not_a_pass():
    with pytest.raises(SmokeFailed, match="no smoke checks"):
        smoke.check([], retries=0)


# ---------------------------------------------------------------- settings to targets

@pytest.mark.parametrize("health_path, expected", [
    ("/", ["https://app.example.com/", "http://10.0.0.5:3000/"]),
    ("/healthz", ["https://app.example.com/healthz", "http://10.0.0.5:3000/healthz"]),
], ids=["root", "healthz"])
def test_checks_for_defaults_to_the_app_health_path_on_every_base_url(health_path, expected):
    checks = smoke.checks_for(SmokeSection(), ["https://app.example.com/", "http://10.0.0.5:3000", "https://app.example.com/"],
                              health_path)
    assert [(c.url, c.status, c.json_field) for c in checks] == [(u, 0, "") for u in expected]


@pytest.mark.parametrize("status, ok", [(200, True), (204, True), (302, True), (399, True), (404, False),
                                        (500, False), (None, False)],
                         ids=["200", "204", "redirect", "399", "404", "500", "no-answer"])
def test_a_status_0_check_passes_any_2xx_or_3xx(status, ok):
    assert (smoke.judge(SmokeCheck(url="u", status=0), status, b"") is None) == ok


def test_checks_for_expands_paths_and_keeps_absolute_urls():
    section = SmokeSection(checks=(SmokeCheck(url="/version", json_field="release"), SmokeCheck(url="https://status.example.com/")))
    urls = [c.url for c in smoke.checks_for(section, ["http://h1:3000", "http://h2:3000"])]
    assert urls == ["http://h1:3000/version", "http://h2:3000/version", "https://status.example.com/"]


def test_watch_urls_join_paths_to_each_base():
    assert smoke.watch_urls(WatchSection(), ["http://h1:3000/", "http://h2:3000"], "/healthz") == [
        "http://h1:3000/healthz", "http://h2:3000/healthz"]
    assert smoke.watch_urls(WatchSection(), ["http://h1:3000"]) == ["http://h1:3000/"]


# ---------------------------------------------------------------- watch: pure judging

def _samples(spec: str, ms: float = 10.0, url: str = "u") -> list[smoke.Sample]:
    return [smoke.Sample(i, url, c == ".", 200 if c == "." else 500, ms, "ok" if c == "." else "status 500")
            for i, c in enumerate(spec)]


@pytest.mark.parametrize(
    "samples, kw, expected",
    [
        (_samples("....."), {}, None),
        (_samples("x"), {}, None),                                   # one early blip is not 100 % errors
        (_samples("..xxx"), {}, "consecutive_failures"),
        (_samples("x.x.x"), {}, "error_ratio"),
        (_samples(".x..x..."), {}, "error_ratio"),                    # 25 % > 20 %
        (_samples(".x...."), {}, None),                               # 17 % <= 20 %
        (_samples("x."), dict(final=True), "error_ratio"),            # end of window: judged whatever the count
        (_samples("......", ms=2500), {}, "p95_latency"),
        (_samples(".." * 10, ms=100) + _samples(".", ms=9000), {}, None),   # 1 outlier of 21 is above p95
    ],
    ids=["healthy", "single-early-failure", "three-in-a-row", "ratio", "ratio-25pct", "ratio-17pct",
         "final-judgement", "p95", "outlier-above-p95"],
)
def test_judge_window(samples, kw, expected):
    fired = smoke.judge_window(samples, max_error_ratio=0.2, max_p95_ms=2000, **kw)
    assert (fired[0] if fired else None) == expected


def test_p95_nearest_rank():
    assert smoke.p95([]) == 0.0
    assert smoke.p95(list(range(1, 101))) == 95
    assert smoke.p95([5.0]) == 5.0


# ---------------------------------------------------------------- watch against real servers

def _watch(urls, clock, **kw):
    args = dict(window=10, interval=2, max_error_ratio=0.2, max_p95_ms=2000, clock=clock, sleep=clock.sleep, timeout=2)
    args.update(kw)
    return smoke.watch(urls, **args)


def test_watch_a_healthy_release_for_the_whole_window(server):
    clock = FakeClock()
    report = _watch([server + "/healthz", server + "/version"], clock)
    assert report.ok and report.trigger is None and report.detail == ""
    assert clock.slept == [2] * 5 and report.duration == 10
    assert len(report.samples) == 12 and all(s.ok for s in report.samples)
    assert [s.at for s in report.samples[::2]] == [0, 2, 4, 6, 8, 10]
    assert report.error_ratio == 0.0 and 0 < report.p95_ms < 2000
    smoke.require(report)


def test_watch_stops_at_three_failures_in_a_row(server):
    clock = FakeClock()
    report = _watch([server + "/healthz", server + "/error"], clock, max_error_ratio=0.9)
    assert report.trigger == "consecutive_failures"
    assert server + "/error failed 3 times in a row (status 500)" in report.detail
    assert len(clock.slept) == 2 and len(report.samples) == 6
    with pytest.raises(SmokeFailed, match="'consecutive_failures' fired"):
        smoke.require(report)


def test_watch_error_ratio_over_threshold(server):
    clock = FakeClock()
    report = _watch([server + "/every/ratio/3"], clock, window=60, max_consecutive_failures=99)
    assert report.trigger == "error_ratio"
    assert report.error_ratio > 0.2 and len(report.samples) == 6     # 2 of 6 failed
    assert report.duration < 60


def test_watch_p95_latency_over_threshold(server):
    clock = FakeClock()
    report = _watch([server + "/slow"], clock, max_p95_ms=SLOW_S * 1000 / 2, min_samples=3)
    assert report.trigger == "p95_latency"
    assert report.p95_ms >= SLOW_S * 1000 and len(report.samples) == 3
    assert all(s.ok for s in report.samples)


def test_watch_a_hanging_server_counts_timeouts_as_failures(server):
    clock = FakeClock()
    report = _watch([server + "/hang"], clock, timeout=0.2)
    assert report.trigger == "consecutive_failures"
    assert all(s.status is None and "timed out" in s.detail for s in report.samples)


def test_watch_extra_check_fires_the_trigger(server):
    calls = []

    def decision_log_health():
        calls.append(1)
        return "decision log: 7 errors in the last hour (limit 5)" if len(calls) == 2 else None

    clock = FakeClock()
    report = _watch([server + "/healthz"], clock, extra_check=decision_log_health)
    assert report.trigger == "extra_check" and "7 errors" in report.detail
    assert len(calls) == 2 and len(report.samples) == 2


def test_watch_extra_check_raising_a_deploy_error_fires_too(server):
    def unreachable():
        raise DeployError("decision log database unreachable")

    report = _watch([server + "/healthz"], FakeClock(), extra_check=unreachable)
    assert report.trigger == "extra_check" and report.detail == "decision log database unreachable"


def test_watch_window_zero_polls_nothing(server):
    clock = FakeClock()
    report = _watch([server + "/error"], clock, window=0)
    assert report.ok and report.samples == () and clock.slept == []


@pytest.mark.parametrize("window, interval, min_samples", [(2, 2.0, 5), (1, 5.0, 4), (3, 10.0, 6)],
                         ids=["local-2s-default-interval", "1s-long-interval", "3s-six-samples"])
def test_watch_polls_over_its_whole_window_even_when_the_interval_is_longer(server, window, interval, min_samples):
    """A short window (the local environment's) with an interval as long or longer: the watch
    still takes its samples across the window, not one round (real clock and server)."""
    report = smoke.watch([server + "/healthz"], window=window, interval=interval, max_error_ratio=0.2,
                         max_p95_ms=2000, timeout=2, min_samples=min_samples)
    assert len(report.samples) >= min_samples, report.samples
    assert report.samples[-1].at >= window * 0.6 and report.duration <= window + 2
    smoke.require(report)
