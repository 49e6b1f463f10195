"""What every report parser shares: the values they return, `EvidenceError`, JSON decoding,
and which tool wrote a decoded JSON value (by its shape).

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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

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



# ---------------------------------------------------------------- which tool wrote it

@dataclass(frozen=True)
class Shape:
    """A JSON report format recognised by its top-level shape."""

    format: str                      # vitest-json, playwright-json, lighthouse-lhr, lighthouse-ci-manifest
    kind: Kind
    title: str                       # for messages: "this is <title>, not ..."
    matches: Callable[[Any], bool]


def _has(*keys: str) -> Callable[[Any], bool]:
    return lambda obj: isinstance(obj, dict) and all(k in obj for k in keys)


# Checked in order; the first match names the tool.
SHAPES: tuple[Shape, ...] = (
    Shape("vitest-json", "vitest", "a Vitest JSON report", _has("testResults", "numTotalTests")),
    Shape("playwright-json", "playwright", "a Playwright JSON report", _has("suites", "stats")),
    Shape("lighthouse-lhr", "lighthouse", "a Lighthouse result (LHR)", _has("lighthouseVersion", "categories")),
    Shape("lighthouse-ci-manifest", "lighthouse", "a Lighthouse CI manifest.json (collect its whole folder instead)",
          lambda obj: isinstance(obj, list) and bool(obj)
          and all(isinstance(e, dict) and "isRepresentativeRun" in e for e in obj)),
)
_BY_FORMAT = {s.format: s for s in SHAPES}


def identify(obj: Any) -> tuple[Kind, str] | None:
    """Which tool wrote this decoded JSON value, by its shape (None: none we read)."""
    found = next((s for s in SHAPES if s.matches(obj)), None)
    return (found.kind, found.format) if found else None


def _wrong_tool(obj: Any, name: str, wanted: str) -> EvidenceError:
    found = identify(obj)
    if found:
        return EvidenceError(name, f"this is {_BY_FORMAT[found[1]].title}, not {wanted}.",
                             "Check which file was passed for which kind of evidence.")
    if isinstance(obj, dict):
        keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
        what = f"a JSON object with keys {keys}"
    else:
        what = f"a JSON {type(obj).__name__.replace('dict', 'object').replace('NoneType', 'null')}"
    return EvidenceError(name, f"not {wanted}: found {what}.",
                         "Pass the file the tool's JSON reporter wrote (e.g. --reporter=json --outputFile=...).")


def decode_as(data: bytes | str, name: str, format: str) -> Any:
    """Decode a JSON report and check that it is `format` (a `SHAPES` entry), else say what it is."""
    obj = load_json(data, name)
    if identify(obj) == (_BY_FORMAT[format].kind, format):
        return obj
    raise _wrong_tool(obj, name, _BY_FORMAT[format].title)
