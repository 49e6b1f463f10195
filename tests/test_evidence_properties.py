"""Property tests: whatever bytes or JSON reach a parser, the answer is a report or an
EvidenceError (a DeployError), never another exception and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.config import GateSection, LighthouseThresholds
from deploy.errors import DeployError
from deploy.evidence import (EvidenceError, LighthouseReport, TestReport, detect, judge, parse_junit, parse_lhci,
                             parse_lhr, parse_playwright, parse_report, parse_vitest, render, verdict)

FIX = Path(__file__).parent / "fixtures" / "evidence"
SEEDS = {name: json.loads((FIX / name).read_bytes()) for name in (
    "vitest/passing.json", "vitest/load_error.json", "playwright/flaky.json", "playwright/did_not_run.json",
    "lighthouse/lhr_passing.json", "lighthouse/lhr_runtime_error.json")}
STRICT = GateSection(allow_flaky=False, max_failed=0,
                     lighthouse=LighthouseThresholds(performance=0.9, accessibility=0.9, seo=0.5))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=6),
    max_leaves=30,
)
# Keys and values the parsers look for, so generated objects reach past the first check.
known_keys = st.sampled_from([
    "testResults", "numTotalTests", "numFailedTests", "success", "startTime", "assertionResults", "status", "message",
    "name", "fullName", "suites", "specs", "tests", "results", "stats", "errors", "expectedStatus", "title", "file",
    "config", "version", "duration", "lighthouseVersion", "categories", "score", "requestedUrl", "finalUrl",
    "fetchTime", "runtimeError", "code", "audits", "numericValue", "endTime", "projectName"])
known_values = st.sampled_from(["passed", "failed", "skipped", "todo", "pending", "expected", "unexpected", "flaky",
                                "interrupted", "timedOut", "NO_ERROR", "2026-10-20T09:30:00Z", 0, 1, 0.5, -1, None,
                                [], {}, True, False, "x" * 3])
shaped = st.recursive(
    known_values,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(known_keys, children, max_size=8),
    max_leaves=40,
)

PARSERS = [parse_vitest, parse_playwright, parse_lhr, parse_junit, parse_report, detect]


def _judge_everything(result) -> None:
    if isinstance(result, (TestReport, LighthouseReport)):
        rows = judge(result, "f", STRICT)
        render(verdict(rows, STRICT, "a" * 40))


def _outcome(fn, *args):
    try:
        result = fn(*args)
    except EvidenceError as e:
        assert e.message.startswith(("x.json: ", "lhci"))
        return e
    _judge_everything(result)
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
def test_arbitrary_bytes_give_a_report_or_an_evidence_error(parser, data):
    _outcome(parser, data, "x.json")


@settings(max_examples=300, deadline=None)
@given(value=json_values | shaped)
@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
def test_arbitrary_json_gives_a_report_or_an_evidence_error(parser, value):
    _outcome(parser, json.dumps(value).encode(), "x.json")


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def mutated_reports(draw):
    """A real report with one node anywhere in it replaced by arbitrary JSON."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    doc = SEEDS[name]
    paths = list(_paths(doc))
    path = draw(st.sampled_from(paths))
    return _replace(doc, path, draw(json_values | shaped))


@settings(max_examples=600, deadline=None)
@given(doc=mutated_reports())
def test_real_reports_with_any_node_replaced_give_a_report_or_an_evidence_error(doc):
    _outcome(parse_report, json.dumps(doc).encode(), "x.json")


@settings(max_examples=200, deadline=None)
@given(files=st.dictionaries(st.sampled_from(["manifest.json", "lhr-1.json", "lhr-22.json", "assertion-results.json",
                                              "other.report.json"]),
                             st.binary(max_size=200) | (json_values | shaped).map(lambda v: json.dumps(v).encode()),
                             max_size=4))
def test_arbitrary_lighthouse_ci_folders_give_a_report_or_an_evidence_error(files):
    seed = json.dumps(SEEDS["lighthouse/lhr_passing.json"]).encode()
    files = {**files, **({"lhr-9.json": seed} if "lhr-1.json" not in files else {})}
    result = _outcome(parse_lhci, files, "lhci")
    assert isinstance(result, (LighthouseReport, DeployError))
