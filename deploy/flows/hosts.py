"""`invoke hosts.*`: the host primitives on their own (check, list, release, roll back).
A release or rollback runs as a plan with promote's rights and locks (flows/rights.py), recorded."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from deploy import build, hosts
from deploy.errors import SettingsError
from deploy.flows import rights, shapes
from deploy.flows.common import app_sha
from deploy.ledger import ReleaseStatus
from deploy.locations import find_artifact
from deploy.services import Services


def _remote(svc: Services, env: str):
    s = svc.settings(env)
    if not s.hosts.hosts:
        raise SettingsError(f"The {env} environment has no hosts (hosts.hosts in {s.file.name}).",
                            "The local environment is managed with app.start/app.stop and promote --to=local.")
    return s


def check(svc: Services, env: str, as_json: bool = False) -> int:
    """`invoke hosts.check`: reach, disk and current release of every host; 0 when all are ok."""
    s = _remote(svc, env)
    rows = hosts.check(s.hosts)
    if as_json:
        svc.term.emit_json(shapes.hosts_check(rows, s.name))
    else:
        svc.term.out(svc.term.table([(r.host, "ok" if r.ok else "FAIL", "yes" if r.writable else "no",
                                      r.free_mb if r.free_mb is not None else "-", r.current or "-", r.error or "")
                                     for r in rows], ("host", "verdict", "writable", "free MB", "current", "problem"),
                                    optional=("free MB", "writable", "current")))
    return 0 if all(r.ok for r in rows) else 1


def releases(svc: Services, env: str) -> None:
    """`invoke hosts.releases`: the releases on every host, the current one in brackets."""
    for h in hosts.releases(_remote(svc, env).hosts):
        svc.term.out(f"{h.host}: " + ", ".join(f"[{r}]" if r == h.current else r for r in h.releases))


def _results(svc: Services, results) -> str:
    return svc.term.table([(r.host, "ok" if r.ok else "FAIL", r.previous or "-", r.release or "-",
                            f"{r.duration:.2f}s", r.error or (f"WARNING: {r.note}" if r.note else ""))
                           for r in results],
                          ("host", "verdict", "before", "after", "time", "problem"), optional=("time", "before"))


def release(svc: Services, env: str, sha: str | None, yes: bool = False) -> None:
    """`invoke hosts.release`: an already-built artifact of `sha` to every host (no gate: use promote for that),
    with promote's rights for `sha`, its locks and, on a protected environment, its question (flows/rights.py)."""
    s = _remote(svc, env)
    full = app_sha(s, sha)
    art = find_artifact(s, full)
    if art is None:
        raise SettingsError(f"No artifact has been built for {full[:12]}.",
                            f"Build it through a promotion (invoke promote --to={env} --sha={full[:12]}), "
                            "which also runs the gate.")
    rid = build.new_release_id(full, datetime.now(timezone.utc))
    led = svc.ledger()
    done = {}

    def run(ctx):
        done["results"] = hosts.release(s.hosts, dataclasses.replace(art, release_id=rid), run_id=ctx.run_id,
                                        env=hosts.hook_env(s.hosts, svc.environ), app=s.app,
                                        keep_lock=True)   # the plan's lock step holds it until the run ends
        led.record_release(env=s.name, release_id=rid, sha=full, artifact_sha256=art.sha256, run_id=ctx.run_id)
        return f"{rid} live on {len(done['results'])} host(s)"

    rights.act(svc, s, "hosts.release", rights.one("hosts.release", f"release {rid} to every host", run), led=led,
               yes=yes, question=f"Release {full[:12]} ({rid}) to every {s.name} host?", promotes=full,
               release_id=rid, sha=full, args={"sha": full, "release_id": rid})
    svc.term.out(_results(svc, done["results"]))


def rollback(svc: Services, env: str, to: str | None, yes: bool = False) -> None:
    """`invoke hosts.rollback`: every host back to `to` (default: the release before current)."""
    s = _remote(svc, env)
    if to is not None:
        hosts.validate_release_id(to)  # before anything is recorded or touched
    led = svc.ledger()
    done = {}

    def run(ctx):
        done["results"] = results = hosts.rollback(s.hosts, to, run_id=ctx.run_id,
                                                   env=hosts.hook_env(s.hosts, svc.environ), app=s.app)
        target = results[0].release if results else None
        known = {r.release_id for r in led.releases(s.name, limit=100)}
        if target in known:  # keep `status` and `invoke rollback` true to the hosts
            live = led.live_release(s.name)
            if live and live.release_id != target:
                led.set_release_status(s.name, live.release_id, ReleaseStatus.ROLLED_BACK)
            led.set_release_status(s.name, target, ReleaseStatus.LIVE)
        return f"hosts on {target or '-'}"

    rights.act(svc, s, "hosts.rollback", rights.one("hosts.rollback", f"switch every host to {to or 'the previous release'}",
                                                   run), led=led, yes=yes,
               question=f"Switch every {s.name} host to {to or 'the previous release'}?", release_id=to, args={"to": to})
    svc.term.out(_results(svc, done["results"]))
