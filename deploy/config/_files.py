"""Where the settings files are and reading one: the project root, `env/`, the environments
found there, a file's text (UTF-8 or a clear error), and `load`, which reads and validates
`env/<name>.toml` into `Settings`.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from deploy.config._coerce import parse
from deploy.config._sections import Settings
from deploy.errors import SettingsError


ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")


def read_text(path: Path) -> str:
    """A settings file's text; SettingsError naming the file when it is not UTF-8.
    (FileNotFoundError is left to the caller, which knows what a missing file means.)"""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}).",
                            "Save the file as UTF-8 and run again.") from None
    except IsADirectoryError:
        raise SettingsError(f"{path} is a folder, not a file.") from None


def project_root(start: Path | None = None) -> Path:
    """The project root: `DEPLOY_ROOT`, else the nearest folder above `start` with `env/`."""
    if os.environ.get("DEPLOY_ROOT"):
        return Path(os.environ["DEPLOY_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "env").is_dir() and ((p / "tasks.py").exists() or (p / "pyproject.toml").exists()):
            return p
    return here


def env_dir(root: Path) -> Path:
    return root / "env"


def environments(root: Path) -> list[str]:
    """Names of the environments described in `env/`."""
    d = env_dir(root)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.toml") if ENV_NAME.match(p.stem) and p.stem != "variables")


def load(name: str, root: Path | None = None) -> Settings:
    """Read and validate `env/<name>.toml`."""
    root = (root or project_root()).resolve()
    if not isinstance(name, str) or not ENV_NAME.match(name or ""):
        raise SettingsError(
            f"{name!r} is not a valid environment name.",
            "Use lower-case letters, digits, '-' or '_' (e.g. --env=staging).",
        )
    path = env_dir(root) / f"{name}.toml"
    if not path.is_file():
        known = environments(root)
        if not env_dir(root).is_dir():
            raise SettingsError(
                f"No env/ folder under {root}: there are no environment settings to read.",
                "Run from the project root, or set DEPLOY_ROOT to it.",
            )
        raise SettingsError(
            f"Unknown environment {name!r}: {path} does not exist.",
            f"Known environments: {', '.join(known) or '(none)'}.",
        )
    try:
        try:
            raw = tomllib.loads(read_text(path))
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: not valid TOML ({e}).", "Fix the syntax and run again.") from None
        except OSError as e:
            raise SettingsError(f"{path}: cannot be read ({e.strerror}).") from None
        return parse(raw, name=name, file=path, root=root)
    except SettingsError as e:
        e.file = e.file or str(path)   # every settings error names its file as a field too
        raise e.in_env(name)
