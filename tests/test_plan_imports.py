"""Showing a plan loads only what renders it: a `--dry-run` of promote (and importing rollback)
leaves the steps' work (deploy/flows/steps/work/, named with `later`, deploy/deferred.py) and the
primitives only a run needs (go-live checks, evidence, the decision log; hosts and images for a
local environment) unimported. Checked in a child process through the real invoke command line,
reading its sys.modules at exit; not timed (benchmarks/bench_overhead.py times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.deferred import Later, later, resolve
from test_layers import all_deferred_names

ROOT = Path(__file__).resolve().parents[1]
WORK = sorted({ref.partition(":")[0] for ref in all_deferred_names() if ".steps.work." in ref})

# What a run needs and a plan never does, on top of the steps' work: per environment of the repo's env/.
RUN_ONLY = ("deploy.golive", "deploy.evidence", "deploy.decisionlog", "deploy.disk", "deploy.images")
PLACES = ("deploy.hosts", "deploy.targets.tree", "deploy.targets.image")
# The parts of a package a plan does not use, loaded before its __init__ re-exported lazily (deploy/deferred.py,
# exports): importing one builder loaded them all. Not on any environment's plan ...
PACKAGE_PARTS = ("deploy.backups.operations", "deploy.backups.sqlite", "deploy.backups.provisioning",
                 "deploy.backups.writes", "deploy.build.packing", "deploy.build.cache", "deploy.build.orchestrate",
                 "deploy.build.prodtree", "deploy.build.fullinstall", "deploy.build.entry", "deploy.shopify.push",
                 "deploy.shopify.output", "deploy.shopify.preflight", "deploy.migrations._runner",
                 "deploy.migrations._postgres", "deploy.migrations._sqlite", "deploy.envs._checks", "deploy.envs._render",
                 "isal", "tabulate")   # the plan's table is drawn by deploy.display.plain_table
# ... nor on a local one (a Postgres environment's plan shows pg_dump's command line, built in backups.postgres).
LOCAL_PARTS = ("deploy.backups.postgres", "deploy.backups.tools", "deploy.migrations._backend", "importlib.metadata")

# The child: runs invoke's own program as `invoke` does, and writes sys.modules when it exits.
CHILD = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps({"modules": sorted(sys.modules),
                                                           "no_bytecode": sys.dont_write_bytecode})))
from invoke.main import program
program.run()
"""


def _child(tmp_path: Path, *args: str, env_too: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEPLOY_LEDGER_URL", "GITHUB_STEP_SUMMARY", "PYTHONDONTWRITEBYTECODE")}
    env.update(DEPLOY_ROOT=str(ROOT), PYTHONPATH=str(ROOT), **(env_too or {}))
    r = subprocess.run([sys.executable, "-c", CHILD, str(out), "-r", str(ROOT), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    return r, json.loads(out.read_text()) if out.exists() else {}


def _loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    r, seen = _child(tmp_path, *args)
    return r, set(seen.get("modules", ()))


def _under(loaded: set[str], prefixes) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_the_steps_name_their_work_and_every_work_module_is_named():
    assert WORK, "no step names its work with later(...)"
    on_disk = {f"deploy.flows.steps.work.{p.stem}" for p in (ROOT / "deploy/flows/steps/work").glob("*.py")
               if p.stem != "__init__"}
    assert on_disk == set(WORK), f"work modules no step names: {sorted(on_disk - set(WORK))}"


@pytest.mark.parametrize("ref", all_deferred_names())
def test_every_deferred_name_resolves(ref):
    assert callable(resolve(ref)), ref


@pytest.mark.parametrize("env,places_too", [
    ("local", True),          # the local tree: neither hosts nor images are loaded
    ("staging", False),       # hosts' command builders render its commands; no step's work
    ("production", False),    # the go-live step's checklist is named, not loaded
], ids=["local-tree", "staging-hosts", "production-with-golive"])
def test_a_promote_dry_run_imports_no_step_work(tmp_path, env, places_too):
    r, loaded = _loaded(tmp_path, "promote", f"--to={env}", "--dry-run")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert "dry run: nothing was changed." in r.stdout
    assert any(m.startswith("deploy.flows.steps.") for m in loaded), "the child did not build a plan"
    forbidden = (*WORK, *RUN_ONLY, *PACKAGE_PARTS, *((*PLACES, *LOCAL_PARTS) if places_too else ()))
    assert _under(loaded, forbidden) == [], f"a {env} dry run imported what only a run needs"


def test_a_real_step_still_loads_its_work(tmp_path):
    """The same child, asked to import the work a step names, sees it loaded (the check above can fail)."""
    r = subprocess.run([sys.executable, "-c", "import sys\nfrom deploy.deferred import resolve\n"
                        "resolve('deploy.flows.steps.work.golive:checklist')\nprint('deploy.golive' in sys.modules)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "True", r.stderr


@pytest.mark.parametrize("python_says,written", [({}, True), ({"PYTHONDONTWRITEBYTECODE": "1"}, False)],
                         ids=["python-default-writes-bytecode", "PYTHONDONTWRITEBYTECODE-still-respected"])
def test_the_toolkits_modules_keep_pythons_bytecode_setting_under_invoke(tmp_path, python_says, written):
    """Invoke turns bytecode writing off unless --write-pyc; tasks.py gives Python's own setting
    back, so an editable install compiles the toolkit once, not on every run."""
    r, seen = _child(tmp_path, "--list", env_too=python_says)
    assert r.returncode == 0, r.stderr[-1500:]
    assert seen["no_bytecode"] is (not written)


def test_importing_promote_and_rollback_loads_no_step_work():
    code = "import sys, json\nimport deploy.flows.promote, deploy.flows.rollback\nprint(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    loaded = set(json.loads(r.stdout))
    assert _under(loaded, (*WORK, *RUN_ONLY, *PLACES)) == []


@pytest.mark.parametrize("ref,problem", [
    ("deploy.flows.steps.work.golive", "not 'deploy.<module>:<function>'"),
    ("os.path:join", "not 'deploy.<module>:<function>'"),
    ("deploy.flows.steps.work.golive:no_such_function", "has no no_such_function"),
], ids=["no-function", "outside-the-toolkit", "a-function-that-is-not-there"])
def test_a_bad_deferred_name_is_refused_when_named_or_resolved(ref, problem):
    with pytest.raises(ValueError, match=problem):
        later(ref)(None) if ":" in ref and ref.startswith("deploy.") else later(ref)


def test_a_later_function_gets_what_the_engine_passes_then_its_arguments():
    # deploy.deferred:Later itself as the named function: (head, args, kwargs) come back in order.
    made = later("deploy.deferred:Later", ("a", 1), kwargs=(("k", 2),))("deploy.flows.steps.work.gates:gate")
    assert made == Later("deploy.flows.steps.work.gates:gate", ("a", 1), (("k", 2),))
