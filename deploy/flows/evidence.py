"""`invoke evidence.collect`: the manifest binding evidence files to a commit."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from deploy import evidence
from deploy.flows.common import app_sha, git_sha
from deploy.services import Services

FULL_SHA = re.compile(r"^[0-9a-f]{40}\Z")


def collect(svc: Services, sha: str, files: list[str], out: str | None, env: str | None) -> None:
    root = svc.root
    if not FULL_SHA.match(sha or ""):
        # A ref (HEAD, a branch, a short SHA): the commit it names in the app's repository,
        # the same one `invoke gate` and `invoke promote` resolve it to.
        sha = app_sha(svc.settings(env), sha) if env else git_sha(root, sha)
    if out:
        target = Path(out)
    elif env:
        target = evidence.evidence_dir(svc.settings(env)) / evidence.MANIFEST
    else:
        target = root / "evidence" / evidence.MANIFEST
    if not files:
        folder = target.parent
        files = sorted(str(p) for p in folder.iterdir() if p.name != evidence.MANIFEST and not p.name.startswith("."))\
            if folder.is_dir() else []
        if folder.is_dir() and (folder / ".lighthouseci").is_dir():
            files.append(str(folder / ".lighthouseci"))
    m = evidence.collect(sha, files, out=target, now=datetime.now(timezone.utc))
    for e in m.entries:
        svc.term.out(f"{e.kind:<11} {e.path}  sha256 {e.sha256[:16]}  made {e.created_at:%Y-%m-%d %H:%M:%S}Z")
    svc.term.out(f"wrote {target} for {m.sha[:12]}")
