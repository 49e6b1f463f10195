"""The only part of `init` that changes the disk: `write` (never replaces an existing file
unless forced, and says which it kept) and `add_ignore_rules` (.gitignore lines appended)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class WriteResult:
    written: tuple[str, ...]
    kept: tuple[str, ...]            # existed and were left alone (no --force)


IGNORE_HEADER = "# deploy toolkit: its state, local secrets and the local database stay out of git"


def add_ignore_rules(gitignore: Path, rules: Sequence[str]) -> None:
    """Append `rules` to `gitignore` (created when missing) under IGNORE_HEADER; what the
    file holds is kept as it is, and a rule already in it is not written twice."""
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    new = [r for r in rules if r not in have]
    if not new:
        return
    lines = ([""] if text.strip() else []) + ([IGNORE_HEADER] if IGNORE_HEADER not in have else []) + new
    sep = "" if not text or text.endswith("\n") else "\n"
    tmp = gitignore.with_name(".gitignore.init-tmp")
    tmp.write_text(text + sep + "\n".join(lines) + "\n", encoding="utf-8")
    if gitignore.exists():
        os.chmod(tmp, gitignore.stat().st_mode & 0o777)
    os.replace(tmp, gitignore)


def write(root: Path, files: Mapping[str, str], *, force: bool = False) -> WriteResult:
    """Write `files` under `root`; an existing file is kept unless `force` (then replaced)."""
    written, kept = [], []
    for rel, text in files.items():
        p = Path(root) / rel
        if p.exists() and not force:
            kept.append(rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.init-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        written.append(rel)
    return WriteResult(tuple(written), tuple(kept))
