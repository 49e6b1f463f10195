"""What the step modules and their work (steps/work/) share: the environment's release target, the
hint naming unreachable hosts, the small converters from commands to plan rows, and what preflight
and env.check ask of the repository (the committed lockfile, the variables a promotion does not use)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from deploy import proc, shopify
from deploy import build as b
from deploy.config import Settings
from deploy.engine import StepContext, Touch
from deploy.facts import ArtifactFacts
from deploy.errors import DeployError, HostFailed, SettingsError
from deploy.source import repo_of
from deploy.targets import Command, ReleaseTarget, target_for


TOOLKIT_RECORDS = ("env/rotations.log",)


def not_needed(s: Settings, *, skip_shopify: bool) -> dict[str, str]:
    """Variables a promotion of `s` does not use, and why: the Shopify token when the Shopify
    step is skipped (no [shopify] config, or --skip-shopify)."""
    if skip_shopify:
        return {s.shopify.token_var: "the Shopify step is skipped (--skip-shopify)"}
    why = shopify.skip_reason(s)
    return {s.shopify.token_var: f"the Shopify step is skipped ({s.file.name} has no [shopify] config)"} if why else {}


def argv_line(argv) -> str:
    return shlex.join(str(a) for a in argv)


def artifact_of(ctx: StepContext):
    art = ctx.get(ArtifactFacts)
    if art is None:
        raise DeployError("Bug: no artifact was recorded before the release step.",
                          "This is a bug in the toolkit (the build step records it); please report it.")
    return art.artifact()


def target(s: Settings) -> ReleaseTarget:
    """The environment's release target (deploy/targets/)."""
    return target_for(s)


def as_touches(commands: list[Command]) -> list[Touch]:
    return [Touch(c.where, c.what) for c in commands]


def with_skip_hint(err: HostFailed, env: str, again: str) -> HostFailed:
    """`err` with a hint naming the hosts that could not be reached at all and the command that
    acts on the others (`again` plus `--skip-host`); unchanged when every host answered."""
    dead = [r.host for r in err.results if not r.reachable]
    if not dead:
        return err
    skip = " ".join(f"--skip-host={h}" for h in dead)
    if again.startswith("invoke promote --to=") and "--abort" not in again:
        then = f"A promotion needs every host; meanwhile `invoke rollback --env={env} {skip}` acts on the others."
    else:
        then = f"Or act on the reachable hosts only: `{again} {skip}` (the skipped host is recorded)."
    err.hint = (f"{', '.join(dead)} cannot be reached over SSH (nothing could be changed there). Bring it back "
                f"(`invoke hosts.check --env={env}` shows it), then run again. {then}")
    return err


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
