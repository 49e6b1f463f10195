"""The layers of docs/architecture.md, read from the source with ast: data flows down.

tasks.py -> deploy/cli.py -> deploy/flows/ -> deploy/engine/, deploy/<primitive>.
Only the task-facing code imports deploy/cli; no primitive imports a flow.
"""

import ast
from pathlib import Path

import pytest

from deploy.testing.project import all_tasks

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TASK_FACING = {"tasks.py", "deploy/cli.py", "deploy/tasks.py"}   # deploy/tasks.py: a link to tasks.py


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function: `deploy.cli` for
    `import deploy.cli`, `from deploy.cli import x` and `from deploy import cli`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def modules():
    return sorted(p for p in DEPLOY.rglob("*.py") if not p.is_symlink())


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_imported_modules_sees_every_spelling(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import deploy.cli\nfrom deploy import cli, ledger\ndef f():\n    from deploy.cli import out\n")
    assert {"deploy.cli", "deploy.ledger"} <= imported_modules(f)
    f.write_text("from deploy import config\n")
    assert "deploy.cli" not in imported_modules(f)


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_only_task_facing_code_imports_the_cli_or_the_tasks(path):
    # deploy/testing/ stands above the task layer: its helpers drive the tasks as a user does.
    if rel(path) in TASK_FACING or rel(path).startswith("deploy/testing/"):
        return
    up = imported_modules(path) & {"deploy.cli", "deploy.tasks", "tasks"}
    assert not up, (
        f"{rel(path)} imports {sorted(up)}: take the settings, ledger, terminal and environment "
        "from the Services argument (deploy/services.py), and anything else the task layer has as an argument")


@pytest.mark.parametrize("path", [p for p in modules() if p.parent == DEPLOY or p.parent.name in ("evidence", "migrations", "envs", "engine", "ledger")],
                         ids=rel)
def test_no_primitive_imports_a_flow(path):
    if rel(path) in TASK_FACING:
        return
    flows = {m for m in imported_modules(path) if m == "deploy.flows" or m.startswith("deploy.flows.")}
    assert not flows, f"{rel(path)} (a primitive) imports {sorted(flows)}: flows sit above primitives"


# ----------------------------------------------------------------------------- no import loops, visible or hidden

LAZY_ALLOWED = {"deploy/cli.py", "tasks.py", "deploy/tasks.py"}   # the CLI edge may defer any import


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str], module: str | None = None, *,
                    typing_too: bool = False) -> list[tuple[str, bool, int]]:
    """(module, inside a function?, line) for every import that runs (with `typing_too`, the
    ones under `if TYPE_CHECKING:` as well). A name is resolved to the deepest module of
    `known` it names (`from deploy import hosts` -> deploy.hosts; `from deploy.hosts import x`
    -> deploy.hosts)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not typing_too:
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, in_function, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.append((full if full in known else base, in_function, node.lineno))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def deferred_names(path: Path) -> list[str]:
    """Every "deploy.<module>:<name>" string `path` holds: code it names to import later
    (deploy/deferred.py's `later`, `resolve`, the release targets' TARGETS)."""
    from deploy.deferred import REF

    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and REF.match(n.value)]


def all_deferred_names() -> list[str]:
    return sorted({ref for p in modules() if not rel(p).startswith("deploy/testing/") for ref in deferred_names(p)})


def exported_names(path: Path) -> dict[str, list[str]]:
    """module -> the names a package's `exports(__name__, {...})` table (deploy/deferred.py) takes
    from it: re-exports loaded when first used, imports of the package all the same."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: dict[str, list[str]] = {}
    for n in ast.walk(tree):
        name = n.func.id if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) else (
            n.func.attr if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) else "")
        if isinstance(n, ast.Call) and name == "exports" and len(n.args) == 2 and isinstance(n.args[1], ast.Dict):
            for key, value in zip(n.args[1].keys, n.args[1].values):
                assert isinstance(key, ast.Constant) and isinstance(value, (ast.Tuple, ast.List)), ast.unparse(n)
                found.setdefault(key.value, []).extend(e.value for e in value.elts if isinstance(e, ast.Constant))
    return found


def import_graph() -> dict[str, set[str]]:
    """deploy module -> the deploy modules it imports: at the top, in a function, or for the type
    checker only (a type-only loop still ties two modules together: name the type lower down),
    or by a deferred name ("deploy.x:f", deploy/deferred.py: loaded later, a dependency all the same)
    or a package's deferred re-export (`exports`)."""
    paths = [p for p in modules()] + [ROOT / "tasks.py"]
    known = {module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for p in paths:
        named = {ref.partition(":")[0] for ref in deferred_names(p)} | set(exported_names(p))
        graph[module_name(p)] = ({m for m, _, _ in runtime_imports(p, known, typing_too=True) if m in known}
                                 | (named & known)) - {module_name(p)}
    return graph


def test_a_deferred_name_counts_as_an_import_for_the_layers_and_loops(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('from deploy.engine import later\nrun = later("deploy.flows.steps.work.build:build", 1)\n'
                 'not_one = "deploy.hosts: a sentence"\nnor = "hosts:skipping"\n')
    assert deferred_names(f) == ["deploy.flows.steps.work.build:build"]
    graph = import_graph()
    assert "deploy.flows.steps.work.gates" in graph["deploy.flows.steps._gates"]
    assert "deploy.targets.tree" in graph["deploy.targets"]


def test_a_packages_deferred_re_exports_count_as_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('from deploy import deferred\n__getattr__, __dir__ = deferred.exports(__name__, {\n'
                 '    "deploy.hosts._lock": ("acquire_lock",), "deploy.hosts._views": ["check", "releases"]})\n'
                 'from deploy.deferred import exports\nexports(__name__, {"deploy.hosts._app": ("hook_env",)})\n')
    assert exported_names(f) == {"deploy.hosts._lock": ["acquire_lock"], "deploy.hosts._views": ["check", "releases"],
                                 "deploy.hosts._app": ["hook_env"]}
    graph = import_graph()
    assert {"deploy.backups.store", "deploy.build.packing", "deploy.migrations._runner"} <= (
        graph["deploy.backups"] | graph["deploy.build"] | graph["deploy.migrations"])


def lazy_packages() -> list[Path]:
    return [p for p in modules() if p.name == "__init__.py" and exported_names(p)]


@pytest.mark.parametrize("path", lazy_packages(), ids=rel)
def test_a_lazy_package_types_exactly_the_names_it_exports(path):
    """What mypy sees (the `if TYPE_CHECKING:` imports) is what the package gives at run time (the
    `exports` table): the same names from the same modules, and every name of `__all__` among them."""
    tree = ast.parse(path.read_text())
    typed: dict[str, list[str]] = {}
    for n in tree.body:
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for imp in n.body:
                if isinstance(imp, ast.ImportFrom) and imp.module and imp.module.startswith("deploy."):
                    typed.setdefault(imp.module, []).extend(a.name for a in imp.names)
    table = exported_names(path)
    assert {m: sorted(v) for m, v in typed.items()} == {m: sorted(v) for m, v in table.items()}
    import importlib

    pkg = importlib.import_module(module_name(path))
    given = {n for names in table.values() for n in names}
    assert set(pkg.__all__) - given - set(vars(pkg)) == set(), f"{rel(path)}: __all__ names what it does not export"
    assert set(dir(pkg)) >= given
    assert [n for n in sorted(given) if not hasattr(pkg, n)] == [], f"{rel(path)} exports a name its module lacks"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    return out


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
], ids=["a-chain-has-none", "two-modules-import-each-other", "a-three-module-loop-and-a-tail", "two-loops"])
def test_the_cycle_finder_sees_every_loop_and_nothing_else(graph, expected):
    assert sorted(cycles(graph)) == expected


def test_runtime_imports_see_function_level_relative_and_skip_type_checking(tmp_path):
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deploy import build\n"
           "from . import _ssh\nfrom deploy import config\ndef f():\n    from deploy.smoke import probe\n")
    g = tmp_path / "m.py"
    g.write_text(src)
    known = {"deploy.hosts._ssh", "deploy.config", "deploy.smoke", "deploy.build"}
    found = runtime_imports(g, known, module="deploy.hosts._probe")
    assert {(m, inner) for m, inner, _ in found} >= {
        ("deploy.smoke", True), ("deploy.config", False), ("deploy.hosts._ssh", False)}
    assert not any(m == "deploy.build" for m, _, _ in found)   # for the type checker only
    assert ("deploy.build", False) in {(m, inner) for m, inner, _ in
                                       runtime_imports(g, known, module="deploy.hosts._probe", typing_too=True)}


def test_no_import_cycle_among_deploy_modules():
    """A loop of imports, at the top or hidden in a function, means two modules share a thing
    that belongs a layer below both: move it there (STYLE.md 21)."""
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("path", modules(), ids=rel)
def test_no_function_level_import_of_the_toolkit_or_a_light_library(path):
    import sys

    from deploy import LAZY_LIBRARIES

    if rel(path) in LAZY_ALLOWED:
        return
    known = {module_name(p) for p in modules()}
    hidden = []
    for m, inner, line in runtime_imports(path, known):
        top = m.split(".")[0]
        if inner and (top == "deploy" or (top not in sys.stdlib_module_names and top not in LAZY_LIBRARIES)):
            hidden.append(f"line {line}: {m}")
    assert not hidden, (
        f"{rel(path)} imports inside a function {hidden}: import it at the top; if that makes a loop, move the "
        "shared thing down a layer. Only the heavy libraries in deploy.LAZY_LIBRARIES may be imported late.")


def test_a_flow_runs_on_services_a_test_builds_without_the_cli(tmp_path, monkeypatch):
    import io
    import json

    from deploy.flows import lock
    from deploy.services import Services, Terminal

    monkeypatch.setenv("DEPLOY_LEDGER_URL", f"sqlite:///{tmp_path}/not-this-one.db")   # the Services' environ wins
    out = io.StringIO()
    lock.status(Services(root=tmp_path, environ={}, term=Terminal(out)), None, as_json=True)
    assert json.loads(out.getvalue())["locks"] == []
    assert (tmp_path / ".deploy" / "ledger.db").is_file()   # the ledger of the root it was given
    assert not (tmp_path / "not-this-one.db").exists()


def test_confirm_refuses_without_a_terminal_and_names_yes():
    import io

    from deploy.errors import Aborted
    from deploy.services import Terminal

    term = Terminal(io.StringIO(), stdin=io.StringIO("y\n"), environ={})
    with pytest.raises(Aborted, match="Pass --yes"):
        term.confirm("Restore?", yes=False)
    term.confirm("Restore?", yes=True)   # --yes: nothing is asked




@pytest.mark.parametrize("name,task", sorted(all_tasks().items()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_task_name_leads_to_its_flow_module_in_one_hop(name, task):
    import inspect
    import re

    src = inspect.getsource(inspect.unwrap(task.body))
    used = set(re.findall(r"from deploy\.flows import (\w+)", src))
    ns, _, sub = name.partition(".")
    module = ns
    assert used == {module}, f"invoke {name} calls deploy/flows/{sorted(used)}; it belongs in deploy/flows/{module}.py"
    fn = sub.replace("-", "_") if sub else "main"
    assert re.search(rf"\b{fn}\(services\(\)", src), f"invoke {name} should call flows/{module}.py:{fn}"
    assert f"flows/{module}.py" in (ROOT / "docs" / "architecture.md").read_text() or not sub


def cli_functions_nothing_calls(src: str, users: list[str]) -> list[str]:
    """The functions `src` (deploy/cli.py) defines that neither it (by bare name: a call, a
    decorator, a reference) nor any of `users` (imported from deploy.cli, or `cli.NAME`) uses."""
    import re

    tree = ast.parse(src)
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    inside = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return [name for name in names if name not in inside and not any(
        re.search(rf"from deploy\.cli import [^\n]*\b{name}\b|\bcli\.{name}\b", u) for u in users)]


def test_every_function_of_the_cli_edge_is_used():
    """deploy/cli.py holds only what the task layer calls (or its own functions call): a
    helper nothing calls is dead weight a newcomer reads for nothing."""
    users = [(ROOT / "tasks.py").read_text(), *(p.read_text() for p in DEPLOY.rglob("*.py") if p.name != "cli.py"),
             *(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != "test_layers.py")]  # its strings
    assert cli_functions_nothing_calls((DEPLOY / "cli.py").read_text(), users) == []


def test_the_dead_helper_finder_sees_an_unused_function_and_not_a_used_one():
    src = "def used():\n    pass\n\ndef helper():\n    used()\n\ndef dead():\n    x.dead()\n\ndef outside():\n    pass\n"
    assert cli_functions_nothing_calls(src, ["from deploy.cli import helper", "cli.outside()"]) == ["dead"]


# ----------------------------------------------------------------------------- the packages split from one module

SPLIT = {"deploy.engine": "deploy/engine", "deploy.ledger": "deploy/ledger", "deploy.flows.steps": "deploy/flows/steps",
         "deploy.config": "deploy/config"}


def names_taken_from(module: str, sources: list[str]) -> set[str]:
    """Every name the `sources` take from `module`: `from module import X`, and `alias.X` where
    `alias` is the module (`from deploy.flows import steps`, `import deploy.ledger as led`)."""
    parent, _, leaf = module.rpartition(".")
    found: set[str] = set()
    for src in sources:
        tree = ast.parse(src)
        aliases = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module == module:
                found.update(a.name for a in n.names if a.name != "*")
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module == parent:
                aliases.update(a.asname or a.name for a in n.names if a.name == leaf)
            elif isinstance(n, ast.Import):
                aliases.update(a.asname for a in n.names if a.name == module and a.asname)
        found.update(n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                     and isinstance(n.value, ast.Name) and n.value.id in aliases)
    return found


def test_the_name_finder_sees_every_way_a_name_is_taken():
    srcs = ["from deploy.ledger import Ledger, NOW\n", "from deploy.flows import steps as s\ns.build(1)\n",
            "import deploy.engine as e\ne.Plan\n", "from deploy import ledger\n"]
    assert names_taken_from("deploy.ledger", srcs) == {"Ledger", "NOW"}
    assert names_taken_from("deploy.flows.steps", srcs) == {"build"}
    assert names_taken_from("deploy.engine", srcs) == {"Plan"}


@pytest.mark.parametrize("module", sorted(SPLIT))
def test_a_split_package_still_offers_every_name_taken_from_the_module_it_was(module):
    import importlib

    pkg = importlib.import_module(module)
    sources = [p.read_text() for p in [ROOT / "tasks.py", *DEPLOY.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
               if not p.is_symlink() and not p.is_relative_to(ROOT / SPLIT[module])]
    missing = names_taken_from(module, sources) - set(pkg.__all__)
    assert not missing, f"{module} no longer offers {sorted(missing)}: re-export them from its __init__.py"
    assert [n for n in pkg.__all__ if not hasattr(pkg, n)] == []


@pytest.mark.parametrize("path", [p for d in SPLIT.values() for p in sorted((ROOT / d).glob("*.py"))], ids=rel)
def test_a_module_of_a_split_package_says_its_one_job_and_stays_under_700_lines(path):
    text = path.read_text()
    assert ast.get_docstring(ast.parse(text)), f"{rel(path)} does not open with a docstring saying its job"
    assert len(text.splitlines()) < 700, f"{rel(path)} has {len(text.splitlines())} lines"


def functions_nothing_calls(paths: list[Path], users: list[str]) -> list[str]:
    """Top-level functions and methods defined in `paths` whose name appears nowhere else in
    `users` (the repository's Python sources) than at its own definition."""
    import collections
    import re

    words = collections.Counter(w for u in users for w in re.findall(r"[A-Za-z_]\w*", u))
    dead = []
    for p in paths:
        tree = ast.parse(p.read_text())
        for node in tree.body:
            defs = [node] if isinstance(node, ast.FunctionDef) else []
            if isinstance(node, ast.ClassDef):
                defs += [n for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("__")]
            dead += [f"{rel(p)}:{d.name}" for d in defs if words[d.name] <= 1]
    return dead


@pytest.mark.parametrize("folder", ["deploy/engine", "deploy/ledger", "deploy/flows"])
def test_no_function_of_the_engine_ledger_or_flows_is_called_by_nothing(folder):
    users = [p.read_text() for p in [ROOT / "tasks.py", *DEPLOY.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
             if not p.is_symlink()]
    assert functions_nothing_calls(sorted((ROOT / folder).rglob("*.py")), users) == []
