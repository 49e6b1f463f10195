"""Whether the Shopify push can run, before it runs: the environment has a config, its file is
there with a `client_id`, the CLI is found, and the token is set; and the CLI's whole child
environment (`auth_env`: the token under the names the CLI reads, CI=1, nothing else of the
deployer's)."""

from __future__ import annotations

import os
import shlex
import tomllib
from pathlib import Path
from typing import Mapping

from deploy import proc
from deploy.errors import SettingsError
from deploy.redact import Secret
from deploy.shopify.commands import AUTOMATION_TOKEN_VAR, PARTNERS_TOKEN_VAR, config_file_name, skip_reason


def token_hint(var: str) -> str:
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
            token_hint(var),
        )
    token = value if isinstance(value, Secret) else Secret(value)
    # SHOPIFY_CLI_NO_ANALYTICS: the CLI's opt-out of usage reporting, which CI may set.
    return proc.child_env(environ, names=("SHOPIFY_CLI_NO_ANALYTICS",),
                          extra={AUTOMATION_TOKEN_VAR: token, PARTNERS_TOKEN_VAR: token, "CI": "1"})


def app_dir(settings) -> Path:
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
    d = path or app_dir(settings)
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


def require_configured(settings) -> None:
    reason = skip_reason(settings)
    if reason:
        raise SettingsError(f"Shopify push for {settings.name!r} is not configured: {reason}.")
