"""A Lighthouse CI output folder (`.lighthouseci/`): {file name: bytes} in, a LighthouseReport out."""

from __future__ import annotations

import re
from typing import Literal, Mapping

from deploy.evidence import _lhr
from deploy.evidence._common import (EvidenceError, LighthousePage, LighthouseReport, LighthouseRun, _first_line,
                                     _short, _wrong_tool, decode_as, load_json)


def _lhr_file(data: bytes, name: str) -> LighthouseRun:
    return _lhr.run(decode_as(data, name, "lighthouse-lhr"), name)


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
            runs.append(_lhr_file(files[base], f"{name}/{base}"))
            if entry.get("isRepresentativeRun") is True:
                flagged.add(base)
    else:
        names = sorted((n for n in files if _LHR_FILE.match(n)), key=lambda n: (len(n), n))
        if not names:
            raise EvidenceError(name, "no Lighthouse runs: neither manifest.json nor lhr-*.json files.",
                                "Point at the folder `lhci collect` wrote (.lighthouseci/) or its filesystem upload target.")
        runs = [_lhr_file(files[n], f"{name}/{n}") for n in names]
    by_url: dict[str, list[LighthouseRun]] = {}
    for r in runs:
        by_url.setdefault(r.url, []).append(r)      # upload.js groups by requestedUrl, first seen first
    pages = []
    how: Literal["single", "manifest", "median"]
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
            # lighthouse-ci's docs/assertions.md: only level "error" fails `lhci assert`; "warn" is advice.
            if isinstance(res, dict) and res.get("passed") is False and res.get("level") == "error":
                errors.append(f"lhci assertion {_first_line(res.get('name') or res.get('auditId') or '?', 60)} "
                              f"failed on {_first_line(res.get('url') or '?', 80)} "
                              f"(expected {_short(res.get('expected'), 20)}, actual {_short(res.get('actual'), 20)})")
    versions = sorted({r.version for r in runs})
    times = [r.fetched_at for r in runs if r.fetched_at]
    return LighthouseReport(kind="lighthouse", format="lighthouse-ci", pages=tuple(pages),
                            tool_version=", ".join(versions) or None,
                            started_at=min(times) if times else None, errors=tuple(errors))
