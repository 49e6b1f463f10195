"""What a build is keyed by, as data (issue 21, cases 13 and 14): which inputs change the
dependency cache key and the build key, which do not, and when a build runs `prisma
generate`. No npm runs here: the keys read files, never node_modules."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deploy import build as b
from deploy.build import artifact
from deploy.config import AppSection
from deploy.errors import SettingsError

SHA = "0123456789abcdef0123456789abcdef01234567"
TOOLS = {"node": "v20.0.0", "npm": "10.0.0"}
SCHEMA = 'datasource db {\n  provider = "postgresql"\n}\n\nmodel Session {\n  id String @id\n}\n'


def _write(app: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = app / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _pkg(**extra) -> str:
    pkg = {"name": "shop", "version": "1.0.0", "scripts": {"build": "react-router build", "start": "node s.js"},
           "dependencies": {"@prisma/client": "6.16.0"}, "devDependencies": {"prisma": "6.16.0"}, **extra}
    return json.dumps(pkg, indent=2)


def _set_scripts(**scripts):
    def change(app: Path) -> None:
        pkg = json.loads((app / "package.json").read_text())
        pkg["scripts"].update(scripts)
        (app / "package.json").write_text(json.dumps(pkg))
    return change


def _key(app: Path) -> str:
    return b.deps_key(app, b.recipe(app), TOOLS)


BASE = {"package.json": _pkg(), "package-lock.json": '{"lockfileVersion": 3}\n', "prisma/schema.prisma": SCHEMA,
        "app/routes/index.jsx": "export default () => null;\n", "README.md": "shop\n"}

# (id, files on top of BASE, the change, whether the dependency cache key must change)
KEY_CASES = [
    ("schema-default-edited", {}, lambda a: _write(a, {"prisma/schema.prisma": SCHEMA + "model Plan {\n id Int @id\n}\n"}),
     True),
    ("schema-at-root", {"schema.prisma": SCHEMA}, lambda a: _write(a, {"schema.prisma": SCHEMA + "// v2\n"}), True),
    ("schema-folder-file-edited", {"prisma/schema/shop.prisma": "model Shop {\n id Int @id\n}\n"},
     lambda a: _write(a, {"prisma/schema/shop.prisma": "model Shop {\n id String @id\n}\n"}), True),
    ("schema-folder-file-added", {"prisma/schema/shop.prisma": "model Shop {\n id Int @id\n}\n"},
     lambda a: _write(a, {"prisma/schema/plan.prisma": "model Plan {\n id Int @id\n}\n"}), True),
    ("schema-path-from-package-json", {"package.json": _pkg(prisma={"schema": "db/app.prisma"}), "db/app.prisma": SCHEMA},
     lambda a: _write(a, {"db/app.prisma": SCHEMA + "// v2\n"}), True),
    ("schema-folder-from-package-json", {"package.json": _pkg(prisma={"schema": "db"}), "db/a.prisma": SCHEMA},
     lambda a: _write(a, {"db/b.prisma": "model B {\n id Int @id\n}\n"}), True),
    ("schema-path-from-prisma-config-ts",
     {"prisma.config.ts": 'export default defineConfig({ schema: "database/main.prisma" });\n',
      "database/main.prisma": SCHEMA}, lambda a: _write(a, {"database/main.prisma": SCHEMA + "// v2\n"}), True),
    ("schema-path-from-dot-config", {".config/prisma.ts": "export default { schema: 'x/s.prisma' };\n",
                                     "x/s.prisma": SCHEMA}, lambda a: _write(a, {"x/s.prisma": SCHEMA + "// v2\n"}), True),
    ("schema-named-by-an-expression",
     {"prisma.config.ts": 'export default defineConfig({ schema: path.join("db", "s.prisma") });\n',
      "db/s.prisma": SCHEMA}, lambda a: _write(a, {"db/s.prisma": SCHEMA + "// v2\n"}), True),
    ("prisma-config-edited", {"prisma.config.ts": 'export default defineConfig({ schema: "prisma/schema.prisma" });\n'},
     lambda a: _write(a, {"prisma.config.ts": 'export default defineConfig({ schema: "prisma/schema.prisma", '
                                              'migrations: { seed: "tsx seed.ts" } });\n'}), True),
    ("npmrc-edited", {".npmrc": "engine-strict=true\n"}, lambda a: _write(a, {".npmrc": "engine-strict=false\n"}), True),
    ("postinstall-script-text", {}, _set_scripts(postinstall="node scripts/gen.mjs"), True),
    ("postinstall-script-file", {"package.json": _pkg(scripts={"postinstall": "node scripts/gen.mjs"}),
                                 "scripts/gen.mjs": "// v1\n"}, lambda a: _write(a, {"scripts/gen.mjs": "// v2\n"}), True),
    ("postinstall-flag-value-file", {"package.json": _pkg(scripts={"postinstall": "gen --config=gen/config.json"}),
                                     "gen/config.json": "{}"}, lambda a: _write(a, {"gen/config.json": '{"a": 1}'}), True),
    ("prepare-script-folder", {"package.json": _pkg(scripts={"prepare": "node tools/prepare"}),
                               "tools/prepare/index.js": "// v1\n"},
     lambda a: _write(a, {"tools/prepare/index.js": "// v2\n"}), True),
    ("postinstall-runs-another-script", {"package.json": _pkg(scripts={"postinstall": "npm run gen",
                                                                        "gen": "node gen.js"}), "gen.js": "// v1\n"},
     lambda a: _write(a, {"gen.js": "// v2\n"}), True),
    ("postinstall-other-script-text", {"package.json": _pkg(scripts={"postinstall": "npm run gen", "gen": "node a.js"})},
     _set_scripts(gen="node b.js"), True),
    # Not inputs of the install: a hit must stay a hit.
    ("app-source-edited", {}, lambda a: _write(a, {"app/routes/index.jsx": "export default () => 1;\n"}), False),
    ("migration-added", {}, lambda a: _write(a, {"prisma/migrations/20250101000000_x/migration.sql": "SELECT 1;\n"}),
     False),
    ("readme-edited", {}, lambda a: _write(a, {"README.md": "shop v2\n"}), False),
    ("build-script-changed", {}, _set_scripts(build="prisma generate && react-router build"), False),
    ("file-the-build-names-edited", {"package.json": _pkg(scripts={"build": "node scripts/build.mjs"}),
                                     "scripts/build.mjs": "// v1\n"}, lambda a: _write(a, {"scripts/build.mjs": "// 2"}),
     False),
    ("node-modules-written", {}, lambda a: _write(a, {"node_modules/.prisma/client/index.js": "stale\n",
                                                      "node_modules/x/index.js": "y\n"}), False),
    ("postinstall-names-node-modules", {"package.json": _pkg(scripts={"postinstall": "node node_modules/x/i.js"})},
     lambda a: _write(a, {"node_modules/x/i.js": "// changed\n"}), False),
]


@pytest.mark.parametrize("files, change, changes", [pytest.param(f, c, x, id=i) for i, f, c, x in KEY_CASES])
def test_the_dependency_cache_key_covers_what_code_is_generated_from_at_install(tmp_path, files, change, changes):
    app = tmp_path / "app"
    _write(app, {**BASE, **files})
    before = _key(app)
    assert _key(app) == before   # stable
    change(app)
    assert (_key(app) != before) is changes


# ---------------------------------------------------------------- build keys (case 14)

BUILD_FIELD_CHANGES = [
    ("install", ("npm", "install")), ("build", ("npm", "run", "build:prod")), ("generate", "none"),
    ("prune", "none"), ("include", ("build", "package.json")), ("build_env", ("SENTRY_RELEASE",)),
]
RUN_FIELD_CHANGES = [
    ("start", ("node", "server.js")), ("port", 8080), ("port_var", "APP_PORT"), ("health_path", "/healthz"),
    ("ready_timeout", 5.0), ("runtime_env", ("X",)), ("build_timeout", 60.0), ("keep_builds", 9),
    ("deps_cache", False),
]


@pytest.mark.parametrize("field, value", [pytest.param(f, v, id=f) for f, v in BUILD_FIELD_CHANGES])
def test_a_build_contract_change_is_another_build(field, value):
    one = b.build_key(SHA, "apps/web", AppSection())
    two = b.build_key(SHA, "apps/web", dataclasses.replace(AppSection(), **{field: value}))
    assert one.name != two.name and one.name.startswith(SHA + "-")


@pytest.mark.parametrize("field, value", [pytest.param(f, v, id=f) for f, v in RUN_FIELD_CHANGES])
def test_how_the_release_runs_does_not_change_its_build(field, value):
    assert b.build_key(SHA, "apps/web", AppSection()) == \
        b.build_key(SHA, "apps/web", dataclasses.replace(AppSection(), **{field: value}))


@pytest.mark.parametrize("one, two", [
    ("apps/web", "apps/admin"), (".", "admin"), ("shop", "shop/admin"), ("a-b", "a/b"),
], ids=["siblings", "root-and-subfolder", "nested", "dash-vs-slash"])
def test_two_app_folders_of_one_commit_are_two_builds(one, two):
    assert b.build_key(SHA, one).name != b.build_key(SHA, two).name


def test_a_build_key_is_the_same_for_the_same_folder_written_differently():
    assert b.build_key(SHA, "apps/web/") == b.build_key(SHA, "apps/./web") == b.build_key(SHA, "apps/web")


def test_an_index_of_another_build_is_not_found_under_this_key(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.txt").write_text("web")
    store = tmp_path / "store"
    store.mkdir()
    web, admin = b.build_key(SHA, "apps/web"), b.build_key(SHA, "apps/admin")
    art = b.pack(out, store, git_sha=SHA, built_at="2024-03-01T00:00:00Z", release_id="r1",
                 source={"app_folder": web.app_folder, "contract": web.contract})
    artifact.write_index(store, art, web)
    assert b.find(store, web) == art and b.find(store, admin) is None
    # An index copied under another key's name is refused: it names the build it belongs to.
    (store / "builds" / f"{admin.name}.json").write_text((store / "builds" / f"{web.name}.json").read_text())
    assert b.find(store, admin) is None
    assert b.read_manifest(art)["source"] == {"app_folder": "apps/web", "contract": web.contract}


# ---------------------------------------------------------------- prisma generate in the recipe (case 13)

GEN = ("node_modules/.bin/prisma", "generate")
NPM_CI = ("npm", "ci", "--no-audit", "--no-fund")
PRUNE = ("npm", "prune", "--omit=dev", "--no-audit", "--no-fund")
BUILD = ("npm", "run", "build")

# (id, package.json changes, files, contract, expected commands, expected generated)
RECIPE_CASES = [
    ("prisma-app", {}, {}, AppSection(), [NPM_CI, GEN, BUILD, PRUNE], (".prisma",)),
    ("build-script-generates", {"scripts": {"build": "prisma generate && react-router build"}}, {}, AppSection(),
     [NPM_CI, BUILD, PRUNE], (".prisma",)),
    ("build-runs-a-script-that-generates", {"scripts": {"build": "npm run setup && react-router build",
                                                        "setup": "prisma generate && prisma migrate deploy"}},
     {}, AppSection(), [NPM_CI, BUILD, PRUNE], (".prisma",)),
    ("prebuild-generates", {"scripts": {"build": "vite build", "prebuild": "npx prisma generate"}}, {}, AppSection(),
     [NPM_CI, BUILD, PRUNE], (".prisma",)),
    ("custom-build-argv-generates", {}, {}, AppSection(build=("sh", "-c", "prisma generate --no-hints && vite build")),
     [NPM_CI, ("sh", "-c", "prisma generate --no-hints && vite build"), PRUNE], (".prisma",)),
    ("postinstall-generates", {"scripts": {"build": "vite build", "postinstall": "prisma generate"}}, {}, AppSection(),
     [NPM_CI, BUILD, PRUNE], ()),
    ("generate-none", {}, {}, AppSection(generate="none"), [NPM_CI, BUILD, PRUNE], ()),
    ("generate-argv", {}, {}, AppSection(generate=("npx", "prisma", "generate", "--no-hints")),
     [NPM_CI, ("npx", "prisma", "generate", "--no-hints"), BUILD, PRUNE], (".prisma",)),
    ("generate-argv-not-prisma", {}, {}, AppSection(generate=("node", "codegen.mjs")),
     [NPM_CI, ("node", "codegen.mjs"), BUILD, PRUNE], ()),
    ("no-schema", {}, {"prisma/schema.prisma": None}, AppSection(), [NPM_CI, BUILD, PRUNE], ()),
    ("schema-but-no-prisma-package", {"dependencies": {"react": "18.3.1"}, "devDependencies": {"vite": "6.0.0"}},
     {}, AppSection(), [NPM_CI, BUILD, PRUNE], ()),
    ("schema-folder-only", {}, {"prisma/schema.prisma": None, "prisma/schema/a.prisma": SCHEMA}, AppSection(),
     [NPM_CI, GEN, BUILD, PRUNE], (".prisma",)),
]


@pytest.mark.parametrize("pkg, files, contract, commands, generated",
                         [pytest.param(*c[1:], id=c[0]) for c in RECIPE_CASES])
def test_a_prisma_apps_build_generates_its_client_unless_the_build_already_does(tmp_path, pkg, files, contract,
                                                                                 commands, generated):
    app = tmp_path / "app"
    base = json.loads(_pkg())
    for k, v in pkg.items():
        base[k] = {**base[k], **v} if k == "scripts" else v
    _write(app, {**BASE, "package.json": json.dumps(base), **{k: v for k, v in files.items() if v is not None}})
    for k, v in files.items():
        if v is None:
            (app / k).unlink()
    r = b.recipe(app, contract)
    assert [tuple(c) for c in r.commands] == commands
    assert r.generated == generated


def test_prisma_client_without_the_prisma_cli_and_nothing_generating_is_refused_naming_the_setting(tmp_path):
    app = tmp_path / "app"
    pkg = json.loads(_pkg())
    del pkg["devDependencies"]
    _write(app, {**BASE, "package.json": json.dumps(pkg)})
    with pytest.raises(SettingsError) as e:
        b.recipe(app)
    assert "@prisma/client but not on prisma" in str(e.value) and "[app] generate" in e.value.hint
