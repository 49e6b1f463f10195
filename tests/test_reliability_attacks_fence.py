"""A killed run's remote command, still running on the host, never overrides a later run.

sshd does not stop a command without a terminal when its client goes: a run killed while a
host runs its restart hook, or waits for the new app's health before switching the proxy,
leaves that command running. Each test kills a real client (a child process driving real sshd
hosts) at such a point, lets a second run act on the host (the abort of the killed run, or a
new run after the lock was broken), then lets the old command go on, and checks that the host
still serves what the second run put live: the old command found the host's fence moved and
changed nothing (deploy/hosts/_commands.py `fenced`), or the second run waited for it to end.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy import hosts
from deploy.config import AppSection, ProxySection
from deploy.testing.sshd import make_artifact
from test_image_target import env, images  # noqa: F401  (fixtures)
from test_proxy import KINDS, SUB, ProxyHost, proxy_host  # noqa: F401  (the fixture)

pytestmark = pytest.mark.sshd

R1, R2, R3 = (f"20240601120{i}00-fen{i}ce0" for i in range(1, 4))

# The child: one release, then killed by the test mid-command.
CHILD = r'''
import json, sys
from deploy import hosts
from deploy.build import Artifact
from deploy.config import AppSection, HostsSection, ProxySection

def made(cls, d):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}) if d else None

s, app, proxy, art = (json.loads(a) for a in sys.argv[1:5])
hosts.release(made(HostsSection, s), Artifact(**art), run_id=sys.argv[5], app=made(AppSection, app),
              proxy=made(ProxySection, proxy))
'''


def _spawn(section, app, proxy, art, run_id: str) -> subprocess.Popen:
    args = [json.dumps(dataclasses.asdict(x) if x is not None else None) for x in (section, app, proxy)]
    args.append(json.dumps({**dataclasses.asdict(art), "path": str(art.path)}))
    return subprocess.Popen([sys.executable, "-c", CHILD, *args, run_id], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(cond, p: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if p is not None:
            assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _kill(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()
    if p.stdout:
        p.stdout.close()
    if p.stderr:
        p.stderr.close()


class Second(threading.Thread):
    """The second run, in a thread: it may wait on the fence while the old command finishes."""

    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.error = fn, None

    def run(self):
        try:
            self.fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


# ---------------------------------------------------------------- a tree host restarted by a hook

# The "app" is the file `served` in deploy_to: the restart hook writes the release it runs in. A
# release holding SLOW waits in its hook for the host's `go` file first (a slow restart).
HOOK = ('if [ -e SLOW ]; then touch ../../hook-waiting; while [ ! -e ../../go ]; do sleep 0.05; done; fi; '
        'cat RELEASE > ../../served')


def _second_tree_run(section, then: str, tmp: Path):
    if then == "abort":
        return lambda: hosts.undo_release(section, R2, run_id="run-killed")
    hosts.break_lock(section, force=True)   # the killed run's lock, as `invoke lock.release --force` does
    if then == "rollback":
        return lambda: hosts.rollback(section, R1, run_id="run-rollback")
    return lambda: hosts.release(section, make_artifact(tmp / "a3", R3), run_id="run-next")


@pytest.mark.parametrize("then, want", [
    pytest.param("abort", R1, id="abort-of-the-killed-run"),
    pytest.param("rollback", R1, id="rollback-after-the-lock-was-broken"),
    pytest.param("release", R3, id="new-release-after-the-lock-was-broken"),
])
def test_fence_a_killed_runs_restart_hook_never_overrides_the_next_run(sshd_farm, sshd_hosts, tmp_path, then, want):
    h = sshd_hosts(1)[0]
    section = sshd_farm.hosts_section([h], restart=HOOK, health_command="true", health_timeout=10.0)
    root = h.root / SUB
    h.write(f"{SUB}/shared/.env", "HOST=127.0.0.1\n")
    hosts.release(section, make_artifact(tmp_path / "a1", R1), run_id="run-first")
    assert (root / "served").read_text().strip() == R1
    p = _spawn(section, None, None, make_artifact(tmp_path / "a2", R2, files={"SLOW": "1"}), "run-killed")
    _wait_for(lambda: (root / "hook-waiting").exists(), p)   # current is on R2; its hook is restarting
    _kill(p)
    second = Second(_second_tree_run(section, then, tmp_path))
    second.start()
    time.sleep(1.0)   # the second run did what it could meanwhile (without a fence: all of it)
    h.write(f"{SUB}/go", "")   # the killed run's hook goes on
    second.join(60)
    assert not second.is_alive() and second.error is None, second.error
    time.sleep(0.5)   # anything the old command still had to do is done
    assert (root / "served").read_text().strip() == want, "the killed run's restart overrode the next run"
    assert Path(str(root / "current")).resolve().name == want


# ---------------------------------------------------------------- zero downtime: health, then the proxy

# The app of test_proxy.py, but a SLOW release also ignores SIGTERM (its stop takes the supervisor's
# 10 s before KILL): it is still there to answer when the host's `go` file lets it start serving.
START = ("sh", "-c", 'if [ -e SLOW ]; then trap "" TERM; touch ../../slow-started; '
                     'while [ ! -e ../../go ]; do sleep 0.05; done; fi; '
                     'exec python3 -m http.server "$PORT" --bind 127.0.0.1')


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("then", [pytest.param("abort", id="abort-of-the-killed-run"),
                                  pytest.param("rollback", id="rollback-after-the-lock-was-broken")])
def test_fence_a_killed_runs_health_wait_never_switches_the_proxy_after_the_next_run(proxy_host, kind, then):
    ph: ProxyHost = proxy_host(kind)
    ph.app = AppSection(start=START, health_path="/RELEASE", ready_timeout=30.0)
    ph.section = dataclasses.replace(ph.section, health_timeout=30.0)
    ph.release(R1)
    live = ph.upstream()
    art = ph.artifact(R2, SLOW="1")
    p = _spawn(ph.section, ph.app, ph.proxy, art, "run-killed")
    _wait_for(lambda: (ph.root / "slow-started").exists(), p)   # R2 starts beside R1; the health wait runs
    _kill(p)
    if then == "abort":
        second = Second(lambda: hosts.undo_release(ph.section, R2, run_id="run-killed", app=ph.app, proxy=ph.proxy))
    else:
        hosts.break_lock(ph.section, force=True)
        second = Second(lambda: hosts.rollback(ph.section, R1, run_id="run-rollback", app=ph.app, proxy=ph.proxy))
    second.start()
    # The second run finds R1 live, puts `current` back and stops R2's port (10 s: R2 ignores TERM).
    _wait_for(lambda: ph.current() == R1)
    time.sleep(0.3)
    ph.h.write(f"{SUB}/go", "")   # R2 answers now: the killed run's health wait passes
    second.join(60)
    assert not second.is_alive() and second.error is None, second.error
    time.sleep(0.5)
    assert ph.upstream() == live, "the killed run's command switched the proxy after the next run"
    assert ph.served() == R1 and ph.current() == R1


# ---------------------------------------------------------------- the image target: the finish's drain

def _container_ids(e, h, release_id: str) -> list[str]:
    from deploy.testing.imagehosts import host_podman

    r = host_podman(h, e.deploy_to(h), "ps", "-q", "--no-trunc", "--filter", f"label=occ.release={release_id}")
    return r.stdout.split()


@pytest.mark.slow
@pytest.mark.parametrize("drain", [pytest.param(4.0, id="drain-4s"), pytest.param(7.0, id="drain-7s")])
def test_fence_a_killed_releases_drain_never_stops_the_container_an_abort_went_back_to(env, images, tmp_path, drain):
    from test_image_target import _release, _serving_port, _start_child, _wait

    first, second = "20260101000000-aaaaaaa", "20260101000100-bbbbbbb"
    _release(env, "run-1", first, images["v1"])
    old_ports = [_serving_port(env, i) for i in range(2)]
    before = [_container_ids(env, h, first) for h in env.hosts]
    env.raw["proxy"]["drain_seconds"] = drain   # the old containers drain this long, then the finish stops them
    child = _start_child(env, tmp_path / "child", "run-2", second, images["v2"])
    try:
        _wait(lambda: all(_serving_port(env, i) not in (None, old_ports[i]) for i in range(2)), what="the switch")
        # killed once every host's finish (drain, then stop the old container) runs in the background
        _wait(lambda: all(list((h.root / "srv/occ/image").glob(".finish-*")) for h in env.hosts), what="the finish")
    finally:
        child.kill()
        child.wait()
    from deploy import facts
    from deploy.engine import Console, StepContext

    ctx = StepContext(run_id="run-2", env="staging", state=facts.loads((tmp_path / "child" / "state.json").read_text()),
                      console=Console(env.out))
    env.target().switch_back(ctx, second, env.environ)   # the abort, while the killed run's finish drains
    assert env.versions() == ["v1", "v1"]
    time.sleep(drain + 1.0)   # past the drain: the killed run's finish would have stopped v1's containers now
    assert env.versions() == ["v1", "v1"]
    assert [_container_ids(env, h, first) for h in env.hosts] == before, \
        "the killed run's finish stopped the container the abort went back to (it was started again)"
