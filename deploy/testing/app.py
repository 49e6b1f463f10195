"""The example app for tests: a private copy per test, built artifacts, and servers
that are always stopped.

Fixtures (a pytest plugin; test modules may also import them by name):
- `example_app`: a fresh copy of examples/app under tmp_path (builds write build/
  inside the app folder, so tests never build in the repository's own copy).
- `local_root`: an empty local release root whose server, if a test starts one, is
  stopped after the test (finalizer), whatever the test's outcome.
- `app_artifact`: one real build of the example app per test module (npm ci + npm run
  build), for tests that need an artifact but do not test building.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from deploy import local
from deploy.build import build

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "app"
SHA_A = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
SHA_B = "b2c3d4e5f60718293a4b5c6d7e8f901234567890"
BUILT_AT = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def copy_example_app(dest: Path) -> Path:
    """A copy of examples/app without build outputs or node_modules."""
    shutil.copytree(
        EXAMPLE_APP, dest,
        ignore=shutil.ignore_patterns("build", "node_modules", "evidence", ".deploy"),
    )
    return dest


@pytest.fixture
def example_app(tmp_path: Path) -> Path:
    return copy_example_app(tmp_path / "app")


@pytest.fixture
def local_root(tmp_path: Path):
    root = tmp_path / "local"
    yield root
    local.stop(root)


@pytest.fixture(scope="module")
def app_artifact(tmp_path_factory):
    base = tmp_path_factory.mktemp("app-artifact")
    app = copy_example_app(base / "app")
    return build(app, SHA_A, base / "artifacts", now=BUILT_AT).artifact
