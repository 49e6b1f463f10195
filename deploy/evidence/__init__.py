"""Evidence gates: no deploy starts unless the Vitest, Playwright and Lighthouse reports
for this exact commit are present, intact, fresh and passing.

    _reports    pure parsers: report bytes in, frozen report values out (EvidenceError otherwise);
                one module per format (_vitest, _playwright, _junit, _lhr, _lhci) behind one table
    _policy     pure judging against `[gate]` settings: GateRow, GateVerdict, render()
    _manifest   evidence/manifest.json (collect) and the gate that reads it (gate, require)
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.evidence._manifest import (MANIFEST, Manifest, ManifestEntry, check_sha, collect, evidence_dir,
                                           gate, read_manifest, render_manifest, require, write_manifest)
    from deploy.evidence._policy import (GateRow, GateVerdict, error_row, judge, judge_lighthouse, judge_tests,
                                         missing_rows, render, thresholds, verdict)
    from deploy.evidence._reports import (KINDS, EvidenceError, LighthousePage, LighthouseReport, LighthouseRun,
                                          Report, TestCounts, TestReport, detect, load_json, parse_junit, parse_lhci,
                                          parse_lhr, parse_playwright, parse_report, parse_vitest, representative_run)
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.evidence._manifest": ("MANIFEST", "Manifest", "ManifestEntry", "check_sha", "collect",
                                      "evidence_dir", "gate", "read_manifest", "render_manifest", "require",
                                      "write_manifest"),
        "deploy.evidence._policy": ("GateRow", "GateVerdict", "error_row", "judge", "judge_lighthouse",
                                    "judge_tests", "missing_rows", "render", "thresholds", "verdict"),
        "deploy.evidence._reports": ("KINDS", "EvidenceError", "LighthousePage", "LighthouseReport", "LighthouseRun",
                                     "Report", "TestCounts", "TestReport", "detect", "load_json", "parse_junit",
                                     "parse_lhci", "parse_lhr", "parse_playwright", "parse_report", "parse_vitest",
                                     "representative_run"),
    })

__all__ = [
    "EvidenceError", "KINDS", "MANIFEST",
    "TestCounts", "TestReport", "LighthouseRun", "LighthousePage", "LighthouseReport", "Report",
    "detect", "load_json", "parse_report", "parse_vitest", "parse_playwright", "parse_junit", "parse_lhr",
    "parse_lhci", "representative_run",
    "GateRow", "GateVerdict", "judge", "judge_tests", "judge_lighthouse", "error_row", "missing_rows",
    "verdict", "thresholds", "render",
    "Manifest", "ManifestEntry", "check_sha", "collect", "write_manifest", "read_manifest", "render_manifest", "evidence_dir",
    "gate", "require",
]
