"""The pure half of deploy.hosts: settings -> targets, commands built, facts parsed."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from deploy import hosts
from deploy.config import HostsSection
from deploy.errors import SettingsError


def test_targets_resolve_user_port_and_placeholders():
    s = HostsSection(hosts=("web1", "ops@10.0.0.6:2222"), user="deploy", port=22,
                     deploy_to="/srv/{port}/occ", health_url="http://{host}:3000/healthz")
    t1, t2 = hosts.targets(s)
    assert (t1.name, t1.deploy_to, t1.health_url) == ("deploy@web1:22", "/srv/22/occ", "http://web1:3000/healthz")
    assert (t2.user, t2.host, t2.port, t2.deploy_to) == ("ops", "10.0.0.6", 2222, "/srv/2222/occ")


@pytest.mark.parametrize("kw, match", [
    (dict(hosts=()), "hosts.hosts is empty"),
    (dict(hosts=("a b",)), "is not a host"),
    (dict(hosts=("h",), deploy_to="srv/occ"), "not a safe path"),
    (dict(hosts=("h",), deploy_to="/srv/../etc"), "not a safe path"),
    (dict(hosts=("h",), deploy_to="/srv/$(id)"), "not a safe path"),
    (dict(hosts=("h",), shared_files=("../.ssh/authorized_keys",)), "not a safe path"),
    (dict(hosts=("h", "i"), health_urls=("http://h/",)), "1 entries for 2 hosts"),
    (dict(hosts=("h",), deploy_to="/srv/{nope}"), "unknown placeholder"),
    (dict(hosts=("h", "deploy@h:22")), "same host twice"),
], ids=["no-hosts", "bad-host", "relative-deploy-to", "dotdot", "shell", "shared-escape", "health-count",
        "placeholder", "duplicate"])
def test_bad_host_settings_are_refused_with_the_key(kw, match):
    with pytest.raises(SettingsError, match=match):
        hosts.targets(HostsSection(**kw))


def _t(deploy_to="/srv/occ"):
    return hosts.Target(name="d@h:22", host="h", port=22, user="d", deploy_to=deploy_to)


def test_switch_is_a_temp_link_renamed_over_current_never_rm_then_ln():
    cmd = hosts.switch_command(_t(), "20240501-abc")
    assert "ln -sfn releases/20240501-abc /srv/occ/.current-20240501-abc" in cmd
    assert "mv -T /srv/occ/.current-20240501-abc /srv/occ/current" in cmd
    assert "rm " not in cmd


@given(st.text(min_size=1, max_size=40))
def test_any_value_survives_the_one_quoting_helper(value):
    assert shlex.split(hosts.sh("printf", "%s", value)) == ["printf", "%s", value]


@pytest.mark.parametrize("releases, keep, protect, expected", [
    (["r1", "r2", "r3", "r4"], 2, ["r4", "r3"], ["r1", "r2"]),
    (["r1", "r2", "r3", "r4"], 2, ["r4", "r1"], ["r2"]),          # a rolled-back current stays
    (["r1"], 5, ["r1"], []),
], ids=["oldest-go", "protected-stays", "fewer-than-keep"])
def test_prune_list(releases, keep, protect, expected):
    assert hosts.prune_list(releases, keep, protect) == expected


def test_parse_state_reads_current_releases_and_upload():
    out = ("== current\nreleases/r2\n== releases\nr1\nr2\n.partial-r3\n== upload\n"
           + "a" * 64 + "  /srv/occ/.uploads/r3.tar.gz\n")
    st_ = hosts.parse_state(out)
    assert (st_.current, st_.releases, st_.upload_sha256) == ("r2", ("r1", "r2"), "a" * 64)
    empty = hosts.parse_state("== current\n== releases\n== upload\n")
    assert (empty.current, empty.releases, empty.upload_sha256) == (None, (), None)


def test_lock_details_round_trip():
    at = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    info = hosts.parse_lock_details("h", hosts.lock_details("bob@ci", "run-7", "r1", at))
    assert (info.holder, info.run_id, info.release, info.acquired_at) == ("bob@ci", "run-7", "r1", at)
    assert info.age_minutes(datetime(2024, 5, 1, 13, tzinfo=timezone.utc)) == 60


def test_parse_check_reads_df_available_kilobytes():
    out = "writable=1\n/dev/sda1 1000000 200000 51200 80% /\n"
    assert hosts.parse_check(out) == (True, 50)
    assert hosts.parse_check("writable=0\n") == (False, None)


def test_previous_of_is_the_release_before_current_by_name():
    S = hosts.HostState
    assert hosts.previous_of(S("r3", ("r1", "r2", "r3"), None)) == "r2"
    assert hosts.previous_of(S("r1", ("r1", "r2"), None)) is None
    assert hosts.previous_of(S(None, (), None)) is None


# ---------------------------------------------------------------- the app's supervisor (commands as data)

def test_default_health_url_is_the_app_port_and_health_path_per_host():
    from deploy.config import AppSection

    s = HostsSection(hosts=("web1", "ops@10.0.0.6:2222", "[::1]"), app_ports=(3001, 3002, 3003))
    t1, t2, t3 = hosts.targets(s, AppSection(health_path="/healthz"))
    assert (t1.app_port, t1.health_url) == (3001, "http://web1:3001/healthz")
    assert (t2.app_port, t2.health_url) == (3002, "http://10.0.0.6:3002/healthz")
    assert t3.health_url == "http://[::1]:3003/healthz"
    (only,) = hosts.targets(HostsSection(hosts=("web1",)))
    assert (only.app_port, only.health_url) == (3000, "http://web1:3000/")
    (named,) = hosts.targets(HostsSection(hosts=("web1",), health_url="https://{host}.example.com:{app_port}/up"))
    assert named.health_url == "https://web1.example.com:3000/up"


def test_supervise_commands_are_one_quoted_argv_each():
    t = _t()
    assert hosts.supervise_command(t, "restart", "PORT", 3000, ["sh", "-c", "react-router-serve ./build/server/index.js"]) == (
        "/srv/occ/bin/app restart PORT 3000 -- sh -c 'react-router-serve ./build/server/index.js'")
    assert hosts.supervise_command(t, "start", "APP_PORT", 8080, ["node", "build/server.mjs"]) == (
        "/srv/occ/bin/app start APP_PORT 8080 -- node build/server.mjs")
    assert hosts.supervise_command(t, "stop") == "/srv/occ/bin/app stop"
    assert hosts.supervise_command(t, "status") == "/srv/occ/bin/app status"
    assert hosts.supervise_command(t, "check-env") == "/srv/occ/bin/app check-env"
    with pytest.raises(ValueError):
        hosts.supervise_command(t, "reload")


def test_install_supervisor_writes_a_temp_file_then_renames_it():
    cmd = hosts.install_supervisor_command(_t())
    assert cmd == ("mkdir -p /srv/occ/bin && printf %s " + shlex.quote(hosts.SUPERVISOR)
                   + " > /srv/occ/bin/.app.new && chmod 755 /srv/occ/bin/.app.new"
                   " && mv -f /srv/occ/bin/.app.new /srv/occ/bin/app")
    assert hosts.SUPERVISOR.startswith("#!/bin/sh\n")


def test_stop_app_command_stops_the_supervised_app_or_the_unit():
    name = hosts.unit_name(_t())
    assert hosts.stop_app_command(_t()) == (
        "if [ -x /srv/occ/bin/app ]; then /srv/occ/bin/app stop; fi; "
        f"if command -v systemctl >/dev/null 2>&1; then systemctl --user stop {name} 2>/dev/null; fi; true")


def test_systemd_unit_quotes_every_argument_against_expansion():
    t = _t()
    assert hosts.unit_name(t) == hosts.unit_name(_t()) and hosts.unit_name(t) != hosts.unit_name(_t("/srv/other"))
    assert hosts.unit_name(t).startswith("occ-app-") and hosts.unit_name(t).endswith(".service")
    text = hosts.unit_text(t, "PORT", 3000, ["sh", "-c", 'echo "$HOME" 100% \\ ok'])
    assert text == (
        "[Unit]\n"
        "Description=app released by the deploy toolkit under /srv/occ\n"
        "[Service]\n"
        "WorkingDirectory=/srv/occ/current\n"
        'ExecStart="/srv/occ/bin/app" "run" "PORT" "3000" "--" "sh" "-c" "echo \\"$$HOME\\" 100%% \\\\ ok"\n'
        "Restart=on-failure\n"
        "KillMode=control-group\n"
        "StandardOutput=append:/srv/occ/logs/app.log\n"
        "StandardError=append:/srv/occ/logs/app.log\n"
        "[Install]\n"
        "WantedBy=default.target\n")


def test_systemd_restart_installs_the_unit_reloads_and_restarts():
    t = _t()
    name = hosts.unit_name(t)
    assert hosts.systemd_restart_command(t, "UNIT") == (
        'mkdir -p "$HOME"/.config/systemd/user && mkdir -p /srv/occ/logs && '
        f'printf %s UNIT > "$HOME"/.config/systemd/user/{name} && systemctl --user daemon-reload && '
        f"systemctl --user restart {name}")


def test_start_facts_command_and_its_parser():
    t = _t()
    assert hosts.start_facts_command(t, "r1", want_package=True, probe_systemd=True) == (
        "echo '== supervisor'; if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment "
        ">/dev/null 2>&1; then echo systemd; else echo sh; fi; echo '== package'; "
        "cat /srv/occ/releases/r1/package.json 2>/dev/null || true")
    assert hosts.start_facts_command(t, "r1", want_package=False, probe_systemd=False) == ""
    assert hosts.parse_start_facts('== supervisor\nsh\n== package\n{"scripts":\n {"start": "x"}}\n') == (
        "sh", '{"scripts":\n {"start": "x"}}')
    assert hosts.parse_start_facts("== supervisor\nsystemd\n") == ("systemd", None)
    assert hosts.parse_start_facts("== package\n") == (None, "")


def test_the_state_says_which_app_each_release_is():
    st = hosts.parse_state("== current\n/srv/occ/releases/r2\n== releases\nr1\nr2\nr3\n.partial-r4\n== apps\n"
                           '/srv/my dir/releases/r1/RELEASE.json:  "app": "occ-shopify-app",\n'
                           '/srv/my dir/releases/r2/RELEASE.json:  "app": "occ-example-app"\n'
                           '/srv/my dir/releases/.partial-r4/RELEASE.json:  "app": "x",\n'
                           "== upload\n")
    assert st.current == "r2" and st.releases == ("r1", "r2", "r3")
    assert st.app_of() == {"r1": "occ-shopify-app", "r2": "occ-example-app", "r3": ""}


def test_the_state_carries_currents_manifest_as_it_is():
    manifest = '{\n  "app": "a",\n  "files": [\n    {"path": "== upload"}\n  ]\n}\n'
    st = hosts.parse_state("== current\n/srv/occ/releases/r1\n== releases\nr1\n== apps\n== upload\n"
                           "== manifest\n" + manifest)
    assert st.current == "r1" and st.releases == ("r1",) and st.upload_sha256 is None
    assert st.manifest == manifest
    assert hosts.parse_state("== current\n== releases\n== apps\n== upload\n").manifest == ""


def test_which_app_a_release_is_comes_from_its_manifest():
    assert hosts.app_of_command(_t(), "r1") == (
        "printf '%s ' r1; { sed -n 's/^ *\"app\": \"\\(.*\\)\",\\{0,1\\}$/\\1/p' /srv/occ/releases/r1/RELEASE.json "
        "2>/dev/null | head -n 1 | tr -d '\\n'; echo; }")
    apps = hosts.parse_app_of("r1 occ-shopify-app\nr2 occ-example-app\nr0 \n")
    assert apps == {"r1": "occ-shopify-app", "r2": "occ-example-app", "r0": ""}
    assert not hosts.same_app(apps, "r1", "r2")
    assert hosts.same_app(apps, "r1", "r1") and hosts.same_app(apps, "r1", "r0"), "an unnamed (older) release is not refused"


# ---------------------------------------------------------------- delta uploads (pure parts)

def test_delta_plan_links_only_same_path_sha_size_and_mode():
    from deploy.hosts import TreeEntry, delta_plan

    a, b = "a" * 64, "b" * 64
    entries = [TreeEntry("RELEASE.json", "f", 0o644, 10, a), TreeEntry("same", "f", 0o644, 5, a),
               TreeEntry("changed", "f", 0o644, 5, b), TreeEntry("mode", "f", 0o755, 5, a),
               TreeEntry("new", "f", 0o644, 5, a), TreeEntry("link", "l", target="same")]
    base = {"RELEASE.json": (a, 0o644, 10), "same": (a, 0o644, 5), "changed": (a, 0o644, 5), "mode": (a, 0o644, 5)}
    assert delta_plan(entries, base) == (["same"], ["RELEASE.json", "changed", "mode", "new"])


def test_base_files_ignores_entries_without_a_mode():
    from deploy.hosts import base_files

    text = json.dumps({"files": [{"path": "x", "sha256": "a" * 64, "size": 1, "mode": 420},
                                 {"path": "old", "sha256": "b" * 64, "size": 2}]}).encode()
    assert base_files(text) == {"x": ("a" * 64, 420, 1)}
    assert base_files(b"not json") == {}


def _vouch(tmp_path, pre: str, index: str, sums: str, post: str) -> tuple[list[str], str, str]:
    """Run the delta's trust rule (the awk program delta_unpack_command runs on the host) on
    find-style inputs: (paths to hash, the index lines it writes, its stdout)."""
    import shutil
    import subprocess

    from deploy.hosts._commands import _DELTA_AWK

    if not shutil.which("awk"):
        pytest.skip("no awk")
    files = {}
    for name, text in (("pre", pre), ("idx", index), ("sums", sums), ("post", post)):
        files[name] = tmp_path / name
        files[name].write_text(text)
    r = subprocess.run(["awk", "-v", f"check={tmp_path / 'check'}", "-v", f"out={tmp_path / 'out'}", _DELTA_AWK,
                        *(str(files[n]) for n in ("pre", "idx", "sums", "post"))],
                       capture_output=True, text=True, check=True)
    check = tmp_path / "check"
    hashed = [line[66:] for line in check.read_text().splitlines()] if check.exists() else []
    return hashed, (tmp_path / "out").read_text(), r.stdout


A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize("pre, index, hashed", [
    # the base file as indexed: vouched for, not hashed
    ("9:1 5 100.1 200.5\n", f"9:1 5 100.1 200.5 {A}\n", []),
    # its ctime moved since it was checked (a write, chmod, touch or utime): hashed
    ("9:1 5 100.1 200.7\n", f"9:1 5 100.1 200.5 {A}\n", ["dir/x y.js"]),
    # its size or mtime moved: hashed
    ("9:1 6 100.1 200.5\n", f"9:1 5 100.1 200.5 {A}\n", ["dir/x y.js"]),
    # the index checked other bytes than the manifest now names: hashed
    ("9:1 5 100.1 200.5\n", f"9:1 5 100.1 200.5 {B}\n", ["dir/x y.js"]),
    # no index line for the inode, or a damaged one: hashed
    ("9:1 5 100.1 200.5\n", "", ["dir/x y.js"]),
    ("9:1 5 100.1 200.5\n", "9:1 5 100.1\n", ["dir/x y.js"]),
    # a file system keeping whole seconds only: never vouched for
    ("9:1 5 100.0000000000 200.0000000000\n", f"9:1 5 100.0000000000 200.0000000000 {A}\n", ["dir/x y.js"]),
    ("9:1 5 100 200\n", f"9:1 5 100 200 {A}\n", ["dir/x y.js"]),
], ids=["as-indexed", "ctime-moved", "size-moved", "other-sha", "no-line", "damaged-line", "whole-seconds",
        "no-fraction"])
def test_the_index_vouches_for_a_linked_file_only_when_nothing_about_it_moved(tmp_path, pre, index, hashed):
    # post: the linked file (same inode as in pre; its ctime moved by the link) and a sent file.
    post = "9:1 5 100.1 300.9 dir/x y.js\n9:7 3 400.1 400.1 new.js\n"
    got, out, stdout = _vouch(tmp_path, pre, index, f"{A}  dir/x y.js\n{A}  new.js\n", post)
    assert got == hashed + ["new.js"], got          # a sent file (a new inode) is always hashed
    assert stdout == f"hashed={len(got)}\n"
    # The index it writes: every file of the new tree with its stat after the link and the manifest's sha256.
    assert out == f"9:1 5 100.1 300.9 {A}\n9:7 3 400.1 400.1 {A}\n"


def _refresh(tmp_path, before: str, after: str, index: str) -> str:
    """Run the index refresh (the awk program remove_releases_command runs on the host after
    removing releases) on find-style inputs: the index it writes."""
    import shutil
    import subprocess

    from deploy.hosts._commands import _REFRESH_AWK

    if not shutil.which("awk"):
        pytest.skip("no awk")
    names = []
    for name, text in (("before", before), ("after", after), ("idx", index)):
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    return subprocess.run(["awk", _REFRESH_AWK, *names], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("before, after, index, kept", [
    # shared with the removed release, exactly as indexed before: kept, with the ctime the removal set
    ("9:1 5 100.1 200.5\n", "9:1 5 100.1 300.2\n", f"9:1 5 100.1 200.5 {A}\n", f"9:1 5 100.1 300.2 {A}\n"),
    # shared, but changed before the removal (its ctime is not the indexed one): dropped
    ("9:1 5 100.1 250.0\n", "9:1 5 100.1 300.2\n", f"9:1 5 100.1 200.5 {A}\n", ""),
    # shared, as indexed before, but its size or mtime moved by the time of the walk after: dropped
    ("9:1 5 100.1 200.5\n", "9:1 6 100.1 300.2\n", f"9:1 5 100.1 200.5 {A}\n", ""),
    ("9:1 5 100.1 200.5\n", "9:1 5 100.3 300.2\n", f"9:1 5 100.1 200.5 {A}\n", ""),
    # only in the removed release (the inode is gone): dropped
    ("9:1 5 100.1 200.5\n", "", f"9:1 5 100.1 200.5 {A}\n", ""),
    # not in the removed release, still exactly as indexed: kept as it was
    ("", "9:2 5 100.1 200.5\n", f"9:2 5 100.1 200.5 {A}\n", f"9:2 5 100.1 200.5 {A}\n"),
    # not in the removed release, changed since it was indexed: dropped
    ("", "9:2 5 100.1 200.9\n", f"9:2 5 100.1 200.5 {A}\n", ""),
    # in no release at all: dropped
    ("", "", f"9:3 5 100.1 200.5 {A}\n", ""),
], ids=["shared-as-indexed", "shared-changed-earlier", "shared-size-moved", "shared-mtime-moved", "gone",
        "untouched-as-indexed", "untouched-changed", "nowhere"])
def test_removing_releases_keeps_an_index_line_only_for_a_file_exactly_as_indexed(tmp_path, before, after, index,
                                                                                 kept):
    assert _refresh(tmp_path, before, after, index) == kept


def test_a_delta_sent_on_stdin_is_read_by_tar_alone():
    cmd = hosts.delta_unpack_command(T, "r2", "r1", None, "r1", ())
    assert "tar -xzf - --no-same-permissions -C /srv/occ/.uploads/r2.d && exec </dev/null && mv -T" in cmd
    assert cmd.endswith("rm -rf /srv/occ/.uploads/r2.d")
    with_file = hosts.delta_unpack_command(T, "r2", "r1", "/srv/occ/.uploads/r2.delta.tar.gz", "r1", ())
    assert "exec </dev/null" not in with_file and "tar -xzf /srv/occ/.uploads/r2.delta.tar.gz" in with_file


def test_a_full_unpack_indexes_its_files_only_when_the_sums_and_the_artifact_check(tmp_path):
    import shutil
    import subprocess

    from deploy.hosts._commands import _INDEX_AWK

    cmd = hosts.unpack_command(T, "r2", "a" * 64, "/srv/occ/.uploads/r2.tar.gz", "r1", (), sums_sha256="b" * 64)
    # The sums are read first (the sender never waits), then nothing reads stdin again.
    assert cmd.startswith("umask 022 && rm -rf /srv/occ/.uploads/r2.d && mkdir -p /srv/occ/.uploads/r2.d && "
                          "{ cat > /srv/occ/.uploads/r2.d/sums || : ; } && exec </dev/null && ")
    # Indexing comes after the artifact's check and its unpacking, checks the sums' own sha256
    # first, and never fails the release (best effort, the index replaced only when complete).
    check, untar = cmd.index("sha256sum -c --status ||"), cmd.index("tar -xzf")
    index = cmd.index(f"{{ printf '%s  %s\\n' {'b' * 64} /srv/occ/.uploads/r2.d/sums | sha256sum -c --status && ")
    assert check < untar < index
    assert "mv -fT /srv/occ/.verified.tmp /srv/occ/.verified; } 2>/dev/null || rm -f /srv/occ/.verified.tmp; } " \
           "2>/dev/null || : && cd / && rm -rf /srv/occ/.uploads/r2.d && " in cmd
    plain = hosts.unpack_command(T, "r2", "a" * 64, "/srv/occ/.uploads/r2.tar.gz", "r1", ())
    assert "exec </dev/null" not in plain and ".verified" not in plain
    if not shutil.which("awk"):
        pytest.skip("no awk")
    # The rule itself: a line for every unpacked file the sums name (paths with spaces too), none for others.
    (tmp_path / "sums").write_text(f"{A}  dir/x y.js\n")
    (tmp_path / "post").write_text("9:1 5 100.1 200.5 dir/x y.js\n9:2 3 100.1 200.5 RELEASE\n")
    r = subprocess.run(["awk", _INDEX_AWK, str(tmp_path / "sums"), str(tmp_path / "post")],
                       capture_output=True, text=True, check=True)
    assert r.stdout == f"9:1 5 100.1 200.5 {A}\n"


def test_tree_lines_are_what_find_prints_sorted_bytewise():
    from deploy.hosts import TreeEntry, tree_lines

    text = tree_lines([TreeEntry("b", "f", 0o755, 3, "c" * 64), TreeEntry("a/x", "l", target="../b"),
                       TreeEntry("e", "d"), TreeEntry("B", "f", 0o644, 0, "d" * 64)])
    assert text == "d e\nf 644 0 B\nf 755 3 b\nl a/x -> ../b\n"


def test_go_live_command_is_one_round_trip_with_distinct_exits():
    t = hosts.Target("x", "h", 22, "u", "/srv/occ")
    cmd = hosts.go_live_command(t, "R2", True, "cd /srv/occ/current && bin/restart", "curl -fs localhost")
    assert cmd.startswith("{ test -d /srv/occ/releases/R2 && ln -sfn releases/R2 /srv/occ/.current-R2")
    assert "|| exit 79" in cmd and "exit 81" in cmd and "|| exit 82" in cmd
    assert "__hook_exit=$rc" in cmd
    assert "exit 79" not in hosts.go_live_command(t, "R2", False, "true", "")


@pytest.mark.parametrize("value, ok", [('"25%"', True), ("2", True), ('"150%"', False), ("0", False),
                                       ("true", False)], ids=["share", "count", "over-100", "zero", "bool"])
def test_batch_size_is_checked_when_the_settings_are_read(tmp_path, value, ok):
    from deploy import config

    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "x.toml").write_text(
        '[environment]\nkind = "remote"\n[hosts]\nhosts = ["deploy@h1", "deploy@h2"]\n'
        f'rollout = "rolling"\nbatch_size = {value}\n')
    if ok:
        assert config.load("x", tmp_path).hosts.rollout == "rolling"
    else:
        with pytest.raises(SettingsError) as e:
            config.load("x", tmp_path)
        assert "x.toml" in e.value.message and "batch_size" in e.value.message


# ---------------------------------------------------------------- every builder, exactly
# Commands are data (pyinfra's tests/operations): each host command builder's
# output for one fixed target, to the character. A change to what runs on a host shows
# here as a diff to review, not as a surprise on a host.

T = hosts.Target(name="deploy@web1:22", host="web1", port=22, user="deploy", deploy_to="/srv/occ",
                 health_url="http://web1:3000/")

EXACT = [
    pytest.param(lambda: hosts.state_command(T),
                 'echo \'== current\'; readlink /srv/occ/current || true; echo \'== releases\'; ls -1 /srv/occ/releases 2>/dev/null || true; echo \'== apps\'; grep -s -H -m 1 \'^ *"app": "\' /srv/occ/releases/*/RELEASE.json || true; echo \'== upload\'',
                 id='state'),
    pytest.param(lambda: hosts.state_command(T, "/srv/occ/.uploads/r1.tar.gz"),
                 'echo \'== current\'; readlink /srv/occ/current || true; echo \'== releases\'; ls -1 /srv/occ/releases 2>/dev/null || true; echo \'== apps\'; grep -s -H -m 1 \'^ *"app": "\' /srv/occ/releases/*/RELEASE.json || true; echo \'== upload\'; sha256sum /srv/occ/.uploads/r1.tar.gz 2>/dev/null || true',
                 id='state-with-upload'),
    pytest.param(lambda: hosts.state_command(T, "/srv/occ/.uploads/r1.tar.gz", manifest=True),
                 'echo \'== current\'; readlink /srv/occ/current || true; echo \'== releases\'; ls -1 /srv/occ/releases 2>/dev/null || true; echo \'== apps\'; grep -s -H -m 1 \'^ *"app": "\' /srv/occ/releases/*/RELEASE.json || true; echo \'== upload\'; sha256sum /srv/occ/.uploads/r1.tar.gz 2>/dev/null || true; echo \'== manifest\'; cat /srv/occ/current/RELEASE.json 2>/dev/null || true',
                 id='state-with-manifest'),
    pytest.param(lambda: hosts.lock_command(T, "holder=a@b\nrun_id=r1\n"),
                 "mkdir -p /srv/occ/releases /srv/occ/shared /srv/occ/.uploads && if mkdir /srv/occ/.deploy-lock 2>/dev/null; then printf %s 'holder=a@b\nrun_id=r1\n' > /srv/occ/.deploy-lock/details; else cat /srv/occ/.deploy-lock/details 2>/dev/null; exit 75; fi",
                 id='lock'),
    pytest.param(lambda: hosts.unlock_command(T),
                 'rm -rf /srv/occ/.deploy-lock',
                 id='unlock'),
    pytest.param(lambda: hosts.lock_command(T, "holder=a@b\nrun_id=r1\n", "r1"),
                 "mkdir -p /srv/occ/releases /srv/occ/shared /srv/occ/.uploads && if mkdir /srv/occ/.deploy-lock 2>/dev/null; then printf %s 'holder=a@b\nrun_id=r1\n' > /srv/occ/.deploy-lock/details; elif grep -qxF run_id=r1 /srv/occ/.deploy-lock/details 2>/dev/null; then printf %s 'holder=a@b\nrun_id=r1\n' > /srv/occ/.deploy-lock/details; else cat /srv/occ/.deploy-lock/details 2>/dev/null; exit 75; fi",
                 id='lock-or-take-over-the-runs-own'),
    pytest.param(lambda: hosts.unlock_ours_command(T, "r1", ["tok-a", "tok-b"]),
                 "if grep -qxF run_id=r1 /srv/occ/.deploy-lock/details 2>/dev/null && { ! grep -q '^token=.' /srv/occ/.deploy-lock/details || grep -qxF -e token=tok-a -e token=tok-b /srv/occ/.deploy-lock/details; }; then rm -rf /srv/occ/.deploy-lock && echo freed; fi",
                 id='unlock-ours'),
    pytest.param(lambda: hosts.unpack_command(T, "r2", "a" * 64, "/srv/occ/.uploads/r2.tar.gz", "r1", (".env",)),
                 "umask 022 && { printf '%s  %s\\n' aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa /srv/occ/.uploads/r2.tar.gz | sha256sum -c --status || { echo 'sha256 of the uploaded artifact does not match aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' >&2; exit 76; }; } && rm -rf /srv/occ/releases/.partial-r2 /srv/occ/releases/r2 && mkdir -p /srv/occ/releases/.partial-r2 && tar -xzf /srv/occ/.uploads/r2.tar.gz --no-same-permissions -C /srv/occ/releases/.partial-r2 && printf '%s\\n' r2 > /srv/occ/releases/.partial-r2/RELEASE && printf '%s\\n' r1 > /srv/occ/releases/.partial-r2/.previous && { test -e /srv/occ/shared/.env || { echo 'shared file /srv/occ/shared/.env is missing' >&2; exit 77; }; } && mkdir -p /srv/occ/releases/.partial-r2 && rm -rf /srv/occ/releases/.partial-r2/.env && ln -s /srv/occ/shared/.env /srv/occ/releases/.partial-r2/.env && mv -T /srv/occ/releases/.partial-r2 /srv/occ/releases/r2 && rm -f /srv/occ/.uploads/r2.tar.gz",
                 id='unpack'),
    pytest.param(lambda: hosts.delta_unpack_command(T, "r2", "r1", "/srv/occ/.uploads/r2.delta.tar", "r1", (".env",)),
                 'umask 022 && rm -rf /srv/occ/releases/.partial-r2 /srv/occ/releases/r2 /srv/occ/.uploads/r2.d && mkdir -p /srv/occ/.uploads/r2.d && tar -xzf /srv/occ/.uploads/r2.delta.tar --no-same-permissions -C /srv/occ/.uploads/r2.d && mv -T /srv/occ/.uploads/r2.d/files /srv/occ/releases/.partial-r2 && { cd /srv/occ/releases/r1 && find . -type f -printf \'%D:%i %s %T@ %C@\\n\' > /srv/occ/.uploads/r2.d/ctl/pre; } && { ! test -s /srv/occ/.uploads/r2.d/ctl/links.tar || tar -xf /srv/occ/.uploads/r2.d/ctl/links.tar -C /srv/occ/releases 2> /srv/occ/.uploads/r2.d/ctl/link-errors || { printf \'%s\\n\' \'the tree built from r1 does not match the artifact\'"\'"\'s manifest: a file to link is missing or unreadable in r1\' >&2; head -n 2 /srv/occ/.uploads/r2.d/ctl/link-errors >&2; exit 78; }; } && cd /srv/occ/releases/.partial-r2 && { find . -mindepth 1 \\( -type f -printf \'f %m %s %P\\n\' -fprintf /srv/occ/.uploads/r2.d/ctl/post \'%D:%i %s %T@ %C@ %P\\n\' \\) -o \\( -type l -printf \'l %P -> %l\\n\' \\) -o \\( -type d -empty -printf \'d %P\\n\' \\) | LC_ALL=C sort > /srv/occ/.uploads/r2.d/ctl/found; } && { cmp -s /srv/occ/.uploads/r2.d/ctl/found /srv/occ/.uploads/r2.d/ctl/tree || { printf \'%s\\n\' \'the tree built from r1 does not match the artifact\'"\'"\'s manifest (modes, sizes or entries):\' >&2; diff /srv/occ/.uploads/r2.d/ctl/tree /srv/occ/.uploads/r2.d/ctl/found | head -n 4 >&2; exit 78; }; } && { vi=/srv/occ/.verified; test -f "$vi" && test -r "$vi" || vi=/dev/null; } && awk -v check=/srv/occ/.uploads/r2.d/ctl/check -v out=/srv/occ/.uploads/r2.d/ctl/index \'FILENAME == ARGV[1] { if ($4 ~ /[.]/ && $4 !~ /[.]0*$/) pre[$1] = $2 " " $3 " " $4; next } FILENAME == ARGV[2] { if (NF == 5) ok[$1] = $2 " " $3 " " $4 " " $5; next } FILENAME == ARGV[3] { sum[substr($0, 67)] = substr($0, 1, 64); next } { p = substr($0, length($1 $2 $3 $4) + 5); s = sum[p]; if (!(($1 in pre) && ($1 in ok) && ok[$1] == pre[$1] " " s)) { print s "  " p > check; n++ } print $1, $2, $3, $4, s > out } END { print "hashed=" n + 0 }\' /srv/occ/.uploads/r2.d/ctl/pre "$vi" /srv/occ/.uploads/r2.d/ctl/sums /srv/occ/.uploads/r2.d/ctl/post && { ! test -s /srv/occ/.uploads/r2.d/ctl/check || { out=$(LC_ALL=C sha256sum -c --quiet --strict /srv/occ/.uploads/r2.d/ctl/check 2>&1) || { printf \'%s\\n\' \'the tree built from r1 does not match the artifact\'"\'"\'s manifest:\' "$out" | head -n 4 >&2; exit 78; }; }; } && { awk \'NR == FNR { k[$1]; print; next } !($1 in k)\' /srv/occ/.uploads/r2.d/ctl/index "$vi" > /srv/occ/.verified.tmp && mv -fT /srv/occ/.verified.tmp /srv/occ/.verified; } 2>/dev/null || rm -f /srv/occ/.verified.tmp && cd / && printf \'%s\\n\' r2 > /srv/occ/releases/.partial-r2/RELEASE && printf \'%s\\n\' r1 > /srv/occ/releases/.partial-r2/.previous && { test -e /srv/occ/shared/.env || { echo \'shared file /srv/occ/shared/.env is missing\' >&2; exit 77; }; } && mkdir -p /srv/occ/releases/.partial-r2 && rm -rf /srv/occ/releases/.partial-r2/.env && ln -s /srv/occ/shared/.env /srv/occ/releases/.partial-r2/.env && mv -T /srv/occ/releases/.partial-r2 /srv/occ/releases/r2 && rm -rf /srv/occ/.uploads/r2.delta.tar /srv/occ/.uploads/r2.d',
                 id='delta-unpack'),
    pytest.param(lambda: hosts.unlink_current_command(T),
                 'rm -f /srv/occ/current',
                 id='unlink-current'),
    pytest.param(lambda: hosts.hook_command(T, "bin/restart", "/srv/occ/current", {"RELEASE": "r2", "X": "a b"}),
                 "cd /srv/occ/current && export RELEASE=r2 X='a b' && bin/restart",
                 id='hook'),
    pytest.param(lambda: hosts.finish_command(T, ["r0"], "2026 release r2", True),
                 'printf \'%s\\n\' \'2026 release r2\' >> /srv/occ/revisions.log; if test -s /srv/occ/.verified; then find /srv/occ/releases/r0 -type f -printf \'%D:%i %s %T@ %C@\\n\' > /srv/occ/.uploads/.verified-before 2>/dev/null; rm -rf /srv/occ/releases/r0; find /srv/occ/releases -type f -printf \'%D:%i %s %T@ %C@\\n\' > /srv/occ/.uploads/.verified-after && awk \'FILENAME == ARGV[1] { pre[$1] = $2 " " $3 " " $4; next } FILENAME == ARGV[2] { cur[$1] = $2 " " $3 " " $4; next } !($1 in cur) { next } ($1 in pre) { if (pre[$1] == $2 " " $3 " " $4) { split(cur[$1], c, " "); if (c[1] == $2 && c[2] == $3) print $1, $2, $3, c[3], $5 } next } cur[$1] == $2 " " $3 " " $4 { print $1, $2, $3, $4, $5 }\' /srv/occ/.uploads/.verified-before /srv/occ/.uploads/.verified-after /srv/occ/.verified > /srv/occ/.verified.tmp && mv -f /srv/occ/.verified.tmp /srv/occ/.verified; rm -f /srv/occ/.uploads/.verified-before /srv/occ/.uploads/.verified-after /srv/occ/.verified.tmp; else rm -rf /srv/occ/releases/r0; fi; rm -rf /srv/occ/.deploy-lock',
                 id='finish-prune-unlock'),
    pytest.param(lambda: hosts.remove_releases_command(T, ["r0", "r1"]),
                 'if test -s /srv/occ/.verified; then find /srv/occ/releases/r0 /srv/occ/releases/r1 -type f -printf \'%D:%i %s %T@ %C@\\n\' > /srv/occ/.uploads/.verified-before 2>/dev/null; rm -rf /srv/occ/releases/r0 /srv/occ/releases/r1; find /srv/occ/releases -type f -printf \'%D:%i %s %T@ %C@\\n\' > /srv/occ/.uploads/.verified-after && awk \'FILENAME == ARGV[1] { pre[$1] = $2 " " $3 " " $4; next } FILENAME == ARGV[2] { cur[$1] = $2 " " $3 " " $4; next } !($1 in cur) { next } ($1 in pre) { if (pre[$1] == $2 " " $3 " " $4) { split(cur[$1], c, " "); if (c[1] == $2 && c[2] == $3) print $1, $2, $3, c[3], $5 } next } cur[$1] == $2 " " $3 " " $4 { print $1, $2, $3, $4, $5 }\' /srv/occ/.uploads/.verified-before /srv/occ/.uploads/.verified-after /srv/occ/.verified > /srv/occ/.verified.tmp && mv -f /srv/occ/.verified.tmp /srv/occ/.verified; rm -f /srv/occ/.uploads/.verified-before /srv/occ/.uploads/.verified-after /srv/occ/.verified.tmp; else rm -rf /srv/occ/releases/r0 /srv/occ/releases/r1; fi',
                 id='remove-releases'),
    pytest.param(lambda: hosts.finish_command(T, [], "line", False),
                 "printf '%s\\n' line >> /srv/occ/revisions.log",
                 id='finish-log-only'),
    pytest.param(lambda: hosts.switch_command(T, "r2"),
                 'test -d /srv/occ/releases/r2 && ln -sfn releases/r2 /srv/occ/.current-r2 && mv -T /srv/occ/.current-r2 /srv/occ/current',
                 id='switch'),
    pytest.param(lambda: hosts.go_live_command(T, "r2", True, "cd /srv/occ/current && bin/restart", "curl -fs localhost"),
                 '{ test -d /srv/occ/releases/r2 && ln -sfn releases/r2 /srv/occ/.current-r2 && mv -T /srv/occ/.current-r2 /srv/occ/current; } || exit 79; ( cd /srv/occ/current && bin/restart ) || { rc=$?; echo __hook_exit=$rc >&2; exit 81; }; ( cd /srv/occ/current && curl -fs localhost ) >/dev/null 2>&1 || exit 82',
                 id='go-live'),
    pytest.param(lambda: hosts.go_live_command(T, "r2", False, "bin/restart", ""),
                 '( bin/restart ) || { rc=$?; echo __hook_exit=$rc >&2; exit 81; }',
                 id='go-live-no-switch-no-health'),
    pytest.param(lambda: hosts.take_fence_command(T, "run-7"),
                 "mkdir -p /srv/occ && { { command -v flock >/dev/null 2>&1 || { echo 'flock is not installed on this host, and every change of a release runs under it (the fence against a killed run'\"'\"'s commands); install util-linux (Debian, RHEL) or busybox'\"'\"'s flock (Alpine)' >&2; exit 85; }; } && { flock -w 20 9 || { echo 'the fence /srv/occ/.deploy-fence stayed locked 20s: a change of an earlier run (a restart hook, a stop) is still running on this host; wait for it to end or stop it, then run again' >&2; exit 85; }; }; printf '%s\\n' run-7 > /srv/occ/.deploy-fence; } 9>>/srv/occ/.deploy-fence",
                 id='take-fence'),
    pytest.param(lambda: hosts.fenced(T, "run-7", "rm -rf /srv/occ/releases/r0"),
                 '{ { command -v flock >/dev/null 2>&1 || { echo \'flock is not installed on this host, and every change of a release runs under it (the fence against a killed run\'"\'"\'s commands); install util-linux (Debian, RHEL) or busybox\'"\'"\'s flock (Alpine)\' >&2; exit 85; }; } && { flock -w 20 9 || { echo \'the fence /srv/occ/.deploy-fence stayed locked 20s: a change of an earlier run (a restart hook, a stop) is still running on this host; wait for it to end or stop it, then run again\' >&2; exit 85; }; }; f=$(cat /srv/occ/.deploy-fence 2>/dev/null); [ "$f" = run-7 ] || { printf \'%s%s); this command changed nothing\\n\' \'deploy@web1:22: run run-7 no longer holds this host (its fence names run \' "${f:-none}" >&2; exit 84; }; { rm -rf /srv/occ/releases/r0\n} 9>&-; } 9>>/srv/occ/.deploy-fence',
                 id='fenced-change'),
    pytest.param(lambda: hosts.fenced(T, "", "rm -rf /srv/occ/releases/r0"),
                 'rm -rf /srv/occ/releases/r0',
                 id='no-token-no-fence'),
    pytest.param(lambda: hosts.go_live_command(T, "r2", True, "cd /srv/occ/current && bin/restart", "curl -fs localhost", "run-7"),
                 '{ { command -v flock >/dev/null 2>&1 || { echo \'flock is not installed on this host, and every change of a release runs under it (the fence against a killed run\'"\'"\'s commands); install util-linux (Debian, RHEL) or busybox\'"\'"\'s flock (Alpine)\' >&2; exit 85; }; } && { flock -w 20 9 || { echo \'the fence /srv/occ/.deploy-fence stayed locked 20s: a change of an earlier run (a restart hook, a stop) is still running on this host; wait for it to end or stop it, then run again\' >&2; exit 85; }; }; f=$(cat /srv/occ/.deploy-fence 2>/dev/null); [ "$f" = run-7 ] || { printf \'%s%s); this command changed nothing\\n\' \'deploy@web1:22: run run-7 no longer holds this host (its fence names run \' "${f:-none}" >&2; exit 84; }; { { test -d /srv/occ/releases/r2 && ln -sfn releases/r2 /srv/occ/.current-r2 && mv -T /srv/occ/.current-r2 /srv/occ/current; } || exit 79; ( cd /srv/occ/current && bin/restart ) || { rc=$?; echo __hook_exit=$rc >&2; exit 81; }\n} 9>&-; } 9>>/srv/occ/.deploy-fence; ( cd /srv/occ/current && curl -fs localhost ) >/dev/null 2>&1 || exit 82',
                 id='go-live-fenced-health-after'),
    pytest.param(lambda: hosts.read_lock_command(T),
                 'cat /srv/occ/.deploy-lock/details 2>/dev/null || { test -d /srv/occ/.deploy-lock && echo holder=unknown; } || true',
                 id='read-lock'),
    pytest.param(lambda: hosts.discard_delta_command(T, "r2", "/srv/occ/.uploads/r2.delta.tar.gz"),
                 'rm -rf /srv/occ/releases/.partial-r2 /srv/occ/.uploads/r2.delta.tar.gz /srv/occ/.uploads/r2.d',
                 id='discard-delta'),
    pytest.param(lambda: hosts.discard_release_command(T, "r2"),
                 'rm -rf /srv/occ/releases/r2 /srv/occ/releases/.partial-r2 /srv/occ/.uploads/r2.tar.gz /srv/occ/.uploads/r2.delta.tar.gz /srv/occ/.uploads/r2.d',
                 id='discard-release'),
    pytest.param(lambda: hosts.free_space_command(T, "/srv/occ/.uploads/r2.tar.gz"),
                 'rm -f /srv/occ/.uploads/r2.tar.gz; df -Pk /srv/occ 2>/dev/null | tail -n 1',
                 id='free-space'),
    pytest.param(lambda: hosts.previous_command(T, "r2"),
                 'rm -rf /srv/occ/releases/.partial-r2 && cat /srv/occ/releases/r2/.previous 2>/dev/null || true',
                 id='previous'),
    pytest.param(lambda: hosts.release_tree_command(T, "r1"),
                 "cd /srv/occ/releases/r1 && echo '== tree' && find . -mindepth 1 \\( -type f -printf 'f %m %D:%i %s %T@ %C@ %P\\n' \\) -o \\( -type l -printf 'l %P -> %l\\n' \\) -o \\( -type d -empty -printf 'd %P\\n' \\) && echo '== index' && { cat /srv/occ/.verified 2>/dev/null || true; } && echo '== manifest' && { cat RELEASE.json 2>/dev/null || true; }",
                 id='release-tree'),
    pytest.param(lambda: hosts.hash_files_command(T, "r1", ["a.js", "b c/d"]),
                 "cd /srv/occ/releases/r1 && LC_ALL=C sha256sum -- a.js 'b c/d'",
                 id='hash-files'),
    pytest.param(lambda: hosts.health_check_command(T, "curl -fs localhost:3000"),
                 'cd /srv/occ/current && curl -fs localhost:3000',
                 id='health-check'),
    pytest.param(lambda: hosts.log_tail_command(T),
                 'tail -n 8 /srv/occ/logs/app.log 2>/dev/null || true',
                 id='log-tail'),
    pytest.param(lambda: hosts.check_command(T, 4242),
                 'mkdir -p /srv/occ 2>/dev/null; if touch /srv/occ/.write-test-4242 2>/dev/null && rm -f /srv/occ/.write-test-4242; then echo writable=1; else echo writable=0; fi; df -Pk /srv/occ 2>/dev/null | tail -n 1',
                 id='check'),
]


@pytest.mark.parametrize("build, expected", EXACT)
def test_each_host_command_builder_builds_exactly_this(build, expected):
    assert build() == expected


# Builders whose exact output is checked by a test of their own above (several cases, or
# the supervisor script inside).
EXACT_ABOVE = {"supervise_command", "install_supervisor_command", "stop_app_command", "systemd_restart_command",
               "app_of_command", "start_facts_command"}


def test_every_host_command_builder_has_an_exact_test():
    import inspect

    from deploy.hosts import _commands

    builders = {name for name, fn in inspect.getmembers(_commands, inspect.isfunction)
                if name.endswith("_command") and fn.__module__ == _commands.__name__}
    exact = {name for p in EXACT for name in p.values[0].__code__.co_names}
    assert builders - exact - EXACT_ABOVE == set()
    assert EXACT_ABOVE <= builders


def test_the_package_exports_exactly_its_modules_public_names():
    """deploy.hosts re-exports every public name its private modules define, and nothing
    else (httpx's tests/test_exported_members.py)."""
    import ast
    from pathlib import Path

    defined = set()
    for path in Path(hosts.__file__).parent.glob("_*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    assert set(hosts.__all__) == {n for n in defined if not n.startswith("_")}
    assert all(hasattr(hosts, n) for n in hosts.__all__)


@pytest.mark.parametrize("build", ["take", "change"])
def test_a_host_without_flock_is_told_to_install_it_and_nothing_changes(tmp_path, build):
    """A team's own host may lack util-linux: the fence then says what is missing, not that it stayed locked."""
    import os
    import shutil
    import subprocess

    t = _t(str(tmp_path / "app"))
    (tmp_path / "app").mkdir()
    victim = tmp_path / "app" / "victim"
    victim.write_text("kept\n")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("cat", "mkdir", "rm"):
        os.symlink(shutil.which(tool), tools / tool)
    cmd = (hosts.take_fence_command(t, "run-1") if build == "take"
           else hosts.fenced(t, "run-1", f"rm -f {victim}"))
    r = subprocess.run(["/bin/sh", "-c", cmd], env={"PATH": str(tools)}, capture_output=True, text=True)
    assert r.returncode == hosts.FENCE_BUSY_EXIT, r.stderr
    assert "flock is not installed on this host" in r.stderr and "install util-linux" in r.stderr
    assert "stayed locked" not in r.stderr
    assert victim.read_text() == "kept\n"
    assert not (tmp_path / "app" / ".deploy-fence").read_text()
