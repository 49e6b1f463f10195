"""The toolkit's own overhead, against baselines measured in the same run.

(a) start-up: wall time of `invoke --list` in this repo vs `invoke --list` on a tasks.py
    holding one no-op task (an empty tasks.py makes invoke exit 1 with "No tasks found"),
    and of `invoke promote --to=local --dry-run` in a throwaway project, the three in turn
    round after round; plus
    `python -X importtime` proving that `invoke --list` imports none of sqlalchemy,
    fabric, paramiko, psycopg. Every case is timed with its bytecode cached, as an installed
    package runs (pip compiles a wheel's modules when it installs them; invoke's were): the
    toolkit's modules (an editable install here) are compiled once first (`compileall`), and
    every child runs without PYTHONDONTWRITEBYTECODE (some sandboxes and CI images set it).
    (Invoke turns bytecode writing off unless given `--write-pyc`; tasks.py gives Python's own
    setting back for the toolkit's modules, so the warm-up run would write them too.)
(b) engine: a Plan of N no-op Steps run by deploy.engine.Runner (lock, ledger rows for the
    run and every step, progress lines) against calling the N functions directly, with the
    SQLite ledger and, when Postgres is installed, a Postgres ledger. Per step: the slope
    between N=10 and N=50; per promotion: a 10-step plan including Ledger.open minus ten
    steps' worth. Targets (issue "Speed"): < 200 ms per promotion, < 20 ms per step.
(c) a real staging-like promotion (`invoke promote --to=staging`: Postgres, sshd hosts
    running the example app, the Shopify stand-in, evidence for the commit) to 1 and to
    8 hosts: wall time of each.

    python benchmarks/bench_overhead.py [--runs 7] [--quick] [--skip-staging]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, claim, median, timed, write_claims  # noqa: E402

HEAVY = ("sqlalchemy", "fabric", "paramiko", "psycopg")
BENCH = "overhead"


def invoke_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", *args]


def run_ok(argv, cwd, env=None, timeout=120) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return r


def startup(runs: int, work: Path):
    """(a): start-up wall times and what `invoke --list` imports."""
    from deploy.testing.project import make_project

    bare = work / "bare"
    bare.mkdir()
    (bare / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n")
    # The same for every case: bytecode written and read (see the module docstring).
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOY_ROOT", "DEPLOY_LEDGER_URL", "PYTHONDONTWRITEBYTECODE")}
    project = make_project(work / "project")
    penv = {**env, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO)}
    # Compiled as pip compiles an installed package (see the module docstring); same env as the cases.
    run_ok([sys.executable, "-m", "compileall", "-q", str(REPO / "deploy"), str(REPO / "tasks.py")], REPO, env)
    cases = {
        "invoke --list, one no-op task (baseline)": (invoke_argv("--list"), bare, env),
        "invoke --list, this repo": (invoke_argv("--list"), REPO, env),
        "invoke promote --to=local --dry-run": (invoke_argv("-r", str(REPO), "promote", "--to=local", "--dry-run"),
                                                project.root, penv),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv, cwd, e in cases.values():
        run_ok(argv, cwd, e)  # warm the page cache and __pycache__
    for _ in range(runs):     # the cases in turn, round after round: a machine's drift hits each alike
        for name, (argv, cwd, e) in cases.items():
            times[name].append(timed(lambda: run_ok(argv, cwd, e)))
    if (project.root / ".deploy").exists():
        raise RuntimeError("promote --dry-run wrote .deploy/: a dry run must change nothing")

    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "invoke", "--list"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    imported = set()
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+\d+\s+\|\s+\d+\s+\|\s+(\S.*)$", line)
        if m:
            imported.add(m.group(1).strip().split(".")[0])
    heavy = sorted(set(HEAVY) & imported)
    return times, heavy, len(imported)


def engine_overhead(runs: int, work: Path, pg_url: str | None):
    """(b): Runner over N no-op steps vs the N calls; returns rows per ledger kind."""
    from deploy.engine import Console, Plan, Runner, Step
    from deploy.ledger import Ledger

    def noop(ctx):
        return None

    def plan(n: int) -> Plan:
        return Plan(flow="bench", env="bench", steps=[Step(name=f"step{i}", does="nothing", run=noop) for i in range(n)],
                    sha="0" * 40, release_id="bench")

    def direct(n: int) -> None:
        for _ in range(n):
            noop(None)

    out = []
    ledgers = [("SQLite", None)] + ([("Postgres", pg_url)] if pg_url else [])
    for kind, url in ledgers:
        root = work / f"ledger-{kind.lower()}"
        root.mkdir()
        sink = io.StringIO()  # progress lines are formatted and written, as in a real run
        Ledger.open(root, url).close()  # creates the schema once, as the first promotion did

        def promotion(n: int) -> None:
            led = Ledger.open(root, url)
            try:
                o = Runner(led, Console(out=sink)).execute(plan(n))
                assert o.ok, o.error
            finally:
                led.close()

        promotion(10)  # warm up: imports, connections
        t10 = [timed(lambda: promotion(10)) for _ in range(runs)]
        t50 = [timed(lambda: promotion(50)) for _ in range(runs)]
        d10 = [timed(lambda: direct(10)) for _ in range(runs)]
        d50 = [timed(lambda: direct(50)) for _ in range(runs)]
        per_step = (median(t50) - median(d50) - (median(t10) - median(d10))) / 40
        per_promotion = median(t10) - median(d10) - 10 * per_step
        out.append((kind, median(t10), median(t50), median(d10), per_step, per_promotion))
    return out


def staging(runs: int, work: Path, cluster, counts=(1, 8), share: bool = False):
    """(c): `invoke promote --to=staging` to 1 and to 8 sshd hosts; median wall time each.
    `share` (--quick): one project for both, its settings rewritten and committed between them,
    so the React Router app's cold `npm ci` runs once (the 8-host warm-up builds from the
    dependency cache) instead of once per project; the timed runs are the same."""
    from deploy.testing.project import Project, make_project
    from deploy.testing.shopify import install_stand_in
    from deploy.testing.sshd import SshdFarm
    from deploy.testing.stage import Stage, free_port, secrets_env, stage_toml

    farm = SshdFarm(max(counts))
    results = {}
    try:
        for n in counts:
            hosts = farm.hosts[:n]
            sub = f"srv/occ-bench{n}"
            ports = [free_port() for _ in hosts]
            for h, p in zip(hosts, ports):
                h.write(f"{sub}/shared/.env", f"PORT={p}\nHOST=127.0.0.1\n")
            shared = work / "staging-shared"
            project = (make_project(shared) if not (shared / ".git").exists() else Project(shared)) if share \
                else make_project(work / f"staging{n}")
            text = stage_toml(farm, hosts, ports).replace(f'deploy_to = "{farm.deploy_to()}"',
                                                          f'deploy_to = "{farm.deploy_to(sub)}"')
            project.write_env("staging", text)
            project.commit(f"staging on {n} bench hosts")
            shop = install_stand_in(work / f"shopify{n}", token="shpat-bench-" + os.urandom(8).hex())
            db = cluster.create_database(f"bench_staging{n}")
            project.env.update(secrets_env(project, "staging", db))
            project.env["SHOPIFY_APP_AUTOMATION_TOKEN"] = shop.token
            project.env["PATH"] = f"{shop.bin_dir}:{os.environ['PATH']}"
            stage = Stage(project, hosts, ports, db, shop, farm)
            stage.collect_evidence()
            times = []
            for i in range(runs + 1):  # run 0 builds the artifact and starts the apps: not timed
                t = timed(lambda: _promote(project))
                if i:
                    times.append(t)
            results[n] = times
    finally:
        farm.stop()
    return results


def _promote(project) -> None:
    r = project.invoke("promote", "--to=staging", timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"promote --to=staging failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--staging-runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    ap.add_argument("--skip-staging", action="store_true")
    ap.add_argument("--claims-out")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.staging_runs = min(args.runs, 3), min(args.staging_runs, 1)
    from tabulate import tabulate

    claims = []
    work = Path(tempfile.mkdtemp(prefix="occ-bench-overhead-"))
    os.chmod(work, 0o755)
    cluster = None
    try:
        # (a)
        times, heavy, n_mods = startup(args.runs, work)
        base = median(times["invoke --list, one no-op task (baseline)"])
        print(f"(a) start-up, median of {args.runs} runs")
        print(tabulate([(k, f"{median(v) * 1000:.0f}", f"{median(v) / base:.2f}x") for k, v in times.items()],
                       headers=["command", "median ms", "vs baseline"]))
        print(f"`invoke --list` in this repo imports {n_mods} top-level packages; of "
              f"{', '.join(HEAVY)}: {', '.join(heavy) or 'none'}\n", flush=True)
        lst = median(times["invoke --list, this repo"]) / base
        dry = median(times["invoke promote --to=local --dry-run"]) / base
        claims += [
            claim(BENCH, "invoke --list: repo / one-task tasks.py", f"{lst:.2f}x", "<= 1.5x", lst <= 1.5),
            claim(BENCH, "promote --dry-run / one-task invoke --list", f"{dry:.2f}x", "<= 1.5x", dry <= 1.5),
            claim(BENCH, "heavy imports at `invoke --list`", ", ".join(heavy) or "none", "none", not heavy),
        ]

        # (b)
        pg_url = None
        try:
            from deploy.testing.postgres import PostgresCluster

            cluster = PostgresCluster()
            pg_url = cluster.create_database("bench_ledger")
        except Exception as e:  # noqa: BLE001 - SQLite alone still answers the question
            print(f"no Postgres cluster ({e}); engine overhead with the SQLite ledger only")
        rows = engine_overhead(args.runs, work, pg_url)
        print(f"(b) engine overhead, no-op steps, median of {args.runs} runs")
        print(tabulate([(k, f"{t10 * 1000:.1f}", f"{t50 * 1000:.1f}", f"{d10 * 1e6:.1f} us",
                         f"{ps * 1000:.2f}", f"{pp * 1000:.1f}") for k, t10, t50, d10, ps, pp in rows],
                       headers=["ledger", "10 steps ms", "50 steps ms", "direct 10 calls",
                                "per step ms (<20)", "per promotion ms (<200)"]))
        print(flush=True)
        for k, t10, t50, d10, ps, pp in rows:
            claims += [claim(BENCH, f"engine per step, {k} ledger", f"{ps * 1000:.2f} ms", "< 20 ms", ps < 0.020),
                       claim(BENCH, f"engine per promotion, {k} ledger", f"{pp * 1000:.1f} ms", "< 200 ms",
                             pp < 0.200)]

        # (c)
        if not args.skip_staging and cluster is not None:
            res = staging(args.staging_runs, work, cluster, share=args.quick)
            one, eight = median(res[1]), median(res[8])
            print(f"(c) `invoke promote --to=staging`, Postgres + sshd hosts + Shopify stand-in, "
                  f"median of {args.staging_runs} run(s) after a warm-up")
            print(tabulate([(n, f"{median(v):.2f}", f"{median(v) / one:.2f}x") for n, v in res.items()],
                           headers=["hosts", "median s", "vs 1 host"]))
            print(flush=True)
            claims += [claim(BENCH, "staging promotion, 1 host", f"{one:.2f} s"),
                       claim(BENCH, "staging promotion, 8 hosts / 1 host", f"{eight / one:.2f}x")]
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_claims(args.claims_out, claims)
    return 0 if all(c.met is not False for c in claims) else 1


if __name__ == "__main__":
    raise SystemExit(main())
