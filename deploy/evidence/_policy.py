"""Judge parsed reports against an environment's gate policy (pure), and render the verdict.

One row per report (one per URL for Lighthouse); the gate is open only if every row
passes and every required kind has a row. Rendering with tabulate happens at the edge.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from deploy.config import GateSection, LighthouseThresholds
from deploy.display import fit
from deploy.evidence._reports import LighthouseReport, Report, TestCounts, TestReport

# Lighthouse category ids (types/lhr/lhr.d.ts) for the settings' field names.
CATEGORY_IDS = {f.name: f.name.replace("_", "-") for f in dataclasses.fields(LighthouseThresholds)}

# CI runners' clocks drift; evidence "made" a little in the future is accepted, more is not.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class GateRow:
    kind: str                                   # vitest, playwright, lighthouse, manifest
    file: str                                   # relative to the evidence folder
    counts: TestCounts | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    threshold: str = ""
    verdict: str = "pass"                       # pass, fail, error, missing
    reasons: tuple[str, ...] = ()
    url: str = ""                               # Lighthouse rows: the page judged
    tool: str = ""                              # e.g. "1.48.2 (playwright-json)"

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"


@dataclass(frozen=True)
class GateVerdict:
    ok: bool
    rows: tuple[GateRow, ...]
    sha: str | None = None
    notes: tuple[str, ...] = ()                 # e.g. that SHA binding is off

    @property
    def reasons(self) -> list[str]:
        return [f"{r.kind} {r.file}{f' ({r.url})' if r.url else ''}: {why}"
                for r in self.rows if not r.ok for why in r.reasons]


def thresholds(gate: GateSection) -> dict[str, float]:
    """{lighthouse category id: minimum score} for the categories the settings set."""
    return {CATEGORY_IDS[k]: v for k, v in dataclasses.asdict(gate.lighthouse).items() if v is not None}


def _age_reason(made: datetime | None, now: datetime, gate: GateSection) -> str | None:
    if gate.max_age_hours <= 0 or made is None:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    age = now - made
    if age < -CLOCK_SKEW:
        return f"made {made:%Y-%m-%d %H:%M} UTC, in the future of this machine's clock"
    if age > timedelta(hours=gate.max_age_hours):
        return f"stale: made {age.total_seconds() / 3600:.1f} h ago, the limit is {gate.max_age_hours:g} h"
    return None


def _tool(report: Report) -> str:
    return f"{report.tool_version} ({report.format})" if report.tool_version else report.format


def judge_tests(report: TestReport, file: str, gate: GateSection, now: datetime | None = None) -> GateRow:
    """One row for a Vitest or Playwright report."""
    c = report.counts
    max_failed = max(0, gate.max_failed)
    reasons: list[str] = []
    ran = c.passed + c.flaky + (c.failed - c.did_not_run)
    not_run = c.skipped + c.todo
    if c.total == 0:
        reasons.append("no tests ran (zero tests in the report)")
    elif ran == 0:
        reasons.append(f"no tests ran: all {c.total} tests in the report were skipped or never started")
    elif c.total and not_run / c.total > gate.max_skipped_ratio:
        reasons.append(f"{not_run} of {c.total} tests skipped or todo ({not_run / c.total:.0%}), more than "
                       f"gate.max_skipped_ratio = {gate.max_skipped_ratio:g} allows")
    if c.failed > max_failed:
        reasons.append(f"{c.failed} failed test{'s' if c.failed != 1 else ''}"
                       f"{f' ({c.did_not_run} never ran)' if c.did_not_run else ''}, at most {max_failed} allowed"
                       + (": " + "; ".join(report.failures) if report.failures else ""))
    if c.flaky and not gate.allow_flaky:
        reasons.append(f"{c.flaky} flaky test{'s' if c.flaky != 1 else ''} (passed only on a retry); "
                       "flaky tests are not allowed here (gate.allow_flaky = false)")
    reasons.extend(report.errors)
    if now is not None:
        age = _age_reason(report.started_at, now, gate)
        if age:
            reasons.append(age)
    flaky = "flaky allowed" if gate.allow_flaky else "no flaky"
    return GateRow(kind=report.kind, file=file, counts=c,
                   threshold=f"failed <= {max_failed}, skipped <= {gate.max_skipped_ratio:.0%}, {flaky}",
                   verdict="fail" if reasons else "pass", reasons=tuple(reasons), tool=_tool(report))


def judge_lighthouse(report: LighthouseReport, file: str, gate: GateSection,
                     now: datetime | None = None) -> list[GateRow]:
    """One row per page: the representative run's scores against the minimums."""
    minimums = thresholds(gate)
    wanted = ", ".join(f"{k} >= {v:.2f}" for k, v in minimums.items()) or "no minimums"
    rows = []
    for i, page in enumerate(report.pages):
        run = page.chosen
        reasons: list[str] = []
        for cat, least in minimums.items():
            if cat not in run.scores:
                have = ", ".join(run.scores) or "none"
                reasons.append(f"category {cat} is missing from the report (it has {have})")
            elif (score := run.scores[cat]) is None:
                reasons.append(f"{cat} score is null: Lighthouse could not compute it")
            elif score < least:
                reasons.append(f"{cat} {score:.2f} is below {least:.2f}")
        for bad in page.errored:
            reasons.append(f"runtimeError in {bad.file.rsplit('/', 1)[-1]}: {bad.runtime_error}")
        if i == 0:
            reasons.extend(report.errors)
            if now is not None:
                age = _age_reason(report.started_at, now, gate)
                if age:
                    reasons.append(age)
        runs = f" (median of {len(page.runs)} runs)" if len(page.runs) > 1 else ""
        rows.append(GateRow(kind="lighthouse", file=file, scores=dict(run.scores), threshold=wanted,
                            verdict="fail" if reasons else "pass", reasons=tuple(reasons),
                            url=page.url + runs, tool=_tool(report)))
    if not rows:
        rows.append(error_row("lighthouse", file, "the report holds no Lighthouse runs"))
    return rows


def judge(report: Report, file: str, gate: GateSection, now: datetime | None = None) -> list[GateRow]:
    """Rows for one parsed report; `now` enables the age check (if the settings set one)."""
    if isinstance(report, LighthouseReport):
        return judge_lighthouse(report, file, gate, now)
    return [judge_tests(report, file, gate, now)]


def error_row(kind: str, file: str, reason: str) -> GateRow:
    return GateRow(kind=kind, file=file, verdict="error", reasons=(reason,))


def missing_rows(gate: GateSection, rows: list[GateRow] | tuple[GateRow, ...]) -> list[GateRow]:
    """A row for every required kind that has no evidence at all."""
    have = {r.kind for r in rows}
    return [GateRow(kind=k, file="-", verdict="missing",
                    reasons=(f"no {k} evidence was collected, and gate.required lists it",))
            for k in gate.required if k not in have]


def verdict(rows: list[GateRow], gate: GateSection, sha: str | None = None,
            notes: tuple[str, ...] = ()) -> GateVerdict:
    """Close the gate unless every row passes and every required kind is present."""
    all_rows = tuple(rows) + tuple(missing_rows(gate, rows))
    return GateVerdict(ok=bool(all_rows) and all(r.ok for r in all_rows), rows=all_rows, sha=sha, notes=notes)


# ---------------------------------------------------------------- rendering

def _scores(scores: dict[str, float | None]) -> str:
    return "\n".join(f"{k} {'null' if v is None else f'{v:.2f}'}" for k, v in scores.items())


def render(v: GateVerdict, width: int | None = 160) -> str:
    """The verdict as a table no wider than `width` (every failure reason in it, wrapped),
    then the notes and the overall outcome."""
    table = [
        [r.kind + (f"\n{r.tool}" if r.tool else ""), r.file + (f"\n{r.url}" if r.url else ""), r.counts.describe() if r.counts else "",
         _scores(r.scores), r.threshold, r.verdict.upper(), "\n".join(f"- {x}" for x in r.reasons)]
        for r in v.rows
    ]
    text = fit(table, ["kind", "file", "counts", "scores", "threshold", "verdict", "reasons"], width,
               fmt="simple_grid", optional=("threshold", "scores", "counts"), wide=("reasons",))
    lines = [text]
    lines += [f"note: {n}" for n in v.notes]
    target = f" for {v.sha[:12]}" if v.sha else ""
    lines.append(f"gate {'OPEN' if v.ok else 'CLOSED'}{target}: "
                 f"{sum(r.ok for r in v.rows)} of {len(v.rows)} checks passed")
    return "\n".join(lines)
