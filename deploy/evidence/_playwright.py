"""Playwright's JSON report (`--reporter=json`): decoded JSON in, a TestReport out."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from deploy.evidence._common import (MAX_LISTED, EvidenceError, TestCounts, TestReport, _capped, _count,
                                     _first_line, _short, _time_iso)

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


def parse(obj: dict, name: str) -> TestReport:
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
    for err in top_errors:
        msg = err.get("message") if isinstance(err, dict) else err
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


