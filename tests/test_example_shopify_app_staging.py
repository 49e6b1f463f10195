"""The React Router Shopify example promoted to staging: two real sshd hosts running the
built app (production node_modules in the artifact, the toolkit supervising it), Postgres
from the fixture migrated with its Prisma migrations, the Shopify stand-in deploying
shopify.app.staging.toml; then rolled back."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from deploy.testing.shopify_app import http_get
from deploy.testing.stage import Stage, free_port, secrets_env

pytestmark = pytest.mark.slow

ENV = Path(__file__).parent / "fixtures" / "shopify_app_env"


def served_release(port: int) -> str:
    status, body = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200, body[-500:]
    return re.search(r'data-testid="release">([^<]+)</code>', body).group(1)


@pytest.fixture
def shop_stage(project, sshd_farm, sshd_hosts, pg_url, shopify_cli):
    assert (project.root / "examples/shopify-app/package.json").is_file()   # make_project copies the example
    hosts = sshd_hosts(2)
    ports = [free_port() for _ in hosts]
    for h in hosts:
        h.write("srv/occ/shared/.env", f"DATABASE_URL={pg_url}\nHOST=127.0.0.1\n")
    text = (ENV / "staging.toml").read_text()
    for k, v in {"hosts": ", ".join(f'"{h.address}"' for h in hosts), "user": hosts[0].user,
                 "key_file": str(sshd_farm.key_file), "known_hosts": str(sshd_farm.known_hosts),
                 "deploy_to": str(sshd_farm.deploy_to()), "ports": ", ".join(map(str, ports))}.items():
        text = text.replace("{" + k + "}", v)
    project.write_env("staging", text)
    project.commit("the shopify app on staging")
    project.env.update(secrets_env(project, "staging", pg_url))
    project.env["SHOPIFY_APP_AUTOMATION_TOKEN"] = shopify_cli.token
    project.env["PATH"] = f"{shopify_cli.bin_dir}:{__import__('os').environ['PATH']}"
    return Stage(project, hosts, ports, pg_url, shopify_cli, sshd_farm)


def test_the_shopify_app_goes_to_two_hosts_with_postgres_and_rolls_back(shop_stage):
    project, ports, db, shopify = shop_stage.project, shop_stage.app_ports, shop_stage.db_url, shop_stage.shopify
    shop_stage.collect_evidence()
    first = project.invoke("promote", "--to=staging", timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    run1 = project.ledger().runs("staging")[0]
    assert [served_release(p) for p in ports] == [run1.release_id] * 2 == shop_stage.currents()
    assert shopify.active() == run1.release_id
    deploy = [a for a in shopify.argvs() if a[:2] == ["app", "deploy"]][-1]
    assert deploy[deploy.index("--config") + 1] == "staging"                  # shopify.app.staging.toml
    assert deploy[deploy.index("--path") + 1].endswith("examples/shopify-app")
    with psycopg.connect(db) as c:
        assert [r[0] for r in c.execute("SELECT migration_name FROM _prisma_migrations")] == [
            "20250601120000_create_session_table"]
        c.execute("""INSERT INTO "Session" ("id", "shop", "state", "accessToken") VALUES ('s1', 'a.myshopify.com', 's', 't')""")
    for p in ports:                                          # each host's app reads the shared database
        status, body = http_get(f"http://127.0.0.1:{p}/app?shop=a.myshopify.com")
        assert status == 200 and "<td>s1</td>" in body

    readme = project.root / "examples/shopify-app/README.md"
    readme.write_text(readme.read_text() + "\nsecond\n")
    project.commit("second")
    shop_stage.collect_evidence()
    second = project.invoke("promote", "--to=staging", timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    run2 = project.ledger().runs("staging")[0]
    assert [served_release(p) for p in ports] == [run2.release_id] * 2

    back = project.invoke("rollback", "--env=staging", timeout=600)
    assert back.returncode == 0, back.stdout + back.stderr
    assert [served_release(p) for p in ports] == [run1.release_id] * 2 == shop_stage.currents()
    assert shopify.active() == run1.release_id
