"""A real container registry for tests and benchmarks: Debian's `docker-registry` (the CNCF
distribution registry 2.8) serving on a free 127.0.0.1 port, with htpasswd (bcrypt) auth and
TLS from a throwaway certificate authority made with openssl.

Clients verify the server against `Registry.ca_file` (or `Registry.cert_dir`, a folder holding
that CA as `ca.crt`, the layout podman's and skopeo's `--cert-dir` read). The password is made
here and handed to htpasswd on its standard input, never on a command line.

Fixtures (loaded as a pytest plugin by tests/conftest.py):
- `registry`: one running registry per test session (per xdist worker); fails (does not skip)
  when `docker-registry`, `openssl` or `htpasswd` is missing, because a skipped image suite
  would look green.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deploy.testing.ports import free_port

_TOOLS = {"docker-registry": "docker-registry", "openssl": "openssl", "htpasswd": "apache2-utils"}


class RegistryMissing(RuntimeError):
    pass


def _need(tool: str) -> str:
    found = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.access(f"/usr/sbin/{tool}", os.X_OK) else None)
    if not found:
        raise RegistryMissing(f"`{tool}` was not found on PATH. The image tests need a real registry: "
                              f"apt-get install -y {_TOOLS[tool]} (Debian/Ubuntu).")
    return found


def _run(argv: list[str], *, cwd: Path, stdin: str | None = None) -> None:
    p = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd)})
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-1500:]}")


def make_ca(folder: Path, *, name: str = "occ test CA") -> tuple[Path, Path]:
    """A self-signed certificate authority in `folder`: (ca.crt, ca.key)."""
    openssl = _need("openssl")
    crt, key = folder / "ca.crt", folder / "ca.key"
    _run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
          "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt),
          "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
         cwd=folder)
    return crt, key


def issue_cert(folder: Path, ca: tuple[Path, Path], *, prefix: str = "server",
               names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> tuple[Path, Path]:
    """A server certificate for `names` (IP addresses or DNS names) signed by `ca`: (crt, key)."""
    openssl = _need("openssl")
    crt, key, csr, ext = (folder / f"{prefix}.{x}" for x in ("crt", "key", "csr", "ext"))
    san = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names)
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    _run([openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
          "-keyout", str(key), "-out", str(csr)], cwd=folder)
    _run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
          "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt)], cwd=folder)
    csr.unlink()
    ext.unlink()
    return crt, key


class Registry:
    """One running registry. `address` is "127.0.0.1:<port>" (what an image reference starts
    with); `username`/`password` are its only account; `ca_file` is the CA that signed its
    certificate. `tls=False` serves plain HTTP and `auth=False` needs no login (for tests of
    the insecure opt-out)."""

    def __init__(self, base_dir: str | Path | None = None, *, username: str = "",
                 password: str | None = None, tls: bool = True, auth: bool = True):
        self.exe = _need("docker-registry")
        self.dir = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="occ-registry-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.tls, self.auth = tls, auth
        self.username = username or f"deployer{secrets.token_hex(2)}"
        self.password = secrets.token_urlsafe(18) if password is None else password
        self.port = 0
        self.log = self.dir / "registry.log"
        self.cert_dir = self.dir / "certs.d"
        self.ca_file = self.cert_dir / "ca.crt"
        self._proc: subprocess.Popen[bytes] | None = None
        if tls:
            self.cert_dir.mkdir()
            ca = make_ca(self.cert_dir)
            (self.cert_dir / "ca.key").rename(self.dir / "ca.key")   # clients read *.key in a cert dir as a client key
            self._ca = (ca[0], self.dir / "ca.key")
            self._cert = issue_cert(self.dir, self._ca)
        if auth:
            _run([_need("htpasswd"), "-i", "-B", "-c", str(self.dir / "htpasswd"), self.username],
                 cwd=self.dir, stdin=self.password + "\n")
        self.start()
        atexit.register(self.stop)

    # ------------------------------------------------------------ plumbing

    def _config(self) -> Path:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.dir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {secrets.token_hex(16)}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self._cert[0]}", f"    key: {self._cert[1]}"]
        if self.auth:
            lines += ["auth:", "  htpasswd:", "    realm: occ-test", f"    path: {self.dir / 'htpasswd'}"]
        cfg = self.dir / "config.yml"
        cfg.write_text("\n".join(lines) + "\n")
        os.chmod(cfg, 0o600)
        return cfg

    def start(self) -> None:
        """Serve on a free loopback port (a new one when the chosen one was taken meanwhile)."""
        last = ""
        for _ in range(5):
            self.port = free_port()
            cfg = self._config()
            log = open(self.log, "ab")
            self._proc = subprocess.Popen([self.exe, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True,
                                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
            log.close()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    self.request("/v2/", auth=False)
                    return
                except urllib.error.HTTPError as e:
                    if e.code == 401:
                        return
                except (OSError, ssl.SSLError):
                    pass
                time.sleep(0.05)
            last = self.log.read_text(errors="replace")[-1500:]
            self._kill()
        raise RuntimeError(f"could not start docker-registry: {last}")

    def _kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait()
        self._proc = None

    # ------------------------------------------------------------ public

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, remove: bool = True) -> None:
        """Stop the server and, by default, delete its folder (images, certificates, htpasswd)."""
        self._kill()
        if remove and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def down(self) -> None:
        """Stop serving but keep everything, so `start()` brings the same registry back
        (on a new port: read `address` again)."""
        self._kill()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(self, path: str, *, auth: bool = True, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request to the registry's API as its user: (status, headers, body)."""
        scheme = "https" if self.tls else "http"
        req = urllib.request.Request(f"{scheme}://{self.address}{path}", method=method, headers=dict(headers or {}))
        if auth and self.auth:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        ctx = self.ssl_context() if self.tls else None
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()

    def tags(self, repository: str) -> list[str]:
        """The repository's tags ([] when it does not exist)."""
        try:
            _, _, body = self.request(f"/v2/{repository}/tags/list")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        return sorted(json.loads(body).get("tags") or [])

    def digest(self, repository: str, ref: str) -> str | None:
        """The manifest digest of `repository:ref` (a tag or a digest) as the registry reports
        it, or None when there is none."""
        accept = ", ".join((
            "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json"))
        try:
            _, headers, _ = self.request(f"/v2/{repository}/manifests/{ref}", method="HEAD", headers={"Accept": accept})
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise
        return headers.get("docker-content-digest")


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real registry on loopback (TLS with its own CA, htpasswd auth) for the whole session."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        reg.stop()
