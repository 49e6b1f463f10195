"""`invoke hosts.*`, `invoke shopify.*` and `invoke smoke`: the primitives on their own."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

from tabulate import tabulate

from deploy import cli
from deploy.errors import SettingsError


def _remote(env: str):
    s = cli.settings(env)
    if not s.hosts.hosts:
        raise SettingsError(f"The {env} environment has no hosts (hosts.hosts in {s.file.name}).",
                            "The local environment is managed with app.start/app.stop and promote --to=local.")
    return s


def hosts_check(env: str) -> int:
    from deploy import hosts

    rows = hosts.check(_remote(env).hosts)
    cli.out(tabulate([(r.host, "ok" if r.ok else "FAIL", "yes" if r.writable else "no",
                       r.free_mb if r.free_mb is not None else "-", r.current or "-", r.error or "")
                      for r in rows], headers=("host", "verdict", "writable", "free MB", "current", "problem")))
    return 0 if all(r.ok for r in rows) else 1


def hosts_releases(env: str) -> None:
    from deploy import hosts

    for h in hosts.releases(_remote(env).hosts):
        cli.out(f"{h.host}: " + ", ".join(f"[{r}]" if r == h.current else r for r in h.releases))


def _results(results) -> str:
    return tabulate([(r.host, "ok" if r.ok else "FAIL", r.previous or "-", r.release or "-", f"{r.duration:.2f}s",
                      r.error) for r in results], headers=("host", "verdict", "before", "after", "time", "problem"))


def hosts_release(env: str, sha: str | None) -> None:
    """Release an already-built artifact of `sha` to every host (no gate: use promote for that)."""
    import dataclasses

    from deploy import build, hosts
    from deploy.flows.common import git_sha
    from deploy.flows.steps import artifacts_dir

    s = _remote(env)
    full = git_sha(s.root, sha)
    art = build.find(artifacts_dir(s), full)
    if art is None:
        raise SettingsError(f"No artifact has been built for {full[:12]}.",
                            f"Build it through a promotion (invoke promote --to={env} --sha={full[:12]}), "
                            "which also runs the gate.")
    rid = build.new_release_id(full, datetime.now(timezone.utc))
    results = hosts.release(s.hosts, dataclasses.replace(art, release_id=rid), run_id=uuid.uuid4().hex[:12],
                            app=s.app)
    cli.out(_results(results))


def hosts_rollback(env: str, to: str | None) -> None:
    from deploy import hosts

    s = _remote(env)
    cli.out(_results(hosts.rollback(s.hosts, to, run_id=uuid.uuid4().hex[:12], app=s.app)))


def shopify_versions(env: str) -> None:
    from deploy import shopify

    s = cli.settings(env)
    items = shopify.versions(s, os.environ)
    cli.out(tabulate([(v.version_tag or "-", v.status, v.created_at, v.created_by, v.message) for v in items],
                     headers=("version", "status", "created", "by", "message")))


def shopify_deploy(env: str, version: str | None, message: str | None) -> None:
    from deploy import build, shopify
    from deploy.flows.common import git_sha

    s = cli.settings(env)
    reason = shopify.skip_reason(s)
    if reason:
        raise SettingsError(reason)
    full = git_sha(s.root)
    rid = version or build.new_release_id(full, datetime.now(timezone.utc))
    res = shopify.deploy(s, rid, message or f"occ-deploy {rid}", "", os.environ)
    cli.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")


def shopify_release(env: str, version: str) -> None:
    from deploy import shopify

    s = cli.settings(env)
    res = shopify.release(s, version, os.environ)
    cli.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")


def smoke(env: str, release: str | None) -> int:
    from deploy import smoke as sm
    from deploy.flows.steps import base_urls
    from deploy.flows.steps import local_root as steps_local_root

    s = cli.settings(env)
    state = {}
    if s.is_local:
        from deploy import local

        info = local.status(steps_local_root(s), s.local.host)
        if info is None:
            raise SettingsError(f"The {env} app is not running.", f"Start it: invoke app.start --env={env}.")
        state["app_url"] = info.url
        release = release or info.release_id
    report = sm.check(sm.checks_for(s.smoke, base_urls(s, state), s.app.health_path), release_id=release, retries=s.smoke.retries,
                      backoff=s.smoke.backoff)
    cli.out(report.table())
    return 0 if report.ok else 1
