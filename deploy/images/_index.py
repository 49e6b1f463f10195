"""What was pushed, so a second promotion of the same build key neither builds nor pushes:
one small JSON file per (registry, repository, tag) under .deploy/images/index/, mode 0600 in a
0700 folder. It holds names and the digest only (no credential)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

from deploy.facts import ImageRef

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def images_dir(root: Path) -> Path:
    return root / ".deploy" / "images"


def _entry(root: Path, registry: str, repository: str, tag: str) -> Path:
    h = hashlib.sha256(f"{registry}/{repository}:{tag}".encode()).hexdigest()[:24]
    return images_dir(root) / "index" / f"{h}.json"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def read(root: Path, registry: str, repository: str, tag: str) -> ImageRef | None:
    """The image pushed under that tag, as recorded here, or None (none, or unreadable)."""
    try:
        data = json.loads(_entry(root, registry, repository, tag).read_text(encoding="utf-8"))
        ref = ImageRef(**{k: data[k] for k in ("reference", "digest", "registry", "repository", "tag")})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (ref.registry, ref.repository, ref.tag) != (registry, repository, tag) or not DIGEST.match(ref.digest):
        return None
    return ref


def write(root: Path, ref: ImageRef, **extra: str) -> Path:
    """Record `ref` (atomically: a temp file renamed over the entry)."""
    path = _entry(root, ref.registry, ref.repository, ref.tag)
    _private_dir(images_dir(root))
    _private_dir(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**asdict(ref), **extra}, f, sort_keys=True, indent=1)
    os.replace(tmp, path)
    return path


def forget(root: Path, ref: ImageRef) -> None:
    """Drop the entry (the registry no longer has the digest)."""
    try:
        _entry(root, ref.registry, ref.repository, ref.tag).unlink()
    except FileNotFoundError:
        pass
