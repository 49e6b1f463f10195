"""Runbooks bound to tasks: every `invoke ...` a runbook or workflow names must exist.

A runbook is only useful at 3 a.m. if the command it tells you to type works. So the
runbooks in `docs/runbooks/` (and the `run:` scripts of `.github/workflows/`) are read
for `invoke <task> --flag[=value]` commands in code (inline spans and fenced blocks),
and each is checked against the real Invoke collection of `tasks.py`:

- a task or flag that does not exist is an error (file:line, the name, the closest real name);
- a user-facing task that no runbook mentions is an error (an undocumented task is one
  nobody will find when it is needed);
- a required runbook that is missing is an error.

Internal tasks (not required in a runbook): those whose docstring starts with
"Internal" or whose name is in `INTERNAL_TASKS`. Every task of the planned surface is
user-facing, so that set is empty.

`stamp()` rewrites the "Last exercised: ..." line of the hotfix and rollback runbooks
from the ledger's drills, so "exercised" is a fact from the ledger, not a claim.

Parsing is pure (`references`, `commands_in_shell`, `compare`); loading `tasks.py`,
reading files and the ledger happen in `task_surface`, `check` and `stamp`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import importlib.util
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from invoke import Collection

from deploy.errors import DeployError, SettingsError
from deploy.ledger import DrillRow, Ledger

RUNBOOK_DIR = "docs/runbooks"
WORKFLOW_DIR = ".github/workflows"
RUNBOOKS = (
    "deployment_staging.md",
    "rollback.md",
    "hotfix.md",
    "local_bootstrap.md",
    "prisma_staging_postgres.md",
    "go_live.md",
)
INTERNAL_TASKS: frozenset[str] = frozenset()
# Flags Invoke itself accepts after any task name (`invoke promote --help`).
CORE_TASK_FLAGS = frozenset({"help"})
STAMPED = {"hotfix.md": "hotfix", "rollback.md": "rollback"}
STAMP_LINE = re.compile(r"^(?P<lead>[>*_ \t]*)Last exercised:.*$")


class RunbookError(DeployError):
    """A runbook or tasks.py could not be read."""

    exit_code = 2


# ---------------------------------------------------------------- the task surface

@dataclass(frozen=True)
class TaskInfo:
    name: str                      # dotted, dashed: "db.verify-backup"
    flags: frozenset[str]          # long names without dashes: {"env", "file"}
    positional: tuple[str, ...]    # flag names Invoke also accepts positionally, in order
    internal: bool
    aliases: tuple[str, ...] = ()


def load_collection(root: Path):
    """Import `<root>/tasks.py` under a private module name and return its `ns` Collection."""
    path = Path(root) / "tasks.py"
    if not path.is_file():
        raise RunbookError(f"{path} does not exist: there is no task collection to check against.",
                           "Run from the project root, or pass the folder that holds tasks.py.")
    # A name per file, so two roots in one process (the tests) never share a cached module.
    name = "_runbooks_tasks_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, "a .py file has a spec with a loader"
    module = importlib.util.module_from_spec(spec)
    added = str(path.parent) not in sys.path
    if added:
        sys.path.insert(0, str(path.parent))  # tasks.py may import its siblings, as under `invoke`
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken tasks.py is the finding here, not a crash of the checker
        raise RunbookError(f"{path} failed to import: {type(e).__name__}: {e}",
                           "Fix tasks.py (`invoke --list` shows the same error).") from None
    finally:
        if added:
            sys.path.remove(str(path.parent))
    ns = getattr(module, "ns", None)
    if not isinstance(ns, Collection):
        ns = Collection.from_module(module)
    return ns


def tasks_of(ns) -> dict[str, TaskInfo]:
    """Every task of a Collection with its long flags, as Invoke's parser sees them."""
    out: dict[str, TaskInfo] = {}
    for ctx in ns.to_contexts(ignore_unknown_help=True):
        flags = {f.lstrip("-") for f in ctx.flags if f.startswith("--")}
        flags |= {f.lstrip("-") for f in ctx.inverse_flags if f.startswith("--")}
        positional = tuple(a.name.replace("_", "-") for a in ctx.positional_args)
        task = ns[ctx.name]
        doc = (task.__doc__ or getattr(task.body, "__doc__", None) or "").strip()
        internal = ctx.name in INTERNAL_TASKS or doc.lower().startswith("internal")
        out[ctx.name] = TaskInfo(ctx.name, frozenset(flags), positional, internal, tuple(ctx.aliases))
    return out


def task_surface(root: Path) -> dict[str, set[str]]:
    """Dotted task name -> its long flag names, from the real `tasks.py` under root."""
    return {name: set(t.flags) for name, t in tasks_of(load_collection(root)).items()}


def user_facing(tasks: dict[str, TaskInfo]) -> list[str]:
    return sorted(n for n, t in tasks.items() if not t.internal)


# ---------------------------------------------------------------- finding commands in text

@dataclass(frozen=True)
class Ref:
    line: int                      # 1-based line in the file
    task: str
    flags: tuple[str, ...]         # long flag names as written, without dashes
    args: tuple[str, ...] = ()     # bare values (positional arguments)
    short: tuple[str, ...] = ()    # single-dash flags as written ("-y")
    file: str = ""
    text: str = ""                 # the whole command, for the report


_PUNCT = {";", "&&", "||", "|", "&", "(", ")", "((", "))", "|&", ";;"}
# Words that may stand before a command without being the command.
_PREFIX = {"$", "time", "then", "do", "else", "sudo", "exec", "!", "{", "run:", "-", "command"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_EXPR = re.compile(r"\$\{\{.*?\}\}")          # GitHub expression: one token whatever its spaces
_TASK_NAME = re.compile(r"^[a-z_][a-z0-9_-]*(\.[a-z0-9_][a-z0-9_-]*)*$")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_INLINE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def _tokens(line: str) -> list[str]:
    text = _EXPR.sub(lambda m: "${{" + re.sub(r"\s+", "", m.group(0)[3:-2]) + "}}", line)
    lex = shlex.shlex(text, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:  # an unbalanced quote in prose-like code: fall back to whitespace
        return re.sub(r"\s#.*$", "", text).split()


def commands_in_shell(text: str, first_line: int = 1) -> list[Ref]:
    """`invoke` commands in shell text (code block, `run:` script): one Ref per task named."""
    refs: list[Ref] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start = i
        logical = lines[i]
        while logical.rstrip().endswith("\\") and i + 1 < len(lines):  # line continuation
            i += 1
            logical = logical.rstrip()[:-1] + " " + lines[i]
        i += 1
        if "invoke" not in logical:
            continue
        refs.extend(_parse_line(logical, first_line + start))
    return refs


def _parse_line(line: str, lineno: int) -> list[Ref]:
    toks = _tokens(line)
    refs: list[Ref] = []
    at_start = True
    k = 0
    while k < len(toks):
        tok = toks[k]
        if tok in _PUNCT:
            at_start = True
        elif at_start and (tok in _PREFIX or _ASSIGN.match(tok)):
            pass
        elif at_start and (tok == "invoke" or tok.endswith("/invoke")):
            k, found = _parse_invoke(toks, k + 1, lineno)
            refs.extend(found)
            at_start = False
            continue
        else:
            at_start = False
        k += 1
    return refs


def _parse_invoke(toks: list[str], k: int, lineno: int) -> tuple[int, list[Ref]]:
    """Parse `invoke [core flags] task [flags] [task [flags]]...` from toks[k:]."""
    refs: list[Ref] = []
    # Invoke's own options before the first task (`invoke --list`, `invoke -e promote`).
    while k < len(toks) and toks[k].startswith("-") and toks[k] not in _PUNCT:
        k += 1
    cur: dict | None = None
    pending = False                                    # a `--flag` waiting for its value
    start = k
    while k < len(toks) and toks[k] not in _PUNCT:
        tok = toks[k]
        if tok.startswith("--") and len(tok) > 2:
            name, eq, _ = tok[2:].partition("=")
            if cur is not None:
                cur["flags"].append(name)
            pending = not eq
        elif tok.startswith("-") and len(tok) > 1 and not tok[1].isdigit():
            if cur is not None:
                cur["short"].append(tok)
            pending = "=" not in tok
        elif pending:
            pending = False                            # the value of the flag before it
        elif cur is None or ("." in tok and _TASK_NAME.match(tok)):
            if tok.startswith("<") or not _TASK_NAME.match(tok):
                # a placeholder (`invoke <task> --help`) or not a task at all: nothing to check
                while k < len(toks) and toks[k] not in _PUNCT:
                    k += 1
                return k, refs
            if cur is not None:
                refs.append(_ref(cur, lineno))
            cur = {"task": tok, "flags": [], "short": [], "args": [], "from": k}
        else:
            cur["args"].append(tok)
        k += 1
    if cur is not None:
        refs.append(_ref(cur, lineno))
    # the text of each command, for the report
    text = "invoke " + " ".join(toks[start:k])
    return k, [Ref(r.line, r.task, r.flags, r.args, r.short, r.file, text) for r in refs]


def _ref(cur: dict, lineno: int) -> Ref:
    return Ref(lineno, cur["task"], tuple(cur["flags"]), tuple(cur["args"]), tuple(cur["short"]))


def references(markdown_text: str) -> list[Ref]:
    """`invoke <task> --flag...` commands in a markdown document's code: fenced blocks and inline spans."""
    refs: list[Ref] = []
    lines = markdown_text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            fence = m.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith(fence):
                j += 1
            refs.extend(commands_in_shell("\n".join(lines[i + 1:j]), first_line=i + 2))
            i = j + 1
            continue
        for span in _INLINE.finditer(lines[i]):
            refs.extend(commands_in_shell(span.group(2).strip(), first_line=i + 1))
        i += 1
    return refs


def workflow_references(yaml_text: str) -> list[Ref]:
    """`invoke` commands in a GitHub workflow: `run:` lines and the lines of `run: |` blocks."""
    refs: list[Ref] = []
    for r in commands_in_shell(yaml_text):
        refs.append(r)
    return refs


# ---------------------------------------------------------------- judging

@dataclass(frozen=True)
class Finding:
    kind: str          # unknown-task | unknown-flag | short-flag | uncovered | missing-runbook
    file: str
    line: int
    name: str          # the bad name as written (task, --flag) or the uncovered task
    suggestion: str    # the closest real name, or what to do

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class RunbookReport:
    files: tuple[str, ...]
    refs: tuple[Ref, ...]
    findings: tuple[Finding, ...]
    user_facing: tuple[str, ...]
    coverage: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())  # task -> runbooks naming it

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def render(self) -> str:
        from tabulate import tabulate

        head = (f"{len(self.files)} files, {len(self.refs)} invoke commands, "
                f"{sum(1 for _, f in self.coverage if f)}/{len(self.user_facing)} user-facing tasks in a runbook")
        if self.ok:
            return head + ": all good."
        rows = [(f.where, f.kind, f.name, f.suggestion) for f in self.findings]
        text = head + f", {len(self.findings)} problems:\n" + tabulate(
            rows, headers=("where", "problem", "name", "closest real name / what to do"), tablefmt="github")
        unknown = sorted({f.name for f in self.findings if f.kind == "unknown-task"})
        if unknown:
            text += "\n\ntasks named but not in tasks.py: " + ", ".join(unknown)
        return text


def _closest(name: str, candidates: Iterable[str]) -> str:
    # 0.7: close enough to be a typo or a rename (lock.relase -> lock.release), not just a shared suffix
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return near[0] if near else ""


def compare(refs: Iterable[Ref], tasks: dict[str, TaskInfo], *, runbook_files: Iterable[str] = (),
            required: Iterable[str] = (), present: Iterable[str] = ()) -> RunbookReport:
    """Judge references against the task surface. Pure: no files, no imports."""
    refs = tuple(refs)
    by_name: dict[str, TaskInfo] = {}
    for t in tasks.values():
        by_name[t.name] = t
        for a in t.aliases:
            by_name[a] = t
    findings: list[Finding] = []
    for r in refs:
        name = r.task.replace("_", "-")
        info = by_name.get(name)
        if info is None:
            near = _closest(name, by_name)
            findings.append(Finding("unknown-task", r.file, r.line, r.task,
                                    f"`{near}`" if near else "no similar task: see `invoke --list`"))
            continue
        for f in r.flags:
            flag = f.replace("_", "-")
            if flag not in info.flags and flag not in CORE_TASK_FLAGS:
                near = _closest(flag, info.flags)
                findings.append(Finding(
                    "unknown-flag", r.file, r.line, f"{info.name} --{f}",
                    f"`--{near}`" if near else f"`{info.name}` takes " + (
                        ", ".join(f"--{x}" for x in sorted(info.flags)) or "no flags")))
        for s in r.short:
            findings.append(Finding("short-flag", r.file, r.line, f"{info.name} {s}",
                                    "write the long flag: runbooks must be readable without `--help`"))
        if len(r.args) > len(info.positional):
            extra = " ".join(r.args[len(info.positional):])
            findings.append(Finding("unknown-flag", r.file, r.line, f"{info.name} {extra}",
                                    f"`{info.name}` takes no more positional values; use --flag=value"))
    runbook_files = tuple(runbook_files)
    named: dict[str, set[str]] = {}
    for r in refs:
        if r.file in runbook_files:
            info = by_name.get(r.task.replace("_", "-"))
            if info is not None:
                named.setdefault(info.name, set()).add(Path(r.file).name)
    facing = tuple(user_facing(tasks))
    for name in facing:
        if name not in named:
            findings.append(Finding("uncovered", RUNBOOK_DIR, 0, name,
                                    f"name `invoke {name}` in the runbook of the procedure that uses it"))
    present = set(present)
    for req in required:
        if req not in present:
            findings.append(Finding("missing-runbook", f"{RUNBOOK_DIR}/{req}", 0, req,
                                    "write it: every step names the exact invoke task"))
    coverage = tuple((n, tuple(sorted(named.get(n, ())))) for n in facing)
    return RunbookReport(files=runbook_files, refs=refs, findings=tuple(findings), user_facing=facing,
                         coverage=coverage)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise RunbookError(f"Cannot read {path}: {e.strerror}.") from None


def check(root: Path, tasks_root: Path | None = None) -> RunbookReport:
    """Check docs/runbooks/*.md and .github/workflows/*.yml under `root` against the tasks
    of `tasks_root`/tasks.py (default: root)."""
    root = Path(root)
    tasks = tasks_of(load_collection(tasks_root or root))
    refs: list[Ref] = []
    runbook_files: list[str] = []
    rdir = root / RUNBOOK_DIR
    for path in sorted(rdir.glob("*.md")) if rdir.is_dir() else ():
        rel = path.relative_to(root).as_posix()
        runbook_files.append(rel)
        refs += [_at(r, rel) for r in references(_read(path))]
    wdir = root / WORKFLOW_DIR
    files = list(runbook_files)
    for path in sorted([*wdir.glob("*.yml"), *wdir.glob("*.yaml")]) if wdir.is_dir() else ():
        rel = path.relative_to(root).as_posix()
        files.append(rel)
        refs += [_at(r, rel) for r in workflow_references(_read(path))]
    present = {Path(f).name for f in runbook_files}
    report = compare(refs, tasks, runbook_files=runbook_files, required=RUNBOOKS, present=present)
    return RunbookReport(files=tuple(files), refs=report.refs, findings=report.findings,
                         user_facing=report.user_facing, coverage=report.coverage)


def _at(r: Ref, file: str) -> Ref:
    return Ref(r.line, r.task, r.flags, r.args, r.short, file, r.text)


# ---------------------------------------------------------------- "Last exercised" from the ledger

def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _secs(value) -> str:
    try:
        return f"{float(value):.1f}s"
    except (TypeError, ValueError):
        return str(value)


def describe_drill(drill: DrillRow) -> str:
    """One drill row of the ledger as a sentence: when, where, outcome, phases, who."""
    phases = ", ".join(f"{k} {_secs(v)}" for k, v in drill.durations.items())
    total = ""
    if drill.finished_at and drill.started_at:
        total = f"total {drill.finished_at - drill.started_at:.1f}s"
    detail = "; ".join(x for x in (phases, total) if x)
    text = f"{_when(drill.started_at)} on {drill.env}, {drill.outcome}"
    if detail:
        text += f" ({detail})"
    return text + f", by {drill.who}"


def stamp_line(procedure: str, drills: list[DrillRow]) -> str:
    """The "Last exercised:" line for a procedure from its drills, newest first. Pure."""
    if not drills:
        return (f"Last exercised: never (no {procedure} drill in the ledger; "
                "run `invoke hotfix.drill --env=staging`, then `invoke runbooks.stamp`).")
    latest = drills[0]
    text = f"Last exercised: {describe_drill(latest)}"
    if latest.procedure and latest.procedure != procedure:
        text += f" (during a {latest.procedure} drill)"
    if latest.outcome not in ("passed", "succeeded", "ok"):
        ok = [d for d in drills if d.outcome in ("passed", "succeeded", "ok")]
        text += f"; last passed: {_when(ok[0].started_at)} on {ok[0].env}" if ok else "; never passed"
    return text + ". Source: the ledger (`invoke drills`)."


def drills_for(ledger: Ledger, procedure: str) -> list[DrillRow]:
    """The drills that exercised a procedure, newest first.

    A hotfix drill ends with a forced rollback, so it exercises the rollback procedure too
    when it timed a rollback phase.
    """
    rows = list(ledger.drills(procedure=procedure))
    if procedure == "rollback":
        rows += [d for d in ledger.drills(procedure="hotfix") if "rollback" in d.durations]
    return sorted(rows, key=lambda d: d.started_at, reverse=True)


def restamp(text: str, line: str, *, file: str = "") -> str:
    """Replace the single "Last exercised:" line (or add one under the title). Pure."""
    lines = text.split("\n")
    hits = [i for i, s in enumerate(lines) if STAMP_LINE.match(s)]
    if len(hits) > 1:
        raise RunbookError(f"{file} has {len(hits)} 'Last exercised:' lines (lines "
                           f"{', '.join(str(i + 1) for i in hits)}).", "Keep exactly one; runbooks.stamp rewrites it.")
    if hits:
        i = hits[0]
        found = STAMP_LINE.match(lines[i])
        assert found is not None   # hits are the lines it matches
        lines[i] = found.group("lead") + line
    else:
        at = next((i + 1 for i, s in enumerate(lines) if s.startswith("# ")), 0)
        lines[at:at] = ["", line] if at else [line, ""]
    return "\n".join(lines)


def stamp(root: Path, ledger) -> list[Path]:
    """Rewrite "Last exercised:" in hotfix.md and rollback.md from the ledger; return the files changed."""
    changed: list[Path] = []
    for name, procedure in STAMPED.items():
        path = Path(root) / RUNBOOK_DIR / name
        if not path.is_file():
            raise SettingsError(f"{path} does not exist, so its 'Last exercised' line cannot be stamped.",
                                f"Restore {RUNBOOK_DIR}/{name} (git checkout) and run again.")
        text = _read(path)
        new = restamp(text, stamp_line(procedure, drills_for(ledger, procedure)), file=str(path))
        if new != text:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(path)  # a reader never sees half a runbook
            changed.append(path)
    return changed
