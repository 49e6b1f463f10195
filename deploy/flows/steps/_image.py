"""The image step (release target "image"): the build's artifact as a container image in the
registry, named by digest, the same digest staging proved.

It runs right after `build` and puts the `ImageRef` fact (deploy.facts) into the run's state:
the release target (deploy/targets/image.py) reads `state.get(ImageRef).reference` and runs
that digest on the hosts; `PromotionRecord.image_digest` reads it back for rollback and for
production's check. A push changes no environment (the registry gains a tag), so there is no
undo: an undone run leaves the image in the registry, where a retry finds it."""

from __future__ import annotations

from typing import Mapping

from deploy import images
from deploy.config import IMAGE_TARGET, Settings
from deploy.engine import Step, StepContext, Touch
from deploy.errors import ImageFailed
from deploy.facts import ArtifactFacts, ImageRef, PromotionRecord
from deploy.ledger import RunStatus


def ships_image(s: Settings) -> bool:
    """Does this environment release container images (`[release] target = "image"`)?"""
    return s.release.target == IMAGE_TARGET


def staged_digest(s: Settings, sha: str, ledger) -> str | None:
    """The image digest the environment's staging run proved for `sha` (None: none recorded)."""
    if ledger is None or not s.environment.requires_staging_run:
        return None
    staged = ledger.runs(s.environment.staging_env, flow="promote", status=RunStatus.SUCCEEDED, sha=sha, limit=1)
    return PromotionRecord.of(staged[0]).image_digest if staged else None


def image(s: Settings, sha: str, environ: Mapping[str, str], ledger=None) -> Step:
    def run(ctx: StepContext):
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

    def shows() -> list[Touch]:
        return [Touch(c.where, c.what) for c in images.image_shows(s, sha, environ)]

    return Step("image", f"the artifact as a container image in {s.image.registry}/{s.image.repository}, tagged "
                         "with the commit, pushed once per build key, named by digest",
                run=run, shows=shows)
