"""A staging-like environment for end-to-end tests: the throwaway project, Postgres from
the fixture cluster, two sshd hosts that run the example app, the Shopify stand-in, and
evidence for the project's HEAD collected through the real CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy import envs
from deploy.testing.ports import free_port
from deploy.testing.project import Project
from deploy.testing.reports import write_passing


@dataclass
class Stage:
    project: Project
    hosts: list
    app_ports: list[int]
    db_url: str
    shopify: object
    farm: object

    def host_dirs(self) -> list[Path]:
        return [h.root / "srv/occ" for h in self.hosts]

    def currents(self) -> list[str | None]:
        out = []
        for d in self.host_dirs():
            cur = d / "current"
            out.append(Path(cur.readlink()).name if cur.is_symlink() else None)
        return out

    def versions(self) -> list[str]:
        import json
        import urllib.request

        out = []
        for p in self.app_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/version", timeout=5) as r:
                out.append(json.loads(r.read())["release"])
        return out

    def collect_evidence(self, sha: str | None = None):
        from datetime import datetime, timedelta, timezone

        folder = self.project.root / "evidence"
        folder.mkdir(exist_ok=True)
        files = write_passing(folder, datetime.now(timezone.utc) - timedelta(minutes=10))
        args = ["evidence.collect", f"--sha={sha or self.project.head}", "--env=staging"]
        for f in files:
            args.append(f"--files={f}")
        r = self.project.invoke(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        return r


def stage_toml(farm, hosts, ports, name="staging", extra="") -> str:
    """Settings for an environment on the test hosts. The app is started by the toolkit's
    supervisor (no restart hook), each host's app on its own loopback port (`app_ports`),
    health on http://127.0.0.1:<port>/healthz (the hosts are all 127.0.0.1)."""
    addrs = ", ".join(f'"{h.address}"' for h in hosts)
    app_ports = ", ".join(str(p) for p in ports)
    return f'''
[environment]
kind = "remote"
description = "test {name}: two sshd hosts, Postgres fixture, Shopify stand-in"
app_dir = "examples/app"
{extra}

[app]
health_path = "/healthz"
ready_timeout = 15.0

[hosts]
hosts = [{addrs}]
user = "{hosts[0].user}"
key_file = "{farm.key_file}"
known_hosts = "{farm.known_hosts}"
deploy_to = "{farm.deploy_to()}"
app_ports = [{app_ports}]
shared_files = [".env"]

[database]
provider = "postgresql"
migrations_dir = "prisma/postgres/migrations"
backup_dir = ".deploy/backups"

[shopify]
config = "staging"

[gate]
required = ["vitest", "playwright", "lighthouse"]
evidence_dir = "evidence"
max_age_hours = 24

[smoke]
checks = [{{ url = "/healthz" }}, {{ url = "/version", json_field = "release" }}]   # the example names its release
retries = 2
backoff = 0.2

[watch]
window_seconds = 1
interval_seconds = 0.2
min_samples = 2
'''


def secrets_env(project: Project, env: str, db_url: str) -> dict:
    """A value for every secret the matrix requires in `env` (fake but well-formed)."""
    m = envs.load_matrix(project.root)
    out = {}
    for v in m.variables:
        rule = v.on(env)
        if rule.secret and rule.required:
            kind = getattr(v.type, "kind", "string")
            out[v.name] = "postgresql://x:y@127.0.0.1:1/x" if kind == "url" else f"test-secret-{v.name.lower()}-x9"
    out["DATABASE_URL"] = db_url
    out["DIRECT_URL"] = db_url   # Prisma's directUrl: the fixture has no pooler, so the same server session URL
    return out


@pytest.fixture
def stage(project, sshd_farm, sshd_hosts, pg_url, shopify_cli):
    hosts = sshd_hosts(2)
    ports = [free_port() for _ in hosts]
    for h in hosts:
        h.write("srv/occ/shared/.env", "HOST=127.0.0.1\n")   # the port comes from the settings
    project.write_env("staging", stage_toml(sshd_farm, hosts, ports))
    (project.root / "examples/app/shopify.app.staging.toml").exists() or None
    project.commit("staging on test hosts")
    project.env.update(secrets_env(project, "staging", pg_url))
    project.env["SHOPIFY_APP_AUTOMATION_TOKEN"] = shopify_cli.token
    project.env["PATH"] = f"{shopify_cli.bin_dir}:{__import__('os').environ['PATH']}"
    return Stage(project, hosts, ports, pg_url, shopify_cli, sshd_farm)


@dataclass
class Production:
    stage: Stage
    app_ports: list[int]
    db_url: str

    def versions(self) -> list[str]:
        import json
        import urllib.request

        out = []
        for p in self.app_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/version", timeout=5) as r:
                out.append(json.loads(r.read())["release"])
        return out


@pytest.fixture
def production(stage, pg_cluster):
    """A production environment beside `stage`: same hosts, its own deploy path, ports and
    database; staging run and approvals of product and manager required."""
    return add_production(stage, pg_cluster.create_database())


def add_production(stage, url: str) -> Production:
    """The `production` fixture's environment added to `stage`, with `url` its database."""
    ports = [free_port() for _ in stage.hosts]
    for h in stage.hosts:
        h.write("srv/occ-prod/shared/.env", "HOST=127.0.0.1\n")
    text = stage_toml(stage.farm, stage.hosts, ports, name="production",
                      extra='protected = true\nrequires_staging_run = true\nstaging_env = "staging"')
    text = text.replace(f'deploy_to = "{stage.farm.deploy_to()}"', f'deploy_to = "{stage.farm.deploy_to("srv/occ-prod")}"')
    text = text.replace('config = "staging"', 'config = "production"')
    text += '\n[approvals]\nrequired_roles = ["product", "manager"]\n'
    stage.project.write_env("production", text)
    stage.project.commit("production on test hosts")
    stage.project.env["PRODUCTION_DATABASE_URL"] = url
    return Production(stage, ports, url)
