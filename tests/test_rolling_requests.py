"""A rolling release behind a real load balancer (nginx, passive checks) loses no request:
each batch is drained from the balancer before its apps stop (hosts.balancer, drain_seconds)
and, with a balancer that only sees failures, the next batch waits until the last one is
taken back (settle_seconds). Real sshd hosts, real restarts; correctness, not timing."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

import pytest

from deploy import hosts
from deploy.errors import HostFailed
from deploy.testing.balancer import Loop, Nginx
from deploy.testing.sshd import make_artifact
from deploy.testing.stage import free_port

pytestmark = [pytest.mark.sshd, pytest.mark.serial]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
SUB = "srv/occ"

CASES = {
    # name: (batch_size, fail_timeout, uses the balancer command, drain_seconds, settle_seconds)
    "drained-one-by-one": (1, 2.0, True, 0.2, 0.0),
    "drained-in-halves": ("50%", 2.0, True, 0.0, 0.0),
    "passive-balancer-settles-one-by-one": (1, 1.0, False, 0.0, 1.3),
    "drained-and-settled-long-fail-timeout": (1, 3.0, True, 0.1, 0.3),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_rolling_release_behind_nginx_loses_no_request(sshd_hosts, sshd_farm, tmp_path, case):
    batch, fail_timeout, use_balancer, drain, settle = CASES[case]
    hs = sshd_hosts(4)
    ports = [free_port() for _ in hs]
    for h, p in zip(hs, ports):
        h.write(f"{SUB}/shared/.env", f"PORT={p}\n")
    base = sshd_farm.hosts_section(hs, restart="bin/restart", health_timeout=10.0, app_ports=tuple(ports),
                                   health_urls=tuple(f"http://127.0.0.1:{p}/RELEASE" for p in ports))
    ids = [f"2024050112{i:02d}00-abc{i:04d}" for i in range(4)]
    arts = [make_artifact(tmp_path / "artifacts", rid) for rid in ids]
    hosts.release(base, arts[0], run_id="run-0", now=T0)
    with Nginx(tmp_path / "nginx", [f"127.0.0.1:{p}" for p in ports], free_port(), fail_timeout=fail_timeout) as lb:
        section = dataclasses.replace(base, rollout="rolling", batch_size=batch, drain_seconds=drain,
                                      settle_seconds=settle, balancer=lb.balancer if use_balancer else ())
        for i, art in enumerate(arts[1:3], 1):
            with Loop(lb.port) as loop:
                time.sleep(0.3)
                results = hosts.release(section, art, run_id=f"run-{i}", now=T0)
                time.sleep(0.3)
            assert [r.release for r in results] == [art.release_id] * 4
            assert loop.sent > 50
            assert loop.failed == 0, f"{loop.failed} of {loop.sent} failed: {sorted(set(loop.errors))}"
        if use_balancer:
            assert not (lb.dir / "upstreams.conf").read_text().count(" down")   # every host back in


def test_a_failing_balancer_command_stops_the_rollout_before_its_batch_and_names_the_command(
        sshd_hosts, sshd_farm, tmp_path):
    hs = sshd_hosts(2)
    ports = [free_port() for _ in hs]
    for h, p in zip(hs, ports):
        h.write(f"{SUB}/shared/.env", f"PORT={p}\n")
    base = sshd_farm.hosts_section(hs, restart="bin/restart", health_timeout=10.0, app_ports=tuple(ports),
                                   health_urls=tuple(f"http://127.0.0.1:{p}/RELEASE" for p in ports))
    r1, r2 = "20240501120000-abc0001", "20240501120100-abc0002"
    hosts.release(base, make_artifact(tmp_path / "a", r1), run_id="run-1", now=T0)
    script = tmp_path / "lb"
    script.write_text("#!/bin/sh\necho \"pool is read-only ($1 $2)\" >&2\nexit 3\n")
    script.chmod(0o755)
    section = dataclasses.replace(base, rollout="rolling", batch_size=1, balancer=(str(script),))
    with pytest.raises(HostFailed) as e:
        hosts.release(section, make_artifact(tmp_path / "a", r2), run_id="run-2", now=T0)
    msg = str(e.value)
    assert "load balancer command (out) failed (exit 3)" in msg and "pool is read-only (out 127.0.0.1:" in msg
    assert "rolling batch 1 of 2" in msg
    assert [r.release for r in e.value.results] == [r1, r1]
