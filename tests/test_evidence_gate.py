"""The evidence manifest and the gate: evidence belongs to one commit, is intact, fresh,
complete and passing under the environment's policy, or the gate is closed with reasons."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from deploy import config
from deploy.config import GateSection, LighthouseThresholds
from deploy.errors import GateClosed
from deploy.evidence import EvidenceError, collect, evidence_dir, gate, read_manifest, render, require
from deploy.testing.reports import T0, lhr, write_json, write_lhci

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"
OTHER = "89e6c98d92887913cadf06b2adb97f26cde4849b"
FIX = Path(__file__).parent / "fixtures" / "evidence"
ROOT = Path(__file__).resolve().parents[1]
LOOSE = GateSection(lighthouse=LighthouseThresholds(performance=0.5))


def reasons(v) -> str:
    return "\n".join(v.reasons)


# ---------------------------------------------------------------- binding to the commit

def test_green_evidence_for_this_commit_opens_the_gate(passing_evidence, evidence_now):
    v = gate(LOOSE, SHA, passing_evidence(SHA), evidence_now)
    assert v.ok, reasons(v)
    assert [r.kind for r in v.rows] == ["vitest", "playwright", "lighthouse", "lighthouse"]
    assert "gate OPEN for 3f786850e387" in render(v)


def test_abbreviated_sha_of_the_same_commit_is_accepted(passing_evidence, evidence_now):
    assert gate(LOOSE, SHA[:10], passing_evidence(SHA), evidence_now).ok


def test_evidence_for_another_commit_closes_the_gate(passing_evidence, evidence_now):
    v = gate(LOOSE, OTHER, passing_evidence(SHA), evidence_now)
    assert not v.ok
    assert "the evidence is for commit 3f786850e387, not 89e6c98d9288, the commit being deployed" in reasons(v)


def test_no_sha_given_closes_a_bound_gate(passing_evidence, evidence_now):
    v = gate(LOOSE, None, passing_evidence(SHA), evidence_now)
    assert "no commit SHA was given" in reasons(v)


def test_edited_report_is_refused_by_its_hash(passing_evidence, evidence_now):
    folder = passing_evidence(SHA)
    doc = json.loads((folder / "vitest.json").read_text())
    doc["testResults"][0]["assertionResults"][0]["status"] = "passed"
    (folder / "vitest.json").write_text(json.dumps(doc))
    v = gate(LOOSE, SHA, folder, evidence_now)
    row = next(r for r in v.rows if r.kind == "vitest")
    assert row.verdict == "error" and "the file changed after it was collected" in row.reasons[0]


@pytest.mark.parametrize("change, expected", [
    (lambda d: (d / "lhr-9999999999999.json").write_text("{}"), "added lhr-9999999999999.json"),
    (lambda d: next(d.glob("lhr-*.json")).unlink(), "removed lhr-"),
    (lambda d: (d / "manifest.json").write_text("[]"), "changed manifest.json"),
], ids=["run-added", "run-removed", "lhci-manifest-edited"])
def test_changed_lighthouse_folder_names_what_changed(passing_evidence, evidence_now, change, expected):
    folder = passing_evidence(SHA)
    change(folder / ".lighthouseci")
    v = gate(LOOSE, SHA, folder, evidence_now)
    assert not v.ok and expected in reasons(v)


def test_stale_evidence_closes_the_gate_with_its_age(passing_evidence):
    v = gate(replace(LOOSE, max_age_hours=24), SHA, passing_evidence(SHA), T0 + timedelta(hours=30))
    assert not v.ok
    assert "vitest vitest.json: stale: made 30.0 h ago, the limit is 24 h" in v.reasons


def test_evidence_from_the_future_is_refused(passing_evidence):
    v = gate(LOOSE, SHA, passing_evidence(SHA), T0 - timedelta(hours=2))
    assert "in the future of this machine's clock" in reasons(v)


def test_age_check_off_says_so(passing_evidence):
    v = gate(replace(LOOSE, max_age_hours=0), SHA, passing_evidence(SHA), T0 + timedelta(days=400))
    assert v.ok and "evidence age is not checked (gate.max_age_hours = 0)" in v.notes


def test_missing_kind_closes_the_gate(tmp_path, evidence_now):
    shutil.copy(FIX / "vitest/passing.json", tmp_path / "vitest.json")
    collect(SHA, [tmp_path / "vitest.json"], out=tmp_path / "ev" / "manifest.json", now=T0)
    v = gate(LOOSE, SHA, tmp_path / "ev", evidence_now)
    assert {(r.kind, r.verdict) for r in v.rows} == {("vitest", "pass"), ("playwright", "missing"),
                                                     ("lighthouse", "missing")}
    assert "playwright -: no playwright evidence was collected, and gate.required lists it" in v.reasons


def test_required_kinds_come_from_the_settings(tmp_path, evidence_now):
    shutil.copy(FIX / "vitest/passing.json", tmp_path / "vitest.json")
    collect(SHA, [tmp_path / "vitest.json"], out=tmp_path / "manifest.json", now=T0)
    assert gate(replace(LOOSE, required=("vitest",)), SHA, tmp_path, evidence_now).ok


def test_missing_manifest_says_how_to_make_one(tmp_path, evidence_now):
    v = gate(LOOSE, SHA, tmp_path, evidence_now)
    assert not v.ok and "manifest.json: no such file or folder. Run `invoke evidence.collect" in reasons(v)


def test_deleted_report_is_named(passing_evidence, evidence_now):
    folder = passing_evidence(SHA)
    (folder / "playwright.json").unlink()
    assert "playwright playwright.json: listed in the manifest but no such file or folder" in gate(
        LOOSE, SHA, folder, evidence_now).reasons


@pytest.mark.parametrize("path", ["../outside.json", "/etc/passwd"])
def test_manifest_cannot_point_outside_the_evidence_folder(passing_evidence, evidence_now, path):
    folder = passing_evidence(SHA)
    doc = json.loads((folder / "manifest.json").read_text())
    doc["artifacts"][0]["path"] = path
    (folder / "manifest.json").write_text(json.dumps(doc))
    assert "the manifest points outside the evidence folder" in reasons(gate(LOOSE, SHA, folder, evidence_now))


@pytest.mark.parametrize("text, reason", [
    ("", "manifest.json: the file is empty"),
    ('{"format": "something else"}', "not an evidence manifest"),
    ('{"format": "occ-deploy evidence manifest", "version": 1, "sha": "abc", "artifacts": []}', "is not a full commit SHA"),
    ('{"format": "occ-deploy evidence manifest", "version": 1, "sha": "' + SHA + '", "artifacts": [{"kind": "jest"}]}',
     "artifacts[0] is incomplete"),
], ids=["empty", "foreign", "short-sha", "bad-artifact"])
def test_broken_manifest_closes_the_gate_with_its_reason(tmp_path, evidence_now, text, reason):
    (tmp_path / "manifest.json").write_text(text)
    v = gate(LOOSE, SHA, tmp_path, evidence_now)
    assert not v.ok and reason in reasons(v)


# ---------------------------------------------------------------- collect

def test_collect_detects_kinds_by_content_and_records_hashes(tmp_path):
    # deliberately misleading names
    shutil.copy(FIX / "playwright/passing.json", tmp_path / "vitest-results.json")
    shutil.copy(FIX / "junit/vitest.xml", tmp_path / "e2e.xml")
    shutil.copytree(FIX / "lighthouse/lhci_plain", tmp_path / "lh")
    out = tmp_path / "evidence" / "manifest.json"
    m = collect(SHA, [tmp_path / "vitest-results.json", tmp_path / "e2e.xml", tmp_path / "lh"], out=out, now=T0)
    assert [(e.kind, e.format, e.path) for e in m.entries] == [
        ("playwright", "playwright-json", "vitest-results.json"), ("vitest", "vitest-junit", "e2e.xml"),
        ("lighthouse", "lighthouse-ci", "lh")]
    copied = out.parent / "vitest-results.json"                   # copied in: the folder is the whole artifact
    assert m.entries[0].sha256 == hashlib.sha256(copied.read_bytes()).hexdigest()
    assert m.entries[0].created_at == T0                          # the report's own startTime
    assert read_manifest(out) == m


def test_collect_refuses_a_bad_sha_and_a_malformed_file(tmp_path):
    (tmp_path / "broken.json").write_text('{"numTotalTests": 3, "testResults": [')
    with pytest.raises(GateClosed, match="not a full commit SHA"):
        collect("HEAD", [tmp_path / "broken.json"], out=tmp_path / "ev" / "manifest.json", now=T0)
    with pytest.raises(EvidenceError, match="broken.json: truncated JSON"):
        collect(SHA, [tmp_path / "broken.json"], out=tmp_path / "ev" / "manifest.json", now=T0)
    with pytest.raises(EvidenceError, match="missing.json: no such file"):
        collect(SHA, [tmp_path / "missing.json"], out=tmp_path / "ev" / "manifest.json", now=T0)


def test_collect_for_a_new_commit_rebinds_the_evidence(passing_evidence, evidence_now):
    folder = passing_evidence(SHA)
    files = [folder / "vitest.json", folder / "playwright.json", folder / ".lighthouseci"]
    collect(OTHER, files, out=folder / "manifest.json", now=evidence_now)
    assert gate(LOOSE, OTHER, folder, evidence_now).ok
    assert not gate(LOOSE, SHA, folder, evidence_now).ok


# ---------------------------------------------------------------- each broken report closes the gate with its own reason

@pytest.mark.parametrize("rel, reason", [
    ("vitest/failing.json", "1 failed test, at most 0 allowed: server serves the release"),
    ("vitest/load_error.json", "test/orders.test.mjs: Failed to load url ./orders.mjs"),
    ("vitest/no_test_files_v3.json", "no tests ran (zero tests in the report)"),
    ("vitest/pending.json", "hangs (did not finish)"),
    ("playwright/failing.json", "1 failed test, at most 0 allowed: e2e/orders.spec.ts > opens an order [chromium]"),
    ("playwright/did_not_run.json", "4 failed tests (3 never ran)"),
    ("playwright/webserver_error.json", "run error: Error: Timed out waiting 60000ms from config.webServer."),
    ("lighthouse/lhr_null_score.json", "performance score is null"),
    ("lighthouse/lhr_runtime_error.json", "runtimeError in lhr_runtime_error.json: ERRORED_DOCUMENT_REQUEST"),
    ("lighthouse/lhci_assert_failed", "lhci assertion minScore failed on http://127.0.0.1:3000/"),
    ("lighthouse/lhci_one_run_errored", "NO_FCP: The page did not paint any content."),
    ("junit/vitest_unhandled.xml", "unhandled error: Unhandled Rejection: ECONNREFUSED 127.0.0.1:5432"),
])
def test_each_broken_report_closes_the_gate_with_its_own_reason(tmp_path, evidence_now, rel, reason):
    src = FIX / rel
    target = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, target)
    collect(SHA, [target], out=tmp_path / "manifest.json", now=T0)
    settings = GateSection(required=(), max_age_hours=0, lighthouse=LighthouseThresholds(performance=0.5))
    with pytest.raises(GateClosed) as exc:
        require(settings, SHA, tmp_path, evidence_now)
    assert reason in "\n".join(exc.value.reasons)
    assert exc.value.exit_code == 5 and "gate CLOSED" in str(exc.value)


def test_require_returns_the_open_verdict(passing_evidence, evidence_now):
    assert require(LOOSE, SHA, passing_evidence(SHA), evidence_now).ok


def test_closed_gate_error_carries_the_table_reasons_and_a_hint(passing_evidence, evidence_now):
    with pytest.raises(GateClosed) as exc:
        require(LOOSE, OTHER, passing_evidence(SHA), evidence_now)
    text = str(exc.value)
    for column in ("kind", "file", "counts", "scores", "threshold", "verdict", "reasons"):
        assert column in text
    # The table wraps the reasons column between words; the reasons themselves are whole.
    assert "the commit being deployed" in "\n".join(exc.value.reasons) and "deployed" in text
    assert "invoke evidence.collect" in exc.value.hint
    assert not exc.value.verdict.ok


# ---------------------------------------------------------------- policies per environment (env/*.toml)

def _flaky_but_otherwise_green(tmp_path, perf: float) -> Path:
    shutil.copy(FIX / "vitest/passing.json", tmp_path / "vitest.json")
    shutil.copy(FIX / "playwright/flaky.json", tmp_path / "playwright.json")
    url = "http://127.0.0.1:3000/"
    write_lhci(tmp_path / ".lighthouseci", [lhr(url, {"performance": perf, "accessibility": 0.95}, fetch_time=T0)],
               representative=(0,))
    collect(SHA, [tmp_path / "vitest.json", tmp_path / "playwright.json", tmp_path / ".lighthouseci"],
            out=tmp_path / "manifest.json", now=T0)
    return tmp_path


@pytest.mark.parametrize("env, perf, ok, reason", [
    ("staging", 0.85, True, None),
    ("production", 0.85, False, "flaky tests are not allowed here (gate.allow_flaky = false)"),
    ("production", 0.85, False, "performance 0.85 is below 0.90"),
    ("staging", 0.75, False, "performance 0.75 is below 0.80"),
])
def test_environment_policies(tmp_path, evidence_now, env, perf, ok, reason):
    settings = config.load(env, ROOT)
    v = gate(settings.gate, SHA, _flaky_but_otherwise_green(tmp_path, perf), evidence_now)
    assert v.ok is ok, reasons(v)
    if reason:
        assert reason in reasons(v)


def test_max_failed_tolerates_that_many_failures(tmp_path, evidence_now):
    shutil.copy(FIX / "vitest/failing.json", tmp_path / "vitest.json")
    collect(SHA, [tmp_path / "vitest.json"], out=tmp_path / "manifest.json", now=T0)
    settings = GateSection(required=("vitest",))
    assert not gate(settings, SHA, tmp_path, evidence_now).ok
    assert gate(replace(settings, max_failed=1), SHA, tmp_path, evidence_now).ok


def test_local_gates_on_the_example_apps_committed_evidence_and_says_binding_is_off():
    settings = config.load("local", ROOT)
    v = require(settings.gate, OTHER, evidence_dir(settings), T0 + timedelta(days=3650))
    text = render(v)
    assert v.ok and "SHA binding is OFF (gate.bind_to_sha = false)" in text
    assert [r.kind for r in v.rows] == ["vitest", "playwright", "lighthouse", "lighthouse"]


def test_the_example_apps_evidence_does_not_open_a_bound_gate():
    settings = config.load("staging", ROOT)
    local = config.load("local", ROOT)
    v = gate(settings.gate, OTHER, evidence_dir(local), T0 + timedelta(hours=1))
    assert not v.ok and "not 89e6c98d9288, the commit being deployed" in reasons(v)


def test_naive_clock_is_read_as_utc(passing_evidence):
    v = gate(replace(LOOSE, max_age_hours=24), SHA, passing_evidence(SHA), (T0 + timedelta(hours=30)).replace(tzinfo=None))
    assert "stale: made 30.0 h ago" in reasons(v)


def test_collected_manifest_renders_as_a_table(passing_evidence):
    from deploy.evidence import render_manifest
    text = render_manifest(read_manifest(passing_evidence(SHA) / "manifest.json"))
    assert "lighthouse-ci" in text and f"evidence for commit {SHA}" in text


def test_public_api_is_exported():
    import deploy.evidence as ev
    assert sorted(ev.__all__) == sorted(set(ev.__all__))
    assert all(hasattr(ev, name) for name in ev.__all__)


# ---------------------------------------------------------------- reports where nothing ran

@pytest.mark.parametrize("rel, kind, total", [
    ("playwright/all_skipped.json", "playwright", 8),
    ("vitest/all_skipped.json", "vitest", 4),
    ("junit/playwright_all_skipped.xml", "playwright", 4),
], ids=["playwright-json-all-test-skip", "vitest-json-all-skipped", "playwright-junit-all-skipped"])
def test_a_report_in_which_no_test_ran_closes_the_gate(rel, kind, total):
    from deploy.evidence import judge_tests, parse_report

    report = parse_report((FIX / rel).read_bytes(), rel)
    assert report.kind == kind and report.counts.failed == 0 and report.counts.total == total
    row = judge_tests(report, rel, GateSection(max_skipped_ratio=1.0))
    assert not row.ok
    assert row.reasons == (f"no tests ran: all {total} tests in the report were skipped or never started",)


@pytest.mark.parametrize("ratio, ok", [(0.5, True), (0.4, True), (0.3, False), (0.0, False)],
                         ids=["default", "staging-and-production", "stricter", "no-skips-allowed"])
def test_max_skipped_ratio_bounds_the_share_of_skipped_tests(ratio, ok):
    from deploy.evidence import judge_tests, parse_report

    # 5 tests: 3 passed, 1 skipped, 1 todo: 40 % did not run.
    report = parse_report((FIX / "vitest/passing.json").read_bytes(), "vitest.json")
    row = judge_tests(report, "vitest.json", GateSection(max_skipped_ratio=ratio))
    assert row.ok is ok, row.reasons
    if not ok:
        assert row.reasons == (f"2 of 5 tests skipped or todo (40%), more than gate.max_skipped_ratio = {ratio:g} "
                               "allows",)


def test_max_skipped_ratio_out_of_range_is_a_settings_error(tmp_path):
    with pytest.raises(config.SettingsError, match="gate.max_skipped_ratio = 1.5 is out of range"):
        config.parse({"gate": {"max_skipped_ratio": 1.5}, "environment": {"kind": "local"}},
                     name="t", file=tmp_path / "t.toml", root=tmp_path)
