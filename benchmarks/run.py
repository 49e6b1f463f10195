"""Run every benchmark, one after the other, and summarise their claims.

    python benchmarks/run.py [--quick] [--only release,overhead] [--markdown FILE]

Each benchmark is its own script (benchmarks/bench_*.py, runnable alone) and runs in its
own process, so one's farm of sshd hosts, Postgres cluster or imports never colour
another's figures. Each prints its tables as it goes; this prints the machine first and,
at the end, one table of every claim (figure, target, met?). Figures are medians of
several runs, and the claims are ratios against a baseline measured in the same run.

--quick: fewer repeats and smaller sizes (about 3 minutes instead of a quarter of an hour; the
summary says how long each benchmark took).
Exit status 1 when any target was missed or a benchmark failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, Claim, machine, read_claims, verdict  # noqa: E402

HERE = Path(__file__).resolve().parent

# Kept between quick runs: the Ansible peer's venv (a pip install of ansible-core each time
# otherwise).
CACHE = Path.home() / ".cache" / "occ-deploy" / "bench"

# name -> (script, full args, quick args). Quick (about 3 minutes on 2 cores): one timed run
# where the full suite takes several, the 4-host rows of bench_fast left out (1 and 16 hosts
# remain; its request check still runs 5 rolling releases through nginx), one project for both
# staging promotions in bench_overhead (one cold npm ci instead of two).
SUITE = {
    "overhead": ("bench_overhead.py", [], ["--quick"]),
    "release": ("bench_release.py", ["--runs", "5"], ["--runs", "1", "--ansible-venv", str(CACHE / "ansible-venv")]),
    "evidence": ("bench_evidence.py", ["--tests", "50000", "--runs", "7"], ["--tests", "50000", "--runs", "3"]),
    "migrations": ("bench_migrations.py", ["--repeat", "5"], ["--repeat", "3"]),
    "backups": ("bench_backups.py", ["--size-mb", "200", "--runs", "3"], ["--quick"]),
    "build": ("bench_build.py", ["--runs", "3"], ["--runs", "1", "--warm-runs", "2", "--cold-runs", "1"]),
    "pack": ("bench_pack.py", ["--runs", "3"], ["--runs", "1", "--max-mb", "40"]),
    "fast": ("bench_fast.py", ["--runs", "3"], ["--runs", "1", "--hosts", "1,16"]),
    "zero": ("bench_zero.py", ["--runs", "5"], ["--runs", "3"]),
    "image": ("bench_image.py", ["--runs", "5"], ["--runs", "3"]),
    # [image] previous_running: a rollback is a health look and the switch, against a bare switch
    "image-warm": ("bench_image.py", ["--runs", "5", "--previous-running"], ["--runs", "3", "--previous-running"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    ap.add_argument("--only", help=f"comma-separated subset of {', '.join(SUITE)}")
    ap.add_argument("--markdown", help="also write the machine and the claims table as Markdown here")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(SUITE)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(SUITE)}")
    from tabulate import tabulate

    started = datetime.now(timezone.utc)
    mach = machine()
    mode = "quick" if args.quick else "full"
    print(f"occ-deploy benchmarks ({mode}), {started:%Y-%m-%d %H:%M} UTC")
    print(tabulate(mach, tablefmt="plain"))
    claims: list[Claim] = []
    failed: list[str] = []
    durations = {}
    with tempfile.TemporaryDirectory(prefix="occ-bench-claims-") as tmp:
        for name in names:
            script, full, quick = SUITE[name]
            out = Path(tmp) / f"{name}.json"
            argv = [sys.executable, str(HERE / script), *(quick if args.quick else full), "--claims-out", str(out)]
            print(f"\n=== {name}: {' '.join([Path(argv[1]).relative_to(REPO).as_posix(), *argv[2:-2]])}", flush=True)
            t = time.monotonic()
            rc = subprocess.run(argv, cwd=REPO).returncode
            durations[name] = time.monotonic() - t
            got = read_claims(out)
            claims += got
            # A missed target also exits 1; only a benchmark that wrote no claims failed to run.
            if rc != 0 and not got:
                failed.append(name)
                print(f"!!! {name} failed (exit {rc}) before stating any figure", flush=True)

    rows = [(c.bench, c.figure, c.value, c.target or "-", verdict(c.met)) for c in claims]
    rows += [(n, "benchmark did not complete", "-", "-", "FAILED") for n in failed]
    print(f"\n=== summary ({mode}; {sum(durations.values()) / 60:.1f} min: "
          + ", ".join(f"{n} {d:.0f}s" for n, d in durations.items()) + ")")
    print(tabulate(rows, headers=["benchmark", "figure", "value", "target", "met?"]))
    missed = [c for c in claims if c.met is False]
    print(f"\n{sum(c.met is True for c in claims)} target(s) met, {len(missed)} missed"
          + (f", {len(failed)} benchmark(s) failed" if failed else ""))
    if args.markdown:
        md = [f"{mode} run, {started:%Y-%m-%d} UTC, `python benchmarks/run.py{' --quick' if args.quick else ''}`", "",
              "| machine | |", "|---|---|", *(f"| {k} | {v} |" for k, v in mach), "",
              tabulate(rows, headers=["benchmark", "figure", "value", "target", "met?"], tablefmt="github"), ""]
        Path(args.markdown).write_text("\n".join(md))
    return 1 if missed or failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
