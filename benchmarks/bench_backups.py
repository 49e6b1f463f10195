"""The toolkit's verified backup against bare `pg_dump -Fc` + `pg_restore` on the same cluster.

    toolkit  deploy.backups.backup() then verify(): row counts inside pg_dump's snapshot,
             pg_dump --format=custom, SHA-256 and manifest sidecars; checksum check,
             pg_restore into a scratch database (rendered to SQL, one psql transaction),
             row counts compared, scratch database dropped
    bare     pg_dump -Fc to a file; CREATE DATABASE; pg_restore -d into it; DROP DATABASE

on a generated database (three tables, an index, ~incompressible text), default ~200 MB
on disk (`--size-mb 1024` for the 1 GB of the issue). Prints the size actually reached,
the median of the runs and the ratio toolkit/bare. The issue sets no target for it.

    python benchmarks/bench_backups.py [--size-mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, median, timed, write_claims  # noqa: E402

BYTES_PER_ROW = 215  # "Order" + "Event" heaps + indexes per Order row, measured at 200 MB; the real size is reported


def populate(cluster, db: str, size_mb: int) -> int:
    rows = max(1000, size_mb * 1024 * 1024 // BYTES_PER_ROW)
    cluster.execute('''
        CREATE TABLE "Shop" (id int PRIMARY KEY, domain text NOT NULL);
        INSERT INTO "Shop" SELECT g, 'shop' || g || '.myshopify.com' FROM generate_series(1, 500) g;
        CREATE TABLE "Order" (id bigint PRIMARY KEY, shop int NOT NULL REFERENCES "Shop"(id),
                              total numeric(12, 2) NOT NULL, note text NOT NULL, created timestamptz NOT NULL);
        CREATE TABLE "Event" (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL);
    ''', dbname=db)
    step = 200_000
    for lo in range(1, rows + 1, step):  # batches keep one statement's memory bounded
        hi = min(rows, lo + step - 1)
        cluster.execute(f'''
            INSERT INTO "Order" SELECT g, 1 + g % 500, (g % 100000) / 100.0,
                md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text),
                timestamptz '2026-01-01' + g * interval '1 second'
            FROM generate_series({lo}, {hi}) g;
            INSERT INTO "Event" (kind, payload) SELECT 'order.created', jsonb_build_object('order', g, 'h', md5(g::text))
            FROM generate_series({lo}, {hi}, 10) g;''', dbname=db)
    cluster.execute('CREATE INDEX "Order_shop_idx" ON "Order"(shop)', dbname=db)
    cluster.execute('VACUUM ANALYZE', dbname=db)
    return cluster.execute(f"SELECT pg_database_size('{db}')")[0][0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100 MB, 2 runs")
    ap.add_argument("--claims-out")
    args = ap.parse_args()
    if args.quick:
        args.size_mb, args.runs = min(args.size_mb, 100), min(args.runs, 2)
    from tabulate import tabulate

    from deploy import backups
    from deploy.testing.postgres import PostgresCluster

    work = Path(tempfile.mkdtemp(prefix="occ-bench-backups-"))
    cluster = PostgresCluster()
    try:
        url = cluster.create_database("bench_source")
        size = populate(cluster, "bench_source", args.size_mb)
        bin_dir = Path(cluster.tool("pg_dump")).parent
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        runs = {"toolkit": [], "bare": []}
        dump_sizes = {}

        def toolkit(i: int) -> None:
            b = backups.backup(url, work / "backups", "bench", "0" * 40, now=lambda: t0 + timedelta(seconds=i),
                               bin_dir=bin_dir)
            v = backups.verify(b.path, url, bin_dir=bin_dir)
            assert v.ok, v.mismatches
            dump_sizes["toolkit"] = b.path.stat().st_size

        def bare(i: int) -> None:
            out = work / f"bare{i}.dump"
            subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-f", str(out), "-d", url], check=True, capture_output=True)
            cluster.execute(f'CREATE DATABASE "bare_scratch{i}"')
            subprocess.run([str(bin_dir / "pg_restore"), "--no-owner", "-d", cluster.url_for(f"bare_scratch{i}"), str(out)],
                           check=True, capture_output=True)
            cluster.execute(f'DROP DATABASE "bare_scratch{i}" WITH (FORCE)')
            dump_sizes["bare"] = out.stat().st_size

        for i in range(args.runs):
            # Alternate which goes first, so neither always gets the warmer cache.
            order = (("toolkit", toolkit), ("bare", bare)) if i % 2 == 0 else (("bare", bare), ("toolkit", toolkit))
            for name, fn in order:
                runs[name].append(timed(lambda: fn(i)))
            for p in (work / "backups").rglob("*"):
                p.unlink() if p.is_file() else None
            for p in work.glob("bare*.dump"):
                p.unlink()
        major = cluster.major_version
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    tk, bb = median(runs["toolkit"]), median(runs["bare"])
    print(f"database {size / 1024 / 1024:.0f} MB on disk (requested {args.size_mb} MB), dump "
          f"{dump_sizes['toolkit'] / 1024 / 1024:.0f} MB, PostgreSQL {major}, median of {args.runs} runs")
    print(tabulate([["pg_dump -Fc + pg_restore into a scratch DB (baseline)", f"{bb:.2f}", "1.00x"],
                    ["toolkit backup + verify", f"{tk:.2f}", f"{tk / bb:.2f}x"]],
                   headers=["", "median s", "vs baseline"]))
    write_claims(args.claims_out, [claim("backups", f"backup+verify / pg_dump+pg_restore, {size / 1024 / 1024:.0f} MB DB",
                                         f"{tk / bb:.2f}x", "")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
