"""Read-only views of the hosts: their releases, what `current` is, whether a release can go there."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from deploy.hosts._commands import check_command, parse_check
from deploy.hosts._group import _failed, _Host, _read_all
from deploy.hosts._ssh import _run
from deploy.hosts._values import HostCheck, HostReleases

if TYPE_CHECKING:
    from deploy.config import HostsSection


def releases(section: HostsSection) -> list[HostReleases]:
    """Every host's release dirs (name order) and which one is current."""
    hs = _read_all(section, lambda h: None)
    bad = [h for h in hs if h.error]
    if bad:
        raise _failed("listing releases", hs, "")
    return [HostReleases(host=h.t.name, releases=h.known.releases, current=h.known.current) for h in hs]


def current_release(section: HostsSection) -> dict[str, str | None]:
    """host -> the release `current` points at (None: never released)."""
    return {r.host: r.current for r in releases(section)}


def check(section: HostsSection) -> list[HostCheck]:
    """Can we release? Connect (host key checked), deploy_to writable, free space, current release."""

    def one(h: _Host) -> None:
        r = _run(h.conn, h.t, check_command(h.t, os.getpid()), section, "checking deploy_to")
        h.probe = parse_check(r.stdout)

    hs = _read_all(section, one)
    out = []
    for h in hs:
        if h.error:
            out.append(HostCheck(host=h.t.name, ok=False, error=h.error))
            continue
        assert h.probe is not None, "every host without an error was probed"
        writable, free_mb = h.probe
        problems = []
        if not writable:
            problems.append(f"{h.t.deploy_to} is not writable by {h.t.user}")
        if free_mb is not None and free_mb < section.min_free_mb:
            problems.append(f"only {free_mb} MB free under {h.t.deploy_to} (need {section.min_free_mb})")
        out.append(HostCheck(host=h.t.name, ok=not problems, writable=writable, free_mb=free_mb,
                             current=h.known.current, error="; ".join(problems)))
    return out
