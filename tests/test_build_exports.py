"""deploy.build re-exports its modules' public names (httpx's tested `__all__`), and each of
its modules says its one job first and stays small."""

import ast
import types
from pathlib import Path

import pytest

import deploy.build

PACKAGE = Path(deploy.build.__file__).parent
MODULES = sorted(p for p in PACKAGE.glob("*.py"))


def test_all_lists_every_public_name_the_package_exports_sorted():
    # dir(), not vars(): the package re-exports lazily (deploy/deferred.py, exports), a name is there once used
    public = [name for name in dir(deploy.build)
              if not name.startswith("_") and not isinstance(getattr(deploy.build, name), types.ModuleType)]
    assert deploy.build.__all__ == sorted(public, key=lambda n: (n.casefold(), n))


@pytest.mark.parametrize("name", deploy.build.__all__)
def test_each_exported_name_comes_from_a_module_below_the_package_doorway(name):
    value = getattr(deploy.build, name)
    home = getattr(value, "__module__", None)
    if home is not None:   # a function or a class: defined in a build module, deploy.source or deploy.startup
        assert home.startswith("deploy.build.") or home in ("deploy.source", "deploy.startup"), home


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_each_build_module_opens_with_its_job_and_stays_under_700_lines(path):
    text = path.read_text()
    doc = ast.get_docstring(ast.parse(text))
    assert doc and len(doc.split()) >= 8, f"{path.name} has no docstring naming its job"
    limit = 400 if path.name == "orchestrate.py" else 700
    assert len(text.splitlines()) <= limit


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_build_module_imports_the_toolkit_inside_a_function(path):
    tree = ast.parse(path.read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deploy"):
                    pytest.fail(f"{path.name}:{node.lineno} imports {node.module} inside {fn.name}")
                if isinstance(node, ast.Import) and any(a.name.startswith("deploy") for a in node.names):
                    pytest.fail(f"{path.name}:{node.lineno} imports the toolkit inside {fn.name}")


def imports_of(path: Path) -> set[str]:
    """Every toolkit module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return {m for m in found if m.startswith("deploy")}


ROOT = PACKAGE.parents[1]


@pytest.mark.parametrize("rel, above", [
    ("deploy/config", ("deploy.hosts", "deploy.build")),         # batches came from hosts: config -> hosts -> build -> config
    ("deploy/rollout.py", ("deploy.hosts", "deploy.config", "deploy.build")),
    ("deploy/startup.py", ("deploy.hosts", "deploy.build", "deploy.local")),
    ("deploy/hosts/_app.py", ("deploy.build",)),                  # starting an app needs the start contract only
    ("deploy/source.py", ("deploy.build", "deploy.hosts", "deploy.config")),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_settings_the_start_contract_and_the_commit_helpers_sit_below_hosts_and_build(rel, above):
    paths = sorted((ROOT / rel).glob("*.py")) if (ROOT / rel).is_dir() else [ROOT / rel]   # a package: each module
    up = {m for p in paths for m in imports_of(p) if m.split(".")[:2] in [a.split(".") for a in above]}
    assert not up, f"{rel} imports {sorted(up)}, which sit above it"
