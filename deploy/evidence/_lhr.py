"""A Lighthouse result (LHR, `lighthouse --output=json`): decoded JSON in, a run or a report out."""

from __future__ import annotations

import math
from typing import Any

from deploy.evidence._common import (EvidenceError, LighthousePage, LighthouseReport, LighthouseRun, _first_line,
                                     _short, _time_iso)

def _numeric(audits: Any, audit_id: str) -> float:
    # Lighthouse CI's getAuditValue: `(lhr.audits[id] && lhr.audits[id].numericValue) || 0`
    a = audits.get(audit_id) if isinstance(audits, dict) else None
    v = a.get("numericValue") if isinstance(a, dict) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return 0.0
    return float(v)


def run(obj: dict, name: str) -> LighthouseRun:
    """One LHR as a run (also one lhr-*.json of a Lighthouse CI folder)."""
    version = obj["lighthouseVersion"]
    if not isinstance(version, str):
        raise EvidenceError(name, f"lighthouseVersion is not a string ({_short(version)}).")
    cats = obj["categories"]
    if not isinstance(cats, dict):
        raise EvidenceError(name, f"categories is not an object ({_short(cats)}).")
    scores: dict[str, float | None] = {}
    for cid, cat in cats.items():
        if not isinstance(cat, dict) or "score" not in cat:
            raise EvidenceError(name, f"category {cid!r} has no score.")
        s = cat["score"]
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float))
                              or not math.isfinite(s) or not 0 <= s <= 1):
            raise EvidenceError(name, f"category {cid!r} has a score outside 0..1 ({_short(s)}).")
        scores[cid] = None if s is None else float(s)
    # LH 10+ may omit requestedUrl (non-navigation modes); before LH 9 there was no finalDisplayedUrl.
    url = next((obj[k] for k in ("requestedUrl", "finalDisplayedUrl", "finalUrl", "mainDocumentUrl")
                if isinstance(obj.get(k), str) and obj[k]), None)
    if url is None:
        raise EvidenceError(name, "the Lighthouse result names no URL (requestedUrl, finalDisplayedUrl or finalUrl).")
    final = next((obj[k] for k in ("finalDisplayedUrl", "finalUrl", "mainDocumentUrl")
                  if isinstance(obj.get(k), str) and obj[k]), url)
    fetched = _time_iso(obj["fetchTime"], name, "fetchTime") if "fetchTime" in obj else None
    runtime_error = None
    rte = obj.get("runtimeError")
    if rte is not None:
        if not isinstance(rte, dict):
            raise EvidenceError(name, f"runtimeError is not an object ({_short(rte)}).")
        code = rte.get("code")
        # LH 3.x-4.x wrote runtimeError {code: "NO_ERROR"} on every run (removed in #7358).
        if code != "NO_ERROR":
            runtime_error = f"{_first_line(code or 'UNKNOWN')}: {_first_line(rte.get('message') or '')}".rstrip(": ")
    audits = obj.get("audits")
    return LighthouseRun(file=name, url=url, final_url=final, fetched_at=fetched, version=version,
                         scores=scores, runtime_error=runtime_error,
                         fcp=_numeric(audits, "first-contentful-paint"), tti=_numeric(audits, "interactive"))


def parse(obj: dict, name: str) -> LighthouseReport:
    """One LHR as a report of one page."""
    one = run(obj, name)
    page = LighthousePage(url=one.url, runs=(one,), chosen=one, chosen_by="single")
    return LighthouseReport(kind="lighthouse", format="lighthouse-lhr", pages=(page,),
                            tool_version=one.version, started_at=one.fetched_at)


