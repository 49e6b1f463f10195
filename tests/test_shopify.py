"""The Shopify push as data: argv built from settings, and the CLI's output parsed from
recorded files (tests/fixtures/shopify/): output in, value out."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from deploy import shopify
from deploy.config import ShopifySection, parse
from deploy.errors import SettingsError, ShopifyFailed

FIXTURES = Path(__file__).parent / "fixtures" / "shopify"
STAGING = ShopifySection(config="staging")


# ---------------------------------------------------------------- argv

@pytest.mark.parametrize(
    "section, version, message, url, path, expected",
    [
        pytest.param(
            STAGING, "20260821-1400-abc1234", "", "", None,
            ["shopify", "app", "deploy", "--config", "staging", "--allow-updates",
             "--version", "20260821-1400-abc1234", "--no-color"],
            id="minimal",
        ),
        pytest.param(
            STAGING, "r1", "promote abc1234", "https://github.com/occ/app/commit/abc1234", "/srv/app",
            ["shopify", "app", "deploy", "--config", "staging", "--path", "/srv/app", "--allow-updates",
             "--version", "r1", "--message", "promote abc1234",
             "--source-control-url", "https://github.com/occ/app/commit/abc1234", "--no-color"],
            id="message-url-path",
        ),
        pytest.param(
            ShopifySection(config="production", allow_deletes=True), "v.1_2-3", "", "", None,
            ["shopify", "app", "deploy", "--config", "production", "--allow-updates", "--allow-deletes",
             "--version", "v.1_2-3", "--no-color"],
            id="allow-deletes",
        ),
        pytest.param(
            ShopifySection(config="staging", cli="npx --yes shopify"), "r1", "", "", None,
            ["npx", "--yes", "shopify", "app", "deploy", "--config", "staging", "--allow-updates",
             "--version", "r1", "--no-color"],
            id="cli-is-a-command",
        ),
        pytest.param(
            STAGING, "r1", "", "https://ci-bot:ghp_s3cr3t@github.com/occ/app/commit/abc", None,
            ["shopify", "app", "deploy", "--config", "staging", "--allow-updates", "--version", "r1",
             "--source-control-url", "https://github.com/occ/app/commit/abc", "--no-color"],
            id="credentials-stripped-from-url",
        ),
    ],
)
def test_deploy_argv(section, version, message, url, path, expected):
    assert shopify.deploy_argv(section, version, message, url, path=path) == expected


def test_deploy_argv_never_forces_nor_skips_release():
    for section in (STAGING, ShopifySection(config="p", allow_deletes=True)):
        argv = shopify.deploy_argv(section, "r1", "m", "https://x.test/c")
        assert not {"--force", "-f", "--no-release", "--reset"} & set(argv)


@pytest.mark.parametrize(
    "builder, expected",
    [
        pytest.param(lambda: shopify.release_argv(STAGING, "r0"),
                     ["shopify", "app", "release", "--config", "staging", "--version", "r0", "--allow-updates",
                      "--no-color"], id="release"),
        pytest.param(lambda: shopify.release_argv(ShopifySection(config="p", allow_deletes=True), "r0", path="/a"),
                     ["shopify", "app", "release", "--config", "p", "--path", "/a", "--version", "r0",
                      "--allow-updates", "--allow-deletes", "--no-color"], id="release-allow-deletes"),
        pytest.param(lambda: shopify.versions_argv(STAGING),
                     ["shopify", "app", "versions", "list", "--config", "staging", "--json"], id="versions"),
    ],
)
def test_release_and_versions_argv(builder, expected):
    assert builder() == expected


@pytest.mark.parametrize(
    "version, why",
    [
        pytest.param("", "empty", id="empty"),
        pytest.param(".", "'.'", id="dot"),
        pytest.param("..", "'..'", id="dotdot"),
        pytest.param("a" * 101, "101 characters", id="too-long"),
        pytest.param("release 1", "only letters", id="space"),
        pytest.param("r1;rm -rf /", "only letters", id="shell"),
        pytest.param("rélease", "only letters", id="non-ascii"),
    ],
)
def test_invalid_version_is_refused_before_anything_runs(version, why):
    with pytest.raises(ShopifyFailed) as e:
        shopify.deploy_argv(STAGING, version)
    assert why in e.value.message and e.value.hint


def test_version_of_exactly_100_characters_is_accepted():
    assert shopify.validate_version("a" * 100) == "a" * 100


@pytest.mark.parametrize(
    "message, expected_units",
    [
        pytest.param("short", 5, id="short"),
        pytest.param("x" * 200, 200, id="exactly-200"),
        pytest.param("x" * 500, 200, id="ascii-cut"),
        pytest.param("🚀" * 150, 199, id="emoji-counts-two-units"),   # 99 rockets + "…"
    ],
)
def test_message_fits_the_cli_limit_in_utf16_units(message, expected_units):
    clipped = shopify.clip_message(message)
    assert len(clipped.encode("utf-16-le")) // 2 == expected_units
    if len(message) <= 200 and "🚀" not in message:
        assert clipped == message
    else:
        assert clipped.endswith("…")


def test_multiline_message_becomes_one_line():
    assert shopify.clip_message("fix\nthe\r\nbug") == "fix the bug"


def test_non_http_source_control_url_is_refused():
    with pytest.raises(ShopifyFailed, match="not an http"):
        shopify.deploy_argv(STAGING, "r1", source_control_url="git@github.com:occ/app.git")


@pytest.mark.parametrize(
    "config, expected",
    [
        ("staging", "shopify.app.staging.toml"),
        ("shopify.app.production.toml", "shopify.app.production.toml"),
        ("shopify.app.toml", "shopify.app.toml"),
        ("My Staging_App", "shopify.app.my-staging-app.toml"),
    ],
)
def test_config_file_name_follows_the_cli(config, expected):
    assert shopify.config_file_name(config) == expected


def _settings(tmp_path, **shopify_keys):
    return parse({"environment": {"kind": "local"}, "shopify": shopify_keys},
                 name="dev", file=tmp_path / "env" / "dev.toml", root=tmp_path)


def test_environment_without_shopify_config_is_skipped_with_a_reason(tmp_path):
    reason = shopify.skip_reason(_settings(tmp_path))
    assert reason and "no Shopify app config for 'dev'" in reason and "dev.toml" in reason
    assert shopify.skip_reason(_settings(tmp_path, config="dev")) is None


def test_missing_token_names_the_variable_and_where_it_comes_from(tmp_path):
    s = _settings(tmp_path, config="dev")
    with pytest.raises(SettingsError) as e:
        shopify.auth_env(s, {})
    assert "SHOPIFY_APP_AUTOMATION_TOKEN is not set" in e.value.message
    assert "Dev Dashboard" in e.value.hint and "expires" in e.value.hint


def test_custom_token_variable_is_named_in_the_error(tmp_path):
    s = _settings(tmp_path, config="dev", token_var="OCC_DEV_SHOPIFY_TOKEN")
    with pytest.raises(SettingsError, match="OCC_DEV_SHOPIFY_TOKEN is not set"):
        shopify.auth_env(s, {"SHOPIFY_CLI_PARTNERS_TOKEN": "not-for-this-var"})


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({"SHOPIFY_APP_AUTOMATION_TOKEN": "tok-a"}, id="automation-token"),
        pytest.param({"SHOPIFY_CLI_PARTNERS_TOKEN": "tok-a"}, id="partners-token-fallback"),
    ],
)
def test_token_is_given_to_the_cli_under_both_names_as_a_secret(tmp_path, environ):
    env = shopify.auth_env(_settings(tmp_path, config="dev"), environ)
    assert env["CI"] == "1"
    for var in shopify.AUTOMATION_TOKEN_VAR, shopify.PARTNERS_TOKEN_VAR:
        assert env[var].reveal() == "tok-a" and str(env[var]) == "***"


# ---------------------------------------------------------------- versions list (recorded JSON)

def _cases(folder: str):
    d = FIXTURES / folder
    return sorted(p.name[: -len(".expected.json")] for p in d.glob("*.expected.json"))


def _as_dict(v: shopify.AppVersion) -> dict:
    return {"version_tag": v.version_tag, "status": v.status,
            "created_at": v.created_at.isoformat() if v.created_at else None,
            "created_by": v.created_by, "message": v.message}


@pytest.mark.parametrize("case", _cases("versions_list"))
def test_versions_list_fixture(case):
    d = FIXTURES / "versions_list"
    text = (d / f"{case}.json").read_text(encoding="utf-8")
    expected = json.loads((d / f"{case}.expected.json").read_text(encoding="utf-8"))
    if "error" in expected:
        with pytest.raises(ShopifyFailed) as e:
            shopify.parse_versions(text)
        assert "versions list" in e.value.message
        return
    got = shopify.parse_versions(text)
    assert [_as_dict(v) for v in got] == expected["versions"]
    act = shopify.active_version(got)
    prev = shopify.previous_version(got)
    assert (act.version_tag if act else None) == expected["active"]
    assert (prev.version_tag if prev else None) == expected["previous"]


def test_every_versions_fixture_has_an_expectation():
    d = FIXTURES / "versions_list"
    inputs = {p.stem for p in d.glob("*.json") if not p.name.endswith(".expected.json")}
    assert inputs == set(_cases("versions_list"))


def test_created_at_is_utc():
    v = shopify.parse_versions((FIXTURES / "versions_list" / "app_management.json").read_text())[0]
    assert v.created_at == datetime.fromisoformat("2026-08-21T14:03:11+00:00")


# ---------------------------------------------------------------- deploy / release output

URL = "https://dev.shopify.com/dashboard/98123456/apps/312345678901/versions/654321987"


@pytest.mark.parametrize(
    "case, released, created, version, url, detail",
    [
        ("released", True, True, "20260821-1400-abc1234", URL, ""),
        ("released_no_message", True, True, "20260821-1400-abc1234", URL, ""),
        ("released_long_message", True, True, "r-2026.08.21_01", URL, ""),
        ("ansi_colour", True, True, "20260821-1400-abc1234", URL, ""),
        ("inline_link", True, True, "v42", "https://partners.shopify.com/1/apps/2/versions/3", ""),
        ("not_released", False, True, "20260821-1400-abc1234", URL, "required scope is missing approval"),
        ("created_no_release", False, True, "20260821-1400-abc1234", URL, "to release this version"),
        ("no_banner", False, False, None, "", ""),
    ],
)
def test_deploy_output_fixture(case, released, created, version, url, detail):
    text = (FIXTURES / "deploy_output" / f"{case}.txt").read_text(encoding="utf-8")
    got = shopify.parse_deploy_output(text)
    assert (got.released, got.created, got.version, got.url) == (released, created, version, url)
    assert detail in got.detail
    if not detail:
        assert got.detail == ""


@pytest.mark.parametrize(
    "case, released, detail",
    [("released", True, ""), ("user_error", False, "already been released")],
)
def test_release_output_fixture(case, released, detail):
    got = shopify.parse_release_output((FIXTURES / "release_output" / f"{case}.txt").read_text(encoding="utf-8"))
    assert got.released is released
    assert got.version == "20260814-0930-def5678" and got.url == URL
    assert detail in got.detail


@pytest.mark.parametrize(
    "case, first_line",
    [
        ("token_refused", "The custom token provided can't be used for the App Management API."),
        ("nonexistent_flag", "Nonexistent flag: --bogus See more help with --help"),
        ("no_allow_flag", "Flag not specified:"),
        ("no_config_file", "Could not find a Shopify app configuration file. Looked in /tmp/empty2 and parent directories."),
    ],
)
def test_recorded_cli_errors_are_read_as_error_banners(case, first_line):
    text = (FIXTURES / "errors" / f"{case}.stderr.txt").read_text(encoding="utf-8")
    out = shopify.parse_cli_output(text)
    assert [b.kind for b in out.banners] == ["error"]
    assert out.banners[0].headline == first_line
    deployed = shopify.parse_deploy_output(text)
    assert not deployed.released and not deployed.created


# ---------------------------------------------------------------- confirming a release (pure)

def _v(tag, status="inactive"):
    return shopify.AppVersion(version_tag=tag, status=status, created_at=None)


@pytest.mark.parametrize("after, outcome", [
    ([_v("r2", "active"), _v("r1")], ""),
    ([_v("r3", "active"), _v("r2"), _v("r1")], "raises"),
    ([_v("r3"), _v("r1")], "raises"),
    ([_v(f"n{i}") for i in range(20)], "note"),
], ids=["listed and active", "listed, another active", "listed, none active", "older than the listed 20"])
def test_confirm_release(after, outcome):
    if outcome == "raises":
        with pytest.raises(ShopifyFailed, match="reported success but the active version is"):
            shopify.confirm_release(after, "r2" if len(after) == 3 else "r1", "shopify app release")
        return
    note = shopify.confirm_release(after, "r2", "shopify app release")
    assert (note == "") is (outcome == "")
    if outcome == "note":
        assert "newest 20" in note and "exit status" in note
