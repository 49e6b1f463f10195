"""The Shopify push: `shopify app deploy` for an environment's app configuration and
extensions, `shopify app versions list --json` to learn what is live, and
`shopify app release --version <previous>` as the undo.

`shopify app deploy` never deploys the web app (that is `deploy.hosts`); it creates an
app version from `shopify.app.<config>.toml` and the extensions, and releases it.

Commands are built as data (`deploy_argv`, `release_argv`, `versions_argv`), the CLI's
output is read by pure parsers (`parse_versions`, `parse_deploy_output`,
`parse_release_output`), and one helper runs the CLI: in the app directory, without a
TTY (stdin empty, `CI=1`), with the automation token only in the child's environment.

Sources (Shopify/cli): flags from `packages/app/src/cli/commands/app/{deploy,release}.ts`,
`versions/list.ts` and `flags.ts`; the version/message limits from
`validations/version-name.ts` and `validations/message.ts`; the result banners from
`services/deploy.ts` (`outputCompletionMessage`) and `services/release.ts`; the JSON
from `services/versions-list.ts`; the token variables from
`packages/cli-kit/src/public/node/environment.ts`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from deploy import build, proc
from deploy.errors import BuildFailed, SettingsError, ShopifyFailed
from deploy.redact import Secret, redact

__all__ = [
    "AUTOMATION_TOKEN_VAR", "PARTNERS_TOKEN_VAR", "MESSAGE_MAX", "VERSION_MAX",
    "AppVersion", "Banner", "CliOutput", "DeployOutcome", "ReleaseOutcome",
    "ShopifyDeployResult", "ShopifyReleaseResult",
    "skip_reason", "config_file_name", "validate_version", "clip_message", "clean_source_url",
    "deploy_argv", "release_argv", "versions_argv",
    "parse_cli_output", "parse_versions", "parse_deploy_output", "parse_release_output",
    "active_version", "previous_version", "confirm_release", "check_client_id", "LISTED_MAX",
    "auth_env", "check", "versions", "deploy", "release", "undo", "rollback", "prepare",
]

# The CLI reads `SHOPIFY_APP_AUTOMATION_TOKEN ?? SHOPIFY_CLI_PARTNERS_TOKEN`
# (cli-kit/src/public/node/environment.ts); the first name exists since 3.93
# (RELEASE_NOTES/3.93.md), so both are given to the child for apps pinned to an older 3.x.
AUTOMATION_TOKEN_VAR = "SHOPIFY_APP_AUTOMATION_TOKEN"
PARTNERS_TOKEN_VAR = "SHOPIFY_CLI_PARTNERS_TOKEN"

VERSION_MAX = 100     # validations/version-name.ts
LISTED_MAX = 20       # `app versions list` asks for `versions(first: 20)`: only the newest 20 come back
MESSAGE_MAX = 200     # validations/message.ts (a JavaScript length: UTF-16 code units)
_VERSION_CHARS = re.compile(r"^[a-zA-Z0-9._-]+$")

RELEASED = "New version released to users."          # services/deploy.ts
NOT_RELEASED = "New version created, but not released."
CREATED = "New version created."                      # --no-release (or SHOPIFY_FLAG_NO_RELEASE)
VERSION_RELEASED = "Version released to users."       # services/release.ts
VERSION_NOT_RELEASED = "Version couldn't be released."


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class AppVersion:
    """One row of `shopify app versions list --json`."""

    version_tag: str | None
    status: str                      # "active" for the released one; others "inactive"/"released"
    created_at: datetime | None      # UTC; the CLI prints "YYYY-MM-DD HH:MM:SS"
    created_by: str = ""
    message: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Banner:
    """One boxed message the CLI printed (`╭─ success ─…╮`)."""

    kind: str                        # success | info | warning | error | ...
    lines: tuple[str, ...]           # the text inside the box, frame removed, blank lines kept as ""

    def _split(self) -> tuple[list[str], list[str]]:
        rest = list(self.lines)
        while rest and not rest[0]:
            rest.pop(0)
        end = rest.index("") if "" in rest else len(rest)
        return rest[:end], rest[end:]

    @property
    def headline(self) -> str:
        """The first paragraph, unwrapped (the CLI wraps at 74 columns)."""
        return " ".join(self._split()[0])

    @property
    def body(self) -> tuple[str, ...]:
        return tuple(self._split()[1])


@dataclass(frozen=True)
class CliOutput:
    text: tuple[str, ...]            # lines outside any box
    banners: tuple[Banner, ...]
    links: Mapping[int, str]         # footnotes "[1] https://…" (links when hyperlinks are off)


@dataclass(frozen=True)
class DeployOutcome:
    released: bool                   # the new version is live
    created: bool                    # a version was created (released or not)
    version: str | None
    url: str
    headline: str
    detail: str = ""                 # the CLI's reason when the version was not released


@dataclass(frozen=True)
class ReleaseOutcome:
    released: bool
    version: str | None
    url: str
    headline: str
    detail: str = ""


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


# ---------------------------------------------------------------- commands as data

def skip_reason(settings) -> str | None:
    """Why the Shopify step does not apply to this environment, or None if it does."""
    if not settings.shopify.config:
        return (f"no Shopify app config for {settings.name!r} "
                f"(set [shopify] config in {settings.file.name} to push the app's configuration and extensions)")
    return None


def config_file_name(config: str) -> str:
    """The TOML file the CLI reads for `--config` (models/app/config-file-naming.ts)."""
    if re.fullmatch(r"shopify\.app(\.[-\w]+)?\.toml", config, re.ASCII):
        return config
    slug = re.sub(r"[^\w\s-]", "", config.lower().strip(), flags=re.ASCII)
    slug = re.sub(r"[\s_-]+", "-", slug, flags=re.ASCII).strip("-")
    return f"shopify.app.{slug}.toml"


def validate_version(version: str) -> str:
    """`version` if the CLI accepts it as a version tag, else ShopifyFailed saying why."""
    why = None
    if not isinstance(version, str) or not version:
        why = "it is empty"
    elif len(version) > VERSION_MAX:
        why = f"it is {len(version)} characters long (at most {VERSION_MAX})"
    elif version in (".", ".."):
        why = "'.' and '..' are not allowed"
    elif not _VERSION_CHARS.match(version):
        why = "only letters, digits, '.', '-' and '_' are allowed"
    if why:
        raise ShopifyFailed(
            f"{version!r} cannot be a Shopify app version tag: {why}.",
            "Use the release id (e.g. 20260821-1400-abc1234); Shopify CLI rejects other tags before deploying.",
        )
    return version


def clip_message(message: str) -> str:
    """`message` cut to the CLI's 200-unit limit (counted in UTF-16, as JavaScript does)."""
    message = " ".join(message.split()) if "\n" in message or "\r" in message else message
    if len(message.encode("utf-16-le")) <= MESSAGE_MAX * 2:
        return message
    out, units = [], 0
    for ch in message:
        n = len(ch.encode("utf-16-le")) // 2
        if units + n > MESSAGE_MAX - 1:
            break
        out.append(ch)
        units += n
    return "".join(out) + "…"


def clean_source_url(url: str) -> str:
    """The commit URL without any user:password/token part (it ends up on Shopify's pages)."""
    if not url:
        return ""
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ShopifyFailed(
            f"{redact(url)!r} is not an http(s) URL for --source-control-url.",
            "Set environment.repo_url to the repository's web address (https://github.com/<org>/<repo>).",
        )
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


def _base(section, command: Sequence[str], path: str | Path | None) -> list[str]:
    argv = [*shlex.split(section.cli), "app", *command, "--config", section.config]
    if path is not None:
        argv += ["--path", str(path)]
    return argv


def deploy_argv(section, version: str, message: str = "", source_control_url: str = "",
                *, path: str | Path | None = None) -> list[str]:
    """`shopify app deploy` for `section` creating and releasing version `version`."""
    # --allow-updates is what the CLI recommends for CI; --force is deprecated in 3.x and
    # gone in 4.0; --no-release would create a version without making it live.
    argv = _base(section, ["deploy"], path) + ["--allow-updates"]
    if section.allow_deletes:
        argv.append("--allow-deletes")
    argv += ["--version", validate_version(version)]
    if message:
        argv += ["--message", clip_message(message)]
    if source_control_url:
        argv += ["--source-control-url", clean_source_url(source_control_url)]
    return argv + ["--no-color"]


def release_argv(section, version: str, *, path: str | Path | None = None) -> list[str]:
    """`shopify app release` making the existing version `version` live again."""
    argv = _base(section, ["release"], path) + ["--version", validate_version(version), "--allow-updates"]
    if section.allow_deletes:
        argv.append("--allow-deletes")
    return argv + ["--no-color"]


def versions_argv(section, *, path: str | Path | None = None) -> list[str]:
    """`shopify app versions list --json` (JSON output has no colour)."""
    return _base(section, ["versions", "list"], path) + ["--json"]


# ---------------------------------------------------------------- parsing (pure)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
_BOX_TOP = re.compile(r"^\s*╭─\s*(?P<kind>[^─]*?)\s*─+╮\s*$")
_FOOTNOTE = re.compile(r"^\[(?P<n>\d+)\]\s+(?P<url>\S+)\s*$")


def _plain(text: str) -> str:
    return _ANSI.sub("", text.replace("\r\n", "\n"))


def parse_cli_output(text: str) -> CliOutput:
    """Split the CLI's text into boxed banners, footnote links and the lines outside."""
    outside: list[str] = []
    banners: list[Banner] = []
    links: dict[int, str] = {}
    box: list[str] | None = None
    kind = ""
    for raw in _plain(text).split("\n"):
        line = raw.rstrip()
        if box is None:
            m = _BOX_TOP.match(line)
            if m:
                box, kind = [], m.group("kind") or "info"
                continue
            f = _FOOTNOTE.match(line.strip())
            if f:
                links[int(f.group("n"))] = f.group("url")
            elif line.strip():
                outside.append(line.strip())
            continue
        if line.lstrip().startswith("╰"):
            banners.append(Banner(kind, tuple(box)))
            box = None
            continue
        inner = line.strip()
        if inner.startswith("│"):
            inner = inner[1:]
        if inner.endswith("│"):
            inner = inner[:-1]
        box.append(inner.strip())
    if box is not None:                       # cut off mid-box: keep what was there
        banners.append(Banner(kind, tuple(box)))
    return CliOutput(tuple(outside), tuple(banners), links)


_LINK_FOOTNOTE = re.compile(r"^(?P<label>\S+) \[(?P<n>\d+)\]$")
_LINK_INLINE = re.compile(r"^(?P<label>\S+) \( (?P<url>\S+) \)$")


def _version_link(banner: Banner, links: Mapping[int, str]) -> tuple[str | None, str]:
    """The version tag and URL the CLI shows as the first body line (`label [1]`)."""
    for line in banner.body:
        if not line:
            continue
        m = _LINK_FOOTNOTE.match(line)
        if m:
            return m.group("label"), links.get(int(m.group("n")), "")
        m = _LINK_INLINE.match(line)
        if m:
            return m.group("label"), m.group("url")
        return (line if _VERSION_CHARS.match(line) else None), ""
    return None, ""


def _detail(banner: Banner, skip_first: bool = True) -> str:
    body = [ln for ln in banner.body if ln]
    return " ".join(body[1:] if skip_first and body else body)


def parse_deploy_output(text: str) -> DeployOutcome:
    """What `shopify app deploy` reported: released, created only, or neither."""
    out = parse_cli_output(text)
    for b in out.banners:
        if b.headline in (RELEASED, NOT_RELEASED, CREATED):
            version, url = _version_link(b, out.links)
            released = b.headline == RELEASED
            return DeployOutcome(released, True, version, url, b.headline,
                                 "" if released else _detail(b))
    return DeployOutcome(False, False, None, "", out.banners[0].headline if out.banners else "")


def parse_release_output(text: str) -> ReleaseOutcome:
    """What `shopify app release` reported (it exits 0 even when Shopify refused)."""
    out = parse_cli_output(text)
    for b in out.banners:
        if b.headline in (VERSION_RELEASED, VERSION_NOT_RELEASED):
            version, url = _version_link(b, out.links)
            ok = b.headline == VERSION_RELEASED
            return ReleaseOutcome(ok, version, url, b.headline, "" if ok else _detail(b))
    return ReleaseOutcome(False, None, "", out.banners[0].headline if out.banners else "")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # formatDate() in cli-kit/common/string.ts prints the UTC time without a zone.
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_versions(text: str) -> list[AppVersion]:
    """`shopify app versions list --json` output -> versions, newest first.

    Lines before the JSON (an update notice, a warning) are skipped; anything that is
    not a list of version objects is ShopifyFailed.
    """
    plain = _plain(text)
    start = next((i for i, ln in enumerate(plain.split("\n")) if ln.lstrip().startswith("[")), None)
    if start is None:
        raise ShopifyFailed(
            "`shopify app versions list --json` printed no JSON list: " + _snippet(plain),
            "Run the command in the app directory to see what it says.",
        )
    body = "\n".join(plain.split("\n")[start:])
    try:
        data, _ = json.JSONDecoder().raw_decode(body.lstrip())
    except json.JSONDecodeError as e:
        raise ShopifyFailed(
            f"`shopify app versions list --json` printed JSON that cannot be read ({e.msg} at line {e.lineno}).",
            "Check the Shopify CLI version (3.x) and run the command by hand.",
        ) from None
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise ShopifyFailed(
            "`shopify app versions list --json` printed something other than a list of versions: " + _snippet(body),
            "Check the Shopify CLI version (3.x).",
        )
    rows = []
    for i, v in enumerate(data):
        status = v.get("status")
        if not isinstance(status, str):
            raise ShopifyFailed(f"`shopify app versions list --json`: version #{i + 1} has no status: {_snippet(json.dumps(v))}")
        tag = v.get("versionTag")
        rows.append((i, AppVersion(
            version_tag=tag if isinstance(tag, str) and tag else None,
            status=status,
            created_at=_parse_time(v.get("createdAt")),
            created_by=str(v.get("createdBy") or ""),
            message=str(v.get("message") or ""),
        )))
    # The API lists newest first; sort anyway (stable, undated rows keep their place last).
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    rows.sort(key=lambda r: (r[1].created_at or oldest, -r[0]), reverse=True)
    return [v for _, v in rows]


def _snippet(text: str, n: int = 200) -> str:
    s = " ".join(redact(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def confirm_release(after: Sequence[AppVersion], version: str, command: str) -> str:
    """After `app release --version V` succeeded: '' when the list shows V active;
    ShopifyFailed when it shows V but another version active; a note saying the CLI's
    word was taken when V is older than the newest versions the list returns."""
    if any(v.version_tag == version for v in after):
        now = active_version(after)
        if now is None or now.version_tag != version:
            raise ShopifyFailed(
                f"`{command}` reported success but the active version is "
                f"{now.version_tag if now else 'none'!r}, not {version!r}.",
                "Check the app's versions in the Dev Dashboard before retrying.",
            )
        return ""
    return (f"{version} is older than the newest {len(after)} versions `shopify app versions list` returns, "
            f"so the release was confirmed by the CLI's exit status and its {VERSION_RELEASED!r} banner only")


def active_version(items: Sequence[AppVersion]) -> AppVersion | None:
    """The version users have now (status "active")."""
    return next((v for v in items if v.active), None)


def previous_version(items: Sequence[AppVersion]) -> AppVersion | None:
    """The version to go back to without a recorded one: the newest tagged version
    created before the active one (preferring ones marked "released" where the API
    says so; the App Management API marks every other version "inactive")."""
    act = active_version(items)
    if act is None:
        return None
    ordered = list(items)
    older = [v for v in ordered[ordered.index(act) + 1:] if v.version_tag]
    released = [v for v in older if v.status == "released"]
    return released[0] if released else older[0] if older else None


# ---------------------------------------------------------------- running the CLI

def _token_hint(var: str) -> str:
    return (f"Create an App Automation Token in the Shopify Dev Dashboard (your app > Settings > "
            f"App Automation Token; it expires after 1, 3 or 6 months) and set it as {var} "
            f"(a CI environment secret, or .env locally).")


def auth_env(settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The CLI's whole child environment: proc's minimal base (PATH for node, HOME for its
    config, proxies, CA certificates), the token (as a Secret, under the names the CLI
    reads) and CI=1 (no TTY, no prompt). Nothing else of the deployer's: no database URL,
    no API secret, no other token; and no SHOPIFY_FLAG_* variables, which the CLI would
    read as flags the toolkit did not choose."""
    environ = os.environ if environ is None else environ
    var = settings.shopify.token_var
    value = environ.get(var, "")
    if not value and var == AUTOMATION_TOKEN_VAR:
        value = environ.get(PARTNERS_TOKEN_VAR, "")     # the name used before CLI 3.93
    if not value.strip():
        raise SettingsError(
            f"{var} is not set: Shopify CLI needs it to push the app configuration of the {settings.name} environment "
            "without a browser login.",
            _token_hint(var),
        )
    token = value if isinstance(value, Secret) else Secret(value)
    # SHOPIFY_CLI_NO_ANALYTICS: the CLI's opt-out of usage reporting, which CI may set.
    return proc.child_env(environ, names=("SHOPIFY_CLI_NO_ANALYTICS",),
                          extra={AUTOMATION_TOKEN_VAR: token, PARTNERS_TOKEN_VAR: token, "CI": "1"})


def _app_dir(settings) -> Path:
    d = settings.app_dir
    if not d.is_dir():
        raise SettingsError(
            f"{settings.file}: environment.app_dir {settings.environment.app_dir!r} is not a folder ({d}).",
            "Point environment.app_dir at the app project (the folder with shopify.app.<env>.toml).",
        )
    return d


def check(settings, environ: Mapping[str, str] | None = None, *, path: Path | None = None,
          commit: str = "") -> None:
    """Preflight: config file (in `path`, the commit's checkout, else the working tree),
    token and CLI present; raises the error a deploy would hit later."""
    reason = skip_reason(settings)
    if reason:
        raise SettingsError(f"Shopify push for {settings.name!r} is not configured: {reason}.")
    d = path or _app_dir(settings)
    name = config_file_name(settings.shopify.config)
    if not (d / name).is_file():
        where = f"commit {commit[:12]} has no {name} in {settings.environment.app_dir}" if commit else \
            f"{d / name} does not exist"
        raise SettingsError(
            f"{settings.file}: shopify.config = {settings.shopify.config!r} but {where}.",
            f"Create it with `shopify app config link --config {settings.shopify.config}` in {d}, or fix shopify.config.",
        )
    check_client_id(d / name, settings.shopify.config)
    auth_env(settings, environ)
    proc.which(shlex.split(settings.shopify.cli)[0])


def check_client_id(path: Path, config: str) -> str:
    """The app's `client_id` from its shopify.app.<config>.toml; SettingsError naming the
    file when it is missing or empty (the template ships `client_id = ""`, which the CLI
    only reports after asking Shopify)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise SettingsError(f"{path}: cannot be read as TOML ({e}).",
                            "Fix the file (Shopify CLI reads it for --config) and run again.") from None
    value = data.get("client_id")
    if not isinstance(value, str) or not value.strip():
        what = "is empty" if isinstance(value, str) else ("is missing" if value is None else "is not a string")
        raise SettingsError(
            f"{path}: client_id {what}, so Shopify CLI cannot tell which app to push.",
            f"Set client_id to the app's Client ID (Dev Dashboard > your app > Settings), or run "
            f"`shopify app config link --config {config}` in {path.parent}; then commit the file.",
        )
    return value.strip()


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
        return f"The token in {var} was refused (wrong app, revoked or expired). " + _token_hint(var)
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
    return proc.run(argv, cwd=path or _app_dir(settings), env=env, timeout=settings.shopify.timeout, input="",
                    stream=stream)


def _failed(what: str, result: proc.CommandResult, settings, extra: str = "") -> ShopifyFailed:
    tail = _tail(result)
    head = (f"`{result.display}` {what} (exit {result.returncode}) in {settings.app_dir}"
            + (f"; {extra}" if extra else "") + ":")
    return ShopifyFailed(f"{head}\n{tail}" if tail else head, _hint_for(tail, settings))


def _require_configured(settings) -> None:
    reason = skip_reason(settings)
    if reason:
        raise SettingsError(f"Shopify push for {settings.name!r} is not configured: {reason}.")


def versions(settings, environ: Mapping[str, str] | None = None, *, path: Path | None = None) -> list[AppVersion]:
    """The app's versions as Shopify lists them, newest first (`path`: the app folder to
    run in, e.g. the promoted commit's checkout; default the working tree's app_dir)."""
    _require_configured(settings)
    env = auth_env(settings, environ)
    r = _run(settings, versions_argv(settings.shopify, path=path or settings.app_dir), env, path, stream=None)
    if not r.ok:
        raise _failed("failed", r, settings)
    return parse_versions(r.stdout)


def release(settings, version: str, environ: Mapping[str, str] | None = None, *,
            path: Path | None = None) -> ShopifyReleaseResult:
    """Make the existing app version `version` the live one (the undo of a deploy)."""
    _require_configured(settings)
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
    _require_configured(settings)
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
