"""Vitest's JSON report (`vitest run --reporter=json --outputFile=...`): decoded JSON in, a TestReport out."""

from __future__ import annotations

import math

from deploy.evidence._common import (MAX_LISTED, EvidenceError, TestCounts, TestReport, _capped, _count,
                                     _first_line, _short, _time_ms)

# packages/vitest/src/node/reporters/json.ts: StatusMap turns a task's state (or its mode
# when it has no result) into a Jest-style status. "pending" comes from the states run,
# queued and only: a test that had not finished when the report was written; it did not
# run to an outcome, so it counts as a failure, not as a skip.
_VITEST_STATUS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "disabled": "skipped",
                  "todo": "todo", "pending": "pending"}


def parse(obj: dict, name: str) -> TestReport:
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


