"""The preflight step when it runs: settings, variables, tools, a clean tree, the lockfile, the
database URL, the migrations' verdicts, the registry and the release target, checked before
anything changes."""

from __future__ import annotations

from typing import Mapping

from deploy import envs, images, proc, shopify
from deploy.config import IMAGE_TARGET, Settings
from deploy.engine import StepContext
from deploy.errors import HostFailed, SettingsError
from deploy.flows.common import git_dirty
from deploy.locations import database_url, source_dir

from deploy.flows.steps._common import TOOLKIT_RECORDS, lockfile_committed, not_needed, target, with_skip_hint
from deploy.flows.steps._env import shared_env_text
from deploy.flows.steps._verdicts import migration_gate


def check(ctx: StepContext, s: Settings, sha: str, environ: Mapping[str, str], *, skip_shopify: bool,
          accept_destructive: tuple[str, ...] = ()) -> str:
    """Every check of a promotion of `sha` to `s`; SettingsError (or the check's own error) on the first that fails."""
    notes = []
    detail = ""
    matrix_file = s.root / "env" / "variables.toml"
    if matrix_file.exists():
        m = envs.load_matrix(s.root)
        if s.name in m.environments:
            report = envs.check(m, s.name, s.root, environ, not_needed=not_needed(s, skip_shopify=skip_shopify))
            if not report.ok:
                raise SettingsError(
                    f"env.check {s.name} found problems:\n{envs.render_check(report)}",
                    f"Fix them, then re-run (details: invoke env.check --env={s.name}).",
                )
            notes.append("variables ok")
    tools = ["git", "node", "npm"]
    if s.database.provider == "postgresql" and s.database.backup:
        tools.append("pg_dump")
    for t in tools:
        proc.which(t)
    notes.append("tools " + ",".join(tools))
    if not s.is_local:
        # The build comes from `git archive` of the commit, so only uncommitted settings
        # could make this deploy differ from what the commit says; the toolkit's own
        # records (deployment log, rotation log) change by design.
        dirty = [f for f in git_dirty(s.root) if f.startswith("env/") and f not in TOOLKIT_RECORDS]
        if dirty:
            raise SettingsError(
                f"The settings in {s.root} have uncommitted changes ({', '.join(dirty[:5])}).",
                "Commit or revert them: a deploy to a shared environment uses committed settings only.",
            )
    lockfile_committed(s, sha)     # the build would refuse it after the checkout; say why now
    database_url(s, environ)
    if s.database.provider != "none":
        # Before anything changes: a destructive migration without down.sql is refused here.
        summary, detail = migration_gate(ctx, s, sha, environ, accept_destructive)
        notes.append(summary)
    if s.release.target == IMAGE_TARGET:
        notes.append(images.registry_ready(s, environ))   # the image step pushes there: asked before anything changes
    ready = _target_ready(s, environ)
    if ready:
        notes.append(ready)
    if not skip_shopify and shopify.skip_reason(s) is None:
        # The config the push will use is the commit's, so that is the one checked.
        shopify.check(s, environ, path=source_dir(s, sha), commit=sha)
        notes.append("shopify cli and token ok")
    return f"{'; '.join(notes)}; sha {sha[:12]}" + (f"\n{detail}" if detail else "")


def _target_ready(s: Settings, environ) -> str:
    """What a release needs, checked before the build: the target's own check (hosts: they
    answer with known keys, every host has shared/.env, the hook variables are set), and the
    shared/.env this run pushes renders (hosts.push_env)."""
    t = target(s)
    if t.writes_env:
        shared_env_text(s, environ)     # a value shared/.env cannot hold fails here, not after the build
    try:
        note = t.prepare(environ)
    except HostFailed as e:
        raise with_skip_hint(e, s.name, f"invoke promote --to={s.name}") from None
    if t.shared and not environ.get("DEPLOY_LEDGER_URL"):
        note += "; ledger: local SQLite (set DEPLOY_LEDGER_URL to share locks and history between runners)"
    return note
