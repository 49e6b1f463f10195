"""The build step: the commit built (or reused) as one artifact, the same one staging proved."""

from __future__ import annotations

from deploy import config, disk, source
from deploy import build as b
from deploy.config import Settings
from deploy.engine import Step, StepContext, Touch
from deploy.facts import ArtifactFacts, PromotionRecord
from deploy.errors import BuildFailed
from deploy.ledger import ReleaseStatus, RunStatus
from deploy.locations import artifacts_dir, build_key, checkout_if_there, find_artifact, source_dir
from deploy.source import commit_time

from deploy.flows.steps._common import argv_line


def build(s: Settings, sha: str, release_id: str, ledger=None) -> Step:
    def run(ctx: StepContext):
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

    def shows() -> list[Touch]:
        art = find_artifact(s, sha)
        if art is not None:
            return [Touch("local", f"reuse {art.path} (sha256 {art.sha256}), built for {sha[:12]}")]
        src = checkout_if_there(s, sha)
        name = build_key(s, sha).name
        out = [] if src else [Touch("local", f"git archive {sha} (the app folder) -> .deploy/src/{name}")]
        where = "local" if src else "local, read from the app folder now; the commit's own at run time"
        out += [Touch(where, argv_line(c)) for c in b.build_commands(src or s.app_dir, s.app)]
        return out + [Touch("local", f"pack -> {artifacts_dir(s)}/<sha256>.tar.gz")]

    return Step("build", "the app's release contract ([app]: install, build, prune dev deps) of the commit, "
                         "reused when already built, packed once", run=run, shows=shows)


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
