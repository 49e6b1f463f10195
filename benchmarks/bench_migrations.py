"""Benchmark the migration runner on a throwaway cluster; prints a table of medians and ratios.

    python benchmarks/bench_migrations.py [--repeat 5]

1. `status` over 1,000 applied migrations, minus the cost of connecting (measured alone).
   Target: under 0.3 s beyond the connection.
2. applying 200 small migrations with our runner (lock, one row and one transaction per
   migration) against `psql -1 -f` of their concatenation (bare SQL, one transaction, no
   bookkeeping) on the same cluster. Target: ratio <= 2x.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import claim, write_claims  # noqa: E402
from deploy import dburl  # noqa: E402
from deploy import migrations as M  # noqa: E402
from deploy.testing.postgres import PostgresCluster, write_migrations  # noqa: E402


def small(i: int) -> str:
    return (f'-- CreateTable\nCREATE TABLE "T{i}" (\n    "id" TEXT NOT NULL,\n    "n" INTEGER NOT NULL DEFAULT 0,\n\n'
            f'    CONSTRAINT "T{i}_pkey" PRIMARY KEY ("id")\n);\n\n'
            f'-- CreateIndex\nCREATE INDEX "T{i}_n_idx" ON "T{i}"("n");\n')


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
    from tabulate import tabulate

    cluster = PostgresCluster()
    major = cluster.major_version
    tmp = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    try:
        # 1. status over 1,000 migrations
        d1000 = write_migrations(tmp / "s", {f"{20200101000000 + i}_m{i}": f'CREATE TABLE "S{i}" ("id" int);\n'
                                             for i in range(1000)})
        url = cluster.create_database("status1000")
        M.migrate(url, d1000)
        import psycopg

        info = dburl.parse(url).conninfo()
        connect = [timed(lambda: psycopg.connect(info).close()) for _ in range(args.repeat)]
        status = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            report = M.status(url, d1000)
            status.append(time.perf_counter() - t)
            assert report.up_to_date and len(report.applied) == 1000

        # 2. 200 small migrations: ours vs psql -1 -f
        d200 = write_migrations(tmp / "a", {f"{20200101000000 + i}_t{i}": small(i) for i in range(200)})
        concat = tmp / "all.sql"
        concat.write_text("".join(small(i) for i in range(200)))
        psql = cluster.tool("psql")
        ours, bare = [], []
        for r in range(args.repeat):
            u1 = cluster.create_database(f"ours{r}")
            ours.append(timed(lambda: M.migrate(u1, d200)))
            u2 = cluster.create_database(f"bare{r}")
            argv = [psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(concat), "-d", u2]
            bare.append(timed(lambda: subprocess.run(argv, check=True, capture_output=True)))
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    beyond = med(status) - med(connect)
    rows = [
        ["connect (baseline)", f"{med(connect) * 1000:.1f} ms", "", ""],
        ["db.status, 1,000 migrations", f"{med(status) * 1000:.1f} ms",
         f"{beyond * 1000:.1f} ms beyond connect", "target < 300 ms: " + ("met" if beyond < 0.3 else "MISSED")],
        ["psql -1 -f, 200 migrations concatenated", f"{med(bare) * 1000:.1f} ms", "1.00x", ""],
        ["db.migrate, 200 migrations", f"{med(ours) * 1000:.1f} ms", f"{med(ours) / med(bare):.2f}x",
         "target <= 2x: " + ("met" if med(ours) / med(bare) <= 2 else "MISSED")],
    ]
    print(f"median of {args.repeat} runs, PostgreSQL {major}, fsync off")
    print(tabulate(rows, headers=["case", "median", "vs baseline", "target"]))
    ratio = med(ours) / med(bare)
    write_claims(args.claims_out, [
        claim("migrations", "db.status over 1,000 migrations, beyond connect", f"{beyond * 1000:.0f} ms", "< 300 ms",
              beyond < 0.3),
        claim("migrations", "db.migrate 200 / psql -1 -f", f"{ratio:.2f}x", "<= 2x", ratio <= 2),
    ])


if __name__ == "__main__":
    main()
