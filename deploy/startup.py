"""How a release's app starts (the start contract): `[app] start`, or the package.json
`start` script run as the supervised process itself, and the PATH it gets.

Below both the build (which reads package.json for its recipe) and the hosts and the local
release (which start the app), so starting an app never imports the build.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy.config import AppSection
from deploy.errors import BuildFailed, SettingsError


def package_json(app_dir: str | Path) -> dict:
    """The app's package.json as a dict; BuildFailed naming the file when it cannot be read."""
    f = Path(app_dir) / "package.json"
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{Path(app_dir)}: no package.json, so there is no app to build here.",
                            "Set environment.app_dir in env/<name>.toml to the app's folder.") from None
    except (OSError, ValueError) as e:
        raise BuildFailed(f"{f} cannot be read: {e}.", "Fix package.json and commit it.") from None
    if not isinstance(data, dict):
        raise BuildFailed(f"{f} is not a JSON object.", "Fix package.json and commit it.")
    return data


def start_command(contract: AppSection | None, release_dir: str | Path, where: str = "") -> list[str]:
    """The argv that starts the release in `release_dir` (see `start_argv`; `where` names
    the folder in messages)."""
    try:
        pkg = package_json(release_dir)
    except (SettingsError, BuildFailed):
        pkg = {}   # start_argv says what is missing when the start needs package.json
    return start_argv(contract or AppSection(), pkg, where or str(release_dir))


def start_argv(contract: AppSection, pkg: dict, where: str) -> list[str]:
    """`app.start`, or the package.json `start` script run as `sh -c SCRIPT`: what `npm run
    start` runs, minus npm, so the app is the process the toolkit supervises and signals
    reach node, not an npm wrapper (node_modules/.bin goes first on PATH, as npm puts it).
    No start script is an error, locally and on hosts alike (npm's `node server.js`
    fallback is not guessed)."""
    if isinstance(contract.start, tuple):
        return list(contract.start)
    scripts = pkg["scripts"] if isinstance(pkg.get("scripts"), dict) else {}
    script = scripts.get("start")
    if isinstance(script, str) and script.strip():
        if isinstance(scripts.get("poststart"), str) and scripts["poststart"].strip():
            raise SettingsError(
                f"{where}/package.json has a poststart script, which `npm start` runs only after the app "
                "exits; the toolkit supervises the start script itself and would never run it.",
                'Move poststart\'s work into the build or the start script, or set [app] start = [...] in '
                "env/<name>.toml.")
        pre = scripts.get("prestart")
        if isinstance(pre, str) and pre.strip():
            return ["sh", "-c", f"{pre} && {script}"]   # as `npm start` runs prestart first
        return ["sh", "-c", script]
    raise SettingsError(
        f"{where}/package.json has no start script, so the toolkit does not know how to start the app.",
        'Add "start" to package.json scripts, or set [app] start = ["node", "build/server.js"] in env/<name>.toml.',
    )


def start_path(release_dir: str | Path, path: str) -> str:
    """PATH for the started app: node_modules/.bin first, as npm run sets it."""
    return f"{Path(release_dir) / 'node_modules' / '.bin'}:{path}"
