"""The preflight step: everything a promotion needs is checked before anything changes (settings,
variables, tools, a clean tree, the lockfile, the database URL, the migrations, the target)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

from deploy import envs, proc, shopify
from deploy import build as b
from deploy import images
from deploy.config import IMAGE_TARGET, Settings
from deploy.engine import Step, StepContext, Touch
from deploy.errors import HostFailed, SettingsError
from deploy.flows.common import git_dirty
from deploy.locations import database_url, source_dir
from deploy.source import repo_of

from deploy.flows.steps._common import target, with_skip_hint
from deploy.flows.steps._env import shared_env_text
from deploy.flows.steps._verdicts import migration_gate, migration_verdict_lines


TOOLKIT_RECORDS = ("env/rotations.log",)


def not_needed(s: Settings, *, skip_shopify: bool) -> dict[str, str]:
    """Variables a promotion of `s` does not use, and why: the Shopify token when the Shopify
    step is skipped (no [shopify] config, or --skip-shopify)."""
    if skip_shopify:
        return {s.shopify.token_var: "the Shopify step is skipped (--skip-shopify)"}
    why = shopify.skip_reason(s)
    return {s.shopify.token_var: f"the Shopify step is skipped ({s.file.name} has no [shopify] config)"} if why else {}


def preflight(s: Settings, sha: str, environ: Mapping[str, str], *, skip_shopify: bool,
              accept_destructive: tuple[str, ...] = ()) -> Step:
    def run(ctx: StepContext):
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

    def shows() -> list[Touch]:
        return [Touch("database", line) for line in migration_verdict_lines(s, sha, environ, accept_destructive)]

    return Step("preflight", "settings, variables (env.check), tools, clean tree, database URL, migrations "
                             "(additive or destructive: squawk)", run=run,
                shows=shows if s.database.provider != "none" else None)


def lockfile_committed(s: Settings, sha: str) -> None:
    """A build installs only from a lockfile the commit holds. Refused in preflight, before
    anything is built, naming the repository's files: the lockfile the working tree has and
    the .gitignore line that keeps it out of git (Shopify's template ships one)."""
    if s.app.install != "auto":
        return
    top, rel = repo_of(s.app_dir)
    prefix = "" if rel in ("", ".") else rel.rstrip("/") + "/"
    listed = proc.run(["git", "-C", str(top), "ls-tree", "--name-only", sha, "--", prefix or "."])
    names = {Path(n).name for n in listed.stdout.splitlines()} if listed.ok else set()
    if not listed.ok or "package.json" not in names or names & {n for n, _ in b.LOCKFILES}:
        return
    shown = proc.run(["git", "-C", str(top), "show", f"{sha}:{prefix}package.json"])
    try:
        pkg = json.loads(shown.stdout) if shown.ok else {}
    except ValueError:
        return      # the build names a package.json it cannot read
    if not isinstance(pkg, dict) or not any(
            pkg.get(k) for k in ("dependencies", "devDependencies", "optionalDependencies")):
        return
    where = f"{prefix}package.json"
    have = [n for n, _ in b.LOCKFILES if (s.app_dir / n).is_file()]
    if not have:
        raise SettingsError(
            f"{where} declares dependencies but commit {sha[:12]} holds no lockfile (package-lock.json, "
            "pnpm-lock.yaml or yarn.lock) beside it, so the build would be refused: a deploy installs only "
            "from a lockfile.",
            f"Run the install in {s.app_dir} (e.g. `npm install`), `git add {prefix}<lockfile>`, commit, "
            "and promote again.")
    lock = have[0]
    why = proc.run(["git", "-C", str(s.app_dir), "check-ignore", "-v", "--", lock])
    rule = why.stdout.split("\t", 1)[0].strip() if why.ok and why.stdout.strip() else ""
    if rule and not rule.split(":", 2)[-1].startswith("!"):      # a `!` rule brings it back
        source, line, pattern = (rule.split(":", 2) + ["", ""])[:3]
        src = os.path.relpath(os.path.join(top, source), s.root) if not os.path.isabs(source) else source
        ignored = f" git ignores it: line {line} of {src} (`{pattern}`)."
        fix = f"Remove that line from {src}, then run "
    else:
        ignored = " it is not committed."
        fix = ""
    raise SettingsError(
        f"{where} declares dependencies but commit {sha[:12]} holds no lockfile, so the build would be refused "
        f"(a deploy installs only from a lockfile). {prefix}{lock} is in the working tree, but{ignored}",
        f"{fix or 'Run '}`git add {prefix}{lock}`, commit, and promote again.")


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
