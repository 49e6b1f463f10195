"""The load balancer settings of a rolling release, read and checked with the file, and the
command built for each batch (data tests; tests/test_rolling_requests.py runs them for real)."""

from __future__ import annotations

import pytest

from deploy import config, rollout
from deploy.errors import SettingsError

BASE = '[environment]\nkind = "remote"\n[hosts]\nhosts = ["deploy@h1", "deploy@h2"]\nrollout = "rolling"\n'


@pytest.mark.parametrize("lines, expect", [
    ('balancer = ["scripts/lb", "--pool", "web"]\ndrain_seconds = 5\nsettle_seconds = 2.5\n',
     (("scripts/lb", "--pool", "web"), 5.0, 2.5)),
    ("", ((), 0.0, 0.0)),
], ids=["all-set", "defaults"])
def test_balancer_settings_are_read(tmp_path, lines, expect):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "x.toml").write_text(BASE + lines)
    h = config.load("x", tmp_path).hosts
    assert (tuple(h.balancer), h.drain_seconds, h.settle_seconds) == expect


@pytest.mark.parametrize("line, key", [
    ("drain_seconds = -1", "hosts.drain_seconds"),
    ("settle_seconds = 601", "hosts.settle_seconds"),
    ('balancer = ["lb", ""]', "hosts.balancer"),
], ids=["negative-drain", "settle-too-long", "empty-word-in-command"])
def test_bad_balancer_settings_name_the_file_and_key(tmp_path, line, key):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "x.toml").write_text(BASE + line + "\n")
    with pytest.raises(SettingsError) as e:
        config.load("x", tmp_path)
    assert "x.toml" in e.value.message and key in e.value.message


@pytest.mark.parametrize("balancer, action, upstreams, argv", [
    (("lb",), "out", ["10.0.0.5:3000"], ["lb", "out", "10.0.0.5:3000"]),
    (("python3", "-m", "pool", "--name", "web"), "in", ["a:1", "b:2"],
     ["python3", "-m", "pool", "--name", "web", "in", "a:1", "b:2"]),
], ids=["one-host-out", "a-batch-back-in"])
def test_balancer_argv_names_the_action_and_every_upstream_of_the_batch(balancer, action, upstreams, argv):
    assert rollout.balancer_argv(balancer, action, upstreams) == argv


def test_balancer_argv_refuses_another_action():
    with pytest.raises(ValueError):
        rollout.balancer_argv(("lb",), "drop", ["a:1"])
