"""The evidence manifest binds report files to one commit, and the gate that reads it.

    evidence/
      manifest.json        {sha, collected_at, artifacts: [{kind, format, path, created_at, sha256, size, files}]}
      vitest.json          paths in the manifest are relative to this folder; files given
      playwright.json      to `collect` from elsewhere are copied in, so the folder is the
      .lighthouseci/       whole CI artifact

`collect` runs at the end of the CI test job; `gate` refuses evidence for another commit,
evidence whose bytes changed since, evidence older than the policy allows, and missing
kinds, then judges every report. Reading and hashing happen here; deciding is pure
(_reports, _policy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterable

from deploy.config import GateSection, Settings
from deploy.errors import GateClosed
from deploy.evidence._policy import GateRow, GateVerdict, error_row, judge, render, verdict
from deploy.evidence._reports import KINDS, EvidenceError, Report, load_json, parse_report

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "occ-deploy evidence manifest"
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")     # SHA-1 or SHA-256 object names, full length


@dataclass(frozen=True)
class ManifestEntry:
    kind: str
    format: str
    path: str                           # POSIX, relative to the manifest's folder
    created_at: datetime                # when the tool made the report (its own timestamp), else the file's mtime
    sha256: str
    size: int
    files: tuple[tuple[str, str], ...] = ()   # folders: (name, sha256) of each file in it


@dataclass(frozen=True)
class Manifest:
    sha: str
    collected_at: datetime
    entries: tuple[ManifestEntry, ...]


# ---------------------------------------------------------------- reading artifacts

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_folder(path: Path) -> dict[str, bytes]:
    # Only the folder's own files: Lighthouse CI writes its runs, reports and manifest flat.
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def _folder_digest(files: dict[str, bytes]) -> tuple[str, tuple[tuple[str, str], ...]]:
    listing = tuple((name, _sha256(data)) for name, data in sorted(files.items()))
    # One digest for the folder: sha256 over `sha256sum`-style lines, so adding,
    # removing or editing any file changes it.
    return _sha256("".join(f"{h}  {n}\n" for n, h in listing).encode()), listing


def _load(path: Path, shown: str) -> tuple[bytes | dict[str, bytes], str, int, tuple[tuple[str, str], ...]]:
    """(content, sha256, size, per-file hashes) of a report file or a Lighthouse CI folder."""
    try:
        if path.is_dir():
            files = _read_folder(path)
            digest, listing = _folder_digest(files)
            return files, digest, sum(len(d) for d in files.values()), listing
        data = path.read_bytes()
    except FileNotFoundError:
        raise EvidenceError(shown, "no such file or folder.") from None
    except OSError as e:
        raise EvidenceError(shown, f"cannot be read ({e.strerror or e}).") from None
    return data, _sha256(data), len(data), ()




def _format(report: Report) -> str:
    return report.format


# ---------------------------------------------------------------- collect

def check_sha(sha: str) -> str:
    """A full, lower-case commit SHA, or a GateClosed error saying what was wrong with it."""
    s = (sha or "").strip().lower()
    if not SHA.match(s):
        raise GateClosed(f"--sha={sha!r} is not a full commit SHA (40 hex characters).",
                         "Pass the output of `git rev-parse HEAD` (in GitHub Actions: ${{ github.sha }}).")
    return s


def collect(sha: str, files: Iterable[str | Path], *, out: str | Path = Path("evidence") / MANIFEST,
            now: datetime) -> Manifest:
    """Record which reports belong to commit `sha`: kind (by content), path, time, SHA-256.

    Files outside the manifest's folder are copied into it (a Lighthouse CI folder
    whole), so that folder is everything a later gate needs. Unreadable or unknown files
    are refused here, at the end of the test job, rather than at deploy time.
    """
    sha = check_sha(sha)
    out = Path(out)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    given = [Path(f) for f in files]
    if not given:
        raise EvidenceError(str(out), "no evidence files were given to collect.",
                            "Name the report files: vitest.json playwright.json .lighthouseci/")
    entries: list[ManifestEntry] = []
    taken: dict[str, Path] = {}
    for src in given:
        content, digest, size, listing = _load(src, str(src))
        report = parse_report(content, str(src))
        try:
            rel = src.resolve().relative_to(folder.resolve())
        except ValueError:
            rel = Path(src.name)
            dest = folder / rel
            if dest.resolve() != src.resolve():
                if dest.is_dir():
                    shutil.rmtree(dest)
                if src.is_dir():
                    shutil.copytree(src, dest)
                else:
                    shutil.copyfile(src, dest)
        key = rel.as_posix()
        if key in taken and taken[key].resolve() != src.resolve():
            raise EvidenceError(str(src), f"has the same name as {taken[key]} in {folder}.",
                                "Rename one of them before collecting.")
        taken[key] = src
        made = report.started_at
        if made is None:
            made = datetime.fromtimestamp(src.stat().st_mtime, tz=timezone.utc)
        entries.append(ManifestEntry(kind=report.kind, format=_format(report), path=key, created_at=made,
                                     sha256=digest, size=size, files=listing))
    manifest = Manifest(sha=sha, collected_at=now, entries=tuple(entries))
    write_manifest(manifest, out)
    return manifest


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def write_manifest(manifest: Manifest, out: Path) -> None:
    doc = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "sha": manifest.sha,
        "collected_at": _iso(manifest.collected_at),
        "artifacts": [
            {"kind": e.kind, "format": e.format, "path": e.path, "created_at": _iso(e.created_at),
             "sha256": e.sha256, "size": e.size, **({"files": dict(e.files)} if e.files else {})}
            for e in manifest.entries
        ],
    }
    # Write beside the target and rename: a reader never sees half a manifest.
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, out)


def render_manifest(manifest: Manifest) -> str:
    """What `collect` recorded, as a table for the task to print."""
    from tabulate import tabulate

    rows = [[e.kind, e.format, e.path, _iso(e.created_at), e.sha256[:16], f"{e.size:,}"] for e in manifest.entries]
    return (tabulate(rows, headers=["kind", "format", "path", "made", "sha256", "bytes"], tablefmt="simple")
            + f"\nevidence for commit {manifest.sha}, collected {_iso(manifest.collected_at)}")


def read_manifest(path: Path, shown: str = MANIFEST) -> Manifest:
    """Read and validate evidence/manifest.json; every problem is an EvidenceError naming it."""
    content, _, _, _ = _load(path, shown)
    if isinstance(content, dict):
        raise EvidenceError(shown, "is a folder, not the manifest file.")
    doc = load_json(content, shown)
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise EvidenceError(shown, "not an evidence manifest written by `invoke evidence.collect`.")
    if doc.get("version") != 1:
        raise EvidenceError(shown, f"manifest version {doc.get('version')!r} is not one this toolkit reads (1).")
    sha = doc.get("sha")
    if not isinstance(sha, str) or not SHA.match(sha):
        raise EvidenceError(shown, f"sha {sha!r} is not a full commit SHA.")
    arts = doc.get("artifacts")
    if not isinstance(arts, list):
        raise EvidenceError(shown, "artifacts is not a list.")
    entries = []
    for i, a in enumerate(arts):
        try:
            kind, fmt, rel, digest = a["kind"], a["format"], a["path"], a["sha256"]
            if kind not in KINDS or not all(isinstance(x, str) for x in (fmt, rel, digest)):
                raise ValueError
            files = a.get("files") or {}
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise ValueError
            made = datetime.fromisoformat(a["created_at"])
            size = a.get("size", 0)
        except (KeyError, TypeError, ValueError):
            raise EvidenceError(shown, f"artifacts[{i}] is incomplete or has a wrong type "
                                       "(needs kind, format, path, created_at, sha256).") from None
        entries.append(ManifestEntry(kind=kind, format=fmt, path=rel,
                                     created_at=made if made.tzinfo else made.replace(tzinfo=timezone.utc),
                                     sha256=digest, size=size if isinstance(size, int) else 0,
                                     files=tuple(sorted(files.items()))))
    try:
        collected = datetime.fromisoformat(doc.get("collected_at") or "")   # absent: ValueError, below
    except (TypeError, ValueError):
        raise EvidenceError(shown, "collected_at is not an ISO 8601 time.") from None
    return Manifest(sha=sha, collected_at=collected, entries=tuple(entries))


# ---------------------------------------------------------------- gate

def evidence_dir(settings: Settings) -> Path:
    """The folder holding the environment's evidence manifest."""
    return settings.path(settings.gate.evidence_dir)


def _same_commit(recorded: str, wanted: str) -> bool:
    w = wanted.strip().lower()
    return recorded == w or (len(w) >= 7 and recorded.startswith(w))


def _tamper_reason(entry: ManifestEntry, digest: str, listing: tuple[tuple[str, str], ...]) -> str:
    if entry.files:
        before, after = dict(entry.files), dict(listing)
        changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
        added, removed = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
        parts = [f"{label} {', '.join(names[:5])}" for label, names in
                 (("changed", changed), ("added", added), ("removed", removed)) if names]
        return "the folder differs from what was collected: " + "; ".join(parts or ["contents differ"])
    return (f"the file changed after it was collected (sha256 {digest[:12]}..., "
            f"manifest says {entry.sha256[:12]}...)")


def _check_entry(entry: ManifestEntry, folder: Path, gate: GateSection, now: datetime) -> list[GateRow]:
    rel = PurePosixPath(entry.path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return [error_row(entry.kind, entry.path, "the manifest points outside the evidence folder")]
    try:
        content, digest, _, listing = _load(folder / rel, entry.path)
    except EvidenceError as e:
        return [error_row(entry.kind, entry.path, f"listed in the manifest but {e.problem.rstrip('.')}")]
    if digest != entry.sha256:
        return [error_row(entry.kind, entry.path, _tamper_reason(entry, digest, listing))]
    try:
        report = parse_report(content, entry.path, entry.kind)
    except EvidenceError as e:
        return [error_row(entry.kind, entry.path, e.problem)]
    if report.started_at is None:
        # JUnit files may carry no time: judge the age the manifest recorded at collection.
        report = dataclasses.replace(report, started_at=entry.created_at)
    return judge(report, entry.path, gate, now)


def gate(gate: GateSection, sha: str | None, evidence_dir: str | Path, now: datetime) -> GateVerdict:
    """Judge the evidence in `evidence_dir` for commit `sha` under one environment's policy.

    Never raises for bad evidence: every problem is a failing row of the verdict.
    """
    folder = Path(evidence_dir)
    rows: list[GateRow] = []
    notes: list[str] = []
    shown = MANIFEST
    try:
        manifest = read_manifest(folder / MANIFEST, shown)
    except EvidenceError as e:
        hint = f" Run `{collect_command(sha)}` in the test job." if "no such" in e.problem else ""
        return verdict([error_row("manifest", shown, e.problem + hint)], gate, sha, (f"evidence folder: {folder}",))
    notes.append(f"evidence folder: {folder}")
    if gate.bind_to_sha:
        if not sha:
            rows.append(error_row("manifest", shown, "no commit SHA was given to bind the evidence to"))
        elif not _same_commit(manifest.sha, sha):
            rows.append(error_row("manifest", shown, f"the evidence is for commit {manifest.sha[:12]}, "
                                                     f"not {sha.strip()[:12]}, the commit being deployed"))
    else:
        notes.append(f"SHA binding is OFF (gate.bind_to_sha = false): evidence collected for "
                     f"{manifest.sha[:12]} is accepted for any commit")
    if gate.max_age_hours <= 0:
        notes.append("evidence age is not checked (gate.max_age_hours = 0)")
    for entry in manifest.entries:
        rows.extend(_check_entry(entry, folder, gate, now))
    return verdict(rows, gate, sha or manifest.sha, tuple(notes))


def collect_command(sha: str | None) -> str:
    """The exact command that binds reports to `sha` (one --files per report; without
    --files it takes every file in the evidence folder)."""
    return f"invoke evidence.collect --sha={(sha or '').strip() or '<commit>'} --files=<report>"


def require(gate_settings: GateSection, sha: str | None, evidence_dir: str | Path, now: datetime) -> GateVerdict:
    """The open verdict, or GateClosed carrying the rendered table and every reason."""
    v = gate(gate_settings, sha, evidence_dir, now)
    if v.ok:
        return v
    reasons = v.reasons
    if any("the commit being deployed" in r or "no such file" in r for r in reasons):
        hint = (f"Run the test job for {sha or 'this commit'} and `{collect_command(sha)}`, "
                f"then gate again.")
    else:
        hint = "Fix what the reasons above name (or the tests/pages behind them) and collect fresh evidence."
    err = GateClosed(f"Evidence gate closed for {(sha or 'this commit')[:12]}:\n{render(v)}", hint)
    err.verdict = v            # type: ignore[attr-defined]
    err.reasons = reasons      # type: ignore[attr-defined]
    raise err


__all__ = ["MANIFEST", "Manifest", "ManifestEntry", "check_sha", "collect", "evidence_dir", "gate",
           "read_manifest", "render_manifest", "require", "write_manifest"]
