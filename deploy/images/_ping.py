"""Before a build: can this machine reach the registry, trust its certificate, and log in?

One request to the registry API's base (`GET /v2/`, the distribution spec's version check),
answered 200 (open, or the login was accepted) or 401 with how to log in: `Basic` (the login
is sent and must then be accepted) or `Bearer` (a token is asked for at the realm named, for
push and pull on the repository). Container tools blur these causes (podman's `login` reports
an untrusted certificate as "credentials are invalid"), and a build may take minutes, so the
step asks first and fails with the one cause that applies."""

from __future__ import annotations

import base64
import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from typing import Mapping

from deploy.config import Settings
from deploy.errors import ImageFailed
from deploy.images._tool import Credentials, check_docker_tls, credentials, tool


def _context(s: Settings) -> ssl.SSLContext:
    im = s.image
    if im.insecure:
        ctx = ssl._create_unverified_context()   # the settings' explicit opt-out
        return ctx
    ctx = ssl.create_default_context()
    if im.ca_file:
        p = Path(os.path.expanduser(im.ca_file))
        ctx.load_verify_locations(cafile=str(p if p.is_absolute() else s.root / p))
    # What podman and docker also trust for this registry: the per-registry CA folders.
    for folder in (Path("/etc/containers/certs.d") / im.registry, Path("/etc/docker/certs.d") / im.registry):
        for crt in sorted(folder.glob("*.crt")) if folder.is_dir() else ():
            try:
                ctx.load_verify_locations(cafile=str(crt))
            except (OSError, ssl.SSLError):
                pass   # not a CA the tools could use either; the request below says what fails
    return ctx


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username.reveal()}:{creds.password.reveal()}".encode()).decode()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def check_registry(s: Settings, creds: Credentials | None, *, timeout: float = 15.0) -> None:
    """ImageFailed naming the registry and the cause unless it answers, is trusted and takes
    the login (or needs none)."""
    im = s.image
    ctx = _context(s)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    base = f"https://{im.registry}/v2/"

    def get(url: str, auth: str | None) -> tuple[int, dict[str, str]]:
        req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
        try:
            with opener.open(req, timeout=timeout) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}

    try:
        try:
            status, headers = get(base, None)
        except urllib.error.URLError as e:
            if im.insecure and isinstance(e.reason, ssl.SSLError):
                base = f"http://{im.registry}/v2/"      # what --tls-verify=false also falls back to
                status, headers = get(base, None)
            else:
                raise
        if status == 200:
            return
        if status != 401:
            raise ImageFailed(f"The registry {im.registry} answered {status} to GET {base}: it does not look like a "
                              "container registry (the distribution API answers 200 or 401 there).",
                              "Check image.registry (host:port of the registry itself, no path).")
        scheme, params = _challenge(headers.get("www-authenticate", ""))
        if creds is None:
            raise _refused(s, "asks for a login, and none is configured (image.username_var is \"\")")
        if scheme == "basic":
            status, _ = get(base, _basic(creds))
        elif scheme == "bearer" and params.get("realm"):
            query = {"service": params.get("service", ""), "scope": f"repository:{im.repository}:pull,push"}
            status, _ = get(f"{params['realm']}?{urllib.parse.urlencode(query)}", _basic(creds))
        else:
            raise ImageFailed(f"The registry {im.registry} asks for a login scheme the toolkit does not know "
                              f"({scheme or 'none named'}).", "Use a registry with Basic or Bearer (token) auth.")
        if status in (401, 403):
            raise _refused(s, f"refused the login in {im.username_var}/{im.password_var} ({status})")
        if status != 200:
            raise ImageFailed(f"The registry {im.registry} answered {status} to the login.", "Check the registry.")
    except urllib.error.URLError as e:
        raise _network(s, e.reason) from None
    except (OSError, ssl.SSLError) as e:
        raise _network(s, e) from None


def _refused(s: Settings, what: str) -> ImageFailed:
    im = s.image
    return ImageFailed(f"The registry {im.registry} {what}.",
                       f"Check {im.username_var} and {im.password_var}: the account must exist and be allowed to push "
                       f"to {im.repository}." if im.username_var else
                       "Name the variables that hold the registry login in image.username_var and image.password_var.")


def _network(s: Settings, reason: object) -> ImageFailed:
    im = s.image
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ImageFailed(
            f"The TLS certificate of the registry {im.registry} is not trusted: {reason.verify_message}.",
            "Set image.ca_file to the CA (PEM) that signed the registry's certificate"
            + (f" (the one set, {im.ca_file}, did not)" if im.ca_file else "")
            + "; image.insecure = true turns verification off and is for a test registry only.")
    if isinstance(reason, ssl.SSLError):
        return ImageFailed(f"TLS with the registry {im.registry} failed: {reason}.",
                           "If it serves plain HTTP, serve it over TLS, or set image.insecure = true if that is what "
                           "you mean.")
    text = str(getattr(reason, "strerror", None) or reason)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        text = "no answer in time"
    return ImageFailed(f"The registry {im.registry} cannot be reached: {text}.",
                       "Check image.registry (host:port) and that the registry is up and reachable from this machine, "
                       "then promote again.")


def registry_ready(s: Settings, environ: Mapping[str, str]) -> str:
    """Preflight for the image step, before anything changes: the container tool is here, the
    login variables are set, and the registry answers, is trusted and takes the login."""
    name = tool(s.image, environ.get("PATH"))
    if name == "docker":
        check_docker_tls(s.image)
    creds = credentials(s, environ)
    check_registry(s, creds)
    return f"{name}; registry {s.image.registry} answers" + (", login ok" if creds else " (anonymous)")
