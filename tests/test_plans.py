"""Plans as data (pyinfra's tests/operations): what a promotion would do, per setting, read
from the plan alone. No real parts: the settings are the project's own env/ files, the
plan is built and inspected, nothing runs."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest

from deploy import config, hosts, shopify
from deploy.build import build_key
from deploy.engine import Plan, Step
from deploy.flows import promote

ROOT = Path(__file__).resolve().parents[1]
SHA = "0123456789abcdef0123456789abcdef01234567"
RID = "20260101000000-0123456"


def settings(name: str, **sections) -> config.Settings:
    s = config.load(name, ROOT)
    return dataclasses.replace(s, **{k: dataclasses.replace(getattr(s, k), **v) for k, v in sections.items()})


def plan_of(s) -> Plan:
    return promote.plan(s, sha=SHA, release_id=RID, environ={})


def names(plan: Plan) -> list[str]:
    return [st.name for st in plan.steps]


def skipped(plan: Plan) -> dict[str, str]:
    return {st.name: st.skip for st in plan.steps if st.skip}


def test_staging_promotion_steps_in_order():
    assert names(plan_of(settings("staging"))) == [
        "preflight", "lock", "gate", "build", "backup", "migrate", "release", "shopify", "smoke", "watch", "record"]


def test_production_adds_approvals_and_golive_before_the_gate():
    staging, production = names(plan_of(settings("staging"))), names(plan_of(settings("production")))
    assert [n for n in production if n not in staging] == ["approvals", "golive"]
    assert production.index("golive") < production.index("gate") < production.index("build")


@pytest.mark.parametrize("sections, expected", [
    ({"database": {"provider": "none"}}, {"backup": "no database for this environment",
                                          "migrate": "no database for this environment"}),
    ({"database": {"backup": False}}, {"backup": "database.backup = false in staging.toml"}),
    ({"shopify": {"config": ""}}, {"shopify": shopify.skip_reason(settings("staging", shopify={"config": ""}))}),
    ({"watch": {"window_seconds": 0}}, {"watch": "watch.window_seconds = 0"}),
], ids=["no-database", "no-backup", "no-shopify-config", "watch-0"])
def test_settings_that_skip_steps(sections, expected):
    assert expected[next(iter(expected))], "the skip reason must say why"
    assert skipped(plan_of(settings("staging", **sections))) == expected


def test_undo_order_is_the_reverse_of_the_changing_steps():
    p = plan_of(settings("staging"))
    undone = [st.name for st in reversed(p.steps) if st.undo is not None and not st.skip]
    assert undone == ["record", "shopify", "release", "migrate", "lock"]


def test_plan_operations_return_new_plans_and_name_a_missing_step():
    p = plan_of(settings("staging"))
    before = names(p)
    gate = p.step("gate")
    q = p.skip("gate", "passed when it shipped")
    assert q.step("gate").skip == "passed when it shipped" and q.step("gate").run is gate.run
    assert p.step("gate").skip is None and names(p) == before
    r = p.replace("smoke", Step("smoke", "other"))
    assert r.step("smoke").does == "other" and p.step("smoke").does != "other"
    assert names(p.without("smoke")) == [n for n in before if n != "smoke"]
    with pytest.raises(ValueError, match="has no step 'nope' .*preflight, lock, gate"):
        p.replace("nope", Step("nope", "x"))


@pytest.fixture
def staging_with_checkout(tmp_path):
    """A staging project whose commit's checkout was extracted by an earlier run: two
    migrations in it, two hosts in the settings."""
    app = tmp_path / "app"
    (app).mkdir()
    (app / "package.json").write_text('{"name": "a", "scripts": {"build": "true", "start": "node server.js"}}')
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    s = settings("staging", hosts={"hosts": ("deploy@h1.internal", "deploy@h2.internal:2202")},
                 database={"url": ""})
    src = tmp_path / ".deploy" / "src" / build_key(SHA, "app", s.app).name   # the checkout of this build
    for m in ("20250101000000_init", "20250301000000_shop_tier"):
        d = src / "app" / "prisma/postgres/migrations" / m
        d.mkdir(parents=True)
        (d / "migration.sql").write_text("SELECT 1;\n")
    (src / "app" / "prisma/postgres/migrations/migration_lock.toml").write_text('provider = "postgresql"\n')
    (src / "app" / "package.json").write_text((app / "package.json").read_text())
    (src / ".complete").write_text(SHA)
    return dataclasses.replace(s, root=tmp_path, environment=dataclasses.replace(s.environment, app_dir="app"))


def test_dry_run_shows_the_commands_per_host_and_the_migration_files(staging_with_checkout):
    s = staging_with_checkout
    p = plan_of(s)
    text = p.commands()
    targets = hosts.targets(s.hosts, s.app)
    assert [t.name for t in targets] == ["deploy@h1.internal:22", "deploy@h2.internal:2202"]
    for t in targets:
        per_host = [line for line in text.splitlines() if line.startswith(f"  [{t.name}] ")]
        cmds = [line.split("] ", 1)[1] for line in per_host]
        assert hosts.switch_command(t, RID) in cmds
        assert hosts.supervise_command(t, "restart", s.app.port_var, t.app_port,
                                       ["sh", "-c", "node server.js"]) in " ".join(cmds)
        assert any(c.startswith(hosts.unpack_command(t, RID, "<artifact sha256>", f"{t.deploy_to}/.uploads/{RID}.tar.gz",
                                                     "<current release>", s.hosts.shared_files)) for c in cmds)
    migrate = dict(p.touches())["migrate"]
    assert [m.what.split(" ")[0] for m in migrate] == [
        "prisma/postgres/migrations/20250101000000_init/migration.sql",
        "prisma/postgres/migrations/20250301000000_shop_tier/migration.sql"]
    assert all("the database was not read" in m.what for m in migrate)  # no URL here: said, not guessed
    shop = [t.what for t in dict(p.touches())["shopify"]]
    app = s.root / ".deploy/src" / build_key(SHA, "app", s.app).name / "app"
    assert shop[-1] == shlex.join(shopify.deploy_argv(s.shopify, RID, f"occ-deploy {RID} ({SHA[:12]})", "", path=app))
    build = [t.what for t in dict(p.touches())["build"]]
    assert "npm run build" in build or any(c.endswith("run build") for c in build)


def test_dry_run_without_a_checkout_says_the_migrations_are_read_at_run_time():
    migrate = dict(plan_of(settings("staging")).touches())["migrate"]
    assert len(migrate) == 1 and "read at run time" in migrate[0].what


def test_a_step_that_cannot_say_what_it_would_touch_does_not_stop_the_dry_run():
    s = settings("staging", hosts={"hosts": ("deploy@h1.internal", "not a host!")})
    touches = dict(plan_of(s).touches())
    assert [t.where for t in touches["release"]] == ["-"] and "hosts.hosts[1]" in touches["release"][0].what
    assert [t.where for t in touches["shopify"]] == ["shopify", "shopify"]  # the other steps still say theirs


# ----------------------------------------------------------------------------- rollback

@pytest.fixture
def two_releases(tmp_path):
    """A SQLite ledger where staging promoted A (Shopify v-a), then B (v-b, live)."""
    from deploy.ledger import Ledger

    led = Ledger.open(tmp_path)
    for rid, version in (("20260101000000-aaaaaaa", "v-a"), ("20260102000000-bbbbbbb", "v-b")):
        led.record_release(env="staging", release_id=rid, sha=rid[-1] * 40, artifact_sha256=None, run_id=None,
                           shopify_version=version)
    yield led
    led.close()


def rollback_plan(led, s=None, **kw) -> Plan:
    from deploy.flows import rollback

    args = {"to": None, "db": "keep", "skip_shopify": False, **kw}
    return rollback.plan(s or settings("staging"), led, environ={}, **args)


def test_rollback_steps_mirror_promotes_changing_steps_and_go_back_to_the_previous_release(two_releases):
    p = rollback_plan(two_releases)
    assert names(p) == ["check", "release", "shopify", "database", "smoke", "record"]
    assert p.release_id == "20260101000000-aaaaaaa" and dict(p.header)["from"] == "20260102000000-bbbbbbb"
    shown = p.commands()
    for host in settings("staging").hosts.hosts:
        assert f"[{host}:22] test -d /srv/occ/releases/20260101000000-aaaaaaa && ln -sfn" in shown, host
    assert "shopify app release --config staging --version v-a " in shown   # A's version, not the live v-b


@pytest.mark.parametrize("kw, sections, expected", [
    ({}, {}, {"database": "--db=keep: the database stays as it is (schema changes are backward compatible)"}),
    ({"db": "down", "skip_shopify": True}, {}, {"shopify": "--skip-shopify given"}),
    ({"db": "restore"}, {"database": {"provider": "none"}}, {"database": "no database for this environment"}),
], ids=["keep", "down-skip-shopify", "no-database"])
def test_rollback_settings_and_flags_that_skip_steps(two_releases, kw, sections, expected):
    assert skipped(rollback_plan(two_releases, settings("staging", **sections), **kw)) == expected


def test_rollback_plan_refuses_an_unknown_db_mode_and_a_missing_target(two_releases, tmp_path):
    from deploy.errors import DeployError, SettingsError
    from deploy.ledger import Ledger

    with pytest.raises(SettingsError, match="'drop' is not one of keep, down, restore"):
        rollback_plan(two_releases, db="drop")
    empty = Ledger.open(tmp_path / "empty")
    try:
        with pytest.raises(DeployError, match="no earlier release") as e:
            rollback_plan(empty, settings("staging", hosts={"hosts": ()}))
        assert "--to=RELEASE" in e.value.hint
    finally:
        empty.close()


def test_dry_run_shows_the_backups_pg_dump_argv_with_the_database_settings():
    from deploy import backups

    s = settings("staging", database={"bin_dir": "/opt/pg16/bin", "lock_timeout": 7.5})
    (touch,) = dict(plan_of(s).touches())["backup"]
    argv = shlex.split(touch.what.split(" (then prune")[0])
    assert argv[0] == "/opt/pg16/bin/pg_dump" and "--lock-wait-timeout=7500ms" in argv
    out = Path(argv[4].removeprefix("--file="))
    assert argv == backups.pg_dump_argv("/opt/pg16/bin/pg_dump", "<exported snapshot>", out, argv[-1].removeprefix("--dbname="), 7.5)
    assert out.parent == s.path(s.database.backup_dir) / "staging" and out.name.endswith(f"-{SHA[:7]}.dump")
    assert "$DIRECT_URL" in argv[-1] and "PGPASSWORD" in argv[-1]
    assert f"newest {s.database.backup_keep})" in touch.what
