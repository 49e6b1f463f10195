"""The values of host operations: a target, a host's outcome and state, a lock's details."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from deploy.errors import SettingsError

RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Target:
    """One host as the settings describe it, with its placeholders resolved."""

    name: str            # user@host:port, how messages name it
    host: str
    port: int
    user: str
    deploy_to: str
    health_url: str = ""
    app_port: int = 0    # the port the app listens on there (app.port, or hosts.app_ports[i])


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    release: str | None          # the release this host is on afterwards, as far as we know
    previous: str | None         # the release it was on before
    duration: float
    error: str = ""
    uploaded: int = 0            # bytes sent to this host (artifact or delta: SFTP, or a command's stdin)
    transfer: str = ""           # "full", "delta from <id>: ...", "delta from <id> failed verification (...); sent in full", "none"
    reachable: bool = True       # False: no SSH connection could be made (a dead host, not a failed command)
    note: str = ""               # a warning that did not stop it (a rollback target whose files could not be checked)


@dataclass(frozen=True)
class HostCheck:
    host: str
    ok: bool
    writable: bool = False
    free_mb: int | None = None
    current: str | None = None
    error: str = ""


@dataclass(frozen=True)
class HostReleases:
    host: str
    releases: tuple[str, ...]
    current: str | None


@dataclass(frozen=True)
class LockInfo:
    host: str
    holder: str
    run_id: str
    acquired_at: datetime | None
    release: str = ""
    token: str = ""          # the holding runner's (deploy/liveness.py); empty in an older toolkit's lock

    def age_minutes(self, now: datetime) -> float | None:
        if self.acquired_at is None:
            return None
        return (now - self.acquired_at).total_seconds() / 60


@dataclass(frozen=True)
class HostState:
    """What phase 1 reads from a host: `current`, the release dirs, an earlier upload."""

    current: str | None
    releases: tuple[str, ...]
    upload_sha256: str | None
    apps: tuple[tuple[str, str], ...] = ()   # (release id, app) for releases whose RELEASE.json names one
    manifest: str = field(default="", repr=False)   # current's RELEASE.json, when asked for (a delta's base)

    def app_of(self) -> dict[str, str]:
        """release id -> app, as `parse_app_of` gives it ('' for a release that names none)."""
        return {rid: dict(self.apps).get(rid, "") for rid in self.releases}


# ---------------------------------------------------------------- validation (pure)

def validate_release_id(release_id: str) -> str:
    """A release id is a directory name and a Shopify version: `[A-Za-z0-9._-]`, <= 100, no `..`."""
    if not isinstance(release_id, str) or not RELEASE_ID.match(release_id) or ".." in release_id:
        raise SettingsError(
            f"Release id {release_id!r} is not allowed.",
            "Use 1-100 of A-Z a-z 0-9 . _ - starting with a letter or digit, without '..' "
            "(build ids look like 20240501120000-abc1234).",
        )
    return release_id
