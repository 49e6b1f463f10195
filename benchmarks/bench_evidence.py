"""Benchmark: the evidence gate against a bare `json.load` of the same report files.

Generates a Playwright JSON report with 50,000 tests and a Vitest JSON report with 50,000
assertion results (in the tools' formats, via deploy.testing.reports), collects them, then
times, in the same process and run:

    baseline   json.load of both files
    gate       deploy.evidence.gate(): manifest, SHA-256 of each file, parse, judge

and prints the median of several runs and the ratio (target: gate within 1.5x of json.load).
Run: python benchmarks/bench_evidence.py [--tests 50000] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tabulate import tabulate  # noqa: E402

from benchmarks._common import claim, write_claims  # noqa: E402

from deploy.config import GateSection  # noqa: E402
from deploy.evidence import collect, gate  # noqa: E402
from deploy.testing.reports import T0, PwTest, playwright_json, vitest_json, write_json  # noqa: E402

SHA = "3f786850e387550fdab836ed7e6dc881de23001b"


def make_reports(folder: Path, n: int) -> list[Path]:
    pw = [PwTest(f"e2e/area{i // 500:03d}.spec.ts", f"area {i // 500} > case {i}", line=3 + i % 500,
                 results=("failed", "passed") if i % 997 == 0 else ("passed",),
                 project="chromium" if i % 2 else "firefox")
          for i in range(n)]
    files: dict[str, list[tuple[str, str]]] = {}
    for i in range(n):
        status = "skipped" if i % 211 == 0 else "todo" if i % 977 == 0 else "passed"
        files.setdefault(f"test/unit{i // 250:04d}.test.ts", []).append((f"unit {i // 250} > case {i}", status))
    return [write_json(folder / "playwright.json", playwright_json(pw), indent=None),
            write_json(folder / "vitest.json", vitest_json(files), indent=None)]


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tests", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_reports(folder, args.tests)
        collect(SHA, paths, out=folder / "manifest.json", now=T0)
        policy = GateSection(required=("vitest", "playwright"), max_age_hours=0)
        now = T0 + timedelta(hours=1)

        def baseline():
            for p in paths:
                with p.open("rb") as fh:
                    json.load(fh)

        def run_gate():
            v = gate(policy, SHA, folder, now)
            assert v.ok, v.reasons

        baseline(), run_gate()                                        # warm the page cache and imports
        base = timed(baseline, args.runs)
        gated = timed(run_gate, args.runs)
        sizes = sum(p.stat().st_size for p in paths) / 1e6
    b, g = statistics.median(base), statistics.median(gated)
    ratio = g / b
    print(tabulate([
        ["json.load (baseline)", f"{b * 1000:.1f}", f"{min(base) * 1000:.1f}", "1.00"],
        ["evidence gate", f"{g * 1000:.1f}", f"{min(gated) * 1000:.1f}", f"{ratio:.2f}"],
    ], headers=["", "median ms", "best ms", "ratio"], tablefmt="simple"))
    print(f"\n{args.tests:,} Playwright tests + {args.tests:,} Vitest assertions, {sizes:.1f} MB, "
          f"median of {args.runs} runs; target ratio <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'}")
    write_claims(args.claims_out, [claim("evidence", f"gate / json.load, {args.tests:,}+{args.tests:,} results",
                                         f"{ratio:.2f}x", "<= 1.5x", ratio <= 1.5)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
