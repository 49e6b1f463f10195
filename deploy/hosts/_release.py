"""release, undo_release and rollback: phases over the host group, each inside the one
skeleton they share (`_locked`): connect and lock every host, read its state, run the
operation's phases (a failure after switching switches the switched hosts back), unlock,
close. Every host's outcome is reported once (`HostFailed`)."""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Sequence

from deploy.build.artifact import MANIFEST
from deploy.errors import HostFailed, PlanChanged, SettingsError
from deploy.hosts._app import (_after_switch_summary, _check_env, _hook_before_switch, _if_same_app, _restore,
                               _roll_out, _switch_back)
from deploy.hosts._commands import (_p, discard_release_command, fence_token, fenced, finish_command,
                                    hash_files_command,
                                    parse_release_tree, previous_command, prune_list, release_tree_command,
                                    same_app, unpack_command)
from deploy.hosts._group import _close, _failed, _holder, _Host, _now, _open_all, _parallel, _results, _table
from deploy.hosts._lock import _raise_if_locked, _unlock_all
from deploy.hosts._ssh import _HostError, _run
from deploy.hosts._targets import targets
from deploy.hosts._upload import (TreeEntry, _Delta, _delta_base, _manifest_tree, _prepare_delta, _safe_member,
                                  _upload)
from deploy.hosts._values import HostResult, HostState, validate_release_id

if TYPE_CHECKING:
    from deploy.build.artifact import Artifact
    from deploy.config import AppSection, HostsSection, ProxySection


# ---------------------------------------------------------------- the skeleton

class _Locked:
    """One changing operation over the locked hosts (`_locked` makes it): the steps that
    release, undo_release and rollback share, each written once."""

    def __init__(self, section, hs: list[_Host], keep_lock: bool):
        self.section = section
        self.hs = hs
        self.keep_lock = keep_lock   # the run holds the lock itself (acquire_lock) and releases it when it ends

    def failed(self) -> bool:
        return any(h.error for h in self.hs)

    def unlock(self) -> None:
        if not self.keep_lock:
            _unlock_all(self.section, self.hs)

    def stop_before_switch(self, what: str, summary: str) -> None:
        """No host has switched: on any host's failure, remove what preparing made, unlock,
        and raise one HostFailed for all hosts."""
        if not self.failed():
            return
        _discard_prepared(self.section, self.hs)
        self.unlock()
        raise _failed(what, self.hs, summary)

    def go_live(self, what: str, release_id: str, env: dict[str, str]) -> None:
        """Switch, restart and health-check every host (hosts.rollout); on any host's
        failure switch the switched hosts back, unlock, and raise one HostFailed."""
        stopped = _roll_out(self.section, self.hs, release_id, env)
        if self.failed():
            _switch_back(self.section, self.hs, release_id, env)
            self.unlock()
            raise _failed(what, self.hs, stopped + _after_switch_summary(self.hs))

    def finish(self, what: str, line: Callable[[_Host], str],
               prune: Callable[[_Host], list[str]] = lambda h: []) -> list[HostResult]:
        """The last phase: a revisions.log line (and old releases pruned) per host, unlocked
        in the same command; every host's result."""

        def one(h: _Host) -> None:
            old = prune(h)
            _run(h.conn, h.t, fenced(h.t, h.fence, finish_command(h.t, old, line(h), unlock=not self.keep_lock)),
                 self.section, what, long=bool(old))
            h.locked = self.keep_lock

        _parallel(self.hs, one, self.section.max_parallel)
        return _results(self.hs)


@contextmanager
def _locked(section, app: AppSection | None, *, run_id: str, release_id: str, now: datetime,
            upload_name: str | None = None, keep_lock: bool = False, manifest: bool = False,
            proxy: ProxySection | None = None, fence: str = "") -> Iterator[_Locked]:
    """Connect to every host, take its lock and read its state (phase 1); close every
    connection whatever happens. LockHeld (every lock taken here released) when another
    run holds a host; a host that failed to open carries its error into the operation."""
    on = proxy is not None and proxy.enabled
    hs = [_Host(t, app=app, proxy=proxy.for_host(i, t.deploy_to) if on and proxy else None)
          for i, t in enumerate(targets(section, app))]
    try:
        _open_all(section, hs, run_id=run_id, release_id=release_id, now=now, upload_name=upload_name, lock=True,
                  manifest=manifest, fence=fence)
        _raise_if_locked(hs, section, now)
        yield _Locked(section, hs, keep_lock)
    finally:
        _close(hs)


def _discard_prepared(section, hs: Sequence[_Host]) -> None:
    """Remove the half-made release dirs and uploads; no host has switched."""
    for h in hs:
        if h.conn is None:
            continue
        try:
            if h.made_dir and h.state and h.known.current != h.pending:
                _run(h.conn, h.t, discard_release_command(h.t, h.pending), section, "cleaning up", long=True)
        except _HostError as e:
            h.error = h.error or f"cleanup failed: {e}"


# ---------------------------------------------------------------- release

def release(section: HostsSection, artifact: Artifact, *, run_id: str, now: datetime | None = None,
            env: dict[str, str] | None = None, keep_lock: bool = False,
            app: AppSection | None = None, proxy: ProxySection | None = None) -> list[HostResult]:
    """Release `artifact` to every host; all switch, or none stays switched.

    Returns one HostResult per host (in settings order) when every host is on the new
    release and healthy; raises HostFailed carrying every host's outcome otherwise, and
    LockHeld when another run holds a host's lock. A re-run with the same `run_id`
    (after a crash) takes over its own lock and finishes the release.
    `keep_lock`: the run took the lock itself (acquire_lock) and releases it when it ends.
    """
    release_id = validate_release_id(artifact.release_id)
    env = _check_env(env)
    if not re.fullmatch(r"[0-9a-f]{64}", artifact.sha256 or ""):
        raise SettingsError(f"Artifact {artifact.path} has no valid sha256 ({artifact.sha256!r}).",
                            "Rebuild the artifact; its checksum is verified on every host.")
    local = Path(artifact.path)
    if not local.is_file():
        raise SettingsError(f"Artifact {local} does not exist.", "Build it first (invoke build).")
    now = now or _now()
    what = f"release {release_id}"
    upload_name = f"{release_id}.tar.gz"
    with _locked(section, app, run_id=run_id, release_id=release_id, now=now, upload_name=upload_name,
                 keep_lock=keep_lock, manifest=section.delta, proxy=proxy) as op:
        op.stop_before_switch(what, "before any host switched; every host stays on its release")
        delta = _Delta(local) if section.delta else None
        try:
            _parallel(op.hs, lambda h: _prepare(section, h, artifact, local, release_id, upload_name, env, delta),
                      section.max_parallel)
        finally:
            if delta is not None:
                delta.close()
        op.stop_before_switch(what, "while preparing, before any host switched; every host stays on its release")
        op.go_live(what, release_id, env)
        results = op.finish(
            "pruning and unlocking",
            line=lambda h: (f"{now.isoformat()} release {release_id} (was {h.known.current or '-'}) "
                            f"by {_holder()} run {run_id}"),
            prune=lambda h: prune_list((*h.known.releases, release_id), section.keep_releases,
                                       (release_id, h.known.current or release_id)))
        if any(not r.ok for r in results):
            raise HostFailed(
                f"release {release_id}: every host switched and is healthy, but finishing failed on some:\n"
                + _table(results), "Check the lock and disk on those hosts.", results=results)
        return results


def _prepare(section, h: _Host, artifact, local: Path, release_id: str, upload_name: str, env,
             delta: "_Delta | None" = None) -> None:
    t = h.t
    st = h.known
    if st.current == release_id:
        # Re-running a release that is live (a resumed run): nothing to unpack, never touch the live dir.
        h.transfer = "none"
        return _hook_before_switch(section, h, release_id, env)
    upload = _p(t, ".uploads", upload_name)
    # Set before the upload: a failed upload's partial file is removed by the cleanup too.
    h.pending = release_id
    h.made_dir = True
    base = _delta_base(st, release_id) if delta is not None and st.upload_sha256 != artifact.sha256 else None
    if base is not None and delta is not None and _prepare_delta(section, h, delta, release_id, base):
        h.prepared = True
        return _hook_before_switch(section, h, release_id, env)
    if st.upload_sha256 != artifact.sha256:
        _upload(section, h, local, upload)
    h.transfer = (h.transfer + "; sent in full") if h.transfer else "full"
    sums = delta.sums() if delta is not None else None
    _run(h.conn, t, unpack_command(t, release_id, artifact.sha256, upload, st.current, section.shared_files,
                                   sums_sha256=hashlib.sha256(sums).hexdigest() if sums else ""),
         section, f"unpacking releases/{release_id}", long=True, stdin=sums or b"")
    h.prepared = True
    _hook_before_switch(section, h, release_id, env)


# ---------------------------------------------------------------- undo, rollback

def undo_release(section: HostsSection, release_id: str, *, run_id: str, now: datetime | None = None,
                 env: dict[str, str] | None = None, keep_lock: bool = False,
                 app: AppSection | None = None, proxy: ProxySection | None = None) -> list[HostResult]:
    """Undo `release(..)` of `release_id`: hosts on it go back to the release they were
    on before it (recorded in releases/<id>/.previous), hosts elsewhere are left alone.
    Safe to repeat, and to run after the release's process was killed (same run id)."""
    validate_release_id(release_id)
    env = _check_env(env)
    now = now or _now()

    def one(h: _Host) -> None:
        t = h.t
        r = _run(h.conn, t, previous_command(t, release_id), section, "reading the previous release")
        if h.known.current != release_id:
            h.release = h.known.current
            return
        prev = (r.stdout.strip().splitlines() or [""])[0] or None
        if prev is not None:
            validate_release_id(prev)
            prev = _if_same_app(section, h, release_id, prev)
        _restore(section, h, prev, env)
        h.release, h.left_empty = prev, prev is None
        line = f"{now.isoformat()} undo {release_id} -> {prev or '-'} by {_holder()} run {run_id}"
        _run(h.conn, t, fenced(t, h.fence, finish_command(t, [], line, unlock=False)), section, "logging")

    # Its own fence token: an abort fences the killed attempt's commands still running on a host.
    with _locked(section, app, run_id=run_id, release_id=release_id, now=now, keep_lock=keep_lock,
                 proxy=proxy, fence=fence_token(run_id, undo=True)) as op:
        _parallel(op.hs, one, section.max_parallel)
        op.unlock()
        results = _results(op.hs)
        # For an undo, `previous` is what the host was on before the undo.
        if any(not r.ok for r in results):
            raise HostFailed(f"undo of release {release_id} failed on {sum(not r.ok for r in results)} of "
                             f"{len(results)} hosts.\n{_table(results)}",
                             "Fix the failing hosts and run the undo again; it is safe to repeat.", results=results)
        return results


def rollback(section: HostsSection, to: str | None = None, *, run_id: str, now: datetime | None = None,
             env: dict[str, str] | None = None, app: AppSection | None = None,
             expect: str | None = None, proxy: ProxySection | None = None) -> list[HostResult]:
    """Switch every host to release `to` (default: the release before current, which
    must be the same on all hosts), restart and check health. Checks every host before
    switching any: the target is there, of the same app, and exactly as it was released
    (its files against its RELEASE.json, see judge_target); a failure after switching
    returns the switched hosts. `expect`: the release the caller showed as current (a
    confirmed plan): a host on anything else (but the target) stops the rollback with
    PlanChanged before any host switches."""
    if to is not None:
        validate_release_id(to)
    env = _check_env(env)
    now = now or _now()
    with _locked(section, app, run_id=run_id, release_id=to or "rollback", now=now, proxy=proxy) as op:
        if not op.failed():
            _check_rollback_target(section, op.hs, to)
        stale = [h for h in op.hs if not h.error and expect and h.known.current not in (expect, to or previous_of(h.known))]
        if stale:
            op.unlock()
            raise PlanChanged(
                "The hosts changed after the rollback plan was shown: it said they serve "
                f"{expect}, but " + ", ".join(f"{h.t.name} serves {h.known.current or 'nothing'}" for h in stale)
                + ". Nothing was switched.",
                "Another run released meanwhile. Look again (`invoke status`, `invoke hosts.releases --env=<env>`) "
                "and run the rollback again to get a plan of what is live now.")
        if not op.failed():
            _parallel(op.hs, lambda h: _verify_target(section, h, to or previous_of(h.known)), section.max_parallel)
        op.stop_before_switch("rollback", "before any host switched; nothing changed")
        target = to or previous_of(op.hs[0].known)
        assert target is not None, "a host without a release to go back to was stopped before the switch"
        op.go_live(f"rollback to {target}", target, env)
        return op.finish("logging and unlocking", line=lambda h: (
            f"{now.isoformat()} rollback {h.known.current or '-'} -> {target} by {_holder()} run {run_id}"))


def _check_rollback_target(section, hs: Sequence[_Host], to: str | None) -> None:
    """Before any host switches: every host has the target, it is of the same app as
    `current`, and (without `to`) every host names the same previous release. A host that
    fails a check gets its error."""
    for h in hs:
        target = to or previous_of(h.known)
        if target is None:
            h.error = f"no release before {h.known.current or '(none)'} to roll back to"
        elif target not in h.known.releases:
            h.error = f"release {target} is not on this host (has: {', '.join(h.known.releases) or 'none'})"

    for h in hs:
        target = to or previous_of(h.known)
        current = h.known.current
        if h.error or not current or not target or target == current:
            continue
        apps = h.known.app_of()   # read with the state, under the lock
        if not same_app(apps, current, target):
            h.error = (f"release {target} is of app {apps[target]}, but {current} (current) is "
                       f"of app {apps[current]}: a rollback never starts another app")
    wanted = {to or previous_of(h.known) for h in hs}
    if not any(h.error for h in hs) and len(wanted) > 1:
        for h in hs:
            h.error = f"hosts disagree on the previous release (this one: {previous_of(h.known)})"


def _verify_target(section, h: _Host, target: str | None) -> None:
    """The rollback target on this host is the release as it was unpacked: every entry of its
    RELEASE.json with its mode and size, nothing added, and the bytes of every file the index
    cannot vouch for hashed. A delta release shares unchanged files' inodes with the releases
    before it, so an app that appends to a file of the live release changes them too; such a
    release is refused (naming the files), never served."""
    if not target or target == h.known.current:
        return   # already live: a re-run finishing a rollback, nothing is switched to
    r = _run(h.conn, h.t, release_tree_command(h.t, target), section, f"checking releases/{target}", long=True)
    tree, index, manifest = parse_release_tree(r.stdout)
    problems, to_hash, unchecked = judge_target(manifest, tree, index, section.shared_files)
    to_hash = to_hash or {}
    paths = sorted(to_hash)
    for i in range(0, len(paths), 400):
        chunk = paths[i:i + 400]
        out = _run(h.conn, h.t, hash_files_command(h.t, target, chunk), section, f"hashing releases/{target}",
                   long=True, ok_codes=(0, 1)).stdout
        got = {}
        for line in out.splitlines():
            sha, sep, path = line.partition("  ")
            if sep:
                got[path] = sha
        problems += [f"{p}: other bytes than released" for p in chunk if got.get(p) != to_hash[p]]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        h.error = (f"releases/{target} was changed in place since it was released, so it is not rolled back to "
                   f"({shown}). Release that commit again (a fresh copy from its artifact), or roll back to "
                   f"another release with --to")
    elif unchecked:
        h.note = (f"releases/{target} {unchecked}; rolled back to as it is. If it may have been changed by hand, "
                  f"release that commit again (a fresh copy from its artifact)")


def previous_of(state: HostState) -> str | None:
    """The release before current by name order (Capistrano's rollback target)."""
    if state.current not in state.releases:
        return None
    i = state.releases.index(state.current)
    return state.releases[i - 1] if i > 0 else None


# ---------------------------------------------------------------- the rollback target, checked in place

# What the toolkit adds to a release dir after the artifact is unpacked (and RELEASE.json,
# the manifest the tree is checked against).
_ADDED = ("RELEASE", ".previous", "RELEASE.json")


class Judgement(NamedTuple):
    """judge_target's verdict on a rollback target."""

    problems: list[str]                # how the release differs from its manifest (any: refused)
    to_hash: dict[str, str] | None     # path -> sha256 of the files whose bytes must still be hashed
    unchecked: str = ""                # what could not be checked, said to the operator (a warning)


def _older_manifest(raw: bytes) -> list[TreeEntry] | None:
    """The files of a RELEASE.json written before manifests carried symlinks and empty folders
    (and, before that, modes): path, size and sha256 each (mode 0 when it names none); None
    when it is not such a manifest either."""
    try:
        data = json.loads(raw.decode("utf-8"))
        files = [TreeEntry(str(f["path"]), "f", int(f.get("mode", 0)), int(f["size"]), str(f["sha256"]))
                 for f in data["files"]]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None
    if not all(_safe_member(e.path) and re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.mode in (0, 0o644, 0o755)
               for e in files):
        return None
    return files


def judge_target(manifest: bytes, tree: Sequence[str], index: Sequence[str],
                 shared_files: Sequence[str] = ()) -> Judgement:
    """How the release differs from its RELEASE.json (refused when it does), the files whose
    bytes must still be hashed, and what could not be checked.

    Pure. `tree`: release_tree_command's `f mode dev:ino size mtime ctime path`, `l path ->
    target`, `d path` lines; `index`: the host's VERIFIED lines. A file whose entry matches
    the manifest is trusted without hashing only when the index holds its inode with the same
    size, mtime and ctime and the manifest's sha256 (the delta's rule, _DELTA_AWK: any write,
    chmod or replacement since its bytes were checked changes the ctime; whole-second ctimes
    never vouch).

    A release without any RELEASE.json (made by a toolkit older than manifests, or by hand) is
    not refused: on-call must be able to go back to it right after upgrading; `unchecked` says
    so. It is refused when the host's index holds one of its files as unpacked (only a release
    with a manifest is indexed: its RELEASE.json was removed). A manifest that is there but
    unreadable is refused; an older one (no symlinks or folders, maybe no modes) checks the
    files it lists and says what it could not."""
    ok: dict[str, str] = {}
    for line in index:
        parts = line.split()
        if len(parts) == 5:
            ok[parts[0]] = " ".join(parts[1:])
    shared_links = set(shared_files)
    found: dict[str, tuple] = {}
    stats: dict[str, tuple[str, str]] = {}
    for line in tree:
        if line.startswith("f "):
            parts = line.split(" ", 6)
            if len(parts) < 7:
                continue
            _, mode, ino, size, mtime, ctime, path = parts
            found[path] = ("f", int(mode, 8), int(size))
            stats[path] = (ino, f"{size} {mtime} {ctime}")
        elif line.startswith("l "):
            path, _, target = line[2:].partition(" -> ")
            found[path] = ("l", target)
        elif line.startswith("d "):
            found[line[2:]] = ("d", "")
    unchecked = ""
    entries = _manifest_tree(manifest) if manifest.strip() else None
    if entries is None:
        if not manifest.strip() and not any(p == MANIFEST or p.startswith(MANIFEST + "/") for p in found):
            indexed = sorted(p for p, (ino, times) in stats.items() if ok.get(ino, "").startswith(times + " "))
            if indexed:
                return Judgement([f"its RELEASE.json was removed since it was released (the host's index holds "
                                  f"{indexed[0]} as unpacked from a release with one), so it cannot be checked"],
                                 None)
            return Judgement([], {}, "has no RELEASE.json (made by a toolkit older than release manifests, or by "
                                     "hand), so its files were not checked against what was released")
        entries = _older_manifest(manifest)
        if entries is None:
            return Judgement(["its RELEASE.json is there but unreadable (not a manifest the toolkit writes), "
                              "so it cannot be checked"], None)
        unchecked = ("has an older toolkit's RELEASE.json: the files it lists were checked, its symlinks and "
                     "folders could not be" + ("" if all(e.mode for e in entries) else ", nor the files' modes"))
    want: dict[str, tuple] = {}
    for e in entries:
        want[e.path] = ("f", e.mode, e.size, e.sha256) if e.kind == "f" else (e.kind, e.target)
    problems: list[str] = []
    for path in sorted(found):
        if path in _ADDED or (path in shared_links and found[path][0] == "l"):
            continue
        if unchecked and found[path][0] != "f":
            continue   # an older manifest lists no symlinks or folders
        if path not in want:
            problems.append(f"{path}: not in the release (added since)")
    to_hash: dict[str, str] = {}
    for path, w in sorted(want.items()):
        f = found.get(path)
        if f is None:
            problems.append(f"{path}: missing")
        elif w[0] != f[0]:
            problems.append(f"{path}: is a {'file' if f[0] == 'f' else 'link' if f[0] == 'l' else 'folder'} now")
        elif w[0] == "f" and ((w[1] or f[1]), w[2]) != (f[1], f[2]):
            what = []
            if w[1] and w[1] != f[1]:
                what.append(f"mode {f[1]:o}, was {w[1]:o}")
            if w[2] != f[2]:
                what.append(f"{f[2]} bytes, was {w[2]}")
            problems.append(f"{path}: {', '.join(what)}")
        elif w[0] == "l" and w[1] != f[1]:
            problems.append(f"{path}: links to {f[1]}, was {w[1]}")
        elif w[0] == "f":
            ino, times = stats[path]
            ctime = times.rsplit(" ", 1)[-1]
            fine = "." in ctime and ctime.rstrip("0") != ctime.split(".")[0] + "."
            if not (fine and ok.get(ino) == f"{times} {w[3]}"):
                to_hash[path] = w[3]
    return Judgement(problems, to_hash, unchecked)
