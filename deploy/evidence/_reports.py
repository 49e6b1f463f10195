"""Pure parsers for the report files the test tools write: bytes in, a frozen value out.

Every parser either returns a report or raises `EvidenceError` naming the file and what
is wrong with it; any other exception escaping from here is a bug (the hypothesis tests
in tests/test_evidence_properties.py feed them arbitrary JSON and bytes to prove it).

Counts come from the individual test and assertion results, never from the totals a
report carries about itself: totals differ between tool versions (Vitest up to 1.x
counted skips as passes) and a truncated or edited report can still carry green totals.
Where a report does carry totals, a disagreement with the counted results is an error.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, Mapping

from deploy.errors import GateClosed

Kind = Literal["vitest", "playwright", "lighthouse"]
KINDS: tuple[str, ...] = ("vitest", "playwright", "lighthouse")

# How many failing test names a report keeps for the gate's reasons; the counts stay exact.
MAX_LISTED = 10


class EvidenceError(GateClosed):
    """An evidence file is missing, unreadable, malformed or written by the wrong tool."""

    def __init__(self, file: str, problem: str, hint: str | None = None):
        super().__init__(
            f"{file}: {problem}",
            hint or "Re-run the test job for this commit and collect its reports again "
                    "(invoke evidence.collect --sha=<commit> --files=<report>, one --files per report).",
        )
        self.file = file
        self.problem = problem


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class TestCounts:
    """Test outcomes counted one by one. `failed` includes `did_not_run`."""

    __test__ = False         # not a pytest test class

    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    todo: int = 0
    flaky: int = 0
    did_not_run: int = 0
    errors: int = 0          # failures not attached to a test: a file that did not load, a web server that never started

    def describe(self) -> str:
        parts = [f"{self.passed} passed"]
        for name in ("failed", "flaky", "skipped", "todo"):
            n = getattr(self, name)
            if n:
                parts.append(f"{n} {name}")
        if self.did_not_run:
            parts.append(f"({self.did_not_run} did not run)")
        if self.errors:
            parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        return f"{self.total} tests: " + ", ".join(parts)


@dataclass(frozen=True)
class TestReport:
    """A Vitest or Playwright run, from its JSON or JUnit XML report."""

    __test__ = False

    kind: Kind
    format: str                      # vitest-json, vitest-junit, playwright-json, playwright-junit
    counts: TestCounts
    tool_version: str | None = None  # Vitest's JSON does not record its version
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failures: tuple[str, ...] = ()   # the first MAX_LISTED failed or never-run tests
    errors: tuple[str, ...] = ()     # run-level errors and inconsistencies; each closes the gate


@dataclass(frozen=True)
class LighthouseRun:
    """One Lighthouse result (LHR)."""

    file: str
    url: str                         # requestedUrl: Lighthouse CI groups runs by it (upload.js)
    final_url: str
    fetched_at: datetime | None
    version: str
    scores: dict[str, float | None]
    runtime_error: str | None = None
    fcp: float = 0.0                 # first-contentful-paint and interactive numericValue,
    tti: float = 0.0                 # the two metrics Lighthouse CI's median run is chosen by


@dataclass(frozen=True)
class LighthousePage:
    """All runs of one URL and the representative (median) run the gate judges."""

    url: str
    runs: tuple[LighthouseRun, ...]
    chosen: LighthouseRun
    chosen_by: Literal["single", "manifest", "median"] = "single"

    @property
    def errored(self) -> tuple[LighthouseRun, ...]:
        return tuple(r for r in self.runs if r.runtime_error)


@dataclass(frozen=True)
class LighthouseReport:
    kind: Literal["lighthouse"]
    format: str                      # lighthouse-lhr, lighthouse-ci
    pages: tuple[LighthousePage, ...]
    tool_version: str | None = None
    started_at: datetime | None = None
    errors: tuple[str, ...] = ()     # failed Lighthouse CI assertions (level "error")


Report = TestReport | LighthouseReport


# ---------------------------------------------------------------- helpers

def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(text: Any, limit: int = 160) -> str:
    s = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return s if len(s) <= limit else s[: limit - 3] + "..."


def load_json(data: bytes | str, name: str) -> Any:
    """Decode a report's JSON, saying whether it is empty, truncated or not JSON at all."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not data.strip():
        raise EvidenceError(name, "the file is empty.")
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise EvidenceError(name, "not a JSON report: the file is not UTF-8 text.") from None
    except json.JSONDecodeError as e:
        # An unterminated string has no closing quote anywhere after it: the file was cut off.
        if e.pos >= len(e.doc.rstrip()) or e.msg.startswith("Unterminated string"):
            raise EvidenceError(name, f"truncated JSON: the file ends before the report does "
                                      f"({e.msg}, line {e.lineno} column {e.colno}).") from None
        raise EvidenceError(name, f"not a JSON report: {e.msg} at line {e.lineno} column {e.colno}.") from None
    except RecursionError:
        raise EvidenceError(name, "not a report: the JSON is nested too deeply to be one.") from None
    except ValueError as e:   # e.g. numbers too long to convert
        raise EvidenceError(name, f"not a JSON report: {_first_line(e)}.") from None


def _time_ms(value: Any, name: str, key: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvidenceError(name, f"{key} is not a time in epoch milliseconds ({_short(value)}).")
    try:
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise EvidenceError(name, f"{key} is not a plausible time ({_short(value)}).") from None


def _time_iso(value: Any, name: str, key: str) -> datetime:
    if not isinstance(value, str):
        raise EvidenceError(name, f"{key} is not an ISO 8601 time ({_short(value)}).")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise EvidenceError(name, f"{key} is not an ISO 8601 time ({_short(value)}).") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _capped(items: list[str], total: int) -> tuple[str, ...]:
    if total > len(items):
        return (*items, f"... and {total - len(items)} more")
    return tuple(items)


# ---------------------------------------------------------------- detection

def identify(obj: Any) -> tuple[Kind, str] | None:
    """Which tool wrote this decoded JSON value, by its shape (None: none we read)."""
    if isinstance(obj, dict):
        if "testResults" in obj and "numTotalTests" in obj:
            return "vitest", "vitest-json"
        if "suites" in obj and "stats" in obj:
            return "playwright", "playwright-json"
        if "lighthouseVersion" in obj and "categories" in obj:
            return "lighthouse", "lighthouse-lhr"
    if isinstance(obj, list) and obj and all(isinstance(e, dict) and "isRepresentativeRun" in e for e in obj):
        return "lighthouse", "lighthouse-ci-manifest"
    return None


_TOOL_NAMES = {
    "vitest-json": "a Vitest JSON report",
    "playwright-json": "a Playwright JSON report",
    "lighthouse-lhr": "a Lighthouse result (LHR)",
    "lighthouse-ci-manifest": "a Lighthouse CI manifest.json (collect its whole folder instead)",
}


def _wrong_tool(obj: Any, name: str, wanted: str) -> EvidenceError:
    found = identify(obj)
    if found:
        return EvidenceError(name, f"this is {_TOOL_NAMES[found[1]]}, not {wanted}.",
                             "Check which file was passed for which kind of evidence.")
    if isinstance(obj, dict):
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        what = f"a JSON object with keys {keys}"
    else:
        what = f"a JSON {type(obj).__name__.replace('dict', 'object').replace('NoneType', 'null')}"
    return EvidenceError(name, f"not {wanted}: found {what}.",
                         "Pass the file the tool's JSON reporter wrote (e.g. --reporter=json --outputFile=...).")


def _is_xml(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def detect(data: bytes | str, name: str) -> tuple[Kind, str]:
    """(kind, format) of one report file, decided by its content, not its name."""
    raw = data.encode() if isinstance(data, str) else data
    if _is_xml(raw):
        return _junit_flavour(_xml_root(raw, name), name, None), "junit"
    obj = load_json(raw, name)
    found = identify(obj)
    if not found:
        raise _wrong_tool(obj, name, "a Vitest, Playwright or Lighthouse report")
    if found[1] == "lighthouse-ci-manifest":
        raise EvidenceError(name, "this is a Lighthouse CI manifest.json, not a report on its own.",
                            "Collect the whole Lighthouse CI folder (e.g. .lighthouseci/) instead.")
    return found


def parse_report(data: bytes | str, name: str, kind: str | None = None) -> TestReport | LighthouseReport:
    """Parse one report file of any supported format; `kind`, if given, must match what it is."""
    raw = data.encode() if isinstance(data, str) else data
    if _is_xml(raw):
        return parse_junit(raw, name, kind)
    obj = load_json(raw, name)
    found = identify(obj)
    if found is None or found[1] == "lighthouse-ci-manifest":
        wanted = {"vitest": "a Vitest JSON report", "playwright": "a Playwright JSON report",
                  "lighthouse": "a Lighthouse result (LHR)"}.get(kind or "", "a Vitest, Playwright or Lighthouse report")
        raise _wrong_tool(obj, name, wanted)
    if kind and found[0] != kind:
        raise EvidenceError(name, f"expected {kind} evidence, but this is {_TOOL_NAMES[found[1]]}.",
                            "The manifest or the command line names the wrong kind for this file.")
    return {"vitest-json": _vitest, "playwright-json": _playwright, "lighthouse-lhr": _lhr_report}[found[1]](obj, name)


# ---------------------------------------------------------------- Vitest JSON

# packages/vitest/src/node/reporters/json.ts: StatusMap turns a task's state (or its mode
# when it has no result) into a Jest-style status. "pending" comes from the states run,
# queued and only: a test that had not finished when the report was written; it did not
# run to an outcome, so it counts as a failure, not as a skip.
_VITEST_STATUS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "disabled": "skipped",
                  "todo": "todo", "pending": "pending"}


def parse_vitest(data: bytes | str, name: str) -> TestReport:
    """A Vitest JSON report (`vitest run --reporter=json --outputFile=...`)."""
    obj = load_json(data, name)
    if identify(obj) != ("vitest", "vitest-json"):
        raise _wrong_tool(obj, name, "a Vitest JSON report")
    return _vitest(obj, name)


def _vitest(obj: dict, name: str) -> TestReport:
    files = obj["testResults"]
    if not isinstance(files, list):
        raise EvidenceError(name, f"testResults is not a list ({_short(files)}).")
    passed = failed = skipped = todo = pending = 0
    failures: list[str] = []
    errors: list[str] = []
    load_errors = 0
    ended: float = 0.0
    i = j = -1
    try:
        for i, f in enumerate(files):
            fstatus = f["status"]
            if fstatus not in ("passed", "failed"):
                raise EvidenceError(name, f"testResults[{i}] has an unknown status {_short(fstatus)} "
                                          "(Vitest writes passed or failed).")
            failed_before = failed + pending
            for j, a in enumerate(f["assertionResults"]):
                s = a["status"]
                if s == "passed":
                    passed += 1
                    continue
                mapped = _VITEST_STATUS.get(s) if isinstance(s, str) else None
                if mapped is None:
                    raise EvidenceError(name, f"testResults[{i}].assertionResults[{j}] has an unknown status "
                                              f"{_short(s)} (known: {', '.join(_VITEST_STATUS)}).")
                if mapped == "failed" or mapped == "pending":
                    if mapped == "failed":
                        failed += 1
                    else:
                        pending += 1
                    if len(failures) < MAX_LISTED:
                        label = " (did not finish)" if mapped == "pending" else ""
                        failures.append(f"{_first_line(a.get('fullName') or a.get('title') or '?')}{label}")
                elif mapped == "skipped":
                    skipped += 1
                else:
                    todo += 1
            j = -1
            message = f.get("message") or ""
            if fstatus == "failed" and (message or failed + pending == failed_before):
                load_errors += 1
                if len(errors) < MAX_LISTED:
                    why = _first_line(message) or "the file failed without a failing test"
                    errors.append(f"{_first_line(f.get('name') or '?')}: {why}")
            end = f.get("endTime")
            if isinstance(end, (int, float)) and not isinstance(end, bool) and math.isfinite(end):
                ended = max(ended, float(end))
    except EvidenceError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        where = f"testResults[{i}]" + (f".assertionResults[{j}]" if j >= 0 else "")
        raise EvidenceError(name, f"not a Vitest JSON report: unexpected structure at {where} "
                                  f"({type(e).__name__}: {_first_line(e, 80)}).") from None
    total = passed + failed + skipped + todo + pending
    stated_total = _count(obj.get("numTotalTests"))
    if stated_total is None:
        raise EvidenceError(name, f"numTotalTests is not a number ({_short(obj.get('numTotalTests'))}).")
    if stated_total != total:
        errors.append(f"numTotalTests says {stated_total} but the report holds {total} test results "
                      "(truncated or edited report)")
    stated_failed = _count(obj.get("numFailedTests"))
    if stated_failed is not None and stated_failed != failed:
        errors.append(f"numFailedTests says {stated_failed} but {failed} test results failed (edited report)")
    if obj.get("success") is False and not (failed or pending or load_errors):
        errors.append("the report says success: false (e.g. no test files ran, or an unhandled error)")
    started = _time_ms(obj["startTime"], name, "startTime") if "startTime" in obj else None
    finished = _time_ms(ended, name, "endTime") if ended else None
    counts = TestCounts(total=total, passed=passed, failed=failed + pending, skipped=skipped, todo=todo,
                        did_not_run=pending, errors=load_errors + len(errors) - min(load_errors, MAX_LISTED))
    return TestReport(kind="vitest", format="vitest-json", counts=counts, tool_version=None,
                      started_at=started, finished_at=finished,
                      failures=_capped(failures, failed + pending), errors=tuple(errors))


# ---------------------------------------------------------------- Playwright JSON

# packages/playwright/types/test.d.ts (TestStatus) and types/testReporter.d.ts (JSONReportTest.status)
_PW_RESULT = frozenset({"passed", "failed", "timedOut", "skipped", "interrupted"})
_PW_OUTCOME = frozenset({"expected", "unexpected", "flaky", "skipped"})


def _pw_outcome(expected_status: str, results: list) -> tuple[str, bool]:
    """(outcome, never_ran) the way computeTestCaseOutcome (src/isomorphic/teleReceiver.ts) decides it."""
    skipped = expected = unexpected = did_not_run = 0
    for r in results:
        st = r.get("status")
        if st == "interrupted":
            continue
        if st == "skipped":
            if expected_status == "skipped":
                skipped += 1
            else:
                did_not_run += 1      # expected to run but skipped: the run stopped early or a serial suite failed
            continue
        if st is not None and st not in _PW_RESULT:
            raise ValueError(f"unknown result status {_short(st)}")
        if st == expected_status:
            expected += 1
        else:
            unexpected += 1
    if expected == 0 and unexpected == 0:
        return "skipped", expected_status != "skipped"
    if unexpected == 0:
        return "expected", False
    if expected == 0 and skipped == 0:
        return "unexpected", False
    return "flaky", False


def parse_playwright(data: bytes | str, name: str) -> TestReport:
    """A Playwright JSON report (`--reporter=json`, PLAYWRIGHT_JSON_OUTPUT_NAME=...)."""
    obj = load_json(data, name)
    if identify(obj) != ("playwright", "playwright-json"):
        raise _wrong_tool(obj, name, "a Playwright JSON report")
    return _playwright(obj, name)


def _playwright(obj: dict, name: str) -> TestReport:
    suites, stats = obj["suites"], obj["stats"]
    if not isinstance(suites, list) or not isinstance(stats, dict):
        raise EvidenceError(name, "not a Playwright JSON report: suites must be a list and stats an object.")
    passed = failed = skipped = flaky = never_ran = 0
    failures: list[str] = []
    errors: list[str] = []
    spec_title = "?"
    # (suite, describe titles above it); an explicit stack, so deep nesting cannot overflow
    stack: list[tuple[Any, str]] = [(s, "") for s in reversed(suites)]   # file suites: no describe prefix
    try:
        while stack:
            suite, prefix = stack.pop()
            for spec in suite["specs"]:
                spec_title = f"{spec.get('file', '?')} > {prefix}{spec['title']}"
                for t in spec["tests"]:
                    exp = t["expectedStatus"]
                    if exp not in _PW_RESULT:
                        raise ValueError(f"unknown expectedStatus {_short(exp)}")
                    outcome, not_run = _pw_outcome(exp, t["results"])
                    reported = t["status"]
                    if reported not in _PW_OUTCOME:
                        raise ValueError(f"unknown test status {_short(reported)}")
                    if reported != outcome and len(errors) < MAX_LISTED:
                        errors.append(f"{_first_line(spec_title)}: reported {reported!r} but its results say "
                                      f"{outcome!r} (edited report)")
                    if outcome == "expected":
                        passed += 1
                    elif outcome == "flaky":
                        flaky += 1
                    elif outcome == "skipped" and not not_run:
                        skipped += 1
                    else:
                        failed += 1
                        never_ran += not_run
                        if len(failures) < MAX_LISTED:
                            project = t.get("projectName") or ""
                            label = " (did not run)" if not_run else ""
                            failures.append(f"{_first_line(spec_title)}{f' [{project}]' if project else ''}{label}")
            children = suite.get("suites")
            if children:
                stack.extend((c, f"{prefix}{c['title']} > ") for c in reversed(children))   # describe blocks
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise EvidenceError(name, f"not a valid Playwright JSON report near spec {_short(spec_title, 80)}: "
                                  f"{type(e).__name__}: {_first_line(e, 80)}.") from None
    total = passed + failed + skipped + flaky
    top_errors = obj.get("errors") or []
    if not isinstance(top_errors, list):
        raise EvidenceError(name, f"errors is not a list ({_short(top_errors)}).")
    for e in top_errors:
        msg = e.get("message") if isinstance(e, dict) else e
        errors.append(f"run error: {_first_line(msg or '?')}")
    claimed = {k: _count(stats.get(k)) for k in ("expected", "unexpected", "flaky", "skipped")}
    counted = {"expected": passed, "unexpected": failed - never_ran, "flaky": flaky, "skipped": skipped + never_ran}
    if all(v is not None for v in claimed.values()) and claimed != counted:
        errors.append("stats (" + ", ".join(f"{k} {v}" for k, v in claimed.items()) + ") disagree with the "
                      "tests in the report (" + ", ".join(f"{k} {v}" for k, v in counted.items()) + "): truncated or edited report")
    started = _time_iso(stats["startTime"], name, "stats.startTime") if "startTime" in stats else None
    finished = None
    duration = stats.get("duration")
    if started and isinstance(duration, (int, float)) and not isinstance(duration, bool) and math.isfinite(duration):
        try:
            finished = datetime.fromtimestamp(started.timestamp() + duration / 1000, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            finished = None
    config = obj.get("config")
    version = config.get("version") if isinstance(config, dict) else None
    counts = TestCounts(total=total, passed=passed, failed=failed, skipped=skipped, flaky=flaky,
                        did_not_run=never_ran, errors=len(errors))
    return TestReport(kind="playwright", format="playwright-json", counts=counts,
                      tool_version=version if isinstance(version, str) else None,
                      started_at=started, finished_at=finished,
                      failures=_capped(failures, failed), errors=tuple(errors))


# ---------------------------------------------------------------- JUnit XML

def _xml_root(data: bytes, name: str) -> ET.Element:
    head = data[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        # Neither Vitest nor Playwright writes a DTD; refusing one keeps entity expansion out.
        raise EvidenceError(name, "JUnit XML with a DOCTYPE/ENTITY declaration is not accepted.")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise EvidenceError(name, f"not well-formed XML ({e}).") from None
    except (ValueError, LookupError, RecursionError) as e:
        raise EvidenceError(name, f"not readable XML ({_first_line(e, 80)}).") from None


def _junit_flavour(root: ET.Element, name: str, kind: str | None) -> Kind:
    if root.tag not in ("testsuites", "testsuite"):
        raise EvidenceError(name, f"not a JUnit report: the root element is <{_first_line(root.tag, 40)}>.")
    # Playwright's reporters/junit.ts always writes an `id` attribute on <testsuites>
    # (PLAYWRIGHT_JUNIT_SUITE_ID or ""); Vitest's reporters/junit.ts names it "vitest tests"
    # and puts unhandled errors in a suite called "vitest unhandled errors".
    if root.tag == "testsuites" and "id" in root.attrib:
        found: Kind | None = "playwright"
    elif "vitest" in root.get("name", "").lower() or any(
            s.get("name") == "vitest unhandled errors" for s in root.iter("testsuite")):
        found = "vitest"
    else:
        found = None
    if found and kind and found != kind:
        raise EvidenceError(name, f"expected {kind} evidence, but this JUnit file was written by {found}.")
    if not found:
        if kind in ("vitest", "playwright"):
            return kind  # type: ignore[return-value]
        raise EvidenceError(name, "a JUnit file that neither Vitest nor Playwright wrote "
                                  f"(root <{root.tag} name={root.get('name', '')!r}>).",
                            "Use the tools' JSON reporters, or name the kind when collecting.")
    return found


def parse_junit(data: bytes | str, name: str, kind: str | None = None) -> TestReport:
    """JUnit XML from Vitest (`--reporter=junit`) or Playwright (`--reporter=junit`), the fallback input."""
    raw = data.encode() if isinstance(data, str) else data
    if not raw.strip():
        raise EvidenceError(name, "the file is empty.")
    if kind == "lighthouse":
        raise EvidenceError(name, "expected lighthouse evidence, but this is a JUnit XML file.")
    root = _xml_root(raw, name)
    flavour = _junit_flavour(root, name, kind)
    passed = failed = skipped = flaky = 0
    failures: list[str] = []
    errors: list[str] = []
    started: datetime | None = None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        stamp = suite.get("timestamp")
        if stamp:
            try:
                t = _time_iso(stamp, name, "testsuite timestamp")
                started = t if started is None or t < started else started
            except EvidenceError:
                pass
        unhandled = flavour == "vitest" and suite.get("name") == "vitest unhandled errors"
        for case in suite.findall("testcase"):
            tags = {child.tag for child in case}
            title = f"{case.get('classname', '')} > {case.get('name', '?')}"
            if unhandled:
                errors.append(f"unhandled error: {_first_line(case.get('name', '?'))}")
            elif "failure" in tags or "error" in tags:
                failed += 1
                if len(failures) < MAX_LISTED:
                    failures.append(_first_line(title))
            elif "skipped" in tags:
                skipped += 1
            elif "flakyFailure" in tags:
                flaky += 1   # Playwright with includeRetries: failed, then passed on a retry
            else:
                passed += 1
    counts = TestCounts(total=passed + failed + skipped + flaky, passed=passed, failed=failed,
                        skipped=skipped, flaky=flaky, errors=len(errors))
    return TestReport(kind=flavour, format=f"{flavour}-junit", counts=counts, started_at=started,
                      failures=_capped(failures, failed), errors=tuple(errors))


# ---------------------------------------------------------------- Lighthouse

def _numeric(audits: Any, audit_id: str) -> float:
    # Lighthouse CI's getAuditValue: `(lhr.audits[id] && lhr.audits[id].numericValue) || 0`
    a = audits.get(audit_id) if isinstance(audits, dict) else None
    v = a.get("numericValue") if isinstance(a, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return 0.0
    return float(v)


def parse_lhr(data: bytes | str, name: str) -> LighthouseRun:
    """One Lighthouse result JSON (`lighthouse --output=json`, or one lhr-*.json of Lighthouse CI)."""
    obj = load_json(data, name)
    if identify(obj) != ("lighthouse", "lighthouse-lhr"):
        raise _wrong_tool(obj, name, "a Lighthouse result (LHR)")
    return _lhr(obj, name)


def _lhr(obj: dict, name: str) -> LighthouseRun:
    version = obj["lighthouseVersion"]
    if not isinstance(version, str):
        raise EvidenceError(name, f"lighthouseVersion is not a string ({_short(version)}).")
    cats = obj["categories"]
    if not isinstance(cats, dict):
        raise EvidenceError(name, f"categories is not an object ({_short(cats)}).")
    scores: dict[str, float | None] = {}
    for cid, cat in cats.items():
        if not isinstance(cat, dict) or "score" not in cat:
            raise EvidenceError(name, f"category {cid!r} has no score.")
        s = cat["score"]
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))
                              or not math.isfinite(s) or not 0 <= s <= 1):
            raise EvidenceError(name, f"category {cid!r} has a score outside 0..1 ({_short(s)}).")
        scores[cid] = None if s is None else float(s)
    # LH 10+ may omit requestedUrl (non-navigation modes); before LH 9 there was no finalDisplayedUrl.
    url = next((obj[k] for k in ("requestedUrl", "finalDisplayedUrl", "finalUrl", "mainDocumentUrl")
                if isinstance(obj.get(k), str) and obj[k]), None)
    if url is None:
        raise EvidenceError(name, "the Lighthouse result names no URL (requestedUrl, finalDisplayedUrl or finalUrl).")
    final = next((obj[k] for k in ("finalDisplayedUrl", "finalUrl", "mainDocumentUrl")
                  if isinstance(obj.get(k), str) and obj[k]), url)
    fetched = _time_iso(obj["fetchTime"], name, "fetchTime") if "fetchTime" in obj else None
    runtime_error = None
    rte = obj.get("runtimeError")
    if rte is not None:
        if not isinstance(rte, dict):
            raise EvidenceError(name, f"runtimeError is not an object ({_short(rte)}).")
        code = rte.get("code")
        # LH 3.x-4.x wrote runtimeError {code: "NO_ERROR"} on every run (removed in #7358).
        if code != "NO_ERROR":
            runtime_error = f"{_first_line(code or 'UNKNOWN')}: {_first_line(rte.get('message') or '')}".rstrip(": ")
    audits = obj.get("audits")
    return LighthouseRun(file=name, url=url, final_url=final, fetched_at=fetched, version=version,
                         scores=scores, runtime_error=runtime_error,
                         fcp=_numeric(audits, "first-contentful-paint"), tti=_numeric(audits, "interactive"))


def _lhr_report(obj: dict, name: str) -> LighthouseReport:
    run = _lhr(obj, name)
    page = LighthousePage(url=run.url, runs=(run,), chosen=run, chosen_by="single")
    return LighthouseReport(kind="lighthouse", format="lighthouse-lhr", pages=(page,),
                            tool_version=run.version, started_at=run.fetched_at)


def representative_run(runs: list[LighthouseRun] | tuple[LighthouseRun, ...]) -> LighthouseRun:
    """The run Lighthouse CI calls representative ("median-run").

    Follows computeRepresentativeRuns in lighthouse-ci packages/utils/src/representative-runs.js:
    take the median first-contentful-paint and the median interactive (element
    floor(n/2) of each sorted list), then the run with the smallest squared distance
    to that pair; ties go to the earlier run, as its stable sort does.
    """
    mid = len(runs) // 2
    med_fcp = sorted(r.fcp for r in runs)[mid]
    med_tti = sorted(r.tti for r in runs)[mid]
    return min(runs, key=lambda r: (med_fcp - r.fcp) ** 2 + (med_tti - r.tti) ** 2)


_LHR_FILE = re.compile(r"^lhr-\d+\.json$")     # saved-reports.js LHR_REGEX


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path)[-1]


def parse_lhci(files: Mapping[str, bytes], name: str) -> LighthouseReport:
    """A Lighthouse CI output folder, given as {file name: content} of its top-level files.

    With a `manifest.json` (the filesystem upload target, upload.js runFilesystemTarget)
    the runs are the files it lists, found by base name (its paths are absolute paths of
    the CI runner) and its `isRepresentativeRun` marks the median run. Without one the
    runs are the `lhr-<epoch ms>.json` files `lhci collect` saves, in name order, and
    the median run is computed the same way Lighthouse CI computes it.
    """
    runs: list[LighthouseRun] = []
    flagged: set[str] = set()
    if "manifest.json" in files:
        where = f"{name}/manifest.json"
        manifest = load_json(files["manifest.json"], where)
        if not isinstance(manifest, list):
            raise _wrong_tool(manifest, where, "a Lighthouse CI manifest (a list of runs)")
        if not manifest:
            raise EvidenceError(where, "the manifest lists no Lighthouse runs.")
        for k, entry in enumerate(manifest):
            if not isinstance(entry, dict) or not isinstance(entry.get("jsonPath"), str):
                raise EvidenceError(where, f"entry {k} has no jsonPath.")
            base = _basename(entry["jsonPath"])
            if base not in files:
                raise EvidenceError(where, f"entry {k} names {base}, which is not in the folder.")
            runs.append(parse_lhr(files[base], f"{name}/{base}"))
            if entry.get("isRepresentativeRun") is True:
                flagged.add(base)
    else:
        names = sorted((n for n in files if _LHR_FILE.match(n)), key=lambda n: (len(n), n))
        if not names:
            raise EvidenceError(name, "no Lighthouse runs: neither manifest.json nor lhr-*.json files.",
                                "Point at the folder `lhci collect` wrote (.lighthouseci/) or its filesystem upload target.")
        runs = [parse_lhr(files[n], f"{name}/{n}") for n in names]
    by_url: dict[str, list[LighthouseRun]] = {}
    for r in runs:
        by_url.setdefault(r.url, []).append(r)      # upload.js groups by requestedUrl, first seen first
    pages = []
    for url, group in by_url.items():
        marked = [r for r in group if _basename(r.file) in flagged]
        if len(group) == 1:
            chosen, how = group[0], "single"
        elif len(marked) == 1:
            chosen, how = marked[0], "manifest"
        else:
            chosen, how = representative_run(group), "median"
        pages.append(LighthousePage(url=url, runs=tuple(group), chosen=chosen, chosen_by=how))
    errors: list[str] = []
    if "assertion-results.json" in files:
        where = f"{name}/assertion-results.json"
        results = load_json(files["assertion-results.json"], where)
        if not isinstance(results, list):
            raise EvidenceError(where, "not a Lighthouse CI assertion-results.json (a list of results).")
        for res in results:
            # docs/assertions.md: only level "error" fails `lhci assert`; "warn" is advice.
            if isinstance(res, dict) and res.get("passed") is False and res.get("level") == "error":
                errors.append(f"lhci assertion {_first_line(res.get('name') or res.get('auditId') or '?', 60)} "
                              f"failed on {_first_line(res.get('url') or '?', 80)} "
                              f"(expected {_short(res.get('expected'), 20)}, actual {_short(res.get('actual'), 20)})")
    versions = sorted({r.version for r in runs})
    times = [r.fetched_at for r in runs if r.fetched_at]
    return LighthouseReport(kind="lighthouse", format="lighthouse-ci", pages=tuple(pages),
                            tool_version=", ".join(versions) or None,
                            started_at=min(times) if times else None, errors=tuple(errors))
