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

    python benchmarks/bench_build.py [--runs 3]
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
    from deploy.source import checkout, commit_time

    src = checkout(app, sha, store.parent / "src")
    return build(src, sha, store, env=node_env(), now=commit_time(app, sha))


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
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
        write_claims(args.claims_out, [
            claim("build", "first toolkit build / bare npm ci && npm run build", f"{ratio:.2f}x"),
            claim("build", "rebuild of the same commit", "reused" if all_reused else "rebuilt",
                  "reused, no npm run", all_reused),
            claim("build", "rebuild of the same commit / bare build", f"{med(t_again) / med(t_bare):.3f}x"),
        ])
        return 0 if all_reused else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
