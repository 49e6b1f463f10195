"""Security of the remote side, through the real command line against real sshd hosts:
release ids are validated before any remote shell sees them, changed host keys are
refused, released files keep the modes intended, and a planted lock cannot make the
toolkit delete anything outside `deploy_to`.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

HOSTILE_IDS = ["../../x", "$(id)", "a;touch /tmp/pwned-occ", "`id`", "-rf", "a\nb"]


def deployed(stage):
    stage.collect_evidence()
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    return stage.project.ledger().runs("staging")[0]


def tree(stage):
    """Every path under both hosts' roots: what a command may not have changed."""
    return sorted(str(p) for h in stage.hosts for p in h.root.rglob("*") if "shared/app" not in str(p))


@pytest.mark.parametrize("task", ["rollback", "hosts.rollback"])
@pytest.mark.parametrize("rid", HOSTILE_IDS, ids=[repr(r) for r in HOSTILE_IDS])
def test_hostile_release_id_is_refused_before_any_host_is_touched(stage, task, rid):
    # Hosts that were never released to: the refusal must come before any connection,
    # not from a missing previous release.
    before = tree(stage)
    args = [task, "--env=staging", f"--to={rid}"] + (["--yes"] if task == "rollback" else [])
    r = stage.project.invoke(*args)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in text, text
    assert "not allowed" in text or "Release id" in text, text
    assert tree(stage) == before
    assert not os.path.exists("/tmp/pwned-occ")


def test_changed_host_key_is_refused(stage, tmp_path):
    h = stage.hosts[0]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    key = (tmp_path / "impostor.pub").read_text().split()
    known = tmp_path / "known_hosts"
    lines = [ln for ln in stage.farm.known_hosts.read_text().splitlines() if not ln.startswith(f"[{h.host}]:{h.port} ")]
    known.write_text("\n".join(lines + [f"[{h.host}]:{h.port} {key[0]} {key[1]}"]) + "\n")
    cfg = stage.project.root / "env/staging.toml"
    cfg.write_text(cfg.read_text().replace(f'known_hosts = "{stage.farm.known_hosts}"', f'known_hosts = "{known}"'))
    stage.project.commit("known_hosts with a changed key for the first host")
    r = stage.project.invoke("hosts.check", "--env=staging")
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in text, text
    assert f"{h.host}:{h.port}" in text and "does NOT match" in text, text


def test_released_files_have_the_intended_modes(stage):
    a = deployed(stage)
    for h in stage.hosts:
        rel = h.root / "srv/occ/releases" / a.release_id
        paths = [rel, *rel.rglob("*")]
        assert len(paths) > 5
        for p in paths:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue  # shared files are links into shared/
            assert not st.st_mode & 0o022, f"{p} is group/world-writable ({oct(st.st_mode)})"
            assert st.st_uid == h.root.stat().st_uid, f"{p} is not owned by the login user"
        supervisor = h.root / "srv/occ/bin/app"   # the toolkit's supervisor, installed by the release
        assert os.access(supervisor, os.X_OK) and stat.S_IMODE(os.stat(supervisor).st_mode) == 0o755
        assert not os.lstat(rel / "package.json").st_mode & 0o111   # data files stay non-executable
        assert (rel / ".env").is_symlink() and os.readlink(rel / ".env") == str(h.root / "srv/occ/shared/.env")


@pytest.mark.parametrize("plant", ["symlinked-lock-dir", "hostile-details"])
def test_planted_lock_cannot_make_the_toolkit_delete_outside_deploy_to(stage, plant):
    h = stage.hosts[0]
    outside = h.root / "precious"
    h.write("precious/data.txt", "keep me\n")
    h.write("precious/.deploy-lock/details", "holder=x\n")  # a lock-looking dir outside deploy_to
    lock = h.root / "srv/occ/.deploy-lock"
    h.write("srv/occ/shared/.env", (h.root / "srv/occ/shared/.env").read_text())
    if plant == "symlinked-lock-dir":
        os.symlink(outside, lock)
    else:
        h.write("srv/occ/.deploy-lock/details",
                f"holder=$(rm -rf {outside})\nrun_id=../../../precious\nrelease=`rm -rf {outside}`\n"
                "acquired_at=2000-01-01T00:00:00+00:00\n")
    st = stage.project.invoke("lock.status", "--env=staging")
    assert "Traceback" not in st.stdout + st.stderr, st.stderr
    r = stage.project.invoke("lock.release", "--env=staging", "--force")
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert (outside / "data.txt").read_text() == "keep me\n"
    assert (outside / ".deploy-lock/details").exists()
    stage.collect_evidence()
    p = stage.project.invoke("promote", "--to=staging")
    if plant == "symlinked-lock-dir":
        # Its details carry no time, so it is never "stale": break refuses, and so does a
        # promotion, naming the host; the link is not followed into deleting anything.
        assert r.returncode == 4 and f"{h.host}:{h.port}" in r.stderr, r.stdout + r.stderr
        assert os.path.islink(lock) and (outside / "data.txt").read_text() == "keep me\n"
        assert p.returncode == 4 and f"{h.host}:{h.port}" in p.stderr, p.stdout + p.stderr
        assert os.path.islink(lock)
    else:
        assert r.returncode == 0 and not os.path.lexists(lock), r.stdout + r.stderr
        assert p.returncode == 0, p.stdout + p.stderr
    assert (outside / "data.txt").read_text() == "keep me\n"
    assert (outside / ".deploy-lock/details").exists()
