"""The image step when it runs (release target "image"): the artifact built into an image once per
build key, pushed, and its digest checked against the one staging proved; and the commands a dry
run shows for it (deploy/images/ builds both)."""

from __future__ import annotations

from typing import Mapping

from deploy import images
from deploy.config import Settings
from deploy.engine import StepContext, Touch
from deploy.errors import ImageFailed
from deploy.facts import ArtifactFacts, PromotionRecord
from deploy.ledger import RunStatus


def staged_digest(s: Settings, sha: str, ledger) -> str | None:
    """The image digest the environment's staging run proved for `sha` (None: none recorded)."""
    if ledger is None or not s.environment.requires_staging_run:
        return None
    staged = ledger.runs(s.environment.staging_env, flow="promote", status=RunStatus.SUCCEEDED, sha=sha, limit=1)
    return PromotionRecord.of(staged[0]).image_digest if staged else None


def image(ctx: StepContext, s: Settings, sha: str, environ: Mapping[str, str], ledger) -> str:
    """The commit's image by digest (built and pushed, or found), recorded as the run's ImageRef."""
    facts = ctx.get(ArtifactFacts)
    result = images.build_image(s, facts.artifact() if facts else None, environ, commit=sha)
    ref = result.ref
    want = staged_digest(s, sha, ledger)
    if want and want != ref.digest:
        raise ImageFailed(
            f"The image of {sha[:12]} is {ref.digest}, but {s.environment.staging_env} ran {want}: production "
            "must run exactly the image staging proved.",
            f"Find out why the image changed (image.registry, image.repository, image.build and image.base, and "
            f"the [app] keys, must be the same in {s.file.name} and {s.environment.staging_env}.toml; the "
            f"registry must still hold {want}), or promote this commit to {s.environment.staging_env} again.")
    ctx.put(ref)
    return f"{'reused' if result.reused else 'built and pushed'} {ref.reference}"


def shows(s: Settings, sha: str, environ: Mapping[str, str]) -> list[Touch]:
    """What the image step would run: the registry check, the build and push (or the reuse)."""
    return [Touch(c.where, c.what) for c in images.image_shows(s, sha, environ)]
