"""`bootstrap` on a copy of the example app with the real node, npm, SQLite and Postgres:
the first run sets everything up, the second changes nothing and says so."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # npm, node and the app seed run for real

from deploy import config
from deploy.bootstrap import (MIN_NODE, STATE_FILE, bootstrap, judge_node, parse_version, render,
                              required_node_major, seed_command)
from deploy.testing.app import copy_example_app
from deploy.testing.postgres import write_migrations

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)

# Node 20 has no SQLite module and the app has no dependencies: the seed proves it ran,
# once, against the right database, by appending the URL it was given to a file.
SEED = """\
import { appendFileSync } from "node:fs";
appendFileSync(new URL("./seed.log", import.meta.url), process.env.DATABASE_URL + "\\n");
"""


def tools_path(base: Path, *tools: str) -> str:
    """A PATH holding only `tools` (symlinks to the real ones), so nothing else installed here leaks in."""
    bin_dir = base / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for t in tools:
        real = shutil.which(t)
        assert real, f"{t} must be installed for this test"
        (bin_dir / t).symlink_to(real)
    return str(bin_dir)


def project(tmp_path: Path, *, seed: bool = True) -> tuple[Path, Path]:
    root = tmp_path / "project"
    shutil.copytree(REPO / "env", root / "env", ignore=shutil.ignore_patterns("*.local.env"))
    app = copy_example_app(root / "examples" / "app")
    for leftover in [app / ".env", *app.glob("prisma/*.sqlite"), *app.glob("prisma/*.db")]:
        leftover.unlink(missing_ok=True)
    if seed:
        (app / "prisma" / "seed.mjs").write_text(SEED)
        pkg = json.loads((app / "package.json").read_text())
        pkg["scripts"]["seed"] = "node prisma/seed.mjs"
        (app / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")
    return root, app


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statuses(report) -> dict[str, str]:
    return {a.name: a.status for a in report.actions}


@pytest.fixture
def local(tmp_path):
    root, app = project(tmp_path)
    environ = {"PATH": tools_path(tmp_path, "node", "npm", "sh")}
    return root, app, config.load("local", root), environ


def test_first_run_sets_up_the_app_and_a_second_run_changes_nothing(local):
    root, app, settings, environ = local
    first = bootstrap(root, settings, environ, NOW)
    assert statuses(first) == {"node": "unchanged", "npm": "unchanged", "shopify": "missing", ".env": "done",
                               "database": "done", "migrations": "done", "seed": "done"}, render(first)
    assert first.ok and first.changed and first.exit_code == 0
    assert "npm install -g @shopify/cli@3" in first.action("shopify").detail
    assert "applied 3: 20240105093000_init, 20240212141500_decision_log, 20240318080000_session_expiry" \
        in first.action("migrations").detail
    db = app / "prisma" / "dev.sqlite"            # DATABASE_URL=file:./dev.sqlite from env/local.env, Prisma-relative
    assert db.is_file()
    assert "DATABASE_URL=file:./dev.sqlite" in (app / ".env").read_text()
    assert (app / "prisma" / "seed.log").read_text() == "file:./dev.sqlite\n"
    assert "bootstrap done" in render(first)

    files = [app / ".env", db, root / STATE_FILE, app / "prisma" / "seed.log"]
    before = {p: (digest(p), p.stat().st_mtime_ns) for p in files}
    second = bootstrap(root, settings, environ, NOW)
    assert statuses(second) == {"node": "unchanged", "npm": "unchanged", "shopify": "missing", ".env": "unchanged",
                                "database": "unchanged", "migrations": "unchanged", "seed": "unchanged"}
    assert second.ok and not second.changed
    assert {p: (digest(p), p.stat().st_mtime_ns) for p in files} == before
    text = render(second)
    assert "nothing changed" in text and "7 unchanged" not in text and "6 unchanged, 1 missing" in text
    assert "3 applied, none pending" in second.action("migrations").detail
    assert "already seeded on 2026-11-20T09:30:00+00:00" in second.action("seed").detail


def test_shopify_cli_on_path_is_reported_with_its_version(local, tmp_path):
    root, app, settings, environ = local
    # Stand-in: oclif's --version prints the user agent (`<name>/<version> <platform>-<arch> node-<version>`).
    exe = Path(environ["PATH"]) / "shopify"
    exe.write_text("#!/bin/sh\necho '@shopify/cli/3.94.0 linux-x64 node-v20.20.2'\n")
    exe.chmod(0o755)
    report = bootstrap(root, settings, environ, NOW)
    assert report.action("shopify").status == "unchanged"
    assert report.action("shopify").detail == "Shopify CLI 3.94.0"


def test_existing_env_is_never_overwritten_and_the_environments_database_is_the_one_prepared(local):
    root, app, settings, environ = local
    mine = "# mine\nSESSION_SECRET=my-own-value\nDATABASE_URL=file:./mine.db\n"
    (app / ".env").write_text(mine)
    report = bootstrap(root, settings, environ, NOW)
    assert (app / ".env").read_text() == mine
    env_action = report.action(".env")
    assert env_action.status == "unchanged" and "not overwritten" in env_action.detail
    assert "missing NODE_ENV, PORT" in env_action.detail and "--force" in env_action.detail
    # One database per environment: env/local.toml's, the file `promote --to=local` migrates.
    assert (app / "prisma" / "dev.sqlite").is_file() and not (app / "prisma" / "mine.db").exists()
    detail = report.action("database").detail
    assert "database.url in local.toml" in detail
    assert ".env names file:./mine.db" in detail and "make it the same database" in detail


def test_database_url_of_the_environment_wins_over_the_apps_env(local):
    root, app, settings, environ = local
    (app / ".env").write_text("DATABASE_URL=file:./dev.sqlite\n")
    report = bootstrap(root, settings, environ, NOW)
    assert "names" not in report.action("database").detail      # the same file: nothing to say


def test_missing_node_and_npm_fail_the_run_and_say_how_to_install(local, tmp_path):
    root, app, settings, _ = local
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    report = bootstrap(root, settings, {"PATH": str(empty)}, NOW)
    assert not report.ok and report.exit_code == 3     # errors.EXIT_CODES[3]: a tool is not installed
    s = statuses(report)
    assert s["node"] == "missing" and s["npm"] == "missing" and s["shopify"] == "missing"
    assert "nodejs.org" in report.action("node").detail
    # What does not need node still happens, and the seed says why it could not run.
    assert s[".env"] == "done" and s["migrations"] == "done"
    assert s["seed"] == "failed" and "`npm` is not on PATH" in report.action("seed").detail
    assert "bootstrap incomplete" in render(report)


def test_failed_seed_is_retried_by_the_next_run(local):
    root, app, settings, environ = local
    seed = app / "prisma" / "seed.mjs"
    seed.write_text('console.error("seed: cannot reach the shop fixture"); process.exit(1);\n')
    report = bootstrap(root, settings, environ, NOW)
    assert report.action("seed").status == "failed" and not report.ok
    assert report.exit_code == 1      # every tool there: a step failed, not a missing tool (3)
    assert "exited 1" in report.action("seed").detail and "cannot reach the shop fixture" in report.action("seed").detail
    seed.write_text(SEED)
    again = bootstrap(root, settings, environ, NOW)
    assert statuses(again)["seed"] == "done" and statuses(again)["migrations"] == "unchanged"
    assert again.ok


def test_a_recreated_database_is_migrated_and_seeded_again(local):
    root, app, settings, environ = local
    bootstrap(root, settings, environ, NOW)
    (app / "prisma" / "dev.sqlite").unlink()
    report = bootstrap(root, settings, environ, NOW)
    s = statuses(report)
    assert (s["database"], s["migrations"], s["seed"]) == ("done", "done", "done")
    assert (app / "prisma" / "seed.log").read_text().count("\n") == 2


def test_app_without_a_seed_script_says_so(tmp_path):
    root, app = project(tmp_path, seed=False)
    report = bootstrap(root, config.load("local", root), {"PATH": tools_path(tmp_path, "node", "npm", "sh")}, NOW)
    assert report.ok and report.action("seed").status == "unchanged"
    assert "no seed script" in report.action("seed").detail


# ---------------------------------------------------------------- Postgres when DATABASE_URL says so

def postgres_app(app: Path) -> None:
    shutil.rmtree(app / "prisma" / "migrations")
    write_migrations(app, {
        "20240105093000_init": 'CREATE TABLE "Shop" ("id" TEXT NOT NULL, "domain" TEXT NOT NULL, '
                               'CONSTRAINT "Shop_pkey" PRIMARY KEY ("id"));\n',
        "20240212141500_decision_log": 'CREATE TABLE "decision_log" ("id" SERIAL NOT NULL, "status" TEXT NOT NULL, '
                                       '"created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, '
                                       'CONSTRAINT "decision_log_pkey" PRIMARY KEY ("id"));\n',
    }, provider="postgresql")


@pytest.mark.postgres
def test_postgres_database_is_created_migrated_and_left_alone_on_the_second_run(local, pg_cluster):
    root, app, settings, environ = local
    postgres_app(app)
    url = pg_cluster.url_for(f"occ_dev_{os.getpid()}_{id(app) % 10000}")
    env = environ | {"DATABASE_URL": url}
    first = bootstrap(root, settings, env, NOW)
    s = statuses(first)
    assert (s["database"], s["migrations"], s["seed"]) == ("done", "done", "done"), render(first)
    assert "created Postgres database" in first.action("database").detail
    assert "DATABASE_URL from the environment" in first.action("database").detail
    assert pg_cluster.password not in render(first)
    dbname = url.rsplit("/", 1)[1]
    assert pg_cluster.execute('SELECT count(*) FROM "_prisma_migrations" WHERE finished_at IS NOT NULL', dbname) == [(2,)]
    assert (app / "prisma" / "seed.log").read_text() == url + "\n"     # the seed got the real URL
    second = bootstrap(root, settings, env, NOW)
    assert not second.changed and second.ok, render(second)
    assert statuses(second)["database"] == "unchanged"


@pytest.mark.postgres
def test_postgres_url_with_the_apps_sqlite_migrations_fails_with_prismas_reason(local, pg_url):
    root, app, settings, environ = local
    report = bootstrap(root, settings, environ | {"DATABASE_URL": pg_url}, NOW)
    assert report.action("database").status == "unchanged"
    mig = report.action("migrations")
    assert mig.status == "failed" and "written for 'sqlite'" in mig.detail and "P3019" in mig.detail
    assert report.action("seed").status == "failed" and not report.ok


def test_unreachable_postgres_is_a_failed_step_with_the_password_masked(local):
    root, app, settings, environ = local
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        report = bootstrap(root, settings, environ | {"DATABASE_URL": f"postgresql://dev:pw-4417@127.0.0.1:{port}/occ"},
                           NOW)
    db = report.action("database")
    assert db.status == "failed" and f"postgresql://dev:***@127.0.0.1:{port}/occ" in db.detail
    assert statuses(report)["migrations"] == "failed" and not report.ok
    assert "pw-4417" not in render(report)


# ---------------------------------------------------------------- pure parts

@pytest.mark.parametrize("output, required, status", [
    ("v20.20.2\n", 20, "unchanged"),
    ("v22.1.0\n", 20, "unchanged"),
    ("v18.19.1\n", 20, "failed"),
    ("v20.11.0\n", 22, "failed"),
    ("command not found", 20, "failed"),
], ids=["20", "22", "18-too-old", "engines-asks-22", "garbage"])
def test_judge_node(output, required, status):
    assert judge_node(output, required).status == status


@pytest.mark.parametrize("package, expected", [
    ({}, MIN_NODE), ({"engines": {"node": ">=20"}}, 20), ({"engines": {"node": "^22.3"}}, 22),
    ({"engines": {"node": ">=18"}}, MIN_NODE), ({"engines": {"node": "lts"}}, MIN_NODE),
])
def test_required_node_major(package, expected):
    assert required_node_major(package) == expected


@pytest.mark.parametrize("package, expected", [
    ({"scripts": {"seed": "node seed.mjs"}}, ["npm", "run", "seed"]),
    ({"prisma": {"seed": "node prisma/seed.js --count 'ten shops'"}}, ["node", "prisma/seed.js", "--count", "ten shops"]),
    ({"scripts": {"dev": "node server.mjs"}}, None),
    ({"prisma": {"seed": "  "}}, None),
])
def test_seed_command(package, expected):
    assert seed_command(package) == expected


@pytest.mark.parametrize("text, expected", [
    ("@shopify/cli/3.94.0 linux-x64 node-v20.20.2", (3, 94, 0)),
    ("10.8.2\n", (10, 8, 2)),
    ("v20.20", (20, 20)),
    ("nothing", None),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected
