"""proc: the one place children get their environment, and process-group timeouts."""

from __future__ import annotations

import json
import sys

import pytest

from deploy import proc
from deploy.redact import Secret

DEPLOYER = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/rel", "USER": "rel", "LANG": "C.UTF-8", "LC_TIME": "C",
    "TZ": "UTC", "TMPDIR": "/tmp", "CI": "1", "NO_COLOR": "1", "NODE_OPTIONS": "--max-old-space-size=4096",
    "npm_config_registry": "https://registry.example.test/", "NPM_CONFIG_OFFLINE": "false",
    "npm_config__authToken": "npm-secret-token", "npm_config_//registry.example.test/:_authToken": "t2",
    "DATABASE_URL": "postgresql://app:pw@db/app", "SUPABASE_SERVICE_ROLE_KEY": "srk",
    "SESSION_SECRET": "sess", "SHOPIFY_API_SECRET": "api", "SHOPIFY_APP_AUTOMATION_TOKEN": "tok",
    "AWS_SECRET_ACCESS_KEY": "aws",
}


def test_child_env_is_the_base_without_deploy_secrets():
    env = proc.child_env(DEPLOYER)
    assert env == {k: DEPLOYER[k] for k in (
        "PATH", "HOME", "USER", "LANG", "LC_TIME", "TZ", "TMPDIR", "CI", "NO_COLOR", "NODE_OPTIONS",
        "npm_config_registry", "NPM_CONFIG_OFFLINE")}


def test_child_env_adds_named_variables_and_extra_secrets():
    env = proc.child_env(DEPLOYER, names=("SHOPIFY_APP_AUTOMATION_TOKEN", "NOT_SET"),
                         extra={"DATABASE_URL": Secret("postgresql://x:y@h/d")})
    assert env["SHOPIFY_APP_AUTOMATION_TOKEN"] == "tok" and "NOT_SET" not in env
    assert isinstance(env["DATABASE_URL"], Secret) and "SESSION_SECRET" not in env


def test_run_never_passes_the_whole_environment(monkeypatch):
    monkeypatch.setenv("SESSION_SECRET", "do-not-pass-me")
    dump = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    seen = json.loads(proc.run(dump).stdout)
    assert "SESSION_SECRET" not in seen and seen["PATH"]
    seen = json.loads(proc.run(dump, env={"ONLY_THIS": Secret("s3cr3t-value")}).stdout)
    assert seen["ONLY_THIS"] == "s3cr3t-value" and "SESSION_SECRET" not in seen


def test_run_returns_exit_codes_and_feeds_input():
    r = proc.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); sys.exit(3)"], input="hi")
    assert r.returncode == 3 and r.stdout.strip() == "HI"


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(tmp_path):
    import os
    import time

    pidfile = tmp_path / "grandchild.pid"
    # The pidfile is written before the sleep is waited on; a loaded machine gets 3 s for it.
    r = proc.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout=3)
    assert r.returncode == 124 and "timed out after 3s" in r.stderr
    grandchild = int(pidfile.read_text())
    # SIGKILL is delivered at once; the orphan is reaped by init a moment later.
    deadline = time.monotonic() + 5
    while proc.pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = proc.pid_alive(grandchild)
    if alive:
        os.kill(grandchild, 9)
    assert not alive, "the grandchild outlived its timed-out parent"


def test_hook_env_passes_named_variables_and_refuses_unset_or_secret_ones():
    from deploy import hosts
    from deploy.config import HostsSection
    from deploy.errors import SettingsError

    section = HostsSection(hosts=("h",), hook_env=("APP_BANNER",))
    assert hosts.hook_env(section, {"APP_BANNER": "blue", "SESSION_SECRET": "s"}) == {"APP_BANNER": "blue"}
    assert hosts.hook_env(HostsSection(hosts=("h",)), {"SESSION_SECRET": "s"}) == {}
    with pytest.raises(SettingsError, match="APP_BANNER is not set"):
        hosts.hook_env(section, {})
    with pytest.raises(SettingsError, match="holds a secret"):
        hosts.hook_env(section, {"APP_BANNER": Secret("hook-secret-value")})
    with pytest.raises(SettingsError, match="holds a secret"):
        hosts.hook_env(section, {"APP_BANNER": "postgresql://u:pw-in-url@db/x"})


def test_wait_exit_returns_the_exit_code_and_raises_on_timeout():
    import subprocess

    p = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    assert proc.wait_exit(p, 30) == 7
    assert proc.wait_exit(p, 30) == 7          # reaped already: Popen's own answer
    p = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait_exit(p, 0.2)
        assert p.poll() is None                 # a timeout never kills: the caller decides
    finally:
        p.kill()
        p.wait()
    assert proc.wait_exit(subprocess.Popen(["true"]), None) == 0


def test_streamed_run_keeps_exit_code_output_and_times_out(tmp_path):
    r = proc.run([sys.executable, "-c", "print('one'); import sys; sys.exit(5)"], timeout=30, stream="t")
    assert r.returncode == 5 and r.stdout == "one\n"
    r = proc.run(["sh", "-c", "echo start; sleep 30"], timeout=0.5, stream="t")
    assert r.returncode == 124 and "timed out after 0.5s" in r.stderr and r.stdout == "start\n"
