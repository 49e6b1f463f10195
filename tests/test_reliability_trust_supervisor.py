"""Issue 21, cases 9 and 10, through real parts: the host supervisor (`<deploy_to>/bin/app`)
on real sshd hosts, driven by the real `invoke` command line where a release is involved.

Case 9: what `shared/.env` says (written by `invoke env.push`, or by hand) is, byte for byte,
what the started app holds in its environment (read from /proc/<pid>/environ); what the dialect
cannot carry stops the release before any host switches, naming host, file, line and name.

Case 10: a stale `run/app.pid` (after a reboot, or a pid reused by another process of the deploy
user) is never obeyed: `bin/app status` says stopped, `bin/app stop` leaves the process alive and
removes the pidfile, and a promotion still restarts the real app. The local supervisor
(deploy/local.py) is held to the same rule.
"""

from __future__ import annotations

import io
import os
import secrets as pysecrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploy import hosts, proc

DEPLOY_TO = "srv/occ"
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q+/x9ZmT0\\=\"q\"\n-----END PRIVATE KEY-----\n")


# ---------------------------------------------------------------- helpers

def app_pid(h) -> int:
    return int((h.root / DEPLOY_TO / "run" / "app.pid").read_text().split()[0])


def app_environ(h) -> dict[str, str]:
    """The started app's environment as the kernel holds it (the group leader the supervisor
    exec'd with it)."""
    raw = Path(f"/proc/{app_pid(h)}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def dotenv_reading(text: str) -> dict[str, str]:
    """python-dotenv's reading of a file holding `text` (the project's dialect)."""
    from dotenv import dotenv_values

    return dict(dotenv_values(stream=io.StringIO(text, newline=None), interpolate=False))


def promote(stage, *args):
    stage.collect_evidence()
    return stage.project.invoke("promote", "--to=staging", *args)


# ---------------------------------------------------------------- case 9: one dotenv dialect end to end

def test_values_env_push_writes_reach_the_app_byte_for_byte(stage):
    tag = pysecrets.token_hex(3)
    secrets = {
        "SESSION_SECRET": PEM,                                                    # a multi-line key
        "SHOPIFY_API_SECRET": f'sec "{tag}" \\n \\\\ it\'s # not a comment',      # quotes, backslashes, #
        "SUPABASE_SERVICE_ROLE_KEY": f"  k=v==; café ☃ {tag}\t",                  # =, unicode, edge spaces
    }
    stage.project.env.update(secrets)
    plain = "read_orders,write_orders"   # the matrix checks its pattern; the dialect's forms around it
    env_file = stage.project.root / "env/staging.env"
    text = env_file.read_text().replace("SCOPES=read_orders,write_orders,read_products,read_inventory,write_inventory",
                                        f"export SCOPES = \"{plain}\" # the scopes, {tag}\r")
    assert text != env_file.read_text()
    env_file.write_text(text)
    stage.project.commit("tricky values")
    r = stage.project.invoke("env.push", "--env=staging", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    r = promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    for h in stage.hosts:
        written = dotenv_reading((h.root / DEPLOY_TO / "shared/.env").read_text())
        got = app_environ(h)
        for name, value in {**secrets, "SCOPES": plain}.items():
            assert written[name] == value, name
            assert got[name] == value, name
        assert {k: got[k] for k in written if k != "PORT"} == {k: v for k, v in written.items() if k != "PORT"}
    assert all(v not in r.stdout + r.stderr for v in secrets.values())


HAND_WRITTEN = {
    "escapes-and-comments": (
        "# written by the team\r\n"
        "export A_{t}=\"say \\\"hi\\\" C:\\\\dir\"\r\n"
        "B_{t}='it\\'s {t}' # note\r\n"
        "LOG_{t}=info # note\r\n"
        "HASH_{t}=a#b\r\n"
        "EMPTY_{t}= # nothing\r\n"
        "URL_{t}=postgres://u:p@h/db?x=1&y=={t}\r\n"),
    "multi-line-key-and-unicode": (
        "KEY_{t}=\"" + PEM.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + "\"\n"
        "RAW_{t}='" + PEM + "'\n"
        "  NAME_{t} = Zoë ☃ {t}   \n"
        "TAB_{t}=\"a\\tb\"\n"
        "Q_{t}=\"\"\n"
        "DOLLAR_{t}=${{HOME}}/x\n"),
}


@pytest.mark.parametrize("template", HAND_WRITTEN.values(), ids=list(HAND_WRITTEN))
def test_a_hand_written_shared_env_reaches_the_app_as_the_dialect_reads_it(stage, template):
    t = pysecrets.token_hex(3).upper()
    text = template.format(t=t)
    for h in stage.hosts:
        h.write(f"{DEPLOY_TO}/shared/.env", "HOST=127.0.0.1\n" + text, mode=0o600)
    r = promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    want = dotenv_reading("HOST=127.0.0.1\n" + text)
    assert len(want) >= 6 and all(k.endswith(t) or k == "HOST" for k in want)
    for h in stage.hosts:
        got = app_environ(h)
        assert {k: got.get(k) for k in want} == want


BAD = {
    "unparseable-line": ("A=1\nexport SECRET_{t} {v}\n", 2, "SECRET_{t}"),
    "unterminated-quote": ("A=1\nB=2\nSECRET_{t}=\"{v}\n", 3, "SECRET_{t}"),
    "dashed-name": ("SECRET-{t}={v}\n", 1, "SECRET-{t}"),
    "name-without-value": ("\n\nSECRET_{t}\nB={v}\n", 3, "SECRET_{t}"),
}


@pytest.mark.parametrize("bad", BAD.values(), ids=list(BAD))
def test_a_shared_env_the_app_cannot_get_as_written_stops_the_release_before_any_switch(stage, bad):
    r = promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    before = stage.currents()
    pids = [app_pid(h) for h in stage.hosts]
    t, value = pysecrets.token_hex(3).upper(), f"v-{pysecrets.token_hex(6)}"
    text, line, name = bad[0].format(t=t, v=value), bad[1], bad[2].format(t=t)
    sick = stage.hosts[1]
    sick.write(f"{DEPLOY_TO}/shared/.env", "HOST=127.0.0.1\n" + text, mode=0o600)
    (stage.project.root / "examples/app/NOTE.md").write_text(f"change {t}\n")
    stage.project.commit("a new commit")
    r = promote(stage)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert f"{sick.host}:{sick.port}" in out and "shared/.env" in out, out
    assert f"line {line + 1}:" in out and name in out, out      # +1: the HOST line above
    assert value not in out
    assert stage.currents() == before and stage.versions() == before
    assert [app_pid(h) for h in stage.hosts] == pids, "the running apps were not restarted"


# ---------------------------------------------------------------- case 10: the supervisor acts only on its own app

def login_run(h, cmd: str, timeout: float = 30):
    """A command on host `h` as its login user, over SSH (what the toolkit's commands are)."""
    with h.connection() as c:
        return c.run(cmd, warn=True, hide=True, timeout=timeout, in_stream=False)


def spawn(h, kind: str, root: str) -> int:
    """Start a process of the login user that is not this app, detached like a daemon; its pid."""
    if kind == "ssh-agent":   # not dumpable: its environ cannot be read, even by its own user
        r = login_run(h, "ssh-agent -s")
        return int(r.stdout.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    cmd = {
        "sleep": "setsid sleep 600",
        "app-lookalike": f"cd {root}/current 2>/dev/null; setsid bash -c 'exec -a node sleep 600' build/server.mjs",
        "marked-lookalike": (f"cd {root}/current 2>/dev/null; DEPLOY_APP_ROOT={root} DEPLOY_APP_TOKEN={'0' * 32} "
                             "setsid bash -c 'exec -a node sleep 600'"),
    }[kind]
    r = login_run(h, f"{cmd} </dev/null >/dev/null 2>&1 & echo $!")
    pid = int(r.stdout.strip())
    deadline = time.monotonic() + 10
    while os.getpgid(pid) != pid:   # setsid has run
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return pid


def start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def alive(pid: int) -> bool:
    return proc.pid_alive(pid)


@pytest.fixture
def host(sshd_hosts):
    """One sshd host with the toolkit's supervisor installed and no app running."""
    (h,) = sshd_hosts(1)
    h.write(f"{DEPLOY_TO}/bin/app", hosts.SUPERVISOR, mode=0o755)
    h.write(f"{DEPLOY_TO}/run/.keep", "")
    started: list[int] = []
    yield h, started
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# Pidfiles that name another process of the same user: the one-line form the supervisor wrote
# before (a reboot later), and the current form with a start time, boot or token that is not it.
PIDFILES = {
    "one-line": lambda pid: f"{pid}\n",
    "other-start-time": lambda pid: f"{pid}\n{int(start_time(pid)) - 7} {boot_id()} {'0' * 32}\n",
    "other-boot": lambda pid: f"{pid}\n{start_time(pid)} {pysecrets.token_hex(16)} {'0' * 32}\n",
}


@pytest.mark.parametrize("form", PIDFILES.values(), ids=list(PIDFILES))
@pytest.mark.parametrize("kind", ["sleep", "ssh-agent", "app-lookalike", "marked-lookalike"])
def test_a_stale_pidfile_is_never_obeyed(host, kind, form):
    h, started = host
    root = str(h.root / DEPLOY_TO)
    if kind == "marked-lookalike" and form is PIDFILES["one-line"]:
        pytest.skip("a one-line pidfile is trusted on the marker its old supervisor set (the documented limit)")
    pid = spawn(h, kind, root)
    started.append(pid)
    h.write(f"{DEPLOY_TO}/run/app.pid", form(pid))
    st = login_run(h, f"{root}/bin/app status")
    assert (st.exited, st.stdout.strip()) == (3, "stopped"), st.stdout + st.stderr
    sp = login_run(h, f"{root}/bin/app stop")
    assert sp.exited == 0 and "stopped" not in sp.stdout, sp.stdout + sp.stderr
    assert alive(pid), f"{kind} was killed"
    assert not (h.root / DEPLOY_TO / "run/app.pid").exists(), "the stale pidfile is removed"


def test_a_reused_pid_is_never_obeyed(host):
    """The app dies (a crash, a reboot); the kernel gives its pid to another process of the
    deploy user. Forced here with ns_last_pid, retried while other processes race for it."""
    import ctypes

    h, started = host
    root = str(h.root / DEPLOY_TO)
    h.write(f"{DEPLOY_TO}/releases/r1/RELEASE", "r1\n")
    os.symlink(h.root / DEPLOY_TO / "releases/r1", h.root / DEPLOY_TO / "current")
    # The dead app's pid is free once its zombie is reaped: this process adopts the app (the
    # sshd below it is its child) so it can reap it; a container's pid 1 may never do it.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    try:
        _reuse_the_apps_pid(h, root, started)
    finally:
        prctl(36, 0, 0, 0, 0)


def _reuse_the_apps_pid(h, root: str, started: list[int]) -> None:
    for attempt in range(40):
        r = login_run(h, f"{root}/bin/app start PORT 1 -- sleep 600")
        assert r.exited == 0, r.stdout + r.stderr
        old = app_pid(h)
        os.killpg(old, signal.SIGKILL)
        os.waitpid(old, 0)
        owner = (h.root / DEPLOY_TO / "bin/app").stat()
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(old - 1))
        p = subprocess.Popen(["setpriv", f"--reuid={owner.st_uid}", f"--regid={owner.st_gid}", "--clear-groups", "setsid", "sleep", "600"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(p.pid)
        if p.pid == old:
            break
        p.kill()
        p.wait()
    else:
        pytest.skip("the machine never handed the pid out again (too busy)")
    while os.getpgid(p.pid) != p.pid:
        time.sleep(0.01)
    st = login_run(h, f"{root}/bin/app status")
    assert (st.exited, st.stdout.strip()) == (3, "stopped")
    assert login_run(h, f"{root}/bin/app stop").exited == 0
    assert p.poll() is None, "the process that reused the pid was killed"
    assert not (h.root / DEPLOY_TO / "run/app.pid").exists()
    p.kill()
    p.wait()


def test_after_a_reboot_a_promotion_restarts_the_app_and_leaves_the_agent_alone(stage):
    r = promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    agents = []
    try:
        for h in stage.hosts:
            # The reboot: the app is gone, the deploy user's ssh-agent got its pid number's place.
            os.killpg(app_pid(h), signal.SIGKILL)
            agent = spawn(h, "ssh-agent", "")
            agents.append(agent)
            h.write(f"{DEPLOY_TO}/run/app.pid", f"{agent}\n")
            st = login_run(h, f"{h.root / DEPLOY_TO}/bin/app status")
            assert (st.exited, st.stdout.strip()) == (3, "stopped")
        (stage.project.root / "examples/app/NOTE.md").write_text("after the reboot\n")
        stage.project.commit("after the reboot")
        r = promote(stage)
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(alive(a) for a in agents), "a restart killed the deploy user's ssh-agent"
        rid = stage.project.ledger().runs("staging")[0].release_id
        assert stage.versions() == [rid, rid]
        # The real app is still the supervisor's: status names it, stop ends its whole group.
        for h in stage.hosts:
            pid = app_pid(h)
            st = login_run(h, f"{h.root / DEPLOY_TO}/bin/app status")
            assert (st.exited, st.stdout.strip()) == (0, f"running {pid}")
            assert login_run(h, f"{h.root / DEPLOY_TO}/bin/app stop").stdout.strip() == f"stopped {pid}"
            assert proc.group_members(pid) == []
    finally:
        for a in agents:
            try:
                os.kill(a, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------- the local supervisor, same rule

@pytest.mark.parametrize("form", ["one-line", "other-start-time", "other-boot"])
def test_the_local_app_stop_never_signals_a_stale_pidfile_s_process(project, form):
    root = project.local_root()
    release = root / "releases" / "20240101000000-abc1234"
    release.mkdir(parents=True)
    # A shell-like group leader working inside a release folder: what the old trust rule took for the app.
    stranger = subprocess.Popen(["sleep", "600"], cwd=release, start_new_session=True)
    try:
        line = {"one-line": "",
                "other-start-time": f"{int(start_time(stranger.pid)) - 3} {boot_id()}",
                "other-boot": f"{start_time(stranger.pid)} {pysecrets.token_hex(16)}"}[form]
        (root / "app.pid").write_text(f"{stranger.pid}\n{line}\n" if line else f"{stranger.pid}\n")
        r = project.invoke("app.stop", "--env=local")
        assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert stranger.poll() is None, "the stranger was killed"
        assert not (root / "app.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()
