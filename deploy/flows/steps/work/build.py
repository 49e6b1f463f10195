"""The build step when it runs: the commit's artifact reused or built once per build key, checked
against the one staging proved, and old builds, checkouts and cache entries pruned."""

from __future__ import annotations

from deploy import config, disk, source
from deploy import build as b
from deploy.config import Settings
from deploy.engine import StepContext
from deploy.errors import BuildFailed
from deploy.facts import ArtifactFacts, PromotionRecord
from deploy.ledger import ReleaseStatus, RunStatus
from deploy.locations import artifacts_dir, build_key, source_dir
from deploy.source import commit_time


def build(ctx: StepContext, s: Settings, sha: str, release_id: str, ledger) -> str:
    """The artifact of `sha` (reused, or built from its checkout), recorded as ArtifactFacts."""
    store = artifacts_dir(s)
    key = build_key(s, sha)
    art = b.find(store, key)
    reused = art is not None
    if art is None:
        src = source_dir(s, sha)
        result = b.build(src, sha, store, contract=s.app, now=commit_time(s.app_dir, sha),
                         app_folder=s.app_dir, key=key)
        art, reused = result.artifact, result.reused
    if s.environment.requires_staging_run and ledger is not None:
        staged = ledger.runs(s.environment.staging_env, flow="promote", status=RunStatus.SUCCEEDED, sha=sha, limit=1)
        want = PromotionRecord.of(staged[0]).artifact_sha256 if staged else None
        if want and want != art.sha256:
            raise BuildFailed(
                f"The artifact for {sha[:12]} is {art.sha256[:16]}, but {s.environment.staging_env} tested "
                f"{want[:16]}: production must get exactly what staging proved.",
                "Find out why the artifact changed (.deploy/artifacts; a build is keyed by commit, "
                f"environment.app_dir and the [app] build keys {', '.join(b.CONTRACT_FIELDS)}, which must be "
                f"the same in {s.file.name} and {s.environment.staging_env}.toml), or promote this build to "
                "staging again.",
            )
    ctx.put(ArtifactFacts.of(art))
    keep = {sha, *kept_shas(s, ledger)}
    pruned = b.prune(store, s.app.keep_builds, keep)
    pruned += source.prune(s.root / ".deploy" / "src", s.app.keep_builds, keep)
    trim = disk.keep_within(s, keep)   # [local] max_deploy_mb: the oldest go first, never live or previous
    return (f"{'reused' if reused else 'built'} {art.path.name[:16]}… ({art.path.stat().st_size // 1024} KiB)"
            + (f"; pruned {len(pruned)} old build(s)" if pruned else "") + (f"; {trim.text()}" if trim.text() else ""))


def kept_shas(s: Settings, ledger) -> set[str]:
    """Git SHAs whose builds must survive pruning: live and previous in every environment,
    and those of runs still in progress (another environment's promotion may be building)."""
    if ledger is None:
        return set()
    out: set[str] = set()
    for env in config.environments(s.root):
        rows = ledger.releases(env, limit=20)
        live = [r for r in rows if r.status == ReleaseStatus.LIVE]
        older = [r for r in rows if r.status == ReleaseStatus.SUPERSEDED]
        out.update(r.sha for r in (live + older[:1]) if r.sha)
    out.update(r.sha for r in ledger.runs(status=RunStatus.RUNNING, limit=100) if r.sha)
    return out
