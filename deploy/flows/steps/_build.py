"""The build step: the commit built (or reused) as one artifact, the same one staging proved; the
build itself runs from deploy/flows/steps/work/build.py."""

from __future__ import annotations

from deploy import build as b
from deploy.config import Settings
from deploy.engine import Step, Touch, later
from deploy.locations import artifacts_dir, build_key, checkout_if_there, find_artifact

from deploy.flows.steps._common import argv_line


def build(s: Settings, sha: str, release_id: str, ledger=None) -> Step:
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
                         "reused when already built, packed once",
                run=later("deploy.flows.steps.work.build:build", s, sha, release_id, ledger), shows=shows)
