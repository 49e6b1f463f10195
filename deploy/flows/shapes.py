"""The `--json` output of every read-only task: one function per task, result value in,
plain JSON-able dict out, with stable types (a key is always present; its value has one
type, or null). README "JSON output" documents each shape; tests/test_output.py checks
them. Times are ISO 8601 UTC strings; secrets are never in a result (and the printed text
goes through redaction anyway)."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import Any


def _iso(t: datetime | float | None) -> str | None:
    if t is None:
        return None
    if isinstance(t, (int, float)):
        t = datetime.fromtimestamp(t, timezone.utc)
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def gate(v, env: str) -> dict[str, Any]:
    """`invoke gate --json`."""
    return {
        "env": env,
        "sha": v.sha,
        "open": bool(v.ok),
        "passed": sum(1 for r in v.rows if r.ok),
        "checks": len(v.rows),
        "rows": [{
            "kind": r.kind,
            "file": r.file,
            "url": r.url or None,
            "tool": r.tool or None,
            "verdict": r.verdict,
            "counts": dataclasses.asdict(r.counts) if r.counts is not None else None,
            "scores": {k: (None if s is None else float(s)) for k, s in r.scores.items()},
            "threshold": r.threshold,
            "reasons": list(r.reasons),
        } for r in v.rows],
        "notes": list(v.notes),
    }


def db_status(report, env: str) -> dict[str, Any]:
    """`invoke db.status --json`."""
    return {
        "env": env,
        "database": report.url,
        "provider": report.provider,
        "table_exists": bool(report.table_exists),
        "up_to_date": bool(report.up_to_date),
        "applied": len(report.applied),
        "pending": len(report.pending),
        "failed": len(report.failed),
        "drift": len(report.drift),
        "migrations": [{"name": m.name, "state": m.state, "applied_at": _iso(m.applied_at), "detail": m.detail}
                       for m in report.migrations],
    }


def env_check(report) -> dict[str, Any]:
    """`invoke env.check --json`."""
    return {
        "env": report.env,
        "ok": bool(report.ok),
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "variables": [{"variable": r.variable, "status": r.status, "error": bool(r.is_error), "detail": r.detail}
                      for r in report.rows],
    }


def hosts_check(rows, env: str) -> dict[str, Any]:
    """`invoke hosts.check --json`."""
    return {
        "env": env,
        "ok": all(r.ok for r in rows),
        "hosts": [{"host": r.host, "ok": bool(r.ok), "writable": bool(r.writable),
                   "free_mb": None if r.free_mb is None else int(r.free_mb),
                   "current": r.current or None, "error": r.error or None} for r in rows],
    }


def shopify_versions(items, env: str) -> dict[str, Any]:
    """`invoke shopify.versions --json` (at most the newest 20: what the CLI lists)."""
    return {
        "env": env,
        "versions": [{"version_tag": v.version_tag, "status": v.status, "active": v.status == "active",
                      "created_at": _iso(v.created_at), "created_by": v.created_by or None,
                      "message": v.message or None} for v in items],
    }


def lock_status(ledger_locks, host_locks, now: float | None = None) -> dict[str, Any]:
    """`invoke lock.status --json`: the ledger's locks, and the hosts' (only with --env)."""
    now = time.time() if now is None else now
    return {
        "locks": [{
            "env": lk.env, "who": lk.who, "hostname": lk.hostname, "pid": int(lk.pid), "run_id": lk.run_id,
            "purpose": lk.purpose, "acquired_at": _iso(lk.acquired_at),
            # Measured on one clock (the ledger database's, or this boot's CLOCK_BOOTTIME); null
            # when no clock shared with the holder can measure it.
            "silent_seconds": None if lk.silence() is None else round(lk.silence(), 1),
            "holder": {True: "alive", False: "gone", None: "other host"}[lk.holder_alive()],
            "heartbeat_clock": ("ledger" if lk.shared_clock or lk.token is None else
                                "boottime" if lk.silence() is not None else None),
        } for lk in ledger_locks],
        "host_locks": [{"host": h.place, "holder": h.holder, "run_id": h.run_id or None,
                        "acquired_at": _iso(h.acquired_at), "release": h.release or None} for h in host_locks],
    }


def golive(cl) -> dict[str, Any]:
    """`invoke golive.check --json`."""
    return {
        "env": cl.env,
        "sha": cl.sha,
        "at": _iso(cl.at),
        "go": bool(cl.ok),
        "items": [{"name": i.name, "verdict": i.verdict, "ok": bool(i.ok), "evidence": i.evidence,
                   "reason": i.reason or None} for i in cl.items],
    }


STATUS_KEYS = ("env", "error", "release", "sha", "deployed_at", "by", "shopify_version", "pending_migrations",
               "pending_migrations_error", "lock", "last_drill", "overdue_secrets", "failed_runs_24h", "hosts")


def status(rows: list[dict]) -> list[dict[str, Any]]:
    """`invoke status --json`: one object per environment with every key of STATUS_KEYS;
    `pending_migrations` is an integer or null (null with `pending_migrations_error` saying
    why when the database could not be read, or with neither when there is no database);
    `hosts` is null unless the environment runs images on hosts: then one object per host,
    `{host, release, digest, error}`, read from the host (`error` says why it could not be)."""
    out = []
    for r in rows:
        item = {k: r.get(k) for k in STATUS_KEYS}
        item["overdue_secrets"] = list(r.get("overdue_secrets") or [])
        item["failed_runs_24h"] = int(r.get("failed_runs_24h") or 0)
        item["hosts"] = None if r.get("hosts") is None else [
            {"host": h["host"], "release": h.get("release"), "digest": h.get("digest"), "error": h.get("error")}
            for h in r["hosts"]]
        out.append(item)
    return out
