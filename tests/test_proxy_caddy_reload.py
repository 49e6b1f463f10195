"""caddy closes its listening socket at every config change (a new one is bound beside it with
SO_REUSEPORT), and Linux resets the connections queued on the closed socket unless
net.ipv4.tcp_migrate_req = 1 moves them. hosts.setup refuses caddy on a host without it, before
it writes or starts anything, and says what to do; nginx keeps its socket and is not asked."""

from __future__ import annotations

import subprocess

import pytest

from deploy.config import ProxySection
from deploy.hosts import _proxy


def _check(tmp_path, content: str | None) -> subprocess.CompletedProcess:
    f = tmp_path / "tcp_migrate_req"
    if content is not None:
        f.write_text(content)
    return subprocess.run(["sh", "-c", _proxy.migrate_req_check(str(f))], capture_output=True, text=True)


def test_a_host_that_migrates_queued_connections_passes(tmp_path):
    r = _check(tmp_path, "1\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_a_host_that_resets_them_is_told_the_setting_and_how_to_keep_it(tmp_path):
    r = _check(tmp_path, "0\n")
    assert r.returncode == 1 and r.stdout == ""
    msg = r.stderr.strip()
    assert "net.ipv4.tcp_migrate_req = 0" in msg
    assert "sysctl -w net.ipv4.tcp_migrate_req=1" in msg and "/etc/sysctl.d/" in msg
    assert 'kind = "nginx"' in msg and len(msg.splitlines()) == 1


def test_a_kernel_without_the_setting_is_told_to_use_nginx(tmp_path):
    r = _check(tmp_path, None)
    assert r.returncode == 1 and "Linux 5.14" in r.stderr and 'kind = "nginx"' in r.stderr


@pytest.mark.parametrize("kind, checked", [("caddy", True), ("nginx", False)])
def test_setup_checks_the_kernel_first_for_caddy_only(kind, checked):
    cmd = _proxy.proxy_setup_command(ProxySection(kind=kind).for_host(0, "/srv/occ"), 4001)
    lines = cmd.splitlines()
    has = [i for i, ln in enumerate(lines) if _proxy.MIGRATE_REQ in ln]
    assert bool(has) == checked
    if checked:
        first_change = next(i for i, ln in enumerate(lines) if "mkdir" in ln or "caddy run" in ln)
        assert has[0] < first_change, "refused before anything is written or started"


@pytest.mark.parametrize("content, ok", [("1\n", True), ("0\n", False), (None, False)],
                         ids=["set", "off", "no-such-setting"])
def test_the_promotions_probe_prints_ok_or_the_reason_and_never_fails(tmp_path, content, ok):
    f = tmp_path / "tcp_migrate_req"
    if content is not None:
        f.write_text(content)
    r = subprocess.run(["sh", "-c", _proxy.migrate_req_probe(str(f))], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert (r.stdout.strip() == "ok") == ok
    if not ok:
        assert r.stdout.startswith("caddy resets connections at each switch on this host")


@pytest.mark.sshd
def test_each_host_without_the_setting_is_named_before_a_promotion_changes_anything(sshd_farm, sshd_hosts):
    from deploy import hosts

    a, b = sshd_hosts(2)
    section = sshd_farm.hosts_section([a, b])
    b.write("kernel/tcp_migrate_req", "0\n")
    a.write("kernel/tcp_migrate_req", "1\n")
    # each host reads the same path; the farm's hosts share one machine, so the path is per test
    path_a, path_b = str(a.root / "kernel/tcp_migrate_req"), str(b.root / "kernel/tcp_migrate_req")
    assert hosts.proxy_unready(section, ProxySection(kind="caddy"), path=path_a) == []
    unready = hosts.proxy_unready(section, ProxySection(kind="caddy"), path=path_b)
    assert len(unready) == 2 and all("net.ipv4.tcp_migrate_req = 0" in u for u in unready)
    names = [t.name for t in hosts.targets(section)]
    assert all(any(u.startswith(f"{n}: caddy resets") for u in unready) for n in names)
    # the kernel's own file here: the test script sets it, and caddy's tests need it
    assert hosts.proxy_unready(section, ProxySection(kind="caddy")) == []
    assert hosts.proxy_unready(section, ProxySection(kind="nginx"), path=path_b) == [], "nginx is not asked"
