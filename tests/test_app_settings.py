"""The [app] release contract as settings: parsed into types, every mistake named with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import config
from deploy.config import AppSection
from deploy.errors import SettingsError

LOCAL = {"environment": {"kind": "local"}}


def parse(app: dict, **extra) -> config.Settings:
    return config.parse({**LOCAL, "app": app, **extra}, name="local", file=Path("env/local.toml"), root=Path("/p"))


def test_defaults_are_the_package_managers_and_the_start_script():
    a = parse({}).app
    assert a == AppSection()
    assert (a.install, a.build, a.prune, a.start, a.include) == ("auto", "auto", "auto", "auto", ())
    assert (a.port_var, a.port, a.health_path, a.build_env, a.runtime_env) == ("PORT", 3000, "/", (), ())


def test_commands_are_argv_lists_or_auto_or_none():
    a = parse({"install": ["pnpm", "install", "--frozen-lockfile"], "build": "none",
               "start": ["node", "build/server.js"], "health_path": "/healthz"}).app
    assert a.install == ("pnpm", "install", "--frozen-lockfile") and a.build == "none"
    assert a.start == ("node", "build/server.js") and a.health_path == "/healthz"


@pytest.mark.parametrize("app, match", [
    ({"install": "npm ci"}, "app.install = 'npm ci' is not allowed"),
    ({"build": []}, "app.build is an empty command"),
    ({"start": "none"}, "a release needs a start command"),
    ({"port_var": "APP PORT"}, "app.port_var = 'APP PORT' is not a variable name"),
    ({"build_env": ["OK", "no-dash"]}, r"app.build_env\[1\] = 'no-dash'"),
    ({"include": ["../secrets"]}, r"app.include\[0\] = '../secrets' is not a path inside the app folder"),
    ({"health_path": "healthz"}, "must start with /"),
    ({"port": 70000}, "app.port = 70000 is out of range"),
    ({"ready_timeout": 0}, "must be more than 0 seconds"),
    ({"keep_builds": 0}, "app.keep_builds = 0 is out of range"),
    ({"starts": ["node"]}, "unknown key app.starts"),
], ids=["string-command", "empty-argv", "no-start", "bad-port-var", "bad-build-env", "escaping-include",
        "relative-health-path", "port-range", "zero-timeout", "keep-zero", "typo"])
def test_bad_app_settings_name_the_file_and_key(app, match):
    with pytest.raises(SettingsError, match=match) as e:
        parse(app)
    assert "env/local.toml" in str(e.value)


def test_per_host_app_ports_must_match_the_hosts():
    remote = {"environment": {"kind": "remote"}, "hosts": {"hosts": ["a", "b"], "app_ports": [3001]}}
    with pytest.raises(SettingsError, match="hosts.app_ports has 1 entries for 2 hosts"):
        config.parse(remote, name="staging", file=Path("env/staging.toml"), root=Path("/p"))
