"""`invoke reliability.report`: the reliability cases and kill points, written as markdown."""

from __future__ import annotations

from pathlib import Path

from deploy import reliability
from deploy.services import Services


def report(svc: Services, out: str, junit: str | None = None) -> None:
    """Run the report over the toolkit's own checkout (or read `junit`) and write it to `out`."""
    f = reliability.report(Path(__file__).resolve().parents[2], out=out, junit=Path(junit) if junit else None)
    svc.term.out(f"{out}: {f.all_cases.line()}; kill points resume {f.kill_resume.line()}, "
                 f"abort {f.kill_abort.line()}")
