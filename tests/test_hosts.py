"""Releases over real SSH (sshd on loopback): all hosts switch, or none stays switched."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from deploy.testing.stage import free_port

from deploy import hosts, rollout
from deploy.errors import HostFailed, LockHeld, SettingsError
from deploy.testing.sshd import make_artifact

pytestmark = pytest.mark.sshd

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
R1, R2, R3, R4 = (f"2024050112000{i}-abc123{i}" for i in range(1, 5))
SUB = "srv/occ"


def _free_port() -> int:
    return free_port()


class Fleet:
    """N sshd hosts with the test app's shared/.env in place, and settings aimed at them."""

    def __init__(self, farm, hs, tmp: Path):
        self.farm, self.hosts, self.tmp = farm, hs, tmp
        self.app_ports = [_free_port() for _ in hs]
        for h, port in zip(hs, self.app_ports):
            h.write(f"{SUB}/shared/.env", f"PORT={port}\n")
        self.section = farm.hosts_section(
            hs, restart="bin/restart", health_timeout=5.0,
            health_urls=tuple(f"http://127.0.0.1:{p}/RELEASE" for p in self.app_ports))
        self.artifacts = {}

    def settings(self, **kw):
        from dataclasses import replace

        return replace(self.section, **kw)

    def artifact(self, rid: str, **kw):
        if rid not in self.artifacts:
            self.artifacts[rid] = make_artifact(self.tmp / "artifacts", rid, **kw)
        return self.artifacts[rid]

    def deploy_to(self, h) -> Path:
        return h.root / SUB

    def current(self, h) -> str | None:
        link = self.deploy_to(h) / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None

    def currents(self) -> list[str | None]:
        return [self.current(h) for h in self.hosts]

    def served(self) -> list[str]:
        return [urllib.request.urlopen(f"http://127.0.0.1:{p}/RELEASE", timeout=5).read().decode().strip()
                for p in self.app_ports]

    def release_dirs(self, h) -> list[str]:
        d = self.deploy_to(h) / "releases"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def locked(self) -> list[bool]:
        return [(self.deploy_to(h) / ".deploy-lock").exists() for h in self.hosts]


@pytest.fixture
def fleet(sshd_hosts, sshd_farm, tmp_path):
    def make(n: int) -> Fleet:
        return Fleet(sshd_farm, sshd_hosts(n), tmp_path)

    return make


# ---------------------------------------------------------------- happy paths

def test_release_to_one_host_unpacks_switches_restarts_and_serves_it(fleet):
    f = fleet(1)
    (r,) = hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    assert r.ok and r.release == R1 and r.previous is None and r.error == ""
    d = f.deploy_to(f.hosts[0])
    assert os.readlink(d / "current") == f"releases/{R1}"
    assert (d / "releases" / R1 / "RELEASE").read_text().strip() == R1
    assert os.readlink(d / "releases" / R1 / ".env") == str(d / "shared" / ".env")
    assert f.served() == [R1]
    assert f.locked() == [False]
    assert not list((d / ".uploads").iterdir())
    assert f"release {R1} (was -)" in (d / "revisions.log").read_text()


def test_release_to_four_hosts_puts_every_host_on_it_and_records_previous(fleet):
    f = fleet(4)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    results = hosts.release(f.section, f.artifact(R2), run_id="run-2", now=T0)
    assert [(r.ok, r.previous, r.release) for r in results] == [(True, R1, R2)] * 4
    assert [r.host for r in results] == [h.address for h in f.hosts]
    assert f.currents() == [R2] * 4
    assert f.served() == [R2] * 4
    assert hosts.current_release(f.section) == {h.address: R2 for h in f.hosts}
    listed = hosts.releases(f.section)
    assert [(x.releases, x.current) for x in listed] == [((R1, R2), R2)] * 4


def test_check_reports_writable_space_and_current_release(fleet):
    f = fleet(2)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    (f.deploy_to(f.hosts[1])).chmod(0o755)
    os.chown(f.deploy_to(f.hosts[1]), 0, 0)  # root-owned: the login user cannot write it
    checks = hosts.check(f.section)
    assert [(c.ok, c.writable, c.current) for c in checks] == [(True, True, R1), (False, False, R1)]
    assert checks[0].free_mb and checks[0].free_mb > 0
    assert "not writable" in checks[1].error and f.hosts[1].user in checks[1].error


# ---------------------------------------------------------------- failures before the switch

def test_unreachable_host_fails_the_release_before_any_host_switches(fleet, sshd_farm):
    f = fleet(3)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    sshd_farm.stop_host(f.hosts[1])
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, f.artifact(R2), run_id="run-2", now=T0)
    msg = str(e.value)
    assert f"cannot reach 127.0.0.1:{f.hosts[1].port}" in msg
    assert "before any host switched" in msg
    assert [r.ok for r in e.value.results] == [True, False, True]
    assert f.currents() == [R1] * 3
    for h in (f.hosts[0], f.hosts[2]):
        assert f.release_dirs(h) == [R1]
    assert f.locked() == [False, False, False]


def test_read_only_releases_dir_on_one_host_leaves_every_host_on_the_old_release(fleet):
    f = fleet(3)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    ro = f.deploy_to(f.hosts[2]) / "releases"
    os.chown(ro, 0, 0)
    ro.chmod(0o555)
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, f.artifact(R2), run_id="run-2", now=T0)
    bad = e.value.results[2]
    assert not bad.ok and "unpacking" in bad.error and "Permission denied" in bad.error
    assert f.currents() == [R1] * 3
    assert f.served() == [R1] * 3
    for h in f.hosts:
        assert f.release_dirs(h) == [R1], "half-made release dirs must be removed"
    assert f.locked() == [False] * 3


def test_failing_before_switch_hook_leaves_every_host_on_the_old_release(fleet):
    f = fleet(2)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    s = f.settings(before_switch='test "$DEPLOY_HOST" != ' + f"'{f.hosts[1].address}' || {{ echo migrations refused >&2; exit 9; }}")
    with pytest.raises(HostFailed) as e:
        hosts.release(s, f.artifact(R2), run_id="run-2", now=T0)
    assert [r.ok for r in e.value.results] == [True, False]
    assert "before_switch hook failed (exit 9): migrations refused" in e.value.results[1].error
    assert f.currents() == [R1, R1]
    assert [f.release_dirs(h) for h in f.hosts] == [[R1], [R1]]


def test_missing_shared_file_fails_before_switch_naming_it(fleet):
    f = fleet(1)
    (f.deploy_to(f.hosts[0]) / "shared" / ".env").unlink()
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    assert "shared file" in e.value.results[0].error and "shared/.env is missing" in e.value.results[0].error
    assert f.currents() == [None]


def test_corrupted_upload_is_caught_by_the_checksum(fleet, tmp_path):
    from dataclasses import replace

    f = fleet(1)
    art = f.artifact(R1)
    lying = replace(art, sha256="0" * 64)
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, lying, run_id="run-1", now=T0)
    assert "sha256 of the uploaded artifact does not match" in e.value.results[0].error
    assert f.currents() == [None] and f.release_dirs(f.hosts[0]) == []


# ---------------------------------------------------------------- failures after the switch

def test_failed_health_after_switch_returns_switched_hosts_to_previous(fleet):
    f = fleet(3)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    dead = _free_port()
    urls = list(f.section.health_urls)
    urls[1] = f"http://127.0.0.1:{dead}/healthz"
    s = f.settings(health_urls=tuple(urls), health_timeout=1.0)
    with pytest.raises(HostFailed) as e:
        hosts.release(s, f.artifact(R2), run_id="run-2", now=T0)
    assert "after switching; every host that switched was returned" in str(e.value)
    assert f"health check http://127.0.0.1:{dead}/healthz failed" in e.value.results[1].error
    assert [r.release for r in e.value.results] == [R1] * 3
    assert f.currents() == [R1] * 3
    assert f.served() == [R1] * 3, "switched-back hosts must be restarted on the old release"
    assert f.locked() == [False] * 3


def test_undo_release_returns_every_host_to_the_release_before_it(fleet):
    f = fleet(2)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    hosts.release(f.section, f.artifact(R2), run_id="run-2", now=T0)
    results = hosts.undo_release(f.section, R2, run_id="run-2", now=T0)
    assert [(r.ok, r.previous, r.release) for r in results] == [(True, R2, R1)] * 2
    assert f.currents() == [R1, R1] and f.served() == [R1, R1]
    again = hosts.undo_release(f.section, R2, run_id="run-2", now=T0)
    assert [r.release for r in again] == [R1, R1], "undo is safe to repeat"


def test_undo_of_a_first_release_removes_current(fleet):
    f = fleet(1)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    hosts.undo_release(f.section, R1, run_id="run-1", now=T0)
    assert f.currents() == [None]


KILL_SCRIPT = textwrap.dedent("""
    import json, sys
    from deploy import hosts
    from deploy.config import HostsSection
    from deploy.build import Artifact
    from pathlib import Path
    cfg, art = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    section = HostsSection(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    artifact = Artifact(**{**art, "path": Path(art["path"])})
    hosts.release(section, artifact, run_id="run-killed")
""")


@pytest.mark.parametrize("then", ["undo", "rerun"])
def test_release_killed_during_the_switch_is_made_consistent_by_undo_or_rerun(fleet, then):
    import dataclasses
    import json

    f = fleet(3)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    art = f.artifact(R2)
    # One host at a time; the first host's restart of R2 hangs, so the controller dies with
    # that host switched and the others prepared but not switched.
    hang = f.hosts[0].root / "hang"         # host roots are writable by the login user
    marker = f.hosts[0].root / "switched"
    restart = (f'if [ "$RELEASE_ID" = {R2} ] && [ ! -e {hang} ]; then touch {marker}; '
               f'echo $$ > "$DEPLOY_TO/shared/hang.pid"; exec sleep 60; fi; bin/restart')
    s = f.settings(max_parallel=1, restart=restart)
    cfg = dataclasses.asdict(s)
    art_json = {**dataclasses.asdict(art), "path": str(art.path)}
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg), json.dumps(art_json)],
                         cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert p.poll() is None, p.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p.kill()
    p.wait()
    hang.touch()
    states = f.currents()
    assert states.count(R2) == 1 and states.count(R1) == 2, "each host is on one release, never half-switched"
    with pytest.raises(LockHeld, match="run-killed"):
        hosts.release(f.section, art, run_id="someone-else", now=T0)
    # The killed run's restart hook still runs on the first host (sshd leaves it running) and
    # holds that host's fence: nothing may change there until it ends. The undo or re-run waits
    # for it, then stops naming the fence and changes nothing (the other hosts stay on R1).
    if then == "undo":
        with pytest.raises(HostFailed, match="deploy-fence stayed locked"):
            hosts.undo_release(f.section, R2, run_id="run-killed")
        assert f.currents() == states
    os.kill(int((f.deploy_to(f.hosts[0]) / "shared/hang.pid").read_text()), 9)   # the operator stops it
    if then == "undo":
        hosts.undo_release(f.section, R2, run_id="run-killed")
        assert f.currents() == [R1] * 3 and f.served() == [R1] * 3
    else:
        hosts.release(f.section, art, run_id="run-killed")
        assert f.currents() == [R2] * 3 and f.served() == [R2] * 3
    assert f.locked() == [False] * 3


# ---------------------------------------------------------------- the lock

def _hold_lock(f, h, holder="alice@ci-7", run_id="run-99", at=T0):
    d = f.deploy_to(h) / ".deploy-lock"
    h.write(f"{SUB}/.deploy-lock/details", hosts.lock_details(holder, run_id, R9, at))
    return d


R9 = "20240501120009-abc1239"


def test_a_lock_held_by_another_run_stops_the_release_naming_the_holder(fleet):
    f = fleet(3)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    _hold_lock(f, f.hosts[1])
    with pytest.raises(LockHeld) as e:
        hosts.release(f.section, f.artifact(R2), run_id="run-2", now=T0 + timedelta(minutes=5))
    msg = str(e.value)
    assert "alice@ci-7" in msg and "run-99" in msg and f.hosts[1].address in msg and "5 min" in msg
    assert f.currents() == [R1] * 3
    assert f.locked() == [False, True, False], "our locks on the other hosts are released"
    [info] = hosts.lock_status(f.section)
    assert (info.host, info.holder, info.run_id, info.acquired_at) == (f.hosts[1].address, "alice@ci-7", "run-99", T0)


def test_break_lock_removes_only_a_stale_lock_unless_forced(fleet):
    f = fleet(1)
    _hold_lock(f, f.hosts[0])
    with pytest.raises(LockHeld, match="younger than 120 min"):
        hosts.break_lock(f.section, now=T0 + timedelta(minutes=30))
    assert f.locked() == [True]
    removed = hosts.break_lock(f.section, now=T0 + timedelta(hours=3))
    assert [i.run_id for i in removed] == ["run-99"] and f.locked() == [False]
    _hold_lock(f, f.hosts[0])
    hosts.break_lock(f.section, now=T0, force=True)
    assert f.locked() == [False]


# ---------------------------------------------------------------- rollback, pruning

def test_rollback_goes_to_the_previous_release_or_a_named_one(fleet):
    """These releases carry no RELEASE.json (an older toolkit's, or hand-made): the rollback goes
    to them, and each host's result says their files could not be checked."""
    f = fleet(2)
    for i, rid in enumerate((R1, R2, R3)):
        hosts.release(f.section, f.artifact(rid), run_id=f"run-{i}", now=T0)
    results = hosts.rollback(f.section, run_id="rb-1", now=T0)
    assert [(r.previous, r.release) for r in results] == [(R3, R2)] * 2
    assert all(r.ok and r.note.startswith(f"releases/{R2} has no RELEASE.json") for r in results), results
    assert f.currents() == [R2, R2] and f.served() == [R2, R2]
    hosts.rollback(f.section, to=R1, run_id="rb-2", now=T0)
    assert f.currents() == [R1, R1] and f.served() == [R1, R1]
    with pytest.raises(HostFailed, match="no release before"):
        hosts.rollback(f.section, run_id="rb-3", now=T0)
    with pytest.raises(HostFailed, match="is not on this host"):
        hosts.rollback(f.section, to="20200101000000-nothere", run_id="rb-4", now=T0)
    assert f.currents() == [R1, R1]


def test_keep_releases_prunes_the_oldest_but_never_current_or_previous(fleet):
    f = fleet(1)
    s = f.settings(keep_releases=2)
    for i, rid in enumerate((R1, R2, R3, R4)):
        hosts.release(s, f.artifact(rid), run_id=f"run-{i}", now=T0)
    assert f.release_dirs(f.hosts[0]) == [R3, R4]
    (r,) = hosts.rollback(s, to=R3, run_id="rb", now=T0)
    assert r.release == R3 and "has no RELEASE.json" in r.note
    hosts.release(s, f.artifact(R4), run_id="again", now=T0)
    assert f.release_dirs(f.hosts[0]) == [R3, R4]


# ---------------------------------------------------------------- input and trust

@pytest.mark.parametrize("rid", ["../../etc", "a;touch /tmp/pwned", "$(id)", ".hidden", "a b", "", "x" * 101,
                                 "a/b", "r..1"],
                         ids=["dotdot", "semicolon", "subshell", "hidden", "space", "empty", "too-long", "slash",
                              "inner-dotdot"])
def test_hostile_release_id_is_rejected_before_connecting(fleet, rid):
    from dataclasses import replace

    f = fleet(1)
    art = replace(f.artifact(R1), release_id=rid)
    with pytest.raises(SettingsError, match="Release id"):
        hosts.release(f.section, art, run_id="run-1", now=T0)
    with pytest.raises(SettingsError):
        hosts.rollback(f.section, to=rid, run_id="run-1", now=T0)
    assert not (f.deploy_to(f.hosts[0]) / "releases").exists(), "nothing ran on the host"


def test_a_changed_host_key_is_refused_naming_the_host(fleet, tmp_path):
    f = fleet(2)
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = other.with_suffix(".pub").read_text().split()
    lines = f.hosts[0].known_hosts.read_text().splitlines()
    lines = [f"[127.0.0.1]:{f.hosts[1].port} {fake[0]} {fake[1]}" if l.startswith(f"[127.0.0.1]:{f.hosts[1].port} ")
             else l for l in lines]
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    with pytest.raises(HostFailed) as e:
        hosts.release(f.settings(known_hosts=str(kh)), f.artifact(R1), run_id="run-1", now=T0)
    assert f"host key of {f.hosts[1].address} does NOT match" in str(e.value)
    assert f.currents() == [None, None]


def test_a_host_missing_from_known_hosts_is_refused(fleet, tmp_path):
    f = fleet(1)
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    checks = hosts.check(f.settings(known_hosts=str(kh)))
    assert not checks[0].ok and f"host 127.0.0.1:{f.hosts[0].port} is not in {kh}" in checks[0].error


def test_wrong_key_is_an_authentication_failure_naming_user_and_host(fleet, tmp_path):
    f = fleet(1)
    other = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    [c] = hosts.check(f.settings(key_file=str(other)))
    assert not c.ok and f"authentication as {f.hosts[0].user} on 127.0.0.1:{f.hosts[0].port} failed" in c.error


def test_hook_variables_reach_the_hook_and_secrets_are_refused(fleet):
    from deploy.redact import Secret

    f = fleet(1)
    s = f.settings(before_switch='printf "%s %s" "$RELEASE_ID" "$DEPLOY_REASON" > HOOK_SAW')
    hosts.release(s, f.artifact(R1), run_id="run-1", now=T0, env={"DEPLOY_REASON": "it's a test"})
    assert (f.deploy_to(f.hosts[0]) / "releases" / R1 / "HOOK_SAW").read_text() == f"{R1} it's a test"
    with pytest.raises(SettingsError, match="holds a secret"):
        hosts.release(s, f.artifact(R2), run_id="run-2", now=T0, env={"TOKEN": Secret("hunter2")})
    assert f.currents() == [R1]


# ---------------------------------------------------------------- the toolkit's supervisor on real hosts

from deploy.testing.app import BUILT_AT, SHA_B, app_artifact, copy_example_app  # noqa: E402,F401


@pytest.fixture(scope="module")
def crashing_artifact(tmp_path_factory):
    """The example app whose server exits at start (a release whose start command fails)."""
    from deploy.build import build

    base = tmp_path_factory.mktemp("crashing")
    app = copy_example_app(base / "app")
    server = app / "server.mjs"
    server.write_text("console.error('fatal: missing SHOPIFY_API_KEY'); process.exit(3);\n" + server.read_text())
    return build(app, SHA_B, base / "artifacts", now=BUILT_AT).artifact


class NodeFleet(Fleet):
    """Hosts running the real example app through the supervisor: no restart hook."""

    def __init__(self, farm, hs, tmp):
        from deploy.config import AppSection

        super().__init__(farm, hs, tmp)
        for h in hs:
            h.write(f"{SUB}/shared/.env", "HOST=127.0.0.1\n")
        self.section = farm.hosts_section(hs, app_ports=tuple(self.app_ports))
        self.app = AppSection(health_path="/healthz", ready_timeout=15.0)

    def served(self) -> list[str]:
        import json

        return [json.loads(urllib.request.urlopen(f"http://127.0.0.1:{p}/version", timeout=5).read())["release"]
                for p in self.app_ports]

    def app_pids(self) -> list[int | None]:
        out = []
        for h in self.hosts:
            f = self.deploy_to(h) / "run" / "app.pid"
            out.append(int(f.read_text().split()[0]) if f.exists() else None)   # then start time, boot, token
        return out

    def running(self, pid: int) -> bool:
        from deploy import proc

        return bool(proc.group_members(pid))   # the supervisor's pidfile names a group leader


def _as(art, rid):
    from dataclasses import replace

    return replace(art, release_id=rid)


def test_supervisor_starts_restarts_and_rolls_back_a_real_node_app_over_ssh(sshd_hosts, sshd_farm, tmp_path,
                                                                            app_artifact):
    f = NodeFleet(sshd_farm, sshd_hosts(2), tmp_path)
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=f.app)
    assert f.served() == [R1, R1]
    first = f.app_pids()
    assert all(first) and all(f.running(p) for p in first)
    for h in f.hosts:
        assert os.access(f.deploy_to(h) / "bin" / "app", os.X_OK)
        assert "node" in Path(f"/proc/{f.app_pids()[f.hosts.index(h)]}/cmdline").read_bytes().decode()

    hosts.release(f.section, _as(app_artifact, R2), run_id="run-2", now=T0, app=f.app)
    second = f.app_pids()
    assert f.served() == [R2, R2]
    assert all(p2 != p1 for p1, p2 in zip(first, second)) and not any(f.running(p) for p in first)

    hosts.rollback(f.section, run_id="rb", now=T0, app=f.app)
    assert f.served() == [R1, R1] and not any(f.running(p) for p in second)


def test_a_release_whose_start_command_exits_goes_back_to_the_previous_release(sshd_hosts, sshd_farm, tmp_path,
                                                                               app_artifact, crashing_artifact):
    f = NodeFleet(sshd_farm, sshd_hosts(2), tmp_path)
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=f.app)
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, _as(crashing_artifact, R2), run_id="run-2", now=T0, app=f.app)
    err = " ".join(r.error for r in e.value.results)
    assert "the app exited" in err and "fatal: missing SHOPIFY_API_KEY" in err
    assert f.currents() == [R1, R1] and f.served() == [R1, R1]
    assert f.locked() == [False, False]


def test_a_failed_first_release_leaves_no_app_running(sshd_hosts, sshd_farm, tmp_path, crashing_artifact):
    f = NodeFleet(sshd_farm, sshd_hosts(1), tmp_path)
    with pytest.raises(HostFailed):
        hosts.release(f.section, _as(crashing_artifact, R1), run_id="run-1", now=T0, app=f.app)
    assert f.currents() == [None] and f.locked() == [False]
    assert f.app_pids() == [None]


def test_health_that_never_answers_2xx_goes_back_and_a_first_release_undo_stops_the_app(sshd_hosts, sshd_farm,
                                                                                     tmp_path, app_artifact):
    from dataclasses import replace

    f = NodeFleet(sshd_farm, sshd_hosts(1), tmp_path)
    never = replace(f.app, health_path="/no-such-page", ready_timeout=1.5)   # the example answers 404 there
    with pytest.raises(HostFailed) as e:
        hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=never)
    assert "HTTP 404" in e.value.results[0].error
    assert f.currents() == [None] and f.app_pids() == [None] and f.locked() == [False]
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-2", now=T0, app=f.app)
    (pid,) = f.app_pids()
    hosts.undo_release(f.section, R1, run_id="run-2", now=T0, app=f.app)
    assert f.currents() == [None] and not f.running(pid), "undoing a first release stops the app"


@pytest.fixture(scope="module")
def other_app_crashing(tmp_path_factory):
    """Another app (its own package name) whose server exits at start."""
    import json as _json

    from deploy.build import build

    base = tmp_path_factory.mktemp("other-app")
    app = copy_example_app(base / "app")
    pkg = _json.loads((app / "package.json").read_text())
    (app / "package.json").write_text(_json.dumps({**pkg, "name": "other-app"}))
    (app / "server.mjs").write_text("console.error('other app cannot start'); process.exit(5);\n")
    return build(app, SHA_B, base / "artifacts", now=BUILT_AT).artifact


def test_a_failed_first_release_of_another_app_never_starts_the_first_apps_release(sshd_hosts, sshd_farm, tmp_path,
                                                                                   app_artifact, other_app_crashing):
    f = NodeFleet(sshd_farm, sshd_hosts(1), tmp_path)
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=f.app)
    (pid_a,) = f.app_pids()
    with pytest.raises(HostFailed):
        hosts.release(f.section, _as(other_app_crashing, R2), run_id="run-2", now=T0, app=f.app)
    assert f.currents() == [None] and f.app_pids() == [None] and not f.running(pid_a)
    assert R1 in f.release_dirs(f.hosts[0]) and f.locked() == [False]
    with pytest.raises(OSError):
        f.served()


def test_a_rollback_to_another_apps_release_is_refused_before_any_host_switches(sshd_hosts, sshd_farm, tmp_path,
                                                                              app_artifact):
    import json as _json

    from deploy.build import build

    app = copy_example_app(tmp_path / "other")
    pkg = _json.loads((app / "package.json").read_text())
    (app / "package.json").write_text(_json.dumps({**pkg, "name": "other-app"}))
    other = build(app, SHA_B, tmp_path / "other-artifacts", now=BUILT_AT).artifact
    f = NodeFleet(sshd_farm, sshd_hosts(1), tmp_path)
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=f.app)
    hosts.release(f.section, _as(other, R2), run_id="run-2", now=T0, app=f.app)   # the environment switched apps
    with pytest.raises(HostFailed, match="before any host switched") as e:
        hosts.rollback(f.section, run_id="rb", now=T0, app=f.app)
    err = e.value.results[0].error
    assert "never starts another app" in err and "of app occ-example-app" in err and "of app other-app" in err
    assert f.currents() == [R2] and f.served() == [R2] and f.locked() == [False]


def test_an_app_without_a_name_at_its_repository_root_goes_back_to_its_first_release(sshd_hosts, sshd_farm,
                                                                                    tmp_path):
    """package.json without `name` at the repository root: the build step names the app by
    the configured app folder, not by the commit's checkout (.deploy/src/<sha>), so a failed
    second release puts the first back instead of stopping it."""
    import io
    import json as _json
    import shutil

    from deploy import build as b
    from deploy import config
    from deploy.engine import Console, StepContext
    from deploy.flows import steps
    from deploy.locations import find_artifact

    repo = tmp_path / "shop"
    repo.mkdir()
    shutil.copy(Path(__file__).parents[1] / "examples/app/server.mjs", repo / "server.mjs")
    (repo / "package.json").write_text(_json.dumps({"private": True, "scripts": {"start": "node server.mjs"}}))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["init", "-q"], check=True)
    shas = []
    for server in (None, "console.error('cannot start'); process.exit(4);\n"):
        if server:
            (repo / "server.mjs").write_text(server)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", "c"], check=True)
        shas.append(subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
    s = config.parse({"environment": {"kind": "local", "app_dir": "."}}, name="local",
                     file=repo / "env/local.toml", root=repo)
    arts = []
    for sha in shas:
        ctx = StepContext(run_id=None, env="local", state={}, console=Console(io.StringIO()))
        steps.build(s, sha, "r").run(ctx)
        arts.append(find_artifact(s, sha))
    assert [b.read_manifest(a)["app"] for a in arts] == ["shop", "shop"]

    f = NodeFleet(sshd_farm, sshd_hosts(1), tmp_path)
    hosts.release(f.section, _as(arts[0], R1), run_id="run-1", now=T0, app=f.app)
    with pytest.raises(HostFailed):
        hosts.release(f.section, _as(arts[1], R2), run_id="run-2", now=T0, app=f.app)
    assert f.currents() == [R1] and f.served() == [R1] and f.locked() == [False]


def test_a_host_frozen_after_the_upload_fails_within_the_quick_bound_and_the_other_goes_back(
        sshd_hosts, sshd_farm, tmp_path, app_artifact):
    """Host 2 freezes (its sshd sessions SIGSTOPped) while its release waits for the app to
    come up: its next bookkeeping command (the supervisor's status) fails after the quick
    bound, not hosts.command_timeout, and host 1 goes back to the first release."""
    import tarfile
    import threading

    from deploy import build as b

    tree = tmp_path / "slow-tree"
    with tarfile.open(app_artifact.path) as tar:
        tar.extractall(tree, filter="data")
    (tree / "RELEASE.json").unlink()
    server = tree / "build" / "server.mjs"   # package.json: "start": "node build/server.mjs"
    server.write_text('import { existsSync as slowExists, writeFileSync as slowWrite } from "node:fs";\n'
                      'if (slowExists("../../slow")) { slowWrite("../../slow-started", ""); '
                      "await new Promise((r) => setTimeout(r, 600000)); }\n" + server.read_text())
    meta = b.read_manifest(app_artifact)
    (tmp_path / "slow-artifacts").mkdir()
    slow = b.pack(tree, tmp_path / "slow-artifacts", git_sha=app_artifact.git_sha, built_at=app_artifact.built_at,
                  release_id=R2, app=meta.get("app", ""))
    f = NodeFleet(sshd_farm, sshd_hosts(2), tmp_path)
    assert f.section.command_timeout > hosts.quick_timeout(f.section) == 30
    hosts.release(f.section, _as(app_artifact, R1), run_id="run-1", now=T0, app=f.app)
    frozen_host = f.hosts[1]
    (f.deploy_to(frozen_host) / "slow").write_text("")
    outcome = {}

    def release():
        try:
            hosts.release(f.section, slow, run_id="run-2", now=T0, app=f.app)
        except HostFailed as e:
            outcome["error"] = e

    worker = threading.Thread(target=release)
    worker.start()
    started = f.deploy_to(frozen_host) / "slow-started"
    while not started.exists() and worker.is_alive():
        time.sleep(0.05)
    assert started.exists(), f"the release never started the app on the host to freeze: {outcome}"
    time.sleep(1.0)   # the start command has returned; the release polls the app's status
    with sshd_farm.frozen_sessions(frozen_host) as pids:
        assert pids
        worker.join()
    errors = [r.error for r in outcome["error"].results if not r.ok]
    assert any("app status timed out after 30s" in e and "no more commands" in e for e in errors), errors
    import json as _json

    served = _json.loads(urllib.request.urlopen(f"http://127.0.0.1:{f.app_ports[0]}/version", timeout=5).read())
    assert f.current(f.hosts[0]) == R1 and served["release"] == R1


# ---------------------------------------------------------------- delta uploads

def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under a release dir as the artifact describes it (RELEASE, .previous and
    shared links are the release step's own and left out)."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel in ("RELEASE", ".previous", ".env"):
                continue
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            else:
                out[rel] = ("f", p.stat().st_mode & 0o777, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _artifact_tree(art) -> dict[str, tuple]:
    return {e.path: ("f", e.mode, e.sha256) if e.kind == "f" else ("l", e.target)
            for e in hosts.artifact_tree(art.path) if e.kind != "d"}


def _packed(f: Fleet, rid: str, **kw):
    from deploy.testing.sshd import packed_artifact

    return packed_artifact(f.tmp / "packed", rid, **kw)


MB = 1 << 20


def test_a_new_release_with_unchanged_dependencies_sends_only_the_changed_files(fleet):
    f = fleet(2)
    lib = {"node_modules/dep/index.js": "module.exports = 1;\n", "node_modules/.bin/dep": "#!/bin/sh\n"}
    one = _packed(f, R1, files={**lib, "build/app.js": "v1"}, padding_bytes=2 * MB, seed=7)
    two = _packed(f, R2, files={**lib, "build/app.js": "v2"}, padding_bytes=2 * MB, seed=7)
    first = hosts.release(f.section, one, run_id="run-1", now=T0)
    assert [r.transfer for r in first] == ["full", "full"]
    assert all(r.uploaded == one.path.stat().st_size for r in first)

    second = hosts.release(f.section, two, run_id="run-2", now=T0)
    size = two.path.stat().st_size
    for r in second:
        assert r.ok and r.transfer.startswith(f"delta from {R1}") and "linked" in r.transfer, r.transfer
        assert 0 < r.uploaded < size / 20, (r.uploaded, size)
    assert f.currents() == [R2, R2] and f.served() == [R2, R2]
    for h in f.hosts:
        rel = f.deploy_to(h) / "releases"
        assert _tree(rel / R2) == _artifact_tree(two)
        # Unchanged bytes are the earlier release's own inode; changed ones are new files.
        assert (rel / R2 / "assets/blob.bin").stat().st_ino == (rel / R1 / "assets/blob.bin").stat().st_ino
        assert (rel / R2 / "build/app.js").read_text() == "v2"
        assert not list((f.deploy_to(h) / ".uploads").iterdir())


def test_a_delta_too_large_for_the_commands_input_is_uploaded_and_still_exact(fleet):
    """Small deltas ride on the building command's stdin; one over STDIN_LIMIT (here a changed
    incompressible 2 MiB file) goes over SFTP first. Both end with the manifest's tree."""
    import random

    from deploy.hosts._ssh import STDIN_LIMIT

    f = fleet(1)
    lib = {"node_modules/dep/index.js": "module.exports = 1;\n"}
    one = _packed(f, R1, files={**lib, "build/big.bin": random.Random(1).randbytes(2 * MB)}, padding_bytes=MB, seed=2)
    two = _packed(f, R2, files={**lib, "build/big.bin": random.Random(2).randbytes(2 * MB)}, padding_bytes=MB, seed=2)
    hosts.release(f.section, one, run_id="run-1", now=T0)
    (r,) = hosts.release(f.section, two, run_id="run-2", now=T0)
    assert r.transfer.startswith(f"delta from {R1}") and "linked" in r.transfer, r.transfer
    assert STDIN_LIMIT < r.uploaded < two.path.stat().st_size, r.uploaded
    rel = f.deploy_to(f.hosts[0]) / "releases"
    assert _tree(rel / R2) == _artifact_tree(two)
    assert (rel / R2 / "assets/blob.bin").stat().st_ino == (rel / R1 / "assets/blob.bin").stat().st_ino
    assert not list((f.deploy_to(f.hosts[0]) / ".uploads").iterdir())
    assert f.served() == [R2]


def test_a_tampered_file_in_the_old_release_still_ends_with_the_manifests_tree(fleet):
    f = fleet(2)
    one = _packed(f, R1, padding_bytes=1 * MB, seed=3)
    two = _packed(f, R2, padding_bytes=1 * MB, seed=3)
    hosts.release(f.section, one, run_id="run-1", now=T0)
    bad = f.deploy_to(f.hosts[1]) / "releases" / R1 / "assets/blob.bin"
    st = bad.stat()
    with open(bad, "r+b") as fh:          # same inode, same size, same mtime: only the bytes differ
        fh.seek(1000)
        fh.write(b"tampered")
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))

    good, fixed = hosts.release(f.section, two, run_id="run-2", now=T0)
    assert good.transfer.startswith(f"delta from {R1}")
    assert "failed verification" in fixed.transfer and "assets/blob.bin" in fixed.transfer
    assert fixed.transfer.endswith("sent in full") and fixed.uploaded > two.path.stat().st_size
    assert f.currents() == [R2, R2] and f.served() == [R2, R2]
    for h in f.hosts:
        assert _tree(f.deploy_to(h) / "releases" / R2) == _artifact_tree(two)


def _rehashed(transfer: str) -> int:
    import re

    m = re.search(r"\((\d+) re-hashed\)", transfer)
    assert m, transfer
    return int(m[1])


def test_linked_files_checked_once_are_not_hashed_again_even_after_old_releases_are_pruned(fleet):
    f = fleet(2)
    s = f.settings(keep_releases=2)
    lib = {f"node_modules/dep{i}/index.js": f"module.exports = {i};\n" for i in range(20)}
    arts = [_packed(f, rid, files={**lib, "build/app.js": rid}, padding_bytes=MB, seed=5) for rid in (R1, R2, R3, R4)]
    hosts.release(s, arts[0], run_id="run-1", now=T0)
    second = hosts.release(s, arts[1], run_id="run-2", now=T0)
    # A release sent whole was indexed as it was unpacked (its bytes checked against the
    # artifact's sha256): the first delta hashes only what it sent.
    assert all(_rehashed(r.transfer) == 0 for r in second), [r.transfer for r in second]
    third = hosts.release(s, arts[2], run_id="run-3", now=T0)      # prunes R1 (keep 2)
    assert all(_rehashed(r.transfer) == 0 for r in third), [r.transfer for r in third]
    fourth = hosts.release(s, arts[3], run_id="run-4", now=T0)     # after the prune: still trusted
    assert all(_rehashed(r.transfer) == 0 and "failed" not in r.transfer for r in fourth), [r.transfer for r in fourth]
    for h in f.hosts:
        rel = f.deploy_to(h) / "releases"
        assert sorted(p.name for p in rel.iterdir()) == [R3, R4]
        assert _tree(rel / R4) == _artifact_tree(arts[3])


def _with_manifest_sum(art, path: str, sha256: str, out: Path):
    """`art` with its RELEASE.json claiming `sha256` for `path` (the bytes unchanged): an
    artifact whose manifest lies, with a valid sha256 of its own."""
    import dataclasses
    import gzip
    import hashlib
    import io
    import json
    import tarfile

    from deploy.build import MANIFEST

    with tarfile.open(art.path, "r:gz") as src:
        members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src]
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        for m, data in members:
            if m.name == MANIFEST:
                doc = json.loads(data)
                for row in doc["files"]:
                    if row["path"] == path:
                        row["sha256"] = sha256
                data = json.dumps(doc, indent=2, sort_keys=True).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    out.write_bytes(buf.getvalue())
    return dataclasses.replace(art, path=out, sha256=hashlib.sha256(buf.getvalue()).hexdigest())


def test_a_release_sent_whole_is_indexed_with_the_sums_of_its_bytes_not_its_manifests_claims(fleet):
    """The index after a full unpack holds sha256s hashed from the tarball itself: a manifest
    that names other bytes (here R1's claims R2's sum for build/app.js) must not let a later
    delta link those bytes unchecked."""
    import hashlib

    f = fleet(1)
    one = _packed(f, R1, files={"build/app.js": "one"}, padding_bytes=MB, seed=6)
    two = _packed(f, R2, files={"build/app.js": "two"}, padding_bytes=MB, seed=6)
    lying = _with_manifest_sum(one, "build/app.js", hashlib.sha256(b"two").hexdigest(), f.tmp / "lying.tar.gz")
    hosts.release(f.section, lying, run_id="run-1", now=T0)
    (r,) = hosts.release(f.section, two, run_id="run-2", now=T0)
    # build/app.js was planned as unchanged (the manifests agree), hashed (the index knows its
    # real bytes), caught, and the whole artifact sent.
    assert "failed verification" in r.transfer and "build/app.js" in r.transfer, r.transfer
    rel = f.deploy_to(f.hosts[0]) / "releases"
    assert (rel / R2 / "build/app.js").read_text() == "two"
    assert _tree(rel / R2) == _artifact_tree(two)


def test_an_index_that_cannot_be_used_only_costs_hashing(fleet):
    """The index is an optimisation: a host where it is not a readable file (here a folder in
    its place) still releases whole and by delta, every linked file hashed, the tree exact."""
    f = fleet(1)
    arts = [_packed(f, rid, files={"build/app.js": rid}, padding_bytes=MB, seed=8) for rid in (R1, R2)]
    (f.deploy_to(f.hosts[0]) / ".verified").mkdir(parents=True)
    (first,) = hosts.release(f.section, arts[0], run_id="run-1", now=T0)
    assert first.transfer == "full"
    (second,) = hosts.release(f.section, arts[1], run_id="run-2", now=T0)
    assert second.transfer.startswith(f"delta from {R1}") and "failed" not in second.transfer, second.transfer
    assert _rehashed(second.transfer) > 0, second.transfer
    assert _tree(f.deploy_to(f.hosts[0]) / "releases" / R2) == _artifact_tree(arts[1])
    assert f.served() == [R2]
    assert (f.deploy_to(f.hosts[0]) / ".verified").is_dir()


def test_a_file_changed_after_its_bytes_were_checked_is_hashed_again_and_caught(fleet):
    f = fleet(2)
    arts = [_packed(f, rid, files={"build/app.js": rid}, padding_bytes=MB, seed=9) for rid in (R1, R2, R3)]
    hosts.release(f.section, arts[0], run_id="run-1", now=T0)
    hosts.release(f.section, arts[1], run_id="run-2", now=T0)      # R2's files are now in the index
    bad = f.deploy_to(f.hosts[1]) / "releases" / R2 / "assets/blob.bin"
    st = bad.stat()
    with open(bad, "r+b") as fh:          # same inode, size and mtime: only the bytes (and the ctime) differ
        fh.seek(4096)
        fh.write(b"tampered")
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert bad.stat().st_mtime_ns == st.st_mtime_ns and bad.stat().st_ino == st.st_ino

    good, fixed = hosts.release(f.section, arts[2], run_id="run-3", now=T0)
    assert _rehashed(good.transfer) == 0, good.transfer
    assert "failed verification" in fixed.transfer and "assets/blob.bin" in fixed.transfer, fixed.transfer
    assert fixed.transfer.endswith("sent in full")
    assert f.currents() == [R3, R3] and f.served() == [R3, R3]
    for h in f.hosts:
        assert _tree(f.deploy_to(h) / "releases" / R3) == _artifact_tree(arts[2])


def test_removing_old_releases_never_makes_the_index_vouch_for_a_file_changed_before(fleet):
    """A tampered file that a pruned release shared: the removal changes its ctime again, and
    the index must not take that for the toolkit's own change."""
    f = fleet(1)
    s = f.settings(keep_releases=2)
    arts = [_packed(f, rid, files={"build/app.js": rid}, padding_bytes=MB, seed=4) for rid in (R1, R2, R3, R4)]
    hosts.release(s, arts[0], run_id="run-1", now=T0)
    hosts.release(s, arts[1], run_id="run-2", now=T0)            # R2 shares blob.bin's inode with R1
    rel = f.deploy_to(f.hosts[0]) / "releases"
    bad = rel / R2 / "assets/blob.bin"
    assert bad.stat().st_ino == (rel / R1 / "assets/blob.bin").stat().st_ino
    st = bad.stat()
    with open(bad, "r+b") as fh:
        fh.seek(100)
        fh.write(b"tampered")
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))

    (third,) = hosts.release(s, arts[2], run_id="run-3", now=T0)   # caught; its finish removes R1
    assert "failed verification" in third.transfer, third.transfer
    assert sorted(p.name for p in rel.iterdir()) == [R2, R3]
    with pytest.raises(HostFailed) as e:                            # a rollback checks it first and refuses
        hosts.rollback(s, to=R2, run_id="run-4", now=T0)
    assert "changed in place" in e.value.results[0].error and "assets/blob.bin" in e.value.results[0].error
    assert f.currents() == [R3]
    # The tampered release is the base again, switched to by hand (as before rollbacks checked it).
    cur = f.deploy_to(f.hosts[0]) / "current"
    (cur.parent / "current.tmp").symlink_to(f"releases/{R2}")
    os.replace(cur.parent / "current.tmp", cur)
    (fourth,) = hosts.release(s, arts[3], run_id="run-5", now=T0)
    assert "failed verification" in fourth.transfer and "assets/blob.bin" in fourth.transfer, fourth.transfer
    assert _tree(rel / R4) == _artifact_tree(arts[3])


def test_a_changed_mode_in_the_old_release_is_not_carried_into_the_new_one(fleet):
    f = fleet(1)
    lib = {"node_modules/dep/index.js": "x" * 5000}
    hosts.release(f.section, _packed(f, R1, files=lib), run_id="run-1", now=T0)
    (f.deploy_to(f.hosts[0]) / "releases" / R1 / "node_modules/dep/index.js").chmod(0o666)
    two = _packed(f, R2, files=lib)
    (r,) = hosts.release(f.section, two, run_id="run-2", now=T0)
    assert "failed verification" in r.transfer and "f 644 5000 node_modules/dep/index.js" in r.transfer
    assert _tree(f.deploy_to(f.hosts[0]) / "releases" / R2) == _artifact_tree(two)


def test_rollback_to_a_kept_release_uploads_nothing(fleet):
    f = fleet(2)
    hosts.release(f.section, _packed(f, R1, padding_bytes=MB), run_id="run-1", now=T0)
    hosts.release(f.section, _packed(f, R2, padding_bytes=MB), run_id="run-2", now=T0)
    inodes = {h.name: {p.name: p.stat().st_ino for p in (f.deploy_to(h) / "releases").iterdir()} for h in f.hosts}
    results = hosts.rollback(f.section, run_id="run-3", now=T0)
    assert [(r.release, r.uploaded, r.transfer) for r in results] == [(R1, 0, "")] * 2
    assert f.currents() == [R1, R1] and f.served() == [R1, R1]
    for h in f.hosts:
        assert {p.name: p.stat().st_ino for p in (f.deploy_to(h) / "releases").iterdir()} == inodes[h.name]
        assert not list((f.deploy_to(h) / ".uploads").iterdir())


def test_delta_off_sends_the_whole_artifact_every_time(fleet):
    f = fleet(1)
    s = f.settings(delta=False)
    hosts.release(s, _packed(f, R1, padding_bytes=MB), run_id="run-1", now=T0)
    two = _packed(f, R2, padding_bytes=MB)
    (r,) = hosts.release(s, two, run_id="run-2", now=T0)
    assert r.transfer == "full" and r.uploaded == two.path.stat().st_size


# ---------------------------------------------------------------- rolling restarts

@pytest.mark.parametrize("n, size, expected", [
    (4, 1, [[0], [1], [2], [3]]),
    (4, "50%", [[0, 1], [2, 3]]),
    (16, "25%", [list(range(i, i + 4)) for i in range(0, 16, 4)]),
    (3, "25%", [[0], [1], [2]]),          # rounded up, at least one host
    (5, 2, [[0, 1], [2, 3], [4]]),
    (2, "100%", [[0, 1]]),
], ids=["one-by-one", "halves", "quarters-of-16", "share-rounds-up", "remainder", "all"])
def test_rollout_batches(n, size, expected):
    assert [list(r) for r in rollout.batches(n, size)] == expected


@pytest.mark.parametrize("size", [0, "0%", "150%", "a quarter", -2])
def test_a_bad_batch_size_is_a_settings_error(size):
    with pytest.raises(SettingsError, match="hosts.batch_size"):
        rollout.batches(4, size)


def _app_pid(f: Fleet, h) -> str:
    return (f.deploy_to(h) / "shared" / "app.pid").read_text().strip()


@pytest.mark.serial
def test_rolling_release_restarts_batch_after_batch(fleet):
    f = fleet(4)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    results = hosts.release(f.settings(rollout="rolling", batch_size="50%"), f.artifact(R2), run_id="run-2", now=T0)
    assert [r.release for r in results] == [R2] * 4 and f.served() == [R2] * 4
    started = [(f.deploy_to(h) / "shared" / "app.pid").stat().st_mtime_ns for h in f.hosts]
    assert max(started[:2]) < min(started[2:]), "the second batch started before the first was healthy"


def test_a_rolling_release_stopped_by_a_failing_batch_leaves_every_host_on_the_previous_release(fleet):
    f = fleet(4)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    pids = [_app_pid(f, h) for h in f.hosts]
    dead = _free_port()
    urls = list(f.section.health_urls)
    urls[1] = f"http://127.0.0.1:{dead}/healthz"
    s = f.settings(rollout="rolling", batch_size=1, health_urls=tuple(urls), health_timeout=1.0)
    with pytest.raises(HostFailed) as e:
        hosts.release(s, f.artifact(R2), run_id="run-2", now=T0)
    msg = str(e.value)
    assert "rolling batch 2 of 4" in msg and "2 host(s) of later batches were not touched" in msg
    assert "every host that switched was returned" in msg
    assert [r.release for r in e.value.results] == [R1] * 4
    assert f.currents() == [R1] * 4 and f.served() == [R1] * 4 and f.locked() == [False] * 4
    # Batches 3 and 4 never restarted: the same app processes still serve there.
    assert [_app_pid(f, h) for h in f.hosts[2:]] == pids[2:]
    assert _app_pid(f, f.hosts[0]) != pids[0], "batch 1 switched, restarted, and was switched back"


def test_the_manifest_describes_the_same_tree_as_the_tarball(tmp_path):
    from deploy.hosts._upload import _scan_tree
    from deploy.testing.sshd import packed_artifact

    src_files = {"node_modules/.bin/tool": "#!/bin/sh\n", "build/app.js": "x", "empty/.keep": ""}
    art = packed_artifact(tmp_path, R1, files=src_files, padding_bytes=1000)
    from_manifest = hosts.artifact_tree(art.path)
    key = lambda e: (e.path, e.kind)  # noqa: E731
    assert sorted(from_manifest, key=key) == sorted(_scan_tree(art.path), key=key)
    assert {e.path for e in from_manifest if e.kind == "f"} >= {"RELEASE.json", "bin/restart", "assets/blob.bin"}


def test_a_failing_restart_hook_is_named_with_its_exit_code_and_every_host_goes_back(fleet):
    f = fleet(2)
    hosts.release(f.section, f.artifact(R1), run_id="run-1", now=T0)
    s = f.settings(restart='if [ "$RELEASE_ID" = ' + f"'{R2}'" + ' ]; then echo boom >&2; exit 7; fi; bin/restart')
    with pytest.raises(HostFailed) as e:
        hosts.release(s, f.artifact(R2), run_id="run-2", now=T0)
    assert all("restart hook failed (exit 7): boom" in r.error for r in e.value.results)
    assert f.currents() == [R1, R1] and f.served() == [R1, R1]


def test_a_file_missing_from_the_old_release_sends_the_whole_artifact(fleet):
    f = fleet(1)
    lib = {"node_modules/dep/index.js": "y" * 5000, "node_modules/dep/package.json": "{}"}
    hosts.release(f.section, _packed(f, R1, files=lib), run_id="run-1", now=T0)
    (f.deploy_to(f.hosts[0]) / "releases" / R1 / "node_modules/dep/index.js").unlink()
    two = _packed(f, R2, files=lib)
    (r,) = hosts.release(f.section, two, run_id="run-2", now=T0)
    assert "failed verification" in r.transfer and r.transfer.endswith("sent in full"), r.transfer
    assert "node_modules/dep/index.js" in r.transfer, r.transfer      # the file that could not be linked
    assert _tree(f.deploy_to(f.hosts[0]) / "releases" / R2) == _artifact_tree(two)
    assert f.served() == [R2]
