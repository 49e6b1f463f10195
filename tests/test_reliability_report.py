"""deploy/reliability.py: figures counted from the JUnit XML pytest really writes."""

import subprocess
import sys

import pytest
from datetime import datetime, timezone

from deploy import reliability

SAMPLE = '''
import pytest

@pytest.mark.parametrize("mode", ["resume", "abort"])
@pytest.mark.parametrize("point", ["before:gate", "during:release"])
def test_kill_then_resume_or_abort(point, mode):
    assert not (point == "during:release" and mode == "abort")

@pytest.mark.parametrize("kind", ["sqlite", pytest.param("two-ledgers", marks=pytest.mark.xfail(reason="race"))])
def test_eight_promoters(kind):
    assert kind == "sqlite"

def test_shopify_fault():
    found = ["stdout: shpa…"]
    assert found == [], "leaks found"
'''


def junit_of(tmp_path):
    (tmp_path / "test_kill_points.py").write_text(SAMPLE.split("@pytest.mark.parametrize(\"kind\"")[0])
    (tmp_path / "test_reliability_concurrency.py").write_text(
        "import pytest\n" + "@pytest.mark.parametrize(\"kind\"" + SAMPLE.split("@pytest.mark.parametrize(\"kind\"")[1]
        .split("def test_shopify_fault")[0])
    (tmp_path / "test_reliability_faults.py").write_text("def test_shopify_fault" + SAMPLE.split("def test_shopify_fault")[1])
    out = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={out}",
                    "-o", "junit_family=xunit1", "test_kill_points.py", "test_reliability_concurrency.py",
                    "test_reliability_faults.py"], cwd=tmp_path, capture_output=True)
    return out.read_text()


@pytest.mark.slow
def test_figures_from_real_pytest_junit(tmp_path):
    cases = reliability.parse_junit(junit_of(tmp_path))
    f = reliability.figures(cases)
    assert (f.kill_resume.passed, f.kill_resume.total) == (2, 2)
    assert (f.kill_abort.passed, f.kill_abort.failed) == (1, 1)
    assert f.concurrency["sqlite"].passed == 1 and f.concurrency["two-ledgers"].xfailed == 1
    assert "race" in f.concurrency["two-ledgers"].known[0]
    assert f.leaks_found == 1 and f.leak_scenarios == 1
    md = reliability.render(f, when=datetime(2026, 1, 2, tzinfo=timezone.utc), where="box", command="x")
    assert "1/2 passed, 1 FAILED" in md and "2026-01-02" in md and "- race" in md


def test_unreadable_junit_is_a_deploy_error():
    import pytest

    from deploy.errors import DeployError

    with pytest.raises(DeployError, match="cannot be read"):
        reliability.parse_junit("<testsuites><testcase")


def test_every_attack_case_names_tests_that_exist():
    """Each row of the attack table counts real tests: a renamed or deleted test makes its
    row 0/0 in docs/reliability.md, and fails here first."""
    import re
    from pathlib import Path

    tests = Path(__file__).parent
    tables = (*reliability.ATTACKS, *reliability.TRUST)
    names = {f: set(re.findall(r"^def (test_\w+)", (tests / f).read_text(), re.M))
             for f in {file for _, refs in tables for file, _ in refs}}
    assert len(reliability.ATTACKS) == 14 and len(reliability.TRUST) == 17
    assert all(f"tests/{file}" in reliability.SUITE for _, refs in tables for file, _ in refs)
    for what, refs in tables:
        for file, prefix in refs:
            assert any(n.startswith(prefix) for n in names[file]), f"{what}: no {prefix}* in {file}"


def test_attack_rows_count_the_cases_of_each_attack():
    cases = [reliability.Case("tests/test_reliability_attacks_engine.py",
                              "test_sigterm_during_watch_undoes_and_a_second_signal_does_not_cut_the_undo", "passed"),
             reliability.Case("tests/test_reliability_attacks_engine.py", "test_host_lock_lasts_until_the_run_ends",
                              "failed", "boom")]
    rows = dict(reliability.attack_rows(cases))
    assert rows["10 SIGTERM/SIGINT undo and free the lock"].line() == "1/1 passed"
    assert rows["5 the host lock lasts until the run ends"].failed == 1
    assert rows["13 a full disk under .deploy/ undoes and says how to finish"].total == 0


def _junit(tmp_path, files):
    cases = "".join(f'<testcase classname="tests.{f.removesuffix(".py")}" name="test_a" time="0.1"/>' for f in files)
    p = tmp_path / "junit.xml"
    p.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return p


def test_report_from_a_junit_file_counts_only_the_suites_cases(tmp_path):
    files = [f.removeprefix("tests/") for f in reliability.SUITE]
    p = _junit(tmp_path, [*files, "test_unrelated.py"])
    cases = reliability.from_junit(p)
    assert len(cases) == len(files) and not any(c.file.endswith("test_unrelated.py") for c in cases)


def test_report_from_a_junit_file_of_a_partial_run_names_the_missing_files(tmp_path):
    import pytest

    from deploy.errors import DeployError

    p = _junit(tmp_path, ["test_kill_points.py"])
    with pytest.raises(DeployError, match="test_reliability_trust_data.py") as e:
        reliability.from_junit(p)
    assert "--junitxml" in e.value.hint
    with pytest.raises(DeployError, match="cannot be read"):
        reliability.from_junit(tmp_path / "nope.xml")
