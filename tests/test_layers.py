"""The layers of docs/architecture.md, read from the source with ast: data flows down.

tasks.py -> deploy/cli.py -> deploy/flows/ -> deploy/engine.py, deploy/<primitive>.py.
Only the task-facing code imports deploy/cli; no primitive imports a flow.
"""

import ast
from pathlib import Path

import pytest

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
def test_only_task_facing_code_imports_the_cli(path):
    if rel(path) in TASK_FACING:
        return
    assert "deploy.cli" not in imported_modules(path), (
        f"{rel(path)} imports deploy/cli: take the settings, ledger, terminal and environment "
        "from the Services argument (deploy/services.py) instead")


@pytest.mark.parametrize("path", [p for p in modules() if p.parent == DEPLOY or p.parent.name in ("evidence", "migrations")],
                         ids=rel)
def test_no_primitive_imports_a_flow(path):
    if rel(path) in TASK_FACING:
        return
    flows = {m for m in imported_modules(path) if m == "deploy.flows" or m.startswith("deploy.flows.")}
    assert not flows, f"{rel(path)} (a primitive) imports {sorted(flows)}: flows sit above primitives"
