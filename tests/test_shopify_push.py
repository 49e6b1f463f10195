"""The Shopify push run for real through the recording `shopify` stand-in on PATH:
deploy, versions, the undo, resumed runs, failures, and the token kept out of argv and output."""

from __future__ import annotations

import json
import os

import pytest

from deploy import shopify
from deploy.errors import SettingsError, ShopifyFailed, ToolMissing
from deploy.redact import redact

COMMIT = "https://github.com/occ/operator-control-center/commit/abc1234"


def _commands(cli) -> list[str]:
    return [" ".join(a[1:3]) if a[1] != "versions" else "versions list" for a in cli.argvs()]


def test_deploy_releases_the_new_version_and_records_the_previous_one(shopify_cli):
    shopify_cli.seed("20260801-0900-aaaaaaa", "20260814-0930-def5678")
    s = shopify_cli.settings("staging")

    result = shopify.deploy(s, "20260821-1400-abc1234", "staging abc1234 by ci", COMMIT)

    assert result.version == "20260821-1400-abc1234"
    assert result.previous == "20260814-0930-def5678"
    assert result.url.startswith("https://dev.shopify.com/dashboard/4242/apps/777001/versions/")
    assert not result.reused
    assert shopify_cli.active() == "20260821-1400-abc1234"
    newest = shopify_cli.versions()[0]
    assert newest["message"] == "staging abc1234 by ci" and newest["sourceControlUrl"] == COMMIT
    # versions (to learn the undo target), deploy, versions (to confirm it is live)
    assert _commands(shopify_cli) == ["versions list", "deploy --config", "versions list"]
    deploy_call = shopify_cli.calls()[1]
    assert deploy_call["argv"] == ["app", "deploy", "--config", "staging", "--path", str(s.app_dir),
                                   "--allow-updates", "--version", "20260821-1400-abc1234",
                                   "--message", "staging abc1234 by ci", "--source-control-url", COMMIT,
                                   "--no-color"]
    assert deploy_call["cwd"] == str(s.app_dir)
    assert deploy_call["ci"] == "1" and deploy_call["stdin_tty"] is False


def test_undo_re_releases_the_previously_active_version(shopify_cli):
    shopify_cli.seed("r1", "r2")
    s = shopify_cli.settings("staging")
    result = shopify.deploy(s, "r3")
    assert shopify_cli.active() == "r3"

    back = shopify.undo(s, result)

    assert back.version == "r2" and back.previous == "r3"
    assert shopify_cli.active() == "r2"
    release_calls = [c["argv"] for c in shopify_cli.calls() if c["argv"][1] == "release"]
    assert release_calls == [["app", "release", "--config", "staging", "--path", str(s.app_dir),
                              "--version", "r2", "--allow-updates", "--no-color"]]


def test_first_deploy_has_nothing_to_undo(shopify_cli):
    s = shopify_cli.settings("staging")
    result = shopify.deploy(s, "r1")
    assert result.previous is None
    with pytest.raises(ShopifyFailed, match="first released version"):
        shopify.undo(s, result)
    assert shopify_cli.active() == "r1"


def test_versions_lists_newest_first_with_the_active_one(shopify_cli):
    shopify_cli.seed("r1", "r2", "r3", active="r2")
    got = shopify.versions(shopify_cli.settings("production"))
    assert [(v.version_tag, v.status) for v in got] == [("r3", "inactive"), ("r2", "active"), ("r1", "inactive")]
    assert shopify.active_version(got).version_tag == "r2"
    assert shopify.previous_version(got).version_tag == "r1"
    assert shopify_cli.argvs()[-1][:6] == ["app", "versions", "list", "--config", "production", "--path"]


def test_rollback_without_a_version_releases_the_one_before_the_active(shopify_cli):
    shopify_cli.seed("r1", "r2", "r3")
    back = shopify.rollback(shopify_cli.settings("staging"))
    assert (back.version, back.previous) == ("r2", "r3")
    assert shopify_cli.active() == "r2"


def test_release_of_an_unknown_tag_is_refused_by_the_cli_and_changes_nothing(shopify_cli):
    shopify_cli.seed("r1")
    with pytest.raises(ShopifyFailed) as e:
        shopify.release(shopify_cli.settings("staging"), "nope")
    assert "Version not found for tag: nope" in e.value.message
    assert "Dev Dashboard" in e.value.hint and "by tag" in e.value.hint
    assert shopify_cli.active() == "r1"


# ---------------------------------------------------------------- the CLI lists only the newest 20

TAGS = [f"v{i:02d}" for i in range(1, 26)]     # 25 versions, v01 oldest


def test_versions_list_returns_only_the_newest_20_like_the_real_cli(shopify_cli):
    shopify_cli.deploy_versions(TAGS)
    listed = shopify.versions(shopify_cli.settings("staging"))
    assert [v.version_tag for v in listed] == TAGS[::-1][:20]
    assert len(shopify_cli.versions()) == 25 and shopify.active_version(listed).version_tag == "v25"


def test_release_and_rollback_by_tag_reach_versions_older_than_the_newest_20(shopify_cli):
    shopify_cli.deploy_versions(TAGS)
    s = shopify_cli.settings("staging")

    res = shopify.release(s, "v03")
    assert shopify_cli.active() == "v03"
    assert res.previous == "v25"
    assert "older than the newest 20" in res.note and "exit status" in res.note

    back = shopify.rollback(s, "v02")
    assert shopify_cli.active() == "v02" and back.note
    assert back.previous is None, "the active v03 was not in the list: unknown, not guessed"

    again = shopify.release(s, "v25")            # listed: confirmed by the list, no note
    assert shopify_cli.active() == "v25" and again.note == ""


def test_rollback_without_a_version_when_the_active_one_is_not_listed_says_to_pass_one(shopify_cli):
    shopify_cli.deploy_versions(TAGS)
    s = shopify_cli.settings("staging")
    shopify.release(s, "v01")
    with pytest.raises(ShopifyFailed) as e:
        shopify.rollback(s)
    assert "older than the newest 20" in e.value.message and "--version=<tag>" in e.value.hint
    assert shopify_cli.active() == "v01"


def test_rerun_with_the_version_already_live_changes_nothing(shopify_cli):
    shopify_cli.seed("r1", "r2")
    s = shopify_cli.settings("staging")
    result = shopify.deploy(s, "r2")
    assert result.reused and result.previous == "r1"
    assert [a[1] for a in shopify_cli.argvs()] == ["versions"]


def test_resumed_run_releases_the_version_a_failed_deploy_created(shopify_cli):
    shopify_cli.seed("r1")
    s = shopify_cli.settings("staging")
    shopify_cli.fail_next("deploy", "after_create", message="Network timeout while releasing")
    with pytest.raises(ShopifyFailed) as e:
        shopify.deploy(s, "r2")
    assert "Network timeout while releasing" in e.value.message
    assert [v["versionTag"] for v in shopify_cli.versions()] == ["r2", "r1"]
    assert shopify_cli.active() == "r1"

    result = shopify.deploy(s, "r2")

    assert result.reused and result.previous == "r1"
    assert shopify_cli.active() == "r2"
    assert [a[1] for a in shopify_cli.argvs()].count("deploy") == 1


@pytest.mark.parametrize(
    "mode, message_part",
    [
        pytest.param("error", "failed (exit 1)", id="exit-1-nothing-created"),
        pytest.param("after_create", "failed (exit 1)", id="exit-1-after-creating-a-version"),
        pytest.param("not_released", "New version created, but not released.", id="exit-0-not-released"),
        pytest.param("garbage", "unexpected output", id="exit-0-unexpected-output"),
    ],
)
def test_failed_deploy_raises_with_the_cli_lines_and_leaves_the_old_version_live(shopify_cli, mode, message_part):
    shopify_cli.seed("r1", "r2")
    shopify_cli.fail_next("deploy", mode, message="Extension checkout-ui failed validation")
    with pytest.raises(ShopifyFailed) as e:
        shopify.deploy(shopify_cli.settings("staging"), "r3")
    err = e.value
    assert message_part in err.message
    assert "shopify app deploy --config staging" in err.message
    if mode != "garbage":
        assert "Extension checkout-ui failed validation" in err.message
    assert err.hint
    assert shopify_cli.active() == "r2"


def test_deploy_that_went_live_but_exited_non_zero_is_put_back(shopify_cli):
    shopify_cli.seed("r1", "r2")
    shopify_cli.fail_next("deploy", "after_release", message="Failed to update app identifiers")
    with pytest.raises(ShopifyFailed) as e:
        shopify.deploy(shopify_cli.settings("staging"), "r3")
    assert "r3 had gone live anyway; r2 was released again" in e.value.message
    assert shopify_cli.active() == "r2"


def test_release_refused_by_shopify_with_exit_0_is_a_failure(shopify_cli):
    shopify_cli.seed("r1", "r2")
    shopify_cli.fail_next("release", "user_error", message="This version is being reviewed.")
    with pytest.raises(ShopifyFailed) as e:
        shopify.release(shopify_cli.settings("staging"), "r1")
    assert "did not release the version" in e.value.message
    assert "This version is being reviewed." in e.value.message
    assert shopify_cli.active() == "r2"


def test_versions_list_failure_and_garbage_are_clear_errors(shopify_cli):
    s = shopify_cli.settings("staging")
    shopify_cli.fail_next("versions list", "error", message="Invalid API Key: 0000staging")
    with pytest.raises(ShopifyFailed, match="Invalid API Key"):
        shopify.versions(s)
    shopify_cli.fail_next("versions list", "garbage")
    with pytest.raises(ShopifyFailed, match="printed no JSON list"):
        shopify.versions(s)


def test_refused_token_error_says_to_renew_it(shopify_cli):
    s = shopify_cli.settings("staging")
    with pytest.raises(ShopifyFailed) as e:
        shopify.versions(s, environ={"SHOPIFY_APP_AUTOMATION_TOKEN": "an-expired-token-value"})
    assert "can't be used for the App Management API" in e.value.message
    assert "SHOPIFY_APP_AUTOMATION_TOKEN was refused" in e.value.hint and "Dev Dashboard" in e.value.hint
    assert "an-expired-token-value" not in str(e.value)


def test_token_never_appears_in_argv_results_errors_or_the_record(shopify_cli):
    token = shopify_cli.token
    shopify_cli.seed("r1")
    s = shopify_cli.settings("staging")
    result = shopify.deploy(s, "r2", "message mentioning nothing secret", COMMIT)
    back = shopify.undo(s, result)
    shopify_cli.fail_next("deploy", "leak_token")
    with pytest.raises(ShopifyFailed) as e:
        shopify.deploy(s, "r3")

    assert "Request failed with token ***" in e.value.message
    seen = [json.dumps(shopify_cli.calls()), repr(result), repr(back), str(e.value), e.value.hint or "",
            result.command, result.info, back.command]
    for text in seen:
        assert token not in text
    # the CLI did get it, in the environment, under both names it reads
    assert all(c["auth_env"] == ["SHOPIFY_APP_AUTOMATION_TOKEN", "SHOPIFY_CLI_PARTNERS_TOKEN"]
               for c in shopify_cli.calls())
    assert redact(token) == "***"


def test_custom_token_variable_reaches_the_cli_as_the_automation_token(shopify_cli):
    s = shopify_cli.settings("production", shopify={"token_var": "OCC_PRODUCTION_SHOPIFY_TOKEN"})
    got = shopify.versions(s, environ={"OCC_PRODUCTION_SHOPIFY_TOKEN": shopify_cli.token})
    assert got == []
    assert shopify_cli.calls()[-1]["auth_env"] == ["SHOPIFY_APP_AUTOMATION_TOKEN", "SHOPIFY_CLI_PARTNERS_TOKEN"]


def test_missing_token_fails_before_running_the_cli(shopify_cli):
    with pytest.raises(SettingsError) as e:
        shopify.deploy(shopify_cli.settings("staging"), "r1", environ={})
    assert "SHOPIFY_APP_AUTOMATION_TOKEN is not set" in e.value.message
    assert "1, 3 or 6 months" in e.value.hint
    assert shopify_cli.calls() == []


def test_environment_without_shopify_config_is_refused_and_runs_nothing(shopify_cli):
    s = shopify_cli.settings("staging", shopify={"config": ""})
    assert "no Shopify app config for 'staging'" in shopify.skip_reason(s)
    with pytest.raises(SettingsError, match="not configured"):
        shopify.deploy(s, "r1")
    assert shopify_cli.calls() == []


def test_check_names_the_missing_config_file(shopify_cli):
    s = shopify_cli.settings("dev")
    with pytest.raises(SettingsError) as e:
        shopify.check(s)
    assert "shopify.app.dev.toml" in e.value.message and "config link" in e.value.hint
    shopify.check(shopify_cli.settings("staging"))


@pytest.mark.parametrize("line, says", [
    ('client_id = ""', "client_id is empty"),
    ('client_id = "   "', "client_id is empty"),
    ("", "client_id is missing"),
    ("client_id = 42", "client_id is not a string"),
], ids=["template's empty value", "blank", "missing", "not a string"])
def test_check_refuses_an_app_config_without_client_id(shopify_cli, line, says):
    f = shopify_cli.app_dir / "shopify.app.staging.toml"
    f.write_text(f'{line}\nname = "occ-staging"\napplication_url = "https://staging.example.test"\n')
    with pytest.raises(SettingsError) as e:
        shopify.check(shopify_cli.settings("staging"))
    assert str(f) in e.value.message and says in e.value.message
    assert "Client ID" in e.value.hint and "shopify app config link --config staging" in e.value.hint
    assert shopify_cli.calls() == []


def test_check_names_an_app_config_that_is_not_toml(shopify_cli):
    f = shopify_cli.app_dir / "shopify.app.staging.toml"
    f.write_text('client_id = "abc\n')
    with pytest.raises(SettingsError, match="cannot be read as TOML"):
        shopify.check(shopify_cli.settings("staging"))


def test_missing_cli_is_tool_missing(shopify_cli):
    s = shopify_cli.settings("staging", shopify={"cli": "shopify-not-installed-here"})
    with pytest.raises(ToolMissing, match="shopify-not-installed-here"):
        shopify.check(s)


def test_stand_in_rejects_flags_the_real_cli_does_not_have(shopify_cli):
    from deploy import proc

    r = proc.run(["shopify", "app", "deploy", "--config", "staging", "--bogus"], cwd=shopify_cli.app_dir, input="")
    assert r.returncode == 2 and "Nonexistent flag: --bogus" in r.stderr
    r = proc.run(["shopify", "app", "deploy", "--config", "staging", "--version", "r9"],
                 cwd=shopify_cli.app_dir, input="", env={"CI": "1"})
    assert r.returncode == 1 and "Flag not specified:" in r.stderr
    assert os.environ["PATH"].startswith(str(shopify_cli.bin_dir))


def test_invoke_shopify_release_reaches_the_3rd_oldest_of_25_versions(stage):
    # shopify.release is promotion-grade: it takes the staging hosts' lock, so it runs against real hosts.
    shopify_cli = stage.shopify
    shopify_cli.deploy_versions(TAGS)
    r = stage.project.invoke("shopify.release", "--env=staging", "--version=v03")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 0, out
    assert shopify_cli.active() == "v03"
    assert "staging: app version v03 live (was v25)" in out
    assert "older than the newest 20" in out, "the output says how the release was confirmed"
    release = [c for c in shopify_cli.calls() if c["argv"][1] == "release"]
    assert [c["argv"][c["argv"].index("--version") + 1] for c in release] == ["v03"]
    led = stage.project.ledger()
    run = led.runs("staging", flow="shopify.release")[0]
    assert [(s.name, s.status) for s in led.steps(run.id)] == [("lock", "done"), ("release", "done")]
    assert led.lock("staging") is None


def test_deploy_from_a_checkout_reads_that_folders_config(shopify_cli, tmp_path):
    checkout = tmp_path / "src" / "abc1234"
    checkout.mkdir(parents=True)
    (checkout / "shopify.app.staging.toml").write_text('client_id = "from-the-commit"\n')
    s = shopify_cli.settings("staging")
    result = shopify.deploy(s, "r1", path=checkout)
    assert shopify_cli.active() == "r1" and result.version == "r1"
    calls = shopify_cli.calls()
    assert all(c["cwd"] == str(checkout) for c in calls)
    deploy_argv = next(c["argv"] for c in calls if c["argv"][1] == "deploy")
    assert deploy_argv[deploy_argv.index("--path") + 1] == str(checkout)
    assert shopify_cli.versions()[0]["config"] == 'client_id = "from-the-commit"\n'


def test_prepare_installs_the_checkouts_dependencies_once(shopify_cli, tmp_path):
    # A file: dependency installs without a registry: a real npm install, offline.
    ext = tmp_path / "vendor-ext"
    ext.mkdir()
    (ext / "package.json").write_text(json.dumps({"name": "vendor-ext", "version": "1.0.0"}))
    app = tmp_path / "checkout"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"name": "app", "version": "1.0.0", "private": True,
                                                  "dependencies": {"vendor-ext": f"file:{ext}"}}))
    s = shopify_cli.settings("staging")
    with pytest.raises(ShopifyFailed, match="no lockfile"):   # the build's rule: only from a lockfile
        shopify.prepare(s, app)
    import subprocess

    subprocess.run(["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"], cwd=app, check=True,
                   capture_output=True, timeout=120)
    assert shopify.prepare(s, app).summary == "installed dependencies (npm ci --no-audit --no-fund)"
    assert (app / "node_modules" / "vendor-ext" / "package.json").exists()
    assert shopify.prepare(s, app).summary == "dependencies already installed"


def test_prepare_without_dependencies_installs_nothing(shopify_cli, tmp_path):
    (tmp_path / "package.json").write_text(json.dumps({"name": "app", "scripts": {"build": "x"}}))
    assert shopify.prepare(shopify_cli.settings("staging"), tmp_path).summary == "no dependencies to install"
    assert not (tmp_path / "node_modules").exists()


# ---------------------------------------------------------------- one install: the build's

NPM_SHIM = """#!/bin/sh
# Logs each npm command and whether NPM_TOKEN reached it (never its value), then runs npm.
echo "$1 NPM_TOKEN=${NPM_TOKEN:+set}" >> '%s'
exec '%s' "$@"
"""


@pytest.fixture
def deps_promotion(project, shopify_cli, tmp_path):
    """The example project with two npm dependencies (one dev), a Shopify config on the local
    environment, NPM_TOKEN named in app.build_env, and an `npm` on PATH that logs its
    commands: run(extra_toml) promotes to local; (result, npm log lines)."""
    import shutil

    from deploy.testing.depsapp import add_deps

    add_deps(project.root / "examples/app")
    log = tmp_path / "npm.log"
    shim = tmp_path / "npm-shim"
    shim.mkdir()
    (shim / "npm").write_text(NPM_SHIM % (log, shutil.which("npm")))
    (shim / "npm").chmod(0o755)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "NPM_TOKEN": "npm-token-private-registry-x9"}

    def run(extra_toml: str = ""):
        local = project.root / "env/local.toml"
        text = local.read_text().replace('config = ""', 'config = "staging"', 1)
        local.write_text(text.replace("[app]\n", '[app]\nbuild_env = ["NPM_TOKEN"]\n' + extra_toml, 1))
        project.commit("the app has npm dependencies and a Shopify config")
        # The matrix reads local's Shopify token from its dotenv files (as env.check does), not
        # from the process: the git-ignored env/local.local.env, written after the commit.
        (project.root / "env/local.local.env").write_text(f"SHOPIFY_APP_AUTOMATION_TOKEN={shopify_cli.token}\n")
        r = project.invoke("promote", "--to=local", extra_env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r, log.read_text().splitlines()

    return run


def _shopify_step(project):
    ledger = project.ledger()
    return {s.name: s for s in ledger.steps(ledger.runs("local")[0].id)}["shopify"]


def test_a_promotion_installs_once_and_the_shopify_step_links_the_builds_full_install(deps_promotion, project):
    r, npm = deps_promotion()
    assert [ln for ln in npm if ln.startswith("ci ")] == ["ci NPM_TOKEN=set"]    # the build's, only
    assert "dependency cache" in _shopify_step(project).result
    (src,) = (project.root / ".deploy/src").glob(f"{project.head}-*")   # the build's checkout
    app = src / "examples/app"
    dev = app / "node_modules/devtool/index.js"                # the CLI builds with dev dependencies
    cached = list((project.root / ".deploy/cache/deps").glob("*/full/node_modules/devtool/index.js"))
    assert len(cached) == 1 and dev.stat().st_ino == cached[0].stat().st_ino
    assert "npm-token-private-registry-x9" not in r.stdout + r.stderr


def test_without_the_cache_the_shopify_step_runs_the_builds_install_in_the_builds_environment(
        deps_promotion, project):
    _, npm = deps_promotion("deps_cache = false\n")
    # The build's install, then the same one for the Shopify CLI: both see app.build_env's NPM_TOKEN.
    assert [ln for ln in npm if ln.startswith("ci ")] == ["ci NPM_TOKEN=set", "ci NPM_TOKEN=set"]
    assert _shopify_step(project).result.endswith("installed dependencies (npm ci --no-audit --no-fund)")
    (src,) = (project.root / ".deploy/src").glob(f"{project.head}-*")   # the build's checkout
    assert (src / "examples/app/node_modules/devtool/index.js").is_file()
