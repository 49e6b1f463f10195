"""Running the Shopify CLI: `deploy` (create and release the app version named by the
release id), `release` (make an existing version live again: the undo), `versions`, and
`rollback` for on-call; one helper runs the CLI in the app directory without a TTY (stdin
empty, `CI=1`), with the automation token only in the child's environment, and a failure
says what the CLI said (redacted) and what to do.

`shopify app deploy` never deploys the web app (that is the release target); it creates an
app version from `shopify.app.<config>.toml` and the extensions, and releases it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy import build, proc
from deploy.errors import BuildFailed, ShopifyFailed
from deploy.redact import redact
from deploy.shopify.commands import LISTED_MAX, config_file_name, deploy_argv, release_argv, versions_argv
from deploy.shopify.output import (RELEASED, VERSION_RELEASED, AppVersion, active_version, confirm_release,
                                   parse_cli_output, parse_deploy_output, parse_release_output, parse_versions,
                                   previous_version)
from deploy.shopify.preflight import app_dir, auth_env, require_configured, token_hint


@dataclass(frozen=True)
class ShopifyDeployResult:
    version: str                     # the app version now active (the release id)
    url: str                         # its page in the Dev Dashboard, when the CLI printed it
    previous: str | None             # the version active before: what `undo` re-releases
    command: str                     # the deploy command as shown (redacted)
    reused: bool = False             # the version already existed (a resumed run) and was released or kept
    info: str = ""                   # the CLI's success text, for the record


@dataclass(frozen=True)
class ShopifyReleaseResult:
    version: str
    url: str
    previous: str | None             # None also when the active version was older than the newest 20 listed
    command: str
    note: str = ""                   # how the release was confirmed, when not by the versions list


def prepare(settings, path: Path, environ: Mapping[str, str] | None = None, *,
            deps_cache: Path | None = None):
    """The build's full install (dev dependencies included) in `path`, the promoted commit's
    checkout the build ran in, so the CLI builds that commit's extensions with the app's
    dev dependencies and runs its pinned CLI: `build.full_install` (the build's recipe and
    environment, or its dependency cache's `full` entry). A `build.FullInstall`: its
    `summary` for the step's record; pass it to `build.check_full_install` after the CLI."""
    try:
        return build.full_install(path, settings.app, env=environ, deps_cache=deps_cache)
    except BuildFailed as e:
        raise ShopifyFailed(f"Installing the app's dependencies for the Shopify CLI failed: {e.message}",
                            "The Shopify CLI needs the app's dependencies to build its extensions: "
                            "run the install by hand in a clean checkout of the commit to see why.") from None


def _hint_for(text: str, settings) -> str:
    t = text.lower()
    var = settings.shopify.token_var
    if "token" in t and ("expired" in t or "can't be used" in t or "invalid" in t or "unauthorized" in t):
        return f"The token in {var} was refused (wrong app, revoked or expired). " + token_hint(var)
    if "could not find a shopify app configuration file" in t or "couldn't find an app toml" in t:
        return f"Check environment.app_dir and that {config_file_name(settings.shopify.config)} is there."
    if "nonexistent flag" in t or "unexpected argument" in t:
        return "This Shopify CLI does not know a flag the toolkit passes: use Shopify CLI 3.x (npm install -g @shopify/cli@3)."
    if "version not found" in t or "not found for tag" in t:
        return ("Check the tag: `invoke shopify.versions` lists the newest 20 versions; older ones are in the "
                "Dev Dashboard (your app > Versions) and are released by tag the same way.")
    return f"Run the command by hand in {settings.app_dir} with --verbose to see the whole output."


def _tail(result: proc.CommandResult, lines: int = 12) -> str:
    """The CLI's last meaningful lines, banner frames removed, secrets masked."""
    text = "\n".join(s for s in (result.stdout, result.stderr) if s.strip())
    out = parse_cli_output(text)
    flat = list(out.text) + [ln for b in out.banners for ln in (f"[{b.kind}]", *b.lines) if ln]
    flat += [f"[{n}] {u}" for n, u in sorted(out.links.items())]
    return redact("\n".join(flat[-lines:]))


def _run(settings, argv: list[str], env: Mapping[str, str], path: Path | None = None,
         stream: str | None = "shopify") -> proc.CommandResult:
    # stdin is empty and CI=1, so the CLI can never wait on a prompt. Deploy and release
    # stream their lines live (minutes of building extensions); a JSON listing does not.
    return proc.run(argv, cwd=path or app_dir(settings), env=env, timeout=settings.shopify.timeout, input="",
                    stream=stream)


def _failed(what: str, result: proc.CommandResult, settings, extra: str = "") -> ShopifyFailed:
    tail = _tail(result)
    head = (f"`{result.display}` {what} (exit {result.returncode}) in {settings.app_dir}"
            + (f"; {extra}" if extra else "") + ":")
    return ShopifyFailed(f"{head}\n{tail}" if tail else head, _hint_for(tail, settings))


def versions(settings, environ: Mapping[str, str] | None = None, *, path: Path | None = None) -> list[AppVersion]:
    """The app's versions as Shopify lists them, newest first (`path`: the app folder to
    run in, e.g. the promoted commit's checkout; default the working tree's app_dir)."""
    require_configured(settings)
    env = auth_env(settings, environ)
    r = _run(settings, versions_argv(settings.shopify, path=path or settings.app_dir), env, path, stream=None)
    if not r.ok:
        raise _failed("failed", r, settings)
    return parse_versions(r.stdout)


def release(settings, version: str, environ: Mapping[str, str] | None = None, *,
            path: Path | None = None) -> ShopifyReleaseResult:
    """Make the existing app version `version` the live one (the undo of a deploy)."""
    require_configured(settings)
    env = auth_env(settings, environ)
    argv = release_argv(settings.shopify, version, path=path or settings.app_dir)
    # `versions list` shows only the newest LISTED_MAX versions; `app release --version`
    # looks the tag up itself, so the list is read for what was live, not to gate the release.
    before = versions(settings, environ, path=path)
    prev = active_version(before)
    r = _run(settings, argv, env, path)
    if not r.ok:
        raise _failed("failed", r, settings)
    outcome = parse_release_output(r.stdout)
    if not outcome.released:
        raise _failed("did not release the version", r, settings,
                      outcome.detail or f"unexpected output (no {VERSION_RELEASED!r})")
    note = confirm_release(versions(settings, environ, path=path), version, r.display)
    return ShopifyReleaseResult(version, outcome.url, prev.version_tag if prev else None, r.display, note=note)


def deploy(settings, release_id: str, message: str = "", source_control_url: str = "",
           environ: Mapping[str, str] | None = None, *, path: Path | None = None) -> ShopifyDeployResult:
    """Create app version `release_id` from the environment's config and release it.

    `path` is the app folder the CLI reads the config and extensions from: a promotion
    passes the checkout of the promoted commit (`prepare` installs its dependencies), so
    what Shopify gets is that commit's, never the working tree's.

    The active version beforehand is recorded as `previous` (what `undo` re-releases).
    A version that already exists (a resumed run) is released, not created twice. If the
    CLI fails after making the new version live, the previous one is released again
    before the error is raised, so a failed step leaves Shopify as it was.
    """
    require_configured(settings)
    env = auth_env(settings, environ)
    argv = deploy_argv(settings.shopify, release_id, message, source_control_url, path=path or settings.app_dir)
    before = versions(settings, environ, path=path)
    prev = active_version(before)
    prev_tag = prev.version_tag if prev else None
    if prev_tag == release_id:
        earlier = previous_version(before)
        return ShopifyDeployResult(release_id, "", earlier.version_tag if earlier else None,
                                   redact(shlex.join(argv)), reused=True, info="already active")
    if any(v.version_tag == release_id for v in before):
        rel = release(settings, release_id, environ, path=path)
        return ShopifyDeployResult(release_id, rel.url, prev_tag, rel.command, reused=True,
                                   info="existing version released")
    r = _run(settings, argv, env, path)
    outcome = parse_deploy_output(r.stdout) if r.ok else None
    if outcome is None or not outcome.released:
        if r.ok and outcome is not None and outcome.created:
            extra = f"{outcome.headline} {outcome.detail}".strip()
        elif r.ok:
            extra = f"unexpected output (no {RELEASED!r})"
        else:
            extra = ""
        err = _failed("failed" if not r.ok else "did not release a new version", r, settings, extra)
        _restore(settings, prev_tag, release_id, environ, err, path)
        raise err
    now = active_version(versions(settings, environ, path=path))
    if now is None or now.version_tag != release_id:
        raise ShopifyFailed(
            f"`{r.display}` reported {RELEASED!r} but the active version is "
            f"{(now.version_tag if now else None)!r}, not {release_id!r}.",
            "Check the app's versions in the Dev Dashboard; `invoke shopify.release --version=<tag>` sets the live one.",
        )
    info = " ".join(ln for b in parse_cli_output(r.stdout).banners for ln in b.lines if ln)
    return ShopifyDeployResult(release_id, outcome.url, prev_tag, r.display, info=redact(info))


def _restore(settings, prev_tag: str | None, release_id: str, environ, err: ShopifyFailed,
             path: Path | None = None) -> None:
    """After a failed deploy: if our version went live anyway, put the previous one back."""
    try:
        now = active_version(versions(settings, environ, path=path))
    except ShopifyFailed as e:
        err.message += f"\n(could not check which version is live afterwards: {e.message.splitlines()[0]})"
        return
    if now is None or now.version_tag != release_id or not prev_tag:
        return
    try:
        release(settings, prev_tag, environ, path=path)
        err.message += f"\n{release_id} had gone live anyway; {prev_tag} was released again."
    except ShopifyFailed as e:
        err.message += f"\n{release_id} is live and re-releasing {prev_tag} failed too: {e.message.splitlines()[0]}"
    err.args = (err.message,)


def undo(settings, result: ShopifyDeployResult, environ: Mapping[str, str] | None = None) -> ShopifyReleaseResult:
    """Undo a deploy: release the version that was active before it."""
    if not result.previous:
        raise ShopifyFailed(
            f"{result.version} was the app's first released version; there is no earlier version to release.",
            "Leave it live, or deploy a corrected version.",
        )
    return release(settings, result.previous, environ)


def rollback(settings, version: str | None = None, environ: Mapping[str, str] | None = None) -> ShopifyReleaseResult:
    """Release `version`, or without one the version before the active one (on-call use)."""
    if version is None:
        items = versions(settings, environ)
        prev = previous_version(items)
        if prev is None or not prev.version_tag:
            act = active_version(items)
            beyond = act is None and len(items) >= LISTED_MAX
            raise ShopifyFailed(
                f"No earlier tagged app version to go back to for {settings.name!r} "
                + (f"(the active version is older than the newest {len(items)} the CLI lists)." if beyond
                   else f"(active: {act.version_tag if act else 'none'})."),
                "Pass --version=<tag> (see `invoke shopify.versions`, or the Dev Dashboard's Versions page "
                "for older tags: any tag can be released).",
            )
        version = prev.version_tag
    return release(settings, version, environ)
