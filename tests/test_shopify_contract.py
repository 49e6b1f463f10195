"""Contract with the real Shopify CLI 3.x (installed once from npm into a cache folder):
every flag the toolkit passes exists in the real `--help`, the stand-in knows no flag the
real CLI lacks, and the texts the parsers look for are in the real CLI's code."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from deploy import shopify
from deploy.config import ShopifySection
from deploy.testing.shopify import AUTH_VARS, COMMAND_FLAGS, real_help

# Every optional part switched on, so every flag the toolkit can emit is checked.
FULL = ShopifySection(config="production", allow_deletes=True)
BUILT = {
    "deploy": shopify.deploy_argv(FULL, "20260821-1400-abc1234", "promote abc1234",
                                  "https://github.com/occ/app/commit/abc1234", path="/srv/app"),
    "release": shopify.release_argv(FULL, "20260814-0930-def5678", path="/srv/app"),
    "versions list": shopify.versions_argv(FULL, path="/srv/app"),
}

_FLAG_LINE = re.compile(r"^\s+(?:-(?P<short>\w), )?--(?P<name>[a-z0-9-]+)(?P<value>=<value>)?\s")


def help_flags(text: str) -> dict[str, bool]:
    """The FLAGS section of oclif help -> {flag name: takes a value}."""
    flags, in_flags = {}, False
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]+$", line):
            in_flags = line.strip() in ("FLAGS", "GLOBAL FLAGS")
            continue
        m = _FLAG_LINE.match(line) if in_flags else None
        if m:
            flags[m.group("name")] = bool(m.group("value"))
    return flags


def emitted_flags(argv: list[str]) -> dict[str, bool]:
    """{flag: followed by a value} for the flags in one built command."""
    out = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[a[2:]] = nxt is not None and not nxt.startswith("--")
    return out


@pytest.fixture(scope="module")
def real_helps(real_shopify_cli) -> dict[str, str]:
    return {cmd: real_help(real_shopify_cli, "app", *cmd.split()) for cmd in BUILT}


def test_real_cli_is_version_3(real_shopify_cli):
    p = subprocess.run([str(real_shopify_cli), "version"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert re.search(r"\b3\.\d+\.\d+\b", p.stdout), p.stdout


@pytest.mark.parametrize("command", list(BUILT))
def test_every_flag_the_toolkit_passes_is_in_the_real_help(real_helps, command):
    real = help_flags(real_helps[command])
    assert real, f"no flags read from `shopify app {command} --help`:\n{real_helps[command]}"
    for flag, has_value in emitted_flags(BUILT[command]).items():
        assert flag in real, f"--{flag} is not a flag of `shopify app {command}` (real flags: {sorted(real)})"
        assert real[flag] == has_value, f"--{flag}: the toolkit {'passes' if has_value else 'omits'} a value"


def test_deploy_passes_the_ci_flag_and_not_the_deprecated_one(real_helps):
    real = real_helps["deploy"]
    assert "--allow-updates" in BUILT["deploy"] and "Recommended option for CI/CD" in " ".join(real.split())
    assert "--force" not in BUILT["deploy"] + BUILT["release"]
    assert "[Deprecated]" in real.split("--force", 1)[1][:80]


@pytest.mark.parametrize("command", list(BUILT))
def test_stand_in_knows_only_real_flags(real_helps, command):
    real = help_flags(real_helps[command])
    for flag, has_value in COMMAND_FLAGS[command].items():
        assert flag in real, f"the stand-in accepts --{flag}, which `shopify app {command}` does not have"
        assert real[flag] == has_value


def _without_tokens() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in AUTH_VARS}


def _bundle(real_shopify_cli: Path) -> str:
    dist = real_shopify_cli.resolve().parent.parent / "dist"
    if not dist.is_dir():
        dist = real_shopify_cli.parent.parent / "@shopify" / "cli" / "dist"
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(dist.glob("*.js")))


def test_texts_the_parsers_rely_on_are_printed_by_the_real_cli(real_shopify_cli):
    code = _bundle(real_shopify_cli)
    for text in (shopify.RELEASED, shopify.NOT_RELEASED, shopify.CREATED,
                 shopify.VERSION_RELEASED, shopify.VERSION_NOT_RELEASED, *AUTH_VARS):
        assert text in code, f"{text!r} is not in the installed Shopify CLI any more"
    # versions list --json prints the nodes with these keys (services/versions-list.ts)
    for key in ("versionTag", "createdAt", "createdBy", "appVersions"):
        assert key in code


def test_real_cli_rejects_an_unknown_flag_as_the_stand_in_does(real_shopify_cli, tmp_path):
    p = subprocess.run([str(real_shopify_cli), "app", "deploy", "--config", "staging", "--bogus"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path,
                       env={**_without_tokens(), "CI": "1", "SHOPIFY_CLI_NO_ANALYTICS": "1"})
    assert p.returncode == 2
    banner = shopify.parse_cli_output(p.stderr).banners[0]
    assert (banner.kind, banner.headline) == ("error", "Nonexistent flag: --bogus See more help with --help")


def test_versions_list_asks_for_as_many_versions_as_the_stand_in_lists(real_shopify_cli):
    from deploy.testing.shopify import LISTED_MAX

    # The App Management query behind `app versions list`: `versions(first: N) { edges { node ...`.
    firsts = set(re.findall(r'value:"versions"\},arguments:\[\{kind:"Argument",name:\{kind:"Name",value:"first"\},'
                            r'value:\{kind:"IntValue",value:"(\d+)"\}', _bundle(real_shopify_cli)))
    assert firsts == {str(LISTED_MAX)} and shopify.LISTED_MAX == LISTED_MAX, firsts
