"""Fast releases of the real React Router example (examples/shopify-app), issue 16:

- build:    a new commit with an unchanged lockfile, through deploy.build.build with the
            dependency cache filled by the previous commit's build, against a bare
            `npm run build` in an already-installed tree (target <= 1.3x);
- release:  that commit to 1, 4 and 16 sshd hosts holding the previous commit's release:
            the toolkit (delta upload) against `rsync -a --link-dest` over ssh of the same
            unpacked tree plus the same switch (target <= 1.2x), and against the toolkit
            sending the full artifact (target >= 10x faster at 16 hosts). Every side runs
            the same restart hook and health command (`true`, `test -f package.json`), so
            the figures compare getting the tree there and switching;
            For reference, the floor of any per-file hard-link delta, measured: reaching
            the hosts and reading their state, plus the tree hard-linked and an old tree
            removed once per host, all hosts at once;
- rollback: the toolkit's rollback on 16 hosts against a bare parallel switch + the same
            restart (target <= 1.1x), and, for reference, against a bare loop that also
            takes and drops a lock around the switch (three commands per host);
- requests: a steady request loop through nginx (Debian's package; upstreams = 4 sshd
            hosts running the app under the toolkit's supervisor; passive health checks,
            proxy_next_upstream) while the toolkit releases: all at once, for reference, then
            `--request-runs` (5) rolling releases, one host per batch, each drained from nginx
            first (hosts.balancer); the worst run is the figure (target: 0 failed requests).

Ratios, not absolute times, are the result: every side runs on this machine in the same run,
and the disk is flushed (outside the timing) before every timed side.
The first build runs `npm ci` of the example's pinned lockfile (about a minute here).

    python benchmarks/bench_fast.py [--runs 3] [--hosts 1,4,16] [--request-runs 5]
                                    [--only build,release,rollback,requests]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, on_each, print_claims, ssh_argv, ssh_options, write_claims  # noqa: E402
from deploy import build as B  # noqa: E402
from deploy import hosts as H  # noqa: E402
from deploy import proc, source  # noqa: E402
from deploy.testing.shopify_app import copy_shopify_app  # noqa: E402
from deploy.testing.stage import free_port  # noqa: E402
from deploy.testing.sshd import SshdFarm  # noqa: E402

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    r = subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True, env=proc.child_env())
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr}")
    return r.stdout.strip()


def commit_change(repo: Path, n: int) -> str:
    """A new commit that changes the app's landing page, not its dependencies."""
    page = repo / "app" / "routes" / "_index.jsx"
    page.write_text(page.read_text().replace("Orders, decisions", f"Orders (rev {n}), decisions", 1)
                    if n == 1 else page.read_text().replace(f"(rev {n - 1})", f"(rev {n})"))
    git(repo, "commit", "-qam", f"landing page rev {n}")
    return git(repo, "rev-parse", "HEAD")


class Work:
    def __init__(self, root: Path):
        self.root = root
        self.repo = copy_shopify_app(root / "repo")
        git(self.repo, "init", "-q")
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-qm", "app")
        self.shas = [git(self.repo, "rev-parse", "HEAD")]
        self.store = root / "artifacts"
        self.cache = root / "cache"
        self.arts: list = []

    def build(self, sha: str):
        src = source.checkout(self.repo, sha, self.root / "src")
        return B.build(src, sha, self.store, deps_cache=self.cache, now=source.commit_time(self.repo, sha))


# ---------------------------------------------------------------- build

def bench_build(w: Work, runs: int) -> list:
    t = time.perf_counter()
    first = w.build(w.shas[0])
    print(f"first build (npm ci, build, prune, fill the cache): {time.perf_counter() - t:.1f}s", flush=True)
    w.arts.append(first.artifact)
    tool, bare = [], []
    (key,) = [d for d in w.cache.iterdir() if not d.name.startswith(".")]
    installed = w.root / "installed"
    for i in range(runs):
        sha = commit_change(w.repo, len(w.shas))
        w.shas.append(sha)
        # The baseline: the same commit's sources with its dependencies already installed,
        # prepared first and flushed to disk, so neither side pays for the other's writes.
        shutil.rmtree(installed, ignore_errors=True)
        subprocess.run([*GIT, "-C", str(w.repo), "worktree", "add", "-q", "--detach", str(installed), sha],
                       check=True, capture_output=True)
        subprocess.run(["cp", "-a", str(key / "full" / "node_modules"), str(installed / "node_modules")], check=True)
        os.sync()
        t = time.perf_counter()
        r = w.build(sha)
        tool.append(time.perf_counter() - t)
        assert r.commands and r.commands[0].startswith("(dependency cache"), r.commands
        w.arts.append(r.artifact)
        os.sync()
        env = B.build_environment(os.environ, extra={"npm_config_update_notifier": "false"})
        t = time.perf_counter()
        rr = proc.run(["npm", "run", "build"], cwd=installed, env=env, timeout=900)
        bare.append(time.perf_counter() - t)
        assert rr.ok, rr.tail(20)
        subprocess.run([*GIT, "-C", str(w.repo), "worktree", "remove", "--force", str(installed)], capture_output=True)
        print(f"build run {i + 1}: toolkit {tool[-1]:.2f}s  bare npm run build {bare[-1]:.2f}s", flush=True)
    ratio = statistics.median(tool) / statistics.median(bare)
    print(f"build of a new commit, unchanged lockfile: toolkit {statistics.median(tool):.2f}s, "
          f"bare npm run build {statistics.median(bare):.2f}s -> {ratio:.2f}x", flush=True)
    return [claim("fast", "build, new commit, same lockfile / bare npm run build", f"{ratio:.2f}x", "<= 1.3x",
                  ratio <= 1.3)]


# ---------------------------------------------------------------- release

def unpack_tree(art, dest: Path) -> Path:
    if not dest.exists():
        dest.mkdir(parents=True)
        with tarfile.open(art.path) as tar:
            tar.extractall(dest, filter="tar")
    return dest


def switch_script(deploy_to: str, rid: str) -> str:
    """What the bare sides run after the tree is there: RELEASE, the shared link, the switch,
    then the same restart hook and health command as the toolkit."""
    rel = f"{deploy_to}/releases/{rid}"
    return (f"echo {rid} > {rel}/RELEASE && ln -sfn {deploy_to}/shared/.env {rel}/.env"
            f" && ln -sfn releases/{rid} {deploy_to}/.cur && mv -T {deploy_to}/.cur {deploy_to}/current"
            f" && cd {deploy_to}/current && true && test -f package.json")


def rsync_release(farm, hs, sub: str, tree: Path, rid: str, prev: str | None) -> None:
    def one(h):
        d = str(h.root / sub)
        link = [f"--link-dest={d}/releases/{prev}"] if prev else []
        r = subprocess.run(["rsync", "-a", "--delete", *link, "-e", " ".join([*ssh_options(farm), "-p", str(h.port)]),
                            f"{tree}/", f"{h.user}@{h.host}:{d}/releases/{rid}/"], capture_output=True, text=True)
        if r.returncode == 0:
            r = subprocess.run([*ssh_argv(farm, h), switch_script(d, rid)],
                               capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{h.name}: {r.stderr[-500:]}")

    on_each(hs, one)


def keep_current_and(hs, sub: str, also: str | None = None) -> None:
    """Outside the timing: keep the current release (and `also`), so disks stay small."""
    for h in hs:
        d = h.root / sub / "releases"
        cur = os.readlink(h.root / sub / "current").split("/")[-1] if (h.root / sub / "current").is_symlink() else None
        for p in d.iterdir() if d.is_dir() else []:
            if p.name not in (cur, also):
                shutil.rmtree(p, ignore_errors=True)


def bench_release(w: Work, farm, counts: list[int], runs: int, do_rollback: bool) -> list:
    claims = []
    trees = [unpack_tree(a, w.root / "trees" / a.sha256[:16]) for a in w.arts[:2]]
    size = w.arts[1].path.stat().st_size
    print(f"artifact: {size / 1e6:.1f} MB packed, {sum(1 for _ in trees[1].rglob('*'))} entries", flush=True)
    seq = iter(range(1, 10_000))
    for n in counts:
        hs = farm.hosts[:n]
        for h in hs:
            for sub in ("toolkit", "full", "rsync"):
                h.write(f"bench/{sub}/shared/.env", "PORT=1\n")
            h.write("bench/rsync/releases/.keep", "")
        common = dict(restart="true", health_command="test -f package.json", max_parallel=max(16, n),
                      keep_releases=2, health_timeout=10.0)
        delta = farm.hosts_section(hs, deploy_to=farm.deploy_to("bench/toolkit"), **common)
        full = farm.hosts_section(hs, deploy_to=farm.deploy_to("bench/full"), delta=False, **common)
        times = {"toolkit": [], "rsync": [], "full": []}
        sent = []
        prev_rsync = None
        for i in range(runs + 1):   # run 0: the first release of the previous commit (whole artifact)
            k = 0 if i % 2 == 0 else 1
            rid = f"20240601{n:02d}{next(seq):04d}-{w.arts[k].git_sha[:7]}"
            art = dataclasses.replace(w.arts[k], release_id=rid)
            # Every side starts with the disk flushed (outside the timing): the 16 hosts share
            # one disk here, and a side would otherwise pay for the writes of the one before.
            os.sync()
            t = time.perf_counter()
            res = H.release(delta, art, run_id=f"d-{n}-{i}")
            dt_delta = time.perf_counter() - t
            os.sync()
            t = time.perf_counter()
            H.release(full, art, run_id=f"f-{n}-{i}")
            dt_full = time.perf_counter() - t
            os.sync()
            t = time.perf_counter()
            rsync_release(farm, hs, "bench/rsync", trees[k], rid, prev_rsync)
            dt_rsync = time.perf_counter() - t
            prev_rsync = rid
            rehashing = sum(1 for r in res if re.search(r"\((?!0 )\d+ re-hashed\)", r.transfer))
            print(f"{n:>3} hosts, run {i}: toolkit {dt_delta:.3f}s ({res[0].transfer}; {rehashing} of {n} host(s) "
                  f"re-hashed linked files)  full {dt_full:.3f}s  rsync {dt_rsync:.3f}s", flush=True)
            if i:
                assert all(r.transfer.startswith("delta from") for r in res), [r.transfer for r in res]
                times["toolkit"].append(dt_delta)
                times["full"].append(dt_full)
                times["rsync"].append(dt_rsync)
                sent.append(statistics.mean(r.uploaded for r in res))
            for sub in ("full", "rsync"):
                keep_current_and(hs, f"bench/{sub}")
        med = {m: statistics.median(v) for m, v in times.items()}
        tr, ft = med["toolkit"] / med["rsync"], med["full"] / med["toolkit"]
        if n == max(counts):
            floor = delta_floor(w, delta, trees[1], n)
            claims.append(claim("fast", f"full upload / the least any per-file hard-link delta costs @{n} hosts "
                                "(reference)", f"{med['full'] / floor:.1f}x"))
            print(f"{n:>3} hosts: full upload / that floor = {med['full'] / floor:.1f}x: the most any delta that "
                  "hard-links unchanged files and keeps a bounded number of releases could reach here", flush=True)
        print(f"{n:>3} hosts: toolkit {med['toolkit']:.3f}s (sent {statistics.median(sent) / 1e3:.0f} kB/host of "
              f"{size / 1e6:.1f} MB)  rsync {med['rsync']:.3f}s  full artifact {med['full']:.3f}s  "
              f"toolkit/rsync {tr:.2f}x  full/toolkit {ft:.1f}x", flush=True)
        claims.append(claim("fast", f"release new commit, toolkit/rsync --link-dest @{n} hosts", f"{tr:.2f}x",
                            "<= 1.2x", tr <= 1.2))
        claims.append(claim("fast", f"release new commit, full upload/toolkit @{n} hosts", f"{ft:.1f}x",
                            ">= 10x" if n == 16 else "", (ft >= 10) if n == 16 else None))
        if do_rollback and n == max(counts):
            claims += bench_rollback(farm, hs, delta, runs)
    return claims


def delta_floor(w: Work, section, tree: Path, n: int) -> float:
    """The least a release by per-file hard links costs on n hosts here, measured, not
    modelled: reaching every host and reading its state (H.releases: connect + one command),
    plus n trees hard-linked at once (`cp -al`, one process per host, as n hosts would) and n
    old trees of the same shape removed at once (the pruning every release pays, the full
    upload too). No lock, no check, no switch: the toolkit's delta cannot get below it."""
    def parallel(argvs) -> float:
        os.sync()
        t = time.perf_counter()
        procs = [subprocess.Popen(a) for a in argvs]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError(f"floor step failed: {argvs[0]}")
        return time.perf_counter() - t

    base = w.root / "floor"
    reach, links, removes = [], [], []
    for _ in range(3):
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir()
        os.sync()
        t = time.perf_counter()
        H.releases(section)
        reach.append(time.perf_counter() - t)
        links.append(parallel([["cp", "-al", str(tree), str(base / f"new-{i}")] for i in range(n)]))
        removes.append(parallel([["rm", "-rf", str(base / f"new-{i}")] for i in range(n)]))
    shutil.rmtree(base, ignore_errors=True)
    parts = [statistics.median(x) for x in (reach, links, removes)]
    print(f"{n:>3} hosts: the floor of a per-file hard-link delta here: reach {n} hosts and read their state "
          f"{parts[0]:.3f}s + {n} trees hard-linked at once (cp -al) {parts[1]:.3f}s + {n} old trees removed at "
          f"once {parts[2]:.3f}s = {sum(parts):.3f}s", flush=True)
    return sum(parts)


def bench_rollback(farm, hs, section, runs: int) -> list:
    tool, bare, locked = [], [], []
    sub = "bench/toolkit"

    def locked_switch(h, target):
        # The least a rollback that can switch every host back needs: the lock taken on every
        # host before any switches (here: per host), the switch and restart, then the unlock.
        d = str(h.root / sub)
        with h.connection() as c:
            c.run(f"mkdir {d}/.bench-lock", hide=True, in_stream=False)
            c.run(f"ln -sfn releases/{target} {d}/.cur && mv -T {d}/.cur {d}/current"
                  f" && cd {d}/current && true && test -f package.json", hide=True, in_stream=False)
            c.run(f"rmdir {d}/.bench-lock", hide=True, in_stream=False)

    for i in range(runs):
        rels = H.releases(section)[0]
        newest, prev = rels.releases[-1], rels.releases[-2]
        os.sync()
        t = time.perf_counter()
        H.rollback(section, run_id=f"rb-{i}")
        tool.append(time.perf_counter() - t)
        H.rollback(section, to=newest, run_id=f"fw-{i}")

        def one(h, target):
            d = str(h.root / sub)
            with h.connection() as c:
                c.run(f"ln -sfn releases/{target} {d}/.cur && mv -T {d}/.cur {d}/current"
                      f" && cd {d}/current && true && test -f package.json", hide=True, in_stream=False)

        def bare_switch(target):
            on_each(hs, lambda h: one(h, target))

        t = time.perf_counter()
        bare_switch(prev)
        bare.append(time.perf_counter() - t)
        bare_switch(newest)
        t = time.perf_counter()
        on_each(hs, lambda h: locked_switch(h, prev))
        locked.append(time.perf_counter() - t)
        on_each(hs, lambda h: locked_switch(h, newest))

    ratio = statistics.median(tool) / statistics.median(bare)
    lratio = statistics.median(tool) / statistics.median(locked)
    print(f"rollback @{len(hs)} hosts: toolkit {statistics.median(tool):.3f}s, bare parallel switch + restart "
          f"{statistics.median(bare):.3f}s -> {ratio:.2f}x; bare lock, switch + restart, unlock (three commands) "
          f"{statistics.median(locked):.3f}s -> {lratio:.2f}x", flush=True)
    return [claim("fast", f"rollback @{len(hs)} hosts / bare parallel switch + restart", f"{ratio:.2f}x", "<= 1.1x",
                  ratio <= 1.1),
            claim("fast", f"rollback @{len(hs)} hosts / bare lock, switch + restart, unlock", f"{lratio:.2f}x")]


# ---------------------------------------------------------------- requests through nginx

def bench_requests(w: Work, farm, runs: int) -> list:
    """Requests through nginx (passive checks, max_fails=1 fail_timeout=2s) while the toolkit
    releases to the 4 hosts behind it: once all at once (for reference), then `runs` rolling
    releases one host per batch, each batch drained from nginx first (hosts.balancer: the
    host marked down and nginx reloaded, returning once no old worker is left; 0.5 s for
    requests in flight) and put back once healthy. Reported: the worst rolling run."""
    from deploy.testing.balancer import Loop, Nginx

    hs = farm.hosts[:4]
    ports = [free_port() for _ in hs]
    for h in hs:
        h.write("bench/lb/shared/.env", f"DATABASE_URL=file:{h.root}/bench/lb/shared/sessions.sqlite\n"
                                         "HOST=127.0.0.1\nNODE_ENV=production\n")
    from deploy.config import AppSection

    app = AppSection(health_path="/", ready_timeout=60.0)
    base = farm.hosts_section(hs, deploy_to=farm.deploy_to("bench/lb"), app_ports=tuple(ports), supervisor="sh",
                              keep_releases=2, health_timeout=60.0)
    lb = Nginx(w.root / "nginx", [f"127.0.0.1:{p}" for p in ports], free_port(), max_fails=1, fail_timeout=2.0)
    claims = []
    seq = iter(range(1, 10_000))
    try:
        lb.start()
        first = dataclasses.replace(w.arts[0], release_id=f"2024070100{next(seq):04d}-{w.arts[0].git_sha[:7]}")
        H.release(base, first, run_id="lb-0", app=app)
        modes = {"all": (dataclasses.replace(base, rollout="all"), 1),
                 "rolling": (dataclasses.replace(base, rollout="rolling", batch_size=1, balancer=lb.balancer,
                                                 drain_seconds=0.5), runs)}
        results = {}
        for mode, (section, n) in modes.items():
            per_run = []
            errors: list[str] = []
            for i in range(n):
                k = 1 if i % 2 == 0 else 0
                art = dataclasses.replace(w.arts[k], release_id=f"2024070100{next(seq):04d}-{w.arts[k].git_sha[:7]}")
                # nginx leaves a server it saw failing out for fail_timeout: the all-at-once run
                # before would otherwise still empty its pool when the next run starts.
                time.sleep(lb.fail_timeout + 1.0)
                with Loop(lb.port) as loop:
                    time.sleep(0.5)
                    H.release(section, art, run_id=f"lb-{mode}-{i}", app=app)
                    time.sleep(0.5)
                per_run.append((loop.failed, loop.sent))
                errors += loop.errors
            results[mode] = per_run
            print(f"requests during {n} release(s), rollout={mode}: failed/sent per run "
                  + ", ".join(f"{f}/{s}" for f, s in per_run)
                  + (f" ({', '.join(sorted(set(errors)))})" if errors else ""), flush=True)
        (fa, sa), = results["all"]
        worst = max(results["rolling"], key=lambda x: (x[0], -x[1]))
        claims.append(claim("fast", "failed requests during a release via nginx, all at once", f"{fa}/{sa}"))
        claims.append(claim("fast", f"failed requests during a rolling release via nginx (batch 1, drained), "
                                    f"worst of {runs}", f"{worst[0]}/{worst[1]}", "0", worst[0] == 0))
    finally:
        lb.stop()
        for h in hs:
            try:
                with h.connection() as c:
                    c.run(f"{h.root}/bench/lb/bin/app stop", hide=True, warn=True, in_stream=False)
            except Exception:  # noqa: BLE001 - best effort; the farm's reset kills what is left
                pass
    return claims


PACKAGES = {"rsync": "rsync", "nginx": "nginx-light"}   # tool -> Debian package


def _have(tool: str) -> bool:
    return bool(shutil.which(tool)) or os.path.exists(f"/usr/sbin/{tool}")


def tools_ready() -> bool:
    """rsync (the anchor) and nginx (the balancer): installed with apt when missing and this
    runs as root on Debian, as scripts/deploy/test does for the suite's parts; else named."""
    missing = [PACKAGES[t] for t in PACKAGES if not _have(t)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing with apt: {' '.join(missing)}", flush=True)
        env = {**proc.child_env(), "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=False)
        missing = [PACKAGES[t] for t in PACKAGES if not _have(t)]
    if missing or not _have("npm"):
        print(f"missing: {' '.join(missing + ([] if _have('npm') else ['nodejs npm']))} "
              "(install them with your package manager, then run again)", file=sys.stderr)
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hosts", default="1,4,16")
    ap.add_argument("--only", default="build,release,rollback,requests")
    ap.add_argument("--request-runs", type=int, default=5, help="rolling releases under load; the worst is reported")
    ap.add_argument("--claims-out")
    args = ap.parse_args()
    only = set(args.only.split(","))
    counts = [int(x) for x in args.hosts.split(",")]
    if not tools_ready():
        return 2
    root = Path(tempfile.mkdtemp(prefix="occ-bench-fast-"))
    claims: list = []
    farm = None
    try:
        w = Work(root)
        claims += bench_build(w, max(1, args.runs))
        write_claims(args.claims_out, claims)
        if only & {"release", "rollback", "requests"}:
            farm = SshdFarm(max(counts + [4]))
            if "release" in only:
                claims += bench_release(w, farm, counts, max(1, args.runs), "rollback" in only)
                write_claims(args.claims_out, claims)
            if "requests" in only:
                claims += bench_requests(w, farm, max(1, args.request_runs))
        write_claims(args.claims_out, claims)
        return print_claims(claims)
    finally:
        write_claims(args.claims_out, claims)
        if farm is not None:
            farm.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
