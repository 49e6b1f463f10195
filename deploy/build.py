"""Build the app once per commit and pack it into a content-addressed artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Artifact:
    """A packed build: `path` is a .tar.gz whose top level holds the built app and
    `RELEASE.json` (release_id, git_sha, built_at, files)."""

    path: Path
    sha256: str          # of the tarball, 64 lowercase hex
    release_id: str      # "<UTC yyyymmddHHMMSS>-<sha7>", valid as a directory and a Shopify version
    git_sha: str
    built_at: str        # ISO 8601 UTC
