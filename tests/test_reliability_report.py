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
