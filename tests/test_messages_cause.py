"""Error blocks name the cause, tested with the real tools' own failures (issue 22 #2):
npm ci on a lockfile out of sync, a React Router/Vite build with a broken import, a broken
Prisma migration on the Postgres fixture (the hint names the repository's file and what
works after the undo), a real ssh refusal, and a host whose switch back failed once."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import build as b
from deploy import hosts, proc
from deploy.config import AppSection
from deploy.errors import BuildFailed, HostFailed
from deploy.testing.app import SHA_A
from deploy.testing.shopify_app import copy_shopify_app, shopify_app_installed  # noqa: F401 (fixture)
from deploy.testing.sshd import make_artifact

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def _npm_app(folder: Path, deps: dict[str, str]) -> Path:
    """An app whose lockfile was written for `deps` (no network needed: npm ci refuses an
    out-of-sync lockfile before it fetches anything)."""
    folder.mkdir(parents=True)
    pkg = {"name": "cause-app", "version": "1.0.0", "private": True, "scripts": {"build": "node -e 0"},
           "dependencies": deps}
    (folder / "package.json").write_text(json.dumps(pkg))
    r = subprocess.run(["npm", "install", "--package-lock-only", "--offline", "--no-audit", "--no-fund"], cwd=folder,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return folder


# ---------------------------------------------------------------- npm: the cause above npm's usage text

@pytest.mark.parametrize("added", [{"left-pad": "1.3.0"}, {"is-number": "7.0.0", "ms": "2.1.3"}],
                         ids=["one-missing", "two-missing"])
def test_npm_ci_with_a_lockfile_out_of_sync_shows_the_missing_package_not_only_the_usage(tmp_path, added):
    app = _npm_app(tmp_path / "app", {})
    pkg = json.loads((app / "package.json").read_text())
    pkg["dependencies"] = added
    (app / "package.json").write_text(json.dumps(pkg))
    with pytest.raises(BuildFailed) as e:
        b.build(app, SHA_A, tmp_path / "artifacts", contract=AppSection(deps_cache=False), now=T0)
    text = str(e.value)
    for name, version in added.items():
        assert f"Missing: {name}@{version} from lock file" in text, text
    assert "in sync" in text
    # still bounded: the usage text is not repeated whole
    assert text.count("npm error") < 30, text


# ---------------------------------------------------------------- vite/rollup: the unresolved import

@pytest.mark.parametrize("spec", ["../../modules/billing/plan.server", "~/lib/missing-helper.js"],
                         ids=["relative-path", "alias-path"])
def test_build_with_a_broken_import_names_the_unresolved_module_above_rollups_file_list(
        tmp_path, shopify_app_installed, spec):  # noqa: F811
    app = copy_shopify_app(tmp_path / "app", with_node_modules=shopify_app_installed)
    route = app / "app" / "routes" / "app.jsx"
    route.write_text(f'import {{ nothing }} from "{spec}";\nconsole.log(nothing);\n' + route.read_text())
    with pytest.raises(BuildFailed) as e:
        b.build(app, SHA_A, tmp_path / "artifacts", contract=AppSection(deps_cache=False), now=T0)
    text = str(e.value)
    assert f'Could not resolve "{spec}"' in text or f'resolve import "{spec}"' in text, text
    assert "app/routes/app.jsx" in text


# ---------------------------------------------------------------- the picker on real tools' output

def test_ssh_refusals_are_picked_from_a_verbose_real_ssh_run(sshd_hosts, sshd_farm, tmp_path):
    """A real `ssh -v` that is refused (a key the host does not know; a host key not in
    known_hosts): the refusal is picked out of the debug lines."""
    (h,) = sshd_hosts(1)
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    host, port = h.address.rsplit(":", 1) if ":" in h.address else (h.address, "22")
    base = ["ssh", "-v", "-p", port, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            f"{h.user}@{host}", "true"]
    cases = [
        (["-i", str(stranger), "-o", f"UserKnownHostsFile={sshd_farm.known_hosts}", "-o", "IdentitiesOnly=yes"],
         "Permission denied ("),
        (["-i", str(sshd_farm.key_file), "-o", f"UserKnownHostsFile={tmp_path / 'empty_known'}",
          "-o", "StrictHostKeyChecking=yes"], "Host key verification failed"),
    ]
    for opts, needle in cases:
        r = proc.run([*base[:1], *opts, *base[1:]], timeout=30)
        assert not r.ok
        assert any(needle in line for line in proc.cause_lines(r.stdout + r.stderr)), r.stderr
        text = r.explain(3)
        assert needle in text and text.count("debug1") <= 3, text


@pytest.mark.parametrize("tool, output, needle", [
    ("psql", "psql:/tmp/x.sql:3: ERROR:  relation \"NoSuchTable\" does not exist\nLINE 1: ALTER TABLE \"NoSuchTable\"\n"
             + "".join(f"note {i}\n" for i in range(30)), 'ERROR:  relation "NoSuchTable" does not exist'),
    ("prisma", "Error: P3018\n\nA migration failed to apply.\n\nMigration name: 20990101_broken\n"
               + "".join(f"  at frame {i}\n" for i in range(30)), "Error: P3018"),
    ("tsc", "app/a.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.\n"
            + "".join(f"Found in {i}\n" for i in range(30)), "error TS2322"),
], ids=["psql-error", "prisma-code", "tsc-error"])
def test_cause_lines_are_picked_per_tool(tool, output, needle):
    text = proc.explain("", output, 5)
    assert needle in text and text.startswith("cause"), text


# ---------------------------------------------------------------- a broken migration on real Postgres

MIGRATIONS = "examples/app/prisma/postgres/migrations"


@pytest.mark.parametrize("first", [True, False], ids=["first-promotion-emptied", "later-promotion-restored"])
def test_failed_migration_hint_names_the_repository_file_and_a_command_that_works_after_the_undo(stage, first):
    project = stage.project
    if not first:
        stage.collect_evidence()
        assert project.invoke("promote", "--to=staging").returncode == 0
    name = "20990101000007_broken_totals" if first else "20990101000008_shop_broken"
    d = project.root / MIGRATIONS / name
    d.mkdir(parents=True)
    (d / "migration.sql").write_text('ALTER TABLE "NoSuchTable" ADD COLUMN x int;\n')
    project.commit("a broken migration")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    text = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in text, text
    assert "undone" in text
    hint = text.split("->", 1)[-1]
    assert f"{MIGRATIONS}/{name}/migration.sql" in hint, text
    assert ".deploy/src" not in hint, text
    assert "--rolled-back" not in hint, text
    # what the hint says works: status lists the migration as pending, and resolving it is not needed
    st = project.invoke("db.status", "--env=staging")
    assert name in st.stdout and st.returncode in (0, 1), st.stdout + st.stderr
    (d / "migration.sql").write_text("CREATE TABLE cause_fixed (id int);\n")
    project.commit("fix the migration")
    stage.collect_evidence()
    r = project.invoke("promote", "--to=staging")
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- a host whose switch back failed once

R1, R2 = "20240501120001-abc1231", "20240501120002-abc1232"


def test_host_switch_back_that_failed_once_says_the_undo_retries_in_plain_words(sshd_hosts, sshd_farm, tmp_path):
    (h,) = sshd_hosts(1)
    from deploy.testing.stage import free_port

    port = free_port()
    h.write("srv/occ/shared/.env", f"PORT={port}\n")
    once = h.root / "failed-once"
    # R2 never starts; the first start of R1 after it fails too (then R1 starts again).
    restart = (f'if [ "$RELEASE_ID" = {R2} ]; then echo "R2 boot error" >&2; exit 1; fi; '
               f'if [ -e {h.root}/r2-tried ] && [ ! -e {once} ]; then touch {once}; exit 1; fi; bin/restart')
    section = sshd_farm.hosts_section([h], restart=restart, health_timeout=5.0,
                                      health_urls=(f"http://127.0.0.1:{port}/RELEASE",))
    arts = tmp_path / "artifacts"
    hosts.release(section, make_artifact(arts, R1), run_id="run-1", now=T0)
    h.write("r2-tried", "")
    with pytest.raises(HostFailed) as e:
        hosts.release(section, make_artifact(arts, R2), run_id="run-2", now=T0)
    text = str(e.value)
    assert "undo_release" not in text and "run id" not in text, text
    assert "tries again" in text, text
    (r,) = hosts.undo_release(section, R2, run_id="run-2")
    assert r.ok and r.release == R1
