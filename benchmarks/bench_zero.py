"""Zero downtime on ONE host for the tree target (issue 24): the example app (examples/app, Node)
on one real sshd host behind a real proxy (caddy through its admin API, then nginx with a reload),
set up by hosts.setup; the toolkit's supervisor runs the app on two ports (deploy/hosts/_slots.py).

- requests: a GET every 10 ms through the proxy, a fresh connection each, during three releases of
  the host and one rollback; every answer recorded. Target: 0 failed requests, for each proxy.
  (The image target's figure is benchmarks/bench_image.py's, measured the same way.)
- rollback time: the toolkit's rollback to the release before (lock, state read, the target's
  files checked against its manifest, `current` switched, the release started beside the live one,
  health on the host, proxy switched, the old app stopped, log, unlock) against a bare proxy
  switch done by hand: one ssh command with the same switch of `current`, start on the free port,
  curl health loop, proxy switch and stop. proxy.drain_seconds is 0 on both sides (a wait, not
  work). Target: median toolkit/bare <= 1.2x.

    python benchmarks/bench_zero.py [--runs 5] [--proxies caddy,nginx]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, print_claims, ssh_argv, write_claims  # noqa: E402
from deploy import hosts  # noqa: E402
from deploy.build import build  # noqa: E402
from deploy.config import AppSection, ProxySection  # noqa: E402
from deploy.hosts import _proxy, _slots  # noqa: E402
from deploy.startup import start_argv  # noqa: E402
from deploy.testing.app import BUILT_AT, SHA_A, copy_example_app  # noqa: E402
from deploy.testing.ports import free_port  # noqa: E402
from deploy.testing.sshd import SshdFarm  # noqa: E402
from deploy.testing.traffic import Traffic  # noqa: E402

SUB = "srv/occ"
RIDS = [f"2024050112{i:02d}00-abc{i:04d}" for i in range(40)]


def served(port: int) -> str:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5).read())["release"]


def one_proxy(farm, h, art, kind: str, runs: int) -> list:
    h.write(f"{SUB}/shared/.env", "HOST=127.0.0.1\n")
    app_port = free_port()
    offset = 1
    while True:   # a spare port beside it that is free too
        spare = free_port()
        if 0 < spare - app_port < 1000:
            offset = spare - app_port
            break
        app_port = free_port()
    section = farm.hosts_section([h], app_ports=(app_port,), health_timeout=20.0)
    app = AppSection(health_path="/healthz", ready_timeout=20.0)
    proxy = ProxySection(kind=kind, listen=free_port(), admin=f"127.0.0.1:{free_port()}", spare_port_offset=offset,
                         drain_seconds=0.5)
    deploy_to = str(h.root / SUB)
    here = proxy.for_host(0, deploy_to)
    t = hosts.targets(section, app)[0]
    rids = iter(RIDS)
    made = []

    def release(p=proxy):
        rid = next(rids)
        made.append(rid)
        hosts.release(section, dataclasses.replace(art, release_id=rid), run_id=f"run-{rid}", app=app, proxy=p)
        return rid

    out = []
    try:
        hosts.setup_proxy(section, proxy, app)
        release()
        with Traffic("127.0.0.1", proxy.listen, "/healthz", interval=0.01) as tr:
            for _ in range(3):
                release()
            hosts.rollback(section, run_id="rb-load", app=app, proxy=proxy)
            time.sleep(0.2)
        assert served(proxy.listen) == made[-2]
        print(f"{kind}: {tr.summary()}", flush=True)
        out.append(claim("zero", f"tree, {kind}: failed GETs (every 10 ms) during 3 releases + 1 rollback of one host",
                         f"{len(tr.failures)} of {tr.sent}", "0", not tr.failures))

        # rollback time: alternate between the last two releases, toolkit then bare, drain 0 on both
        fast = dataclasses.replace(proxy, drain_seconds=0.0)
        here0 = dataclasses.replace(here, drain_seconds=0.0)
        a, b = made[-1], made[-2]     # the host serves b (rolled back)
        toolkit, bare = [], []
        port_var = app.port_var
        # the same start command the toolkit reads from the release's package.json
        pkg = json.loads((h.root / SUB / "releases" / a / "package.json").read_text())
        for i in range(runs):
            to = a   # the toolkit rolls the host from b to a, the bare side switches it back to b
            t0 = time.perf_counter()
            hosts.rollback(section, to, run_id=f"rb-{i}", app=app, proxy=fast)
            toolkit.append(time.perf_counter() - t0)
            assert served(proxy.listen) == to
            back = b
            live = int(subprocess.run(["sh", "-c", _proxy.upstream_command(here0)], capture_output=True,
                                      text=True).stdout.strip())
            new = app_port if live != app_port else app_port + offset
            script = " && ".join([
                hosts.switch_command(t, back),
                _slots.start_slot_command(t, new, back, port_var, start_argv(app, pkg, f"releases/{back}")),
                _slots.slot_health_command(t, new, app.health_path, 20.0),
                _proxy.switch_command(here0, new),
                f"{{ {_slots.stop_slot_command(t, live)}; }}"])
            t0 = time.perf_counter()
            r = subprocess.run([*ssh_argv(farm, h), script], capture_output=True, text=True)
            bare.append(time.perf_counter() - t0)
            assert r.returncode == 0, r.stderr
            assert served(proxy.listen) == back
        tk, bk = statistics.median(toolkit), statistics.median(bare)
        print(f"{kind}: rollback toolkit {tk:.3f}s (runs {', '.join(f'{x:.2f}' for x in toolkit)}), bare proxy "
              f"switch {bk:.3f}s (runs {', '.join(f'{x:.2f}' for x in bare)})", flush=True)
        out.append(claim("zero", f"tree, {kind}: rollback toolkit/bare (start beside + health + proxy switch)",
                         f"{tk / bk:.2f}x ({tk:.2f}s/{bk:.2f}s)", "<= 1.2x", tk / bk <= 1.2))
    finally:
        for port in (app_port, app_port + offset):
            subprocess.run(["sh", "-c", _slots.stop_slot_command(t, port)], capture_output=True)
        subprocess.run(["sh", "-c", _proxy.proxy_remove_command(here)], capture_output=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed rollbacks per side and proxy")
    ap.add_argument("--proxies", default="caddy,nginx")
    ap.add_argument("--claims-out", help="write the claims as JSON here (benchmarks/run.py)")
    args = ap.parse_args()
    for tool in ("caddy", "nginx", "curl", "sshd"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed: apt-get install {tool}", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="occ-bench-zero-"))
    root.chmod(0o755)
    claims: list = []
    farm = None
    try:
        print("building examples/app ...", flush=True)
        art = build(copy_example_app(root / "app"), SHA_A, root / "artifacts", now=BUILT_AT).artifact
        farm = SshdFarm(1, root / "farm")
        h = farm.hosts[0]
        for kind in args.proxies.split(","):
            claims += one_proxy(farm, h, art, kind, max(2, args.runs))
            write_claims(args.claims_out, claims)
            farm.reset(h)
        return print_claims(claims)
    finally:
        write_claims(args.claims_out, claims)
        if farm is not None:
            farm.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
