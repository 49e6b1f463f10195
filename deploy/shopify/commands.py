"""The Shopify CLI's commands as data: `shopify app deploy`, `app release --version` and `app
versions list --json` built as argv lists from the `[shopify]` section, with the CLI's own
limits checked first (version tag characters and length, message length, a source URL
without credentials).

Sources (Shopify/cli): flags from `packages/app/src/cli/commands/app/{deploy,release}.ts`,
`versions/list.ts` and `flags.ts`; the version/message limits from
`validations/version-name.ts` and `validations/message.ts`; the token variables from
`packages/cli-kit/src/public/node/environment.ts`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from deploy.errors import ShopifyFailed
from deploy.redact import redact

# The CLI reads `SHOPIFY_APP_AUTOMATION_TOKEN ?? SHOPIFY_CLI_PARTNERS_TOKEN`
# (cli-kit/src/public/node/environment.ts); the first name exists since 3.93
# (RELEASE_NOTES/3.93.md), so both are given to the child for apps pinned to an older 3.x.
AUTOMATION_TOKEN_VAR = "SHOPIFY_APP_AUTOMATION_TOKEN"
PARTNERS_TOKEN_VAR = "SHOPIFY_CLI_PARTNERS_TOKEN"

VERSION_MAX = 100     # validations/version-name.ts
LISTED_MAX = 20       # `app versions list` asks for `versions(first: 20)`: only the newest 20 come back
MESSAGE_MAX = 200     # validations/message.ts (a JavaScript length: UTF-16 code units)
VERSION_CHARS = re.compile(r"^[a-zA-Z0-9._-]+\Z")


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
    elif not VERSION_CHARS.match(version):
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
