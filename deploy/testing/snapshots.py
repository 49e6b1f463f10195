"""Prepared stages, made once per test module and put back in place before each test.

Many end-to-end tests start from the same state: staging with one or two releases
promoted through the real CLI. Making that state costs a few promotions per test; the state
itself is files (the project with its git history and ledger, each host's disk), one
Postgres database and the Shopify stand-in's state, plus the app each host runs.

`stage_snapshot(prepare)` runs `prepare(stage)` once per module on a stage of its own (the
same parts as the `stage` fixture), saves that state, and before every later test that asks
for the same `prepare` puts it back *at the same paths*: the hosts' disks are wiped and
copied back (`cp -a`: owners, modes, times and hard links kept, so a delta release still
shares its base's inodes), the project folder likewise, the database re-made from a
template copy (`CREATE DATABASE ... TEMPLATE`), the stand-in's state copied back, and each
host's app started again by the toolkit's own supervisor on its port (then its health
answers). A copy gets new inode numbers and change times, so each host's verified-files
index (`.verified`) is rewritten for the copies: a file the index vouched for before is
vouched for again, one it did not stays unvouched.

The first test of a module gets the state as `prepare` left it; the value `prepare`
returned is handed to every test as it was. Every database of the cluster that the project's
environment names after `prepare` (the stage's, a shared ledger's from `new_database`, a
production one) is saved and put back the same way. A host the last test dropped is brought back
(same port and key); one that had to be replaced makes the state again from scratch. Tests that ask for it must not
also ask for `stage` or `project` (those are other, fresh ones).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from deploy import config
from deploy.hosts._app import http_health
from deploy.startup import start_argv
from deploy.testing.ports import free_port
from deploy.testing.project import make_project, stop_local_apps
from deploy.testing.shopify import ShopifyStandIn, install_stand_in
from deploy.testing.sshd import _replace
from deploy.testing.stage import Stage, secrets_env, stage_toml

# The environments whose apps a snapshot restarts, when the project has them.
ENVS = ("staging", "production")


def _copy(src: Path, dst: Path) -> None:
    """`cp -a src/. dst/`: owners, modes, times, symlinks and hard links within the tree kept."""
    dst.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True, capture_output=True)


def _stat(root: Path) -> dict[str, str]:
    """path -> `dev:ino size mtime ctime` (the fields and format of the hosts' index)."""
    p = subprocess.run(["find", str(root), "-type", "f", "-printf", "%D:%i %s %T@ %C@ %p\n"],
                       check=True, capture_output=True, text=True)
    out = {}
    for line in p.stdout.splitlines():
        a, b, c, d, path = line.split(" ", 4)
        out[path] = f"{a} {b} {c} {d}"
    return out


@dataclass
class _App:
    deploy_dir: Path      # <host root>/<deploy_to>
    port_var: str
    port: int
    argv: list[str]
    health_url: str


@dataclass
class _Saved:
    stage: Stage
    value: Any
    dir: Path
    db_names: list[str]     # every database of the cluster the project's environment names
    env: dict
    ports: list[int]
    shopify: ShopifyStandIn
    apps: dict[int, list[_App]] = field(default_factory=dict)      # host index -> its apps
    inodes: dict[int, dict[str, str]] = field(default_factory=dict)  # host index -> old dev:ino -> path
    handed: int = 0


class StageSnapshots:
    """The prepared stages of one test module (see the module docstring)."""

    def __init__(self, pg_cluster, farm, tmp_path_factory):
        self.pg = pg_cluster
        self.farm = farm
        self.tmp = tmp_path_factory
        self.saved: dict[Callable, _Saved] = {}

    # ------------------------------------------------------------------ making one

    def _hosts(self, n: int = 2):
        hosts = self.farm.grow(n)
        for h in hosts:
            if h.port not in self.farm._procs:
                _replace(self.farm, h)
        return self.farm.grow(n)

    def _make(self, prepare: Callable) -> _Saved:
        base = self.tmp.mktemp("stage-snapshot")
        hosts = self._hosts(2)
        for h in hosts:
            self.farm.reset(h)
        ports = [free_port() for _ in hosts]
        for h in hosts:
            h.write("srv/occ/shared/.env", "HOST=127.0.0.1\n")
        project = make_project(base / "project")
        project.write_env("staging", stage_toml(self.farm, hosts, ports))
        project.commit("staging on test hosts")
        shopify = install_stand_in(base / "shopify", token="shpat-standin-" + os.urandom(12).hex())
        db_url = self.pg.create_database()
        project.env.update(secrets_env(project, "staging", db_url))
        project.env["SHOPIFY_APP_AUTOMATION_TOKEN"] = shopify.token
        project.env["PATH"] = f"{shopify.bin_dir}:{os.environ['PATH']}"
        stage = Stage(project, hosts, ports, db_url, shopify, self.farm)
        with pytest.MonkeyPatch.context() as mp:
            _stand_in_env(mp, shopify)
            value = prepare(stage)
        prefix = self.pg.url_for("")
        dbs = sorted({v[len(prefix):].split("?", 1)[0] for v in project.env.values()
                      if isinstance(v, str) and v.startswith(prefix)})
        saved = _Saved(stage, value, base / "saved", dbs, dict(project.env), ports, shopify)
        self._save(saved)
        return saved

    def _save(self, s: _Saved) -> None:
        st = s.stage
        for i, h in enumerate(st.hosts):
            s.apps[i] = []
            for env in ENVS:
                if not (st.project.root / "env" / f"{env}.toml").exists():
                    continue
                cfg = config.load(env, st.project.root)
                d = Path(cfg.hosts.deploy_to.replace("{port}", str(h.port)))
                if not (d / "run" / "app.pid").exists() or not (d / "current").exists():
                    continue
                pkg = json.loads((d / "current" / "package.json").read_text())
                port = cfg.hosts.app_ports[i] if cfg.hosts.app_ports else cfg.app.port
                s.apps[i].append(_App(d, cfg.app.port_var, port, start_argv(cfg.app, pkg, str(d / "current")),
                                      f"http://127.0.0.1:{port}{cfg.app.health_path}"))
            s.inodes[i] = {v.split(" ", 1)[0]: p for p, v in _stat(h.root).items()}
            _copy(h.root, s.dir / f"host{i}")
        _copy(st.project.root, s.dir / "project")
        _copy(s.shopify.state_dir, s.dir / "shopify-state")
        for db in s.db_names:
            self._terminate(db)
            self.pg.execute(f'CREATE DATABASE "{db}_snap" TEMPLATE "{db}"')

    # ------------------------------------------------------------------ putting it back

    def _terminate(self, db: str) -> None:
        self.pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        f"WHERE datname = '{db}' AND pid <> pg_backend_pid()")

    def _restore(self, s: _Saved) -> None:
        st = s.stage
        for h in st.hosts:
            self.farm.reset(h)   # kills what the last test started there, wipes the disk
        stop_local_apps(st.project)
        for i, h in enumerate(st.hosts):
            _copy(s.dir / f"host{i}", h.root)
            self._reindex(h.root, s.inodes[i], [a.deploy_dir for a in s.apps[i]])
        shutil.rmtree(st.project.root)
        _copy(s.dir / "project", st.project.root)
        shutil.rmtree(s.shopify.state_dir)
        _copy(s.dir / "shopify-state", s.shopify.state_dir)
        for db in s.db_names:
            self.pg.drop_database(db)
            self.pg.execute(f'CREATE DATABASE "{db}" TEMPLATE "{db}_snap"')
        st.project.env.clear()
        st.project.env.update(s.env)
        with ThreadPoolExecutor(len(st.hosts)) as pool:   # the hosts at once, as a release does
            list(pool.map(lambda i: self._start(st.hosts[i], s.apps[i]), range(len(st.hosts))))

    def _start(self, h, apps: list[_App]) -> None:
        """Each app started again the way a release starts it: its supervisor, as the login
        user; then its health answers."""
        with h.connection() as c:
            for a in apps:
                cmd = shlex.join([str(a.deploy_dir / "bin" / "app"), "restart", a.port_var, str(a.port), "--", *a.argv])
                r = c.run(cmd, hide=True, warn=True, in_stream=False)
                assert r.ok, f"restarting the app on {h.name} failed: {r.stdout}{r.stderr}"
        for a in apps:
            err = http_health(a.health_url, 30)
            assert not err, f"the restored app on {a.health_url} did not answer: {err}"

    def _reindex(self, root: Path, old: dict[str, str], deploy_dirs: list[Path]) -> None:
        """Each `.verified` line of a file that was copied gets the copy's inode and times."""
        now = _stat(root)
        for d in {*deploy_dirs, *(p.parent for p in root.glob("**/.verified"))}:
            idx = d / ".verified"
            if not idx.is_file():
                continue
            lines = []
            for line in idx.read_text().splitlines():
                parts = line.split(" ")
                path = old.get(parts[0])
                if len(parts) == 5 and path in now:
                    lines.append(f"{now[path]} {parts[4]}")
                else:
                    lines.append(line)
            st = idx.stat()
            idx.write_text("".join(f"{x}\n" for x in lines))
            os.chown(idx, st.st_uid, st.st_gid)

    # ------------------------------------------------------------------ the API

    def get(self, prepare: Callable) -> tuple[Stage, Any]:
        s = self.saved.get(prepare)
        if s is not None:
            for h in s.stage.hosts:
                if h.port not in self.farm._procs:   # the last test dropped it: same port and key again
                    try:
                        self.farm.bring_back(h)
                    except Exception:  # noqa: BLE001 - its port was taken: a new host, made again below
                        pass
            if [h.port for h in s.stage.hosts] != [h.port for h in self._hosts(2)]:
                self._drop(s)        # a host was replaced: its disk and key are new, make it again
                s = None
        if s is None:
            s = self.saved[prepare] = self._make(prepare)
        elif s.handed:
            self._restore(s)
        s.handed += 1
        return s.stage, s.value

    def _drop(self, s: _Saved) -> None:
        stop_local_apps(s.stage.project)
        for h in s.stage.hosts:
            if h.port in self.farm._procs:
                self.farm.reset(h)
        for db in s.db_names:
            self.pg.drop_database(db)
            self.pg.drop_database(f"{db}_snap")
        del self.saved[next(k for k, v in self.saved.items() if v is s)]

    def close(self) -> None:
        for s in list(self.saved.values()):
            self._drop(s)


def new_database(stage: Stage) -> str:
    """A fresh, empty database on the cluster of `stage.db_url` (for a `prepare` that needs
    one more, such as a shared ledger's): a snapshot puts it back like the stage's own."""
    import psycopg

    name = f"s{os.urandom(4).hex()}"
    base = stage.db_url.split("?", 1)[0].rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def _stand_in_env(mp: pytest.MonkeyPatch, shopify) -> None:
    """What the `shopify_cli` fixture sets in this process's environment."""
    mp.setenv("PATH", f"{shopify.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    mp.setenv("SHOPIFY_APP_AUTOMATION_TOKEN", shopify.token)
    mp.delenv("SHOPIFY_CLI_PARTNERS_TOKEN", raising=False)


@pytest.fixture(scope="module")
def _stage_snapshots(pg_cluster, sshd_farm, tmp_path_factory):
    snaps = StageSnapshots(pg_cluster, sshd_farm, tmp_path_factory)
    yield snaps
    snaps.close()


@pytest.fixture
def stage_snapshot(_stage_snapshots, monkeypatch):
    """`stage_snapshot(prepare) -> (stage, value)`: staging as `prepare(stage)` left it, made
    once per module and put back in place for each test (see deploy/testing/snapshots.py)."""

    def get(prepare: Callable) -> tuple[Stage, Any]:
        stage, value = _stage_snapshots.get(prepare)
        _stand_in_env(monkeypatch, _stage_snapshots.saved[prepare].shopify)
        return stage, value

    return get
