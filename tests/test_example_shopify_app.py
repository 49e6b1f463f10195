"""The React Router Shopify example (examples/shopify-app), for real: its pinned
dependencies install, its Vitest and Playwright suites run and the toolkit's evidence
parsers count what they ran, the toolkit's migrations create its Prisma `Session` table
(SQLite and Postgres), and the built, pruned app serves "/" and reads sessions."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import migrations
from deploy.config import GateSection, LighthouseThresholds
from deploy.evidence import collect, gate, parse_playwright, parse_report, parse_vitest
from deploy.testing.shopify_app import CHROMIUM, SHOPIFY_APP, copy_shopify_app, http_get, node_env, npm, serve
from deploy.testing.stage import free_port

SQLITE_MIGRATIONS = "prisma/migrations"
PG_MIGRATIONS = "prisma/postgres/migrations"
SHA = "5d41402abc4b2a76b9719d911017c592ae7c1e3f"


def run_vitest(app: Path, out: Path, *files: str, **env: str) -> dict:
    """`npx vitest run --reporter=json --outputFile=out` in `app`; the report, whatever the exit."""
    npm(app, "npx", "vitest", "run", "--reporter=json", f"--outputFile={out}", *files,
        env=node_env(**env), check=False)
    assert out.is_file(), f"vitest wrote no {out}"
    return json.loads(out.read_text())


# ---------------------------------------------------------------- the lockfile

def test_the_lockfile_pins_every_package_the_app_declares_to_one_exact_version():
    pkg = json.loads((SHOPIFY_APP / "package.json").read_text())
    lock = json.loads((SHOPIFY_APP / "package-lock.json").read_text())
    declared = {**pkg["dependencies"], **pkg["devDependencies"]}
    assert pkg["scripts"]["build"] == "react-router build"
    assert pkg["scripts"]["start"] == "react-router-serve ./build/server/index.js"
    for name, version in declared.items():
        assert version[0].isdigit(), f"{name} {version} is a range, not a pin"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    # One react-router for the app, the server and the build plugin: a second copy would
    # give the server a different router context than the app.
    copies = [k for k in lock["packages"] if k.endswith("node_modules/react-router")]
    assert copies == ["node_modules/react-router"]


def test_the_committed_sample_evidence_is_intact_and_opens_a_gate_that_does_not_bind_to_the_commit():
    policy = GateSection(bind_to_sha=False, max_age_hours=0,
                         lighthouse=LighthouseThresholds(performance=0.8, accessibility=0.9))
    verdict = gate(policy, None, SHOPIFY_APP / "evidence", datetime.now(timezone.utc))
    assert verdict.ok, verdict.reasons
    assert {r.kind for r in verdict.rows} >= {"vitest", "playwright", "lighthouse"}
    counts = parse_vitest((SHOPIFY_APP / "evidence" / "vitest.json").read_bytes(), "vitest.json").counts
    assert counts.total == counts.passed >= 30          # run with a Postgres: nothing skipped


# ---------------------------------------------------------------- Vitest, parsed as evidence

@pytest.mark.slow
def test_vitest_runs_for_real_and_the_evidence_parser_counts_every_test_it_ran(shopify_app_installed, pg_url,
                                                                               tmp_path):
    out = tmp_path / "vitest.json"
    raw = run_vitest(shopify_app_installed, out, TEST_POSTGRES_URL=pg_url)
    results = [a for f in raw["testResults"] for a in f["assertionResults"]]
    titles = {a["fullName"]: a["status"] for a in results}

    report = parse_vitest(out.read_bytes(), "vitest.json")
    # With a Postgres to test against, nothing is skipped: every test in the suite ran and passed.
    assert report.counts.total == len(results) == raw["numTotalTests"] >= 30
    assert report.counts.passed == report.counts.total
    assert (report.counts.failed, report.counts.skipped, report.counts.errors) == (0, 0, 0)
    assert raw["success"] is True and len(raw["testResults"]) == 2
    assert titles["Postgres session storage (pg, a real server) stores, finds, updates and deletes sessions"] == "passed"
    assert titles["SQLite session storage (sql.js, a real database file) keeps every write when requests write "
                  "at the same time"] == "passed"
    assert parse_report(out.read_bytes(), "x").kind == "vitest"


@pytest.mark.slow
def test_without_a_postgres_the_postgres_tests_are_reported_skipped(shopify_app_installed, tmp_path):
    out = tmp_path / "vitest.json"
    run_vitest(shopify_app_installed, out, "test/sessions.test.js")
    counts = parse_vitest(out.read_bytes(), "vitest.json").counts
    assert counts.skipped == 2 and counts.failed == 0 and counts.passed == counts.total - 2


@pytest.mark.slow
def test_a_broken_app_module_is_a_failed_count_the_gate_sees(shopify_app_installed, tmp_path):
    # A copy whose session storage lost a column: the real suite must catch it.
    app = copy_shopify_app(tmp_path / "app")
    (app / "node_modules").symlink_to(shopify_app_installed / "node_modules")
    src = app / "app" / "sessions.server.js"
    src.write_text(src.read_text().replace('"lastName", "email"', '"lastName"'))
    out = tmp_path / "vitest.json"
    raw = run_vitest(app, out)
    report = parse_vitest(out.read_bytes(), "vitest.json")
    assert raw["success"] is False
    assert report.counts.failed >= 2
    assert any("create the same Session columns" in f for f in report.failures)
    verdict = _gate(tmp_path, ("vitest",), out)
    assert not verdict.ok and any("failed" in r for r in verdict.reasons)


def _gate(tmp_path: Path, required: tuple[str, ...], *files: Path):
    folder = tmp_path / "evidence"
    now = datetime.now(timezone.utc)
    collect(SHA, files, out=folder / "manifest.json", now=now)
    return gate(GateSection(required=required, max_age_hours=1), SHA, folder, now)


# ---------------------------------------------------------------- Playwright in Debian's Chromium

@pytest.mark.slow
def test_playwright_runs_the_built_app_in_chromium_and_the_gate_opens_on_both_reports(shopify_app_installed, pg_url,
                                                                                      tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium (Debian), or set CHROMIUM_PATH, to run the Playwright suite")
    app = shopify_app_installed
    npm(app, "run", "build")
    pw = tmp_path / "playwright.json"
    p = npm(app, "npx", "playwright", "test", "--reporter=json", check=False,
            env=node_env(PLAYWRIGHT_JSON_OUTPUT_NAME=str(pw), E2E_PORT=str(free_port()), CHROMIUM_PATH=CHROMIUM))
    assert pw.is_file(), p.stdout[-2000:] + p.stderr[-2000:]
    report = parse_playwright(pw.read_bytes(), "playwright.json")
    assert report.counts.total == report.counts.passed == 3, (report.counts, report.failures, report.errors)
    assert report.tool_version == "1.65.1"

    vt = tmp_path / "vitest.json"
    run_vitest(app, vt, TEST_POSTGRES_URL=pg_url)
    verdict = _gate(tmp_path, ("vitest", "playwright"), vt, pw)
    assert verdict.ok, verdict.reasons


# ---------------------------------------------------------------- built, pruned, served

def _session_row(shop: str) -> dict:
    return {"id": f"offline_{shop}", "shop": shop, "state": "s1", "accessToken": "shpat_secret", "scope": "write_products"}


def _columns(row: dict) -> str:
    return ", ".join(f'"{c}"' for c in row)


@pytest.mark.slow
def test_the_pruned_build_serves_the_landing_page_and_reads_sessions_from_sqlite_migrated_by_the_toolkit(
        shopify_app_installed, tmp_path):
    app = copy_shopify_app(tmp_path / "app", with_node_modules=shopify_app_installed)
    npm(app, "run", "build")
    npm(app, "prune", "--omit=dev")
    assert not (app / "node_modules" / "vitest").exists() and not (app / "node_modules" / "@react-router" / "dev").exists()
    # A release needs only package.json, node_modules and build/ (and prisma/ for the deploy).
    for extra in ("app", "test", "e2e", "vite.config.js", "vitest.config.js"):
        p = app / extra
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    result = migrations.migrate(f"file:{db}", app / SQLITE_MIGRATIONS)
    assert result.applied == ("20250601120000_create_session_table",)
    with sqlite3.connect(db) as c:
        row = _session_row("alpha.myshopify.com")
        c.execute(f'INSERT INTO "Session" ({_columns(row)}) VALUES ({", ".join("?" * len(row))})', list(row.values()))

    with serve(app, f"file:{db}") as server:
        status, body = http_get(server.url + "/")
        assert status == 200 and "<h1>OCC Operator Control Center</h1>" in body
        status, body = http_get(server.url + "/app?shop=alpha.myshopify.com")
        assert status == 200 and "<td>offline_alpha.myshopify.com</td>" in body and "shpat_" not in body
        assert http_get(server.url + "/app?shop=nope")[0] == 400


@pytest.mark.slow
def test_the_server_reads_sessions_from_postgres_migrated_by_the_toolkit(shopify_app_installed, pg_url):
    import psycopg

    app = shopify_app_installed
    npm(app, "run", "build")
    result = migrations.migrate(pg_url, app / PG_MIGRATIONS)
    assert result.applied == ("20250601120000_create_session_table",)
    with psycopg.connect(pg_url) as c:
        row = _session_row("beta.myshopify.com")
        c.execute(f'INSERT INTO "Session" ({_columns(row)}) VALUES ({", ".join(["%s"] * len(row))})', list(row.values()))

    with serve(app, pg_url) as server:
        status, body = http_get(server.url + "/app?shop=beta.myshopify.com")
        assert status == 200 and "<td>offline_beta.myshopify.com</td>" in body
        status, body = http_get(server.url + "/app")
        assert status == 200 and "1<!-- --> stored sessions" in body


@pytest.mark.slow
def test_the_server_answers_500_for_a_database_the_migrations_never_ran_on(shopify_app_installed, tmp_path):
    app = shopify_app_installed
    npm(app, "run", "build")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with serve(app, f"file:{empty}") as server:
        assert http_get(server.url + "/")[0] == 200          # the landing page needs no database
        assert http_get(server.url + "/app")[0] == 500
