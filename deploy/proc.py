"""Run local commands in one place: argv lists (never a shell), secrets only in the
environment, output captured, exit codes checked by the caller.

Long children (the app's install and build, the Shopify CLI) run with `stream=LABEL`: their
output is still captured whole, and each line is also shown as it comes, redacted, on
stderr: on a terminal as a compact tail of the last few lines that is redrawn in place and
cleared when the child ends; in CI or a pipe as plain `LABEL | line` lines. Invoke's own
`--echo` and `--hide` reach this module through `configure()` (see deploy/cli.py's `guarded`).
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from deploy.errors import SettingsError, ToolMissing
from deploy.redact import redact, reveal


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 12) -> str:
        """The last lines of stderr (or stdout), redacted: for error messages."""
        text = (self.stderr.strip() or self.stdout.strip())
        return redact("\n".join(text.splitlines()[-lines:]))

    def explain(self, lines: int = 12) -> str:
        """What an error block shows of a failed child: the lines that name the cause,
        wherever they are in its output (`cause_lines`), then its last `lines` lines; redacted."""
        return explain(self.stdout, self.stderr, lines)

    @property
    def display(self) -> str:
        return redact(shlex.join(self.argv))


# ---- the cause of a failure
#
# A tool's last lines are often not its cause: `npm ci` on a lockfile out of sync ends with
# its usage text (the cause, `Missing: x from lock file`, came before it), a Vite/React Router
# build with a broken import ends with rollup's list of watched files. So an error block shows
# the lines these patterns pick from the whole output first, then the tail. One pattern per
# tool; a line counts when any matches.
CAUSE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("npm", r"^npm (?:ERR!|error) (?:code E|.*\b(?:Missing|Invalid): .* (?:from )?lock ?file|.*can only install "
            r"packages when|.*ERESOLVE|.*Could not resolve dependency|.*Conflicting peer|.*(?:404|E404)\b|"
            r".*No matching version|.*notarget|.*ETARGET|.*EBADENGINE|.*Unsupported engine|.*ENOENT|.*EACCES|"
            r".*ELIFECYCLE|.*command failed|.*enoent)"),
    ("npm-missing", r"^\s*(?:npm (?:ERR!|error) )?(?:Missing|Invalid): \S+ .*lock ?file"),
    ("vite/rollup", r"(?:^|\s)(?:Could not resolve |\[vite\]: Rollup failed|RollupError|\[commonjs--resolver\]|"
                    r"Transform failed with|\[plugin:?[\w:-]+\]|error during build:|✘ \[ERROR\]|"
                    r"\"?\w+\"? is not exported by|Failed to resolve import|Build failed in)"),
    ("tsc", r"\berror TS\d+:"),
    ("node", r"^\s*(?:Uncaught )?(?:[A-Z]\w*Error|Error)(?: \[\w+\])?: |Cannot find module |ERR_MODULE_NOT_FOUND"),
    ("prisma", r"\bError: P\d{4}\b|^\s*P\d{4}\b|\bDatabase error(?: code)?:|Migration name: |"
               r"migration .* failed to apply|Error validating|Environment variable not found"),
    ("postgres", r"(?:^|\s)(?:ERROR|FATAL|PANIC):\s|^pg_(?:dump|restore|dumpall): error:|^psql: error:"),
    ("ssh", r"Permission denied \(|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
            r"Could not resolve hostname|Connection (?:refused|timed out)|No route to host|"
            r"Offending \w+ key in|Too many authentication failures"),
)
_CAUSE_RE = None
CAUSE_LINES = 8        # at most this many picked lines, the first ones (a cause is usually named first)
CAUSE_WIDTH = 400      # a picked line is cut here (a minified bundle's line is one line)


def cause_lines(text: str, limit: int = CAUSE_LINES) -> list[str]:
    """The lines of a child's output that name why it failed (CAUSE_PATTERNS), in order,
    each once, colours and npm's `npm error` prefix kept as the tool wrote them; redacted."""
    global _CAUSE_RE
    if _CAUSE_RE is None:
        _CAUSE_RE = re.compile("|".join(f"(?:{rx})" for _, rx in CAUSE_PATTERNS))
    picked: list[str] = []
    for raw in text.splitlines():
        line = clean_line(raw).rstrip()
        if line and _CAUSE_RE.search(line) and line not in picked:
            picked.append(line if len(line) <= CAUSE_WIDTH else line[:CAUSE_WIDTH] + " ...")
            if len(picked) >= limit:
                break
    return picked


def explain(stdout: str, stderr: str, lines: int = 12) -> str:
    """A failed child's cause lines (from both streams) above its last `lines` lines (stderr,
    or stdout when stderr is empty); only the tail when every cause line is already in it."""
    text = stderr.strip() or stdout.strip()
    tail = [clean_line(x).rstrip() for x in text.splitlines()[-lines:]]
    causes = [c for c in cause_lines(stdout + "\n" + stderr) if c not in tail]
    if not causes:
        return "\n".join(tail)
    tail = tail[-min(lines, 6):]    # the cause is above: the tail only says where it stopped
    return "\n".join(["cause (picked from the whole output):", *(f"  {c}" for c in causes),
                      f"last {len(tail)} lines:", *tail])


def which(tool: str, path: str | None = None) -> str:
    """The full path of `tool`, or ToolMissing naming it and how to get it."""
    found = shutil.which(tool, path=path)
    if not found:
        raise ToolMissing(f"`{tool}` was not found on PATH.", _INSTALL_HINTS.get(tool, f"Install {tool} and run again."))
    return found


_INSTALL_HINTS = {
    "node": "Install Node.js 20 (Debian: apt-get install -y nodejs npm).",
    "npm": "Install npm (Debian: apt-get install -y npm).",
    "pg_dump": "Install the PostgreSQL client matching the server's major version (apt-get install -y postgresql-client).",
    "pg_restore": "Install the PostgreSQL client matching the server's major version (apt-get install -y postgresql-client).",
    "shopify": "Install Shopify CLI 3.x: npm install -g @shopify/cli@3.",
    "git": "Install git (apt-get install -y git).",
}


# The base every child gets: what makes a tool run the same as in the deployer's shell,
# and nothing that authenticates anyone. Each name, and why it is here:
BASE_NAMES = (
    "PATH",                  # find node, npm, git, pg_dump, shopify
    "HOME",                  # npm's cache, git's config, the Shopify CLI's config folder
    "USER", "LOGNAME",       # who runs it: git and libpq default to it (a name, not a credential)
    "LANG", "LC_ALL",        # locale: output decoding and sorting as in the deployer's shell (LC_* below too)
    "TZ",                    # timestamps written by builds and tools
    "TMPDIR",                # where tools put temp files (CI runners point it at a work disk)
    "TERM", "NO_COLOR", "FORCE_COLOR",   # colour decisions only
    "CI",                    # tools switch to non-interactive mode (the Shopify CLI reads it)
    "NODE_OPTIONS",          # e.g. --max-old-space-size for builds; how to run node, not a secret
    # Trust stores: without them npm and the Shopify CLI fail TLS behind a company CA.
    "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    # libpq's TLS trust and connect settings for pg_dump/psql (not PGPASSWORD/PGPASSFILE, nor
    # the client certificate and key: credentials travel only where a caller puts them).
    "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCRL", "PGCONNECT_TIMEOUT",
    # Proxies: every network-speaking child (npm install, the Shopify CLI) needs them where
    # they are set. A proxy URL may hold a proxy password: that is infrastructure the
    # deployer's network already requires, not a deploy secret, so it passes (redaction
    # still masks URL passwords wherever text is shown).
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    # Per-user config and cache folders (the Shopify CLI keeps its settings under XDG_CONFIG_HOME).
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
)
# Name prefixes passed along: locale categories, and npm's own settings (registry, cache,
# offline, engine-strict...), which CI sets as variables; see `_is_credential` for the
# npm settings that are held back.
BASE_PREFIXES = ("LC_", "npm_config_", "NPM_CONFIG_")
# npm settings that authenticate (`_authToken`, `_auth`, `_password`, `//host/:_authToken`,
# `username`, `email` with `always-auth`): a build that needs one names it in settings.
_CREDENTIAL_WORDS = ("auth", "token", "password", "username", "email", "cert", "key")


def npm_credential_key(key: str) -> bool:
    """An npm setting's key (as in an npmrc line, or after `npm_config_`) that authenticates."""
    low = key.strip().lower()
    return "//" in low or any(w in low for w in _CREDENTIAL_WORDS)


def _is_credential(name: str) -> bool:
    low = name.lower()
    return low.startswith("npm_config_") and npm_credential_key(low[len("npm_config_"):])


def child_env(
    environ: Mapping[str, str] | None = None,
    names: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The explicit environment of a child process.

    The minimal base above, taken from `environ` (default: this process's environment),
    plus the variables listed in `names` (if set in `environ`), plus `extra`. Values in
    `extra` may be `Secret`s: they stay `Secret`s here (so this dict never displays a
    value) and are revealed by `run`, into the child's environment only. Everything else
    in `environ` (database URLs, API keys, session secrets, tokens) stays out.
    """
    environ = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for name, value in environ.items():
        if name in BASE_NAMES or (name.startswith(BASE_PREFIXES) and not _is_credential(name)):
            env[name] = value
    for name in names:
        if name in environ:
            env[name] = environ[name]
    if extra:
        env.update(extra)
    return env


# Invoke's --echo / --hide, set once per task by cli.guarded.
_ECHO = False
_HIDE: frozenset[str] = frozenset()     # "out" and/or "err": child streams not shown


def configure(*, echo: bool = False, hide=None) -> None:
    """Apply Invoke's `--echo` (print each command before it runs, redacted) and `--hide`
    (`out`, `err` or `both`: do not show that stream of a streamed child; it is still captured)."""
    global _ECHO, _HIDE
    _ECHO = bool(echo)
    h = {True: "both", "stdout": "out", "stderr": "err"}.get(hide, hide) if hide else None
    _HIDE = frozenset({"out", "err"} if h == "both" else {h} if h in ("out", "err") else ())


def echo(command: str) -> None:
    """With --echo: show a command the toolkit runs (local argv, or `host: command`), redacted."""
    if _ECHO:
        print(redact(f"+ {command}"), file=sys.stderr, flush=True)


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: str | None = None,
    stream: str | None = None,
) -> CommandResult:
    """Run `argv` and return its result; never raises for a non-zero exit.

    The child's environment is the minimal base of `child_env()` (this process's PATH,
    HOME, locale...) plus `env`: never this process's whole environment, so a secret
    reaches a child only when its caller passes it. Values may be `Secret`s, whose plain
    value goes to the child and nowhere else. The child runs in its own session: on a
    timeout (exit 124) or an interrupt of this process its whole process group is killed,
    so grandchildren (an npm script's node, a shell's background job) cannot outlive it.
    With `stream=LABEL` each output line is also shown as it arrives (see the module docstring).
    """
    echo(shlex.join(str(a) for a in argv))   # before reveal: a Secret in argv shows as ***
    argv = [reveal(a) if not isinstance(a, Path) else str(a) for a in argv]
    full_env = {k: reveal(v) for k, v in child_env(os.environ).items()}
    if env:
        full_env.update({k: reveal(v) for k, v in env.items()})
    exe = shutil.which(argv[0], path=full_env.get("PATH")) if os.sep not in argv[0] else argv[0]
    if exe is None:
        which(argv[0], path=full_env.get("PATH"))
    start = time.monotonic()
    try:
        p = subprocess.Popen(
            argv, cwd=cwd, env=full_env, text=True, errors="replace",
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,   # its own process group, so a timeout can kill all of it
        )
    except FileNotFoundError:
        raise ToolMissing(f"`{argv[0]}` was not found.", _INSTALL_HINTS.get(argv[0])) from None
    if stream is not None:
        return _run_streamed(p, argv, input, timeout, stream, start)
    try:
        out, err = p.communicate(input, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        out = _kill_group(p)
        rc, err = 124, f"timed out after {timeout}s"
    except BaseException:
        _kill_group(p)          # Ctrl-C, SIGTERM's exception: no orphaned children
        raise
    return CommandResult(tuple(argv), rc, out or "", err or "", time.monotonic() - start)


def _run_streamed(p: subprocess.Popen, argv, input, timeout, label: str, start: float) -> CommandResult:
    """Read both pipes line by line (one thread each), keep everything, show each line."""
    shown = Tail(label, sys.stderr)
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def pump(name: str, f) -> None:
        try:
            for line in iter(f.readline, ""):
                chunks[name].append(line)
                if name not in _HIDE:
                    shown.add(line)
        except (OSError, ValueError):
            pass   # the pipe was closed under us after a kill

    readers = [threading.Thread(target=pump, args=(n, f), daemon=True)
               for n, f in (("out", p.stdout), ("err", p.stderr))]
    for r in readers:
        r.start()
    try:
        if p.stdin is not None:
            try:
                p.stdin.write(input or "")
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        rc = wait_exit(p, timeout)
        timed_out = None
    except subprocess.TimeoutExpired:
        _kill_group_only(p)
        rc, timed_out = 124, f"timed out after {timeout}s"
    except BaseException:
        _kill_group_only(p)
        shown.close()
        raise
    deadline = time.monotonic() + 5
    for r in readers:
        # A grandchild that left the group may hold the pipes open: stop waiting for it after a
        # bound. Its reader thread (a daemon) is left blocked; closing the pipe under it could
        # deadlock on the reader's buffer lock.
        r.join(timeout=max(0.0, deadline - time.monotonic()))
    shown.close()
    out, err = "".join(chunks["out"]), "".join(chunks["err"])
    return CommandResult(tuple(argv), rc, out, timed_out or err, time.monotonic() - start)


def wait_exit(p: subprocess.Popen, timeout: float | None) -> int:
    """`p.wait(timeout)`, woken by the exit itself: with a timeout, Popen.wait polls (sleeping up
    to 50 ms between looks), which a build's every step would pay; a pidfd (Linux 5.3+) is
    readable the moment the child exits. Elsewhere, Popen.wait as it is."""
    if timeout is not None and hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(p.pid)
        except OSError:   # already reaped, or a kernel without pidfds
            fd = -1
        if fd >= 0:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if not poller.poll(max(0, int(timeout * 1000))):
                    raise subprocess.TimeoutExpired(p.args, timeout)
            finally:
                os.close(fd)
    return p.wait(timeout=timeout)


def _kill_group_only(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


_ANSI = None


def clean_line(text: str) -> str:
    """One line as a person should see it: the child's colours and cursor moves removed,
    only what a carriage return left visible, tabs as spaces, secrets masked."""
    global _ANSI
    if _ANSI is None:
        _ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
    text = _ANSI.sub("", text.rstrip("\r\n"))
    text = text.rsplit("\r", 1)[-1].replace("\t", "    ")
    return redact("".join(ch for ch in text if ch.isprintable()))


class Tail:
    """Where a streamed child's lines are shown. On a terminal (and not in CI): the last
    `size` lines, redrawn in place, each cut to the terminal's width, erased at the end.
    Elsewhere: every line, plainly prefixed with the label."""

    def __init__(self, label: str, out, size: int = 6, tty: bool | None = None):
        self.label, self.out, self.size = label, out, size
        if tty is None:
            tty = _isatty(out) and not os.environ.get("CI")
        self.tty = tty
        self.lines: list[str] = []
        self.drawn = 0
        self._lock = threading.Lock()

    def add(self, raw: str) -> None:
        line = clean_line(raw)
        if not line.strip():
            return
        with self._lock:
            try:
                if not self.tty:
                    self.out.write(f"  {self.label} | {line}".rstrip() + "\n")
                else:
                    self.lines = (self.lines + [line])[-self.size:]
                    self._draw()
                self.out.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.tty, self.out = False, open(os.devnull, "w")

    def _draw(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        prefix = f"  {self.label} | "
        room = max(10, width - len(prefix) - 1)
        text = self._erase()
        dim, end = ("", "") if os.environ.get("NO_COLOR") else ("\x1b[2m", "\x1b[0m")
        text += "".join(f"{dim}{prefix}{ln[:room]}{end}\n" for ln in self.lines)
        self.out.write(text)
        self.drawn = len(self.lines)

    def _erase(self) -> str:
        # Up one line and clear it, once per line drawn before.
        return "\x1b[1A\x1b[2K" * self.drawn

    def close(self) -> None:
        """Erase the tail: the step's own progress line says how it ended."""
        with self._lock:
            if self.tty and self.drawn:
                try:
                    self.out.write(self._erase())
                    self.out.flush()
                except (BrokenPipeError, OSError, ValueError):
                    pass
                self.drawn = 0


def _isatty(f) -> bool:
    try:
        return f.isatty()
    except (AttributeError, ValueError):
        return False


def _kill_group(p: subprocess.Popen) -> str:
    """Kill the child's whole process group; return what it wrote to stdout so far."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        out, _ = p.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        # A process that left the group (setsid) still holds the pipes: stop reading.
        p.kill()
        for f in (p.stdout, p.stderr, p.stdin):
            if f:
                f.close()
        p.wait()
        out = ""
    return out or ""


def ensure_writable(path: Path, what: str, hint: str) -> Path:
    """Create `path` if needed and prove a file can be written in it; SettingsError if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise SettingsError(f"{path}: {what} cannot be written ({e.strerror or e}).", hint) from None
    return path


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            out.append(int(d.name))
    return out


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed child not yet reaped is not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
