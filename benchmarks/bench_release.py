"""Release a ~3 MB artifact to 1, 4 and 16 real sshd hosts and compare:

- toolkit:    deploy.hosts.release (lock, checksum, shared links, barrier, health, prune)
- sequential: a plain Fabric loop, one host after the other
- parallel:   a bare Fabric loop with a thread per host

All three do the same work per host: connect, upload, unpack into releases/<id>, switch
`current` (temp link + mv -T), run bin/restart (which returns once the app answers).
Reported: the median wall time of each, and the ratios toolkit/parallel (target <= 1.15)
and sequential/toolkit (target >= 1.8 at 16 hosts). Ratios, not absolute times, are the
result: both sides run on this machine in the same run.

    python benchmarks/bench_release.py [--runs 5] [--hosts 1,4,16] [--mb 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy import hosts as H  # noqa: E402
from deploy.testing.sshd import SshdFarm, make_artifact  # noqa: E402

METHODS = ("toolkit", "sequential", "parallel")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_release(host, deploy_to: str, artifact) -> None:
    """The same steps as the toolkit, with nothing around them."""
    rid = artifact.release_id
    rel = f"{deploy_to}/releases/{rid}"
    upload = f"{deploy_to}/{rid}.tar.gz"
    with host.connection() as c:
        c.put(str(artifact.path), upload)
        c.run(H.sh("mkdir", "-p", rel) + " && " + H.sh("tar", "-xzf", upload, "-C", rel)
              + f" && echo {rid} > {rel}/RELEASE && ln -s {deploy_to}/shared/.env {rel}/.env"
              + f" && ln -sfn releases/{rid} {deploy_to}/.cur && mv -T {deploy_to}/.cur {deploy_to}/current"
              + f" && rm -f {upload}", hide=True, in_stream=False)
        c.run(f"cd {deploy_to}/current && bin/restart", hide=True, in_stream=False)


def run_sequential(hs, sub, artifact):
    for h in hs:
        bare_release(h, str(h.root / sub), artifact)


def run_parallel(hs, sub, artifact):
    errors = []

    def one(h):
        try:
            bare_release(h, str(h.root / sub), artifact)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(h,)) for h in hs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def prune_locally(hs, sub):
    """Outside the timing: keep only the current release, so disks stay small for every method."""
    for h in hs:
        d = h.root / sub / "releases"
        cur = os.readlink(h.root / sub / "current").split("/")[-1] if (h.root / sub / "current").is_symlink() else None
        for p in d.iterdir() if d.is_dir() else []:
            if p.name != cur:
                shutil.rmtree(p, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hosts", default="1,4,16")
    ap.add_argument("--mb", type=float, default=3.0)
    args = ap.parse_args()
    counts = [int(x) for x in args.hosts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    farm = SshdFarm(max(counts))
    try:
        rows = []
        for n in counts:
            hs = farm.hosts[:n]
            ports = {}
            for m in METHODS:
                for h in hs:
                    ports[(m, h.port)] = p = free_port()
                    h.write(f"bench/{m}/shared/.env", f"PORT={p}\n")
            section = farm.hosts_section(
                hs, deploy_to=farm.deploy_to("bench/toolkit"), restart="bin/restart", max_parallel=max(16, n),
                keep_releases=2, health_timeout=10.0,
                health_urls=tuple(f"http://127.0.0.1:{ports[('toolkit', h.port)]}/RELEASE" for h in hs))
            times = {m: [] for m in METHODS}
            for i in range(args.runs + 1):  # run 0 warms up (first release, cold caches)
                rid = f"2024050112{n:02d}{i:02d}-bench{n:02d}"
                art = make_artifact(work, rid, padding_bytes=int(args.mb * 1024 * 1024))
                for m in METHODS:
                    t0 = time.perf_counter()
                    if m == "toolkit":
                        H.release(section, art, run_id=f"bench-{n}-{i}")
                    elif m == "sequential":
                        run_sequential(hs, f"bench/{m}", art)
                    else:
                        run_parallel(hs, f"bench/{m}", art)
                    dt = time.perf_counter() - t0
                    if i:
                        times[m].append(dt)
                    prune_locally(hs, f"bench/{m}")
                art.path.unlink()
            med = {m: statistics.median(v) for m, v in times.items()}
            rows.append((n, med["toolkit"], med["sequential"], med["parallel"],
                         med["toolkit"] / med["parallel"], med["sequential"] / med["toolkit"]))
            print(f"{n:>3} hosts: toolkit {med['toolkit']:.3f}s  sequential {med['sequential']:.3f}s  "
                  f"parallel {med['parallel']:.3f}s", flush=True)
        from tabulate import tabulate

        print()
        print(f"median of {args.runs} runs, {args.mb:g} MB artifact")
        print(tabulate([(n, f"{t:.3f}", f"{s:.3f}", f"{p:.3f}", f"{tp:.2f}x", f"{st:.2f}x")
                        for n, t, s, p, tp, st in rows],
                       headers=["hosts", "toolkit s", "sequential s", "parallel s",
                                "toolkit/parallel (<=1.15)", "sequential/toolkit (>=1.8 @16)"]))
        last = rows[-1]
        ok = all(r[4] <= 1.15 for r in rows) and (last[0] < 16 or last[5] >= 1.8)
        print("targets met" if ok else "targets NOT met")
        return 0 if ok else 1
    finally:
        farm.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
