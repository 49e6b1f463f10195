"""No secret is ever written: a whole staging promotion, a failing one and a rollback run
with known secret values, then every byte they wrote is scanned."""

from deploy.testing import leaks as scan
from deploy.testing.leaks import secret_values


def written_files(stage, summary):
    root = stage.project.root
    files = [root / ".deploy/ledger.db", root / "feedback/deployment.md", summary]
    files += [p for p in (root / ".deploy").rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".db-wal")]
    return [p for p in files if p.exists()]


def test_no_secret_in_any_output_of_promote_failure_and_rollback(stage, tmp_path):
    summary = tmp_path / "summary.md"
    outputs = []
    env = {"GITHUB_STEP_SUMMARY": str(summary), "SHOPIFY_API_SECRET": "shpss_a1b2"}  # short secrets too
    stage.project.env.update(env)
    scan.dump_env_in_build(stage.project)   # a build script that writes process.env into build/
    stage.collect_evidence()
    outputs.append(stage.project.invoke("promote", "--to=staging", extra_env=env))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    # a failing promotion: the Shopify CLI fails and prints the token it was given
    (stage.project.root / "examples/app/README.md").write_text("v2\n")
    stage.project.commit("v2")
    stage.collect_evidence()
    stage.shopify.fail_next("deploy", "leak_token")
    outputs.append(stage.project.invoke("promote", "--to=staging", extra_env=env))
    assert outputs[-1].returncode != 0
    outputs.append(stage.project.invoke("promote", "--to=staging", extra_env=env))
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    outputs.append(stage.project.invoke("rollback", "--env=staging", "--yes", extra_env=env))
    outputs.append(stage.project.invoke("env.check", "--env=staging", extra_env=env))
    outputs.append(stage.project.invoke("status", "--json", extra_env=env))
    outputs.append(stage.project.invoke("db.status", "--env=staging", extra_env=env))
    assert summary.exists() and "promote staging" in summary.read_text()

    secrets = secret_values(stage)
    assert "shpss_a1b2" in secrets
    leaks = []
    for i, o in enumerate(outputs):
        for name, text in (("stdout", o.stdout), ("stderr", o.stderr)):
            leaks += [f"command {i} {name}: {s[:4]}…" for s in secrets if s in text]
    for f in written_files(stage, summary):
        data = f.read_bytes()
        leaks += [f"{f.name}: {s[:4]}…" for s in secrets if s.encode() in data]
    # the artifacts' bytes (unpacked), every file on the hosts, what the Shopify CLI was given
    built = scan.artifacts(stage.project.root)
    assert built and all(scan.build_dump(a) for a in built), "the build dumped no environment"
    leaks += scan.scan_artifacts(stage.project.root, secrets)
    leaks += scan.scan_hosts(stage, secrets)
    assert stage.shopify.environments() and all(e.get("PATH") for e in stage.shopify.environments())
    leaks += scan.scan_shopify_env(stage.shopify, secrets)
    assert leaks == []
    # and the redaction is visible where a secret would have been
    assert "***" in outputs[1].stdout + outputs[1].stderr
