"""The Shopify steps: the app version deployed from the commit, and re-released on the way back."""

from __future__ import annotations

from deploy import shopify
from deploy import build as b
from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.facts import ShopifyFacts
from deploy.locations import artifacts_dir, checkout_if_there, source_dir

from deploy.flows.steps._common import argv_line


def shopify_push(s: Settings, release_id: str, sha: str, environ, *, skip: bool, message: str | None = None) -> Step:
    reason = "--skip-shopify given" if skip else shopify.skip_reason(s)

    source = f"{s.environment.repo_url.rstrip('/')}/commit/{sha}" if s.environment.repo_url else ""
    message = message or f"occ-deploy {release_id} ({sha[:12]})"

    def run(ctx: StepContext):
        app = source_dir(s, sha)  # the commit's config and extensions, never the working tree's
        if ctx.get(ShopifyFacts) is None:
            active = shopify.active_version(shopify.versions(s, environ, path=app))
            ctx.put(ShopifyFacts(version=None, previous=active.version_tag if active else None))
            ctx.checkpoint()
        # The build's full install (its recipe, environment and dependency cache), not another one.
        installed = shopify.prepare(s, app, environ, deps_cache=b.deps_cache_dir(artifacts_dir(s)))
        try:
            res = shopify.deploy(s, release_id, message, source, environ, path=app)
        finally:
            b.check_full_install(installed)
        before = ctx.get(ShopifyFacts)
        prev = before.previous if before else None
        ctx.put(ShopifyFacts(version=res.version, previous=prev if res.reused else res.previous))
        return f"app version {res.version} live (was {res.previous or 'none'}) from {sha[:12]}; {installed.summary}"

    def undo(ctx: StepContext):
        prev = (ctx.get(ShopifyFacts) or ShopifyFacts(None, None)).previous
        app = source_dir(s, sha)
        active = shopify.active_version(shopify.versions(s, environ, path=app))
        if active is None or active.version_tag != release_id:
            return f"{release_id} is not live ({active.version_tag if active else 'none'} is): nothing to undo"
        if not prev:
            return f"{release_id} was the app's first version: there is no earlier one to re-release"
        shopify.release(s, prev, environ, path=app)
        return f"re-released {prev}"

    def shows() -> list[Touch]:
        app = checkout_if_there(s, sha) or f"<checkout of {sha[:12]}>"
        return [Touch("shopify", argv_line(shopify.versions_argv(s.shopify, path=app))),
                Touch("shopify", argv_line(shopify.deploy_argv(s.shopify, release_id, message, source, path=app)))]

    return Step("shopify", f"shopify app deploy --config {s.shopify.config or '-'} --version {release_id} "
                           f"--path <checkout of {sha[:12]}>",
                run=run, undo=undo, undo_does="shopify app release --version <previous>", skip=reason, shows=shows)


def shopify_back(s: Settings, version: str | None, environ, *, skip: str | None) -> Step:
    """Mirror of `shopify_push`: re-release `version` (default: the one before the active one)."""
    def run(ctx: StepContext):
        res = shopify.rollback(s, version, environ)
        return f"app version {res.version} live (was {res.previous or '-'})" + (f"; {res.note}" if res.note else "")

    def shows() -> list[Touch]:
        return [Touch("shopify", argv_line(shopify.release_argv(s.shopify, version)) if version else
                      "shopify app release --version <the version active before the current one>")]

    return Step("shopify", f"re-release app version {version or 'before the current one'}", run=run, skip=skip,
                shows=shows)
