"""The app's variables on each host: `<deploy_to>/shared/.env`, written by `invoke env.push`
(and by a promotion when `hosts.push_env` is set), read by the toolkit's supervisor.

The commands (pure builders, an exact test each) and the operations over every host in
parallel. A push is atomic per host: the bytes go on the command's standard input (never on a
command line), into a 0600 file made under `umask 077`, checked against their sha256, then
renamed over `shared/.env`. The file it replaces is kept as `.env.before-<run id>` (or a
`.env.none-<run id>` marker when there was none) until the run ends: the undo puts it back, the
finish removes the copy. A repeated push of the same run keeps the first copy, so an undo after
a resumed run still restores the file from before the run.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from deploy.errors import SettingsError
from deploy.hosts._commands import _p, sh
from deploy.hosts._group import _close, _failed, _Host, _parallel
from deploy.hosts._ssh import _connect, _run
from deploy.hosts._targets import targets

if TYPE_CHECKING:
    from deploy.config import HostsSection

SHARED_ENV = ".env"
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def _names(t, run_id: str) -> tuple[str, str, str, str]:
    if not _RUN_ID.match(run_id):
        raise SettingsError(f"Bug: run id {run_id!r} cannot name a file on the hosts.")
    return (_p(t, "shared", SHARED_ENV), _p(t, "shared", f"{SHARED_ENV}.before-{run_id}"),
            _p(t, "shared", f"{SHARED_ENV}.none-{run_id}"), _p(t, "shared", f"{SHARED_ENV}.push-{run_id}"))


def env_push_command(t, run_id: str, sha256: str) -> str:
    """Keep the current shared/.env (once per run), then write stdin to it atomically, 0600."""
    env, before, none, tmp = (sh(x) for x in _names(t, run_id))
    return (f"umask 077 && mkdir -p {sh(_p(t, 'shared'))} && "
            f"{{ [ -e {before} ] || [ -e {none} ] || {{ if [ -e {env} ]; then cp -p {env} {before}.tmp && "
            f"mv -f {before}.tmp {before}; else : > {none}; fi; }}; }} && "
            f"cat > {tmp} && {{ printf '%s  %s\\n' {sh(sha256)} {tmp} | sha256sum -c --status || "
            f"{{ rm -f {tmp}; echo 'shared/.env: the bytes received are not the bytes sent' >&2; exit 1; }}; }} && "
            f"chmod 600 {tmp} && mv -f {tmp} {env}")


def env_restore_command(t, run_id: str) -> str:
    """Put back the shared/.env this run replaced (or remove the one it created)."""
    env, before, none, tmp = (sh(x) for x in _names(t, run_id))
    return (f"rm -f {tmp}; if [ -e {before} ]; then mv -f {before} {env}; "
            f"elif [ -e {none} ]; then rm -f {env} {none}; fi")


def env_finish_command(t, run_id: str) -> str:
    """The run succeeded: the copy kept for its undo goes."""
    _env, before, none, _tmp = (sh(x) for x in _names(t, run_id))
    return f"rm -f {before} {none}"


def env_present_command(t) -> str:
    return f"if [ -f {sh(_p(t, 'shared', SHARED_ENV))} ]; then echo present; else echo missing; fi"


def _each(section: HostsSection, what: str, command, stdin: bytes = b"") -> list[_Host]:
    hs = [_Host(t) for t in targets(section)]

    def one(h: _Host) -> None:
        h.conn = _connect(section, h.t)
        h.pending = _run(h.conn, h.t, command(h.t), section, what, stdin=stdin).stdout.strip()

    try:
        _parallel(hs, one, section.max_parallel)
    finally:
        _close(hs)
    return hs


def push_env(section: HostsSection, text: str, *, run_id: str) -> list[str]:
    """Write `text` as shared/.env on every host (HostFailed naming each failing host; the
    hosts already written keep the run's copy, so the undo restores them)."""
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    hs = _each(section, "writing shared/.env", lambda t: env_push_command(t, run_id, digest), stdin=data)
    if any(h.error for h in hs):
        raise _failed("writing shared/.env", hs, "(`--abort` or the run's undo puts the previous file back)")
    return [h.t.name for h in hs]


def restore_env(section: HostsSection, *, run_id: str) -> list[str]:
    hs = _each(section, "restoring shared/.env", lambda t: env_restore_command(t, run_id))
    if any(h.error for h in hs):
        raise _failed("restoring shared/.env", hs, "(run the undo again: it is safe to repeat)")
    return [h.t.name for h in hs]


def finish_env(section: HostsSection, *, run_id: str) -> list[str]:
    hs = _each(section, "removing the previous shared/.env", lambda t: env_finish_command(t, run_id))
    return [h.t.name for h in hs if not h.error]


def missing_env(section: HostsSection) -> list[str]:
    """The hosts that have no shared/.env (HostFailed when a host cannot be asked)."""
    hs = _each(section, "looking for shared/.env", env_present_command)
    if any(h.error for h in hs):
        raise _failed("looking for shared/.env", hs, "before anything was changed")
    return [h.t.name for h in hs if h.pending != "present"]
