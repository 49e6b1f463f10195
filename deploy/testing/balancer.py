"""A real nginx in front of hosts as their load balancer, the request loop that counts what
fails through it, and the `hosts.balancer` command for it.

nginx here balances as an operator's would with open-source nginx: passive checks only
(`max_fails`, `fail_timeout`: a server that failed is left out for `fail_timeout`), and a
request that could not reach a server, or whose server closed before answering, is tried on the
next (`proxy_next_upstream`). The balancer command,

    python -m deploy.testing.balancer DIR out|in HOST:PORT...

marks those servers `down` (out) or not (in) in DIR/upstreams.conf, reloads nginx and returns
once no worker with the previous configuration is left: from then on no request goes to a
server that is out (a worker still holding one finishes its requests first), and every server
that is in is tried afresh (a reload forgets passive failures).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
{user}
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream app {{
    include {dir}/upstreams.conf;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_connect_timeout 1s;
      proxy_read_timeout 10s;
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_next_upstream_tries 4;
    }}
  }}
}}
"""


def _upstreams(servers: list[str], down: set[str], max_fails: int, fail_timeout: float) -> str:
    return "".join(f"server {s} max_fails={max_fails} fail_timeout={fail_timeout:g}s{' down' if s in down else ''};\n"
                   for s in servers)


class Nginx:
    """nginx on 127.0.0.1:`port` balancing over `servers` (host:port), its files in `folder`."""

    def __init__(self, folder: Path, servers: list[str], port: int, *, max_fails: int = 1, fail_timeout: float = 2.0):
        self.dir, self.servers, self.port = Path(folder), list(servers), port
        self.max_fails, self.fail_timeout = max_fails, fail_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def balancer(self) -> tuple[str, ...]:
        """`hosts.balancer` for this nginx."""
        return (sys.executable, "-m", "deploy.testing.balancer", str(self.dir))

    def start(self) -> "Nginx":
        self.dir.mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(CONF.format(dir=self.dir, port=self.port, user=user))
        (self.dir / "upstreams.conf").write_text(_upstreams(self.servers, set(), self.max_fails, self.fail_timeout))
        (self.dir / "settings").write_text(f"{self.max_fails} {self.fail_timeout:g}\n" + "\n".join(self.servers) + "\n")
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                      "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _workers(self.proc.pid):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}): {_tail(self.dir / 'error.log')}")
            time.sleep(0.02)
        raise RuntimeError("nginx did not start its worker within 10s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return ""


def _workers(master: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == master and fields[0] != "Z":
                out.add(int(d))
    return out


class Loop:
    """GET / through the balancer every `interval` s from a thread; counts what failed (a
    status of 400 or more, or no answer) and keeps why."""

    def __init__(self, port: int, interval: float = 0.01):
        self.port, self.interval = port, interval
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status >= 400:
                    self.failed += 1
                    self.errors.append(str(r.status))
            except OSError as e:
                self.failed += 1
                self.errors.append(type(e).__name__)
            time.sleep(self.interval)

    def __enter__(self) -> "Loop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("out", "in"):
        print("usage: python -m deploy.testing.balancer DIR out|in HOST:PORT...", file=sys.stderr)
        return 2
    folder, action, named = Path(argv[0]), argv[1], set(argv[2:])
    head, *servers = (folder / "settings").read_text().splitlines()
    max_fails, fail_timeout = int(head.split()[0]), float(head.split()[1])
    unknown = named - set(servers)
    if unknown:
        print(f"not an upstream of this balancer: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    state = folder / "down"
    down = set(state.read_text().split()) if state.exists() else set()
    down = down | named if action == "out" else down - named
    state.write_text("\n".join(sorted(down)) + "\n")
    (folder / "upstreams.conf").write_text(_upstreams(servers, down, max_fails, fail_timeout))
    master = int((folder / "nginx.pid").read_text().strip())
    before = _workers(master)
    r = subprocess.run(["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-s", "reload"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"nginx reload failed: {r.stderr.strip()}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _workers(master)
        if now and not (now & before):
            return 0
        time.sleep(0.02)
    print("nginx's old workers did not finish within 20s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
