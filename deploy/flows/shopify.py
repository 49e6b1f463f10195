"""`invoke shopify.*`: the app's versions, a deploy and a release on their own. A deploy or
release runs as a one-step plan: under the environment's lock, recorded."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import build, shopify
from deploy.errors import SettingsError
from deploy.flows import shapes
from deploy.flows.common import app_sha, one_step


def versions(svc, env: str, as_json: bool = False) -> None:
    """`invoke shopify.versions`: the app's versions as the Shopify CLI lists them."""
    s = svc.settings(env)
    items = shopify.versions(s, svc.environ)
    if as_json:
        svc.term.emit_json(shapes.shopify_versions(items, s.name))
        return
    svc.term.out(svc.term.table([(v.version_tag or "-", v.status, v.created_at, v.created_by, v.message)
                                 for v in items],
                                ("version", "status", "created", "by", "message"), optional=("by", "created")))


def deploy(svc, env: str, version: str | None, message: str | None) -> None:
    """`invoke shopify.deploy`: push the app's configuration as a new version and make it live."""
    s = svc.settings(env)
    reason = shopify.skip_reason(s)
    if reason:
        raise SettingsError(reason)
    full = app_sha(s)
    rid = version or build.new_release_id(full, datetime.now(timezone.utc))
    done = {}

    def run(ctx):
        done["res"] = shopify.deploy(s, rid, message or f"occ-deploy {rid}", "", svc.environ)
        return f"app version {done['res'].version} live"

    one_step(s, "shopify.deploy", f"shopify app deploy --version {rid}", run, led=svc.ledger(), release_id=rid,
             args={"version": rid})
    res = done["res"]
    svc.term.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")


def release(svc, env: str, version: str) -> None:
    """`invoke shopify.release`: make an existing app version live."""
    s = svc.settings(env)
    done = {}

    def run(ctx):
        done["res"] = shopify.release(s, version, svc.environ)
        return f"app version {done['res'].version} live"

    one_step(s, "shopify.release", f"shopify app release --version {version}", run, led=svc.ledger(),
             args={"version": version})
    res = done["res"]
    svc.term.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")
    if res.note:
        svc.term.out(f"note: {res.note}")
