"""`~/.ssh/config` fully honoured: a real config in a temporary HOME, real sshd hosts,
driven through `invoke hosts.check`; and data tests of the precedence rules."""

from __future__ import annotations

import subprocess

import pytest

from deploy import hosts
from deploy.config import HostsSection
from deploy.errors import SettingsError
from deploy.testing.sshd import ssh_home


# ---------------------------------------------------------------- data: who wins

class _Cfg:
    """An ssh_config lookup: alias -> options (what paramiko's SSHConfig.lookup returns)."""

    def __init__(self, **blocks):
        self.blocks = blocks

    def lookup(self, host):
        return {"hostname": host, **self.blocks.get(host, {})}


@pytest.mark.parametrize("entry, settings, block, want", [
    ("app", {}, {}, ("deploy", 22)),
    ("app", {}, {"user": "ops", "port": "2222"}, ("ops", 2222)),
    ("app", {"user": "ci", "port": 2200}, {"user": "ops", "port": "2222"}, ("ci", 2200)),
    ("root@app:2022", {"user": "ci", "port": 2200}, {"user": "ops", "port": "2222"}, ("root", 2022)),
    ("app:2022", {}, {"user": "ops", "port": "2222"}, ("ops", 2022)),
    ("someone@app", {"port": 2200}, {"user": "ops"}, ("someone", 2200)),
], ids=["built-in defaults", "ssh_config beats defaults", "explicit settings beat ssh_config",
        "the entry beats everything", "entry port, ssh_config user", "entry user, settings port"])
def test_user_and_port_precedence(entry, settings, block, want):
    (t,) = hosts.targets(HostsSection(hosts=(entry,), **settings), ssh_config=_Cfg(app=block))
    assert (t.user, t.port) == want
    assert t.host == "app" and t.name == f"{want[0]}@app:{want[1]}"


def test_a_bad_port_in_ssh_config_names_the_entry_and_the_fix():
    with pytest.raises(SettingsError, match=r"hosts.hosts\[0\] = 'app'.*Port 'ssh'") as e:
        hosts.targets(HostsSection(hosts=("app",)), ssh_config=_Cfg(app={"port": "ssh"}))
    assert "Port line" in e.value.hint


@pytest.mark.parametrize("settings_value, block, want, explicit", [
    ("", {}, ("/h/.ssh/known_hosts", "/h/.ssh/known_hosts2",
              "/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"), False),
    ("", {"userknownhostsfile": "~/.ssh/a %d/b", "globalknownhostsfile": "/g/known"},
     ("/h/.ssh/a", "/h/b", "/g/known"), False),
    ("", {"userknownhostsfile": "none"}, ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"), False),
    ("~/only /x/two", {"userknownhostsfile": "/ignored"}, ("/h/only", "/x/two"), True),
], ids=["ssh defaults incl. global", "UserKnownHostsFile (several) and GlobalKnownHostsFile",
        "UserKnownHostsFile none", "settings override ssh_config"])
def test_known_hosts_files(settings_value, block, want, explicit):
    assert hosts.known_hosts_files(settings_value, block, home="/h", local_user="me") == (want, explicit)


def test_known_hosts_parsing_skips_markers_and_garbage_and_keeps_revoked_and_hashed():
    text = ("# comment\n\n"
            "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNjYQ==\n"
            "this line is garbage\n"
            "host.example ssh-ed25519 not!base64\n"
            "@revoked * ssh-ed25519 AAAAREVOKED=\n"
            "|1|c2FsdA==|aGFzaA== ssh-ed25519 AAAAHASHEDxx comment here\n"
            "a.example,[b.example]:2222,!c.example ssh-rsa AAAAPLAINxyz\n")
    kh = hosts.parse_known_hosts(text)
    assert kh.entries == ((("|1|c2FsdA==|aGFzaA==",), "ssh-ed25519", "AAAAHASHEDxx"),
                          (("a.example", "[b.example]:2222"), "ssh-rsa", "AAAAPLAINxyz"))
    assert kh.revoked == (("ssh-ed25519", "AAAAREVOKED="),)
    assert kh.skipped == (3, 4, 5)


# ---------------------------------------------------------------- real sshd hosts, real ~/.ssh/config


def _env(project, name: str, hosts_toml: str, deploy_to: str) -> None:
    project.write_env(name, f'''
[environment]
kind = "remote"
description = "hosts named by ~/.ssh/config aliases"
app_dir = "examples/app"

[hosts]
{hosts_toml}
deploy_to = "{deploy_to}"
connect_timeout = 5.0
''')


def _check(project, home, env="sshcfg"):
    r = project.invoke("hosts.check", f"--env={env}", extra_env={"HOME": str(home)}, timeout=120)
    return r.returncode, r.stdout + r.stderr


def _block(alias: str, h, extra: str = "") -> str:
    return (f"Host {alias}\n  HostName {h.host}\n  Port {h.port}\n  User {h.user}\n"
            f"  IdentityFile {{key}}\n{extra}")


@pytest.mark.sshd
@pytest.mark.parametrize("settings_lines, ok, says", [
    ('hosts = ["app1"]', True, "{user}@app1:{port}"),
    ('hosts = ["app1"]\nuser = "deploy"', False, "authentication as deploy"),
    ('hosts = ["app1:1"]', False, "cannot reach"),
    ('hosts = ["app1"]\nknown_hosts = "{empty}"', False, "is not in"),
], ids=["alias only: HostName/User/Port/IdentityFile/UserKnownHostsFile from ssh_config",
        "explicit settings user beats ssh_config", "entry port beats ssh_config",
        "explicit hosts.known_hosts replaces ssh_config's files"])
def test_an_ssh_config_alias_is_enough_and_settings_override_it(project, sshd_farm, sshd_hosts, tmp_path,
                                                                settings_lines, ok, says):
    (h,) = sshd_hosts(1)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    home = ssh_home(tmp_path / "home", sshd_farm,
                    _block("app1", h, "  UserKnownHostsFile {ssh}/deploy_known_hosts\n"),
                    files={"deploy_known_hosts": h.known_hosts_line() + "\n"})
    _env(project, "sshcfg", settings_lines.replace("{empty}", str(empty)), sshd_farm.deploy_to())
    code, out = _check(project, home)
    flat = " ".join(out.split())
    assert (code == 0) is ok, out
    assert says.format(user=h.user, port=h.port) in flat, out
    assert "Traceback" not in out
    assert (h.root / "srv/occ").is_dir() is ok, "deploy_to was created on the host the alias names"


@pytest.mark.sshd
def test_known_hosts_with_cert_authority_garbage_and_hashed_names_still_checks_keys(project, sshd_farm,
                                                                                     sshd_hosts, tmp_path):
    a, b = sshd_hosts(2)
    kh = tmp_path / "kh"
    kh.write_text(a.known_hosts_line() + "\n" + b.known_hosts_line() + "\n")
    # Hashed with the real tool, as HashKnownHosts yes writes them.
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    hashed = kh.read_text()
    assert "|1|" in hashed and "127.0.0.1" not in hashed
    mixed = ("@cert-authority *.occ.internal ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOCA\n"
             "garbage-without-fields\n"
             "[127.0.0.1]:1 ssh-ed25519 AAAA%%%notbase64\n" + hashed)
    config = "".join(_block(n, h, "  UserKnownHostsFile {ssh}/mixed\n") for n, h in (("app1", a), ("app2", b)))
    home = ssh_home(tmp_path / "home", sshd_farm, config, files={"mixed": mixed})
    _env(project, "sshcfg", 'hosts = ["app1", "app2"]', sshd_farm.deploy_to())
    code, out = _check(project, home)
    assert code == 0, out
    assert "padding" not in out.lower()

    # The same file without b's line: b alone is refused, so keys really are checked.
    (home / ".ssh/mixed").write_text(mixed.replace(hashed.splitlines()[1] + "\n", ""))
    code, out = _check(project, home)
    flat = " ".join(out.split())
    assert code == 1 and f"host 127.0.0.1:{b.port} is not in" in flat, out


@pytest.mark.sshd
def test_a_revoked_host_key_is_refused_even_when_listed(project, sshd_farm, sshd_hosts, tmp_path):
    (h,) = sshd_hosts(1)
    _, keytype, key = h.known_hosts_line().split()
    kh = f"{h.known_hosts_line()}\n@revoked * {keytype} {key}\n"
    home = ssh_home(tmp_path / "home", sshd_farm, _block("app1", h, "  UserKnownHostsFile {ssh}/kh\n"),
                    files={"kh": kh})
    _env(project, "sshcfg", 'hosts = ["app1"]', sshd_farm.deploy_to())
    code, out = _check(project, home)
    assert code == 1 and "REVOKED" in out, out
    assert not (h.root / "srv/occ").exists(), "nothing ran on a host with a revoked key"


@pytest.mark.sshd
def test_global_known_hosts_file_is_read(project, sshd_farm, sshd_hosts, tmp_path):
    (h,) = sshd_hosts(1)
    glob = tmp_path / "ssh_known_hosts"
    glob.write_text(h.known_hosts_line() + "\n")
    _env(project, "sshcfg", 'hosts = ["app1"]', sshd_farm.deploy_to())
    user_only = _block("app1", h, "  UserKnownHostsFile {ssh}/known_hosts\n")
    home = ssh_home(tmp_path / "home", sshd_farm, user_only, files={"known_hosts": ""})
    code, out = _check(project, home)
    assert code == 1 and f"host 127.0.0.1:{h.port} is not in" in " ".join(out.split()), out

    ssh_home(home, sshd_farm, user_only + f"  GlobalKnownHostsFile {glob}\n")
    code, out = _check(project, home)
    assert code == 0, out


@pytest.mark.sshd
@pytest.mark.parametrize("jump", ["bastion", "bastion0,bastion"], ids=["one jump", "chained jumps"])
def test_proxyjump_gateway_with_an_unknown_key_is_refused(project, sshd_farm, sshd_hosts, tmp_path, jump):
    app, gw, gw0 = sshd_hosts(3)
    known = {"app1": app, "bastion0": gw0}   # the last gateway's key is NOT known
    config = (_block("app1", app, f"  ProxyJump {jump}\n  UserKnownHostsFile {{ssh}}/kh\n")
              + _block("bastion", gw, "  UserKnownHostsFile {ssh}/kh\n")
              + _block("bastion0", gw0, "  UserKnownHostsFile {ssh}/kh\n"))
    kh = "".join(h.known_hosts_line() + "\n" for h in known.values())
    home = ssh_home(tmp_path / "home", sshd_farm, config, files={"kh": kh})
    _env(project, "sshcfg", 'hosts = ["app1"]', sshd_farm.deploy_to())
    code, out = _check(project, home)
    flat = " ".join(out.split())
    assert code == 1, out
    assert f"host 127.0.0.1:{gw.port} is not in" in flat and "gateway bastion" in flat, out
    assert not (app.root / "srv/occ").exists()

    # With the gateway's key known, the same route works (sshd forwards the TCP channel).
    (home / ".ssh/kh").write_text(kh + gw.known_hosts_line() + "\n")
    code, out = _check(project, home)
    assert code == 0, out
    assert (app.root / "srv/occ").is_dir()
