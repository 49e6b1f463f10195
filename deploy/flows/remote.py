"""`invoke hosts.*`, `invoke shopify.*` and `invoke smoke`: the primitives on their own."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from tabulate import tabulate

from deploy import cli
from deploy.errors import SettingsError
from deploy.flows.common import one_step


def _remote(env: str):
    s = cli.settings(env)
    if not s.hosts.hosts:
        raise SettingsError(f"The {env} environment has no hosts (hosts.hosts in {s.file.name}).",
                            "The local environment is managed with app.start/app.stop and promote --to=local.")
    return s


def hosts_check(env: str, as_json: bool = False) -> int:
    from deploy import hosts

    s = _remote(env)
    rows = hosts.check(s.hosts)
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.hosts_check(rows, s.name))
    else:
        cli.out(cli.table([(r.host, "ok" if r.ok else "FAIL", "yes" if r.writable else "no",
                            r.free_mb if r.free_mb is not None else "-", r.current or "-", r.error or "")
                           for r in rows], ("host", "verdict", "writable", "free MB", "current", "problem"),
                          optional=("free MB", "writable", "current")))
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
    from deploy.flows.common import app_sha
    from deploy.flows.steps import artifacts_dir

    s = _remote(env)
    full = app_sha(s, sha)
    art = build.find(artifacts_dir(s), full)
    if art is None:
        raise SettingsError(f"No artifact has been built for {full[:12]}.",
                            f"Build it through a promotion (invoke promote --to={env} --sha={full[:12]}), "
                            "which also runs the gate.")
    rid = build.new_release_id(full, datetime.now(timezone.utc))
    led = cli.ledger()
    done = {}

    def run(ctx):
        done["results"] = hosts.release(s.hosts, dataclasses.replace(art, release_id=rid), run_id=ctx.run_id,
                                          env=hosts.hook_env(s.hosts, os.environ), app=s.app)
        led.record_release(env=s.name, release_id=rid, sha=full, artifact_sha256=art.sha256, run_id=ctx.run_id)
        return f"{rid} live on {len(done['results'])} host(s)"

    one_step(s, "hosts.release", f"release {rid} to every host", run, led=led, release_id=rid, sha=full,
             args={"sha": full, "release_id": rid})
    cli.out(_results(done["results"]))


def hosts_rollback(env: str, to: str | None) -> None:
    from deploy import hosts

    s = _remote(env)
    if to is not None:
        hosts.validate_release_id(to)  # before anything is recorded or touched
    led = cli.ledger()
    done = {}

    def run(ctx):
        done["results"] = results = hosts.rollback(s.hosts, to, run_id=ctx.run_id,
                                                          env=hosts.hook_env(s.hosts, os.environ), app=s.app)
        target = results[0].release if results else None
        known = {r["release_id"] for r in led.releases(s.name, limit=100)}
        if target in known:  # keep `status` and `invoke rollback` true to the hosts
            live = (led.live_release(s.name) or {}).get("release_id")
            if live and live != target:
                led.set_release_status(s.name, live, "rolled_back")
            led.set_release_status(s.name, target, "live")
        return f"hosts on {target or '-'}"

    one_step(s, "hosts.rollback", f"switch every host to {to or 'the previous release'}", run, led=led,
             release_id=to, args={"to": to})
    cli.out(_results(done["results"]))


def shopify_versions(env: str, as_json: bool = False) -> None:
    from deploy import shopify

    s = cli.settings(env)
    items = shopify.versions(s, os.environ)
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.shopify_versions(items, s.name))
        return
    cli.out(cli.table([(v.version_tag or "-", v.status, v.created_at, v.created_by, v.message) for v in items],
                      ("version", "status", "created", "by", "message"), optional=("by", "created")))


def shopify_deploy(env: str, version: str | None, message: str | None) -> None:
    from deploy import build, shopify
    from deploy.flows.common import app_sha

    s = cli.settings(env)
    reason = shopify.skip_reason(s)
    if reason:
        raise SettingsError(reason)
    full = app_sha(s)
    rid = version or build.new_release_id(full, datetime.now(timezone.utc))
    done = {}

    def run(ctx):
        done["res"] = shopify.deploy(s, rid, message or f"occ-deploy {rid}", "", os.environ)
        return f"app version {done['res'].version} live"

    one_step(s, "shopify.deploy", f"shopify app deploy --version {rid}", run, release_id=rid, args={"version": rid})
    res = done["res"]
    cli.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")


def shopify_release(env: str, version: str) -> None:
    from deploy import shopify

    s = cli.settings(env)
    done = {}

    def run(ctx):
        done["res"] = shopify.release(s, version, os.environ)
        return f"app version {done['res'].version} live"

    one_step(s, "shopify.release", f"shopify app release --version {version}", run, args={"version": version})
    res = done["res"]
    cli.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")
    if res.note:
        cli.out(f"note: {res.note}")


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
