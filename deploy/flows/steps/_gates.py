"""The permission steps: the evidence gate, and the rights a promotion needs (a standing
staging pass, each required role approved by its own person)."""

from __future__ import annotations

from deploy import approvals as approval_rules
from deploy.config import Settings
from deploy.engine import Step, StepContext, later
from deploy.errors import ApprovalMissing


def approvals(s: Settings, sha: str, ledger) -> Step:
    def run(ctx: StepContext):
        return check_promotion_rights(s, sha, ledger)

    return Step("approvals", f"staging passed {sha[:12]}; approvals {', '.join(s.approvals.required_roles) or '-'}",
                run=run)


def check_promotion_rights(s: Settings, sha: str, ledger) -> str:
    """The rights a change of `s` bringing `sha` forward needs (promote's approvals step, and
    every single primitive that brings a commit to the environment): a staging pass that
    still stands (deploy/approvals.py) and each required role approved by its own person."""
    notes = []
    if s.environment.requires_staging_run:
        staging = s.environment.staging_env
        again = (f"Promote it to {staging} again (a new pass): invoke promote --to={staging} --sha={sha}.")
        promotions = ledger.runs(staging, flow="promote", sha=sha, limit=50)
        rollbacks = [r for f in approval_rules.ROLLBACK_FLOWS for r in ledger.runs(staging, flow=f, limit=50)]
        texts = {r.id: " ".join(x.result or "" for x in ledger.steps(r.id)) for r in rollbacks}
        stand = approval_rules.staging_standing(sha, promotions, ledger.releases(staging, limit=200), rollbacks,
                                                texts)
        if stand.refusal:
            raise ApprovalMissing(f"{sha[:12]} has no standing {staging} pass: {stand.refusal}.", again)
        if stand.run is None:
            raise ApprovalMissing(
                f"{sha[:12]} has no succeeded {staging} promotion in the ledger.",
                f"Promote it to {staging} first: invoke promote --to={staging} --sha={sha}.",
            )
        notes.append(f"staging run {stand.run.id}")
    need = set(s.approvals.required_roles)
    if need:
        given = ledger.approvals(s.name, sha)
        have = {a.role for a in given}
        missing = [r for r in s.approvals.required_roles if r not in have]
        if missing:
            raise ApprovalMissing(
                f"{s.name} needs approvals of {sha[:12]} by role(s) {', '.join(missing)}.",
                f"Record them: invoke approve --env={s.name} --sha={sha} --role={missing[0]} --by=NAME.",
            )
        who = approval_rules.assign(s.approvals.required_roles, given)
        if who is None:
            raise ApprovalMissing(
                f"{s.name} needs each required role approved by its own person, but "
                f"{approval_rules.shared_approver(s.approvals.required_roles, given)}.",
                f"Another person approves one of the roles: invoke approve --env={s.name} --sha={sha} "
                f"--role=ROLE --by=NAME.")
        notes.append("approved by " + ", ".join(f"{r}: {who[r]}" for r in s.approvals.required_roles))
    return "; ".join(notes) or "nothing required"


def gate(s: Settings, sha: str) -> Step:
    kinds = ", ".join(s.gate.required)
    skip = None if kinds else f"gate.required is empty in {s.file.name}"
    return Step("gate", f"evidence for {sha[:12]}: {kinds}", run=later("deploy.flows.steps.work.gates:gate", s, sha),
                skip=skip)
