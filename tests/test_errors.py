"""Errors carry fields (env, host, migration, file); hints are rendered from them; a step's
bug keeps its traceback in the ledger and on stderr with DEPLOY_DEBUG=1."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.engine import Console, Plan, Runner, Step
from deploy.errors import DeployError, HostFailed, MigrationFailed
from deploy.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]


def test_a_hint_written_below_the_flow_names_the_environment_once_it_is_known():
    e = MigrationFailed("Migration 2_x failed.", "`invoke db.resolve --env=<env> --rolled-back 2_x`",
                        migration="2_x")
    assert "<env>" in str(e)                                  # nobody has said which environment yet
    assert e.in_env("staging") is e and e.env == "staging" and e.migration == "2_x"
    assert "--env=staging --rolled-back 2_x" in str(e) and "<env>" not in str(e)
    assert e.in_env("production").env == "staging"             # the lower layer's answer stands


def test_a_wrapping_error_keeps_the_fields_of_the_one_it_wraps():
    inner = HostFailed("web1 failed", "Check <env>'s hosts.", host="web1", env="staging")
    inner.traceback = "Traceback ..."
    outer = DeployError(f"Step release failed:\n{inner.message}", inner.hint).fields_from(inner)
    assert (outer.env, outer.host, outer.traceback) == ("staging", "web1", "Traceback ...")
    assert "Check staging's hosts." in str(outer)


def _bug(ctx):
    return {}["missing"]  # a KeyError: a bug, not a DeployError


def test_a_step_bug_is_undone_and_its_traceback_kept_in_the_ledger(tmp_path):
    led = Ledger.open(tmp_path, f"sqlite:///{tmp_path}/l.db")
    plan = Plan("promote", "staging", [Step("migrate", "apply migrations", run=_bug)])
    outcome = Runner(led, Console(io.StringIO())).execute(plan)
    assert outcome.status != "succeeded"
    err = outcome.error
    assert err.env == "staging" and "KeyError" in err.message
    assert "Traceback (most recent call last)" in err.traceback and "_bug" in err.traceback
    run = led.run(outcome.run_id)
    assert "Traceback (most recent call last)" in run.error and "KeyError: 'missing'" in run.error
    assert "Traceback" in led.steps(outcome.run_id)[0].error
    assert "Traceback" not in str(err)                           # the one paragraph a user reads stays short


TASK = '''
from invoke import Collection, task
from deploy.cli import guarded
from deploy.engine import Console, Plan, Runner, Step
from deploy.ledger import Ledger


def _bug(ctx):
    return {}["missing"]


@task
@guarded
def boom(c, env="staging"):
    """A step with a bug, run as a plan."""
    led = Ledger.open(__import__("pathlib").Path.cwd())
    raise Runner(led, Console(quiet=True)).execute(Plan("promote", env, [Step("migrate", "x", run=_bug)])).error


ns = Collection(boom)
'''


@pytest.mark.parametrize("debug", ["1", None], ids=["DEPLOY_DEBUG=1 prints it", "without: one paragraph"])
def test_deploy_debug_prints_a_step_bugs_traceback(tmp_path, debug):
    (tmp_path / "tasks.py").write_text(TASK)
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOY_DEBUG", "DEPLOY_LEDGER_URL")}
    env["PYTHONPATH"] = str(ROOT)
    if debug:
        env["DEPLOY_DEBUG"] = debug
    r = subprocess.run([sys.executable, "-m", "invoke", "boom"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "error: Step migrate failed unexpectedly: KeyError" in r.stderr
    assert ("Traceback (most recent call last)" in r.stderr) == bool(debug), r.stderr


def test_a_settings_error_carries_its_file_and_environment(tmp_path):
    from deploy.config import load
    from deploy.errors import SettingsError

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "staging.toml").write_text("[database]\nlock_timeout = \"soon\"\n")
    with pytest.raises(SettingsError) as caught:
        load("staging", tmp_path)
    assert caught.value.env == "staging" and caught.value.file == str(tmp_path / "env" / "staging.toml")
    assert "lock_timeout" in caught.value.message


def test_a_message_can_be_extended_after_the_error_was_made():
    """Code that learns more after raising adds it (`err.message += ...`), as the Shopify
    push does when a failed deploy went live anyway and was put back."""
    from deploy.errors import ShopifyFailed

    err = ShopifyFailed("deploy failed for <env>", "see <env>'s versions")
    err.in_env("staging")
    err.message += "\nr3 had gone live anyway; r2 was released again."
    assert err.message == "deploy failed for staging\nr3 had gone live anyway; r2 was released again."
    assert str(err).endswith("-> see staging's versions")
