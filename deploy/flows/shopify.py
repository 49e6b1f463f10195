"""`invoke shopify.*`: the app's versions, a deploy and a release on their own. A deploy or
release runs as a plan with promote's rights and locks (flows/rights.py), recorded."""

from __future__ import annotations

from datetime import datetime, timezone

from deploy import build, shopify
from deploy.errors import SettingsError
from deploy.flows import rights, shapes, steps
from deploy.flows.common import app_sha
from deploy.services import Services


def versions(svc: Services, env: str, as_json: bool = False) -> None:
    """`invoke shopify.versions`: the app's versions as the Shopify CLI lists them."""
    s = svc.settings(env)
    items = shopify.versions(s, svc.environ)
    if as_json:
        svc.term.emit_json(shapes.shopify_versions(items, s.name))
        return
    svc.term.out(svc.term.table([(v.version_tag or "-", v.status, v.created_at, v.created_by, v.message)
                                 for v in items],
                                ("version", "status", "created", "by", "message"), optional=("by", "created")))


def deploy(svc: Services, env: str, version: str | None, message: str | None, yes: bool = False) -> None:
    """`invoke shopify.deploy`: push the app's configuration as a new version and make it live. On a remote
    environment: the commit's config (promote's shopify step, from its checkout), promote's rights for the
    commit, its locks and, where protected, its question (flows/rights.py)."""
    s = svc.settings(env)
    reason = shopify.skip_reason(s)
    if reason:
        raise SettingsError(reason)
    full = app_sha(s)
    rid = version or build.new_release_id(full, datetime.now(timezone.utc))
    led = svc.ledger()
    if rights.guarded(s):
        shopify.validate_version(rid)   # before anything is recorded
        step = steps.shopify_push(s, rid, full, svc.environ, skip=False, message=message)
        outcome = rights.act(svc, s, "shopify.deploy", [step], led=led, yes=yes,
                             question=f"Push {full[:12]}'s Shopify configuration to {s.name} as version {rid}?",
                             promotes=full, sha=full, release_id=rid, args={"version": rid})
        svc.term.out(f"{env}: {rights.result(led, outcome, 'shopify')}")
        return
    done = {}

    def run(ctx):
        done["res"] = shopify.deploy(s, rid, message or f"occ-deploy {rid}", "", svc.environ)
        return f"app version {done['res'].version} live"

    rights.act(svc, s, "shopify.deploy", rights.one("shopify.deploy", f"shopify app deploy --version {rid}", run),
               led=led, yes=yes, question="", release_id=rid, args={"version": rid})
    res = done["res"]
    svc.term.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")


def release(svc: Services, env: str, version: str, yes: bool = False) -> None:
    """`invoke shopify.release`: make an existing app version live (promote's locks and, where protected,
    its question)."""
    s = svc.settings(env)
    done = {}

    def run(ctx):
        done["res"] = shopify.release(s, version, svc.environ)
        return f"app version {done['res'].version} live"

    rights.act(svc, s, "shopify.release", rights.one("shopify.release", f"shopify app release --version {version}", run),
               led=svc.ledger(), yes=yes, question=f"Make Shopify app version {version} live on {s.name}?",
               args={"version": version})
    res = done["res"]
    svc.term.out(f"{env}: app version {res.version} live (was {res.previous or 'none'})")
    if res.note:
        svc.term.out(f"note: {res.note}")
