"""Parallel gzip for packing artifacts: isal's threaded igzip (what deploy.build.packing uses)
against the hand-written parallel writer it replaced and the standard library's gzip.

The same uncompressed tar stream of a sizeable tree (default: this Python's standard
library folder, source and bytecode; `--tree` for another, e.g. an app's node_modules) is
compressed by each side at level 1 (the first `--max-mb` MB of it), written in the same 1 MiB cuts, in memory (no disk in
the timing). Reported: median seconds per side, the ratios against isal, the compressed
sizes, and whether isal's output is byte-identical across 1, 2 and 4 threads (required:
an artifact's SHA-256 must not depend on the machine that packed it). A whole `pack()` of
the tree is timed too, for reference.

    python benchmarks/bench_pack.py [--runs 3] [--tree PATH]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import io
import os
import statistics
import struct
import sys
import sysconfig
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, write_claims  # noqa: E402
from deploy.build import packing  # noqa: E402

CUT = 1 << 20
THREADS = max(1, min(4, os.cpu_count() or 1))   # what packing uses


class HandWrittenGzip:
    """The writer deploy.build used before isal: 1 MiB blocks deflated by zlib on a thread
    pool, each primed with the 32 KiB before it and ended with a sync flush (pigz's way)."""

    BLOCK = 1 << 20
    WINDOW = 1 << 15

    def __init__(self, raw, compresslevel: int, workers: int):
        self._raw, self._level, self._workers = raw, compresslevel, workers
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._done: collections.deque = collections.deque()
        self._pending: list[bytes] = []
        self._pending_size = self._crc = self._size = 0
        self._tail = b""
        raw.write(b"\037\213\010\000" + struct.pack("<L", 0) + b"\004\377")

    def write(self, data) -> int:
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        self._size += len(data)
        if self._pending_size >= self.BLOCK:
            joined = b"".join(self._pending)
            whole = len(joined) - len(joined) % self.BLOCK
            for i in range(0, whole, self.BLOCK):
                self._hand_over(joined[i:i + self.BLOCK], last=False)
            self._pending = [joined[whole:]] if whole < len(joined) else []
            self._pending_size = len(joined) - whole
        return len(data)

    def _hand_over(self, block: bytes, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._done.append(self._pool.submit(_deflate, self._level, self._tail, block, last))
        self._tail = block[-self.WINDOW:]
        while len(self._done) > 2 * self._workers:
            self._raw.write(self._done.popleft().result())

    def close(self) -> None:
        self._hand_over(b"".join(self._pending), last=True)
        while self._done:
            self._raw.write(self._done.popleft().result())
        self._raw.write(struct.pack("<LL", self._crc, self._size & 0xFFFFFFFF))
        self._pool.shutdown(wait=True)


def _deflate(level: int, primer: bytes, block: bytes, last: bool) -> bytes:
    args = (level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY)
    comp = zlib.compressobj(*args, primer) if primer else zlib.compressobj(*args)
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def tar_stream(tree: Path, max_mb: int) -> bytes:
    """The tree as an uncompressed tar, files in path order up to `max_mb` MB of content."""
    out = io.BytesIO()
    budget = max_mb << 20
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(tree):
            dirs.sort()
            for name in sorted(files):
                p = os.path.join(top, name)
                if os.path.isfile(p) and not os.path.islink(p) and budget > 0:
                    tar.add(p, arcname=os.path.relpath(p, tree))
                    budget -= os.path.getsize(p)
    return out.getvalue()


def compress(make, data: bytes) -> bytes:
    out = io.BytesIO()
    w = make(out)
    for i in range(0, len(data), CUT):
        w.write(data[i:i + CUT])
    w.close()
    return out.getvalue()


SIDES = {
    "isal (packing.gzip_writer)": lambda out: packing.gzip_writer(out, compresslevel=1, threads=THREADS),
    "hand-written parallel zlib": lambda out: HandWrittenGzip(out, compresslevel=1, workers=THREADS),
    "stdlib gzip": lambda out: gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tree", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--max-mb", type=int, default=100, help="content of the tree to take, in MB")
    ap.add_argument("--claims-out")
    args = ap.parse_args()
    tree = Path(args.tree)
    data = tar_stream(tree, args.max_mb)
    print(f"tree: {tree} ({len(data) / 1e6:.0f} MB as tar), level 1, {THREADS} thread(s), {os.cpu_count()} core(s)")

    times: dict[str, list[float]] = {name: [] for name in SIDES}
    sizes: dict[str, int] = {}
    for _ in range(args.runs):
        for name, make in SIDES.items():   # interleaved: a slow moment of the machine hits every side
            t = time.perf_counter()
            out = compress(make, data)
            times[name].append(time.perf_counter() - t)
            sizes[name] = len(out)
            assert gzip.decompress(out) == data, name
    same = len({compress(lambda o, n=n: packing.gzip_writer(o, compresslevel=1, threads=n), data)
                for n in (1, 2, 4)}) == 1

    with tempfile.TemporaryDirectory() as tmp:   # the same files, unpacked, through the whole pack()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(Path(tmp) / "app", filter="data")
        t = time.perf_counter()
        packing.pack(Path(tmp) / "app", tmp, git_sha="0" * 40, built_at="2026-01-01T00:00:00Z", release_id="bench")
        whole = time.perf_counter() - t

    base = statistics.median(times["isal (packing.gzip_writer)"])
    print(f"{'side':30} {'median s':>9} {'x isal':>7} {'MB out':>7}")
    for name in SIDES:
        m = statistics.median(times[name])
        print(f"{name:30} {m:9.2f} {m / base:7.2f} {sizes[name] / 1e6:7.1f}")
    print(f"isal byte-identical across 1, 2, 4 threads: {same}")
    print(f"whole pack() of the tree (walk, hash, tar, isal): {whole:.2f} s")

    hand = statistics.median(times["hand-written parallel zlib"]) / base
    std = statistics.median(times["stdlib gzip"]) / base
    write_claims(args.claims_out, [
        claim("pack", "hand-written writer / isal", f"{hand:.2f}x", ">= 1x (isal no slower)", hand >= 1.0),
        claim("pack", "stdlib gzip / isal", f"{std:.2f}x"),
        claim("pack", "isal bytes across 1, 2, 4 threads", "identical" if same else "DIFFER", "identical", same),
    ])


if __name__ == "__main__":
    main()
