"""Promotion rights, decided from ledger rows: who counts as one person, whether the
required roles are filled by different people, and whether a staging pass still stands.

Pure functions over the ledger's rows (RunRow, ReleaseRow, ApprovalRow: deploy/ledger/); the approvals
step (deploy/flows/steps/_gates.py) and `invoke approve` read the ledger and call them.

- One person, one role: the required roles of a commit are filled by different people.
  Names are compared as people type them differently (`person`): Unicode-normalised,
  case-folded, runs of whitespace as one space, so "Pat", " pat " and "PAT" are one person.
- A staging pass stands until something later takes it back: the latest finished staging
  promotion of the commit must have succeeded (a later one of the same commit that failed,
  was undone or aborted takes it back), and the release it made must not have been rolled
  back since (`invoke rollback`, `hosts.rollback`). A new staging promotion restores it.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from deploy.ledger import RUN_FINAL, ApprovalRow, ReleaseRow, ReleaseStatus, RunStatus

FINAL = RUN_FINAL
ROLLBACK_FLOWS = ("rollback", "hosts.rollback")


def person(name: str) -> str:
    """The comparison key of a person's name: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name or "").casefold().split())


def assign(required: Sequence[str], approvals: Sequence[ApprovalRow]) -> dict[str, str] | None:
    """A different approver for each required role (role -> name as recorded), or None when
    the approvals cannot give every required role its own person (bipartite matching:
    at most a handful of roles, so the plain augmenting-path search is enough)."""
    who: dict[str, dict[str, str]] = {r: {} for r in required}
    for a in approvals:
        if a.role in who:
            who[a.role].setdefault(person(a.by), a.by)
    taken: dict[str, str] = {}      # person key -> role

    def place(role: str, seen: set[str]) -> bool:
        for key in who[role]:
            if key in seen:
                continue
            seen.add(key)
            if key not in taken or place(taken[key], seen):
                taken[key] = role
                return True
        return False

    for role in required:
        if not place(role, set()):
            return None
    return {role: who[role][key] for key, role in taken.items()}


def shared_approver(required: Sequence[str], approvals: Sequence[ApprovalRow]) -> str | None:
    """Why the required roles cannot each have their own person, e.g. "product and manager are
    approved only by pat" (None when they can, or when a role has no approval at all)."""
    have = {r: sorted({a.by for a in approvals if a.role == r}) for r in required}
    if any(not v for v in have.values()) or assign(required, approvals) is not None:
        return None
    names = sorted({b for v in have.values() for b in v})
    people = {person(b) for b in names}
    return (f"{' and '.join(required)} are approved only by {', '.join(names)} "
            f"({len(people)} {'person' if len(people) == 1 else 'people'} for {len(required)} required roles)")


def other_role_of(by: str, role: str, required: Sequence[str], approvals: Sequence[ApprovalRow]) -> ApprovalRow | None:
    """The approval by the same person as `by` of another required role than `role`, if any
    (an approval `invoke approve` refuses)."""
    if role not in required:
        return None
    me = person(by)
    for a in approvals:
        if a.role != role and a.role in required and person(a.by) == me:
            return a
    return None


@dataclass(frozen=True)
class Standing:
    """A staging pass of a commit: `run` the succeeded promotion that counts, or `refusal`
    (what took it back, one sentence) when none does; both None when there never was one."""

    run: Any = None
    refusal: str | None = None


def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch)) if epoch else "?"


def staging_standing(sha: str, promotions: Sequence[Any], releases: Sequence[ReleaseRow],
                     later_runs: Sequence[Any], step_results: Mapping[str, str] | None = None) -> Standing:
    """Judge the staging pass of `sha` (all arguments read from the staging environment's ledger).

    `promotions`: its promote runs of `sha`; `releases`: its release rows; `later_runs`: its
    runs of any flow (to name a rollback); `step_results`: run id -> the text of its steps'
    results (a rollback names the release it left there)."""
    done = sorted((r for r in promotions if r.status in FINAL), key=lambda r: r.started_at, reverse=True)
    ok = next((r for r in done if r.status == RunStatus.SUCCEEDED), None)
    if ok is None:
        return Standing()
    later = [r for r in done if r.started_at > ok.started_at]
    if later:
        r = later[0]
        return Standing(refusal=(
            f"a later staging promotion of {sha[:12]}, run {r.id} ({when(r.started_at)}, by {r.who}), ended "
            f"{r.status.replace('_', ' ')}" + (f" at step {r.failed_step}" if r.failed_step else "")
            + f": the earlier pass (run {ok.id}) no longer stands"))
    row = next((x for x in releases if x.run_id == ok.id), None)
    if row is None or row.status != ReleaseStatus.ROLLED_BACK:
        return Standing(run=ok)
    rid = row.release_id
    after = sorted((r for r in later_runs if r.flow in ROLLBACK_FLOWS and r.started_at >= (ok.finished_at or 0)),
                   key=lambda r: r.started_at)
    results = step_results or {}
    named = next((r for r in after if rid in results.get(r.id, "")), None) or (after[0] if after else None)
    by = (f"by {named.flow} run {named.id} ({when(named.started_at)}, by {named.who})" if named
          else "in the ledger (no rollback run of this ledger names it)")
    return Standing(refusal=f"its staging release {rid} (run {ok.id}) was rolled back {by}")
