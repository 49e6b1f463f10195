"""Release a ~3 MB artifact to 1, 4 and 16 real sshd hosts and compare:

- toolkit:    deploy.hosts.release (lock, checksum, shared links, barrier, health, prune)
- sequential: a plain Fabric loop, one host after the other
- parallel:   a bare Fabric loop with a thread per host
- ansible:    an Ansible playbook (ansible-core from PyPI, installed into a venv under the
              benchmark's temp dir; forks=16, pipelining, no fact gathering, the farm's
              key and known_hosts with strict host key checking)

All of them do the same work per host: connect, upload, unpack into releases/<id>, switch
`current` (temp link + mv -T), run bin/restart (which returns once the app answers).
Reported: the median wall time of each, and the ratios toolkit/parallel (target <= 1.15),
sequential/toolkit (target >= 1.8 at 16 hosts) and ansible/toolkit (targets >= 9 at 16
hosts, >= 7 at 1). Ratios, not absolute times, are the result: every side runs on this
machine in the same run.

    python benchmarks/bench_release.py [--runs 5] [--hosts 1,4,16] [--mb 3] [--no-ansible]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import claim, on_each, write_claims  # noqa: E402
from deploy import hosts as H  # noqa: E402
from deploy.testing.sshd import SshdFarm, make_artifact  # noqa: E402

METHODS = ("toolkit", "sequential", "parallel", "ansible")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_release(host, deploy_to: str, artifact) -> None:
    """The same steps as the toolkit, with nothing around them."""
    rid = artifact.release_id
    rel = f"{deploy_to}/releases/{rid}"
    upload = f"{deploy_to}/{rid}.tar.gz"
    with host.connection() as c:
        c.put(str(artifact.path), upload)
        c.run(H.sh("mkdir", "-p", rel) + " && " + H.sh("tar", "-xzf", upload, "-C", rel)
              + f" && echo {rid} > {rel}/RELEASE && ln -s {deploy_to}/shared/.env {rel}/.env"
              + f" && ln -sfn releases/{rid} {deploy_to}/.cur && mv -T {deploy_to}/.cur {deploy_to}/current"
              + f" && rm -f {upload}", hide=True, in_stream=False)
        c.run(f"cd {deploy_to}/current && bin/restart", hide=True, in_stream=False)


def run_sequential(hs, sub, artifact):
    for h in hs:
        bare_release(h, str(h.root / sub), artifact)


def run_parallel(hs, sub, artifact):
    on_each(hs, lambda h: bare_release(h, str(h.root / sub), artifact))


# The same steps as bare_release, as an Ansible user would write them with the builtin
# modules (copy, file, unarchive, shell, command).
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: upload the artifact
      ansible.builtin.copy:
        src: "{{ artifact }}"
        dest: "{{ deploy_to }}/{{ rid }}.tar.gz"
        mode: "0644"
    - name: release directory
      ansible.builtin.file:
        path: "{{ deploy_to }}/releases/{{ rid }}"
        state: directory
    - name: unpack
      ansible.builtin.unarchive:
        src: "{{ deploy_to }}/{{ rid }}.tar.gz"
        dest: "{{ deploy_to }}/releases/{{ rid }}"
        remote_src: true
    - name: switch current
      ansible.builtin.shell: >-
        echo {{ rid }} > releases/{{ rid }}/RELEASE
        && ln -s {{ deploy_to }}/shared/.env releases/{{ rid }}/.env
        && ln -sfn releases/{{ rid }} .cur && mv -T .cur current
        && rm -f {{ rid }}.tar.gz
      args:
        chdir: "{{ deploy_to }}"
    - name: restart
      ansible.builtin.command: bin/restart
      args:
        chdir: "{{ deploy_to }}/current"
"""


class AnsiblePeer:
    """ansible-core in a venv of its own, an inventory of the farm's hosts, a playbook."""

    def __init__(self, work: Path, farm, forks: int = 16, ansible_playbook: str | None = None,
                 venv: Path | None = None):
        self.dir = work / "ansible"
        self.dir.mkdir()
        venv = venv or self.dir / "venv"
        if ansible_playbook:
            self.exe = ansible_playbook
        elif (venv / "bin" / "ansible-playbook").exists():
            self.exe = str(venv / "bin" / "ansible-playbook")   # kept from an earlier run (--ansible-venv)
        else:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"pip install ansible-core failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            self.exe = str(venv / "bin" / "ansible-playbook")
        self.version = subprocess.run([self.exe, "--version"], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[0]
        self.farm = farm
        (self.dir / "playbook.yml").write_text(PLAYBOOK)
        (self.dir / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {forks}\n"
            "host_key_checking = True\n"
            "interpreter_python = /usr/bin/python3\n"
            "gathering = explicit\n"
            "retry_files_enabled = False\n"
            f"local_tmp = {self.dir / 'local_tmp'}\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
        )

    def run(self, hs, sub: str, artifact, run_no: int) -> None:
        inv = self.dir / f"inventory-{len(hs)}.ini"
        inv.write_text("[all]\n" + "".join(
            f"{h.name} ansible_host={h.host} ansible_port={h.port} ansible_user={h.user} "
            f"deploy_to={h.root / sub}\n" for h in hs) + "\n[all:vars]\n"
            f"ansible_ssh_private_key_file={self.farm.key_file}\n"
            f"ansible_ssh_common_args='-o UserKnownHostsFile={self.farm.known_hosts} -o StrictHostKeyChecking=yes'\n")
        # A fresh ControlPath folder per run: every run starts from cold connections, as the
        # Fabric loops do, instead of reusing the previous run's ControlPersist masters.
        # Closing them (`ssh -O exit`) falls inside the timing but costs milliseconds.
        cp = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))  # short: unix socket paths max 108 bytes
        env = {**os.environ, "ANSIBLE_CONFIG": str(self.dir / "ansible.cfg"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp),
               "ANSIBLE_NOCOLOR": "1"}
        try:
            r = subprocess.run([self.exe, "-i", str(inv), str(self.dir / "playbook.yml"),
                                "-e", f"artifact={artifact.path}", "-e", f"rid={artifact.release_id}"],
                               env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise RuntimeError(f"ansible-playbook failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
        finally:
            for sock in cp.iterdir():
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "dummy"], capture_output=True)
            shutil.rmtree(cp, ignore_errors=True)


def prune_locally(hs, sub):
    """Outside the timing: keep only the current release, so disks stay small for every method."""
    for h in hs:
        d = h.root / sub / "releases"
        cur = os.readlink(h.root / sub / "current").split("/")[-1] if (h.root / sub / "current").is_symlink() else None
        for p in d.iterdir() if d.is_dir() else []:
            if p.name != cur:
                shutil.rmtree(p, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hosts", default="1,4,16")
    ap.add_argument("--mb", type=float, default=3.0)
    ap.add_argument("--no-ansible", action="store_true", help="leave the Ansible peer out")
    ap.add_argument("--ansible-playbook", help="an ansible-playbook to use instead of a fresh venv")
    ap.add_argument("--ansible-venv", help="a venv for ansible-core kept between runs (made when missing)")
    ap.add_argument("--claims-out")
    args = ap.parse_args()
    counts = [int(x) for x in args.hosts.split(",")]
    methods = [m for m in METHODS if not (m == "ansible" and args.no_ansible)]
    work = Path(tempfile.mkdtemp(prefix="occ-bench-"))
    farm = SshdFarm(max(counts))
    ansible = None
    try:
        if "ansible" in methods:
            ansible = AnsiblePeer(work, farm, forks=16, ansible_playbook=args.ansible_playbook,
                                  venv=Path(args.ansible_venv) if args.ansible_venv else None)
            print(ansible.version, flush=True)
        rows = []
        for n in counts:
            hs = farm.hosts[:n]
            ports = {}
            for m in methods:
                for h in hs:
                    ports[(m, h.port)] = p = free_port()
                    h.write(f"bench/{m}/shared/.env", f"PORT={p}\n")
            section = farm.hosts_section(
                hs, deploy_to=farm.deploy_to("bench/toolkit"), restart="bin/restart", max_parallel=max(16, n),
                keep_releases=2, health_timeout=10.0,
                health_urls=tuple(f"http://127.0.0.1:{ports[('toolkit', h.port)]}/RELEASE" for h in hs))
            times = {m: [] for m in methods}
            for i in range(args.runs + 1):  # run 0 warms up (first release, cold caches)
                rid = f"2024050112{n:02d}{i:02d}-bench{n:02d}"
                art = make_artifact(work, rid, padding_bytes=int(args.mb * 1024 * 1024))
                for m in methods:
                    t0 = time.perf_counter()
                    if m == "toolkit":
                        H.release(section, art, run_id=f"bench-{n}-{i}")
                    elif m == "sequential":
                        run_sequential(hs, f"bench/{m}", art)
                    elif m == "ansible":
                        ansible.run(hs, f"bench/{m}", art, i)
                    else:
                        run_parallel(hs, f"bench/{m}", art)
                    dt = time.perf_counter() - t0
                    if i:
                        times[m].append(dt)
                    prune_locally(hs, f"bench/{m}")
                art.path.unlink()
            med = {m: statistics.median(v) for m, v in times.items()}
            rows.append((n, med))
            print(f"{n:>3} hosts: " + "  ".join(f"{m} {t:.3f}s" for m, t in med.items()), flush=True)
        from tabulate import tabulate

        print()
        print(f"median of {args.runs} runs, {args.mb:g} MB artifact" + (f", {ansible.version}, forks=16" if ansible else ""))
        headers = ["hosts", *(f"{m} s" for m in methods), "toolkit/parallel (<=1.15)", "sequential/toolkit (>=1.8 @16)"]
        if ansible:
            headers += ["ansible/toolkit (>=9 @16, >=7 @1)", "ansible/parallel (ceiling)"]
        table = []
        claims = []
        for n, med in rows:
            tp, st = med["toolkit"] / med["parallel"], med["sequential"] / med["toolkit"]
            line = [n, *(f"{med[m]:.3f}" for m in methods), f"{tp:.2f}x", f"{st:.2f}x"]
            claims.append(claim("release", f"toolkit/bare parallel Fabric @{n} hosts", f"{tp:.2f}x", "<= 1.15x",
                                tp <= 1.15))
            if n == 16:
                claims.append(claim("release", "sequential Fabric/toolkit @16 hosts", f"{st:.2f}x", ">= 1.8x", st >= 1.8))
            if ansible:
                at = med["ansible"] / med["toolkit"]
                # What even the bare loop (no checks at all) achieves against this playbook.
                line += [f"{at:.2f}x", f"{med['ansible'] / med['parallel']:.2f}x"]
                target = {16: 9.0, 1: 7.0}.get(n)
                claims.append(claim("release", f"Ansible/toolkit @{n} hosts", f"{at:.1f}x",
                                    f">= {target:g}x" if target else "", (at >= target) if target else None))
                claims.append(claim("release", f"Ansible/bare parallel Fabric @{n} hosts (ceiling)",
                                    f"{med['ansible'] / med['parallel']:.1f}x"))
            table.append(line)
        print(tabulate(table, headers=headers))
        ok = all(c.met is not False for c in claims)
        print("targets met" if ok else "targets NOT met: " + "; ".join(
            f"{c.figure} {c.value} (target {c.target})" for c in claims if c.met is False))
        write_claims(args.claims_out, claims)
        return 0 if ok else 1
    finally:
        farm.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
