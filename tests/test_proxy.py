"""Zero downtime on one host: real sshd hosts, real caddy and nginx in front of the app
(hosts.setup), a GET through the proxy every 10 ms while releases, rollbacks, failed releases and
killed runs happen. Every request must be answered: 0 failures is the property, not a timing."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deploy import hosts
from deploy.config import AppSection, ProxySection
from deploy.errors import HostFailed, SettingsError
from deploy.hosts import _proxy, _slots
from deploy.testing.ports import free_port
from deploy.testing.sshd import make_artifact
from deploy.testing.traffic import Traffic

pytestmark = [pytest.mark.sshd, pytest.mark.serial]

SUB = "srv/occ"
# The app: Python's http.server on $PORT serving the release dir (GET /RELEASE names the release).
# A release holding BROKEN exits at start; one holding SLOW waits for the host's `go` file first.
START = ("sh", "-c", 'if [ -e BROKEN ]; then echo "fatal: broken release" >&2; exit 3; fi; '
                     'if [ -e SLOW ]; then touch ../../slow-started; while [ ! -e ../../go ]; do sleep 0.05; done; fi; '
                     'exec python3 -m http.server "$PORT" --bind 127.0.0.1')


def _port_pair() -> tuple[int, int]:
    while True:
        a, b = free_port(), free_port()
        if 0 < b - a < 1000:
            return a, b - a


class ProxyHost:
    """One sshd host with a proxy of `kind` in front of its app (set up by hosts.setup)."""

    def __init__(self, farm, h, tmp: Path, kind: str, **proxy):
        self.farm, self.h, self.tmp, self.kind = farm, h, tmp, kind
        self.app_port, offset = _port_pair()
        self.spare = self.app_port + offset
        self.listen = free_port()
        h.write(f"{SUB}/shared/.env", "HOST=127.0.0.1\n")
        self.section = farm.hosts_section([h], app_ports=(self.app_port,), health_timeout=10.0)
        self.app = AppSection(start=START, health_path="/RELEASE", ready_timeout=10.0)
        self.proxy = ProxySection(kind=kind, listen=self.listen, admin=f"127.0.0.1:{free_port()}",
                                  spare_port_offset=offset, drain_seconds=proxy.pop("drain_seconds", 0.3), **proxy)
        self.artifacts: dict[str, object] = {}

    @property
    def root(self) -> Path:
        return self.h.root / SUB

    def here(self) -> ProxySection:
        return self.proxy.for_host(0, str(self.root))

    def artifact(self, rid: str, **files: str):
        key = rid + "".join(sorted(files))
        if key not in self.artifacts:
            self.artifacts[key] = make_artifact(self.tmp / "artifacts" / key, rid, files=files)
        return self.artifacts[key]

    def release(self, rid: str, run_id: str | None = None, **files: str):
        return hosts.release(self.section, self.artifact(rid, **files), run_id=run_id or f"run-{rid}", app=self.app,
                             proxy=self.proxy)

    def rollback(self, to: str | None = None):
        return hosts.rollback(self.section, to, run_id=f"rb-{to}-{time.monotonic_ns()}", app=self.app,
                              proxy=self.proxy)

    def served(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.listen}/RELEASE", timeout=5).read().decode().strip()

    def sh(self, cmd: str) -> str:
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30).stdout.strip()

    def upstream(self) -> str:
        return self.sh(_proxy.upstream_command(self.here()))

    def slots(self) -> dict[int, bool]:
        """port -> whether its app answers."""
        out = {}
        for port in (self.app_port, self.spare):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/RELEASE", timeout=2).read()
                out[port] = True
            except OSError:
                out[port] = False
        return out

    def current(self) -> str | None:
        link = self.root / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None

    def traffic(self) -> Traffic:
        return Traffic("127.0.0.1", self.listen, "/RELEASE", interval=0.01)

    def stop_all(self) -> None:
        t = hosts.targets(self.section, self.app)[0]
        for port in (self.app_port, self.spare):
            self.sh(_slots.stop_slot_command(t, port))
        self.sh(_proxy.proxy_remove_command(self.here()))


@pytest.fixture
def proxy_host(sshd_farm, sshd_hosts, tmp_path):
    made: list[ProxyHost] = []

    def make(kind: str, **proxy) -> ProxyHost:
        ph = ProxyHost(sshd_farm, sshd_hosts(1)[0], tmp_path / f"h{len(made)}", kind, **proxy)
        made.append(ph)
        hosts.setup_proxy(ph.section, ph.proxy, ph.app)
        return ph

    yield make
    for ph in made:
        ph.stop_all()


KINDS = [pytest.param("caddy", id="caddy"), pytest.param("nginx", id="nginx")]
R1, R2, R3, R4 = (f"20240501120{i}00-abc{i}def" for i in range(1, 5))


# ---------------------------------------------------------------- commands (data)

def test_proxy_commands_take_one_hosts_settings_only():
    p = ProxySection(kind="caddy", listen_ports=(81, 82), admin_ports=(91, 92))
    with pytest.raises(ValueError, match="for_host"):
        _proxy.switch_command(p, 3000)
    one = p.for_host(1, "/srv/app/")
    assert (one.listen, one.admin, one.config_dir) == (82, "127.0.0.1:92", "/srv/app/proxy")
    assert one.upstream_file == "/srv/app/proxy/upstream.conf"


@pytest.mark.parametrize("kind, expect", [
    ("caddy", ['PATCH', '[{"dial":"127.0.0.1:4001"}]', '/id/occ_upstream/upstreams']),
    ("nginx", ["upstream occ_app { server 127.0.0.1:4001; }", "-t -q", "-s reload", "X-Occ-Probe: 1"]),
], ids=["caddy-patches-its-admin-api", "nginx-writes-the-include-tests-and-reloads"])
def test_switch_command_points_the_proxy_at_the_port_and_waits_to_see_it(kind, expect):
    cmd = _proxy.switch_command(ProxySection(kind=kind).for_host(0, "/srv/occ"), 4001)
    for part in expect:
        assert part in cmd


@pytest.mark.parametrize("text, key", [
    ('[proxy]\nkind = "traefik"\n', "proxy.kind"),
    ('[proxy]\nkind = "caddy"\nadmin = "0.0.0.0:2019"\n', "proxy.admin"),
    ('[proxy]\nkind = "nginx"\nlisten_ports = [80, 81]\n', "proxy.listen_ports"),
    ('[proxy]\nkind = "nginx"\nconfig_dir = "../etc"\n', "proxy.config_dir"),
    ('[proxy]\nkind = "caddy"\n[hosts]\nhosts = ["a"]\nrestart = "bin/restart"\n', "hosts.restart"),
    ('[proxy]\nkind = "nginx"\ndrain_seconds = -1\n', "proxy.drain_seconds"),
], ids=["unknown-kind", "admin-api-off-loopback", "listen-ports-not-one-per-host", "relative-config-dir",
        "with-a-restart-hook", "negative-drain"])
def test_bad_proxy_settings_are_refused_naming_the_key(tmp_path, text, key):
    import tomllib

    from deploy.config import parse

    raw = tomllib.loads(text)
    raw.setdefault("hosts", {}).setdefault("hosts", ["deploy@10.0.0.5"])
    with pytest.raises(SettingsError) as e:
        parse(raw, name="staging", file=tmp_path / "staging.toml", root=tmp_path)
    assert key in e.value.message and "staging.toml" in e.value.message


# ---------------------------------------------------------------- on real hosts

@pytest.mark.parametrize("kind", KINDS)
def test_releases_and_a_rollback_through_the_proxy_answer_every_request(proxy_host, kind):
    ph = proxy_host(kind)
    again = hosts.setup_proxy(ph.section, ph.proxy, ph.app)
    assert [r.done for r in again] == ["running"], "a second setup leaves the running proxy alone"
    ph.release(R1)
    assert ph.served() == R1
    with ph.traffic() as tr:
        for rid in (R2, R3):
            ph.release(rid)
            assert ph.served() == rid
        ph.rollback()
        assert ph.served() == R2
        time.sleep(0.1)
    assert tr.failures == [], tr.summary()
    assert tr.sent > 50 and {R2, R3} <= set(tr.bodies)
    assert ph.current() == R2 and list(ph.slots().values()).count(True) == 1, "one app left running"
    assert int(ph.upstream()) in [p for p, up in ph.slots().items() if up]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("why, files", [
    pytest.param("exits at start", {"BROKEN": "1"}, id="app-exits"),
    pytest.param("never healthy", {"RELEASE": "x"}, id="health-404"),
])
def test_a_release_that_fails_health_is_never_switched_to_and_the_old_one_keeps_serving(proxy_host, kind, why,
                                                                                       files):
    ph = proxy_host(kind)
    ph.release(R1)
    if why == "never healthy":
        ph.app = dataclasses.replace(ph.app, health_path="/no-such-page", ready_timeout=1.0)
        ph.section = dataclasses.replace(ph.section, health_timeout=1.0)
        files = {}
    live = ph.upstream()
    with ph.traffic() as tr:
        with pytest.raises(HostFailed) as e:
            ph.release(R2, **files)
        time.sleep(0.1)
    err = e.value.results[0].error
    assert "the proxy was not switched" in err
    assert ("exited" in err) if why == "exits at start" else ("404" in err)
    assert tr.failures == [] and set(tr.bodies) == {R1}, tr.summary()
    assert ph.upstream() == live and ph.current() == R1 and ph.served() == R1
    assert list(ph.slots().values()).count(True) == 1 and not (ph.root / ".deploy-lock").exists()


KILL = r'''
import json, sys
from deploy import hosts
from deploy.build import Artifact
from deploy.config import AppSection, HostsSection, ProxySection

def made(cls, d):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

s, app, proxy, art = (json.loads(a) for a in sys.argv[1:5])
hosts.release(made(HostsSection, s), Artifact(**art), run_id="run-killed", app=made(AppSection, app),
              proxy=made(ProxySection, proxy))
'''


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("point", ["starting-beside", "draining"])
@pytest.mark.parametrize("then", ["resume", "abort"])
def test_a_killed_release_resumed_or_aborted_leaves_one_live_upstream(proxy_host, kind, point, then):
    ph = proxy_host(kind, drain_seconds=60.0 if point == "draining" else 0.3)
    ph.release(R1)
    files = {"SLOW": "1"} if point == "starting-beside" else {}
    art = ph.artifact(R2, **files)
    go, started = ph.h.root / SUB / "go", ph.h.root / SUB / "slow-started"
    args = [json.dumps(dataclasses.asdict(x)) for x in (ph.section, ph.app, ph.proxy)]
    args.append(json.dumps({**dataclasses.asdict(art), "path": str(art.path)}))
    with ph.traffic() as tr:
        p = subprocess.Popen([sys.executable, "-c", KILL, *args], cwd=Path(__file__).resolve().parents[1],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        # killed while R2 starts beside R1 (before any switch), or while R1 drains after the switch
        while not (started.exists() if point == "starting-beside" else ph.served() == R2):
            assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        if point == "draining":
            time.sleep(1.0)   # past the switch command (its wait for nginx's old workers), well inside the drain
        p.kill()
        p.wait()
        ph.h.write(f"{SUB}/go", "")
        assert ph.served() == (R1 if point == "starting-beside" else R2)
        ph.proxy = dataclasses.replace(ph.proxy, drain_seconds=0.3)
        if then == "resume":
            hosts.release(ph.section, art, run_id="run-killed", app=ph.app, proxy=ph.proxy)
        else:
            hosts.undo_release(ph.section, R2, run_id="run-killed", app=ph.app, proxy=ph.proxy)
        time.sleep(0.1)
    want = R2 if then == "resume" else R1
    assert tr.failures == [], tr.summary()
    assert ph.served() == want and ph.current() == want
    up = [p for p, ok in ph.slots().items() if ok]
    assert len(up) == 1 and ph.upstream() == str(up[0]), "one app runs, and the proxy serves from it"
    assert not (ph.root / ".deploy-lock").exists()
