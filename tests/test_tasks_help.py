"""Every task has a one-line help and every flag a description; start-up stays light."""

import subprocess
import sys
from pathlib import Path

import pytest

from deploy.testing.project import all_tasks

ROOT = Path(__file__).resolve().parents[1]


TASKS = all_tasks()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_has_a_one_line_help_and_every_flag_a_description(name):
    t = TASKS[name]
    assert (t.__doc__ or "").strip(), f"{name} has no docstring"
    args = [a for a in t.get_arguments() if a.name != "help"]
    missing = [a.name for a in args if not a.help]
    assert not missing, f"{name}: flags without help: {missing}"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_the_line_invoke_list_shows_is_whole_sentences(name):
    """`invoke --list` shows a docstring's first line: it must end a sentence, not stop mid-way."""
    from invoke.util import helpline

    line = (helpline(TASKS[name]) or "").rstrip()
    assert line.endswith((".", ")", "?")), f"{name}: `invoke --list` cuts it: {line!r}"


@pytest.mark.slow
def test_help_of_a_task_prints_its_flags():
    r = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "promote", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--dry-run" in r.stdout and "--no-rollback" in r.stdout


def test_invoke_list_does_not_import_heavy_libraries():
    from deploy import LAZY_LIBRARIES   # the libraries only a running task may load

    code = ("import sys, runpy; sys.argv=['invoke','-r',%r,'--list']\n"
            "from invoke.main import program\n"
            "try:\n    program.run()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in %r if m in sys.modules]\n"
            "print('HEAVY', heavy)") % (str(ROOT), tuple(sorted(LAZY_LIBRARIES)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "promote" in r.stdout and "db.migrate" in r.stdout, r.stdout[-500:] + r.stderr[-500:]
    assert "HEAVY []" in r.stdout, r.stdout[-500:] + r.stderr[-500:]


@pytest.mark.parametrize("args, flag", [
    (["db.rollback", "--env=staging", "--steps=abc"], "--steps"),
    (["db.rollback", "--env=staging", "--steps=0"], "--steps"),
    (["drills", "--days=x"], "--days"),
])
def test_a_number_flag_that_is_not_a_whole_number_is_a_clear_error(project, args, flag):
    """Number flags are taken as typed and checked by the flow: no Invoke traceback."""
    r = project.invoke(*args)
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in text, text
    assert f"{flag} must be a whole number" in text, text
