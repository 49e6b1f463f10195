"""The image step (release target "image"): the build's artifact as a container image in the
registry, named by digest, the same digest staging proved.

It runs right after `build` and puts the `ImageRef` fact (deploy.facts) into the run's state:
the release target (deploy/targets/image.py) reads `state.get(ImageRef).reference` and runs
that digest on the hosts; `PromotionRecord.image_digest` reads it back for rollback and for
production's check. A push changes no environment (the registry gains a tag), so there is no
undo: an undone run leaves the image in the registry, where a retry finds it. The build, the push
and the commands a dry run shows are deploy/flows/steps/work/image.py's (over deploy/images/)."""

from __future__ import annotations

from typing import Mapping

from deploy.config import IMAGE_TARGET, Settings
from deploy.engine import Step, later


def ships_image(s: Settings) -> bool:
    """Does this environment release container images (`[release] target = "image"`)?"""
    return s.release.target == IMAGE_TARGET


def image(s: Settings, sha: str, environ: Mapping[str, str], ledger=None) -> Step:
    return Step("image", f"the artifact as a container image in {s.image.registry}/{s.image.repository}, tagged "
                         "with the commit, pushed once per build key, named by digest",
                run=later("deploy.flows.steps.work.image:image", s, sha, environ, ledger),
                shows=later("deploy.flows.steps.work.image:shows", s, sha, environ))
