"""`invoke status`: one table for all environments."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, cast

from deploy import disk, envs, secrets
from deploy.build import tree_bytes
from deploy.config import IMAGE_TARGET, environments, load
from deploy.database import Database
from deploy.errors import DeployError, SettingsError
from deploy.flows import shapes
from deploy.ledger import Ledger, RunStatus
from deploy.locations import migrations_dir
from deploy.parallel import pmap
from deploy.services import Services
from deploy.targets import target_for

if TYPE_CHECKING:
    from deploy.targets.image import HostsImage


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) if t else "-"


def gather(root: Path, led: Ledger, environ: Mapping[str, str], now: float) -> list[dict[str, Any]]:
    rotation: dict[str, list[str]] = {}
    try:
        m = envs.load_matrix(root)
        rep = secrets.rotation_report(m, dt.datetime.fromtimestamp(now, dt.UTC).date(),
                                      secrets.read_rotations(secrets.rotation_log_path(m)))
        for r in rep.rows:
            if r.status in ("overdue", "invalid"):
                rotation.setdefault(r.env, []).append(r.variable)
    except DeployError:
        rotation = {}
    rows: list[dict[str, Any]] = []
    on_hosts: list[tuple[dict[str, Any], Any]] = []   # (row, settings) of environments whose hosts are read
    for name in environments(root):
        try:
            s = load(name, root)
        except DeployError as e:
            rows.append({"env": name, "error": e.message})
            continue
        live = led.live_release(name)
        run = led.run(live.run_id) if live and live.run_id else None
        lock = led.lock(name)
        drills = led.drills(env=name, limit=1)
        failed = [r for r in led.runs(name, since=now - 86400, limit=100)
                  if r.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.FAILED_IN_PLACE)]
        rows.append({
            "env": name,
            "release": live.release_id if live else None,
            "sha": live.sha[:12] if live and live.sha else None,
            "deployed_at": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(live.created_at))
                            if live and live.created_at else None),
            "by": run.who if run else None,
            "shopify_version": live.shopify_version if live else None,
            **dict(zip(("pending_migrations", "pending_migrations_error"), _pending(s, root, environ))),
            "lock": lock.describe(now) if lock else None,
            "last_drill": (f"{_when(drills[0].started_at)} {drills[0].procedure} {drills[0].outcome}"
                           if drills else None),
            "overdue_secrets": rotation.get(name, []),
            "failed_runs_24h": len(failed),
            "hosts": None,
        })
        if _reads_hosts(s):
            on_hosts.append((rows[-1], s))
    # Every environment's hosts at once (each read is parallel over its hosts and bounded by
    # hosts.connect_timeout and the short commands' bound).
    for row, read in zip([r for r, _ in on_hosts], pmap(lambda x: _live_hosts(x[1]), on_hosts, 4)):
        row["hosts"] = read
    return rows


def _reads_hosts(s) -> bool:
    """The environment runs images on hosts: what each host serves is read from the host (the
    ledger knows what was promoted, not which digest each host runs now)."""
    return s.release.target == IMAGE_TARGET and not s.is_local and bool(s.hosts.hosts)


def _live_hosts(s) -> list[dict[str, Any]]:
    """[{host, release, digest, error}] as the hosts say now; a host that cannot be reached has
    its error (and the others their values)."""
    try:
        live = cast("HostsImage", target_for(s)).live_images()   # _reads_hosts: the image target
    except DeployError as e:
        why = e.message.strip().splitlines()[0] if e.message.strip() else type(e).__name__
        return [{"host": h, "release": None, "digest": None, "error": why} for h in s.hosts.hosts]
    return [{"host": i.host, "release": i.release, "digest": i.digest, "error": i.error or None} for i in live]


def _pending(s, root, environ) -> tuple[int | None, str | None]:
    """(pending migrations, None) when the database can be read from here; (None, why)
    when it cannot; (None, None) when the environment has no database. Each environment's
    URL is read as `env.check --env=NAME` reads it (envs.deployer_environ), from its own
    database.url_var or file: never another environment's."""
    if s.database.provider == "none":
        return None, None

    try:
        database = Database.of(s, envs.deployer_environ(root, s.name, environ))
        return len(database.status(migrations_dir(s)).pending), None
    except DeployError as e:
        return None, e.message.strip().splitlines()[0] if e.message.strip() else type(e).__name__


def _pending_cell(r: dict) -> str:
    if r.get("pending_migrations") is not None:
        return str(r["pending_migrations"])
    return "?" if r.get("pending_migrations_error") else "-"


def main(svc: Services, as_json: bool) -> None:
    root = svc.root
    led = svc.ledger()
    rows = gather(root, led, svc.environ, led.now())   # the ledger's clock: what its times were written on
    if as_json:
        svc.term.emit_json(shapes.status(rows))
        _fail_on_invalid_settings(rows)
        return
    table = [(r["env"], r.get("release") or "-", r.get("sha") or "-", (r.get("deployed_at") or "-")[:16].replace("T", " "), r.get("by") or "-",
              r.get("shopify_version") or "-", _pending_cell(r),
              r.get("lock") or "free", r.get("last_drill") or "never",
              ", ".join(r.get("overdue_secrets") or []) or "none", r.get("failed_runs_24h", 0))
             if "error" not in r else (r["env"], "settings error: " + r["error"], *["-"] * 9)
             for r in rows]
    svc.term.out(svc.term.table(table, ("env", "release", "sha", "deployed (UTC)", "by", "shopify", "pending migr.",
                              "lock", "last drill", "overdue secrets", "failed 24h"),
                      optional=("by", "deployed (UTC)", "last drill", "shopify", "failed 24h", "sha")))
    if any(r.get("pending_migrations_error") for r in rows):
        svc.term.note("?: the database cannot be read from here (`invoke status --json` says why)")
    live = [(r["env"], h) for r in rows if r.get("hosts") for h in r["hosts"]]
    if live:
        svc.term.out("\nlive on each host (read from the hosts now):")
        svc.term.out(svc.term.table([(env, h["host"], h["release"] or "-", _short(h["digest"]) or "-",
                                      f"cannot be reached or read: {h['error']}" if h["error"] else "")
                                     for env, h in live], ("env", "host", "release", "image digest", "note")))
    usage = deploy_usage(root)
    if usage:
        svc.term.note(".deploy on this machine: " + usage + _bound_note(root))
    _fail_on_invalid_settings(rows)


def _short(digest: str | None) -> str | None:
    """`sha256:` and the first 12 hex digits: the form people compare."""
    return digest[:19] if digest else None


def _mb(n: int) -> str:
    if n >= 1024 ** 3:
        return f"{n / 1024 ** 3:.1f} GB"
    return f"{n / 1024 ** 2:.0f} MB" if n >= 1024 ** 2 else f"{n // 1024} KB"


def deploy_usage(root) -> str:
    """What .deploy takes on disk, in total and its largest parts ("" when there is none):
    kept bounded by app.keep_builds (artifacts, checkouts) and app.cache_max_mb (dependency cache)."""
    top = root / ".deploy"
    if not top.is_dir():
        return ""
    parts = [(name, tree_bytes(top / sub)) for name, sub in (("artifacts", "artifacts"), ("checkouts", "src"),
                                                             ("dependency cache", "cache"), ("backups", "backups"))
             if (top / sub).is_dir()]
    total = disk.usage(top)
    return _mb(total) + (" (" + ", ".join(f"{n} {_mb(b)}" for n, b in parts if b) + ")" if parts else "")


def _bound_note(root) -> str:
    """The bound `.deploy` is kept within (the local environment's [local] max_deploy_mb)."""
    try:
        s = load("local", root)
    except DeployError:
        return ""
    return f"; bound {_mb(s.local.max_deploy_mb * 1024 ** 2)} ([local] max_deploy_mb in {s.file.name})"


def _fail_on_invalid_settings(rows: list[dict]) -> None:
    """After the other environments were shown: an invalid settings file is an error (exit 2),
    not only a cell, so a script or CI step that runs `invoke status` notices it."""
    bad = [r for r in rows if "error" in r]
    if bad:
        raise SettingsError(
            f"Settings of {', '.join(r['env'] for r in bad)} are invalid: "
            + "; ".join(f"{r['env']}: {r['error']}" for r in bad),
            "Fix the file named above (`invoke env.check --env=<name>` checks it alone), then run again.")
