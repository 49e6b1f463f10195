"""Report builders: evidence files shaped field for field like the real tools write them.

Used by the evidence tests, the benchmark and to (re)generate the sample evidence of the
example app. Each builder follows the writer named in its docstring; outcomes are given
explicitly or derived by the few plain rules written here, never by the parser under test.

Also a pytest plugin: `evidence_now` (a fixed clock) and `passing_evidence` (a factory
that writes a green Vitest + Playwright + Lighthouse CI set and collects it).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

import pytest

from deploy.evidence import collect

ROOT_DIR = "/home/runner/work/occ/occ/examples/app"
T0 = datetime(2026, 10, 20, 9, 30, 0, tzinfo=timezone.utc)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_json(path: Path, obj, *, indent: int | None = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent), encoding="utf-8")
    return path


# ---------------------------------------------------------------- Vitest JSON

_SNAPSHOT = {"added": 0, "failure": False, "filesAdded": 0, "filesRemoved": 0, "filesRemovedList": [],
             "filesUnmatched": 0, "filesUpdated": 0, "matched": 0, "total": 0, "unchecked": 0,
             "uncheckedKeysByFile": [], "unmatched": 0, "updated": 0, "didUpdate": False}


def vitest_json(files: Mapping[str, Sequence[tuple[str, str]]], *, start: datetime = T0,
                load_errors: Mapping[str, str] | None = None, major: int = 3) -> dict:
    """A Vitest JSON report (packages/vitest/src/node/reporters/json.ts).

    `files` maps a test file (relative to the app) to its tests as (title, status), status
    one of passed, failed, skipped, todo, pending; "A > b" titles are nested in describes.
    `load_errors` maps files that failed to load to their error (no assertion results).
    `major` picks the version's totals: up to 1.x skips and todos counted as passes.
    """
    load_errors = dict(load_errors or {})
    results, statuses, describes = [], [], 0
    t = _ms(start) + 40
    for rel in list(files) + [f for f in load_errors if f not in files]:
        tests = files.get(rel, ())
        assertions, first = [], t
        for k, (title, status) in enumerate(tests):
            *ancestors, name = [p.strip() for p in title.split(">")]
            describes = max(describes, len(ancestors))
            duration = 0 if status in ("skipped", "todo", "pending") else 3 + k % 5
            a = {
                "ancestorTitles": ancestors, "fullName": " ".join([*ancestors, name]), "status": status,
                "title": name, "duration": duration,
                "failureMessages": [f"AssertionError: expected 1 to be 2 // Object.is equality\n    at {ROOT_DIR}/{rel}:{10 + k}:7"]
                if status == "failed" else [],
                "location": {"line": 10 + k, "column": 3},
            }
            if major >= 2:
                a["meta"] = {}
            if major >= 5:
                a["tags"] = []
            assertions.append(a)
            statuses.append(status)
            t += duration
        message = load_errors.get(rel, "")
        failed = bool(message) or any(s == "failed" for s in (st for _, st in tests))
        results.append({"assertionResults": assertions, "startTime": first, "endTime": t,
                        "status": "failed" if failed else "passed", "message": message,
                        "name": f"{ROOT_DIR}/{rel}"})
        t += 5
    n_failed = statuses.count("failed")
    total = len(statuses)
    failed_files = sum(1 for r in results if r["status"] == "failed")
    report = {
        "numTotalTestSuites": len(results) * (1 + describes),
        "numPassedTestSuites": (len(results) - failed_files) * (1 + describes),
        "numFailedTestSuites": failed_files,
        "numPendingTestSuites": 0,
        "numTotalTests": total,
        "numPassedTests": statuses.count("passed") if major >= 2 else total - n_failed,
        "numFailedTests": n_failed,
        "numPendingTests": statuses.count("skipped") if major >= 2 else statuses.count("pending"),
        "numTodoTests": statuses.count("todo"),
        "startTime": _ms(start),
        "success": (bool(results) or major < 3) and failed_files == 0 and n_failed == 0,
        "testResults": results,
    }
    if major >= 2:
        report["snapshot"] = dict(_SNAPSHOT)
    return report


# ---------------------------------------------------------------- Playwright JSON

@dataclass(frozen=True)
class PwTest:
    """One test of one project; `results` are the statuses of its attempts (retries after the first)."""

    file: str
    title: str
    results: tuple[str, ...] = ("passed",)
    expected: str = "passed"            # expectedStatus: "skipped" for test.skip(), "failed" for test.fail()
    project: str = "chromium"
    status: str | None = None           # the reported outcome; derived from `results` when None
    line: int = 3


def pw_outcome(t: PwTest) -> str:
    """The outcome a plain reading of the attempts gives (enough for the builders' cases)."""
    ran = [r for r in t.results if r not in ("skipped", "interrupted")]
    if not ran:
        return "skipped"
    good = [r == t.expected for r in ran]
    if all(good):
        return "expected"
    return "flaky" if any(good) else "unexpected"


def _pw_result(status: str, retry: int, start: datetime, file: str, line: int) -> dict:
    r = {"workerIndex": retry, "parallelIndex": 0, "status": status,
         "duration": 0 if status == "skipped" else 850 + 13 * retry, "errors": [], "stdout": [], "stderr": [],
         "retry": retry, "startTime": _iso(start), "annotations": [], "attachments": []}
    if status in ("failed", "timedOut"):
        msg = ("Error: expect(locator).toBeVisible() failed" if status == "failed"
               else "Test timeout of 30000ms exceeded.")
        r["error"] = {"message": msg, "stack": f"{msg}\n    at {ROOT_DIR}/{file}:{line + 2}:5",
                      "location": {"file": f"{ROOT_DIR}/{file}", "line": line + 2, "column": 5}}
        r["errors"] = [{"message": msg, "location": {"file": f"{ROOT_DIR}/{file}", "line": line + 2, "column": 5}}]
        r["errorLocation"] = {"file": f"{ROOT_DIR}/{file}", "line": line + 2, "column": 5}
    return r


def playwright_json(tests: Iterable[PwTest], *, start: datetime = T0, errors: Sequence[str] = (),
                    version: str = "1.48.2", retries: int = 2, projects: Sequence[str] | None = None) -> dict:
    """A Playwright JSON report (packages/playwright/src/reporters/json.ts, types/testReporter.d.ts).

    File suites hold specs; "A > b" titles are nested in describe suites; a spec holds one
    test per project. `errors` are top-level errors (e.g. the web server never started).
    """
    tests = list(tests)
    projects = list(projects or dict.fromkeys(t.project for t in tests) or ["chromium"])
    files: dict[str, dict] = {}
    stats = {"expected": 0, "unexpected": 0, "flaky": 0, "skipped": 0}
    for k, t in enumerate(tests):
        *describes, name = [p.strip() for p in t.title.split(">")]
        suite = files.setdefault(t.file, {"title": t.file, "file": t.file, "column": 0, "line": 0, "specs": []})
        for d in describes:
            subs = suite.setdefault("suites", [])
            found = next((s for s in subs if s["title"] == d), None)
            if found is None:
                found = {"title": d, "file": t.file, "line": 2, "column": 6, "specs": []}
                subs.append(found)
            suite = found
        status = t.status or pw_outcome(t)
        stats[status] += 1
        spec = next((s for s in suite["specs"] if s["title"] == name and s["line"] == t.line), None)
        if spec is None:
            spec = {"title": name, "ok": True, "tags": [], "tests": [], "id": hashlib.sha1(f"{t.file} {name}".encode()).hexdigest()[:20] + f"-{k:x}",
                    "file": t.file, "line": t.line, "column": 5}
            suite["specs"].append(spec)
        spec["ok"] = spec["ok"] and status != "unexpected"
        spec["tests"].append({
            "timeout": 30000,
            "annotations": [{"type": "skip"}] if t.expected == "skipped" else [],
            "expectedStatus": t.expected, "projectId": t.project, "projectName": t.project,
            "results": [_pw_result(s, i, start + timedelta(seconds=i), t.file, t.line) for i, s in enumerate(t.results)],
            "status": status,
        })
    config = {
        "configFile": f"{ROOT_DIR}/playwright.config.ts", "rootDir": f"{ROOT_DIR}/e2e", "forbidOnly": True,
        "fullyParallel": True, "globalSetup": None, "globalTeardown": None, "globalTimeout": 0, "grep": {},
        "grepInvert": None, "maxFailures": 0, "metadata": {"actualWorkers": 2}, "preserveOutput": "always",
        "reporter": [["json", {"outputFile": "playwright.json"}]], "reportSlowTests": {"max": 5, "threshold": 300000},
        "quiet": False,
        "projects": [{"outputDir": f"{ROOT_DIR}/test-results", "repeatEach": 1, "retries": retries, "metadata": {},
                      "id": p, "name": p, "testDir": f"{ROOT_DIR}/e2e", "testIgnore": [],
                      "testMatch": ["**/*.@(spec|test).?(c|m)[jt]s?(x)"], "timeout": 30000} for p in projects],
        "shard": None, "updateSnapshots": "missing", "updateSourceMethod": "patch", "version": version,
        "workers": 2, "webServer": {"command": "npm run start", "url": "http://127.0.0.1:3000/healthz"},
    }
    return {
        "config": config,
        "suites": list(files.values()),
        "errors": [{"message": m, "stack": m} for m in errors],
        "stats": {"startTime": _iso(start), "duration": 4200.5 + 900 * len(tests), **stats},
    }


# ---------------------------------------------------------------- Lighthouse

CATEGORY_TITLES = {"performance": "Performance", "accessibility": "Accessibility",
                   "best-practices": "Best Practices", "seo": "SEO", "pwa": "PWA"}


def lhr(url: str, scores: Mapping[str, float | None], *, fetch_time: datetime = T0, fcp: float = 1200.0,
        tti: float = 2400.0, version: str = "12.2.1", runtime_error: tuple[str, str] | None = None) -> dict:
    """A Lighthouse result (types/lhr/lhr.d.ts; audit-result.d.ts) with the fields the gate and LHCI read."""
    def metric(aid: str, title: str, value: float | None) -> dict:
        if value is None:
            return {"id": aid, "title": title, "description": "", "score": None, "scoreDisplayMode": "error",
                    "errorMessage": "Required trace event missing"}
        return {"id": aid, "title": title, "description": "", "score": 0.9, "scoreDisplayMode": "numeric",
                "numericValue": value, "numericUnit": "millisecond", "displayValue": f"{value / 1000:.1f} s"}

    broken = runtime_error is not None
    doc = {
        "lighthouseVersion": version,
        "requestedUrl": url, "mainDocumentUrl": url, "finalDisplayedUrl": url, "finalUrl": url,
        "fetchTime": _iso(fetch_time), "gatherMode": "navigation", "runWarnings": [],
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/130.0.0.0 Safari/537.36",
        "environment": {"networkUserAgent": "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) Chrome/130.0.0.0 Mobile Safari/537.36",
                        "hostUserAgent": "HeadlessChrome/130.0.0.0", "benchmarkIndex": 2113.5,
                        "credits": {"axe-core": "4.10.2"}},
        "audits": {
            "first-contentful-paint": metric("first-contentful-paint", "First Contentful Paint", None if broken else fcp),
            "interactive": metric("interactive", "Time to Interactive", None if broken else tti),
        },
        "configSettings": {"output": ["json"], "maxWaitForFcp": 30000, "maxWaitForLoad": 45000, "formFactor": "mobile",
                           "throttlingMethod": "simulate", "onlyCategories": None, "locale": "en-US"},
        "categories": {
            cid: {"title": CATEGORY_TITLES.get(cid, cid), "supportedModes": ["navigation", "timespan", "snapshot"],
                  "auditRefs": [{"id": "first-contentful-paint", "weight": 10, "group": "metrics", "acronym": "FCP"}]
                  if cid == "performance" else [],
                  "id": cid, "score": None if broken else s}
            for cid, s in scores.items()
        },
        "categoryGroups": {},
        "timing": {"entries": [], "total": 8123.4},
        "i18n": {"rendererFormattedStrings": {}, "icuMessagePaths": {}},
    }
    if runtime_error is not None:
        doc["runtimeError"] = {"code": runtime_error[0], "message": runtime_error[1]}
        doc["runWarnings"] = [runtime_error[1]]
    return doc


def _lhci_filename(doc: dict) -> str:
    # upload.js getFileOutputPath with the default reportFilenamePattern
    # %%HOSTNAME%%-%%PATHNAME%%-%%DATETIME%%.report.%%EXTENSION%%: each value's [^a-z0-9]+ runs become "_".
    u = urlsplit(doc["requestedUrl"])
    when = datetime.fromisoformat(doc["fetchTime"]).strftime("%Y-%m-%d %H:%M:%S")
    parts = [re.sub(r"[^a-z0-9]+", "_", v, flags=re.I) for v in (u.hostname or "unknown", u.path or "unknown", when)]
    return f"{parts[0]}-{parts[1]}-{parts[2]}.report.json"


def write_lhci(folder: Path, runs: Sequence[dict], *, manifest: bool = True,
               representative: Iterable[int] = (), assertions: Sequence[dict] | None = None) -> Path:
    """A Lighthouse CI folder: `lhr-<epoch ms>.json` per run (saved-reports.js saveLHR) and, with
    `manifest`, the filesystem upload target's copies and manifest.json (upload.js runFilesystemTarget;
    `representative` are the indexes of the runs it marked isRepresentativeRun)."""
    folder.mkdir(parents=True, exist_ok=True)
    marked = set(representative)
    entries = []
    for i, doc in enumerate(runs):
        stamp = _ms(datetime.fromisoformat(doc["fetchTime"])) + i
        write_json(folder / f"lhr-{stamp}.json", doc, indent=None)
        if manifest:
            name = _lhci_filename(doc)
            write_json(folder / name, doc, indent=None)
            entries.append({"url": doc["requestedUrl"], "isRepresentativeRun": i in marked,
                            "htmlPath": f"{ROOT_DIR}/.lighthouseci/{name[:-5]}.html",
                            "jsonPath": f"{ROOT_DIR}/.lighthouseci/{name}",
                            "summary": {k: c["score"] for k, c in doc["categories"].items()}})
    if manifest:
        # upload.js writes the representative runs last.
        entries.sort(key=lambda e: 10 if e["isRepresentativeRun"] else 1)
        write_json(folder / "manifest.json", entries)
    if assertions is not None:
        write_json(folder / "assertion-results.json", list(assertions))
    return folder


# ---------------------------------------------------------------- JUnit XML

def _attrs(**kw) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in kw.items())


def vitest_junit(files: Mapping[str, Sequence[tuple[str, str]]], *, start: datetime = T0,
                 unhandled: Sequence[str] = ()) -> str:
    """Vitest's JUnit XML (packages/vitest/src/node/reporters/junit.ts): one <testsuite> per file,
    <skipped/> for skip and todo, <failure> per error, unhandled errors in their own suite."""
    out = ['<?xml version="1.0" encoding="UTF-8" ?>']
    body, n_tests, n_fail = [], 0, 0
    for rel, tests in files.items():
        fails = sum(s == "failed" for _, s in tests)
        skipped = sum(s in ("skipped", "todo") for _, s in tests)
        body.append(f"    <testsuite {_attrs(name=rel, timestamp=_iso(start), hostname='runner', tests=len(tests), failures=fails, errors=0, skipped=skipped, time='0.012')}>")
        for title, status in tests:
            inner = ""
            if status in ("skipped", "todo"):
                inner = "\n            <skipped/>"
            elif status == "failed":
                inner = (f"\n            <failure {_attrs(message='expected 1 to be 2 // Object.is equality', type='AssertionError')}>"
                         f"{escape('AssertionError: expected 1 to be 2')}\n            </failure>")
            body.append(f"        <testcase {_attrs(classname=rel, name=title, time='0.003')}>{inner}\n        </testcase>")
        body.append("    </testsuite>")
        n_tests += len(tests)
        n_fail += fails
    if unhandled:
        body.append(f"    <testsuite {_attrs(name='vitest unhandled errors', timestamp=_iso(start), hostname='runner', tests=len(unhandled), failures=0, errors=len(unhandled), skipped=0, time=0)}>")
        for msg in unhandled:
            body.append(f"        <testcase {_attrs(classname='vitest unhandled errors', name=f'Unhandled Rejection: {msg}', time=0)}>\n"
                        f"            <error {_attrs(message=msg, type='Unhandled Rejection')}>{escape(msg)}</error>\n        </testcase>")
        body.append("    </testsuite>")
    out.append(f"<testsuites {_attrs(name='vitest tests', tests=n_tests + len(unhandled), failures=n_fail, errors=len(unhandled), time='0.5')}>")
    return "\n".join(out + body + ["</testsuites>", ""])


def playwright_junit(tests: Iterable[PwTest], *, start: datetime = T0, include_retries: bool = True) -> str:
    """Playwright's JUnit XML (packages/playwright/src/reporters/junit.ts): one <testsuite> per project
    and file, <skipped/> for any skipped outcome, <failure>, and with includeRetries <flakyFailure>."""
    groups: dict[tuple[str, str], list[PwTest]] = {}
    for t in tests:
        groups.setdefault((t.project, t.file), []).append(t)
    body, totals = [], {"tests": 0, "failures": 0, "skipped": 0}
    for (project, file), group in groups.items():
        cases, fails, skips = [], 0, 0
        for t in group:
            outcome = t.status or pw_outcome(t)
            name = " › ".join(p.strip() for p in t.title.split(">"))
            inner = ""
            if outcome == "skipped":
                skips += 1
                inner = "\n<skipped>\n</skipped>"
            elif outcome == "flaky" and include_retries:
                inner = f"\n<flakyFailure {_attrs(message='expect(locator).toBeVisible() failed', type='Error')}>\n</flakyFailure>"
            elif outcome == "unexpected":
                fails += 1
                inner = f"\n<failure {_attrs(message=f'{file}:{t.line}:5 {name}', type='FAILURE')}>\n</failure>"
            cases.append(f"<testcase {_attrs(name=name, classname=file, time='0.85')}>{inner}\n</testcase>")
        body.append(f"<testsuite {_attrs(name=file, timestamp=_iso(start), hostname=project, tests=len(group), failures=fails, skipped=skips, time='1.7', errors=0)}>")
        body += cases + ["</testsuite>"]
        totals["tests"] += len(group)
        totals["failures"] += fails
        totals["skipped"] += skips
    head = f"<testsuites {_attrs(id='', name='', tests=totals['tests'], failures=totals['failures'], skipped=totals['skipped'], errors=0, time='12.3')}>"
    return "\n".join([head, *body, "</testsuites>", ""])


# ---------------------------------------------------------------- a green set, and pytest fixtures

APP_URLS = ("http://127.0.0.1:3000/", "http://127.0.0.1:3000/app/orders")


def passing_set(start: datetime = T0) -> dict:
    """The reports of a green CI test job for the example app (what the sample evidence holds)."""
    vitest = vitest_json({
        "test/server.test.mjs": [("server > answers /healthz", "passed"), ("server > serves the release id", "passed"),
                                 ("server > refuses unknown routes", "passed"), ("server > streams large orders", "skipped")],
        "test/orders.test.mjs": [("orders > lists open orders", "passed"), ("orders > bulk actions", "todo")],
    }, start=start)
    pw = playwright_json([
        PwTest("e2e/home.spec.ts", "home > has the app title", line=4),
        PwTest("e2e/home.spec.ts", "home > shows the release", line=9),
        PwTest("e2e/orders.spec.ts", "orders > opens an order", line=5, results=("failed", "passed")),
        PwTest("e2e/orders.spec.ts", "orders > exports csv", line=12, results=("skipped",), expected="skipped"),
    ], start=start + timedelta(minutes=2))
    runs = [lhr(url, {"performance": p, "accessibility": 0.96, "best-practices": 1.0, "seo": 0.92},
                fetch_time=start + timedelta(minutes=5, seconds=20 * i + 7 * j), fcp=f, tti=f * 2)
            for j, url in enumerate(APP_URLS)
            for i, (p, f) in enumerate(((0.93, 1100.0), (0.91, 1250.0), (0.95, 1010.0)))]
    return {"vitest": vitest, "playwright": pw, "lighthouse": runs}


def write_passing(folder: Path, start: datetime = T0) -> list[Path]:
    """Write `passing_set` into `folder` as vitest.json, playwright.json and .lighthouseci/."""
    s = passing_set(start)
    return [write_json(folder / "vitest.json", s["vitest"]), write_json(folder / "playwright.json", s["playwright"]),
            write_lhci(folder / ".lighthouseci", s["lighthouse"], representative=(0, 3))]


@pytest.fixture
def evidence_now() -> datetime:
    """The clock the evidence tests pass in: an hour after the reports were made."""
    return T0 + timedelta(hours=1)


@pytest.fixture
def passing_evidence(tmp_path):
    """Factory: write a green evidence set under tmp_path/<name> and collect it for `sha`."""
    def make(sha: str, *, name: str = "evidence", start: datetime = T0, now: datetime | None = None):
        folder = tmp_path / name
        files = write_passing(folder, start)
        collect(sha, files, out=folder / "manifest.json", now=now or start + timedelta(minutes=10))
        return folder

    return make
