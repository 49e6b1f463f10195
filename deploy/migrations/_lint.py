"""Can the previous release run on the schema a migration leaves? Each migration is judged
before it runs: additive (new tables, nullable or defaulted columns, new indexes, new enum
values, new rows) or destructive (a drop, a rename, a type change, SET NOT NULL, a required
column, a data rewrite, or anything not known to be additive).

Postgres: `squawk` (the squawk-cli wheel's binary, offline) does the reading. Its lint
(`--reporter json`) names the rules a statement breaks (`ban-drop-column`, `renaming-column`,
`changing-column-type`, `adding-not-nullable-field`, ...); its parse tree (`--debug parse`)
gives every top-level statement's kind and, for ALTER TABLE / ALTER TYPE, its actions. A
migration is additive only when no destructive rule fires AND every statement and action is
on the additive list below: squawk has no rule for UPDATE or DELETE, so the parse tree is what
sees a data rewrite. A script squawk cannot parse is not known to be additive.

SQLite: squawk reads Postgres only (Prisma's SQLite scripts hold `AUTOINCREMENT` and `PRAGMA`,
which it rejects), so SQLite migrations get a conservative classifier over the statements'
leading words (`_sql.split`): CREATE TABLE / INDEX / VIEW, INSERT, ALTER TABLE ... ADD COLUMN
(not NOT NULL without a DEFAULT) and PRAGMA are additive; everything else is not (Prisma's
"RedefineTables" shape drops and renames a table: destructive).

The parsing and the judging are pure (recorded squawk output in tests/fixtures/squawk/);
running squawk is the one edge.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deploy.errors import MigrationFailed, ToolMissing
from deploy.migrations._files import LocalMigration
from deploy.migrations._sql import split

# squawk rules that mean the previous release may break on the new schema (or lose data).
DESTRUCTIVE_RULES = frozenset({
    "ban-drop-column", "ban-drop-table", "ban-drop-database", "ban-drop-type", "ban-drop-schema", "ban-drop-view",
    "ban-drop-function", "ban-drop-sequence", "ban-drop-domain", "ban-drop-index", "ban-drop-trigger",
    "ban-drop-policy", "ban-drop-extension", "ban-drop-generated-expression", "ban-drop-default",
    "ban-drop-not-null", "ban-drop-constraint", "ban-truncate-cascade", "ban-set-schema",
    "ban-replace-view-function", "ban-alter-generated-expression", "renaming-column", "renaming-table",
    "renaming-object", "changing-column-type", "adding-not-nullable-field", "adding-required-field",
})

# Statement kinds of squawk's parse tree that only add (judged further: ALTER_TABLE, ALTER_TYPE,
# and the CREATE ... that may say OR REPLACE).
_ADDITIVE = frozenset({
    "CREATE_TABLE", "CREATE_TABLE_AS", "CREATE_INDEX", "CREATE_TYPE", "CREATE_SEQUENCE", "CREATE_EXTENSION",
    "CREATE_SCHEMA", "CREATE_VIEW", "CREATE_MATERIALIZED_VIEW", "CREATE_FUNCTION", "CREATE_PROCEDURE",
    "INSERT", "COMMENT_ON", "GRANT", "SET", "BEGIN", "COMMIT_TRANSACTION", "ALTER_TABLE", "ALTER_TYPE",
    "ALTER_INDEX", "SELECT",
})
_ADDITIVE_ALTER = frozenset({"ADD_COLUMN", "ADD_CONSTRAINT", "VALIDATE_CONSTRAINT", "ADD_VALUE"})
_NOT_NODES = frozenset({"WHITESPACE", "COMMENT", "SEMICOLON", "COMMA", "ERROR", "IF_EXISTS", "ONLY"})

_WHAT = [  # (pattern over a statement or action kind, what it is), first match wins
    (re.compile(r"^(UPDATE|DELETE|TRUNCATE|MERGE|COPY|DO|CALL)$"), "data rewrite"),
    (re.compile(r"^DROP_NOT_NULL$"), "DROP NOT NULL"),
    (re.compile(r"^SET_NOT_NULL$"), "SET NOT NULL"),
    (re.compile(r"^SET_TYPE$"), "type change"),
    (re.compile(r"RENAME"), "rename"),
    (re.compile(r"^DROP"), "drop"),
    (re.compile(r"^OR_REPLACE$"), "replaces an existing object"),
]


@dataclass(frozen=True)
class Finding:
    """One squawk finding (or one reason of the SQLite classifier): rule, 1-based line, message."""

    rule: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.rule}: {self.message}"


@dataclass(frozen=True)
class MigrationLint:
    """The verdict on one migration: additive or not, why not, and every finding shown."""

    name: str
    additive: bool
    reasons: tuple[str, ...]          # why it is not additive ("line 2: drop (ban-drop-column)")
    findings: tuple[Finding, ...]     # everything the linter said, destructive or not
    linter: str                       # "squawk 2.70.0" or "sqlite rules"
    has_down: bool = False

    @property
    def kind(self) -> str:
        return "additive" if self.additive else "destructive"

    def summary(self) -> str:
        """One line: verdict, reasons, other findings' rules."""
        if self.additive:
            other = sorted({f.rule for f in self.findings})
            return "additive" + (f" (squawk also notes: {', '.join(other)})" if other else "")
        return "destructive: " + "; ".join(self.reasons)


# ---------------------------------------------------------------- squawk's output (pure)

@dataclass(frozen=True)
class Node:
    kind: str
    depth: int                        # 1: a top-level statement
    start: int                        # byte offsets into the script
    end: int


_NODE = re.compile(r"^(?P<indent>\s*)(?P<kind>[A-Z][A-Z0-9_]*)@(?P<start>\d+)\.\.(?P<end>\d+)")


def parse_tree(text: str) -> tuple[Node, ...]:
    """The nodes of `squawk --debug parse` output (rowan's tree: two spaces per level)."""
    out = []
    for line in text.splitlines():
        m = _NODE.match(line)
        if m:
            out.append(Node(m["kind"], len(m["indent"]) // 2, int(m["start"]), int(m["end"])))
    return tuple(out)


def parse_findings(text: str, script: str) -> tuple[Finding, ...]:
    """`squawk --reporter json` output as findings with 1-based lines (squawk counts from 0)."""
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError:
        raise MigrationFailed(f"squawk printed something that is not JSON: {text[:200]!r}",
                              "Check the squawk-cli install (pip install squawk-cli).") from None
    return tuple(Finding(str(r.get("rule_name") or "?"), int(r.get("line") or 0) + 1,
                         " ".join(str(r.get("message") or "").split())) for r in rows)


def _line(script_bytes: bytes, offset: int) -> int:
    return script_bytes.count(b"\n", 0, offset) + 1


def _what(kind: str) -> str:
    for pattern, what in _WHAT:
        if pattern.search(kind):
            return what
    return "not known to be additive"


def _is_token(kind: str) -> bool:
    return (kind in _NOT_NODES or kind.endswith("_KW") or "NAME" in kind or kind.endswith("_REF")
            or kind.startswith("PATH") or kind in ("LITERAL", "STRING"))


def judge_postgres(name: str, script: str, findings: Sequence[Finding], tree: Sequence[Node], *,
                   linter: str = "squawk", has_down: bool = False) -> MigrationLint:
    """The verdict from squawk's findings and parse tree (pure). One reason per line: squawk's
    rule where it named one, else what the parse tree shows there."""
    raw = script.encode("utf-8")
    errors = [f for f in findings if f.rule == "syntax-error"]
    by_rule = [(f.line, f"line {f.line}: {f.rule} ({_sentence(f.message)})") for f in findings
               if f.rule in DESTRUCTIVE_RULES]
    by_tree: list[tuple[int, str]] = []

    def saw(node: Node, what: str) -> None:
        line = _line(raw, node.start)
        by_tree.append((line, f"line {line}: {_what(node.kind)} ({what})"))

    stmt: Node | None = None
    for i, n in enumerate(tree):
        if n.depth == 1:
            stmt = None if _is_token(n.kind) else n
            if stmt is not None and n.kind not in _ADDITIVE:
                saw(n, n.kind)
            continue
        if stmt is None or _is_token(n.kind):
            continue
        if stmt.kind in ("ALTER_TABLE", "ALTER_TYPE"):
            if n.depth == 2 and n.kind != "ALTER_COLUMN" and n.kind not in _ADDITIVE_ALTER:
                saw(n, f"{stmt.kind} {n.kind}")
            elif n.depth == 3 and tree_parent(tree, i).kind == "ALTER_COLUMN" and n.kind != "SET_DEFAULT":
                saw(n, f"ALTER COLUMN {n.kind}")
        elif n.depth == 2 and n.kind == "OR_REPLACE":
            saw(n, stmt.kind)
    reasons = [f"line {errors[0].line}: squawk cannot parse it ({errors[0].message}), so it is not known "
               "to be additive"] if errors else []
    ruled = {line for line, _ in by_rule}
    reasons += [r for _, r in by_rule] + [r for line, r in by_tree if line not in ruled]
    shown = tuple(f for f in findings if f.rule != "syntax-error") + tuple(errors[:1])
    return MigrationLint(name, not reasons, tuple(dict.fromkeys(reasons)), shown, linter, has_down)


def _sentence(text: str) -> str:
    """The first sentence of a squawk message."""
    return text.split(". ")[0].rstrip(".")


def tree_parent(tree: Sequence[Node], i: int) -> Node:
    """The nearest node before `i` one level up."""
    for j in range(i - 1, -1, -1):
        if tree[j].depth == tree[i].depth - 1:
            return tree[j]
    return tree[i]


# ---------------------------------------------------------------- SQLite (pure)

_SQLITE_ADDITIVE = (("CREATE", "TABLE"), ("CREATE", "INDEX"), ("CREATE", "UNIQUE", "INDEX"), ("CREATE", "VIEW"),
                    ("INSERT", "INTO"), ("PRAGMA",), ("BEGIN",), ("COMMIT",), ("END",))


def judge_sqlite(name: str, script: str, *, has_down: bool = False) -> MigrationLint:
    """The conservative SQLite classifier over each statement's leading words (pure)."""
    found: list[Finding] = []
    for st in split(script):
        w = st.words
        if any(st.starts(*ok) for ok in _SQLITE_ADDITIVE) and not st.starts("INSERT", "OR"):
            continue
        if st.starts("ALTER", "TABLE") and "ADD" in w[3:5]:
            upper = " ".join(st.text.upper().split())
            if "NOT NULL" in upper and "DEFAULT" not in upper:
                found.append(Finding("required-column", st.line, "a required column (NOT NULL without a DEFAULT)"))
            continue
        first = w[0] if w else "?"
        what = ("rename" if st.starts("ALTER", "TABLE") and "RENAME" in w else
                "drop" if first == "DROP" or (st.starts("ALTER", "TABLE") and "DROP" in w) else
                "data rewrite" if first in ("UPDATE", "DELETE", "REPLACE") or st.starts("INSERT", "OR") else
                "not known to be additive")
        found.append(Finding(what.replace(" ", "-"), st.line, f"{what} ({' '.join(w[:3])})"))
    reasons = tuple(dict.fromkeys(f"line {f.line}: {f.message}" for f in found))
    return MigrationLint(name, not found, reasons, tuple(found), "sqlite rules", has_down)


# ---------------------------------------------------------------- running squawk (the edge)

def find_squawk() -> str | None:
    """The squawk binary: the squawk-cli wheel's script beside this Python (the venv's bin),
    else the one on PATH."""
    here = Path(sys.executable).parent / "squawk"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("squawk")


def require_squawk() -> str:
    found = find_squawk()
    if found is None:
        raise ToolMissing(
            "squawk (the Postgres migration linter) is not installed, so the migrations of this promotion "
            "cannot be classified as additive or destructive; nothing was changed.",
            f"Install it into this Python's environment: {sys.executable} -m pip install 'squawk-cli>=2.70' "
            "(a dependency of the toolkit; the wheel bundles the binary and works offline).")
    return found


def _run(argv: list[str], script: str) -> subprocess.CompletedProcess:
    # A scratch working folder: a .squawk.toml of the project (excluded rules) must not hide a
    # destructive finding. The child gets PATH only.
    with tempfile.TemporaryDirectory(prefix="occ-squawk-") as tmp:
        try:
            return subprocess.run(argv, input=script, capture_output=True, text=True, cwd=tmp, timeout=120,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"})
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MigrationFailed(f"Running {argv[0]} failed: {e}.",
                                  "Check the squawk-cli install (pip install squawk-cli).") from None


def squawk_version(binary: str) -> str:
    res = _run([binary, "--version"], "")
    return res.stdout.strip() or "squawk"


def lint_postgres(m: LocalMigration, binary: str, version: str = "squawk") -> MigrationLint:
    """Run squawk's lint and parser over one migration.sql and judge it."""
    script = m.script or ""
    lint = _run([binary, "--reporter", "json", "--stdin-filepath", f"{m.name}/migration.sql"], script)
    if lint.returncode not in (0, 1):
        raise MigrationFailed(f"squawk failed on {m.name}/migration.sql (exit {lint.returncode}): "
                              f"{(lint.stderr or lint.stdout).strip()[:300]}",
                              "Check the squawk-cli install (pip install squawk-cli).", migration=m.name)
    findings = parse_findings(lint.stdout, script)
    tree = parse_tree(_run([binary, "--debug", "parse"], script).stdout)
    if not tree and script.strip():
        findings += (Finding("syntax-error", 1, "squawk printed no parse tree"),)
    return judge_postgres(m.name, script, findings, tree, linter=version, has_down=m.has_down)


def lint(migrations: Sequence[LocalMigration], provider: str) -> tuple[MigrationLint, ...]:
    """The verdict on each migration, in order. Postgres needs squawk (ToolMissing, naming how to
    install it, when there is something to lint and it is missing)."""
    todo = [m for m in migrations if m.script is not None]
    if not todo:
        return ()
    if provider != "postgresql":
        return tuple(judge_sqlite(m.name, m.script or "", has_down=m.has_down) for m in todo)
    binary = require_squawk()
    version = squawk_version(binary)
    return tuple(lint_postgres(m, binary, version) for m in todo)


def unaccepted(lints: Sequence[MigrationLint], accepted: Sequence[str]) -> tuple[MigrationLint, ...]:
    """The destructive migrations an undo could only take back by restoring a backup (no
    down.sql) that nobody accepted by name: a promotion refuses them before it changes anything."""
    return tuple(m for m in lints if not m.additive and not m.has_down and m.name not in set(accepted))
