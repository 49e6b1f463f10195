"""Hostile input through the real command line: malformed settings, dotenv files, the
variable matrix, migration folders, evidence reports and Shopify CLI output from
tests/fixtures/hostile/. Every case must end with a non-zero exit, no traceback, and
one message naming the file (or the key) at fault.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"


def cases(kind: str) -> list:
    return [pytest.param(p, id=p.name) for p in sorted((HOSTILE / kind).iterdir())]


def assert_clear_failure(r, *names: str) -> str:
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "Traceback" not in text, text
    assert any(n in text for n in names), f"none of {names} named in:\n{text}"
    return text


@pytest.mark.parametrize("case", cases("settings"))
def test_hostile_settings_file(project, case):
    shutil.copy(case, project.root / "env/staging.toml")
    r = project.invoke("hosts.check", "--env=staging")
    assert_clear_failure(r, "staging.toml", "hosts.")


@pytest.mark.parametrize("case", cases("dotenv"))
def test_hostile_dotenv_file(project, case):
    shutil.copy(case, project.root / "env/staging.env")
    r = project.invoke("env.check", "--env=staging")
    text = assert_clear_failure(r, "staging.env")
    assert "committed-by-mistake-1234" not in text


@pytest.mark.parametrize("case", cases("matrix"))
def test_hostile_variable_matrix(project, case):
    shutil.copy(case, project.root / "env/variables.toml")
    r = project.invoke("env.check", "--env=staging")
    assert_clear_failure(r, "variables.toml")


@pytest.mark.parametrize("case", cases("migrations"))
def test_hostile_migration_folder(project, case):
    name = f"20990101000000_{case.name}"
    shutil.copytree(case, project.root / "examples/app/prisma/migrations" / name)
    r = project.invoke("db.migrate", "--env=local")
    assert_clear_failure(r, name)


@pytest.mark.parametrize("case", cases("evidence"))
def test_hostile_evidence_report(project, case):
    folder = project.root / "evidence"
    folder.mkdir()
    shutil.copy(case, folder / case.name)
    r = project.invoke("evidence.collect", f"--sha={project.head}", "--env=staging", f"--files=evidence/{case.name}")
    if r.returncode == 0:
        r = project.invoke("gate", "--env=staging")
    assert_clear_failure(r, case.name)


@pytest.mark.parametrize("case", cases("shopify"))
def test_hostile_shopify_cli_output(case):
    from deploy import shopify
    from deploy.errors import DeployError

    text = case.read_bytes().decode("utf-8", errors="replace")
    parse = shopify.parse_versions if case.name.startswith("versions") else shopify.parse_deploy_output
    try:
        result = parse(text)
    except DeployError as e:
        assert e.message and "Traceback" not in str(e)
        return
    if parse is shopify.parse_versions:
        pytest.fail(f"{case.name}: read as versions {result!r}")
    # A deploy output that names no released version must not be read as a success.
    assert not getattr(result, "ok", False) or not getattr(result, "version", None), result
