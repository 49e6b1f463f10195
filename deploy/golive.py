"""The production go-live checklist: every item a check that runs, with its evidence.

    evidence          the evidence gate for this exact SHA is open
    decision log      the Supabase decision-log table exists, is fresh, has few errors
    backup            a backup of the environment younger than golive.backup_max_age_hours,
                      its SHA-256 intact, restored into a scratch database and row-counted
    rollback triggers smoke checks and a post-deploy watch window are configured
    rollback drill    a rollback (or hotfix) drill passed within golive.drill_max_age_days
    secrets           none of the environment's secrets is overdue for rotation
    staging parity    no `same`-rule variable differs between staging and this environment
    approvals         every role of approvals.required_roles approved this SHA

Each item has a *gather* part (reads files, the ledger, a database) and a pure *judge*
part (facts + settings + clock -> `Item`), so every verdict is testable from plain
values and the clock is passed in. A gather that fails with a DeployError becomes a
failing item with that error as its reason: the checklist always comes back whole.
`render` (terminal) and `write_markdown` (docs/deployment/go_live_checklist.md, for
circulation) happen at the edge; both go through `redact`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from deploy import backups, clock, decisionlog, envs, evidence, secrets as secrets_mod
from deploy.approvals import assign, shared_approver
from deploy.config import Settings
from deploy.display import fit
from deploy.errors import DeployError
from deploy.ledger import ApprovalRow, DrillRow, Ledger
from deploy.redact import Secret, redact

__all__ = [
    "DOC_FILE", "ITEMS", "Item", "Checklist", "BackupFacts", "DrillFacts",
    "judge_evidence", "judge_decision_log", "judge_backup", "judge_rollback_triggers", "judge_drills",
    "judge_secrets", "judge_parity", "judge_approvals",
    "gather_backup", "run_checklist", "require", "render", "render_markdown", "write_markdown",
]

DOC_FILE = "docs/deployment/go_live_checklist.md"
ITEMS = ("evidence", "decision log", "backup", "rollback triggers", "rollback drill", "secrets",
         "staging parity", "approvals")
DRILL_PROCEDURES = ("rollback", "hotfix")     # a hotfix drill ends by forcing and verifying a rollback
DRILL_PASSED = ("succeeded", "passed", "ok")

Verdict = Literal["ok", "fail"]


@dataclass(frozen=True)
class Item:
    name: str
    evidence: str                      # what was looked at and what it showed
    verdict: Verdict
    reason: str = ""                   # why it failed, and what to do ("" when ok)

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def _ok(name: str, evidence: str) -> Item:
    return Item(name, evidence, "ok")


def _fail(name: str, evidence: str, reason: str) -> Item:
    return Item(name, evidence, "fail", reason)


@dataclass(frozen=True)
class Checklist:
    env: str
    sha: str
    at: datetime
    items: tuple[Item, ...]

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)

    @property
    def failing(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if not i.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def item(self, name: str) -> Item:
        for i in self.items:
            if i.name == name:
                return i
        raise KeyError(name)


# ---------------------------------------------------------------- small pure helpers

def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)




def _stamp(t: datetime) -> str:
    return _utc(t).strftime("%Y-%m-%d %H:%M UTC")


def _same_commit(a: str, b: str) -> bool:
    """Equal SHAs, or one an abbreviation (>= 7 characters) of the other."""
    a, b = a.strip().lower(), b.strip().lower()
    short, full = sorted((a, b), key=len)
    return a == b or (len(short) >= 7 and full.startswith(short))


# ---------------------------------------------------------------- evidence

def judge_evidence(verdict: Any, sha: str, evidence_dir: str, env: str = "<env>") -> Item:
    """The gate's verdict (anything with `.ok` and `.reasons`, e.g. evidence.GateVerdict) as an item."""
    rows = tuple(getattr(verdict, "rows", ()) or ())
    kinds = sorted({getattr(r, "kind", "?") for r in rows} - {"manifest"})
    passed = sum(bool(getattr(r, "ok", False)) for r in rows)
    ev = f"{evidence_dir} for {sha[:12]}: {passed} of {len(rows)} checks passed"
    if kinds:
        ev += f" ({', '.join(kinds)})"
    if bool(getattr(verdict, "ok", False)):
        return _ok("evidence", ev)
    reasons = list(getattr(verdict, "reasons", ()) or ()) or ["the gate is closed"]
    return _fail("evidence", ev, "evidence gate closed: " + "; ".join(reasons)
                 + f" (see `invoke gate --env={env} --sha={sha[:12]}`)")


# ---------------------------------------------------------------- decision log

def judge_decision_log(h: Any) -> Item:
    """A `decisionlog.DecisionLogHealth` as an item."""
    if h.ok:
        return _ok("decision log", h.describe())
    return _fail("decision log", h.describe(), "; ".join(h.reasons))


# ---------------------------------------------------------------- backup

@dataclass(frozen=True)
class BackupFacts:
    """The newest backup of the environment and what checking it showed."""

    backup_dir: str
    env: str = "<env>"
    file: str = ""                     # "" when there is none
    created_at: datetime | None = None
    count: int = 0                     # backups of this environment on disk
    problem: str = ""                  # checksum or verification failure ("" when none)
    verified_tables: int | None = None # tables whose row counts matched after a scratch restore
    verified_rows: int | None = None
    database: str = ""                 # "none" when the environment has no database


def judge_backup(f: BackupFacts, now: datetime, max_age_hours: float) -> Item:
    if f.database == "none":
        return _ok("backup", "no database (database.provider = \"none\"): nothing to back up")
    if not f.file or f.created_at is None:
        return _fail("backup", f"no backups in {f.backup_dir}",
                     f"no backup of {f.env} in {f.backup_dir}: take one with `invoke db.backup --env={f.env}`")
    age = (_utc(now) - _utc(f.created_at)).total_seconds()
    ev = f"{f.file} ({f.count} on disk), taken {_stamp(f.created_at)}, {clock.age(age)} old"
    if age > max_age_hours * 3600:
        return _fail("backup", ev, f"the newest backup is {clock.age(age)} old (limit golive.backup_max_age_hours = "
                                   f"{max_age_hours:g}): take a fresh one with `invoke db.backup --env={f.env}`")
    if age < -300:
        return _fail("backup", ev, f"the newest backup is dated {clock.age(-age)} in the future: a clock is wrong")
    if f.problem:
        return _fail("backup", ev, f.problem)
    if f.verified_tables is None:
        return _fail("backup", ev, "the backup was not verified")
    return _ok("backup", ev + f"; sha256 intact; restored to a scratch copy: {f.verified_tables} table(s), "
                              f"{f.verified_rows} row(s), counts match the dump")


def gather_backup(settings: Settings, environ: Mapping[str, str],
                  verify: Callable[[Path], Any] | None = None) -> BackupFacts:
    """Find the newest backup of `settings.name` and verify it (checksum, scratch restore, row counts).

    `verify(path)` returns a `backups.VerifyResult`; by default `backups.verify` against the
    server named by golive.backup_verify_url_var (default: the environment's database URL)."""
    db = settings.database
    if db.provider == "none":
        return BackupFacts("", settings.name, database="none")
    folder = settings.path(db.backup_dir)
    shown = _rel(folder / settings.name, settings.root)
    found = backups.list_backups(folder, settings.name)
    if not found:
        return BackupFacts(shown, settings.name)
    newest = found[-1]
    try:
        b = backups.load_backup(newest)            # checks the .sha256 sidecar
    except DeployError as e:
        return BackupFacts(shown, settings.name, newest.name, _created_from_name(newest.name), len(found),
                           problem=e.message)
    facts = BackupFacts(shown, settings.name, newest.name, b.created_at, len(found))
    if verify is None:
        var = settings.golive.backup_verify_url_var or (
            db.direct_url_var if db.direct_url_var and environ.get(db.direct_url_var) else db.url_var)
        url = environ.get(var) or ""
        if newest.suffix == ".dump" and not url:
            return _replace(facts, problem=f"cannot verify {newest.name}: {var} is not set (the server to restore "
                                           f"it into; set golive.backup_verify_url_var to use a scratch server)")

        def verify(p: Path):
            # A SQLite copy is checked in place (integrity_check, row counts); a dump needs a server.
            return backups.verify(p, Secret(url) if p.suffix == ".dump" else None, db=db)
    try:
        result = verify(newest)
    except DeployError as e:
        return _replace(facts, problem=f"verifying {newest.name} failed: {e.message}")
    if not result.ok:
        bad = ", ".join(f"{c.table} expected {c.expected} rows, restored {c.actual}" for c in result.mismatches[:5])
        return _replace(facts, problem=f"{newest.name} does not restore to what was dumped: {bad}")
    return _replace(facts, verified_tables=len(result.counts), verified_rows=sum(c.actual or 0 for c in result.counts))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _created_from_name(name: str) -> datetime | None:
    try:
        return datetime.strptime(name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _replace(obj, **kw):
    return dataclasses.replace(obj, **kw)


# ---------------------------------------------------------------- rollback triggers and drills

def judge_rollback_triggers(settings: Settings) -> Item:
    """Pure over settings: what would detect a bad release and fire the undo chain."""
    smoke, watch = settings.smoke, settings.watch
    parts = [f"{len(smoke.checks)} smoke check(s)"]
    if watch.window_seconds > 0:
        parts.append(f"watch {watch.window_seconds:g}s: error ratio > {watch.max_error_ratio:g}, "
                     f"p95 > {watch.max_p95_ms:g} ms, {watch.max_consecutive_failures} consecutive failures"
                     + (", decision log" if watch.decision_log_check else ""))
    else:
        parts.append("no watch window")
    ev = "; ".join(parts)
    missing = []
    if not smoke.checks:
        missing.append("[smoke].checks is empty, so a broken release is not detected after the switch")
    if watch.window_seconds <= 0:
        missing.append("watch.window_seconds is 0, so nothing watches the release and fires a rollback")
    if missing:
        return _fail("rollback triggers", ev, "; ".join(missing) + f" (set them in {settings.file.name})")
    return _ok("rollback triggers", ev)


@dataclass(frozen=True)
class DrillFacts:
    envs: tuple[str, ...]              # environments whose drills count
    drills: tuple[DrillRow, ...]       # the ledger's drill rows


def judge_drills(f: DrillFacts, now: datetime, max_age_days: int) -> Item:
    where = " or ".join(f.envs)
    relevant = sorted((d for d in f.drills if d.procedure in DRILL_PROCEDURES and d.env in f.envs),
                      key=lambda d: d.started_at, reverse=True)
    passed = [d for d in relevant if d.outcome in DRILL_PASSED]
    now_ts = _utc(now).timestamp()
    if not passed:
        last = (f"; the last one ({relevant[0].procedure} on {relevant[0].env}, "
                f"{_stamp(datetime.fromtimestamp(relevant[0].started_at, timezone.utc))}) ended "
                f"{relevant[0].outcome}") if relevant else ""
        return _fail("rollback drill", f"{len(relevant)} rollback/hotfix drill(s) on {where} in the ledger",
                     f"the rollback procedure has never been exercised successfully on {where}{last}: "
                     f"run `invoke hotfix.drill --env={f.envs[-1]}`")
    d = passed[0]
    at = d.started_at
    age = now_ts - at
    ev = (f"last passed: {d.procedure} drill on {d.env} by {d.who or '?'}, "
          f"{_stamp(datetime.fromtimestamp(at, timezone.utc))} ({clock.age(age)} ago)")
    if relevant[0] is not d:
        ev += f"; a later drill ended {relevant[0].outcome}"
    if age > max_age_days * 86400:
        return _fail("rollback drill", ev, f"the last successful drill is {clock.age(age)} old (limit "
                                           f"golive.drill_max_age_days = {max_age_days}): run "
                                           f"`invoke hotfix.drill --env={f.envs[-1]}`")
    return _ok("rollback drill", ev)


# ---------------------------------------------------------------- secrets, parity, approvals

def judge_secrets(report: Any, env: str) -> Item:
    """A `secrets.RotationReport` judged for one environment: none overdue (or misdated)."""
    rows = [r for r in report.rows if r.env == env]
    bad = [r for r in rows if r.status in ("overdue", "invalid")]
    soon = [r for r in rows if r.status == "due soon"]
    ev = (f"{len(rows)} dated secret(s) of {env} on {report.today.isoformat()}: "
          f"{sum(r.status == 'overdue' for r in rows)} overdue, {len(soon)} due soon")
    if soon:
        ev += " (" + ", ".join(f"{r.variable} in {r.days_left} days" for r in soon) + ")"
    if bad:
        what = ", ".join(f"{r.variable} (due {r.due_on.isoformat()})" if r.status == "overdue"
                         else f"{r.variable} (rotated {r.last_rotated.isoformat()}, in the future)" for r in bad)
        return _fail("secrets", ev, f"overdue: {what}: rotate, then `invoke secrets.rotated --name=NAME "
                                    f"--env={env} --by=WHO`")
    return _ok("secrets", ev)


def judge_parity(report: Any) -> Item:
    """A `envs.ParityReport` (staging against this environment): no `same`-rule difference."""
    a, b = report.left_env, report.right_env
    same = [r for r in report.rows if r.rule == "same"]
    diffs = [r for r in report.differences if r.rule == "same"]
    ev = f"{a} vs {b}: {len(same) - len(diffs)} of {len(same)} `same`-rule variables match"
    others = [r for r in report.differences if r.rule != "same"]
    if others:
        ev += "; also " + ", ".join(f"{r.variable} ({r.rule}: {r.detail})" for r in others)
    if diffs:
        return _fail("staging parity", ev,
                     "differ: " + ", ".join(f"{r.variable} ({a} {r.left} vs {b} {r.right})" for r in diffs)
                     + f": a {a} dry run does not show what {b} will do (see `invoke env.parity`)")
    return _ok("staging parity", ev)


def judge_approvals(approvals: Sequence[ApprovalRow], required: Sequence[str], env: str, sha: str) -> Item:
    """Every required role approved this SHA (approvals of other commits do not count)."""
    mine = [a for a in approvals if a.env == env and _same_commit(a.sha, sha)]
    by_role: dict[str, list[str]] = {}
    for a in mine:
        by_role.setdefault(a.role, []).append(f"{a.by} {_stamp(datetime.fromtimestamp(a.at, timezone.utc))}")
    if not required:
        return _ok("approvals", f"none required (approvals.required_roles is empty); {len(mine)} recorded")
    ev = "; ".join(f"{role}: {', '.join(by_role[role])}" if role in by_role else f"{role}: -" for role in required)
    missing = [r for r in required if r not in by_role]
    if missing:
        return _fail("approvals", ev, f"no {', '.join(missing)} approval for {sha[:12]}: "
                                      + "; ".join(f"`invoke approve --env={env} --role={r} --by=NAME --sha={sha}`"
                                                  for r in missing))
    if assign(required, mine) is None:
        return _fail("approvals", ev, f"each required role needs its own person, but {shared_approver(required, mine)}")
    return _ok("approvals", ev)


# ---------------------------------------------------------------- running it

GateFn = Callable[[Settings, str, datetime], Any]


def _default_gate(settings: Settings, sha: str, now: datetime):
    return evidence.gate(settings.gate, sha, evidence.evidence_dir(settings), now)


def _guard(name: str, fn: Callable[[], Item]) -> Item:
    """Run one item; a DeployError (or an unreadable file) fails that item alone."""
    try:
        return fn()
    except DeployError as e:
        return _fail(name, "could not be checked", e.message + (f" ({e.hint})" if e.hint else ""))
    except OSError as e:
        return _fail(name, "could not be checked", f"{e.filename or ''}: {e.strerror or e}")


def run_checklist(settings: Settings, ledger: Ledger, sha: str, now: datetime, environ: Mapping[str, str], *,
                  gate: GateFn | None = None, verify_backup: Callable[[Path], Any] | None = None,
                  staging_environ: Mapping[str, str] | None = None) -> Checklist:
    """Run every item for `sha` on `settings.name` at `now`; never raises for a failing item.

    `environ` holds this environment's secrets (DECISION_LOG_DATABASE_URL, DATABASE_URL);
    `gate` defaults to `deploy.evidence.gate` over the environment's evidence folder."""
    now = _utc(now)
    gate = gate or _default_gate
    root = settings.root
    staging = settings.environment.staging_env
    dl = settings.decision_log

    def secrets_item() -> Item:
        matrix = envs.load_matrix(root)
        rotations = secrets_mod.read_rotations(secrets_mod.rotation_log_path(matrix))
        matrix.require_env(settings.name)
        return judge_secrets(secrets_mod.rotation_report(matrix, now.date(), rotations), settings.name)

    def parity_item() -> Item:
        matrix = envs.load_matrix(root)
        return judge_parity(envs.parity_from_files(matrix, root, left=staging, right=settings.name,
                                                   left_environ=staging_environ or {}, right_environ=environ))

    def drills_item() -> Item:
        rows = tuple(d for p in DRILL_PROCEDURES for d in ledger.drills(procedure=p, limit=200))
        envs_ = tuple(dict.fromkeys(e for e in (settings.name, staging) if e))
        return judge_drills(DrillFacts(envs_, rows), now, settings.golive.drill_max_age_days)

    checks: list[tuple[str, Callable[[], Item]]] = [
        ("evidence", lambda: judge_evidence(gate(settings, sha, now), sha, settings.gate.evidence_dir, settings.name)),
        ("decision log", lambda: judge_decision_log(
            decisionlog.health(Secret(environ[dl.url_var]) if environ.get(dl.url_var) else None, dl, now))),
        ("backup", lambda: judge_backup(gather_backup(settings, environ, verify_backup), now,
                                        settings.golive.backup_max_age_hours)),
        ("rollback triggers", lambda: judge_rollback_triggers(settings)),
        ("rollback drill", drills_item),
        ("secrets", secrets_item),
        ("staging parity", parity_item),
        ("approvals", lambda: judge_approvals(ledger.approvals(settings.name), settings.approvals.required_roles,
                                              settings.name, sha)),
    ]
    return Checklist(settings.name, sha, now, tuple(_guard(name, fn) for name, fn in checks))


def require(checklist: Checklist) -> Checklist:
    """The checklist if every item passes; else a DeployError carrying the table (for the promote flow)."""
    if checklist.ok:
        return checklist
    raise DeployError(
        f"The go-live checklist for {checklist.env} at {checklist.sha[:12]} fails:\n{render(checklist)}",
        f"Fix each failing item as its reason says, then run `invoke golive.check --env={checklist.env}` again.",
    )


# ---------------------------------------------------------------- rendering

def render(checklist: Checklist, width: int | None = 160) -> str:
    """The checklist as a terminal table no wider than `width`, and a verdict line (redacted)."""
    rows = [[i.name, i.verdict.upper(), i.evidence, i.reason] for i in checklist.items]
    table = fit(rows, ["item", "verdict", "evidence", "reason"], width, fmt="simple_grid", optional=("evidence",),
                wide=("reason",))
    n_ok = sum(i.ok for i in checklist.items)
    head = f"go-live checklist for {checklist.env} at {checklist.sha[:12]} ({_stamp(checklist.at)})"
    tail = (f"GO: all {n_ok} items pass" if checklist.ok else
            f"NO GO: {len(checklist.failing)} of {len(checklist.items)} items fail "
            f"({', '.join(i.name for i in checklist.failing)})")
    return redact(f"{head}\n{table}\n{tail}\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(checklist: Checklist) -> str:
    """docs/deployment/go_live_checklist.md: date, SHA, each item with its evidence and verdict."""
    from tabulate import tabulate

    rows = [[_cell(i.name), "ok" if i.ok else "**FAIL**", _cell(i.evidence), _cell(i.reason) or "-"]
            for i in checklist.items]
    table = tabulate(rows, headers=["Item", "Verdict", "Evidence", "Reason"], tablefmt="github",
                     disable_numparse=True)
    verdict = ("**GO**: every item passes." if checklist.ok else
               f"**NO GO**: {len(checklist.failing)} of {len(checklist.items)} items fail.")
    return redact(
        f"# Go-live checklist: {checklist.env}\n\n"
        f"<!-- Written by `invoke golive.check --env={checklist.env}`; regenerate rather than edit. -->\n\n"
        f"- Date: {_stamp(checklist.at)}\n"
        f"- Environment: `{checklist.env}`\n"
        f"- Commit: `{checklist.sha}`\n"
        f"- Verdict: {verdict}\n\n"
        "Each item is a check that ran against the real thing (evidence files, the ledger, the "
        "decision-log database, the backup restored into a scratch database), not a box ticked by hand.\n\n"
        f"{table}\n"
    )


def write_markdown(checklist: Checklist, root: Path) -> Path:
    """Write the checklist to `<root>/docs/deployment/go_live_checklist.md` (atomically); its path."""
    path = Path(root) / DOC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".go_live_checklist.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(render_markdown(checklist))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
