"""`invoke evidence.collect` and `invoke gate`."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from deploy import cli

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def collect(sha: str, files: list[str], out: str | None, env: str | None) -> None:
    from deploy import evidence

    root = cli.root()
    if not FULL_SHA.match(sha or ""):
        # A ref (HEAD, a branch, a short SHA): the commit it names in the app's repository,
        # the same one `invoke gate` and `invoke promote` resolve it to.
        from deploy.flows.common import app_sha, git_sha

        sha = app_sha(cli.settings(env), sha) if env else git_sha(root, sha)
    if out:
        target = Path(out)
    elif env:
        target = evidence.evidence_dir(cli.settings(env)) / evidence.MANIFEST
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
        cli.out(f"{e.kind:<11} {e.path}  sha256 {e.sha256[:16]}  made {e.created_at:%Y-%m-%d %H:%M:%S}Z")
    cli.out(f"wrote {target} for {m.sha[:12]}")


def gate(env: str, sha: str | None, as_json: bool = False) -> int:
    from deploy import evidence
    from deploy.flows.common import app_sha

    s = cli.settings(env)
    full = app_sha(s, sha)
    v = evidence.gate(s.gate, full, evidence.evidence_dir(s), datetime.now(timezone.utc))
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.gate(v, s.name))
    else:
        cli.out(evidence.render(v, width=cli.width()))
    return 0 if v.ok else 5
