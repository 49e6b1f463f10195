"""`invoke hosts.*`: the hosts on their own (check, list, release, roll back). Listing, release and
rollback go through the environment's release target (deploy/targets/: a tree or an image on the
hosts), as promote's and rollback's steps do; a release or rollback runs as a plan with promote's
rights and locks (flows/rights.py), recorded."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import build, hosts
from deploy.errors import DeployError, SettingsError
from deploy.flows import rights, shapes, steps
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
    for h in steps.target(_remote(svc, env)).releases():
        svc.term.out(f"{h.place}: " + ", ".join(f"[{r}]" if r == h.current else r for r in h.releases)
                     + (f"  ({h.detail})" if h.detail else ""))


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
    t = steps.target(s)

    def run(ctx):
        done = t.release(ctx, rid, art, svc.environ)   # the plan's lock step holds the hosts' lock until the run ends
        led.record_release(env=s.name, release_id=rid, sha=full, artifact_sha256=art.sha256, run_id=ctx.run_id)
        return done

    outcome = rights.act(svc, s, "hosts.release", rights.one("hosts.release", f"release {rid} to every host", run),
                         led=led, yes=yes, question=f"Release {full[:12]} ({rid}) to every {s.name} host?",
                         promotes=full, release_id=rid, sha=full, args={"sha": full, "release_id": rid})
    svc.term.out(rights.result(led, outcome, "release"))


def rollback(svc: Services, env: str, to: str | None, yes: bool = False) -> None:
    """`invoke hosts.rollback`: every host back to `to` (default: the release before current)."""
    s = _remote(svc, env)
    if to is not None:
        hosts.validate_release_id(to)  # before anything is recorded or touched
    led = svc.ledger()
    t = steps.target(s)

    def run(ctx):
        target = t.way_back(to).to   # `to`, else the release every host had before its current one
        if target is None:
            raise DeployError(f"The hosts of {s.name} hold no release before their current one.",
                              f"See `invoke hosts.releases --env={s.name}`; name one with --to=RELEASE.")
        done = t.rollback(ctx, target, expect=None, environ=svc.environ)
        known = {r.release_id for r in led.releases(s.name, limit=100)}
        if target in known:  # keep `status` and `invoke rollback` true to the hosts
            live = led.live_release(s.name)
            if live and live.release_id != target:
                led.set_release_status(s.name, live.release_id, ReleaseStatus.ROLLED_BACK)
            led.set_release_status(s.name, target, ReleaseStatus.LIVE)
        return done

    outcome = rights.act(svc, s, "hosts.rollback",
                         rights.one("hosts.rollback", f"switch every host to {to or 'the previous release'}", run),
                         led=led, yes=yes, question=f"Switch every {s.name} host to {to or 'the previous release'}?",
                         release_id=to, args={"to": to})
    svc.term.out(rights.result(led, outcome, "rollback"))


def setup(svc: Services, env: str, remove: bool = False, yes: bool = False) -> None:
    """`invoke hosts.setup`: the environment's [proxy] installed and started on every host (idempotent;
    a running proxy keeps its live upstream), or with `remove` stopped and its files removed; under the
    hosts' deploy lock, recorded."""
    s = _remote(svc, env)
    if not s.proxy.enabled:
        raise SettingsError(f'proxy.kind = "none" in {s.file.name}: there is no proxy to set up.',
                            'Add [proxy] with kind = "caddy" or "nginx" (docs/runbooks/zero_downtime.md).')
    led = svc.ledger()
    done = {}
    what = "remove" if remove else "setup"

    def run(ctx):
        fn = hosts.remove_proxy if remove else hosts.setup_proxy
        done["results"] = results = fn(s.hosts, s.proxy, s.app)
        return ", ".join(f"{r.host}: {r.done}" for r in results)

    does = (f"stop {s.proxy.kind} and remove its files on every host" if remove else
            f"install and start {s.proxy.kind} on every host (listening on the proxy port, first serving the app port)")
    rights.act(svc, s, "hosts.setup", rights.one(f"hosts.{what}", does, run), led=led, yes=yes,
               question=f"{'Remove' if remove else 'Set up'} {s.proxy.kind} on every {s.name} host?",
               args={"remove": remove})
    svc.term.out(svc.term.table([(r.host, r.done, r.listen, r.upstream or "-", r.error or "")
                                 for r in done["results"]],
                                ("host", "proxy", "listens on", "serves from port", "problem"),
                                optional=("serves from port",)))
