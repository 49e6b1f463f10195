"""Zero downtime for the tree target through the real CLI: `invoke hosts.setup` puts nginx in front of
the example app on two sshd hosts, `invoke promote --to=staging` releases beside the live app and
switches each host's proxy, `invoke rollback` goes back the same way; a GET every 10 ms through a
host's proxy during the second promotion and the rollback is always answered. --dry-run shows the
proxy's commands."""

from __future__ import annotations

import json

import pytest

from deploy.testing.ports import free_port
from deploy.testing.stage import stage_toml
from deploy.testing.traffic import Traffic

pytestmark = [pytest.mark.slow, pytest.mark.sshd, pytest.mark.serial]


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_promote_and_rollback_behind_the_proxy_answer_every_request(stage, kind):
    p = stage.project
    listen = [free_port() for _ in stage.hosts]
    admin = [free_port() for _ in stage.hosts]
    text = stage_toml(stage.farm, stage.hosts, stage.app_ports) + f'''
[proxy]
kind = "{kind}"
listen_ports = {json.dumps(listen)}
admin_ports = {json.dumps(admin)}
spare_port_offset = 1
drain_seconds = 0.3
'''
    p.write_env("staging", text)
    p.commit("staging behind a proxy")
    try:
        r = p.invoke("hosts.setup", "--env=staging", "--yes")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("started") == 2, r.stdout
        stage.collect_evidence()
        r = p.invoke("promote", "--to=staging", "--dry-run")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "--slot" in r.stdout and ("nginx -p" in r.stdout if kind == "nginx" else "occ_upstream" in r.stdout)
        r = p.invoke("promote", "--to=staging", "--yes", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        first = p.ledger().runs("staging")[0].release_id

        (p.root / "examples/app/README.md").write_text("a change\n")
        p.commit("a change")
        stage.collect_evidence()
        with Traffic("127.0.0.1", listen[0], "/healthz") as tr:
            r = p.invoke("promote", "--to=staging", "--yes", timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            second = p.ledger().runs("staging")[0].release_id
            assert second != first
            r = p.invoke("rollback", "--env=staging", "--yes", timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
        assert tr.failures == [] and tr.sent > 100, tr.summary()
        assert stage.currents() == [first, first]
        r = p.invoke("hosts.setup", "--env=staging", "--yes")
        assert r.returncode == 0 and r.stdout.count("running") == 2, r.stdout
    finally:
        p.invoke("hosts.setup", "--env=staging", "--remove", "--yes")
