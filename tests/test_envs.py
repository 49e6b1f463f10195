"""The variable matrix, env.check, env.parity, the matrix document and the dotenv writer."""

from __future__ import annotations

import datetime
import shutil
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from deploy import config, envs
from deploy.errors import SettingsError
from deploy.redact import Secret, forget_all

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "envs"

# Valid secrets for the fixture project's staging and production.
STAGING_SECRETS = {"DATABASE_URL": "postgresql://occ:stg-pw-4417@db.staging.test:5432/occ",
                   "API_TOKEN": "atkn_staging_58c1e0"}
PRODUCTION_SECRETS = {"DATABASE_URL": "postgresql://occ:prd-pw-9921@db.prod.test:5432/occ",
                      "API_TOKEN": "atkn_production_aa07"}


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    forget_all()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(FIXTURES / "project", root)
    return root


def edit(root: Path, env: str, *, drop: tuple[str, ...] = (), add: str = "", name: str | None = None) -> None:
    """Rewrite env/<env>.env (or env/<name>) without the `drop` keys and with `add` appended."""
    path = root / "env" / (name or f"{env}.env")
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in drop]
    path.write_text("".join(kept) + add)


def row(report: envs.CheckReport, variable: str) -> envs.CheckRow:
    return next(r for r in report.rows if r.variable == variable)


# ---------------------------------------------------------------- the matrix

@pytest.mark.parametrize("case", sorted(p.stem for p in (FIXTURES / "bad_matrix").glob("*.toml")))
def test_malformed_matrix_is_a_settings_error_naming_the_file_and_key(tmp_path, case):
    src = FIXTURES / "bad_matrix" / f"{case}.toml"
    expect = src.read_text().splitlines()[0].removeprefix("# expect: ")
    (tmp_path / "env").mkdir()
    shutil.copy(src, tmp_path / "env" / "variables.toml")
    with pytest.raises(SettingsError) as e:
        envs.load_matrix(tmp_path)
    assert "env/variables.toml" in str(e.value)
    assert expect in str(e.value)



# One validator: the matrix is parsed by the settings' own (config.parse_table), so the same
# mistake reads the same in env/variables.toml and in env/<name>.toml.
@pytest.mark.parametrize("matrix_key, value, settings_section, settings_key, says", [
    ("required", "yes", config.EnvironmentSection, "protected", "must be true or false, not 'yes'."),
    ("rotation_days", "30", config.LocalSection, "port", "must be a whole number, not '30'."),
    ("where", 3, config.EnvironmentSection, "description", "must be a string, not 3."),
], ids=["bool", "int", "string"])
def test_matrix_and_settings_reject_a_wrong_type_in_the_same_words(matrix_key, value, settings_section,
                                                                 settings_key, says):
    spec = {"description": "d", "owner": "o", "parity": "same", matrix_key: value}
    raw = {"matrix": {"environments": ["local"]}, "variables": {"PORT": spec}}
    with pytest.raises(SettingsError) as matrix_error:
        envs.parse_matrix(raw, file=Path("env/variables.toml"))
    with pytest.raises(SettingsError) as settings_error:
        config.parse_table(settings_section, {settings_key: value}, Path("env/staging.toml"), "section")
    assert matrix_error.value.message == f"env/variables.toml: variables.PORT.{matrix_key} {says}"
    assert settings_error.value.message == f"env/staging.toml: section.{settings_key} {says}"


def test_a_last_rotated_date_time_is_not_a_date():
    spec = {"description": "d", "owner": "o", "parity": "same", "secret": True, "source": "runner",
            "rotation_days": 90, "local": {"last_rotated": datetime.datetime(2026, 1, 1, 12, 0)}}
    with pytest.raises(SettingsError, match=r"variables.PORT.local.last_rotated must be a date like 2026-10-01"):
        envs.parse_matrix({"matrix": {"environments": ["local"]}, "variables": {"PORT": spec}},
                          file=Path("env/variables.toml"))

def test_matrix_applies_defaults_and_per_environment_overrides(project):
    m = envs.load_matrix(project)
    db = m.variable("DATABASE_URL")
    assert db.on("local") == envs.EnvRule(required=True, secret=False, source="dotenv")
    assert db.on("production").secret and db.on("production").source == "supabase"
    assert str(db.on("production").last_rotated) == "2026-10-01"
    assert m.variable("API_TOKEN").on("dev").required is False
    assert m.variable("PAYMENTS_MODE").type.values == ("mock", "live")


def test_unknown_variable_names_the_matrix_and_the_closest_name(project):
    m = envs.load_matrix(project)
    with pytest.raises(SettingsError) as e:
        m.variable("DATABSE_URL")
    assert "DATABSE_URL is not a variable of the matrix" in str(e.value)
    assert "Did you mean DATABASE_URL?" in str(e.value)


def test_unknown_environment_lists_the_declared_ones(project):
    m = envs.load_matrix(project)
    with pytest.raises(SettingsError, match="Unknown environment 'qa'.*local, dev, staging, production"):
        envs.check(m, "qa", project, {})


# ---------------------------------------------------------------- env.check

def test_clean_staging_with_secrets_from_the_environment_checks_ok(project):
    report = envs.check(envs.load_matrix(project), "staging", project, STAGING_SECRETS)
    assert report.ok and report.exit_code == 0
    assert {r.status for r in report.rows} == {"ok"}
    assert row(report, "DATABASE_URL").detail == "secret from environment"
    assert row(report, "PORT").detail == "from env/staging.env"
    assert row(report, "APP_TITLE").detail == "optional, not set"


# One case per class of bad input: (edit to staging.env or the environment, variable, status, message).
BAD_INPUT = [
    pytest.param(dict(drop=("PORT",)), {}, "PORT", "missing",
                 "required, not set: Add PORT=... to env/staging.env.", id="missing-plain"),
    pytest.param({}, {"API_TOKEN": STAGING_SECRETS["API_TOKEN"]}, "DATABASE_URL", "missing",
                 "GitHub environment 'staging' secret DATABASE_URL", id="missing-secret"),
    pytest.param(dict(drop=("SCOPES",), add="SCOPES=changeme\n"), None, "SCOPES", "placeholder",
                 "placeholder value in env/staging.env ('changeme')", id="placeholder-changeme"),
    pytest.param(dict(drop=("SCOPES",), add="SCOPES=TODO\n"), None, "SCOPES", "placeholder",
                 "('TODO')", id="placeholder-todo"),
    pytest.param(dict(drop=("APP_URL",), add="APP_URL=https://<your-app>.example.test\n"), None, "APP_URL",
                 "placeholder", "<your-app>", id="placeholder-angle"),
    pytest.param(dict(drop=("PORT",), add="PORT=\n"), None, "PORT", "placeholder", "('')", id="placeholder-empty"),
    pytest.param(dict(drop=("APP_URL",), add="APP_URL=staging.example.test\n"), None, "APP_URL", "invalid",
                 "not a URL: no scheme", id="invalid-url-scheme"),
    pytest.param(dict(drop=("APP_URL",), add="APP_URL=https://\n"), None, "APP_URL", "invalid",
                 "not a URL: no host", id="invalid-url-host"),
    pytest.param(dict(drop=("PORT",), add="PORT=80a\n"), None, "PORT", "invalid",
                 "'80a' in env/staging.env: not a whole number (expected int 1..65535)", id="invalid-int"),
    pytest.param(dict(drop=("PORT",), add="PORT=70000\n"), None, "PORT", "invalid",
                 "above the maximum 65535", id="invalid-int-range"),
    pytest.param(dict(drop=("FEATURE_BULK",), add="FEATURE_BULK=yes\n"), None, "FEATURE_BULK", "invalid",
                 "not a boolean (use true/false or 1/0)", id="invalid-bool"),
    pytest.param(dict(drop=("PAYMENTS_MODE",), add="PAYMENTS_MODE=Live\n"), None, "PAYMENTS_MODE", "invalid",
                 "not one of mock, live", id="invalid-enum"),
    pytest.param(dict(drop=("SCOPES",), add="SCOPES=read_orders, write_orders\n"), None, "SCOPES", "invalid",
                 "does not match the pattern", id="invalid-pattern"),
    pytest.param(dict(add="DATABASE_URL=postgresql://occ:leaked-in-git@db.staging.test/occ\n"), None,
                 "DATABASE_URL", "secret-in-file",
                 "a secret with a value in committed env/staging.env line 6: remove it and rotate the secret",
                 id="secret-in-file"),
    pytest.param(dict(add="this line is not dotenv\n"), None, "env/staging.env:6", "invalid",
                 "line cannot be parsed as KEY=value", id="unparseable-line"),
]


@pytest.mark.parametrize("change, environ, variable, status, message", BAD_INPUT)
def test_check_reports_each_class_of_bad_input_with_its_own_message(project, change, environ, variable,
                                                                     status, message):
    edit(project, "staging", **change)
    report = envs.check(envs.load_matrix(project), "staging", project,
                        STAGING_SECRETS if environ is None else environ)
    r = row(report, variable)
    assert (r.status, r.is_error) == (status, True)
    assert message in r.detail
    assert not report.ok and report.exit_code == 2
    rendered = envs.render_check(report)
    assert "error(s)" in rendered and variable in rendered


def test_unknown_variable_is_a_warning_not_an_error(project):
    edit(project, "staging", add="LEGACY_FLAG=1\n")
    report = envs.check(envs.load_matrix(project), "staging", project, STAGING_SECRETS)
    r = row(report, "LEGACY_FLAG")
    assert r.status == "unknown" and not r.is_error
    assert "not in env/variables.toml" in r.detail
    assert report.ok and report.warnings == (r,)
    assert "ok, 1 warning(s)" in envs.render_check(report)


@pytest.mark.parametrize("value, status, detail", [
    pytest.param("changeme", "placeholder", "placeholder secret in environment (value not shown); set the real one", id="placeholder"),
    pytest.param("db.staging.test/occ", "invalid", "secret in environment: not a URL: no scheme", id="invalid"),
])
def test_bad_secret_values_are_judged_without_being_shown(project, value, status, detail):
    environ = {**STAGING_SECRETS, "DATABASE_URL": value}
    r = row(envs.check(envs.load_matrix(project), "staging", project, environ), "DATABASE_URL")
    assert r.status == status and r.detail.startswith(detail)
    assert value not in r.detail


def test_environment_is_read_for_secrets_only(project):
    # A shell that exports PORT must not change what the committed staging file says.
    environ = {**STAGING_SECRETS, "PORT": "not-a-port", "PATH": "/usr/bin"}
    m = envs.load_matrix(project)
    assert envs.check(m, "staging", project, environ).ok
    assert envs.resolve(m, "staging", project, environ).get("PORT") == "8080"


def test_dev_secrets_come_from_the_git_ignored_local_file(project):
    edit(project, "dev", name="dev.local.env",
         add="DATABASE_URL=postgresql://me:dev-local-pw@localhost:5432/occ\nPORT=3100\n")
    values = envs.resolve(envs.load_matrix(project), "dev", project, {})
    assert isinstance(values.get("DATABASE_URL"), Secret)
    assert values.origins["DATABASE_URL"] == "env/dev.local.env"
    assert values.typed("PORT") == 3100  # the local file overrides a committed plain value
    assert values.typed("FEATURE_BULK") is True
    assert values.get("APP_TITLE") == 'Ops "Control" #dev'


def test_local_file_is_ignored_where_the_matrix_does_not_allow_one(project):
    edit(project, "staging", name="staging.local.env", add="DATABASE_URL=postgresql://x:y@h/db\n")
    report = envs.check(envs.load_matrix(project), "staging", project, {"API_TOKEN": "atkn_x_123456"})
    assert row(report, "DATABASE_URL").status == "missing"


def test_missing_committed_file_names_it(project):
    (project / "env" / "staging.env").unlink()
    with pytest.raises(SettingsError, match=r"env/staging.env does not exist"):
        envs.check(envs.load_matrix(project), "staging", project, STAGING_SECRETS)


# ---------------------------------------------------------------- resolve / get

def test_get_of_a_missing_variable_names_it_the_environment_and_where_to_set_it(project):
    edit(project, "staging", drop=("PORT",))
    values = envs.resolve(envs.load_matrix(project), "staging", project, {})
    with pytest.raises(SettingsError) as e:
        values.get("PORT")
    assert "PORT is required but not set for environment 'staging'" in str(e.value)
    assert "Add PORT=... to env/staging.env." in str(e.value)
    with pytest.raises(SettingsError) as e:
        values.get("API_TOKEN")
    assert "GitHub environment 'staging' secret API_TOKEN" in str(e.value)
    assert "env/staging.local.env" not in str(e.value)  # no local file for staging


def test_typed_rejects_a_value_of_the_wrong_type(project):
    edit(project, "staging", drop=("PORT",), add="PORT=eighty\n")
    values = envs.resolve(envs.load_matrix(project), "staging", project, STAGING_SECRETS)
    with pytest.raises(SettingsError, match=r"PORT in environment 'staging' \(env/staging.env\) = 'eighty': not a whole number"):
        values.typed("PORT")


def test_resolve_refuses_a_secret_committed_in_a_file(project):
    edit(project, "production", add="API_TOKEN=atkn_committed_by_mistake\n")
    with pytest.raises(SettingsError) as e:
        envs.resolve(envs.load_matrix(project), "production", project, PRODUCTION_SECRETS)
    msg = str(e.value)
    assert "line 6: API_TOKEN is a secret in 'production' and must not be committed" in msg
    assert "rotate API_TOKEN" in msg and "atkn_committed_by_mistake" not in msg


def test_child_env_reveals_secrets_for_the_child_process_only(project):
    values = envs.resolve(envs.load_matrix(project), "staging", project, STAGING_SECRETS)
    assert str(values.get("API_TOKEN")) == "***"
    assert values.child_env()["API_TOKEN"] == STAGING_SECRETS["API_TOKEN"]


# ---------------------------------------------------------------- env.parity

def test_parity_reports_a_same_toggle_that_differs(project):
    m = envs.load_matrix(project)
    report = envs.parity_from_files(m, project)
    assert [(r.variable, r.left, r.right) for r in report.differences] == [("PAYMENTS_MODE", "mock", "live")]
    assert report.exit_code == 1
    # FEATURE_BULK is `true` on staging and `1` on production: the same boolean.
    assert next(r for r in report.rows if r.variable == "FEATURE_BULK").verdict == "match"
    text = envs.render_parity(report)
    assert "1 parity difference(s) make a staging dry run unrepresentative of production" in text
    assert "PAYMENTS_MODE (same): staging mock vs production live" in text


def test_parity_flags_a_differs_secret_that_is_equal_and_never_shows_it(project):
    m = envs.load_matrix(project)
    shared = "postgresql://occ:one-db-for-both-71@db.test:5432/occ"
    report = envs.parity_from_files(m, project, left_environ={**STAGING_SECRETS, "DATABASE_URL": shared},
                                    right_environ={**PRODUCTION_SECRETS, "DATABASE_URL": shared})
    db = next(r for r in report.rows if r.variable == "DATABASE_URL")
    assert (db.verdict, db.problem, db.left, db.right) == ("match", True, "***", "***")
    assert "staging would act on production's resources" in db.detail
    token = next(r for r in report.rows if r.variable == "API_TOKEN")
    assert (token.verdict, token.problem) == ("differ", False)
    assert shared not in envs.render_parity(report)


def test_parity_at_rest_when_toggles_match(project):
    edit(project, "staging", drop=("PAYMENTS_MODE",), add="PAYMENTS_MODE=live\n")
    report = envs.parity_from_files(envs.load_matrix(project), project)
    assert report.differences == () and report.exit_code == 0
    assert "staging is at parity with production." in envs.render_parity(report)


# ---------------------------------------------------------------- the shipped example

def test_shipped_staging_runs_payments_in_mock_while_production_is_live():
    m = envs.load_matrix(REPO)
    report = envs.parity_from_files(m, REPO, "staging", "production")
    assert [(r.variable, r.rule, r.left, r.right) for r in report.differences] == [
        ("PAYMENTS_MODE", "same", "mock", "live")]


@pytest.mark.parametrize("env", ["local", "dev", "staging", "production"])
def test_shipped_env_files_hold_no_secret_and_no_unknown_or_bad_value(env):
    m = envs.load_matrix(REPO)
    report = envs.check(m, env, REPO, {})
    assert [r for r in report.rows if r.status not in ("ok", "missing")] == []
    # Only secrets may be missing: they come from the runner, not from the repository.
    assert all(m.variable(r.variable).on(env).secret for r in report.rows if r.status == "missing")
    assert env != "local" or report.ok


def test_shipped_production_checks_ok_once_the_runner_provides_its_secrets():
    m = envs.load_matrix(REPO)
    environ = {v.name: f"https://u:{v.name.lower()}-x7@db.example.test/occ" if v.type.kind == "url"
               else f"{v.name.lower()}-value-x7" for v in m.variables if v.on("production").secret}
    report = envs.check(m, "production", REPO, environ)
    assert report.ok, envs.render_check(report)


def test_committed_matrix_doc_is_fresh():
    expected = envs.render_matrix(envs.load_matrix(REPO))
    path = REPO / envs.DOC_FILE
    actual = path.read_text(encoding="utf-8") if path.exists() else ""
    assert actual == expected, f"{envs.DOC_FILE} is stale: run `invoke env.matrix` and commit the result."


def test_matrix_doc_has_every_variable_per_environment_and_no_value(project):
    m = envs.load_matrix(project)
    path = envs.write_matrix_doc(m, project)
    text = path.read_text()
    assert path == project / "docs/deployment/env_matrix.md"
    line = next(x for x in text.splitlines() if x.startswith("| `DATABASE_URL`"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells == ["`DATABASE_URL`", "App database", "platform", "url", "required, plain, dotenv",
                     "required, secret, supabase", "required, secret, supabase", "required, secret, supabase",
                     "differs", "every 90 days"]
    assert "Title shown in the admin \\| nav bar" in text  # a pipe in a description keeps the table whole
    # Built from declarations only: no environment's value reaches it.
    for env in m.environments:
        committed = dotenv_values(project / "env" / f"{env}.env")
        for name in ("APP_URL", "SCOPES", "DATABASE_URL"):
            assert committed.get(name) is None or committed[name] not in text


# ---------------------------------------------------------------- env.dotenv

def test_dotenv_writer_fills_plain_values_and_leaves_secrets_empty(project):
    m = envs.load_matrix(project)
    target = project / "app" / ".env"
    result = envs.write_dotenv(m, "dev", target)
    written = dotenv_values(target)
    assert written["APP_TITLE"] == 'Ops "Control" #dev'  # quoted and escaped, read back intact
    assert {k: written[k] for k in ("APP_URL", "PORT", "FEATURE_BULK")} == {
        "APP_URL": "https://dev.example.test", "PORT": "3000", "FEATURE_BULK": "1"}
    assert written["DATABASE_URL"] == "" and written["API_TOKEN"] == ""
    assert result.blank_secrets == ("DATABASE_URL", "API_TOKEN") and "PORT" in result.filled
    text = target.read_text()
    assert "# secret: Set it in the process environment (GitHub environment 'dev' secret DATABASE_URL" in text
    assert "the Supabase dashboard" in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_dotenv_writer_never_copies_a_secret_from_the_local_file(project):
    edit(project, "dev", name="dev.local.env", add="DATABASE_URL=postgresql://me:only-on-my-laptop@h/db\n")
    target = project / ".env"
    envs.write_dotenv(envs.load_matrix(project), "dev", target)
    assert "only-on-my-laptop" not in target.read_bytes().decode()


def test_dotenv_writer_refuses_to_overwrite_without_force(project):
    m = envs.load_matrix(project)
    target = project / ".env"
    target.write_text("DATABASE_URL=filled-in-by-hand\n")
    with pytest.raises(SettingsError) as e:
        envs.write_dotenv(m, "dev", target)
    assert f"{target} already exists; it was not overwritten." in str(e.value)
    assert "--force" in str(e.value)
    assert target.read_text() == "DATABASE_URL=filled-in-by-hand\n"
    envs.write_dotenv(m, "dev", target, force=True)
    assert dotenv_values(target)["PORT"] == "3000"
    assert [p.name for p in project.iterdir() if p.name.startswith(".env.")] == []  # no temp file left


# ---------------------------------------------------------------- redaction

def test_values_resolved_as_secrets_never_appear_in_tables_or_errors(project):
    """Every output path of this module, fed known secrets, good and bad."""
    m = envs.load_matrix(project)
    staging = {"DATABASE_URL": "mysql//no-scheme-s3cr3t-db", "API_TOKEN": "changeme-tok-9f"}
    production = {"DATABASE_URL": "postgresql://occ:Zq8-prod-pw@db.prod.test/occ", "API_TOKEN": "k9Zq2"}
    committed = "atkn_committed_Vb71"
    edit(project, "dev", add=f"API_TOKEN={committed}\n")
    edit(project, "dev", name="dev.local.env", add="DATABASE_URL=postgresql://me:laptop-pw-31@h/db\n")
    secrets = [*staging.values(), *production.values(), committed, "laptop-pw-31"]

    outputs: list[str] = []
    for env, environ in (("staging", staging), ("production", production), ("dev", {})):
        report = envs.check(m, env, project, environ)
        outputs += [envs.render_check(report), *(r.detail for r in report.rows)]
    report = envs.parity_from_files(m, project, left_environ=staging, right_environ=production)
    outputs += [envs.render_parity(report), *(f"{r.left} {r.right} {r.detail}" for r in report.rows)]
    values = envs.resolve(m, "staging", project, staging)
    for call in (lambda: values.typed("DATABASE_URL"), lambda: envs.resolve(m, "dev", project, {})):
        with pytest.raises(SettingsError) as e:
            call()
        outputs.append(str(e.value))
    outputs += [repr(values), str(values.values)]
    edit(project, "dev", drop=("API_TOKEN",))
    target = project / ".env"
    envs.write_dotenv(m, "dev", target)
    outputs.append(target.read_text())

    joined = "\n".join(outputs)
    assert "placeholder secret" in joined and "secret-in-file" in joined  # the bad cases were reached
    for secret in secrets:
        assert secret not in joined, f"a secret leaked into output: {secret[:3]}..."


@pytest.mark.parametrize("value, short", [("1", True), ("x9z", True), ("x9z4", False)])
def test_env_check_warns_of_a_secret_too_short_to_be_masked(tmp_path, value, short):
    """redact masks no value shorter than MIN_LENGTH, so `invoke env.check` (and the promote
    preflight that uses it) warns about such a secret; it does not block, since run state is
    stored exactly whatever the value (test_reliability_attacks_engine runs with "1")."""
    from deploy.testing.project import make_project

    r = make_project(tmp_path / "p").invoke("env.check", "--env=staging", extra_env={"SESSION_SECRET": value})
    line = next(ln for ln in r.stdout.splitlines() if "SESSION_SECRET" in ln)
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    if short:
        assert "| ok" in line and "warning: too short to be masked in output, rotate it" in line, line
    else:
        assert "| ok" in line and "warning" not in line, line


# ---------------------------------------------------------------- the package's surface

def _defined_public(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def test_the_envs_package_exports_exactly_its_modules_public_names():
    """deploy.envs re-exports every public name of _matrix, _values, _checks and _render,
    and nothing else (httpx's tests/test_exported_members.py)."""
    modules = sorted(p for p in Path(envs.__file__).parent.glob("_*.py") if p.stem != "__init__")
    assert {p.stem for p in modules} == {"_matrix", "_values", "_checks", "_render"}
    defined = set().union(*(_defined_public(p) for p in modules))
    assert set(envs.__all__) == defined
    assert len(envs.__all__) == len(set(envs.__all__))
    assert all(hasattr(envs, n) for n in envs.__all__)


def test_every_envs_name_the_toolkit_and_tests_use_is_exported():
    import re

    used = set()
    for path in [*(REPO / "deploy").rglob("*.py"), *(REPO / "tests").rglob("*.py"), REPO / "tasks.py"]:
        if "envs" in path.parts:
            continue
        text = path.read_text()
        if not re.search(r"from deploy import [^\n]*\benvs\b|from deploy\.envs import", text):
            continue
        used |= set(re.findall(r"\benvs\.([A-Za-z]\w*)", text))
        used |= {n.strip() for m in re.findall(r"from deploy\.envs import ([\w, ]+)", text) for n in m.split(",")}
    assert used - set(envs.__all__) == set()


@pytest.mark.parametrize("module", ["_matrix", "_values", "_checks", "_render"])
def test_each_envs_module_opens_with_a_docstring_naming_its_job(module):
    import importlib

    doc = importlib.import_module(f"deploy.envs.{module}").__doc__
    assert doc and len(doc.split()) >= 8
