"""Host commands as data: every shell string the toolkit sends to a host is built here, by
a pure function of the target and values (tests/test_hosts_commands.py checks each one to
the character), and every fact read back has its parser here.

Remote argv is quoted in one place (`sh`); the configured hook strings are the operator's
own shell and are run as written. Exit codes above 74 are the toolkit's own signals from a
command back to the code that runs it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from datetime import datetime
from typing import Iterable, Sequence

from deploy.hosts._supervisor import APP_STOPPED_EXIT, SUPERVISOR  # noqa: F401  (re-exported)
from deploy.hosts._values import HostState, LockInfo, Target

LOCK_DIR = ".deploy-lock"
LOCK_HELD_EXIT = 75
CHECKSUM_EXIT = 76
SHARED_MISSING_EXIT = 77
DELTA_MISMATCH_EXIT = 78
SWITCH_FAILED_EXIT = 79
HOOK_FAILED_EXIT = 81
HEALTH_PENDING_EXIT = 82
FENCED_EXIT = 84        # the host's fence names another run: this command changed nothing
FENCE_BUSY_EXIT = 85    # the fence stayed locked (an earlier run's change still running there)

FENCE_FILE = ".deploy-fence"   # <deploy_to>/.deploy-fence: the token of the run that may change the host
FENCE_WAIT = 20                # seconds a command waits for the fence's flock


# ---------------------------------------------------------------- commands as data

def sh(*argv: object) -> str:
    """The one place remote argv is quoted."""
    return shlex.join(str(a) for a in argv)


def _and(*cmds: str) -> str:
    return " && ".join(c for c in cmds if c)


def _fail(code: int, message: str) -> str:
    return f"{{ {sh('echo', message)} >&2; exit {code}; }}"


def _p(t: Target, *parts: str) -> str:
    return "/".join((t.deploy_to, *parts))


def lock_details(holder: str, run_id: str, release_id: str, now: datetime, token: str = "") -> str:
    """The lock's details file. `token` is the holding runner's (deploy/liveness.py): what a
    release matches, never the holder's user@hostname, which two runners can share."""
    out = f"holder={holder}\nrun_id={run_id}\nrelease={release_id}\nacquired_at={now.isoformat()}\n"
    return out + (f"token={token}\n" if token else "")


def parse_lock_details(host: str, text: str) -> LockInfo:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        at = datetime.fromisoformat(values.get("acquired_at", ""))
    except ValueError:
        at = None
    return LockInfo(host=host, holder=values.get("holder", "unknown"), run_id=values.get("run_id", ""),
                    acquired_at=at, release=values.get("release", ""), token=values.get("token", ""))


# ---------------------------------------------------------------- the fence

# A remote command outlives its client: sshd does not stop a command without a terminal when the
# connection goes, so a killed run's health-then-switch, restart or prune may still act after a
# later run changed the host (a lost update). Every command that changes what a host serves runs
# its change under flock(1) of <deploy_to>/.deploy-fence, and only when the file still holds its
# run's token; a run writes its token there, under the same flock, when it takes the host's lock.
# So a change either ends before a later run takes the host, or finds the fence moved and exits
# FENCED_EXIT having changed nothing. The cost is one read of a small file per change.

def fence_token(run_id: str, *, undo: bool = False) -> str:
    """The token a run's changes carry: its run id (a resumed run keeps it: it finishes the same
    change), or for the undo of a release another one, so that an abort of a killed run fences the
    killed attempt's commands still running on the host."""
    return f"{run_id}/undo" if undo else run_id


def _flock(t: Target, wait: int) -> str:
    busy = (f"the fence {_p(t, FENCE_FILE)} stayed locked {wait}s: a change of an earlier run (a restart hook, "
            "a stop) is still running on this host; wait for it to end or stop it, then run again")
    missing = ("flock is not installed on this host, and every change of a release runs under it (the fence "
               "against a killed run's commands); install util-linux (Debian, RHEL) or busybox's flock (Alpine)")
    return (f"{{ command -v flock >/dev/null 2>&1 || {{ echo {sh(missing)} >&2; exit {FENCE_BUSY_EXIT}; }}; }} && "
            f"{{ flock -w {wait} 9 || {{ echo {sh(busy)} >&2; exit {FENCE_BUSY_EXIT}; }}; }}")


def take_fence_command(t: Target, token: str, wait: int = FENCE_WAIT) -> str:
    """Write `token` to the host's fence under its flock: every change of another run's token
    that starts after this fails the fence check; one running now ends first."""
    path = _p(t, FENCE_FILE)
    return (f"mkdir -p {sh(t.deploy_to)} && {{ {_flock(t, wait)}; printf '%s\\n' {sh(token)} > {sh(path)}; }} "
            f"9>>{sh(path)}")


def fenced(t: Target, token: str, cmd: str, wait: int = FENCE_WAIT) -> str:
    """`cmd` run under the fence's flock, only when the fence still holds `token`; else exit
    FENCED_EXIT at once, naming the run that holds the host now. `cmd` may `exit` (its code is
    the command's); its children do not inherit the flock. No token: `cmd` as it is."""
    if not token:
        return cmd
    path = _p(t, FENCE_FILE)
    stale = f"{t.name}: run {token} no longer holds this host (its fence names run "
    return (f"{{ {_flock(t, wait)}; f=$(cat {sh(path)} 2>/dev/null); [ \"$f\" = {sh(token)} ] || "
            f"{{ printf '%s%s); this command changed nothing\\n' {sh(stale)} \"${{f:-none}}\" >&2; exit {FENCED_EXIT}; }}; "
            f"{{ {cmd}\n}} 9>&-; }} 9>>{sh(path)}")


def state_command(t: Target, upload: str | None = None, manifest: bool = False) -> str:
    """Print `current`, the release dirs, which app each release is (the `"app"` line of its
    RELEASE.json, which the build writes with sorted keys and a two-space indent, so it is
    near the top and grep stops there), optionally an upload's sha256 and, last and as it
    is, current's RELEASE.json (what a delta is planned against), in sections."""
    parts = [
        "echo '== current'", f"readlink {sh(_p(t, 'current'))} || true",
        "echo '== releases'", f"ls -1 {sh(_p(t, 'releases'))} 2>/dev/null || true",
        "echo '== apps'", f"grep -s -H -m 1 '^ *\"app\": \"' {sh(_p(t, 'releases'))}/*/RELEASE.json || true",
        "echo '== upload'",
    ]
    if upload:
        parts.append(f"sha256sum {sh(upload)} 2>/dev/null || true")
    if manifest:
        parts += [f"echo {sh(MANIFEST_SECTION.strip())}", f"cat {sh(_p(t, 'current', 'RELEASE.json'))} 2>/dev/null || true"]
    return "; ".join(parts)


MANIFEST_SECTION = "\n== manifest\n"


def parse_state(text: str) -> HostState:
    text, found, manifest = text.partition(MANIFEST_SECTION)
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            sections[cur] = []
        elif cur is not None and line.strip():
            sections[cur].append(line.strip())
    link = (sections.get("current") or [""])[0]
    current = link.rstrip("/").rsplit("/", 1)[-1] if link else None
    rels = tuple(sorted(r for r in sections.get("releases", []) if not r.startswith(".")))
    up = (sections.get("upload") or [""])[0].split()
    apps = []
    for line in sections.get("apps", []):
        path, sep, rest = line.partition("/RELEASE.json:")
        m = re.fullmatch(r'"app": "(.*)",?', rest.strip())
        rid = path.rsplit("/", 1)[-1]
        if sep and m and rid in rels:
            apps.append((rid, m[1]))
    return HostState(current=current, releases=rels, upload_sha256=up[0] if up else None, apps=tuple(sorted(apps)),
                     manifest=manifest if found else "")


def lock_command(t: Target, details: str, run_id: str | None = None) -> str:
    """mkdir is the atomic test-and-set; on contention print the holder's details. `run_id`: a
    lock of that run (its own, from a killed attempt or an earlier operation) is taken over in
    the same command: its details are rewritten with `details` (this runner's token), so the
    runner the run was taken from can no longer release it."""
    lock = _p(t, LOCK_DIR)
    own = "" if run_id is None else (
        f"elif grep -qxF {sh('run_id=' + run_id)} {sh(lock + '/details')} 2>/dev/null; then "
        f"printf %s {sh(details)} > {sh(lock + '/details')}; ")
    return (
        f"mkdir -p {sh(_p(t, 'releases'))} {sh(_p(t, 'shared'))} {sh(_p(t, '.uploads'))} && "
        f"if mkdir {sh(lock)} 2>/dev/null; then printf %s {sh(details)} > {sh(lock + '/details')}; "
        f"{own}else cat {sh(lock + '/details')} 2>/dev/null; exit {LOCK_HELD_EXIT}; fi"
    )


def unlock_ours_command(t: Target, run_id: str, tokens: Sequence[str]) -> str:
    """Release the lock when it is `run_id`'s and held by this runner, printing `freed`; else
    leave it. Held by this runner: its token is one of `tokens` (this process's, and those of
    runners it took the run over from, deploy/liveness.py); a runner whose run was taken over
    while it was frozen finds another token there and leaves the lock to the new holder. A lock
    an older toolkit wrote (no token) is matched by its run alone. Checked on the host, so that
    the unlock is one round trip."""
    f = _p(t, LOCK_DIR, "details")
    held = " ".join(f"-e {sh('token=' + k)}" for k in tokens if k)
    token_ok = f"{{ ! grep -q '^token=.' {sh(f)} || grep -qxF {held} {sh(f)}; }}" if held else \
        f"! grep -q '^token=.' {sh(f)}"
    return (f"if grep -qxF {sh('run_id=' + run_id)} {sh(f)} 2>/dev/null && {token_ok}; then "
            f"{unlock_command(t)} && echo freed; fi")


def unlock_command(t: Target) -> str:
    return sh("rm", "-rf", _p(t, LOCK_DIR))


def read_lock_command(t: Target) -> str:
    """Print the lock's details; `holder=unknown` for a lock dir without them; nothing when unlocked."""
    return (f"cat {sh(_p(t, LOCK_DIR, 'details'))} 2>/dev/null || "
            f"{{ test -d {sh(_p(t, LOCK_DIR))} && echo holder=unknown; }} || true")


def unpack_command(t: Target, release_id: str, sha256: str, upload: str, previous: str | None,
                   shared_files: Sequence[str], sums_sha256: str = "") -> str:
    """Verify, unpack into a hidden partial dir, write RELEASE, link shared files, then rename into place.

    `sums_sha256`: the artifact's sums (`sha256  path` lines, hashed by the toolkit from the
    tarball itself) come on stdin, and this is their sha256. Once they are all there (checked
    against it) and the artifact's own sha256 has checked, the unpacked files go into the
    host's index (VERIFIED) with them, so the first delta built from this release need not
    hash them again (see _INDEX_AWK). Indexing is best effort: when any part of it fails, the
    index stays as it was and the release goes on."""
    final = _p(t, "releases", release_id)
    partial = _p(t, "releases", f".partial-{release_id}")
    work = _p(t, ".uploads", f"{release_id}.d")   # what discard_release_command removes too
    sums, post, new = work + "/sums", work + "/post", work + "/index"
    steps = ["umask 022"]
    if sums_sha256:
        # Read at once (the sender never waits on the unpack), checked before use.
        steps += [sh("rm", "-rf", work), sh("mkdir", "-p", work), f"{{ cat > {sh(sums)} || : ; }}", "exec </dev/null"]
    steps += [
        f"{{ printf '%s  %s\\n' {sh(sha256)} {sh(upload)} | sha256sum -c --status || "
        f"{_fail(CHECKSUM_EXIT, f'sha256 of the uploaded artifact does not match {sha256}')}; }}",
        sh("rm", "-rf", partial, final),
        sh("mkdir", "-p", partial),
        sh("tar", "-xzf", upload, "--no-same-permissions", "-C", partial),
    ]
    if sums_sha256:
        index = _and(
            f"printf '%s  %s\\n' {sh(sums_sha256)} {sh(sums)} | sha256sum -c --status",
            f"cd {sh(partial)}",
            f"find . -type f -printf {sh(_STAT + ' %P' + chr(92) + 'n')} > {sh(post)}",
            f"awk {sh(_INDEX_AWK)} {sh(sums)} {sh(post)} > {sh(new)}",
            _index_in(t),
            _index_merge(t, new),
        )
        steps += [f"{{ {index}; }} 2>/dev/null || :", "cd /", sh("rm", "-rf", work)]
    steps += [
        *_into_place(t, release_id, previous, shared_files),
        sh("rm", "-f", upload),
    ]
    return _and(*steps)


def _into_place(t: Target, release_id: str, previous: str | None, shared_files: Sequence[str]) -> list[str]:
    """A populated partial dir: write RELEASE and .previous, link shared files, rename it into place."""
    final = _p(t, "releases", release_id)
    partial = _p(t, "releases", f".partial-{release_id}")
    steps = [
        f"printf '%s\\n' {sh(release_id)} > {sh(partial + '/RELEASE')}",
        f"printf '%s\\n' {sh(previous or '')} > {sh(partial + '/.previous')}",
    ]
    for f in shared_files:
        src = _p(t, "shared", f)
        dst = f"{partial}/{f}"
        steps.append(f"{{ test -e {sh(src)} || {_fail(SHARED_MISSING_EXIT, f'shared file {src} is missing')}; }}")
        steps.append(sh("mkdir", "-p", os.path.dirname(dst)))
        steps.append(sh("rm", "-rf", dst))
        steps.append(sh("ln", "-s", src, dst))
    steps.append(sh("mv", "-T", partial, final))
    return steps



def delta_upload_name(release_id: str) -> str:
    return f"{release_id}.delta.tar.gz"


VERIFIED = ".verified"   # <deploy_to>/.verified: `dev:ino size mtime ctime sha256` per file whose bytes were checked

# find -printf of a file's identity and change times, then (optionally) its path.
_STAT = "%D:%i %s %T@ %C@"

# Which files of a delta-built tree are hashed, and their index lines. Inputs, in order: the
# base's files as they were before linking (`pre`), the host's index, the manifest's sums,
# the built tree (`post`). A linked file is trusted without hashing only when its inode's
# size, mtime and ctime before the link are the ones the index recorded when its bytes were
# last checked, and the index's sha256 is the manifest's: any write, chmod, utime or
# rename-over since then changes the ctime, which no user can set back. A ctime in whole
# seconds (a file system that keeps no finer times, where a change within the same second
# would not show) never vouches: such files are always hashed.
_DELTA_AWK = (
    'FILENAME == ARGV[1] { if ($4 ~ /[.]/ && $4 !~ /[.]0*$/) pre[$1] = $2 " " $3 " " $4; next } '
    'FILENAME == ARGV[2] { if (NF == 5) ok[$1] = $2 " " $3 " " $4 " " $5; next } '
    'FILENAME == ARGV[3] { sum[substr($0, 67)] = substr($0, 1, 64); next } '
    '{ p = substr($0, length($1 $2 $3 $4) + 5); s = sum[p]; '
    'if (!(($1 in pre) && ($1 in ok) && ok[$1] == pre[$1] " " s)) { print s "  " p > check; n++ } '
    'print $1, $2, $3, $4, s > out } '
    'END { print "hashed=" n + 0 }'
)

# Index lines for a freshly unpacked artifact. Inputs: its sums (`sha256  path`) and the
# unpacked files' stat (`post`). Every file the sums name gets its line.
_INDEX_AWK = (
    'FILENAME == ARGV[1] { sum[substr($0, 67)] = substr($0, 1, 64); next } '
    '{ p = substr($0, length($1 $2 $3 $4) + 5); if (p in sum) print $1, $2, $3, $4, sum[p] }'
)


def _index_in(t: Target) -> str:
    """Sets `$vi` to the index to read: VERIFIED, or /dev/null when it is not a readable file
    (an index that cannot be read vouches for nothing)."""
    return f"{{ vi={sh(_p(t, VERIFIED))}; test -f \"$vi\" && test -r \"$vi\" || vi=/dev/null; }}"


def _index_merge(t: Target, new: str) -> str:
    """`new`'s lines into the index, replacing the old lines of the same inodes (the others
    stay). Best effort: an index that cannot be written stays as it was. Needs `$vi`."""
    idx = _p(t, VERIFIED)
    return (f"{{ awk 'NR == FNR {{ k[$1]; print; next }} !($1 in k)' {sh(new)} \"$vi\" > {sh(idx + '.tmp')} && "
            f"mv -fT {sh(idx + '.tmp')} {sh(idx)}; }} 2>/dev/null || rm -f {sh(idx + '.tmp')}")


# The index after the toolkit removed release dirs (which changes the ctime of every inode
# they shared with the kept releases). Inputs: the stat of the removed releases' files just
# before the removal, every kept file's stat just after it, and the index. An inode the
# removal touched keeps its line, with the new ctime, only when it was exactly as the index
# says right before the removal and has the same size and mtime after: a file changed earlier
# (a tampered one) is dropped, and is hashed again when next linked. Any other line is kept
# only when its inode is still there exactly as indexed; lines of inodes gone are dropped.
_REFRESH_AWK = (
    'FILENAME == ARGV[1] { pre[$1] = $2 " " $3 " " $4; next } '
    'FILENAME == ARGV[2] { cur[$1] = $2 " " $3 " " $4; next } '
    '!($1 in cur) { next } '
    '($1 in pre) { if (pre[$1] == $2 " " $3 " " $4) { split(cur[$1], c, " "); '
    'if (c[1] == $2 && c[2] == $3) print $1, $2, $3, c[3], $5 } next } '
    'cur[$1] == $2 " " $3 " " $4 { print $1, $2, $3, $4, $5 }'
)


def delta_unpack_command(t: Target, release_id: str, base: str, upload: str | None, previous: str | None,
                         shared_files: Sequence[str]) -> str:
    """Build releases/<id> from a delta: hard-link the unchanged files from releases/<base>
    (`ctl/links.tar`: one hard-link member per file, `.partial-<id>/<path>` to `<base>/<path>`,
    unpacked in releases/: one process makes every link and the folders they need), unpack
    the new ones (`files/`), then verify the whole tree
    against the artifact's manifest before anything else: every entry with its mode and size
    and nothing else (`ctl/tree`, sorted `find` lines), and every file's sha256 (`ctl/sums`):
    the sent files and every linked file the host's index (VERIFIED) cannot vouch for are
    hashed (`sha256sum -c`); see _DELTA_AWK for when it can. Prints `hashed=N`. Exit
    DELTA_MISMATCH_EXIT when the tree is not the artifact's (e.g. a file of the base release
    was changed in place): the caller sends the full artifact instead. `upload` None: the
    delta tarball comes on the command's standard input (read by tar, then closed)."""
    partial = _p(t, "releases", f".partial-{release_id}")
    work = _p(t, ".uploads", f"{release_id}.d")
    ctl = work + "/ctl"
    src = _p(t, "releases", base)
    what = f"the tree built from {base} does not match the artifact's manifest"
    # One walk of the built tree: its entries (compared with the manifest's) and, into
    # ctl/post, every file's identity and times after the link (for the index).
    tree = (f"find . -mindepth 1 \\( -type f -printf 'f %m %s %P\\n' -fprintf {sh(ctl + '/post')} "
            f"{sh(_STAT + ' %P' + chr(92) + 'n')} \\) -o \\( -type l -printf 'l %P -> %l\\n' \\)"
            " -o \\( -type d -empty -printf 'd %P\\n' \\)")
    steps = [
        "umask 022",
        sh("rm", "-rf", partial, _p(t, "releases", release_id), work),
        sh("mkdir", "-p", work),
        sh("tar", "-xzf", upload or "-", "--no-same-permissions", "-C", work),
        *([] if upload else ["exec </dev/null"]),   # nothing after tar reads what was sent
        sh("mv", "-T", work + "/files", partial),
        # Before linking: a link changes the ctime the index is checked against.
        f"{{ cd {sh(src)} && find . -type f -printf {sh(_STAT + chr(92) + 'n')} > {sh(ctl + '/pre')}; }}",
        # An unchanged file costs a directory entry, not its bytes (rsync --link-dest's idea).
        f"{{ ! test -s {sh(ctl + '/links.tar')} || "
        f"tar -xf {sh(ctl + '/links.tar')} -C {sh(_p(t, 'releases'))} 2> {sh(ctl + '/link-errors')} || "
        f"{{ printf '%s\\n' {sh(what + ': a file to link is missing or unreadable in ' + base)} >&2; "
        f"head -n 2 {sh(ctl + '/link-errors')} >&2; exit {DELTA_MISMATCH_EXIT}; }}; }}",
        f"cd {sh(partial)}",
        f"{{ {tree} | LC_ALL=C sort > {sh(ctl + '/found')}; }}",
        f"{{ cmp -s {sh(ctl + '/found')} {sh(ctl + '/tree')} || {{ printf '%s\\n' {sh(what + ' (modes, sizes or entries):')} >&2; "
        f"diff {sh(ctl + '/tree')} {sh(ctl + '/found')} | head -n 4 >&2; exit {DELTA_MISMATCH_EXIT}; }}; }}",
        _index_in(t),   # one that cannot be read vouches for nothing: every linked file is hashed
        f"awk -v check={sh(ctl + '/check')} -v out={sh(ctl + '/index')} {sh(_DELTA_AWK)} "
        f"{sh(ctl + '/pre')} \"$vi\" {sh(ctl + '/sums')} {sh(ctl + '/post')}",
        f"{{ ! test -s {sh(ctl + '/check')} || {{ out=$(LC_ALL=C sha256sum -c --quiet --strict {sh(ctl + '/check')} 2>&1) || "
        f"{{ printf '%s\\n' {sh(what + ':')} \"$out\" | head -n 4 >&2; exit {DELTA_MISMATCH_EXIT}; }}; }}; }}",
        # Verified: the tree's files go into the index (a linked file's line replaces its old one).
        _index_merge(t, ctl + "/index"),
        "cd /",
        *_into_place(t, release_id, previous, shared_files),
        sh("rm", "-rf", *([upload] if upload else []), work),
    ]
    return _and(*steps)


def remove_releases_command(t: Target, release_ids: Sequence[str]) -> str:
    """Remove release dirs and keep the index (VERIFIED) true: see _REFRESH_AWK."""
    idx = _p(t, VERIFIED)
    before, after = _p(t, ".uploads", ".verified-before"), _p(t, ".uploads", ".verified-after")
    dirs = [_p(t, "releases", r) for r in release_ids]
    printf = f"-type f -printf {sh(_STAT + chr(92) + 'n')}"
    rm = sh("rm", "-rf", *dirs)
    # Only the removed releases are walked before (the removal changes no other inode's
    # ctime); every kept file after. A removed dir already gone prints nothing.
    return (f"if test -s {sh(idx)}; then find {' '.join(sh(d) for d in dirs)} {printf} > {sh(before)} 2>/dev/null; "
            f"{rm}; find {sh(_p(t, 'releases'))} {printf} > {sh(after)} && "
            f"awk {sh(_REFRESH_AWK)} {sh(before)} {sh(after)} {sh(idx)} > {sh(idx + '.tmp')} && "
            f"mv -f {sh(idx + '.tmp')} {sh(idx)}; rm -f {sh(before)} {sh(after)} {sh(idx + '.tmp')}; else {rm}; fi")


def switch_command(t: Target, release_id: str) -> str:
    """Point `current` at releases/<id>: a new link under a temp name, renamed over `current`."""
    tmp = _p(t, f".current-{release_id}")
    return _and(
        sh("test", "-d", _p(t, "releases", release_id)),
        sh("ln", "-sfn", f"releases/{release_id}", tmp),
        sh("mv", "-T", tmp, _p(t, "current")),
    )


def discard_delta_command(t: Target, release_id: str, upload: str) -> str:
    """Remove a delta's unverified tree, its upload and its work dir (the full artifact follows)."""
    return sh("rm", "-rf", _p(t, "releases", f".partial-{release_id}"), upload, _p(t, ".uploads", f"{release_id}.d"))


def discard_release_command(t: Target, release_id: str) -> str:
    """Remove what preparing `release_id` made (a failure before any host switched)."""
    return sh("rm", "-rf", _p(t, "releases", release_id), _p(t, "releases", f".partial-{release_id}"),
              _p(t, ".uploads", f"{release_id}.tar.gz"), _p(t, ".uploads", delta_upload_name(release_id)),
              _p(t, ".uploads", f"{release_id}.d"))


def free_space_command(t: Target, upload: str) -> str:
    """Remove a failed upload (it holds the space), then print `df -Pk`'s line for deploy_to."""
    return f"rm -f {sh(upload)}; df -Pk {sh(t.deploy_to)} 2>/dev/null | tail -n 1"


def previous_command(t: Target, release_id: str) -> str:
    """Remove a half-made release dir and print the release `release_id` replaced (its .previous)."""
    return _and(sh("rm", "-rf", _p(t, "releases", f".partial-{release_id}")),
                f"cat {sh(_p(t, 'releases', release_id, '.previous'))} 2>/dev/null || true")


def unlink_current_command(t: Target) -> str:
    """A first release undone: there was no `current` before it."""
    return sh("rm", "-f", _p(t, "current"))


def hook_command(t: Target, hook: str, cwd: str, env: dict[str, str]) -> str:
    """`cd` then the operator's hook with release variables exported.

    The exports are part of the remote command line (visible in the host's `ps`), so
    no secret may be among them: `_check_env` refuses `Secret` values."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"cd {sh(cwd)} && export {exports} && {hook}"


def prune_list(releases_: Iterable[str], keep: int, protect: Iterable[str]) -> list[str]:
    """Releases to delete: all but the newest `keep` by name (ids start with a UTC stamp), never a protected one."""
    ordered = sorted(set(releases_))
    protect = {p for p in protect if p}
    old = ordered[:-keep] if keep > 0 else ordered
    return [r for r in old if r not in protect]


def finish_command(t: Target, prune: Sequence[str], log_line: str, unlock: bool) -> str:
    cmds = [f"printf '%s\\n' {sh(log_line)} >> {sh(_p(t, 'revisions.log'))}"]
    if prune:
        cmds.append(remove_releases_command(t, prune))
    if unlock:
        cmds.append(unlock_command(t))
    return "; ".join(cmds)


def go_live_command(t: Target, release_id: str, switch: bool, hook: str, health_command: str, fence: str = "") -> str:
    """With a restart hook, one round trip: switch `current`, run the hook, try the health
    command once. Exit SWITCH_FAILED_EXIT (nothing switched), HOOK_FAILED_EXIT (its own code
    on stderr as `__hook_exit=N`) or HEALTH_PENDING_EXIT (not healthy yet: keep checking).
    `fence`: the switch and the hook run under the host's fence (`fenced`), the health try after it."""
    parts = []
    if switch:
        parts.append(f"{{ {switch_command(t, release_id)}; }} || exit {SWITCH_FAILED_EXIT}")
    parts.append(f"( {hook} ) || {{ rc=$?; echo __hook_exit=$rc >&2; exit {HOOK_FAILED_EXIT}; }}")
    if fence:
        parts = [fenced(t, fence, "; ".join(parts))]
    if health_command:
        parts.append(f"( cd {sh(_p(t, 'current'))} && {health_command} ) >/dev/null 2>&1 || exit {HEALTH_PENDING_EXIT}")
    return "; ".join(parts)


def health_check_command(t: Target, health_command: str) -> str:
    """The operator's hosts.health_command, run in `current`."""
    return f"cd {sh(_p(t, 'current'))} && {health_command}"


def log_tail_command(t: Target, lines: int = 8) -> str:
    """The last lines of the app's log (nothing when there is none)."""
    return f"tail -n {lines} {sh(_p(t, 'logs', 'app.log'))} 2>/dev/null || true"


def check_command(t: Target, pid: int) -> str:
    """Can a release go here: make deploy_to, try a write there, print `df -Pk`'s line (parse_check)."""
    probe = _p(t, f".write-test-{pid}")
    return (f"mkdir -p {sh(t.deploy_to)} 2>/dev/null; "
            f"if touch {sh(probe)} 2>/dev/null && rm -f {sh(probe)}; then echo writable=1; else echo writable=0; fi; "
            f"df -Pk {sh(t.deploy_to)} 2>/dev/null | tail -n 1")


def parse_check(text: str) -> tuple[bool, int | None]:
    """`writable=0|1` then a `df -Pk` data line -> (writable, free MB)."""
    writable = "writable=1" in text
    free = None
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[3].isdigit():
            free = int(cols[3]) // 1024
    return writable, free


# ---------------------------------------------------------------- supervising the app (commands as data)

# The toolkit's own supervisor, installed as <deploy_to>/bin/app on every release (its script
# and why it trusts what it trusts: deploy/hosts/_supervisor.py).


def supervisor_path(t: Target) -> str:
    return _p(t, "bin", "app")


def install_supervisor_command(t: Target) -> str:
    """Write bin/app (temp name, then rename: a running `app` is never half-written)."""
    tmp = _p(t, "bin", ".app.new")
    return _and(sh("mkdir", "-p", _p(t, "bin")), f"printf %s {sh(SUPERVISOR)} > {sh(tmp)}",
                sh("chmod", "755", tmp), sh("mv", "-f", tmp, supervisor_path(t)))


def supervise_command(t: Target, action: str, port_var: str = "", port: int = 0,
                      argv: Sequence[str] = ()) -> str:
    """`bin/app start|restart PORT_VAR PORT -- ARGV` / `bin/app stop|status|check-env`."""
    if action in ("start", "restart"):
        return sh(supervisor_path(t), action, port_var, port, "--", *argv)
    if action in ("stop", "status", "check-env"):
        return sh(supervisor_path(t), action)
    raise ValueError(f"unknown supervisor action {action!r}")


def unit_name(t: Target) -> str:
    """The systemd user unit of the app under this deploy_to (one per deploy_to)."""
    return f"occ-app-{hashlib.sha256(t.deploy_to.encode()).hexdigest()[:12]}.service"


def _systemd_quote(arg: str) -> str:
    # systemd.service(5) "Command lines": double quotes, backslash escapes, and "$"/"%"
    # doubled so that neither variable expansion nor specifiers touch the argument.
    esc = str(arg).replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{esc}"'


def unit_text(t: Target, port_var: str, port: int, argv: Sequence[str]) -> str:
    """A user unit that runs the app through `bin/app run` (the same explicit environment as
    the sh supervisor), restarted on failure, stopped as a whole control group."""
    cmd = " ".join(_systemd_quote(a) for a in (supervisor_path(t), "run", port_var, str(port), "--", *argv))
    return ("[Unit]\n"
            f"Description=app released by the deploy toolkit under {t.deploy_to}\n"
            "[Service]\n"
            f"WorkingDirectory={t.deploy_to}/current\n"
            f"ExecStart={cmd}\n"
            "Restart=on-failure\n"
            "KillMode=control-group\n"
            f"StandardOutput=append:{t.deploy_to}/logs/app.log\n"
            f"StandardError=append:{t.deploy_to}/logs/app.log\n"
            "[Install]\n"
            "WantedBy=default.target\n")


def systemd_restart_command(t: Target, unit: str) -> str:
    """Install the unit (if changed, systemd reloads it) and restart it."""
    name = unit_name(t)
    path = f'"$HOME"/.config/systemd/user/{name}'
    return _and('mkdir -p "$HOME"/.config/systemd/user', sh("mkdir", "-p", _p(t, "logs")),
                f"printf %s {sh(unit)} > {path}", "systemctl --user daemon-reload",
                sh("systemctl", "--user", "restart", name))


def stop_app_command(t: Target) -> str:
    """Stop the app whichever way it was supervised (the undo of a first release)."""
    return (f"if [ -x {sh(supervisor_path(t))} ]; then {supervise_command(t, 'stop')}; fi; "
            f"if command -v systemctl >/dev/null 2>&1; then "
            f"{sh('systemctl', '--user', 'stop', unit_name(t))} 2>/dev/null; fi; true")


_APP_LINE = r's/^ *"app": "\(.*\)",\{0,1\}$/\1/p'


def app_of_command(t: Target, *release_ids: str) -> str:
    """Print `<release id> <app>` per release, the app read from its RELEASE.json (the build
    writes one top-level key per line, so `"app"` is a line of its own; releases packed before
    that have it indented by two spaces)."""
    parts = []
    for rid in release_ids:
        manifest = _p(t, "releases", rid, "RELEASE.json")
        parts.append(f"printf '%s ' {sh(rid)}; {{ sed -n {sh(_APP_LINE)} {sh(manifest)} 2>/dev/null | head -n 1 | tr -d '\\n'; echo; }}")
    return "; ".join(parts)


def parse_app_of(text: str) -> dict[str, str]:
    """release id -> app ('' when the release does not say: built before releases named their app)."""
    out = {}
    for line in text.splitlines():
        rid, _, name = line.strip().partition(" ")
        if rid:
            out[rid] = name.strip()
    return out


def same_app(apps: dict[str, str], a: str, b: str) -> bool:
    """Two releases are of the same app unless both name their app and the names differ."""
    return not (apps.get(a) and apps.get(b) and apps[a] != apps[b])


def start_facts_command(t: Target, release_id: str, *, want_package: bool, probe_systemd: bool) -> str:
    """What choosing the start needs from the host, in sections: can this user run a
    systemd user unit; the release's package.json (for the start script)."""
    parts = []
    if probe_systemd:
        parts += ["echo '== supervisor'",
                  "if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; "
                  "then echo systemd; else echo sh; fi"]
    if want_package:
        pkg = _p(t, "releases", release_id, "package.json")
        parts += ["echo '== package'", f"cat {sh(pkg)} 2>/dev/null || true"]
    return "; ".join(parts)


def parse_start_facts(text: str) -> tuple[str | None, str | None]:
    """(supervisor "systemd"/"sh" or None, package.json text or None)."""
    sup, pkg, cur = None, [], None
    for line in text.splitlines():
        if line in ("== supervisor", "== package"):
            cur = line[3:]
        elif cur == "supervisor" and line.strip():
            sup = line.strip()
        elif cur == "package":
            pkg.append(line)
    return sup, ("\n".join(pkg) if cur == "package" or pkg else None)


# ---------------------------------------------------------------- a release checked in place

def release_tree_command(t: Target, release_id: str) -> str:
    """Print a release's entries as the delta's check sees them (files with mode, size, inode
    and change times), the host's index (VERIFIED) and the release's own RELEASE.json, in
    sections: what `_release._verify_target` judges before a rollback switches to it."""
    d = _p(t, "releases", release_id)
    tree = (f"find . -mindepth 1 \\( -type f -printf {sh('f %m ' + _STAT + ' %P' + chr(92) + 'n')} \\) "
            "-o \\( -type l -printf 'l %P -> %l\\n' \\) -o \\( -type d -empty -printf 'd %P\\n' \\)")
    return (f"cd {sh(d)} && echo '== tree' && {tree} && echo '== index' && "
            f"{{ cat {sh(_p(t, VERIFIED))} 2>/dev/null || true; }} && echo '== manifest' && "
            f"{{ cat RELEASE.json 2>/dev/null || true; }}")


def parse_release_tree(text: str) -> tuple[list[str], list[str], bytes]:
    """(tree lines, index lines, RELEASE.json bytes) of release_tree_command's output."""
    head, _, manifest = text.partition("\n== manifest\n")
    head, _, index = head.partition("\n== index\n")
    tree = head.split("== tree\n", 1)[-1] if "== tree" in head else ""
    return ([ln for ln in tree.splitlines() if ln.strip()], [ln for ln in index.splitlines() if ln.strip()],
            manifest.encode("utf-8"))


def hash_files_command(t: Target, release_id: str, paths: Sequence[str]) -> str:
    """sha256 of the named files of a release (`sha256  path` lines; a missing one fails)."""
    return f"cd {sh(_p(t, 'releases', release_id))} && LC_ALL=C sha256sum -- {' '.join(sh(p) for p in paths)}"
