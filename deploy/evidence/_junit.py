"""JUnit XML from Vitest or Playwright (`--reporter=junit`), the fallback input: bytes in, a TestReport out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

from deploy.evidence._common import (MAX_LISTED, EvidenceError, Kind, TestCounts, TestReport, _capped,
                                     _first_line, _time_iso)


def is_xml(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def xml_root(data: bytes, name: str) -> ET.Element:
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


def flavour(root: ET.Element, name: str, kind: str | None) -> Kind:
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
    root = xml_root(raw, name)
    tool = flavour(root, name, kind)
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
        unhandled = tool == "vitest" and suite.get("name") == "vitest unhandled errors"
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
    return TestReport(kind=tool, format=f"{tool}-junit", counts=counts, started_at=started,
                      failures=_capped(failures, failed), errors=tuple(errors))


