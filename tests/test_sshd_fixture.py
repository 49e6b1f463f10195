"""The sshd fixture gives real, separate hosts whose keys are checked."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.sshd


def test_fabric_runs_a_command_on_a_real_sshd_host(sshd_hosts):
    (host,) = sshd_hosts(1)
    with host.connection() as c:
        r = c.run("id -un && pwd", hide=True, warn=True, in_stream=False)
    assert r.ok, r.stderr
    assert r.stdout.split()[0] == host.user


def test_each_host_has_its_own_empty_root_that_the_login_user_can_write(sshd_hosts):
    a, b = sshd_hosts(2)
    assert a.port != b.port and a.root != b.root
    assert list(a.root.iterdir()) == []
    with a.connection() as c:
        assert c.run(f"echo hi > {a.root}/marker", hide=True, warn=True, in_stream=False).ok
    assert (a.root / "marker").read_text() == "hi\n"
    assert not (b.root / "marker").exists()


def test_known_hosts_lists_each_host_by_bracketed_port(sshd_hosts):
    hosts = sshd_hosts(2)
    lines = hosts[0].known_hosts.read_text().splitlines()
    for h in hosts:
        assert any(line.startswith(f"[127.0.0.1]:{h.port} ssh-ed25519 ") for line in lines)


def test_a_host_key_not_in_known_hosts_is_refused(sshd_hosts, tmp_path):
    from fabric import Connection
    from paramiko import RejectPolicy
    from paramiko.ssh_exception import SSHException

    (host,) = sshd_hosts(1)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    c = Connection(host.host, user=host.user, port=host.port, connect_kwargs=host.connect_kwargs())
    c.client.load_host_keys(str(empty))
    c.client.set_missing_host_key_policy(RejectPolicy())
    with pytest.raises(SSHException, match="not found in known_hosts"):
        c.open()


def test_a_root_owned_read_only_directory_really_refuses_the_login_user(sshd_hosts):
    (host,) = sshd_hosts(1)
    ro = host.root / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with host.connection() as c:
        r = c.run(f"touch {ro}/x", hide=True, warn=True, in_stream=False)
    assert not r.ok
    assert not (ro / "x").exists()
