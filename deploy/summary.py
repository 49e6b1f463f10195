"""A run's markdown summary for `$GITHUB_STEP_SUMMARY` (and for humans)."""

from __future__ import annotations

import os
from pathlib import Path

from deploy.redact import redact


def markdown(run, steps, *, title: str, links: dict[str, str] | None = None) -> str:
    from tabulate import tabulate

    rows = []
    for s in steps:
        dur = f"{s.finished_at - s.started_at:.2f}s" if s.started_at and s.finished_at else ""
        detail = s.error or s.result or ""
        if s.undo_status:
            detail = f"{detail} (undo: {s.undo_status})".strip()
        rows.append((s.idx + 1, s.name, s.status, dur, " ".join(detail.split())[:160]))
    lines = [
        f"## {title}",
        "",
        f"- environment: `{run.env}`",
        f"- outcome: **{run.status}**",
        f"- commit: `{run.sha or '-'}`",
        f"- release: `{run.release_id or '-'}`",
        f"- run: `{run.id}` by {run.who}",
    ]
    if run.duration is not None:
        lines.append(f"- duration: {run.duration:.1f}s")
    for k, v in (links or {}).items():
        lines.append(f"- {k}: {v}")
    if run.error:
        lines += ["", "```", run.error.strip()[:2000], "```"]
    lines += ["", tabulate(rows, headers=("#", "step", "status", "time", "detail"), tablefmt="github"), ""]
    return redact("\n".join(lines))


def write_github_summary(text: str) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY when it is set."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(redact(text) + "\n")
    return Path(target)
