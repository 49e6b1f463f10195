"""Container commands on a host, as data: every shell string the image target sends to a host
(deploy/targets/image.py) is built here by a pure function, and every fact read back has its
parser here (tests/test_image_commands.py checks them to the character).

On every host, under `deploy_to` (beside the tree target's files, sharing its lock):

    shared/.env              the app's variables, the dotenv dialect of the tree target
    image/releases/<id>      one record per release the host holds: `<image ref> <previous id or ->`
    image/current            `<release id> <port>`: what the proxy serves (written after it switched)
    image/certs/<registry>/  the registry's CA (ca.crt), when the settings name one (podman --cert-dir)
    image/.work-*            a command's private scratch (0700): the pull's auth file, the run's env file;
                             removed by the command and, after a kill, by the next state read
    .deploy-lock             the host lock (deploy/hosts/_lock.py)
    revisions.log            one line per release, rollback and undo

Containers are named `occ-<key>-<release id>` (`key`: a hash of deploy_to, so two environments
on one host never touch each other's) and labelled `occ.release`, `occ.digest`, `occ.port`.

Secrets: the registry password goes to the host on a command's standard input only, as the
runtime's auth file (0600, in a 0700 scratch folder), and the folder is removed when the pull
ends. The app's variables are read on the host from shared/.env by the supervisor's dotenv
parser (DOTENV_AWK) into an env file in the same kind of folder, passed as `--env-file` and
removed once the container exists: no value is ever on a command line. A value the runtime's
env-file format cannot carry (a line break, a trailing carriage return) stops the start naming
the key, before anything runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from deploy.hosts._commands import _p, fenced, sh
from deploy.hosts._supervisor import DOTENV_AWK
from deploy.hosts._values import Target

IMAGE_DIR = "image"
ENV_UNCARRIED_EXIT = 87     # shared/.env holds a value the runtime cannot carry (stderr names the key)
NO_FREE_PORT_EXIT = 88      # every candidate port is taken
HEALTH_FAILED_EXIT = 89     # the container did not answer its health path in time, or exited
NO_RUNTIME_EXIT = 90        # the runtime the settings name (or any) is not installed
RUNTIMES = ("podman", "docker")
FINISH_WAIT_LIMIT = 120     # seconds a state read waits for an earlier operation's background finish

#: a digest reference: <registry>/<repository>@sha256:<64 hex>
IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9.:-]*(?:/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Runtime:
    """How one host runs containers: the client (podman or docker), the flags every call gets
    (`[image] runtime_args`, placeholders already filled for the host) and those `run` gets."""

    name: str
    args: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ()

    def __call__(self, *argv: object) -> str:
        return sh(self.name, *self.args, *argv)


def app_key(t: Target) -> str:
    """What names this environment's containers on the host (one per deploy_to)."""
    return hashlib.sha256(t.deploy_to.encode()).hexdigest()[:10]


def container_name(t: Target, release_id: str) -> str:
    return f"occ-{app_key(t)}-{release_id}"


def _d(t: Target, *parts: str) -> str:
    return _p(t, IMAGE_DIR, *parts)


def check_ref(ref: str) -> str:
    """A digest reference or ValueError (refs travel inside commands: only this shape is sent)."""
    if not IMAGE_REF.match(ref or ""):
        raise ValueError(f"not an image digest reference: {ref!r}")
    return ref


def registry_of(ref: str) -> str:
    return ref.split("/", 1)[0]


def fill_args(args: Iterable[str], t: Target) -> tuple[str, ...]:
    """`[image] runtime_args`/`run_args` for one host: `{deploy_to}`, `{host}`, `{port}` and `{key}`
    (app_key: short, for paths that must be, such as podman's --runroot of at most 50 characters)."""
    return tuple(a.replace("{deploy_to}", t.deploy_to).replace("{host}", t.host).replace("{port}", str(t.port))
                 .replace("{key}", app_key(t)) for a in args)


# ---------------------------------------------------------------- reading a host

def detect_command(wanted: str) -> str:
    """Print the runtime to use (`podman`/`docker`; `auto`: podman first) and the health tool
    (`curl`/`wget`), or exit NO_RUNTIME_EXIT naming what is missing."""
    names = RUNTIMES if wanted == "auto" else (wanted,)
    pick = " ".join(names)
    return ("rt=; for n in " + pick + "; do if command -v \"$n\" >/dev/null 2>&1; then rt=$n; break; fi; done; "
            f"[ -n \"$rt\" ] || {{ echo {sh('no container runtime on this host (looked for: ' + ', '.join(names) + ')')} >&2; "
            f"exit {NO_RUNTIME_EXIT}; }}; "
            "ht=; for n in curl wget; do if command -v \"$n\" >/dev/null 2>&1; then ht=$n; break; fi; done; "
            "echo \"runtime=$rt\"; echo \"health=$ht\"")


def parse_detect(text: str) -> tuple[str, str]:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return values.get("runtime", ""), values.get("health", "")


# The container's occ.port label in `ps --format`: podman's Labels is a map, docker's a string
# with a Label method.
_PORT_LABEL = ('{{index .Labels "occ.port"}}', '{{.Label "occ.port"}}')


def image_state_command(t: Target, rt: Runtime, images: bool = True, containers: bool = True) -> str:
    """Wait for an earlier operation's finish still draining or stopping in the background
    (wait_finish_command), clear scratch left by a killed command, then print, in sections: `current`, one line per
    release record (`id ref previous`), the images the runtime holds by digest (`images`: a
    release asks the runtime per image when it pulls instead), and this environment's
    containers (`name state port`; `containers=False`: a release, which knows from the records
    whether its container can exist and whose finish asks the runtime on the host). At most two
    runtime calls, whatever the host holds; none with neither."""
    d = _d(t)
    return "; ".join([
        f"mkdir -p {sh(_d(t, 'releases'))}",
        f"rm -rf {sh(d)}/.work-*",
        wait_finish_command(t),
        "echo '== current'", f"cat {sh(_d(t, 'current'))} 2>/dev/null || true",
        "echo '== records'",
        f"for f in {sh(_d(t, 'releases'))}/*; do [ -f \"$f\" ] || continue; ref=; prev=; "
        "read -r ref prev < \"$f\" || true; printf '%s %s %s\\n' \"${f##*/}\" \"$ref\" \"${prev:--}\"; done",
        "echo '== images'",
        f"{rt('images', '--digests', '--format', '{{.Repository}}@{{.Digest}}')} 2>/dev/null || true" if images
        else "true",
        "echo '== containers'",
        f"{rt('ps', '-a', '--format', '{{.Names}} {{.State}} ' + _PORT_LABEL[rt.name == 'docker'])} 2>/dev/null | "
        f"grep {sh('^' + re.escape(f'occ-{app_key(t)}-'))} || true" if containers else "true",
    ])


@dataclass(frozen=True)
class Record:
    release: str
    ref: str
    previous: str | None
    present: bool


@dataclass(frozen=True)
class ImageHostState:
    """What a host holds: the live release and its port, the release records, the containers."""

    current: str | None
    port: int | None
    records: tuple[Record, ...]
    containers: tuple[tuple[str, str], ...]   # (name, state)

    def record(self, release_id: str | None) -> Record | None:
        return next((r for r in self.records if r.release == release_id), None)

    def running(self, name: str) -> bool:
        return any(n == name and st.lower().startswith(("running", "up")) for n, st in self.containers)

    def exists(self, name: str) -> bool:
        return any(n == name for n, _ in self.containers)

    def running_port(self, name: str) -> int | None:
        """The port (occ.port label) of the container when the read saw it running."""
        for n, st in self.containers:
            words = st.split()
            if n == name and self.running(name) and len(words) > 1 and words[-1].isdigit():
                return int(words[-1])
        return None


def parse_image_state(text: str) -> ImageHostState:
    sections: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("== "):
            cur = line[3:].strip()
            sections[cur] = []
        elif cur is not None and line.strip():
            sections[cur].append(line.strip())
    current, port = None, None
    head = (sections.get("current") or [""])[0].split()
    if head:
        current = head[0]
        port = int(head[1]) if len(head) > 1 and head[1].isdigit() else None
    held = set(sections.get("images", []))
    records = []
    for line in sections.get("records", []):
        parts = line.split()
        if len(parts) == 3:
            rid, ref, prev = parts
            records.append(Record(rid, ref, None if prev == "-" else prev, ref in held))
    containers = []
    for line in sections.get("containers", []):
        name, _, st = line.partition(" ")
        containers.append((name, st.strip()))
    return ImageHostState(current, port, tuple(sorted(records, key=lambda r: r.release)), tuple(containers))


# ---------------------------------------------------------------- the registry

def auth_json(registry: str, username: str, password: str) -> bytes:
    """The runtime's auth file (podman --authfile, docker's config.json): sent on stdin only."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": token}}}).encode()


def _work(t: Target) -> str:
    # A scratch folder for one command: private (umask 077), removed by the command; a killed
    # command's is removed by the next state read.
    return f"w={sh(_d(t))}/.work-$$ && rm -rf \"$w\" && mkdir -p \"$w\""


def ca_command(t: Target, registry: str, pem: bytes | None = None) -> str:
    """Write the registry's CA (stdin; or `pem`, a public certificate, in the command itself, so
    that stdin stays free for the pull's login) where podman's --cert-dir reads it."""
    certs = _d(t, "certs", registry)
    source = "cat" if pem is None else f"printf %s {sh(pem.decode('ascii'))}"
    return f"umask 022 && mkdir -p {sh(certs)} && {source} > {sh(certs + '/ca.crt.new')} && mv -f {sh(certs + '/ca.crt.new')} {sh(certs + '/ca.crt')}"


def _tls_args(t: Target, rt: Runtime, registry: str, *, insecure: bool, ca: bool) -> list[str]:
    if rt.name != "podman":
        return []   # docker reads TLS settings from its daemon (/etc/docker/certs.d, insecure-registries)
    if insecure:
        return ["--tls-verify=false"]
    return ["--cert-dir", _d(t, "certs", registry)] if ca else []


def pull_command(t: Target, rt: Runtime, ref: str, *, auth: bool, insecure: bool = False, ca: bool = False,
                 shown: bool = False) -> str:
    """Pull `ref` unless the runtime already has it; print `pulled` or `present`. `auth`: the
    auth file comes on stdin into a private scratch folder, removed when the pull ends.
    `shown`: for --dry-run, `ref` may hold a placeholder."""
    shown or check_ref(ref)
    registry = registry_of(ref)
    tls = _tls_args(t, rt, registry, insecure=insecure, ca=ca)
    have = f"{rt('image', 'inspect', ref)} >/dev/null 2>&1"
    if not auth:
        pull = f"{rt('pull', *tls, ref)} >/dev/null"
        return f"if {have}; then echo present; else {pull} && echo pulled; fi"
    if rt.name == "docker":
        pull = f"{sh('docker', '--config')} \"$w\" {sh(*rt.args, 'pull', ref)} >/dev/null"
        write = "cat > \"$w/config.json\""
    else:
        pull = f"{rt('pull', *tls)} --authfile \"$w/auth.json\" {sh(ref)} >/dev/null"
        write = "cat > \"$w/auth.json\""
    return (f"if {have}; then cat >/dev/null; echo present; else umask 077 && {_work(t)} && {write} && "
            f"{{ {pull}; rc=$?; rm -rf \"$w\"; [ $rc -eq 0 ] || exit $rc; }} && echo pulled; fi")


def login_check_command(t: Target, rt: Runtime, registry: str, *, insecure: bool = False, ca: bool = False) -> str:
    """Check the login (prepare): the auth file comes on stdin into a private scratch folder and
    the runtime logs in with the credentials it holds (podman and docker check stored ones
    against the registry), then the folder goes. Neither the user nor the password is on a
    command line; nothing is kept."""
    tls = _tls_args(t, rt, registry, insecure=insecure, ca=ca)
    if rt.name == "docker":
        write, login = "cat > \"$w/config.json\"", f"{sh('docker', '--config')} \"$w\" {sh(*rt.args, 'login', registry)}"
    else:
        write, login = "cat > \"$w/auth.json\"", f"{rt('login', *tls)} --authfile \"$w/auth.json\" {sh(registry)}"
    return (f"umask 077 && {_work(t)} && {write} && "
            f"{{ {login} </dev/null >/dev/null; rc=$?; rm -rf \"$w\"; exit $rc; }}")


# ---------------------------------------------------------------- the app's container

def _env_file(t: Target, port_var: str) -> str:
    """shared/.env by the dotenv dialect into "$w/env" (KEY=value lines), port_var left out
    (the toolkit sets it); ENV_UNCARRIED_EXIT naming the key for a value with a line break or a
    trailing carriage return (the env-file format ends a value there)."""
    env = _p(t, "shared", ".env")
    nl_msg = "shared/.env: %s has a line break in its value, which a container's env file cannot carry; " \
             "put it on one line (e.g. base64), then run again\n"
    cr_msg = "shared/.env: %s ends in a carriage return, which a container's env file cannot carry\n"
    return (f"e={sh(env)}; : > \"$w/env\"; if [ -e \"$e\" ]; then "
            f"words=$(LC_ALL=C awk -v F=\"$e\" {sh(DOTENV_AWK)} \"$e\") || exit {ENV_UNCARRIED_EXIT}; "
            "eval \"set -- $words\"; "
            "nl='\n'; cr=$(printf '\\r'); "
            "for kv in \"$@\"; do k=${kv%%=*}; "
            f"[ \"$k\" = {sh(port_var)} ] && continue; "
            f"case $kv in *\"$nl\"*) printf {sh(nl_msg)} \"$k\" >&2; exit {ENV_UNCARRIED_EXIT};; "
            f"*\"$cr\") printf {sh(cr_msg)} \"$k\" >&2; exit {ENV_UNCARRIED_EXIT};; esac; "
            "printf '%s\\n' \"$kv\" >> \"$w/env\"; done; fi")


def _pick_port(first: int, span: int) -> str:
    """Set `$port` to the first of first..first+span-1 that nothing listens on (/proc/net/tcp*)."""
    return ("port=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | "
            f"awk -v lo={first} -v n={span} "
            "'$4 == \"0A\" { split($2, a, \":\"); used[a[length(a)]] = 1 } "
            "END { for (p = lo; p < lo + n; p++) if (!(sprintf(\"%04X\", p) in used)) { print p; exit } }') && "
            f"[ -n \"$port\" ] || {{ echo {sh(f'no free port in {first}-{first + span - 1}')} >&2; exit {NO_FREE_PORT_EXIT}; }}")


def run_command(t: Target, rt: Runtime, release_id: str, ref: str, *, port_var: str, app_port: int,
                first_port: int, span: int, network: str = "host", shown: bool = False, fresh: bool = False) -> str:
    """Start the release's container on a free port (or keep it when a killed attempt left it
    running) and print `port=N`. The app's variables go in as an env file made on the host
    (never a value on a command line); the file goes as soon as the container exists. The app
    also gets DEPLOY_RELEASE_ID (the image is one per commit; the release id is per promotion).

    `network`: `host` (the app listens on the picked port, given in `port_var`) or `publish`
    (the app listens on `app_port` inside; 127.0.0.1:<picked port> is published to it).
    `fresh`: the host was just read (under the lock) and has no container of that name: the
    runtime is not asked again.
    `shown`: for --dry-run, `ref` may hold a placeholder."""
    shown or check_ref(ref)
    name = container_name(t, release_id)
    digest = ref.rsplit("@", 1)[1]
    net = (["--network=host"] if network == "host" else [])
    inside = "$port" if network == "host" else str(app_port)
    publish = "" if network == "host" else " -p \"127.0.0.1:$port:" + str(app_port) + "\""
    run = (f"{rt('run', '-d', '--name', name, '--label', f'occ.release={release_id}', '--label', f'occ.digest={digest}', *net)}"
           f" --label \"occ.port=$port\" --env-file \"$w/env\" --env \"{port_var}={inside}\" "
           f"--env {sh(f'DEPLOY_RELEASE_ID={release_id}')}{publish} "
           f"{sh(*rt.run_args, ref)} >/dev/null")
    port_of = rt('container', 'inspect', '--format', '{{index .Config.Labels "occ.port"}}', name)
    running = rt('container', 'inspect', '--format', '{{.State.Running}}', name)
    reuse = "" if fresh else (
        f"st=$({running} 2>/dev/null); if [ \"$st\" = true ]; then echo \"port=$({port_of})\"; exit 0; fi; "
        f"if [ -n \"$st\" ]; then {rt('rm', '-f', name)} >/dev/null 2>&1; fi; ")
    return (f"{reuse}"
            f"umask 077 && {_work(t)} && {{ {_env_file(t, port_var)}; }} && {_pick_port(first_port, span)} && "
            f"{{ {run}; rc=$?; rm -rf \"$w\"; [ $rc -eq 0 ] || exit $rc; }} && echo \"port=$port\"")


PORT_VAR = "$port"   # the shell variable run_then_health_command sets from the run's `port=N`


def run_then_health_command(run: str, health: str) -> str:
    """`run` (a run_command, perhaps fenced), then `health` (a health_command on PORT_VAR) in one
    command: the run's `port=N` is printed and kept in `$port`. The run is in a subshell: its own
    `exit` (a container kept from a killed attempt) does not end this command."""
    return (f"out=$( {run}\n) || exit $?; printf '%s\\n' \"$out\"; port=${{out##*port=}}; "
            "case $port in ''|*[!0-9]*) echo \"the start printed no port: $out\" >&2; exit 1;; esac; "
            f"{health}")


def parse_port(text: str) -> int | None:
    m = re.search(r"^port=(\d+)$", text, re.M)
    return int(m[1]) if m else None


def health_command(t: Target, rt: Runtime, release_id: str, port: int | str, path: str, timeout: float,
                   tool: str = "curl") -> str:
    """GET http://127.0.0.1:<port><path> on the host until it answers 2xx/3xx (redirects not
    followed) or `timeout` passes; HEALTH_FAILED_EXIT with the last answer and, when the
    container stopped, its log's tail (asked about once a second: a probe every 0.05 s, so the
    switch follows the app's first answer closely, and a runtime call every 20th). `port`: a number, or PORT_VAR (the shell's `$port`, set
    by the run command before it in the same command). Ends the shell (exit): it comes last."""
    name = container_name(t, release_id)
    url = f"http://127.0.0.1:{port}{path}"
    if isinstance(port, int):
        arg = sh(url)
    elif port == PORT_VAR:
        arg = f"\"http://127.0.0.1:$port\"{sh(path)}"
    else:
        raise ValueError(f"Bug: health port {port!r} is neither a number nor {PORT_VAR}")
    if tool == "wget":
        probe = (f"code=$(wget -S -q -O /dev/null --max-redirect=0 -T 2 {arg} 2>&1 | "
                 "awk '/^  HTTP\\//{c=$2} END{print c}')")
    else:
        probe = f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 {arg} 2>/dev/null)"
    running = rt('container', 'inspect', '--format', '{{.State.Running}}', name)
    limit = max(1, int(round(timeout)))
    return (f"end=$(( $(date +%s) + {limit} )); code=; n=0; while :; do {probe} || :; "
            "case $code in 2??|3??) echo healthy; exit 0;; esac; n=$((n + 1)); "
            f"if [ $((n % 20)) -eq 0 ] && [ \"$({running} 2>/dev/null)\" != true ]; then echo {sh(f'container {name} stopped before it was healthy; its last lines:')} >&2; "
            f"{rt('logs', '--tail', '10', name)} >&2 2>&1; exit {HEALTH_FAILED_EXIT}; fi; "
            f"if [ $(date +%s) -ge $end ]; then echo \"no 2xx/3xx from {url} within {limit}s (last: ${{code:-no answer}})\" >&2; "
            f"exit {HEALTH_FAILED_EXIT}; fi; sleep 0.05; done")


def record_command(t: Target, release_id: str, ref: str, previous: str | None) -> str:
    """Write (or keep) the release's record: its image and the release it replaced."""
    check_ref(ref)
    rec = _d(t, "releases", release_id)
    return (f"mkdir -p {sh(_d(t, 'releases'))} && {{ [ -f {sh(rec)} ] || "
            f"{{ printf '%s %s\\n' {sh(ref)} {sh(previous or '-')} > {sh(rec + '.new')} && mv -f {sh(rec + '.new')} {sh(rec)}; }}; }}")


def set_current_command(t: Target, release_id: str | None, port: int | None, log_line: str) -> str:
    """`image/current` says what the proxy serves now (renamed into place), and a revisions.log line."""
    cur = _d(t, "current")
    log = f"printf '%s\\n' {sh(log_line)} >> {sh(_p(t, 'revisions.log'))}"
    if release_id is None:
        return f"rm -f {sh(cur)}; {log}"
    return (f"printf '%s %s\\n' {sh(release_id)} {sh(port)} > {sh(cur + '.new')} && mv -f {sh(cur + '.new')} {sh(cur)}"
            f" && {log}")


def stop_command(t: Target, rt: Runtime, release_id: str, *, drain: float = 0.0, stop_timeout: int = 10,
                 fence: str = "") -> str:
    """Drain (in-flight requests finish on the old port), stop (SIGTERM, SIGKILL after
    `stop_timeout`), remove the release's container; one runtime call with podman. Nothing
    there is fine. `fence`: the stop, after the drain, runs only while the host's fence holds
    it (_commands.fenced; a stale one exits FENCED_EXIT)."""
    name = container_name(t, release_id)
    wait = f"sleep {drain:g}; " if drain > 0 else ""
    if rt.name == "podman":
        stop = f"{rt('rm', '-f', '-t', stop_timeout, name)} >/dev/null 2>&1; true"
    else:
        stop = f"{rt('stop', '-t', stop_timeout, name)} >/dev/null 2>&1; {rt('rm', '-f', name)} >/dev/null 2>&1; true"
    return wait + fenced(t, fence, stop)


def stop_others_command(t: Target, rt: Runtime, keep: Sequence[str], *, drain: float = 0.0, stop_timeout: int = 10,
                        fence: str = "") -> str:
    """Drain, then stop and remove every container of this environment on the host but those of
    the releases in `keep`: which ones is asked of the runtime there, after the drain (one call
    to list them, one to remove them all with podman). Nothing there is fine. `fence`: as
    stop_command's."""
    names = " ".join(f"-e {sh(container_name(t, r))}" for r in keep)
    listed = (f"{rt('ps', '-a', '--format', '{{.Names}}')} 2>/dev/null | grep {sh('^' + re.escape(f'occ-{app_key(t)}-'))}"
              + (f" | grep -v -x -F {names}" if names else ""))
    if rt.name == "podman":
        stop = f"{rt('rm', '-f', '-t', stop_timeout)} $n >/dev/null 2>&1"
    else:
        stop = f"{rt('stop', '-t', stop_timeout)} $n >/dev/null 2>&1; {rt('rm', '-f')} $n >/dev/null 2>&1"
    wait = f"sleep {drain:g}; " if drain > 0 else ""
    # $n unquoted on purpose: one word per container name (occ-<key>-<release id>: no blanks).
    return wait + fenced(t, fence, f"n=$({listed}); [ -z \"$n\" ] || {{ {stop}; }}; true")


def background_finish_command(t: Target, script: str) -> str:
    """Run `script` (the drain, the old containers' stop, the prune) detached from the SSH
    session, so the operation returns once the proxy serves the new container. The file
    image/.finish-<n> exists while it runs (made before it starts, holding its pid before this
    command returns) and goes when it ends. Every later state read (which each operation does first,
    under the lock) waits for it: no operation starts while an earlier one still drains or
    stops a container."""
    f = _d(t, ".finish-")
    body = sh(script + '; rm -f "$0"')
    # The file first holds this shell's pid, then the detached process's ($!), written before
    # this command returns: a state read never sees a pid that is already gone while the finish
    # runs (the detached process writing its own pid raced the read).
    return (f"f={sh(f)}$$; echo $$ > \"$f\" && {{ nohup sh -c {body} \"$f\" </dev/null >/dev/null 2>&1 & }} "
            "&& echo $! > \"$f\"")


def wait_finish_command(t: Target, limit: int = FINISH_WAIT_LIMIT) -> str:
    """Wait (at most `limit` seconds each) for the background finishes whose files remain: a
    file goes when its finish ends; one whose process is gone (killed with its host) is removed."""
    return (f"for f in {sh(_d(t))}/.finish-*; do n=0; while [ -f \"$f\" ] && [ $n -lt {limit * 20} ]; do "
            "pid=$(cat \"$f\" 2>/dev/null); [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null || break; "
            "sleep 0.05; n=$((n + 1)); done; rm -f \"$f\"; done")


def remove_images_command(t: Target, rt: Runtime, release_ids: Sequence[str], refs: Sequence[str]) -> str:
    """Remove releases' records and (when given) their images; a missing one is fine."""
    parts = []
    if release_ids:
        parts.append(sh("rm", "-f", *(_d(t, "releases", r) for r in release_ids)))
    for ref in refs:
        parts.append(f"{rt('rmi', check_ref(ref))} >/dev/null 2>&1 || true")
    return "; ".join(parts) or "true"


def prune_images(records: Sequence[Record], keep: int, protect: Iterable[str]) -> tuple[list[str], list[str]]:
    """(release records to drop, image refs to remove): all but the newest `keep` records by
    name, never a protected one; an image goes only when no kept record names it."""
    ordered = sorted(records, key=lambda r: r.release)
    protect = {p for p in protect if p}
    old = ordered[:-keep] if keep > 0 else ordered
    drop = [r for r in old if r.release not in protect]
    kept_refs = {r.ref for r in ordered if r not in drop}
    refs = sorted({r.ref for r in drop if r.ref not in kept_refs})
    return [r.release for r in drop], refs
