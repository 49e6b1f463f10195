"""The image target's operations on hosts: release an image by digest, undo it, roll back to an
earlier release's image, read what each host serves. Commands are _containers.py's; connections,
the lock and the one-report-per-operation rule are the tree target's (deploy/hosts/).

A release runs in phases over every host in parallel, with a barrier between them (as the tree
release does), so the hosts go together:

    0. connect, detect the runtime, read the host (its records, `current`, containers)
    1. prepare: pull by digest (no pull when the image is there), write the release's record,
       start its container beside the live one on a free port, wait for its health path
       -- a failure on any host removes every new container (and an image this run pulled):
          no proxy was switched, the old containers kept serving
    2. switch: the host's proxy to the new port (it returns once the proxy serves from it),
       then `image/current`
       -- a failure switches the switched hosts' proxies back to their old containers, which
          are still running; the new containers go
    3. finish: the old containers drain and stop; records and images beyond `keep` are pruned,
       in one command left running in the background on the host (the operation returns once
       every proxy serves the new container); the next operation's state read waits for it

A rollback is the same with an earlier release's record (its image kept on the host: no pull).
An undo goes back to the release each host served before, reusing its container when it still
runs; it reads the host (the proxy's live port, `current`) rather than trusting the run's memory,
so it is safe to repeat and after a kill at any point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from deploy.errors import HostFailed, PlanChanged, SettingsError
from deploy.hosts._containers import (ENV_UNCARRIED_EXIT, Record, auth_json, HEALTH_FAILED_EXIT, NO_FREE_PORT_EXIT, ImageHostState,
                                      Runtime, ca_command, check_ref, container_name, detect_command, fill_args,
                                      health_command, login_check_command, parse_detect, parse_port, parse_image_state,
                                      prune_images, pull_command, record_command, registry_of, remove_images_command,
                                      run_command, set_current_command, image_state_command, stop_command,
                                      background_finish_command, PORT_VAR, run_then_health_command,
                                      stop_others_command)
from deploy.hosts._commands import fence_token, fenced, take_fence_command
from deploy.hosts._group import _close, _holder, _table
from deploy.hosts._ssh import _connect, _HostError, _run
from deploy.hosts._targets import targets
from deploy.hosts._values import HostResult, Target
from deploy.parallel import pmap
from deploy.proc import explain
from deploy.redact import Secret, redact, reveal

if TYPE_CHECKING:
    from deploy.config import AppSection, HostsSection


@dataclass(frozen=True)
class ImageProxy:
    """The host's proxy as the image target drives it (deploy/hosts/_proxy.py's builders):
    `switch(t, port)` points it at 127.0.0.1:port and returns once it serves from there;
    `upstream(t)` prints the live port, `parse(text)` reads it back (None: none)."""

    switch: Callable[[Target, int], str]
    upstream: Callable[[Target], str]
    parse: Callable[[str], int | None]


@dataclass(frozen=True)
class Containers:
    """What the image target's host operations need, from `[image]`, `[app]` and `[proxy]`."""

    runtime: str = "auto"                    # auto | podman | docker
    runtime_args: tuple[str, ...] = ()       # every runtime call ({deploy_to} {host} {port} filled per host)
    run_args: tuple[str, ...] = ()           # `run` only (e.g. --ulimit nofile=1024:1024)
    network: str = "host"                    # host | publish
    port_span: int = 20                      # candidate ports from the host's app port on
    keep: int = 3                            # release records (and their images) kept per host
    stop_timeout: int = 10                   # seconds an old container gets after SIGTERM
    drain_seconds: float = 1.0               # the old container serves in-flight requests this long after the switch
    previous_running: bool = False           # the container served before stays running (no drain, no stop)
    health_path: str = "/"
    health_timeout: float = 30.0
    port_var: str = "PORT"
    app_port: int = 3000                     # the app's port inside the container (network = publish)
    insecure: bool = False                   # the registry is reached without TLS verification (named in settings)
    ca: bytes = b""                          # the registry's CA (PEM), written to each host for podman
    username: str = ""                       # the registry login (a Secret: it may be one)
    password: Secret | None = None
    proxy: ImageProxy | None = None

    @property
    def auth(self) -> bool:
        return bool(self.username and self.password)


@dataclass
class _H:
    """Per-host bookkeeping for one operation."""

    t: Target
    c: Containers
    conn: Any = None
    rt: Runtime | None = None
    tool: str = "curl"
    st: ImageHostState | None = None
    live_port: int | None = None          # the proxy's live port, else image/current's
    new_port: int | None = None
    pulled: bool = False
    switched: bool = False
    release: str | None = None            # the release this host is on afterwards
    error: str = ""
    note: str = ""
    output: str = ""                      # stdout of the last command of several steps (_steps)
    started: float = field(default_factory=time.monotonic)
    fence: str = ""                       # the token this operation's changes carry (_commands.fenced)

    @property
    def known(self) -> ImageHostState:
        if self.st is None:
            raise RuntimeError(f"Bug: {self.t.name}: read before it was opened")
        return self.st

    def run(self, cmd: str, what: str, *, stdin: bytes = b"", long: bool = False, ok=(0,)):
        return _run(self.conn, self.t, cmd, self.section, what, ok, long=long, stdin=stdin)

    def change(self, cmd: str, what: str, *, long: bool = False):
        """A command that changes what the host serves: run under the host's fence."""
        return self.run(fenced(self.t, self.fence, cmd), what, long=long)

    section: Any = None


_NO_ANSWER = "\0"   # in _H.output: the command did not return (timed out, connection lost)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _each(hs: Sequence[_H], fn: Callable[[_H], None], max_parallel: int) -> None:
    """fn on every host without an error yet; a failure is that host's error (redacted)."""

    def one(h: _H) -> None:
        try:
            fn(h)
        except _HostError as e:
            h.error = redact(_why(str(e)))
        except SettingsError as e:
            h.error = redact(e.message)
        except Exception as e:  # noqa: BLE001 - one host's surprise must not hide the others'
            h.error = redact(f"{type(e).__name__}: {e}")

    pmap(one, [h for h in hs if not h.error], max_parallel)


def _why(text: str) -> str:
    # The toolkit's own exit codes, said in words.
    for code, words in ((ENV_UNCARRIED_EXIT, "shared/.env cannot reach the container as written"),
                        (NO_FREE_PORT_EXIT, "no free port for the new container"),
                        (HEALTH_FAILED_EXIT, "the new container did not become healthy")):
        if f"exit {code}" in text or f"exited {code}" in text:
            return f"{words}: {text}"
    return text


def _open(section: HostsSection, c: Containers, app: AppSection | None, images: bool = True,
          fence: str = "", run: str = "", containers: bool = True) -> list[_H]:
    """Connect, detect the runtime, read every host; with `fence` (an operation that changes the
    hosts) take each host's fence first, in the same round trip as the read: from then on, a
    change of an earlier run still running there (a killed run's drain and stop) changes nothing."""
    hs = [_H(t, c, section=section, fence=fence) for t in targets(section, app)]

    def one(h: _H) -> None:
        h.conn = _connect(section, h.t, run=run)   # `run`: the connection its lock was taken on
        if c.runtime == "auto":
            r = h.run(detect_command(c.runtime), "looking for the container runtime")
            name, h.tool = parse_detect(r.stdout)
            h.rt = Runtime(name, fill_args(c.runtime_args, h.t), fill_args(c.run_args, h.t))
            _read(h, images, containers=containers)
        else:   # the runtime is named: it is looked for and the host read in one round trip
            h.rt = Runtime(c.runtime, fill_args(c.runtime_args, h.t), fill_args(c.run_args, h.t))
            _read(h, images, detect=detect_command(c.runtime), containers=containers)

    _each(hs, one, section.max_parallel)
    return hs


def _read(h: _H, images: bool = True, detect: str = "", containers: bool = True) -> None:
    """The host's state (and the proxy's live port) into `h.st`, `h.live_port`; `detect`: the
    runtime check first, in the same command (its lines come before the first section)."""
    assert h.rt is not None
    cmd = image_state_command(h.t, h.rt, images, containers)
    if h.fence:   # before the wait for an earlier finish: a stale one stops at its next change
        cmd = f"{take_fence_command(h.t, h.fence)} && {{ {cmd}; }}"
    if h.c.proxy is not None:
        cmd += f"; echo '== proxy'; {{ {h.c.proxy.upstream(h.t)}; }} 2>/dev/null || true"
    if detect:
        cmd = f"{detect} && {{ {cmd}; }}"
    r = h.run(cmd, "reading the host's images")
    if detect:
        h.tool = parse_detect(r.stdout.split("\n== ", 1)[0])[1]
    text, _, proxy = r.stdout.partition("\n== proxy\n")
    h.st = parse_image_state(text)
    port = h.c.proxy.parse(proxy) if h.c.proxy is not None and proxy.strip() else None
    h.live_port = port or h.st.port


def _results(hs: Sequence[_H]) -> list[HostResult]:
    return [HostResult(host=h.t.name, ok=not h.error, release=h.release if h.release is not None else
                       (h.st.current if h.st else None), previous=h.st.current if h.st else None,
                       duration=round(time.monotonic() - h.started, 3), error=h.error,
                       reachable=h.conn is not None, note=h.note) for h in hs]


def _failed(what: str, hs: Sequence[_H], summary: str, hint: str = "") -> HostFailed:
    results = _results(hs)
    bad = [r for r in results if not r.ok]
    return HostFailed(f"{what} failed on {len(bad)} of {len(results)} hosts {summary}.\n{_table(results)}",
                      hint or "Fix the failing hosts (the error column says what), then run it again.",
                      results=results)


# ---------------------------------------------------------------- the steps of one host

def _pull_command(h: _H, ref: str) -> tuple[str, bytes]:
    """(command, its stdin): the registry's CA written (podman), then `ref` pulled unless the
    host has it, printing `pulled` or `present`; the login (when set) is the stdin."""
    c, rt = h.c, h.rt
    assert rt is not None
    parts = []
    if c.ca and not c.insecure and rt.name == "podman":
        parts.append(ca_command(h.t, registry_of(ref), pem=c.ca))   # public: stdin stays the login's
    stdin = b""
    if c.auth:
        assert c.password is not None
        stdin = auth_json(registry_of(ref), reveal(c.username), c.password.reveal())
    parts.append(pull_command(h.t, rt, ref, auth=c.auth, insecure=c.insecure, ca=bool(c.ca)))
    return " && ".join(f"{{ {p}\n}}" for p in parts), stdin


def _pull(h: _H, ref: str) -> None:
    """The image on the host (a pull only when it is not there yet)."""
    cmd, stdin = _pull_command(h, ref)
    r = h.run(cmd, f"pulling {ref}", stdin=stdin, long=True)
    h.pulled = "pulled" in r.stdout.split()


_ANY_EXIT = range(-1, 256)


def _steps(h: _H, cmd: str, steps: Sequence[tuple[tuple[str, ...], str]], last: str, *, stdin: bytes = b"",
           long: bool = True):
    """Several steps in one round trip: `steps` are (the line starts a step prints when it
    succeeded, what it does), `last` what the final step does. On a failure the error names the
    first step whose line is missing (as `_run` names its one step); the result otherwise."""
    r = h.run(cmd, steps[0][1] if steps else last, stdin=stdin, long=long, ok=_ANY_EXIT)
    h.output = r.stdout
    if r.exited != 0:
        lines = [line.strip() for line in r.stdout.splitlines()]
        what = next((w for marks, w in steps if not any(line.startswith(marks) for line in lines)), last)
        raise _HostError(f"{what} failed (exit {r.exited}): {explain(r.stdout, r.stderr, 6)}".rstrip(": "))
    return r


def _start(h: _H, release_id: str, ref: str, *, before: str = "",
           steps: Sequence[tuple[tuple[str, ...], str]] = (), stdin: bytes = b"", fresh: bool | None = None) -> int:
    """The release's container running and healthy on a port of its own, in one round trip
    (after `before`, whose `steps` say what it does); the port. `fresh`: no container of the
    release can be on the host (default: none was when the host was read)."""
    c, rt = h.c, h.rt
    assert rt is not None
    if fresh is None:
        fresh = not h.known.exists(container_name(h.t, release_id))
    run = fenced(h.t, h.fence, run_command(h.t, rt, release_id, ref, port_var=c.port_var, app_port=c.app_port,
                                           first_port=h.t.app_port, span=c.port_span, network=c.network,
                                           fresh=fresh))
    cmd = run_then_health_command(run, health_command(h.t, rt, release_id, PORT_VAR, c.health_path,
                                                      c.health_timeout, h.tool))
    if before:
        cmd = f"{before} && {{ {cmd}\n}}"
    r = _steps(h, cmd, [*steps, (("port=",), f"starting the container of {release_id}")],
               f"waiting for {c.health_path} on the new container's port", stdin=stdin)
    port = parse_port(r.stdout)
    if port is None:
        raise _HostError(f"starting the container of {release_id} printed no port: {r.stdout.strip()[:200]}")
    return port


def _switch(h: _H, release_id: str | None, port: int | None, line: str, health: str = "") -> None:
    """The proxy to `port`, then image/current, in one round trip (the proxy first: current
    never names a release the proxy does not serve for long, and a re-run repeats both).
    `health`: a health check of `port` that must pass first, in the same round trip (a
    subshell: the check ends its shell)."""
    current = set_current_command(h.t, release_id, port, line)
    first = [(("healthy",), f"checking {release_id}'s container on port {port}")] if health else []
    if port is not None and h.c.proxy is not None:
        cmd = f"{{ {h.c.proxy.switch(h.t, port)}\n}} && echo switched && {{ {current}; }}"
        if health:
            cmd = f"( {health} ) && {cmd}"
        _steps(h, fenced(h.t, h.fence, cmd), [*first, (("switched",), f"switching the proxy to port {port}")],
               "writing image/current")
    elif health:
        _steps(h, fenced(h.t, h.fence, f"( {health} ) && {{ {current}; }}"), first, "writing image/current")
    else:
        h.change(current, "writing image/current")


def _stop(h: _H, release_id: str | None, drain: bool = True) -> None:
    if release_id:
        assert h.rt is not None
        h.run(stop_command(h.t, h.rt, release_id, drain=h.c.drain_seconds if drain else 0.0,
                           stop_timeout=h.c.stop_timeout, fence=h.fence),
              f"stopping the container of {release_id}", long=True)


def _finish(h: _H, live: str, drain: str | None, prune: tuple[list[str], list[str]] = ([], [])) -> None:
    """Every container of this environment on the host but `live`'s goes: `drain` (the one the
    proxy served before) after proxy.drain_seconds, with any left by a killed run (the runtime
    on the host says which there are); then the records and images in `prune`. In one command
    that runs on in the background (background_finish_command): the proxy already serves
    `live`, nothing here is needed for the result, and the next operation's state read waits
    for it. With `previous_running`, `drain` stays running instead (the way back is then a
    health check and a switch)."""
    assert h.rt is not None
    keep = [live] + ([drain] if h.c.previous_running and drain and drain != live else [])
    wait = h.c.drain_seconds if drain and drain != live and not h.c.previous_running else 0.0
    parts = [stop_others_command(h.t, h.rt, keep, drain=wait, stop_timeout=h.c.stop_timeout, fence=h.fence)]
    drop, refs = prune
    if drop:
        parts.append(fenced(h.t, h.fence, remove_images_command(h.t, h.rt, drop, refs)))
        h.note = f"pruned {', '.join(drop)}"
    # Each part in a subshell: one that finds the fence moved (exit FENCED_EXIT) ends alone,
    # and the next checks again.
    h.run(background_finish_command(h.t, "; ".join(f"( {p}\n)" for p in parts)),
          "stopping the old containers (in the background)")


def _forget(h: _H, release_id: str, ref: str | None) -> None:
    """Remove what preparing `release_id` made: its container, its record unless it was there
    before, and its image when this operation pulled it."""
    assert h.rt is not None
    _stop(h, release_id, drain=False)
    h.change(remove_images_command(h.t, h.rt, [release_id], [ref] if ref and h.pulled else []),
             f"removing what preparing {release_id} made", long=True)


# ---------------------------------------------------------------- release

@dataclass(frozen=True)
class ServedBefore:
    """What a host served before an operation: its release and port (None: nothing)."""

    release: str | None
    port: int | None


def read_image_hosts(section: HostsSection, c: Containers, app: AppSection | None = None) -> list[tuple[str, ImageHostState | None, str]]:
    """(host, its state or None, error) for every host: what `serving`, `releases` and
    `way_back` read."""
    hs = _open(section, c, app)
    try:
        return [(h.t.name, h.st, h.error) for h in hs]
    finally:
        _close(hs)   # type: ignore[arg-type]


def release_image(section: HostsSection, c: Containers, release_id: str, ref: str, *, run_id: str,
            remember: Callable[[dict[str, ServedBefore]], None], pulled: Callable[[list[str]], None],
            app: AppSection | None = None, now: datetime | None = None) -> list[HostResult]:
    """Put `ref` live as `release_id` on every host (phases in the module docstring). `remember`
    gets what each host served before anything changes (the run state's record for the undo);
    `pulled` the hosts where this release pulled its image. The run holds the hosts' lock."""
    check_ref(ref)
    now = now or _now()
    what = f"release {release_id}"
    # No runtime call in the read: the pull asks the runtime for its one image, and the finish
    # which containers there are.
    hs = _open(section, c, app, images=False, fence=fence_token(run_id), run=run_id, containers=False)
    try:
        if any(h.error for h in hs):
            raise _failed(what, hs, "before anything changed; every host stays on its release")
        remember({h.t.name: ServedBefore(h.known.current, h.live_port) for h in hs})
        for h in hs:
            if h.known.current == release_id:
                h.release = release_id   # a resumed run: this host is done but for the finish
        todo = [h for h in hs if h.release != release_id]

        def prepare(h: _H) -> None:
            # One round trip: the pull, the release's record, the start and its health check.
            pull, stdin = _pull_command(h, ref)
            steps: list[tuple[tuple[str, ...], str]] = [(("pulled", "present"), f"pulling {ref}")]
            # A release's container is only ever started once its record is written, and removed
            # before its record is: with no record there is no container of it to look for.
            fresh = h.known.record(release_id) is None
            if fresh:
                pull += f" && {{ {record_command(h.t, release_id, ref, h.known.current)}; }} && echo recorded"
                steps.append((("recorded",), "writing the release's record"))
            try:
                h.new_port = _start(h, release_id, ref, before=pull, steps=steps, stdin=stdin, fresh=fresh)
            finally:
                h.pulled = "pulled" in h.output.split()   # also when a later step failed: the undo removes it

        _each(todo, prepare, section.max_parallel)
        pulled([h.t.name for h in todo if h.pulled])
        if any(h.error for h in hs):
            for h in todo:
                if h.conn is None:
                    continue
                try:
                    _forget(h, release_id, ref)
                except _HostError as e:
                    h.error = h.error or f"cleanup failed: {e}"
            raise _failed(what, hs, "before any proxy switched; every host stays on its release (new containers "
                                    "removed)")

        def switch(h: _H) -> None:
            _switch(h, release_id, h.new_port, f"{now.isoformat()} release {release_id} {ref} (was "
                                               f"{h.known.current or '-'}) by {_holder()} run {run_id}")
            h.switched, h.release = True, release_id

        _each(todo, switch, section.max_parallel)
        if any(h.error for h in hs):
            _back_to_before(section, hs, release_id, ref, now, run_id)
            raise _failed(what, hs, "while switching; the switched hosts are back on their old containers")

        def finish(h: _H) -> None:
            old = h.known.current
            _finish(h, release_id, drain=old,
                    prune=_to_prune(h, protect=(release_id, old or release_id), new=Record(release_id, ref, old, True)))

        _each(hs, finish, section.max_parallel)
        results = _results(hs)
        if any(not r.ok for r in results):
            raise HostFailed(f"{what}: every host serves it, but finishing (stopping the old container, pruning) "
                             f"failed on some:\n{_table(results)}", "Check those hosts' runtime and disk.",
                             results=results)
        return results
    finally:
        _close(hs)   # type: ignore[arg-type]


def _to_prune(h: _H, protect: Sequence[str], new: Record | None = None) -> tuple[list[str], list[str]]:
    """(records, images no kept record names) beyond `keep`, from what the host held when it
    was read plus the record this operation wrote (`new`)."""
    records = [r for r in h.known.records if new is None or r.release != new.release] + ([new] if new else [])
    return prune_images(records, h.c.keep, protect)


def _back_to_before(section, hs: Sequence[_H], release_id: str, ref: str, now: datetime, run_id: str) -> None:
    """After a failed switch: switched hosts' proxies back to their old containers (still
    running), every new container removed."""

    def back(h: _H) -> None:
        prev = h.known.current
        if h.switched:
            _switch(h, prev, h.live_port if prev else None,
                    f"{now.isoformat()} undo {release_id} -> {prev or '-'} by {_holder()} run {run_id}")
            h.switched, h.release = False, prev
        _forget(h, release_id, ref)

    for h in hs:
        if h.conn is None or h.release == release_id and not h.switched:
            continue
        try:
            back(h)
        except _HostError as e:
            h.error = (h.error + f"; switching back failed: {e}").lstrip("; ")


# ---------------------------------------------------------------- undo

def undo_image_release(section: HostsSection, c: Containers, release_id: str, *, run_id: str,
                 before: dict[str, ServedBefore], pulled: Sequence[str], app: AppSection | None = None,
                 now: datetime | None = None) -> list[HostResult]:
    """Undo `release(..)` of `release_id`: hosts serving it go back to what they served before
    (`before`, else the release's record), hosts elsewhere lose only what preparing it made.
    Reads each host first: safe to repeat, and after a kill at any point. Its own fence token: an
    abort fences the killed attempt's commands still running on a host."""
    now = now or _now()
    hs = _open(section, c, app, fence=fence_token(run_id, undo=True), run=run_id)
    try:
        def one(h: _H) -> None:
            st = h.known
            rec = st.record(release_id)
            was = before.get(h.t.name)
            prev = was.release if was is not None else (rec.previous if rec else None)
            h.pulled = h.t.name in pulled
            new_port = _container_port(h, release_id)
            serving_new = st.current == release_id or (new_port is not None and h.live_port == new_port)
            if not serving_new:
                if rec is not None or st.exists(container_name(h.t, release_id)):
                    _forget(h, release_id, rec.ref if rec else None)
                h.release = st.current
                return
            line = f"{now.isoformat()} undo {release_id} -> {prev or '-'} by {_holder()} run {run_id}"
            if prev is None or prev == release_id:
                _switch(h, None, None, line)
                _forget(h, release_id, rec.ref if rec else None)
                h.release = None
                h.note = "it served nothing before: the app is stopped"
                return
            port = _ensure_running(h, prev)
            _switch(h, prev, port, line)
            h.release = prev
            _stop(h, release_id)
            h.change(remove_images_command(h.t, h.rt, [release_id], [rec.ref] if rec and h.pulled else []),  # type: ignore[arg-type]
                     f"removing {release_id}'s record")

        _each(hs, one, section.max_parallel)
        results = _results(hs)
        if any(not r.ok for r in results):
            raise HostFailed(f"undo of release {release_id} failed on {sum(not r.ok for r in results)} of "
                             f"{len(results)} hosts.\n{_table(results)}",
                             "Fix the failing hosts and run the undo again; it is safe to repeat.", results=results)
        return results
    finally:
        _close(hs)   # type: ignore[arg-type]


def _container_port(h: _H, release_id: str) -> int | None:
    """The port of the release's container when it runs (its occ.port label): as the host's read
    saw it (`ps` lists both), else asked of the runtime."""
    assert h.rt is not None
    name = container_name(h.t, release_id)
    if not h.known.exists(name):
        return None
    seen = h.known.running_port(name)
    if seen is not None:
        return seen
    r = h.run(h.rt("container", "inspect", "--format", '{{.State.Running}} {{index .Config.Labels "occ.port"}}',
                   name) + " 2>/dev/null || true", "reading a container's port")
    parts = r.stdout.split()
    return int(parts[1]) if len(parts) == 2 and parts[0] == "true" and parts[1].isdigit() else None


def _ensure_running(h: _H, release_id: str) -> int:
    """`release_id`'s container running and healthy: the one still running (its port), or a new
    one from its record's image (pulled only when the host no longer has it), in one round trip."""
    port = _container_port(h, release_id)
    if port is not None:
        assert h.rt is not None
        h.run(health_command(h.t, h.rt, release_id, port, h.c.health_path, h.c.health_timeout, h.tool),
              f"checking {release_id}'s container on port {port}", long=True)
        return port
    rec = h.known.record(release_id)
    if rec is None:
        raise _HostError(f"release {release_id} has no record on this host (image/releases/{release_id}): "
                         "its image is unknown here")
    if rec.present:
        return _start(h, release_id, rec.ref)
    # Not seen (or the read did not ask the runtime for its images): pulled unless the host has it.
    pull, stdin = _pull_command(h, rec.ref)
    try:
        return _start(h, release_id, rec.ref, before=pull, steps=[(("pulled", "present"), f"pulling {rec.ref}")],
                      stdin=stdin)
    finally:
        h.pulled = False   # an image brought back for a release that keeps its record is kept


# ---------------------------------------------------------------- rollback

def rollback_image(section: HostsSection, c: Containers, to: str, *, run_id: str, expect: str | None,
             app: AppSection | None = None, now: datetime | None = None) -> list[HostResult]:
    """Every host to release `to` (its record's image: no pull while the host has it), after
    health, proxy switched; checked on every host before any switches (the record is there;
    no host serves anything but `expect` or `to`: PlanChanged). A failure after switching
    switches the switched hosts back. The caller holds the hosts' lock."""
    now = now or _now()
    what = f"rollback to {to}"
    # The read asks the runtime for containers only: the start pulls the image if it is gone.
    hs = _open(section, c, app, images=False, fence=fence_token(run_id), run=run_id)
    try:
        for h in hs:
            if h.error:
                continue
            if h.known.record(to) is None:
                have = ", ".join(r.release for r in h.known.records) or "none"
                h.error = f"release {to} is not on this host (its records: {have})"
        stale = [h for h in hs if not h.error and expect and h.known.current not in (expect, to)]
        if stale:
            raise PlanChanged(
                "The hosts changed after the rollback plan was shown: it said they serve "
                f"{expect}, but " + ", ".join(f"{h.t.name} serves {h.known.current or 'nothing'}" for h in stale)
                + ". Nothing was switched.",
                "Another run released meanwhile. Look again (`invoke hosts.releases --env=<env>`) and run the "
                "rollback again to get a plan of what is live now.")
        if any(h.error for h in hs):
            raise _failed(what, hs, "before any host switched; nothing changed")
        todo = [h for h in hs if h.known.current != to]
        for h in hs:
            if h not in todo:
                h.release = to

        # One host whose container of `to` still runs ([image] previous_running): its health
        # check goes in the switch's round trip (nothing else waits on it), not one of its own.
        checks: dict[str, str] = {}

        def prepare(h: _H) -> None:
            port = _container_port(h, to) if len(todo) == 1 else None
            if port is None:
                h.new_port = _ensure_running(h, to)
                return
            assert h.rt is not None
            h.new_port = port
            checks[h.t.name] = health_command(h.t, h.rt, to, port, h.c.health_path, h.c.health_timeout, h.tool)

        _each(todo, prepare, section.max_parallel)
        if any(h.error for h in hs):
            for h in todo:
                if h.conn is not None:
                    try:
                        _stop(h, to, drain=False)
                    except _HostError as e:
                        h.error = h.error or f"cleanup failed: {e}"
            raise _failed(what, hs, "before any proxy switched; nothing changed")

        def switch(h: _H) -> None:
            h.output = _NO_ANSWER   # _steps puts the command's output here once it returns
            _switch(h, to, h.new_port, f"{now.isoformat()} rollback {h.known.current or '-'} -> {to} "
                                       f"by {_holder()} run {run_id}", health=checks.get(h.t.name, ""))
            h.switched, h.release = True, to

        _each(todo, switch, section.max_parallel)
        if any(h.error for h in hs):
            # Nothing moved only when every failed host answered that its health check, which
            # runs before its switch, failed; any other failure (one after the check, a host that
            # stopped answering) may have come after the proxy moved.
            switched_any = any(h.switched or h.error and not (h.t.name in checks and h.output != _NO_ANSWER
                                                              and "healthy" not in h.output.split())
                               for h in todo)

            def back(h: _H) -> None:
                prev = h.known.current
                if h.switched:
                    _switch(h, prev, h.live_port if prev else None,
                            f"{now.isoformat()} rollback to {to} undone by {_holder()} run {run_id}")
                    h.switched, h.release = False, prev
                _stop(h, to, drain=False)

            for h in todo:
                if h.conn is not None:
                    try:
                        back(h)
                    except _HostError as e:
                        h.error = (h.error + f"; switching back failed: {e}").lstrip("; ")
            raise _failed(what, hs, "while switching; the switched hosts are back on their old containers"
                          if switched_any else "before any proxy switched; nothing changed")

        def finish(h: _H) -> None:
            _finish(h, to, drain=h.known.current)

        _each(todo, finish, section.max_parallel)
        results = _results(hs)
        if any(not r.ok for r in results):
            raise HostFailed(f"{what}: every host serves it, but stopping the old containers failed on some:\n"
                             f"{_table(results)}", "Check those hosts' runtime.", results=results)
        return results
    finally:
        _close(hs)   # type: ignore[arg-type]


# ---------------------------------------------------------------- prepare

def check_image_hosts(section: HostsSection, c: Containers, registry: str, app: AppSection | None = None) -> list[str]:
    """Every host answers, has the runtime and curl or wget, and logs in to `registry` with the
    settings' credentials (through stdin; nothing kept). HostFailed naming each failing host."""
    hs = _open(section, c, app)
    try:
        def one(h: _H) -> None:
            assert h.rt is not None
            if not h.tool:
                raise _HostError("neither curl nor wget is installed: the health check runs on the host")
            if c.ca and not c.insecure and h.rt.name == "podman":
                h.run(ca_command(h.t, registry), "writing the registry's CA", stdin=c.ca)
            if c.auth:
                assert c.password is not None
                h.run(login_check_command(h.t, h.rt, registry, insecure=c.insecure, ca=bool(c.ca)),
                      f"logging in to {registry}", stdin=auth_json(registry, reveal(c.username), c.password.reveal()))

        _each(hs, one, section.max_parallel)
        if any(h.error for h in hs):
            raise _failed("checking the hosts for the image release", hs, "before anything changed")
        return [f"{h.t.name}: {h.rt.name if h.rt else '?'}" for h in hs]
    finally:
        _close(hs)   # type: ignore[arg-type]
