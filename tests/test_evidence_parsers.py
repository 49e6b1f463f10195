"""The evidence parsers on report files in the real tools' formats, and on broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.config import GateSection, LighthouseThresholds
from deploy.errors import DeployError, GateClosed
from deploy.evidence import (EvidenceError, TestCounts, detect, judge, parse_junit, parse_lhci, parse_lhr,
                             parse_playwright, parse_report, parse_vitest, representative_run)
from deploy.evidence._manifest import _read_folder

FIX = Path(__file__).parent / "fixtures" / "evidence"


def read(rel: str) -> bytes:
    return (FIX / rel).read_bytes()


def folder(rel: str) -> dict[str, bytes]:
    return _read_folder(FIX / rel)


# ---------------------------------------------------------------- counts from the real formats

@pytest.mark.parametrize("rel, counts, n_errors", [
    ("vitest/passing.json", TestCounts(total=5, passed=3, skipped=1, todo=1), 0),
    ("vitest/failing.json", TestCounts(total=2, passed=1, failed=1), 0),
    ("vitest/load_error.json", TestCounts(total=1, passed=1, errors=1), 1),
    ("vitest/v1_skips_counted_as_passed.json", TestCounts(total=3, passed=1, skipped=1, todo=1), 0),
    ("vitest/no_test_files_v3.json", TestCounts(total=0, errors=1), 1),
    ("vitest/pending.json", TestCounts(total=2, passed=1, failed=1, did_not_run=1), 0),
    ("playwright/passing.json", TestCounts(total=4, passed=3, skipped=1), 0),
    ("playwright/flaky.json", TestCounts(total=3, passed=1, flaky=2), 0),
    ("playwright/failing.json", TestCounts(total=2, passed=1, failed=1), 0),
    ("playwright/did_not_run.json", TestCounts(total=4, failed=4, did_not_run=3), 0),
    ("playwright/webserver_error.json", TestCounts(total=0, errors=1), 1),
    ("junit/vitest.xml", TestCounts(total=4, passed=1, failed=1, skipped=2), 0),
    ("junit/vitest_unhandled.xml", TestCounts(total=1, passed=1, errors=1), 1),
    ("junit/playwright.xml", TestCounts(total=4, passed=2, flaky=1, skipped=1), 0),
], ids=lambda v: v if isinstance(v, str) else "")
def test_reports_are_counted_test_by_test(rel, counts, n_errors):
    report = parse_report(read(rel), rel)
    assert report.counts == counts
    assert len(report.errors) == n_errors


def test_vitest_1x_totals_count_skips_as_passes_but_the_parser_counts_them_as_skips():
    raw = json.loads(read("vitest/v1_skips_counted_as_passed.json"))
    assert raw["numPassedTests"] == 3                  # what Vitest 1.x wrote
    assert parse_vitest(read("vitest/v1_skips_counted_as_passed.json"), "v1").counts.passed == 1


def test_vitest_file_that_failed_to_load_names_the_file_and_its_error():
    report = parse_vitest(read("vitest/load_error.json"), "load_error.json")
    assert "orders.test.mjs: Failed to load url ./orders.mjs" in report.errors[0]


def test_vitest_v3_run_without_test_files_is_an_error_not_a_pass():
    report = parse_vitest(read("vitest/no_test_files_v3.json"), "x")
    assert "success: false" in report.errors[0]


def test_playwright_tests_that_never_ran_are_failures_with_their_names():
    report = parse_playwright(read("playwright/did_not_run.json"), "pw")
    assert [f.endswith("(did not run)") for f in report.failures] == [False, True, True, True]
    assert "serial > step two" in report.failures[1]


def test_playwright_web_server_error_with_zero_suites_carries_the_error():
    report = parse_playwright(read("playwright/webserver_error.json"), "pw")
    assert report.errors == ("run error: Error: Timed out waiting 60000ms from config.webServer.",)


def test_playwright_version_and_times_come_from_config_and_stats():
    report = parse_playwright(read("playwright/passing.json"), "pw")
    assert report.tool_version == "1.48.2"
    assert report.started_at.isoformat() == "2026-10-20T09:30:00+00:00"
    assert report.finished_at > report.started_at


def test_playwright_status_contradicting_its_results_is_an_error():
    doc = json.loads(read("playwright/failing.json"))
    spec = doc["suites"][1]["specs"][0]
    spec["tests"][0]["status"] = "expected"         # green label, red results
    report = parse_playwright(json.dumps(doc), "pw")
    assert any("reported 'expected' but its results say 'unexpected'" in e for e in report.errors)


def test_playwright_stats_that_disagree_with_the_tests_are_an_error():
    doc = json.loads(read("playwright/failing.json"))
    doc["suites"].pop()                              # a failing file cut out, stats left as they were
    report = parse_playwright(json.dumps(doc), "pw")
    assert any("disagree" in e for e in report.errors)


def test_vitest_totals_that_disagree_with_the_assertions_are_an_error():
    doc = json.loads(read("vitest/failing.json"))
    doc["testResults"][0]["assertionResults"].pop()  # the failing assertion removed by hand
    report = parse_vitest(json.dumps(doc), "v")
    assert any("numTotalTests says 2 but the report holds 1" in e for e in report.errors)


# ---------------------------------------------------------------- Lighthouse

def test_lhr_scores_version_and_url():
    run = parse_lhr(read("lighthouse/lhr_passing.json"), "lhr")
    assert run.scores == {"performance": 0.92, "accessibility": 0.97, "best-practices": 1.0, "seo": 0.9}
    assert (run.version, run.url, run.runtime_error) == ("12.2.1", "http://127.0.0.1:3000/", None)


def test_lhr_null_score_is_kept_as_null():
    assert parse_lhr(read("lighthouse/lhr_null_score.json"), "lhr").scores["performance"] is None


def test_lhr_runtime_error_is_recorded_with_its_code():
    run = parse_lhr(read("lighthouse/lhr_runtime_error.json"), "lhr")
    assert run.runtime_error.startswith("ERRORED_DOCUMENT_REQUEST: Lighthouse was unable")


def test_lighthouse_4_no_error_runtime_error_and_final_url_are_understood():
    run = parse_lhr(read("lighthouse/lhr_v4_no_error.json"), "lhr")
    assert run.runtime_error is None and run.final_url == "http://127.0.0.1:3000/" and run.scores["pwa"] == 0.5


@pytest.mark.parametrize("rel, how", [("lighthouse/lhci_manifest", "manifest"), ("lighthouse/lhci_plain", "median")])
def test_lhci_folder_judges_the_median_run_of_each_url(rel, how):
    report = parse_lhci(folder(rel), rel)
    assert [p.url for p in report.pages] == ["http://127.0.0.1:3000/", "http://127.0.0.1:3000/app/orders"]
    first = report.pages[0]
    assert len(first.runs) == 3 and first.chosen_by == how
    assert first.chosen.scores["performance"] == 0.88       # fcp 1400 / interactive 3000 is the median run
    assert report.pages[1].chosen.fcp == 1001.0             # of two runs, floor(2/2) takes the second as median


def test_representative_run_follows_lighthouse_ci_on_ties_and_spread():
    runs = parse_lhci(folder("lighthouse/lhci_plain"), "x").pages[0].runs
    assert representative_run(runs).fcp == 1400.0
    assert representative_run(runs[:1]) is runs[0]
    twins = (runs[1], runs[1])
    assert representative_run(twins) is twins[0]


def test_lhci_failed_error_assertions_close_the_gate_but_warnings_do_not():
    report = parse_lhci(folder("lighthouse/lhci_assert_failed"), "lhci")
    assert len(report.errors) == 1 and "minScore" in report.errors[0] and "0.6" in report.errors[0]


def test_lhci_run_with_runtime_error_fails_even_when_not_the_median():
    report = parse_lhci(folder("lighthouse/lhci_one_run_errored"), "lhci")
    assert report.pages[0].chosen.runtime_error is None
    rows = judge(report, "lhci", GateSection())
    assert not rows[0].ok and "NO_FCP" in rows[0].reasons[0]


@pytest.mark.parametrize("gate, expected", [
    (GateSection(lighthouse=LighthouseThresholds(performance=0.8)), ()),
    (GateSection(lighthouse=LighthouseThresholds(performance=0.9)), ("performance 0.88 is below 0.90",)),
    (GateSection(lighthouse=LighthouseThresholds(pwa=0.5)),
     ("category pwa is missing from the report (it has performance, accessibility, best-practices, seo)",)),
], ids=["above", "below", "missing-category"])
def test_lighthouse_minimums_apply_to_the_median_run(gate, expected):
    rows = judge(parse_lhci(folder("lighthouse/lhci_manifest"), "lhci"), "lhci", gate)
    assert rows[0].reasons == expected


def test_null_score_fails_a_configured_minimum_with_its_reason():
    rows = judge(parse_report(read("lighthouse/lhr_null_score.json"), "lhr"), "lhr",
                 GateSection(lighthouse=LighthouseThresholds(performance=0.5)))
    assert rows[0].reasons == ("performance score is null: Lighthouse could not compute it",)


# ---------------------------------------------------------------- detection by content

@pytest.mark.parametrize("rel, kind", [
    ("vitest/passing.json", ("vitest", "vitest-json")),
    ("playwright/passing.json", ("playwright", "playwright-json")),
    ("lighthouse/lhr_passing.json", ("lighthouse", "lighthouse-lhr")),
    ("junit/vitest.xml", ("vitest", "junit")),
    ("junit/playwright.xml", ("playwright", "junit")),
])
def test_kind_is_detected_from_content(rel, kind, tmp_path):
    renamed = tmp_path / "report.json"                     # the name says nothing
    renamed.write_bytes(read(rel))
    assert detect(renamed.read_bytes(), "report.json") == kind



# One table dispatches every format: what the content is decides the parser, and the
# report says which parser read it.
@pytest.mark.parametrize("rel, fmt", [
    ("vitest/passing.json", "vitest-json"),
    ("playwright/passing.json", "playwright-json"),
    ("lighthouse/lhr_passing.json", "lighthouse-lhr"),
    ("junit/vitest.xml", "vitest-junit"),
    ("junit/playwright.xml", "playwright-junit"),
    ("lighthouse/lhci_plain", "lighthouse-ci"),
    ("lighthouse/lhci_manifest", "lighthouse-ci"),
])
def test_parse_report_dispatches_each_format_through_the_one_table(rel, fmt):
    content = folder(rel) if (FIX / rel).is_dir() else read(rel)
    assert parse_report(content, rel).format == fmt


def test_the_dispatch_table_has_one_parser_per_format_and_every_json_shape_is_in_it():
    from deploy.evidence._common import SHAPES
    from deploy.evidence._reports import PARSERS

    assert set(PARSERS) == {"vitest-json", "playwright-json", "lighthouse-lhr", "junit", "lighthouse-ci"}
    # The manifest.json of a Lighthouse CI folder is recognised only to say "collect the folder".
    assert {s.format for s in SHAPES} - set(PARSERS) == {"lighthouse-ci-manifest"}


def test_a_folder_asked_for_as_test_evidence_is_refused():
    with pytest.raises(EvidenceError, match="expected vitest evidence, but this is a folder"):
        parse_report(folder("lighthouse/lhci_plain"), "lhci", "vitest")


# ---------------------------------------------------------------- malformed input: each its own reason

PW_OK = read("playwright/passing.json")
VITEST_OK = read("vitest/passing.json")


def _edit(raw: bytes, fn) -> bytes:
    doc = json.loads(raw)
    fn(doc)
    return json.dumps(doc).encode()


MALFORMED = [
    ("empty", b"", None, "the file is empty"),
    ("whitespace", b"  \n\t", None, "the file is empty"),
    ("truncated", VITEST_OK[: len(VITEST_OK) // 2], None, "truncated JSON"),
    ("not-json", b"Tests passed!\n", None, "not a JSON report: Expecting value at line 1 column 1"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00", None, "not a JSON report"),
    ("latin1", '{"a": "caf\xe9"}'.encode("latin-1"), None, "not UTF-8 text"),
    ("json-array", b"[1, 2, 3]", None, "not a Vitest, Playwright or Lighthouse report: found a JSON list"),
    ("eslint-output", b'[{"filePath": "/a.ts", "messages": [], "errorCount": 0}]', None, "found a JSON list"),
    ("jest-like-object", b'{"numTotalTests": 1}', None, "found a JSON object with keys numTotalTests"),
    ("playwright-as-vitest", PW_OK, "vitest", "expected vitest evidence, but this is a Playwright JSON report"),
    ("vitest-as-lighthouse", VITEST_OK, "lighthouse", "expected lighthouse evidence, but this is a Vitest JSON report"),
    ("lhci-manifest-alone", read("lighthouse/lhci_manifest/manifest.json"), None, "Lighthouse CI manifest"),
    ("vitest-unknown-status", _edit(VITEST_OK, lambda d: d["testResults"][0]["assertionResults"][0].update(status="flaky")),
     None, "testResults[0].assertionResults[0] has an unknown status 'flaky'"),
    ("vitest-unknown-file-status", _edit(VITEST_OK, lambda d: d["testResults"][1].update(status="ok")),
     None, "testResults[1] has an unknown status 'ok'"),
    ("vitest-results-not-list", _edit(VITEST_OK, lambda d: d.update(testResults={})), None, "testResults is not a list"),
    ("vitest-assertion-not-object", _edit(VITEST_OK, lambda d: d["testResults"][0].update(assertionResults=[3])),
     None, "unexpected structure at testResults[0].assertionResults[0]"),
    ("vitest-no-total", _edit(VITEST_OK, lambda d: d.update(numTotalTests="5")), None, "numTotalTests is not a number"),
    ("vitest-bad-start", _edit(VITEST_OK, lambda d: d.update(startTime="yesterday")), None, "startTime is not a time"),
    ("playwright-unknown-outcome", _edit(PW_OK, lambda d: d["suites"][0]["suites"][0]["specs"][0]["tests"][0].update(status="green")),
     None, "unknown test status 'green'"),
    ("playwright-unknown-result", _edit(PW_OK, lambda d: d["suites"][0]["suites"][0]["specs"][0]["tests"][0]["results"][0].update(status="ok")),
     None, "unknown result status 'ok'"),
    ("playwright-suites-object", _edit(PW_OK, lambda d: d.update(suites={})), None, "suites must be a list"),
    ("playwright-bad-start", _edit(PW_OK, lambda d: d["stats"].update(startTime=5)), None, "stats.startTime is not an ISO 8601 time"),
    ("lhr-score-out-of-range", _edit(read("lighthouse/lhr_passing.json"), lambda d: d["categories"]["seo"].update(score=90)),
     None, "category 'seo' has a score outside 0..1 (90)"),
    ("lhr-category-without-score", _edit(read("lighthouse/lhr_passing.json"), lambda d: d["categories"]["seo"].pop("score")),
     None, "category 'seo' has no score"),
    ("lhr-no-url", _edit(read("lighthouse/lhr_passing.json"),
                         lambda d: [d.pop(k) for k in ("requestedUrl", "finalDisplayedUrl", "finalUrl", "mainDocumentUrl")]),
     None, "names no URL"),
    ("junit-pytest", read("junit/pytest.xml"), None, "neither Vitest nor Playwright wrote"),
    ("junit-broken-xml", read("junit/vitest.xml")[:200], None, "not well-formed XML"),
    ("junit-entity", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><testsuites/>', None, "DOCTYPE/ENTITY"),
    ("junit-other-root", b"<html><body/></html>", None, "the root element is <html>"),
]


@pytest.mark.parametrize("data, kind, reason", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_input_is_a_clear_error_naming_the_file(data, kind, reason):
    with pytest.raises(EvidenceError) as exc:
        parse_report(data, "evidence/x.json", kind)
    assert isinstance(exc.value, GateClosed) and isinstance(exc.value, DeployError)
    assert str(exc.value).startswith("evidence/x.json: ")
    assert reason in exc.value.message
    assert exc.value.hint


@pytest.mark.parametrize("files, reason", [
    ({}, "no Lighthouse runs"),
    ({"manifest.json": b"[]"}, "the manifest lists no Lighthouse runs"),
    ({"manifest.json": b'[{"url": "u", "isRepresentativeRun": true, "jsonPath": "/x/gone.report.json"}]'},
     "names gone.report.json, which is not in the folder"),
    ({"lhr-1.json": b"{"}, "lhci/lhr-1.json: truncated JSON"),
    ({"lhr-1.json": read("vitest/passing.json")}, "lhci/lhr-1.json: this is a Vitest JSON report, not a Lighthouse result"),
], ids=["empty-folder", "empty-manifest", "manifest-points-nowhere", "truncated-run", "wrong-tool-run"])
def test_malformed_lighthouse_ci_folders(files, reason):
    with pytest.raises(EvidenceError) as exc:
        parse_lhci(files, "lhci")
    assert reason in str(exc.value)


def test_junit_flavour_can_be_named_when_the_file_does_not_say():
    xml = b'<testsuites name=""><testsuite name="a.spec.ts"><testcase name="t" classname="a"/></testsuite></testsuites>'
    assert parse_junit(xml, "x.xml", "playwright").counts == TestCounts(total=1, passed=1)
    with pytest.raises(EvidenceError, match="written by playwright"):
        parse_junit(read("junit/playwright.xml"), "x.xml", "vitest")
