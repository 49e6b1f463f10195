"""The leak scan: where a secret value must never be found after a run.

A secret may only live in the deployer's environment and in the child environments
that need it. These helpers look everywhere else a run writes: the project's files
(ledger, logs, deployment log, step summary), every artifact's unpacked bytes, every
file under the hosts' deploy paths (archives opened), and the environment the Shopify
CLI stand-in received. Each returns readable findings ("where: first 4 chars…"), so a
failing assertion says where a secret got to without printing it whole.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

# Values shorter than this are too likely to occur by chance (the leak suite's minimum).
MIN_LEN = 4


def secret_values(stage) -> set[str]:
    """Every secret value a `stage` run knows: the project's secret variables, the
    database password and the Shopify token."""
    values = {k: v for k, v in stage.project.env.items()
              if k not in ("PATH", "DEPLOY_LEDGER_URL", "PRODUCTION_DATABASE_URL") and v}
    out = set(values.values())
    pw = urlsplit(stage.db_url).password
    assert pw and len(pw) >= 6
    out.add(pw)
    out.add(stage.shopify.token)
    return {v for v in out if len(v) >= MIN_LEN}


def scan_bytes(where: str, data: bytes, secrets: Iterable[str]) -> list[str]:
    return [f"{where}: {s[:4]}…" for s in secrets if s.encode() in data]


def _archive_members(where: str, data: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file in a .tar.gz / .tar, or [] if `data` is not one."""
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        out = []
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for m in tar:
                out.append((f"{where}!{m.name} (name)", m.name.encode()))
                if m.isfile():
                    f = tar.extractfile(m)
                    out.append((f"{where}!{m.name}", f.read() if f else b""))
        return out
    except (OSError, EOFError, tarfile.TarError):
        return []


def scan_file(path: Path, secrets: Iterable[str], label: str | None = None) -> list[str]:
    """A file's bytes, and when it is an archive every member's bytes too."""
    secrets = list(secrets)
    where = label or str(path)
    data = path.read_bytes()
    leaks = scan_bytes(where, data, secrets)
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        for name, member in _archive_members(where, data):
            leaks += scan_bytes(name, member, secrets)
    return leaks


def scan_tree(root: Path, secrets: Iterable[str]) -> list[str]:
    """Every regular file under `root` (symlinks not followed), archives opened."""
    secrets = list(secrets)
    leaks: list[str] = []
    for p in sorted(root.rglob("*")) if root.exists() else []:
        if p.is_symlink() or not p.is_file():
            continue
        leaks += scan_file(p, secrets, str(p.relative_to(root.parent)))
    return leaks


def artifacts(root: Path) -> list[Path]:
    """Every artifact the project's runs built (under .deploy/artifacts)."""
    store = root / ".deploy" / "artifacts"
    return sorted(store.rglob("*.tar.gz")) if store.exists() else []


def scan_artifacts(root: Path, secrets: Iterable[str]) -> list[str]:
    secrets = list(secrets)
    return [leak for a in artifacts(root) for leak in scan_file(a, secrets)]


def scan_hosts(stage, secrets: Iterable[str]) -> list[str]:
    """Every file under every host's deploy paths: releases, uploads, shared, logs."""
    secrets = list(secrets)
    return [leak for h in stage.hosts for leak in scan_tree(h.root / "srv", secrets)]


def scan_shopify_env(shopify, secrets: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """Secret values in the environment any Shopify CLI call received (the token itself
    is recorded masked by the stand-in, so any value found here is a leak)."""
    secrets = list(secrets)
    leaks = []
    for i, env in enumerate(shopify.environments()):
        for name, value in env.items():
            if name in allowed:
                continue
            leaks += [f"shopify call {i} env {name}: {s[:4]}…" for s in secrets if s in value]
    return leaks


BUILD_DUMP = "env-dump.json"


def dump_env_in_build(project) -> None:
    """Make the example app's build script write its whole `process.env` into build/ (as
    a careless or hostile build script would), and commit it: whatever the build step is
    given ends up in the artifact and on the hosts, where the scan looks."""
    script = project.root / "examples/app/scripts/build.mjs"
    text = script.read_text()
    if BUILD_DUMP not in text:
        script.write_text(text + f'\nwriteFileSync(join(out, "{BUILD_DUMP}"), JSON.stringify(process.env, null, 2));\n')
        project.commit("build dumps its environment")


def build_dump(artifact: Path) -> dict | None:
    """The environment a build dumped (`dump_env_in_build`), read from the artifact, or None."""
    import json

    for name, data in _archive_members(str(artifact), artifact.read_bytes()):
        if name.endswith("/" + BUILD_DUMP) or name.endswith("!" + BUILD_DUMP):
            return json.loads(data)
    return None
