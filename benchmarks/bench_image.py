"""The image target on one host, measured: zero failed requests while it releases, and what its
safety costs over doing the same by hand.

One real sshd host running rootless podman (a storage of its own, runc, explicit ulimits), caddy
in front of the app, the distribution registry on loopback (TLS, htpasswd), small Node images
pushed by digest (deploy/testing/imagehosts.py). Then:

- traffic: a GET every 10 ms through the proxy, on a fresh connection each, during three releases
  of the host (each a new image: pull, start beside the live container, health, proxy switch,
  drain, stop the old one) and one rollback; every answer recorded. Target: 0 failed requests.
- release time: the toolkit's release (connect, lock, state read, pull by digest with the login
  on stdin, record, run with the env file, health, switch, drain, stop, prune) against a bare
  `podman pull` + `podman run` + a curl health loop sent as one `ssh` command to the same host, as
  an operator would (it pays for its connection, as the toolkit's run does, and as
  bench_zero.py's bare side does), for images it does not hold yet. Target: median toolkit/bare
  <= 1.3x. Also reported: the same bare commands on a connection opened beforehand, untimed
  (what this bench measured against until the bare side was made an `ssh` command).
- rollback time: the toolkit's rollback to a release whose image the host keeps (no pull: run,
  health, switch, drain, stop), alternating between the last two releases, against a bare
  `podman run` + health loop + proxy switch of a held image, one `ssh` command each (and on an
  open connection, reported). Target: median toolkit/bare <= 1.2x. The toolkit's times include
  its lock and reading the host. The drain (proxy.drain_seconds = 0.5 s), stopping the old container and the prune run
  on the host in the background after the operation returns (the next operation's state read
  waits for them); the bare side has no drain and removes its container untimed, so the bench
  waits for that finish untimed too, measures it, and reports the ratios with it added as well.

  With --previous-running the container served before stays up (`[image] previous_running`), so
  the rollback is a health check and the switch; the bare peer still starts its container.

    python benchmarks/bench_image.py [--runs 3] [--previous-running]
"""

from __future__ import annotations

import argparse
import io
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, ssh_argv, write_claims  # noqa: E402
from deploy import config, hosts  # noqa: E402
from deploy.engine import Console, StepContext  # noqa: E402
from deploy.facts import ImageRef  # noqa: E402
from deploy.hosts import _proxy  # noqa: E402
from deploy.hosts._containers import fill_args, wait_finish_command  # noqa: E402
from deploy.hosts._ssh import _connect, _run  # noqa: E402
from deploy.targets import target_for  # noqa: E402
from deploy.testing.images import ensure_node_image  # noqa: E402
from deploy.testing.imagehosts import (HOST_RUN_ARGS, HOST_RUNTIME_ARGS, authfile, push_app_image,  # noqa: E402
                                       remove_all_containers)
from deploy.testing.ports import free_port  # noqa: E402
from deploy.testing.registry import Registry  # noqa: E402
from deploy.testing.sshd import SshdFarm  # noqa: E402
from deploy.testing.traffic import Traffic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="timed releases (and bare runs) of new images")
    ap.add_argument("--previous-running", action="store_true",
                    help="[image] previous_running = true: the container served before stays up (rollback: no start)")
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
    n = max(1, args.runs)
    tmp = Path(tempfile.mkdtemp(prefix="occ-bench-image-"))
    tmp.chmod(0o755)   # the hosts' login user reaches the farm's keys below it
    farm = SshdFarm(1, tmp / "farm")
    registry = Registry(tmp / "registry")
    host = farm.hosts[0]
    try:
        base = ensure_node_image()
        print(f"pushing {3 * n + 1} images ...", flush=True)
        refs = [push_app_image(registry, base, f"v{i}") for i in range(3 * n + 1)]
        app_port, listen, admin = free_port(), free_port(), free_port()
        raw = {
            "environment": {"kind": "remote"},
            "app": {"health_path": "/healthz", "ready_timeout": 30.0},
            "hosts": {"hosts": [host.address], "user": host.user, "key_file": str(farm.key_file),
                      "known_hosts": str(farm.known_hosts), "deploy_to": farm.deploy_to(), "app_ports": [app_port]},
            "release": {"target": "image"},
            "image": {"registry": registry.address, "repository": "occ/tiny", "ca_file": str(registry.ca_file),
                      "runtime": "podman", "runtime_args": list(HOST_RUNTIME_ARGS), "run_args": list(HOST_RUN_ARGS),
                      "stop_timeout": 2, "keep": 3, "previous_running": args.previous_running},
            "proxy": {"kind": "caddy", "listen_ports": [listen], "admin_ports": [admin], "drain_seconds": 0.5},
        }
        s = config.parse(raw, name="bench", file=Path("env/bench.toml"), root=tmp)
        environ = {"REGISTRY_USERNAME": registry.username, "REGISTRY_PASSWORD": registry.password}
        host.write("srv/occ/shared/.env", "APP_SECRET=bench\n", 0o600)
        hosts.setup_proxy(s.hosts, s.proxy, s.app)   # what `invoke hosts.setup` does
        t = hosts.targets(s.hosts, s.app)[0]
        conn = _connect(s.hosts, t)
        p = s.proxy.for_host(0, t.deploy_to)
        target = target_for(s)
        out = io.StringIO()

        def release(i: int, ref: str) -> float:
            run_id, rid = f"bench-{i}", f"20260101{i:06d}-bench{i:02d}"
            ctx = StepContext(run_id=run_id, env="bench", state={}, console=Console(out))
            ctx.put(ImageRef(reference=ref, digest=ref.rsplit("@", 1)[1]))
            started = time.perf_counter()
            target.lock(run_id, rid)
            try:
                target.release(ctx, rid, None, environ)   # type: ignore[arg-type]
            finally:
                target.unlock(run_id)
            return time.perf_counter() - started

        def settle() -> float:
            # The finish (drain, stop of the old container, prune) runs on in the background on
            # the host after an operation returns; the next one's state read would wait for it.
            # Waited for here, untimed, as the bare side's cleanup is; measured and reported.
            started = time.perf_counter()
            _run(conn, t, wait_finish_command(t), s.hosts, "waiting for the background finish", long=True)
            finish.append(time.perf_counter() - started)
            return finish[-1]

        finish: list[float] = []
        release(0, refs[0])   # the first container and image on the host
        settle()
        traffic = Traffic("127.0.0.1", listen, "/", interval=0.01, timeout=5.0)
        toolkit: list[float] = []
        rollbacks: list[float] = []
        with traffic:
            time.sleep(0.3)
            for i in range(1, n + 1):
                toolkit.append(release(i, refs[i]))
                settle()
            for j in range(n):   # back and forth between the last two releases
                k = n - 1 if j % 2 == 0 else n
                rb_started = time.perf_counter()
                target.rollback(StepContext(run_id=f"bench-rb-{j}", env="bench", state={}, console=Console(out)),
                                f"20260101{k:06d}-bench{k:02d}", expect=None, environ=environ)
                rollbacks.append(time.perf_counter() - rb_started)
                settle()
            time.sleep(0.3)
        print(f"traffic during {n} releases and {n} rollbacks: {traffic.summary()}")
        print(f"bodies seen: {dict(traffic.bodies)}")

        # The bare way, on the same host, for images it does not hold yet.
        rt = ["podman", *fill_args(HOST_RUNTIME_ARGS, t)]
        auth = tmp / "bare-auth"
        auth.mkdir()
        auth_path = authfile(auth, registry)
        host_auth = f"{t.deploy_to}/bare-auth.json"
        conn.put(str(auth_path), host_auth)
        certs = f"{t.deploy_to}/image/certs/{registry.address}"
        def over_ssh(cmd: str, what: str) -> float:
            started = time.perf_counter()
            r = subprocess.run([*ssh_argv(farm, host), cmd], capture_output=True, text=True, timeout=300)
            took = time.perf_counter() - started
            if r.returncode != 0:
                raise RuntimeError(f"{what} failed ({r.returncode}): {r.stderr[-800:]}")
            return took

        def on_open(cmd: str, what: str) -> float:
            started = time.perf_counter()
            _run(conn, t, cmd, s.hosts, what, long=True)
            return time.perf_counter() - started

        def bare_release(i: int) -> str:
            port = free_port()
            return (f"{shlex.join(rt)} pull --authfile {host_auth} --cert-dir {shlex.quote(certs)} {refs[i]} >/dev/null && "
                    f"{shlex.join(rt)} run -d --name bare-{i} --network=host {shlex.join(HOST_RUN_ARGS)} "
                    f"--env PORT={port} {refs[i]} >/dev/null && "
                    f"until curl -fs -o /dev/null http://127.0.0.1:{port}/healthz; do sleep 0.2; done")

        bare: list[float] = []        # one ssh command each, its connection included
        bare_open: list[float] = []   # on the connection opened beforehand
        for i in range(n + 1, 2 * n + 1):
            bare.append(over_ssh(bare_release(i), "bare pull + run + health"))
            bare_open.append(on_open(bare_release(i + n), "bare pull + run + health"))
            for j in (i, i + n):
                _run(conn, t, f"{shlex.join(rt)} rm -f -t 0 bare-{j} >/dev/null", s.hosts, "cleanup", long=True)

        # Rollback's bare peer: run a held image, health loop, proxy switch (then back, untimed).
        held = refs[n - 1]   # the release before the last: its image is on the host (image.keep)
        live = _run(conn, t, _proxy.upstream_command(p), s.hosts, "upstream").stdout.strip()
        bare_rb: list[float] = []
        bare_rb_open: list[float] = []
        for j in range(n):
            for way, times in ((over_ssh, bare_rb), (on_open, bare_rb_open)):
                port = free_port()
                cmd = (f"{shlex.join(rt)} run -d --name bare-rb --network=host {shlex.join(HOST_RUN_ARGS)} "
                       f"--env PORT={port} {held} >/dev/null && "
                       f"until curl -fs -o /dev/null http://127.0.0.1:{port}/healthz; do sleep 0.2; done && "
                       + _proxy.switch_command(p, port))
                times.append(way(cmd, "bare rollback"))
                _run(conn, t, _proxy.switch_command(p, int(live)) + f"; {shlex.join(rt)} rm -f -t 0 bare-rb >/dev/null",
                     s.hosts, "cleanup", long=True)
        # With the previous container running, the rollback's peer is a bare proxy switch: a
        # container already up (started untimed), one health look, the switch; one ssh command.
        bare_sw: list[float] = []
        bare_sw_open: list[float] = []
        if args.previous_running:
            for j in range(n):
                for way, times in ((over_ssh, bare_sw), (on_open, bare_sw_open)):
                    port = free_port()
                    _run(conn, t, f"{shlex.join(rt)} run -d --name bare-sw --network=host {shlex.join(HOST_RUN_ARGS)} "
                                  f"--env PORT={port} {held} >/dev/null && "
                                  f"until curl -fs -o /dev/null http://127.0.0.1:{port}/healthz; do sleep 0.2; done",
                         s.hosts, "bare container", long=True)
                    times.append(way(f"curl -fs -o /dev/null http://127.0.0.1:{port}/healthz && "
                                     + _proxy.switch_command(p, port), "bare proxy switch"))
                    _run(conn, t, _proxy.switch_command(p, int(live)) + f"; {shlex.join(rt)} rm -f -t 0 bare-sw >/dev/null",
                         s.hosts, "cleanup", long=True)
        conn.close()

        med = statistics.median
        tk, bk, bko = med(toolkit), med(bare), med(bare_open)
        rb, brb, brbo = med(rollbacks), med(bare_rb), med(bare_rb_open)
        fin = med(finish[1:])
        print(f"release (new image): toolkit median {tk:.2f}s {['%.2f' % x for x in toolkit]}, bare pull+run+health "
              f"(one ssh command) median {bk:.2f}s {['%.2f' % x for x in bare]}: {tk / bk:.2f}x; bare on an open "
              f"connection {bko:.2f}s {['%.2f' % x for x in bare_open]}: {tk / bko:.2f}x")
        print(f"rollback (image held): toolkit median {rb:.2f}s {['%.2f' % x for x in rollbacks]}, bare run+health+switch "
              f"(one ssh command) median {brb:.2f}s {['%.2f' % x for x in bare_rb]}: {rb / brb:.2f}x; bare on an open "
              f"connection {brbo:.2f}s {['%.2f' % x for x in bare_rb_open]}: {rb / brbo:.2f}x")
        print(f"background finish after each operation (drain 0.5 s + stop + prune; untimed above, waited for "
              f"before the next one): {['%.2f' % x for x in finish[1:]]}, i.e. release with it "
              f"{(tk + fin) / bk:.2f}x, rollback with it {(rb + fin) / brb:.2f}x")
        mode = ", previous container kept running" if args.previous_running else ""
        claims = [
            claim("image", f"failed GETs (10 ms) during {n} releases + {n} rollbacks of one host",
                  f"{len(traffic.failures)} of {traffic.sent}", "0", not traffic.failures),
            claim("image", "release toolkit/bare (pull+run+health, one ssh command)", f"{tk / bk:.2f}x", "<= 1.3x",
                  tk / bk <= 1.3),
            claim("image", "release toolkit/bare on a connection opened beforehand", f"{tk / bko:.2f}x"),
            claim("image", "release toolkit + its background finish (drain 0.5 s, stop, prune)/bare",
                  f"{(tk + fin) / bk:.2f}x"),
            claim("image", "rollback toolkit/bare (run+health+switch, one ssh command)" + mode, f"{rb / brb:.2f}x",
                  "<= 1.2x", rb / brb <= 1.2),
            claim("image", "rollback toolkit/bare on a connection opened beforehand" + mode, f"{rb / brbo:.2f}x"),
            claim("image", "rollback toolkit + its background finish/bare" + mode, f"{(rb + fin) / brb:.2f}x"),
        ]
        if bare_sw:
            sw, swo = med(bare_sw), med(bare_sw_open)
            print(f"rollback against a bare proxy switch (container up, health look, switch; one ssh command) median "
                  f"{sw:.2f}s {['%.2f' % x for x in bare_sw]}: {rb / sw:.2f}x; on an open connection {swo:.2f}s: "
                  f"{rb / swo:.2f}x")
            claims += [
                claim("image", "rollback toolkit/bare proxy switch (health+switch, one ssh command)" + mode,
                      f"{rb / sw:.2f}x", "<= 1.2x", rb / sw <= 1.2),
                claim("image", "rollback toolkit/bare proxy switch on a connection opened beforehand" + mode,
                      f"{rb / swo:.2f}x"),
            ]
        write_claims(args.claims_out, claims)
        return 0 if all(c.met for c in claims[:1]) else 1
    finally:
        try:
            remove_all_containers(host, str(host.root / "srv/occ"))
        finally:
            registry.stop()
            farm.stop()


if __name__ == "__main__":
    raise SystemExit(main())
