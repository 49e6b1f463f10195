"""Rollbacks and dead hosts that could not be trusted (issue 21, cases 7, 8, 11, 12), through the
real command line against two sshd hosts, Postgres and the Shopify stand-in:

- a plan confirmed by a person is not executed once what it showed as live has changed (another
  run released meanwhile, on this ledger or on another one that shares only the hosts);
- a rollback target whose files were changed in place (a delta release shares unchanged files'
  inodes with the releases before it) is refused, naming the files, never served;
- one unreachable host never freezes the others: a promotion fails before changing anything
  and frees every lock, and rollback, --abort and lock.release act on the reachable hosts with
  --skip-host, record it and print the command that brings the host back in line;
- a rollback checks what its database part needs before any host switches (and its dry run
  warns), and `status` follows the hosts whatever fails after the switch.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import psycopg
import pytest

from deploy.facts import BackupFacts, get
from deploy.testing.project import REPO

MIGRATIONS = "examples/app/prisma/postgres/migrations"


# ----------------------------------------------------------------------------- helpers

def text(r) -> str:
    return r.stdout + r.stderr


def release(stage, tag: str, *, migration: str | None = None, down: str | None = None, **extra_env) -> str:
    """Commit a change (and optionally a migration), collect evidence, promote it; its release id."""
    root = stage.project.root
    (root / "examples/app/NOTE.txt").write_text(f"release {tag}\n")
    if migration:
        d = root / MIGRATIONS / f"2025040{len(tag)}000000_{tag}"
        d.mkdir()
        (d / "migration.sql").write_text(migration)
        if down is not None:
            (d / "down.sql").write_text(down)
    stage.project.commit(f"release {tag}")
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging", extra_env=extra_env or None)
    assert r.returncode == 0, text(r)
    return live(stage)


def live(stage) -> str | None:
    row = stage.project.ledger().live_release("staging")
    return row.release_id if row else None


def host_locked(h) -> bool:
    return (h.root / "srv/occ/.deploy-lock").exists()


def releases_dir(h, rid: str):
    return h.root / "srv/occ/releases" / rid


def applied(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations "
                                        "WHERE rolled_back_at IS NULL AND finished_at IS NOT NULL")}


def last_run(stage, flow: str):
    return stage.project.ledger().runs("staging", flow=flow, limit=1)[0]


def promote_a_then_b(stage):
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode == 0, text(r)
    a = live(stage)
    b = release(stage, "b")
    assert stage.currents() == [b, b]
    return a, b


@pytest.fixture
def two(stage_snapshot):
    """Staging with release A, then B live (B delta-uploaded: unchanged files share A's inodes);
    promoted once per module, then put back for each test (deploy/testing/snapshots.py)."""
    stage, (a, b) = stage_snapshot(promote_a_then_b)
    assert stage.currents() == [b, b] and live(stage) == b
    return stage, a, b


# ----------------------------------------------------------------------------- case 11: a dead host

@pytest.mark.parametrize("dead", [0, 1], ids=["first-host-dead", "last-host-dead"])
def test_unreachable_host_fails_the_promotion_before_any_change_and_frees_every_lock(two, dead):
    stage, a, b = two
    h = stage.hosts[dead]
    other = stage.hosts[1 - dead]
    (stage.project.root / "examples/app/NOTE.txt").write_text("release c\n")
    stage.project.commit("release c")
    stage.collect_evidence()
    stage.farm.drop(h)
    for attempt in range(2):   # the next promotion is not locked out (it was exit 4)
        r = stage.project.invoke("promote", "--to=staging")
        assert r.returncode == 1, text(r)
        assert "Traceback" not in text(r)
        assert h.address in text(r) and "cannot be reached" in text(r), text(r)
        assert f"--skip-host={h.address}" in text(r), text(r)
        assert stage.project.ledger().lock("staging") is None
        assert not host_locked(other)
        assert live(stage) == b
        cur = (other.root / "srv/occ/current").readlink().name
        assert cur == b
    stage.farm.bring_back(h)
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode == 0, text(r)


@pytest.mark.parametrize("dead", [0, 1], ids=["first-host-dead", "last-host-dead"])
def test_rollback_with_a_dead_host_needs_skip_host_then_rolls_back_the_others_and_says_how_to_catch_up(two, dead):
    stage, a, b = two
    h, other = stage.hosts[dead], stage.hosts[1 - dead]
    stage.farm.drop(h)
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 1 and "Traceback" not in text(r), text(r)
    assert f"--skip-host={h.address}" in text(r), text(r)
    assert live(stage) == b and stage.project.ledger().lock("staging") is None
    assert (other.root / "srv/occ/current").readlink().name == b and not host_locked(other)

    r = stage.project.invoke("rollback", "--env=staging", "--yes", f"--skip-host={h.address}")
    assert r.returncode == 0, text(r)
    assert (other.root / "srv/occ/current").readlink().name == a
    assert (h.root / "srv/occ/current").readlink().name == b     # untouched: it was down
    assert live(stage) == a
    run = last_run(stage, "rollback")
    assert run.args["skip_hosts"] == [h.address]
    assert f"invoke hosts.rollback --env=staging --to={a}" in text(r), text(r)

    stage.farm.bring_back(h)
    r = stage.project.invoke("lock.release", "--env=staging", "--force")
    assert r.returncode == 0, text(r)
    r = stage.project.invoke("hosts.rollback", "--env=staging", f"--to={a}")
    assert r.returncode == 0, text(r)
    assert stage.currents() == [a, a] and stage.versions() == [a, a]


@pytest.mark.parametrize("dead", [0, 1], ids=["first-host-dead", "last-host-dead"])
def test_abort_of_a_promotion_killed_during_release_works_on_the_reachable_hosts_with_skip_host(two, dead):
    stage, a, b = two
    h, other = stage.hosts[dead], stage.hosts[1 - dead]
    (stage.project.root / "examples/app/NOTE.txt").write_text("release c\n")
    stage.project.commit("release c")
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "after:release"})
    assert r.returncode != 0
    c = stage.currents()[0]
    assert c not in (a, b) and stage.currents() == [c, c]
    stage.farm.drop(h)

    r = stage.project.invoke("promote", "--to=staging", "--abort")
    assert r.returncode == 1 and "Traceback" not in text(r), text(r)
    assert f"--skip-host={h.address}" in text(r), text(r)

    r = stage.project.invoke("promote", "--to=staging", "--abort", f"--skip-host={h.address}")
    assert r.returncode == 0, text(r)
    assert (other.root / "srv/occ/current").readlink().name == b and not host_locked(other)
    assert stage.project.ledger().lock("staging") is None and live(stage) == b
    assert last_run(stage, "promote").args["skip_hosts"] == [h.address]
    assert f"invoke hosts.rollback --env=staging --to={b}" in text(r), text(r)

    stage.farm.bring_back(h)
    assert host_locked(h)   # the killed run's lock: its run has ended, so lock.release removes it
    r = stage.project.invoke("lock.release", "--env=staging", "--force")
    assert r.returncode == 0 and not host_locked(h), text(r)
    r = stage.project.invoke("hosts.rollback", "--env=staging", f"--to={b}")
    assert r.returncode == 0, text(r)
    assert stage.currents() == [b, b]


@pytest.mark.parametrize("dead", [0, 1], ids=["first-host-dead", "last-host-dead"])
def test_lock_release_with_a_dead_host_releases_nothing_without_skip_host_and_exits_0_when_it_released(two, dead):
    stage, a, b = two
    h, other = stage.hosts[dead], stage.hosts[1 - dead]
    (stage.project.root / "examples/app/NOTE.txt").write_text("release c\n")
    stage.project.commit("release c")
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging", extra_env={"DEPLOY_FAULT": "during:release"})
    assert r.returncode != 0
    assert stage.project.ledger().lock("staging") is not None and host_locked(other)
    stage.farm.drop(h)

    r = stage.project.invoke("lock.release", "--env=staging", "--force")
    assert r.returncode == 1 and "Traceback" not in text(r), text(r)
    assert "Nothing was released" in text(r) and f"--skip-host={h.address}" in text(r), text(r)
    assert stage.project.ledger().lock("staging") is not None and host_locked(other)

    r = stage.project.invoke("lock.release", "--env=staging", "--force", f"--skip-host={h.address}")
    assert r.returncode == 0, text(r)
    assert stage.project.ledger().lock("staging") is None and not host_locked(other)
    assert h.address in text(r) and "skipped" in text(r)


def test_skip_host_naming_no_host_or_every_host_is_refused(two):
    stage, a, b = two
    for args in (["--skip-host=nobody@10.9.9.9:22"], [f"--skip-host={stage.hosts[0].address},{stage.hosts[1].address}"],
                 ["--skip-host=127.0.0.1"]):
        r = stage.project.invoke("rollback", "--env=staging", "--yes", *args)
        assert r.returncode == 2 and "Traceback" not in text(r), text(r)
        assert stage.currents() == [b, b] and live(stage) == b
    r = stage.project.invoke("promote", "--to=staging", f"--skip-host={stage.hosts[0].address}")
    assert r.returncode == 2 and "--abort" in text(r), text(r)


# ----------------------------------------------------------------------------- case 8: a target changed in place

def _append(p):
    with open(p, "a") as f:
        f.write("\n// appended by the live app\n")


def _truncate(p):
    os.truncate(p, 3)


def _same_size_other_bytes(p):
    st = os.stat(p)
    data = bytearray(p.read_bytes())
    data[0] = (data[0] + 1) % 256
    fd = os.open(p, os.O_WRONLY)
    os.write(fd, bytes(data))
    os.close(fd)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))   # mtime put back: only the ctime tells


def _chmod(p):
    os.chmod(p, 0o755)


def _new_file(p):
    (p.parent / "planted.js").write_text("console.log('planted')\n")


def _deleted(p):
    p.unlink()


CHANGES = {"append-via-live-release": _append, "truncate": _truncate, "same-size-other-bytes": _same_size_other_bytes,
           "chmod": _chmod, "new-file": _new_file, "deleted-file": _deleted}


@pytest.mark.parametrize("kind", list(CHANGES), ids=list(CHANGES))
def test_rollback_refuses_a_target_changed_in_place_and_names_the_file(two, kind):
    stage, a, b = two
    h = stage.hosts[1]
    shared = releases_dir(h, a) / "server.mjs"
    live_copy = releases_dir(h, b) / "server.mjs"
    assert os.stat(shared).st_ino == os.stat(live_copy).st_ino   # the delta linked it
    CHANGES[kind](live_copy if kind == "append-via-live-release" else shared)
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 1 and "Traceback" not in text(r), text(r)
    named = "planted.js" if kind == "new-file" else "server.mjs"
    assert "changed in place" in text(r) and named in text(r), text(r)
    assert stage.currents() == [b, b] and stage.versions() == [b, b]
    assert live(stage) == b and stage.project.ledger().lock("staging") is None
    assert not host_locked(h)


def test_rollback_to_an_untouched_delta_release_still_succeeds_and_serves_it(two):
    stage, a, b = two
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert r.returncode == 0, text(r)
    assert stage.currents() == [a, a] and stage.versions() == [a, a] and live(stage) == a


def _older_manifest(rel) -> None:
    """releases/<id>/RELEASE.json as a toolkit before symlinks, folders and modes wrote it (a new
    inode: a delta release never shares its manifest)."""
    data = json.loads((rel / "RELEASE.json").read_text())
    old = {k: v for k, v in data.items() if k not in ("symlinks", "empty_dirs")}
    old["files"] = [{k: v for k, v in f.items() if k != "mode"} for f in data["files"]]
    (rel / "RELEASE.json.new").write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    os.replace(rel / "RELEASE.json.new", rel / "RELEASE.json")


def _made_before_manifests(stage, a):
    for h in stage.hosts:   # no manifest, and no index either (older toolkits kept none)
        (releases_dir(h, a) / "RELEASE.json").unlink()
        (h.root / "srv/occ/.verified").unlink(missing_ok=True)


def _manifest_removed(stage, a):
    (releases_dir(stage.hosts[1], a) / "RELEASE.json").unlink()   # the index still holds its files


def _older_manifest_everywhere(stage, a):
    for h in stage.hosts:
        _older_manifest(releases_dir(h, a))


def _older_manifest_and_a_changed_file(stage, a):
    _older_manifest_everywhere(stage, a)
    with open(releases_dir(stage.hosts[1], a) / "server.mjs", "a") as f:
        f.write("// appended by the live app\n")


@pytest.mark.parametrize("prepare, refused, says", [
    (_made_before_manifests, False, "has no RELEASE.json (made by a toolkit older than release manifests"),
    (_manifest_removed, True, "RELEASE.json was removed since it was released"),
    (_older_manifest_everywhere, False, "has an older toolkit's RELEASE.json: the files it lists were checked"),
    (_older_manifest_and_a_changed_file, True, "server.mjs"),
], ids=["made-before-manifests", "manifest-removed", "older-manifest", "older-manifest-file-changed"])
def test_rollback_to_a_release_without_a_current_manifest_warns_or_refuses(two, prepare, refused, says):
    """Right after upgrading, on-call goes back to a release an older toolkit made (no manifest, or
    an older one): it is switched to with a warning naming the release and what was not checked.
    A manifest removed from a release the index holds, or a file an older manifest lists that
    changed, is refused before any host switches."""
    stage, a, b = two
    prepare(stage, a)
    r = stage.project.invoke("rollback", "--env=staging", "--yes")
    assert "Traceback" not in text(r), text(r)
    flat = " ".join(text(r).split())
    assert says in flat, text(r)
    if refused:
        assert r.returncode == 1, text(r)
        assert ("changed in place" in flat or "cannot be checked" in flat) and "--to" in flat, text(r)
        assert stage.currents() == [b, b] and stage.versions() == [b, b] and live(stage) == b
        assert stage.project.ledger().lock("staging") is None and not any(host_locked(h) for h in stage.hosts)
    else:
        assert r.returncode == 0, text(r)
        assert f"WARNING {stage.hosts[0].address}: releases/{a} " in r.stdout, r.stdout
        assert "release that commit again" in flat, text(r)
        assert stage.currents() == [a, a] and stage.versions() == [a, a] and live(stage) == a


# ----------------------------------------------------------------------------- case 12: one consistent act

NO_DOWN = 'CREATE TABLE "Audit" ("id" SERIAL PRIMARY KEY, "note" TEXT);\n'


@pytest.mark.parametrize("missing", ["no-down-sql", "backup-deleted", "backup-corrupt"])
def test_rollback_database_part_is_checked_before_any_host_switches_and_dry_run_warns(stage, missing):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    a = live(stage)
    b = release(stage, "audit", migration=NO_DOWN)   # Prisma writes no down.sql
    db = "down" if missing == "no-down-sql" else "restore"
    if missing != "no-down-sql":
        path = get(last_run(stage, "promote").state, BackupFacts).path
        if missing == "backup-deleted":
            os.unlink(path)
        else:
            with open(path, "r+b") as f:
                f.seek(100)
                f.write(b"\x00garbage")
    dry = stage.project.invoke("rollback", "--env=staging", f"--db={db}", "--dry-run")
    assert dry.returncode == 0, text(dry)
    assert "WARNING" in dry.stdout and "refused before any host switches" in dry.stdout, dry.stdout
    r = stage.project.invoke("rollback", "--env=staging", f"--db={db}", "--yes")
    assert r.returncode == 2 and "Traceback" not in text(r), text(r)
    assert ("down.sql" in text(r) and "audit" in text(r)) if missing == "no-down-sql" else "backup" in text(r)
    assert stage.currents() == [b, b] and live(stage) == b
    assert any(n.endswith("_audit") for n in applied(stage.db_url))
    assert stage.project.ledger().lock("staging") is None


def test_rollback_failing_after_the_switch_leaves_status_on_what_hosts_serve_and_a_rerun_finishes_it(stage):
    stage.collect_evidence()
    assert stage.project.invoke("promote", "--to=staging").returncode == 0
    z = live(stage)
    a = release(stage, "a")
    # down.sql is there (the check passes) but fails when run: the database part fails after the switch.
    b = release(stage, "bad", migration=NO_DOWN, down='DROP TABLE "NoSuchTable";\n')
    r = stage.project.invoke("rollback", "--env=staging", "--db=down", "--yes")
    assert r.returncode == 1 and "Traceback" not in text(r), text(r)
    assert stage.currents() == [a, a]
    st = stage.project.invoke("status", "--json")
    row = next(e for e in json.loads(st.stdout) if e["env"] == "staging")
    assert row["release"] == a, st.stdout
    # Re-running finishes this rollback (to a), never one release further back (to z).
    r = stage.project.invoke("rollback", "--env=staging", "--db=keep", "--yes")
    assert r.returncode == 0, text(r)
    assert stage.currents() == [a, a] and live(stage) == a and z != a
    assert stage.project.ledger().lock("staging") is None


# ----------------------------------------------------------------------------- case 7: a stale plan

def _spawn_on_pty(project, *args, extra_env=None):
    env = {**os.environ, "DEPLOY_ROOT": str(project.root), "PYTHONPATH": str(REPO), **project.env, **(extra_env or {})}
    for k in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        env.pop(k, None)
    if "DEPLOY_LEDGER_URL" not in project.env:
        env.pop("DEPLOY_LEDGER_URL", None)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=project.root, env=env,
                         stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    return p, master


def _read_until(master, needle: str, timeout: float = 120) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            if needle.encode() in out:
                return out.decode(errors="replace")
    raise AssertionError(f"never saw {needle!r}: {out.decode(errors='replace')[-3000:]}")


def _drain(p, master, timeout: float = 180) -> str:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk and p.poll() is not None:
                break
            out += chunk
        elif p.poll() is not None:
            break
    p.wait(10)
    os.close(master)
    return out.decode(errors="replace")


@pytest.mark.parametrize("where", ["same-ledger", "other-ledger"])
@pytest.mark.parametrize("db", ["restore", "down"])
def test_confirmed_rollback_whose_live_release_changed_meanwhile_is_refused(two, pg_cluster, where, db):
    stage, a, b = two
    p, master = _spawn_on_pty(stage.project, "rollback", "--env=staging", f"--db={db}")
    shown = _read_until(master, "[y/N]")
    assert f"from: {b}" in shown and f"to: {a}" in shown, shown
    # While the operator reads the plan, CI makes C live (on this ledger, or on its own one).
    (stage.project.root / "examples/app/NOTE.txt").write_text("release c\n")
    stage.project.commit("release c")
    stage.collect_evidence()
    if where == "other-ledger":
        stage.project.env["DEPLOY_LEDGER_URL"] = pg_cluster.create_database()   # CI's own ledger
    try:
        r = stage.project.invoke("promote", "--to=staging")
    finally:
        stage.project.env.pop("DEPLOY_LEDGER_URL", None)
    assert r.returncode == 0, text(r)
    c = stage.currents()[0]
    assert c not in (a, b) and stage.currents() == [c, c]
    with psycopg.connect(stage.db_url, autocommit=True) as conn:   # written after C went live
        conn.execute('INSERT INTO "Shop" ("id", "domain", "name") VALUES (\'after-c\', \'after-c.example\', \'C\')')
    os.write(master, b"y\n")
    out = _drain(p, master)
    assert p.returncode == 7, out
    assert "changed" in out and "Nothing was" in out and "Traceback" not in out, out
    assert stage.currents() == [c, c] and stage.versions() == [c, c]
    assert live(stage) == (c if where == "same-ledger" else b)
    assert stage.project.ledger().lock("staging") is None
    assert not any(host_locked(h) for h in stage.hosts)
    with psycopg.connect(stage.db_url) as conn:
        assert conn.execute('SELECT count(*) FROM "Shop" WHERE "id" = \'after-c\'').fetchone()[0] == 1


# ----------------------------------------------------------------------------- pure parts (fast tier)

MANIFEST = json.dumps({"files": [{"path": "a.js", "mode": 0o644, "size": 3, "sha256": "1" * 64},
                                 {"path": "bin/x", "mode": 0o755, "size": 5, "sha256": "2" * 64}],
                       "symlinks": [{"path": "l", "target": "a.js"}], "empty_dirs": ["tmp"]}).encode()
TREE = ["f 644 64769:11 3 1700000000.1234567890 1700000001.5000000000 a.js",
        "f 755 64769:12 5 1700000000.1234567890 1700000001.5000000000 bin/x",
        "l l -> a.js", "d tmp", "l .env -> /srv/occ/shared/.env",
        "f 644 64769:13 9 1700000000.1 1700000001.5 RELEASE", "f 644 64769:14 1 1.1 1.5 .previous"]
INDEX = ["64769:11 3 1700000000.1234567890 1700000001.5000000000 " + "1" * 64,
         "64769:12 5 1700000000.1234567890 1700000001.5000000000 " + "2" * 64]


def _swap(line_from: str, line_to: str):
    return [line_to if ln == line_from else ln for ln in TREE]


@pytest.mark.parametrize("tree, index, problem, hashed", [
    (TREE, INDEX, None, []),
    (TREE, [], None, ["a.js", "bin/x"]),
    (_swap(TREE[0], TREE[0].replace("1700000001.5000000000", "1700000009.5000000000")), INDEX, None, ["a.js"]),
    (_swap(TREE[0], TREE[0].replace("1700000001.5000000000", "1700000001.0000000000")), [INDEX[0].replace(
        "1700000001.5000000000", "1700000001.0000000000"), INDEX[1]], None, ["a.js"]),
    (_swap(TREE[0], TREE[0].replace("64769:11 3 ", "64769:11 9 ")), INDEX, "a.js: 9 bytes, was 3", []),
    (_swap(TREE[0], TREE[0].replace("f 644", "f 755")), INDEX, "a.js: mode 755, was 644", []),
    (TREE + ["f 644 64769:20 2 1.1 1.5 planted.js"], INDEX, "planted.js: not in the release", []),
    ([ln for ln in TREE if not ln.endswith(" bin/x")], INDEX, "bin/x: missing", []),
    (_swap("l l -> a.js", "l l -> /etc/passwd"), INDEX, "l: links to /etc/passwd", []),
    (_swap("d tmp", "f 644 64769:30 0 1.1 1.5 tmp"), INDEX, "tmp: is a file now", []),
], ids=["untouched-indexed", "no-index-hashes-all", "ctime-changed-hashes-it", "whole-second-ctime-never-vouches",
        "size", "mode", "added-file", "deleted-file", "relinked", "dir-became-file"])
def test_judge_target_trusts_only_indexed_untouched_inodes_and_names_every_difference(tree, index, problem, hashed):
    from deploy.hosts._release import judge_target

    problems, to_hash, unchecked = judge_target(MANIFEST, tree, index, shared_files=(".env",))
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems
    assert sorted(to_hash) == hashed
    assert unchecked == ""


def _with_manifest_file(tree: list[str], entry: str = "f 644 64769:40 120 1.1 1.5 RELEASE.json") -> list[str]:
    return tree + [entry]


@pytest.mark.parametrize("raw, tree, index, says", [
    (b"", TREE, INDEX, "its RELEASE.json was removed since it was released (the host's index holds a.js"),
    (b"", _with_manifest_file(TREE, "f 644 64769:40 0 1.1 1.5 RELEASE.json"), [], "its RELEASE.json is there but "
     "unreadable"),
    (b"{not json", _with_manifest_file(TREE), [], "its RELEASE.json is there but unreadable"),
    (json.dumps({"files": [{"path": "a"}]}).encode(), _with_manifest_file(TREE), [],
     "its RELEASE.json is there but unreadable"),
    (json.dumps({"files": [{"path": "../a", "size": 3, "sha256": "1" * 64}]}).encode(), _with_manifest_file(TREE),
     [], "its RELEASE.json is there but unreadable"),
    (b"", _with_manifest_file(TREE, "f 644 64769:41 3 1.1 1.5 RELEASE.json/x"), [],
     "its RELEASE.json is there but unreadable"),
], ids=["removed-but-indexed", "emptied", "not-json", "entry-without-sums", "unsafe-path", "a-folder-now"])
def test_judge_target_refuses_a_release_whose_manifest_was_removed_or_cannot_be_read(raw, tree, index, says):
    from deploy.hosts._release import judge_target

    problems, to_hash, unchecked = judge_target(raw, tree, index)
    assert to_hash is None and problems and problems[0].startswith(says), problems
    assert unchecked == ""


def test_judge_target_lets_a_release_made_before_manifests_through_and_says_it_was_not_checked():
    """No RELEASE.json and nothing of it in the host's index: an older toolkit's (or a hand-made)
    release. On-call can go back to it right after upgrading; the warning says what was skipped."""
    from deploy.hosts._release import judge_target

    # The index holds other releases' files, and a line for bin/x's inode number from before that
    # inode was reused (another change time): neither is this release's.
    others = [INDEX[0].replace("64769:11", "64769:99"), INDEX[1].replace("1700000001.5", "1700000002.5")]
    for tree in (TREE, TREE + ["f 644 64769:20 2 1.1 1.5 planted.js"], []):
        problems, to_hash, unchecked = judge_target(b"", tree, others)
        assert problems == [] and to_hash == {}, problems
        assert unchecked.startswith("has no RELEASE.json (made by a toolkit older than release manifests")


OLD_FILES = [{"path": "a.js", "size": 3, "sha256": "1" * 64}, {"path": "bin/x", "size": 5, "sha256": "2" * 64}]
OLD_NO_MODES = json.dumps({"release_id": "r", "files": OLD_FILES}).encode()
OLD_MODES = json.dumps({"release_id": "r", "files": [dict(OLD_FILES[0], mode=0o644),
                                                     dict(OLD_FILES[1], mode=0o755)]}).encode()
OLD_TREE = _with_manifest_file(TREE)


@pytest.mark.parametrize("raw, tree, index, problem, hashed, modes_checked", [
    (OLD_NO_MODES, OLD_TREE, INDEX, None, [], False),
    (OLD_MODES, OLD_TREE, INDEX, None, [], True),
    (OLD_NO_MODES, OLD_TREE, [], None, ["a.js", "bin/x"], False),
    (OLD_MODES, [ln.replace("f 644", "f 755") if ln.endswith(" a.js") else ln for ln in OLD_TREE], INDEX,
     "a.js: mode 755, was 644", [], True),
    (OLD_NO_MODES, [ln.replace("64769:11 3 ", "64769:11 9 ") for ln in OLD_TREE], INDEX, "a.js: 9 bytes, was 3",
     [], False),
    (OLD_NO_MODES, OLD_TREE + ["f 644 64769:20 2 1.1 1.5 planted.js"], INDEX, "planted.js: not in the release",
     [], False),
    (OLD_MODES, [ln for ln in OLD_TREE if not ln.endswith(" bin/x")], INDEX, "bin/x: missing", [], True),
    (OLD_NO_MODES, [ln.replace("64769:11 3 1700000000.1234567890 1700000001.5000000000",
                               "64769:11 3 1700000000.1234567890 1700000009.5000000000") for ln in OLD_TREE],
     INDEX, None, ["a.js"], False),
], ids=["no-modes-untouched", "modes-untouched", "no-index-hashes-all", "mode-changed", "size-changed",
        "added-file", "deleted-file", "ctime-changed-hashes-it"])
def test_judge_target_checks_the_files_an_older_manifest_lists_and_says_what_it_could_not(
        raw, tree, index, problem, hashed, modes_checked):
    from deploy.hosts._release import judge_target

    problems, to_hash, unchecked = judge_target(raw, tree, index, shared_files=(".env",))
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith(problem) for p in problems), problems
    assert sorted(to_hash or {}) == hashed
    assert unchecked.startswith("has an older toolkit's RELEASE.json: the files it lists were checked, its symlinks "
                                "and folders could not be")
    assert unchecked.endswith(", nor the files' modes") != modes_checked


@pytest.mark.parametrize("names, kept, skipped", [
    ((), ["deploy@10.0.0.1:22", "deploy@10.0.0.2:2222", "web3"], []),
    (("deploy@10.0.0.2:2222",), ["deploy@10.0.0.1:22", "web3"], ["deploy@10.0.0.2:2222"]),
    (("10.0.0.1:22,web3",), ["deploy@10.0.0.2:2222"], ["deploy@10.0.0.1:22", "deploy@web3:22"]),
    (("web3", "deploy@web3:22"), ["deploy@10.0.0.1:22", "deploy@10.0.0.2:2222"], ["deploy@web3:22"]),
], ids=["none", "full-name", "comma-list-host-port-and-entry", "same-host-twice"])
def test_skipping_hosts_drops_the_named_hosts_with_their_ports(names, kept, skipped):
    from deploy.config import HostsSection
    from deploy.hosts import skipping

    sec = HostsSection(hosts=("deploy@10.0.0.1:22", "deploy@10.0.0.2:2222", "web3"), user="deploy", port=22,
                       app_ports=(3001, 3002, 3003), deploy_to="/srv/occ")
    out, names_skipped = skipping(sec, names)
    assert list(out.hosts) == kept and names_skipped == skipped
    assert len(out.app_ports) == len(kept)


@pytest.mark.parametrize("names, says", [(("nope:1",), "fits no host"), (("a,b",), "every host")],
                         ids=["unknown", "all"])
def test_skipping_hosts_refuses_unknown_or_every_host(names, says):
    from deploy.config import HostsSection
    from deploy.errors import SettingsError
    from deploy.hosts import skipping

    sec = HostsSection(hosts=("a:22", "b:22"), user="deploy", deploy_to="/srv/occ")
    with pytest.raises(SettingsError, match=says):
        skipping(sec, names)


# ----------------------------------------------------------------------------- case 7: a stale promotion plan

def _protect_staging(stage) -> None:
    """Staging becomes a protected environment: a promotion shows its plan and asks (or takes --yes)."""
    p = stage.project.root / "env/staging.toml"
    p.write_text(p.read_text().replace('app_dir = "examples/app"\n', 'app_dir = "examples/app"\nprotected = true\n', 1))
    stage.project.commit("staging is protected")


def _on_other_ledger(stage, pg_cluster, *args):
    """`invoke ARGS` by a runner with its own Postgres ledger that shares only the hosts."""
    stage.project.env["DEPLOY_LEDGER_URL"] = pg_cluster.create_database()
    try:
        return stage.project.invoke(*args)
    finally:
        stage.project.env.pop("DEPLOY_LEDGER_URL", None)


def _host_releases(stage) -> list[list[str]]:
    return [sorted(p.name for p in (h.root / "srv/occ/releases").iterdir()) for h in stage.hosts]


def _ci_commits_c(stage) -> None:
    (stage.project.root / "examples/app/NOTE.txt").write_text("release c\n")
    stage.project.commit("release c")
    stage.collect_evidence()


# What CI does while the operator reads the promotion plan. Each returns what the hosts serve after.
def _same_ledger_promotes(stage, pg_cluster, a, b):
    _ci_commits_c(stage)
    r = stage.project.invoke("promote", "--to=staging", "--yes")
    assert r.returncode == 0, text(r)
    return stage.currents()


def _other_ledger_promotes(stage, pg_cluster, a, b):
    _ci_commits_c(stage)
    r = _on_other_ledger(stage, pg_cluster, "promote", "--to=staging", "--yes")
    assert r.returncode == 0, text(r)
    return stage.currents()


def _other_ledger_rolls_one_host_back(stage, pg_cluster, a, b):
    r = _on_other_ledger(stage, pg_cluster, "rollback", "--env=staging", "--yes", f"--to={a}",
                         f"--skip-host={stage.hosts[0].address}")
    assert r.returncode == 0, text(r)
    assert stage.currents() == [b, a]
    return stage.currents()


@pytest.mark.parametrize("meanwhile, flags", [
    (_same_ledger_promotes, ()),
    (_other_ledger_promotes, ()),
    (_other_ledger_rolls_one_host_back, ()),
    (_other_ledger_promotes, ("--no-rollback",)),
], ids=["same-ledger-promotes-c", "other-ledger-promotes-c", "other-ledger-rolls-last-host-back",
        "other-ledger-promotes-c-no-rollback"])
def test_confirmed_promotion_to_protected_env_whose_live_release_changed_meanwhile_is_refused(two, pg_cluster,
                                                                                             meanwhile, flags):
    stage, a, b = two
    _protect_staging(stage)
    (stage.project.root / "examples/app/NOTE.txt").write_text("release d\n")
    d_sha = stage.project.commit("release d")
    stage.collect_evidence()
    p, master = _spawn_on_pty(stage.project, "promote", "--to=staging", *flags)
    shown = _read_until(master, "[y/N]")
    assert f"live now: {b}" in shown and "hosts serve:" in shown and shown.count(f": {b}") >= 2, shown
    serving = meanwhile(stage, pg_cluster, a, b)
    assert serving != [b, b]
    stage.collect_evidence(d_sha)   # D's gate would pass: only the changed live state may stop it
    ledger_live = live(stage)
    migrations, dirs = applied(stage.db_url), _host_releases(stage)
    runs_before = len(stage.project.ledger().runs("staging", flow="promote", limit=100))
    os.write(master, b"y\n")
    out = _drain(p, master)
    assert p.returncode == 7, out
    assert "changed after the plan was shown" in out and "Nothing was changed" in out, out
    assert "Traceback" not in out, out
    assert stage.currents() == serving and _host_releases(stage) == dirs
    assert live(stage) == ledger_live and applied(stage.db_url) == migrations
    assert stage.project.ledger().lock("staging") is None
    assert not any(host_locked(h) for h in stage.hosts)
    runs = stage.project.ledger().runs("staging", flow="promote", limit=100)
    assert all(r.sha != d_sha or r.status != "succeeded" for r in runs) and len(runs) <= runs_before + 1


def test_promotion_with_yes_to_protected_env_runs_whatever_the_hosts_served_before(two, pg_cluster):
    stage, a, b = two
    _protect_staging(stage)
    _ci_commits_c(stage)   # the hosts serve C (another ledger's run), this ledger still says B
    r = _on_other_ledger(stage, pg_cluster, "promote", "--to=staging", "--yes")
    assert r.returncode == 0, text(r)
    c = stage.currents()[0]
    assert c not in (a, b) and live(stage) == b
    (stage.project.root / "examples/app/NOTE.txt").write_text("release d\n")
    stage.project.commit("release d")
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging", "--yes")
    assert r.returncode == 0, text(r)
    assert f"live now: {b}" in r.stdout and f": {c}" in r.stdout, r.stdout
    d = live(stage)
    assert d not in (a, b, c) and stage.currents() == [d, d] and stage.versions() == [d, d]
    assert stage.project.ledger().lock("staging") is None and not any(host_locked(h) for h in stage.hosts)
