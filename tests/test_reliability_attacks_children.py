"""Issue 13 attacked from outside, through the CLI against real parts: what child
processes get (case 3: secrets in the build, the artifact, the hosts, the Shopify CLI and
the hooks), waits that must end (case 7: a host frozen mid-upload, a timed-out child's
grandchildren) and the modes of files that hold secrets or data (case 8)."""

from __future__ import annotations

import json
import os
import stat
import textwrap
import uuid

import pytest

from deploy import proc
from deploy.testing import leaks as scan
from deploy.testing.leaks import secret_values

# The deployer's secrets that no build, CLI or hook may see unless the settings name them.
SECRET_NAMES = ("DATABASE_URL", "DIRECT_URL", "SUPABASE_SERVICE_ROLE_KEY", "SESSION_SECRET", "SHOPIFY_API_SECRET",
                "DECISION_LOG_DATABASE_URL", "DEPLOY_SSH_KEY")


def _set(stage, section: str, **values) -> None:
    """Add keys to a [section] of env/staging.toml and commit (shared settings are committed)."""
    path = stage.project.root / "env" / "staging.toml"
    text = path.read_text()
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    head = f"[{section}]\n"
    text = text.replace(head, head + lines, 1) if head in text else text + f"\n{head}{lines}"
    path.write_text(text)
    stage.project.commit(f"staging: {section} {', '.join(values)}")


def _promote(stage, **kw):
    stage.collect_evidence()
    return stage.project.invoke("promote", "--to=staging", **kw)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- case 3: what children get

@pytest.mark.sshd
@pytest.mark.postgres
def test_build_that_dumps_process_env_puts_no_secret_in_the_artifact_or_on_the_hosts(stage):
    scan.dump_env_in_build(stage.project)
    r = _promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr

    arts = scan.artifacts(stage.project.root)
    assert len(arts) == 1
    dumped = scan.build_dump(arts[0])
    assert dumped and dumped["GIT_SHA"] == stage.project.head and dumped["PATH"]   # the build dumped its env
    assert sorted(n for n in dumped if n in SECRET_NAMES or n.startswith("SHOPIFY_")) == []
    for h in stage.hosts:    # and the dump was released onto every host
        assert list((h.root / "srv/occ/current/").rglob(scan.BUILD_DUMP))

    secrets = secret_values(stage)
    assert scan.scan_artifacts(stage.project.root, secrets) == []
    assert scan.scan_hosts(stage, secrets) == []


@pytest.mark.sshd
@pytest.mark.postgres
@pytest.mark.parametrize("how", ["automation-token", "partners-token-fallback", "custom-token-var"])
def test_shopify_cli_gets_its_token_and_no_other_secret(stage, how):
    token = stage.shopify.token
    if how != "automation-token":
        stage.project.env.pop("SHOPIFY_APP_AUTOMATION_TOKEN")
    if how == "partners-token-fallback":
        stage.project.env["SHOPIFY_CLI_PARTNERS_TOKEN"] = token
    if how == "custom-token-var":
        _set(stage, "shopify", token_var="OCC_STAGING_SHOPIFY_TOKEN")
        stage.project.env["OCC_STAGING_SHOPIFY_TOKEN"] = token
    r = stage.project.invoke("shopify.versions", "--env=staging")
    assert r.returncode == 0, r.stdout + r.stderr

    envs = stage.shopify.environments()
    assert envs
    for env in envs:
        # the token under both names the CLI reads, no TTY, and the tools it needs
        assert env["SHOPIFY_APP_AUTOMATION_TOKEN"] == env["SHOPIFY_CLI_PARTNERS_TOKEN"] == "<token>"
        assert env["CI"] == "1" and env["PATH"] and env["HOME"]
        assert sorted(n for n in env if n in SECRET_NAMES or n == "OCC_STAGING_SHOPIFY_TOKEN") == []
    assert scan.scan_shopify_env(stage.shopify, secret_values(stage)) == []


@pytest.mark.sshd
@pytest.mark.postgres
def test_hooks_get_the_release_variables_and_only_the_names_hosts_hook_env_lists(stage):
    _set(stage, "hosts", before_switch="env > ../../shared/hook-env.txt", hook_env=["APP_BANNER"])
    r = _promote(stage, extra_env={"APP_BANNER": "blue-banner"})    # not a secret: not in project.env
    assert r.returncode == 0, r.stdout + r.stderr

    current = stage.currents()[0]
    for h in stage.hosts:
        seen = dict(ln.split("=", 1) for ln in (h.root / "srv/occ/shared/hook-env.txt").read_text().splitlines()
                    if "=" in ln)
        assert seen["RELEASE_ID"] == current and seen["APP_BANNER"] == "blue-banner"
        assert sorted(n for n in seen if n in SECRET_NAMES or n.startswith("SHOPIFY_")) == []
    assert scan.scan_hosts(stage, secret_values(stage)) == []


@pytest.mark.sshd
@pytest.mark.postgres
def test_hook_env_naming_a_secret_fails_before_anything_changes(stage):
    _set(stage, "hosts", hook_env=["SESSION_SECRET"])
    r = _promote(stage)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "hosts.hook_env names SESSION_SECRET, which holds a secret" in out and "Traceback" not in out
    assert stage.project.env["SESSION_SECRET"] not in out
    assert stage.currents() == [None, None]


# ---------------------------------------------------------------- case 7: waits that end

@pytest.mark.sshd
@pytest.mark.postgres
@pytest.mark.parametrize("bound, settings", [
    ("hosts.upload_stall_timeout", dict(upload_stall_timeout=2, upload_timeout=60)),
    ("hosts.upload_timeout", dict(upload_stall_timeout=60, upload_timeout=3)),
], ids=["stall", "overall"])
def test_upload_to_a_host_that_freezes_mid_upload_fails_within_the_bound(stage, bound, settings):
    r = _promote(stage)
    assert r.returncode == 0, r.stdout + r.stderr
    before = stage.currents()
    assert before[0] and before == before[::-1]

    # The whole artifact goes over SFTP (a delta up to STDIN_LIMIT rides on a command's stdin,
    # bounded by hosts.command_timeout like any command).
    _set(stage, "hosts", command_timeout=90, delta=False, **settings)
    frozen = stage.hosts[1]
    with stage.farm.frozen_uploads(frozen, after_bytes=512):
        # Unbounded, this would hang until the invoke timeout below raises.
        r = _promote(stage, timeout=150)
        froze = (frozen.root / "frozen-sshd.pid").exists()
    out = r.stdout + r.stderr
    assert froze, "the host was never frozen: no upload reached it"
    assert r.returncode != 0 and "Traceback" not in out
    assert f"to {frozen.address}" in out and bound in out
    # Nothing switched: both hosts on their release, serving it, no half release, no lock left.
    assert stage.currents() == before and stage.versions() == before
    for h in stage.hosts:
        assert sorted(p.name for p in (h.root / "srv/occ/releases").iterdir()) == [before[0]]
        assert not (h.root / "srv/occ/.deploy-lock").exists()
    # Once the host answers again, the same promotion goes through: nothing was left half done.
    r = stage.project.invoke("promote", "--to=staging")
    assert r.returncode == 0, r.stdout + r.stderr
    assert stage.currents()[0] != before[0] and len(set(stage.currents())) == 1


@pytest.mark.sshd
@pytest.mark.postgres
def test_timed_out_child_takes_its_grandchildren_with_it(stage, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    cli = tmp_path / "hanging-shopify"
    # A CLI whose own child would outlive it: a background job, then wait.
    cli.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        sleep 300 &
        echo $! > {pidfile}
        wait
    """))
    cli.chmod(0o755)
    _set(stage, "shopify", cli=str(cli), timeout=2)
    r = stage.project.invoke("shopify.versions", "--env=staging", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "timed out after 2" in out and "Traceback" not in out
    grandchild = int(pidfile.read_text())
    alive = proc.pid_alive(grandchild)
    if alive:
        os.kill(grandchild, 9)
    assert not alive, "the timed-out command's child outlived it"


# ---------------------------------------------------------------- case 8: file modes

@pytest.mark.postgres
def test_provision_makes_an_existing_0644_local_env_file_0600(project, pg_cluster):
    secret_file = project.root / "env" / "staging.local.env"
    secret_file.write_text("OTHER_SETTING=kept\n")
    secret_file.chmod(0o644)
    name = f"occ_modes_{uuid.uuid4().hex[:8]}"
    r = project.invoke("db.provision", "--env=staging", "--admin-url-var=PG_ADMIN_URL", f"--db-name={name}",
                       f"--role={name}", extra_env={"PG_ADMIN_URL": pg_cluster.url})
    assert r.returncode == 0, r.stdout + r.stderr
    assert _mode(secret_file) == 0o600
    text = secret_file.read_text()
    assert "OTHER_SETTING=kept" in text and "DATABASE_URL='postgresql://" in text


@pytest.mark.sshd
@pytest.mark.postgres
def test_backups_and_their_folders_are_private_even_when_they_existed(stage):
    root = stage.project.root / ".deploy" / "backups"
    old = root / "staging" / "older-backup.dump"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"data an older version left readable")
    for p, m in ((root, 0o755), (root / "staging", 0o755), (old, 0o644)):
        p.chmod(m)
    r = stage.project.invoke("db.backup", "--env=staging")
    assert r.returncode == 0, r.stdout + r.stderr

    assert _mode(root) == 0o700 and _mode(root / "staging") == 0o700
    files = sorted((root / "staging").iterdir())
    assert any(p.suffix == ".dump" and p != old for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_ledger_and_deploy_folder_are_private_on_every_open(project):
    r = project.invoke("status")
    assert r.returncode == 0, r.stdout + r.stderr
    deploy, ledger = project.root / ".deploy", project.root / ".deploy" / "ledger.db"
    assert _mode(deploy) == 0o700 and _mode(ledger) == 0o600
    deploy.chmod(0o755)         # as an older version left them
    ledger.chmod(0o644)
    r = project.invoke("status")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _mode(deploy) == 0o700
    for p in deploy.glob("ledger.db*"):
        assert _mode(p) == 0o600, p.name
