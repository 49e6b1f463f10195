"""Issue 21, cases 13 and 14, through the CLI (`invoke promote`) with real npm, git and
SQLite: a build is keyed by what it is built from.

13. A commit that changes only what code is generated from (the Prisma schema, wherever
    Prisma finds it, prisma.config.ts, .npmrc, a file an install script runs) gets code
    generated from it, never the previous commit's from the dependency cache.
14. Two app folders of one repository at one commit get two artifacts and two checkouts;
    each environment releases its own app's tree, and production reuses exactly the
    artifact its staging proved.

The Prisma packages are deploy/testing/genapp.py's stand-ins (Prisma's CLI downloads its
engines even for `generate`, which these machines cannot).
"""

from __future__ import annotations

import json
import sqlite3
import tarfile
import textwrap
from pathlib import Path

import pytest

from deploy.testing.genapp import gen_script, make_gen_app, schema_files


def _env_toml(app_dir: str, *, generate: str | None = None, extra_env: str = "") -> str:
    gen = f"generate = {json.dumps(generate)}\n" if generate is not None else ""
    return textwrap.dedent(f"""\
        [environment]
        kind = "local"
        app_dir = "{app_dir}"
        {extra_env}

        [app]
        health_path = "/healthz"
        {gen}
        [local]
        root = ".deploy/local"

        [database]
        provider = "sqlite"
        url = "file:./dev.sqlite"

        [gate]
        required = []

        [shopify]
        config = ""

        [smoke]
        checks = [{{ url = "/healthz" }}]
        retries = 5
        backoff = 0.2

        [watch]
        window_seconds = 1
        interval_seconds = 0.5
        """)


@pytest.fixture
def envs(project):
    """Environments this test adds; their app servers are stopped afterwards."""
    names: list[str] = []
    yield names
    for n in names:
        project.invoke("app.stop", f"--env={n}", timeout=30)


def _add_env(project, envs, name: str, app_dir: str, **kw) -> None:
    project.write_env(name, _env_toml(app_dir, **kw))
    envs.append(name)


def _promote(project, env: str):
    r = project.invoke("promote", f"--to={env}", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _builds(project, sha: str) -> list[dict]:
    """The artifact store's index entries of `sha` (one per build key)."""
    store = project.root / ".deploy/artifacts"
    out = []
    for f in sorted((store / "builds").glob(f"{sha}-*.json")):
        out.append({**json.loads(f.read_text()), "key": f.stem})
    return out


def _artifacts(project, sha: str) -> list[dict]:
    """Every stored tarball built from `sha` ({"sha256", "manifest"}), found by its own
    RELEASE.json, whatever the store's index says."""
    out = []
    for f in sorted((project.root / ".deploy/artifacts").glob("*.tar.gz")):
        manifest = json.loads(_member(project, f.name[:-len(".tar.gz")], "RELEASE.json"))
        if manifest["git_sha"] == sha:
            out.append({"sha256": f.name[:-len(".tar.gz")], "manifest": manifest})
    return out


def _member(project, sha256: str, path: str) -> str:
    with tarfile.open(project.root / ".deploy/artifacts" / f"{sha256}.tar.gz") as tar:
        return tar.extractfile(path).read().decode()


def _client(text: str) -> dict:
    return json.loads(text.removeprefix("module.exports = ").rstrip().rstrip(";"))


def _live(project, env: str) -> Path:
    return project.local_root(env) / "current"


def _cache_entries(project) -> list[Path]:
    root = project.root / ".deploy/cache/deps"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def _last_build_step(project, env: str) -> str:
    led = project.ledger()
    run = led.runs(env)[0]
    return {s.name: s.result for s in led.steps(run.id)}["build"]


# ---------------------------------------------------------------- case 13: generated code

SCHEMA_CASES = [
    pytest.param("default", None, id="schema-prisma-folder"),
    pytest.param("package-json", None, id="schema-path-from-package-json"),
    pytest.param("folder", None, id="schema-folder"),
    pytest.param("prisma-config", None, id="schema-from-prisma-config-ts"),
    # The settings say the build generates (it does not): the cache key alone must miss.
    pytest.param("default", "none", id="schema-prisma-folder-generate-none"),
    pytest.param("folder", "none", id="schema-folder-generate-none"),
]


@pytest.mark.parametrize("layout, generate", SCHEMA_CASES)
def test_a_schema_only_commit_ships_a_client_generated_from_the_new_schema(project, envs, layout, generate):
    app = make_gen_app(project.root / "apps" / f"shop-{layout}", layout=layout)
    _add_env(project, envs, "gen", f"apps/shop-{layout}", generate=generate)
    first = project.commit("a Prisma app")
    _promote(project, "gen")
    (b1,) = _artifacts(project, first)
    assert _client(_member(project, b1["sha256"], "node_modules/.prisma/client/index.js"))["schema"].count("model ") \
        == len(schema_files(app, layout))

    # Only the schema (the last of its files) and its migration change, nothing npm reads.
    target = schema_files(app, layout)[-1]
    model = f"Plan{len(layout)}"
    target.write_text(target.read_text() + f"\nmodel {model} {{\n  id String @id\n  tier Int @default(0)\n}}\n")
    mig = app / "prisma/migrations/20250201000000_add_plan"
    mig.mkdir()
    (mig / "migration.sql").write_text(f'CREATE TABLE "{model}" ("id" TEXT NOT NULL PRIMARY KEY, "tier" INTEGER '
                                       "NOT NULL DEFAULT 0);\n")
    second = project.commit("schema: add a plan table")
    _promote(project, "gen")

    want = "".join(f.read_text() for f in schema_files(app, layout))
    (b2,) = _artifacts(project, second)
    shipped = _client(_member(project, b2["sha256"], "node_modules/.prisma/client/index.js"))
    assert shipped["schema"] == want and f"model {model}" in shipped["schema"]
    live = _client((_live(project, "gen") / "node_modules/.prisma/client/index.js").read_text())
    assert live == shipped
    assert len(_cache_entries(project)) == 2     # the schema is part of the dependency cache key
    if generate is None:   # the toolkit ran the app's own `prisma generate`
        assert shipped["by"] == "prisma generate"
    # The migration was applied to the database the new client talks to.
    with sqlite3.connect(app / "prisma/dev.sqlite") as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (model,)).fetchone() == (1,)


INSTALL_CASES = [
    pytest.param(".npmrc", lambda app: (app / ".npmrc").write_text("gen-flavor=two\n"), "v1 two", id="npmrc"),
    pytest.param("scripts/gen.mjs", lambda app: (app / "scripts/gen.mjs").write_text(gen_script("v2")), "v2 one",
                 id="postinstall-script-file"),
    pytest.param("package.json", lambda app: _retarget_postinstall(app), "v3 one", id="postinstall-runs-another-script"),
]


def _retarget_postinstall(app: Path) -> None:
    """postinstall -> `npm run gen`, whose script runs tools/gen.mjs (a file of the app)."""
    (app / "tools").mkdir()
    (app / "tools/gen.mjs").write_text(gen_script("v3"))
    pkg = json.loads((app / "package.json").read_text())
    pkg["scripts"].update({"postinstall": "npm run gen", "gen": "node tools/gen.mjs"})
    (app / "package.json").write_text(json.dumps(pkg, indent=2) + "\n")


@pytest.mark.parametrize("changed, change, expected", INSTALL_CASES)
def test_code_an_install_script_generates_follows_the_files_it_is_generated_from(project, envs, changed, change,
                                                                                  expected):
    app = make_gen_app(project.root / "apps/shop")
    _add_env(project, envs, "gen", "apps/shop")
    first = project.commit("an app with a postinstall")
    _promote(project, "gen")
    (b1,) = _artifacts(project, first)
    assert _member(project, b1["sha256"], "node_modules/.gen/out.txt") == "v1 one\n"

    change(app)
    second = project.commit(f"change {changed}")
    _promote(project, "gen")
    (b2,) = _artifacts(project, second)
    assert _member(project, b2["sha256"], "node_modules/.gen/out.txt") == expected + "\n"
    assert (_live(project, "gen") / "node_modules/.gen/out.txt").read_text() == expected + "\n"
    assert len(_cache_entries(project)) == 2


def test_a_commit_that_changes_no_generated_input_still_hits_the_dependency_cache(project, envs):
    app = make_gen_app(project.root / "apps/shop")
    _add_env(project, envs, "gen", "apps/shop")
    project.commit("a Prisma app")
    _promote(project, "gen")
    (app / "server.mjs").write_text((app / "server.mjs").read_text() + "// a code change\n")
    (app / "prisma/migrations/README.md").write_text("notes, not schema\n")
    second = project.commit("code only")
    _promote(project, "gen")
    assert len(_cache_entries(project)) == 1     # the first build's install served the second
    (b2,) = _artifacts(project, second)
    # ... and the client was generated by this build, not taken from the cache.
    assert _client(_member(project, b2["sha256"], "node_modules/.prisma/client/index.js"))["by"] == "prisma generate"
    assert not list(Path(_cache_entries(project)[0], "full/node_modules").glob(".prisma"))


# ---------------------------------------------------------------- case 14: two apps, one commit

APP_PAIRS = [
    pytest.param(("apps/web", "apps/admin"), ("web", "admin"), id="sibling-folders"),
    pytest.param(("shop", "tools/shop"), ("shop", "shop"), id="same-package-name-and-folder-name"),
]


@pytest.mark.parametrize("folders, names", APP_PAIRS)
def test_two_apps_of_one_commit_get_two_builds_and_each_environment_runs_its_own(project, envs, folders, names):
    apps = []
    for folder, name, layout in zip(folders, names, ("default", "folder")):
        apps.append(make_gen_app(project.root / folder, layout=layout, name=name))
    (apps[1] / "server.mjs").write_text((apps[1] / "server.mjs").read_text() + "// the second app\n")
    for env, folder in zip(("one", "two"), folders):
        _add_env(project, envs, env, folder)
    _add_env(project, envs, "one-prod", folders[0], extra_env='requires_staging_run = true\nstaging_env = "one"')
    _add_env(project, envs, "two-prod", folders[1], extra_env='requires_staging_run = true\nstaging_env = "one"')
    sha = project.commit("two apps")

    for env in ("one", "two", "one"):
        _promote(project, env)
    builds = _builds(project, sha)
    assert sorted(b["app_folder"] for b in builds) == sorted(folders)
    assert len({b["sha256"] for b in builds}) == 2 and len({b["key"] for b in builds}) == 2
    assert "reused" in _last_build_step(project, "one")   # its own build, again
    checkouts = sorted(p.name for p in (project.root / ".deploy/src").iterdir() if p.name.startswith(sha))
    assert checkouts == sorted(b["key"] for b in builds)
    by_folder = {b["app_folder"]: b for b in builds}
    for env, folder, app in zip(("one", "two"), folders, apps):
        live = _live(project, env)
        manifest = json.loads((live / "RELEASE.json").read_text())
        assert manifest["source"]["app_folder"] == folder
        assert (live / "server.mjs").read_text() == (app / "server.mjs").read_text()
        want = "".join(f.read_text() for f in schema_files(app, "default" if app == apps[0] else "folder"))
        assert _client((live / "node_modules/.prisma/client/index.js").read_text())["schema"] == want
        assert json.loads(_member(project, by_folder[folder]["sha256"], "RELEASE.json"))["source"]["app_folder"] \
            == folder

    # Production reuses exactly the artifact its staging proved, found under the same key...
    _promote(project, "one-prod")
    assert "reused" in _last_build_step(project, "one-prod")
    assert json.loads((_live(project, "one-prod") / "RELEASE.json").read_text())["source"]["app_folder"] == folders[0]
    # ... and never another app's: "staging" here proved the first app, not this one.
    before = _live(project, "two-prod").resolve()    # (the second app's local root: env "two"'s release)
    r = project.invoke("promote", "--to=two-prod", timeout=600)
    assert r.returncode != 0
    assert "production must get exactly what staging proved" in r.stdout + r.stderr
    assert _live(project, "two-prod").resolve() == before
    assert "Traceback" not in r.stdout + r.stderr
