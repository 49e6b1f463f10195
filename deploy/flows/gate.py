"""`invoke evidence.collect` and `invoke gate`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from deploy import cli


def collect(sha: str, files: list[str], out: str | None, env: str | None) -> None:
    from deploy import evidence

    root = cli.root()
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


def gate(env: str, sha: str | None) -> int:
    from deploy import evidence
    from deploy.flows.common import git_sha

    s = cli.settings(env)
    full = git_sha(s.root, sha)
    v = evidence.gate(s.gate, full, evidence.evidence_dir(s), datetime.now(timezone.utc))
    cli.out(evidence.render(v))
    return 0 if v.ok else 5
