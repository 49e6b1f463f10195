"""Build the React Router Shopify example (examples/shopify-app) and compare:

- bare:     `npm ci && npm run build` in a fresh copy of the app: what a team runs by hand
- toolkit:  the toolkit's first build of a commit, as the promote flow's build step does
            it: `git archive` of the commit (deploy.source.checkout), the release
            contract's commands in that checkout, the artifact packed and indexed by commit
- rebuild:  the toolkit asked again for the same commit: the stored artifact is verified
            and reused, npm does not run

Both sides start from a fresh copy (no node_modules, no build/) of the same commit, with
the same warm npm cache, in the same run. Reported: median wall time of each, the ratio
toolkit/bare (what the artifact costs on top of the build), and whether the rebuild was
reused (target: reused, no command ran). Not a timed test: ratios and reuse are the result.

The same figures, and the warm ones, for the realistic app (deploy.testing.realapp: npm
workspaces with an extension, ~860 packages, ~480 MB installed, Prisma stand-ins), against
the bare tools on the same machine in the same run:

- cold:  the toolkit's first build with an empty dependency cache and artifact store, against
         `npm ci && npm run build && npm prune --omit=dev` in a fresh copy (target <= 1.15x)
- warm:  the toolkit's build of a new commit with the same lockfile (one source file changed),
         against `npm run build` in an installed copy (target <= 1.3x) and against
         `npm run build && npm prune --omit=dev` (target <= 1.1x); the pack's counts say
         whether the dependency member was reused and how many files were read

npm's cache is warmed once per lockfile (realapp.warm_install), so no side downloads.

    python benchmarks/bench_build.py [--runs 3] [--app example|realistic|both] [--warm-runs 5] [--cold-runs 2]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, write_claims  # noqa: E402
from deploy.testing.shopify_app import copy_shopify_app, node_env, npm  # noqa: E402


def git_repo(app: Path) -> str:
    """Make `app` its own git repository with one commit (as a team's app is); its SHA."""
    env = node_env(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "app"]):
        subprocess.run(argv, cwd=app, env=env, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=app, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def bare(app: Path) -> None:
    npm(app, "ci")
    npm(app, "run", "build")


def toolkit(app: Path, sha: str, store: Path):
    """What the promote flow's build step does: the commit's sources (git archive, once),
    then the build of that checkout, or the stored artifact for the commit."""
    from deploy.build import build
    from deploy.config import AppSection
    from deploy.source import checkout, commit_time

    src = checkout(app, sha, store.parent / "src")
    # The contract's defaults: npm ci, npm run build, npm prune --omit=dev, the artifact =
    # the app tree at the commit + build/ + production node_modules.
    return build(src, sha, store, contract=AppSection(), env=node_env(), now=commit_time(app, sha))


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--app", choices=("example", "realistic", "both"), default="both")
    ap.add_argument("--warm-runs", type=int, default=5, help="realistic app: new commits built warm")
    ap.add_argument("--cold-runs", type=int, default=2, help="realistic app: cold builds (each a full npm ci)")
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
    claims, ok = [], True
    if args.app in ("example", "both"):
        got, good = example_figures(args)
        claims, ok = claims + got, ok and good
    if args.app in ("realistic", "both"):
        got, good = realistic_figures(args)
        claims, ok = claims + got, ok and good
    write_claims(args.claims_out, claims)
    return 0 if ok else 1


def example_figures(args) -> tuple[list, bool]:
    from tabulate import tabulate

    work = Path(tempfile.mkdtemp(prefix="occ-bench-build-"))
    try:
        # Warm npm's cache once, outside the timing, so neither side pays for downloads.
        bare(copy_shopify_app(work / "warm"))
        shutil.rmtree(work / "warm")

        t_bare, t_first, t_again, reused, ran_again, size = [], [], [], [], [], 0
        for i in range(args.runs):
            # Alternate which side goes first, so neither always gets the warmer page cache.
            order = ("bare", "toolkit") if i % 2 == 0 else ("toolkit", "bare")
            for side in order:
                app = copy_shopify_app(work / f"{side}-{i}" / "app")
                if side == "bare":
                    t_bare.append(timed(lambda: bare(app))[0])
                    continue
                sha = git_repo(app)
                store = work / f"{side}-{i}" / "artifacts"
                t, first = timed(lambda: toolkit(app, sha, store))
                assert not first.reused, "a fresh artifacts folder cannot hold this commit"
                t_first.append(t)
                size = first.artifact.path.stat().st_size
                t, again = timed(lambda: toolkit(app, sha, store))
                t_again.append(t)
                reused.append(again.reused and again.artifact.sha256 == first.artifact.sha256)
                ran_again.append(len(again.commands))
            shutil.rmtree(work / f"bare-{i}", ignore_errors=True)
            shutil.rmtree(work / f"toolkit-{i}", ignore_errors=True)

        med = statistics.median
        ratio = med(t_first) / med(t_bare)
        all_reused = all(reused) and not any(ran_again)
        rows = [
            ["bare: npm ci && npm run build", f"{med(t_bare):.2f} s", "1.00x", ""],
            ["toolkit: first build of a commit (+ artifact)", f"{med(t_first):.2f} s", f"{ratio:.2f}x",
             f"artifact {size / 1e6:.1f} MB"],
            ["toolkit: same commit again", f"{med(t_again):.3f} s", f"{med(t_again) / med(t_bare):.3f}x",
             f"reused {sum(reused)}/{len(reused)}, npm commands run: {sum(ran_again)}"],
        ]
        print(f"examples/shopify-app, median of {args.runs} run(s), warm npm cache")
        print(tabulate(rows, headers=["case", "median", "vs bare", "note"]))
        return [
            claim("build", "first toolkit build / bare npm ci && npm run build", f"{ratio:.2f}x"),
            claim("build", "rebuild of the same commit", "reused" if all_reused else "rebuilt",
                  "reused, no npm run", all_reused),
            claim("build", "rebuild of the same commit / bare build", f"{med(t_again) / med(t_bare):.3f}x"),
        ], all_reused
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _commit(app: Path, i: int) -> str:
    """A new commit of `app` with the same lockfile: one route file changed; its SHA."""
    env = node_env(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.com",
                   GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.com")
    route = app / "app" / "routes" / "_index.jsx"
    route.write_text(route.read_text() + f"\n// change {i}\n")
    subprocess.run(["git", "commit", "-qam", f"change {i}"], cwd=app, env=env, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=app, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _relink(snapshot: Path, app: Path) -> None:
    """Give `app` the full install again (untimed): hard links to `snapshot`, npm's own top-level
    files copied (the prune rewrites them)."""
    shutil.rmtree(app / "node_modules", ignore_errors=True)
    shutil.rmtree(app / "build", ignore_errors=True)
    subprocess.run(["cp", "-al", str(snapshot), str(app / "node_modules")], check=True)
    for f in (app / "node_modules").iterdir():
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            f.unlink()
            f.write_bytes(data)


def realistic_figures(args) -> tuple[list, bool]:
    """Cold and warm builds of the realistic app against the bare tools (see the module docstring)."""
    from tabulate import tabulate

    from deploy.testing.realapp import make_realistic_app, warm_install

    warm_install()   # npm's cache holds the whole lockfile: no side downloads
    work = Path(tempfile.mkdtemp(prefix="occ-bench-build-real-"))
    med = statistics.median
    try:
        cold_tk, cold_bare, warm_tk, warm_build, warm_both, stats = [], [], [], [], [], []
        snapshot = work / "full-node_modules"
        store = work / "tk" / "artifacts"
        app = None
        sha = ""
        size = 0
        for i in range(max(1, args.cold_runs)):
            for side in (("bare", "toolkit") if i % 2 == 0 else ("toolkit", "bare")):
                if side == "bare":
                    bare_app = make_realistic_app(work / f"bare-{i}")
                    t_ci = timed(lambda: npm(bare_app, "ci", "--no-audit", "--no-fund", timeout=1800))[0]
                    if not snapshot.exists():   # the full install, kept (untimed) for the warm bare runs
                        subprocess.run(["cp", "-al", str(bare_app / "node_modules"), str(snapshot)], check=True)
                        _relink(snapshot, bare_app)
                    t_rest = timed(lambda: (npm(bare_app, "run", "build"),
                                            npm(bare_app, "prune", "--omit=dev", "--no-audit", "--no-fund")))[0]
                    cold_bare.append(t_ci + t_rest)
                    if i > 0:
                        shutil.rmtree(bare_app, ignore_errors=True)
                    continue
                # The toolkit from nothing: empty artifact store and dependency cache.
                shutil.rmtree(work / "tk", ignore_errors=True)
                app = make_realistic_app(work / "tk" / "app")
                sha = git_repo(app)
                t, first = timed(lambda: toolkit(app, sha, store))
                assert not first.reused
                cold_tk.append(t)
                size = first.artifact.path.stat().st_size
        bare_app = work / "bare-0"
        assert app is not None
        again = toolkit(app, sha, store)   # the same commit: reused, nothing runs
        reused = again.reused and not again.commands
        for i in range(max(1, args.warm_runs)):
            sha = _commit(app, i)
            _relink(snapshot, bare_app)
            if i % 2 == 0:
                t, r = timed(lambda: toolkit(app, sha, store))
                tb = timed(lambda: npm(bare_app, "run", "build"))[0]
            else:
                tb = timed(lambda: npm(bare_app, "run", "build"))[0]
                t, r = timed(lambda: toolkit(app, sha, store))
            tp = timed(lambda: npm(bare_app, "prune", "--omit=dev", "--no-audit", "--no-fund"))[0]
            warm_tk.append(t)
            warm_build.append(tb)
            warm_both.append(tb + tp)
            stats.append(r.pack)
        r_build = med(warm_tk) / med(warm_build)
        r_both = med(warm_tk) / med(warm_both)
        r_cold = med(cold_tk) / med(cold_bare)
        member_reused = all(s is not None and s.deps_member == "reused" for s in stats)
        last = stats[-1]
        rows = [
            ["bare: npm ci && npm run build && npm prune --omit=dev", f"{med(cold_bare):.2f} s", "1.00x", ""],
            ["toolkit: cold build (empty cache and store)", f"{med(cold_tk):.2f} s", f"{r_cold:.2f}x",
             f"artifact {size / 1e6:.1f} MB"],
            ["bare: npm run build (installed)", f"{med(warm_build):.2f} s", "1.00x", ""],
            ["bare: npm run build && npm prune --omit=dev", f"{med(warm_both):.2f} s", "", ""],
            ["toolkit: new commit, same lockfile", f"{med(warm_tk):.2f} s",
             f"{r_build:.2f}x / {r_both:.2f}x", f"dependency member reused {sum(s.deps_member == 'reused' for s in stats)}"
             f"/{len(stats)}; files read {last.read} of {last.files}, hashed {last.hashed}"],
        ]
        print(f"realistic app (workspaces, {last.files} files packed), cold: median of {len(cold_tk)}, "
              f"warm: median of {len(warm_tk)}; the machine may be shared, so compare ratios within one run")
        print(tabulate(rows, headers=["case", "median", "vs bare", "note"]))
        claims = [
            claim("build", "realistic app: cold build / bare npm ci + build + prune", f"{r_cold:.2f}x", "<= 1.15x",
                  r_cold <= 1.15),
            claim("build", "realistic app: new commit, same lockfile / bare npm run build", f"{r_build:.2f}x",
                  "<= 1.3x", r_build <= 1.3),
            claim("build", "realistic app: new commit, same lockfile / bare build + prune", f"{r_both:.2f}x",
                  "<= 1.1x", r_both <= 1.1),
            claim("build", "realistic app: dependency member of a new commit", "reused" if member_reused else "packed",
                  "reused", member_reused),
            claim("build", "realistic app: rebuild of the same commit", "reused" if reused else "rebuilt",
                  "reused, no npm run", reused),
        ]
        return claims, member_reused and reused
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
