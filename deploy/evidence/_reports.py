"""Reading one piece of evidence: find its format from its content, then dispatch to that
format's parser through one table.

    _common       values (TestReport, LighthouseReport, ...), EvidenceError, JSON decoding, SHAPES
    _vitest       Vitest JSON                 _junit     JUnit XML (Vitest or Playwright)
    _playwright   Playwright JSON             _lhr       one Lighthouse result (LHR)
    _lhci         a Lighthouse CI folder (its lhr-*.json runs, manifest.json, assertion-results.json)

Content decides, never the file name: a folder is Lighthouse CI output, text starting with
`<` is JUnit XML, anything else is JSON whose shape (`_common.SHAPES`) names the tool.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from deploy.evidence import _junit, _lhci, _lhr, _playwright, _vitest
from deploy.evidence._common import (KINDS, SHAPES, EvidenceError, Kind, LighthousePage, LighthouseReport,
                                     LighthouseRun, Report, TestCounts, TestReport, _wrong_tool, decode_as,
                                     identify, load_json)
from deploy.evidence._lhci import representative_run

# format -> parser. JSON formats take the decoded value, JUnit the file's bytes (and the kind
# asked for, which names a JUnit file neither tool marked), Lighthouse CI the folder's files.
PARSERS: dict[str, Callable[..., Report]] = {
    "vitest-json": _vitest.parse,
    "playwright-json": _playwright.parse,
    "lighthouse-lhr": _lhr.parse,
    "junit": _junit.parse_junit,
    "lighthouse-ci": _lhci.parse_lhci,
}

_ANY = "a Vitest, Playwright or Lighthouse report"
_TITLES = {s.format: s.title for s in SHAPES}


def _sniff(content: bytes | Mapping[str, bytes], name: str) -> tuple[str, Any]:
    """(format, what its parser reads) of one report file or Lighthouse CI folder."""
    if isinstance(content, Mapping):
        return "lighthouse-ci", content
    if _junit.is_xml(content):
        return "junit", content
    obj = load_json(content, name)
    found = identify(obj)
    return (found[1] if found else "unknown"), obj


def detect(data: bytes | str, name: str) -> tuple[Kind, str]:
    """(kind, format) of one report file, decided by its content, not its name."""
    raw = data.encode() if isinstance(data, str) else data
    fmt, what = _sniff(raw, name)
    if fmt == "junit":
        return _junit.flavour(_junit.xml_root(raw, name), name, None), "junit"
    if fmt == "lighthouse-ci-manifest":
        raise EvidenceError(name, "this is a Lighthouse CI manifest.json, not a report on its own.",
                            "Collect the whole Lighthouse CI folder (e.g. .lighthouseci/) instead.")
    if fmt not in PARSERS:
        raise _wrong_tool(what, name, _ANY)
    return identify(what)  # type: ignore[return-value]


def parse_report(data: bytes | str | Mapping[str, bytes], name: str, kind: str | None = None) -> Report:
    """Parse one report file of any supported format (or a Lighthouse CI folder, given as
    {file name: bytes}); `kind`, if given, must match what it is."""
    raw = data.encode() if isinstance(data, str) else data
    fmt, what = _sniff(raw, name)
    if fmt == "lighthouse-ci":
        if kind and kind != "lighthouse":
            raise EvidenceError(name, f"expected {kind} evidence, but this is a folder (Lighthouse CI output).")
        return _lhci.parse_lhci(what, name)
    if fmt == "junit":
        return _junit.parse_junit(what, name, kind)
    if fmt not in PARSERS:
        wanted = next((s.title for s in SHAPES if s.kind == kind and s.format in PARSERS), _ANY)
        raise _wrong_tool(what, name, wanted)
    found_kind = identify(what)[0]  # type: ignore[index]
    if kind and found_kind != kind:
        raise EvidenceError(name, f"expected {kind} evidence, but this is {_TITLES[fmt]}.",
                            "The manifest or the command line names the wrong kind for this file.")
    return PARSERS[fmt](what, name)


def parse_vitest(data: bytes | str, name: str) -> TestReport:
    """A Vitest JSON report (`vitest run --reporter=json --outputFile=...`)."""
    return _vitest.parse(decode_as(data, name, "vitest-json"), name)


def parse_playwright(data: bytes | str, name: str) -> TestReport:
    """A Playwright JSON report (`--reporter=json`, PLAYWRIGHT_JSON_OUTPUT_NAME=...)."""
    return _playwright.parse(decode_as(data, name, "playwright-json"), name)


def parse_lhr(data: bytes | str, name: str) -> LighthouseRun:
    """One Lighthouse result JSON (`lighthouse --output=json`, or one lhr-*.json of Lighthouse CI)."""
    return _lhr.run(decode_as(data, name, "lighthouse-lhr"), name)


parse_junit = _junit.parse_junit
parse_lhci = _lhci.parse_lhci

__all__ = [
    "KINDS", "PARSERS", "EvidenceError", "Kind", "TestCounts", "TestReport", "LighthouseRun", "LighthousePage",
    "LighthouseReport", "Report", "identify", "detect", "load_json", "parse_report", "parse_vitest",
    "parse_playwright", "parse_junit", "parse_lhr", "parse_lhci", "representative_run",
]
