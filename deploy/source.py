"""The exact sources of one commit: which commit (HEAD, a clean tree, a release id naming
it) and its files, extracted once: what the build step builds.

Building from `git archive <sha>` rather than the working tree means a dirty checkout can
never produce an artifact that is cached under a commit it does not match.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from deploy import trash
from deploy.errors import BuildFailed, SettingsError
from deploy.proc import child_env, run

GIT_SHA = re.compile(r"^[0-9a-f]{7,64}$")


# Folder -> its repository's top level, as git answered once in this process: a plan asks for
# it several times (build key, checkout, migrations), each a `git rev-parse` otherwise (7 per
# `promote --dry-run`). Only answers are kept; a folder that is not in a repository is asked again.
_TOPS: dict[str, Path] = {}


def repo_of(app_dir: Path) -> tuple[Path, str]:
    """(repository top level, app_dir relative to it)."""
    if not app_dir.is_dir():
        raise SettingsError(f"The app folder {app_dir} does not exist.",
                            "Set environment.app_dir in env/<name>.toml to the app's folder.")
    here = app_dir.resolve()
    top = _TOPS.get(str(here))
    if top is None or not (top / ".git").exists():
        r = run(["git", "-C", str(app_dir), "rev-parse", "--show-toplevel"])
        if not r.ok:
            raise SettingsError(f"{app_dir} is not inside a git repository, so no commit can be deployed from it.",
                                "Deploy from a git checkout of the app.")
        top = _TOPS[str(here)] = Path(r.stdout.strip()).resolve()
    return top, os.path.relpath(here, top)


def checkout(app_dir: Path, sha: str, dest_root: Path, name: str | None = None) -> Path:
    """Extract `app_dir` as of `sha` under `dest_root/<name>/` (once; default name: the SHA)
    and return its path. A checkout is also where its build runs, so the flows name it by
    the build's key (deploy.build.BuildKey: commit, app folder, contract): two apps of one
    repository, or one app under two contracts, never share one."""
    top, rel = repo_of(app_dir)
    target = dest_root / (name or sha)
    app = target / rel if rel != "." else target
    if (target / ".complete").exists():
        return app
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=dest_root))
    try:
        p = subprocess.run(["git", "-C", str(top), "archive", "--format=tar", sha, "--", rel],
                           capture_output=True, timeout=300, env=child_env())
        if p.returncode != 0:
            raise BuildFailed(f"git archive of {sha[:12]}:{rel} failed: {p.stderr.decode(errors='replace').strip()}",
                              "Is the commit fetched, and does it contain the app folder?")
        tar_path = tmp / ".src.tar"
        tar_path.write_bytes(p.stdout)
        with tarfile.open(tar_path) as tf:
            tf.extractall(tmp, filter="data")
        tar_path.unlink()
        (tmp / ".complete").write_text(sha)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same checkout first (only complete checkouts are
            # renamed into place): use theirs, never remove it under them.
            if not (target / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return app


def commit_time(app_dir: Path, sha: str):
    """The commit's time (UTC): the build's `built_at`, so rebuilding a commit reproduces
    its artifact byte for byte (the SOURCE_DATE_EPOCH idea)."""
    from datetime import datetime, timezone

    r = run(["git", "-C", str(app_dir), "show", "-s", "--format=%ct", sha])
    if not r.ok or not r.stdout.strip().isdigit():
        raise BuildFailed(f"Cannot read the time of commit {sha[:12]}: {r.tail()}", "Is the commit fetched?")
    return datetime.fromtimestamp(int(r.stdout.strip()), timezone.utc)


def prune(dest_root: Path, keep: int, protect=()) -> list[str]:
    """Delete all but the newest `keep` finished checkouts under `dest_root` (a real app's
    source plus node_modules is hundreds of MB per commit), never one of a commit whose SHA
    is in `protect` (a checkout's name starts with its SHA); returns the names removed.
    Checkouts still being extracted (hidden temp folders) belong to a running build and are
    left alone."""
    if keep < 1:
        raise SettingsError(f"keep = {keep}: at least 1 checkout must be kept.", "Use app.keep_builds >= 1.")
    if not dest_root.is_dir():
        return []
    done = []
    for d in dest_root.iterdir():
        marker = d / ".complete"
        if d.is_dir() and not d.name.startswith(".") and marker.is_file():
            done.append((marker.stat().st_mtime, d.name))
    done.sort(reverse=True)
    protect = set(protect)
    doomed = [name for _, name in done[keep:] if name.split("-", 1)[0] not in protect]
    for name in doomed:
        trash.discard(dest_root / name)   # renamed aside now, deleted in the background (deploy.trash)
    return doomed


# ---------------------------------------------------------------- which commit

def new_release_id(git_sha: str, now: datetime) -> str:
    """`<UTC yyyymmddHHMMSS>-<sha7>`: sorts by time, names its commit, and is valid as a
    directory name and as a Shopify `--version` ([a-zA-Z0-9._-], <= 100 chars)."""
    check_sha(git_sha)
    if now.tzinfo is None:
        raise ValueError("new_release_id needs an aware datetime (UTC)")
    return f"{now.astimezone(timezone.utc):%Y%m%d%H%M%S}-{git_sha[:7]}"


def git_head(root: str | Path) -> str:
    """The full SHA of HEAD in `root`, or SettingsError saying why there is none."""
    r = run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
    if r.ok and GIT_SHA.match(r.stdout.strip()):
        return r.stdout.strip()
    probe = run(["git", "-C", str(root), "rev-parse", "--git-dir"])
    if not probe.ok:
        raise SettingsError(
            f"{root} is not inside a git repository, so there is no commit to deploy ({probe.tail(2)}).",
            "Run from a clone of the project, or pass --sha=<commit>.",
        )
    raise SettingsError(
        f"{root}: the git repository has no commits yet, so there is no SHA to deploy.",
        "Commit the project first (git commit), then run again.",
    )


def git_dirty(root: str | Path) -> list[str]:
    """Paths `git status` reports as changed or untracked (ignored files excluded)."""
    r = run(["git", "-C", str(root), "status", "--porcelain=v1", "--untracked-files=normal"])
    if not r.ok:
        raise SettingsError(f"{root}: `git status` failed: {r.tail(3)}", "Run from a clone of the project.")
    return [line[3:] for line in r.stdout.splitlines() if line.strip()]


def git_is_clean(root: str | Path) -> bool:
    """True when the working tree matches HEAD: the build will be exactly that commit."""
    return not git_dirty(root)


def check_sha(git_sha: str) -> None:
    """SettingsError unless `git_sha` looks like a commit SHA."""
    if not isinstance(git_sha, str) or not GIT_SHA.match(git_sha):
        raise SettingsError(
            f"{git_sha!r} is not a git commit SHA (7 to 64 lowercase hex digits).",
            "Pass the full SHA, e.g. --sha=$(git rev-parse HEAD).",
        )
