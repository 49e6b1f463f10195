"""Every module under deploy/ (the test starters in deploy/testing/ aside) stays under 700 lines
and opens with a docstring that says its one job (STYLE.md 20): a module that grows a second
job becomes a package of small modules, the way build/, backups/ and scaffold/ are."""

import ast
from pathlib import Path

import pytest

from test_layers import import_graph

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 700
MIN_WORDS = 5   # "`invoke status`: one table ..." is the shortest that still names a job

# Modules other work is still splitting, with the reason; each is left out of the check until it
# is under the limit (the test below fails once it is, so the entry is removed then). Empty since
# deploy/config.py became the package deploy/config/.
KNOWN_OVER: dict[str, str] = {}


def offenders(package: Path, root: Path, *, limit: int = LIMIT) -> list[str]:
    """`path: N lines` for every module of `package` (its testing/ folder and symlinks aside) at
    or over `limit` lines, and `path: no docstring saying its job` for one that does not open with
    a docstring of at least MIN_WORDS words; sorted by path."""
    out = []
    for p in sorted(package.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink() or "testing" in p.relative_to(package).parts[:-1] or "__pycache__" in p.parts:
            continue
        text = p.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines >= limit:
            out.append(f"{rel}: {lines} lines")
        doc = ast.get_docstring(ast.parse(text, filename=rel)) or ""
        if len(doc.split("\n\n")[0].split()) < MIN_WORDS:
            out.append(f"{rel}: no docstring saying its job")
    return out


def test_every_deploy_module_is_under_the_limit_and_says_its_job():
    found = [o for o in offenders(ROOT / "deploy", ROOT) if o.split(":")[0] not in KNOWN_OVER]
    assert not found, (
        f"{len(found)} module(s) of deploy/ break the rule (under {LIMIT} lines, a docstring naming the one job):\n  "
        + "\n  ".join(found) + "\nSplit a long module into a package of one job per module (see deploy/backups/).")


def test_a_module_left_out_of_the_check_is_still_over_the_limit():
    """An entry of KNOWN_OVER is removed once its module is split (or gone), so the check covers it again."""
    done = [path for path in sorted(KNOWN_OVER)
            if not (ROOT / path).is_file() or len((ROOT / path).read_text().splitlines()) < LIMIT]
    assert not done, f"{done} now under {LIMIT} lines (or gone): remove them from KNOWN_OVER in {Path(__file__).name}"


@pytest.mark.parametrize("files,expected", [
    ({"a.py": '"""Reads the thing and says what it found."""\n'}, []),
    ({"a.py": '"""Reads the thing and says what it found."""\n' + "x = 1\n" * 9},
     ["deploy/a.py: 10 lines"]),
    ({"b.py": "x = 1\n"}, ["deploy/b.py: no docstring saying its job"]),
    ({"c.py": '"""Tools."""\n'}, ["deploy/c.py: no docstring saying its job"]),
    ({"pkg/__init__.py": "", "pkg/m.py": '"""One job, said in a sentence here."""\n'},
     ["deploy/pkg/__init__.py: no docstring saying its job"]),
    ({"testing/fixture.py": "x = 1\n" * 20, "ok.py": '"""One job, said in a sentence here."""\n'}, []),
    ({"z.py": "x = 1\n" * 12, "y.py": "# comment first\n"},
     ["deploy/y.py: no docstring saying its job", "deploy/z.py: 12 lines", "deploy/z.py: no docstring saying its job"]),
], ids=["short-module-with-its-job", "long-module-named-with-its-line-count", "no-docstring",
        "a-docstring-too-short-to-say-a-job", "a-package-doorway-counts-too", "testing-starters-are-left-out",
        "every-offender-listed-in-path-order"])
def test_the_check_names_each_offender_by_path_and_line_count(tmp_path, files, expected):
    package = tmp_path / "deploy"
    for rel, text in files.items():
        (package / rel).parent.mkdir(parents=True, exist_ok=True)
        (package / rel).write_text(text)
    assert offenders(package, tmp_path, limit=10) == expected


# ----------------------------------------------------------------------------- the layers drawn in docs/architecture.md

# Highest first; a module belongs to the first layer one of whose prefixes it starts with, and
# to "primitives" when none matches (places, artifact, data, governance, the ledger and facts).
LAYERS = [
    ("edge", ("tasks", "deploy.tasks", "deploy.cli")),
    ("flows", ("deploy.flows",)),
    ("engine", ("deploy.engine", "deploy.services")),
    ("seam", ("deploy.targets",)),
    ("primitives", ()),
    ("base", ("deploy.config", "deploy.errors", "deploy.proc", "deploy.redact", "deploy.private", "deploy.parallel",
              "deploy.clock", "deploy.display", "deploy.liveness", "deploy.dburl", "deploy.rollout", "deploy.startup",
              "deploy.deferred")),
]


def layer_of(module: str) -> int:
    """The rank of `module` in LAYERS (0 is the top); the package `deploy` itself is base."""
    if module == "deploy":
        return len(LAYERS) - 1
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return [name for name, _ in LAYERS].index("primitives")


def upward(graph: dict[str, set[str]]) -> list[str]:
    """`a (layer) imports b (layer)` for every import of a module in a higher layer."""
    return sorted(f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
                  for a, bs in graph.items() if not a.startswith("deploy.testing")
                  for b in bs if layer_of(b) < layer_of(a))


def test_no_module_imports_a_layer_above_its_own():
    """The drawing in docs/architecture.md ("Layers and folders"), checked: edge, flows, engine,
    seam, primitives, base; each imports only the layers below it (or its own)."""
    found = upward(import_graph())
    assert not found, "imports against the layers of docs/architecture.md:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("graph,expected", [
    ({"deploy.flows.promote": {"deploy.engine", "deploy.targets", "deploy.build", "deploy.config"}}, []),
    ({"deploy.build": {"deploy.flows.steps"}}, ["deploy.build (primitives) imports deploy.flows.steps (flows)"]),
    ({"deploy.config": {"deploy.hosts"}}, ["deploy.config (base) imports deploy.hosts (primitives)"]),
    ({"deploy.hosts": {"deploy.targets.tree"}}, ["deploy.hosts (primitives) imports deploy.targets.tree (seam)"]),
    ({"deploy.engine": {"deploy.cli"}}, ["deploy.engine (engine) imports deploy.cli (edge)"]),
    ({"deploy.testing.stage": {"deploy.cli"}}, []),
], ids=["flows-import-everything-below", "a-primitive-importing-a-step", "base-importing-a-primitive",
        "a-place-importing-the-seam", "the-engine-importing-the-edge", "test-starters-stand-above-all"])
def test_the_layer_check_names_each_upward_import(graph, expected):
    assert upward(graph) == expected
