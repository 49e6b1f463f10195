"""The edge between Invoke and the library: settings, ledger, output, exit codes.

Kept free of heavy imports so `invoke --list` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from deploy.errors import DeployError
from deploy.redact import redact


def root() -> Path:
    """The project whose env/ the tasks read: DEPLOY_ROOT; else the nearest folder at or above
    the current one with env/ (an app that adopted the toolkit, see docs/adopting.md); else
    the toolkit's own checkout (its example project)."""
    from deploy.config import project_root

    here = project_root(Path.cwd())
    if os.environ.get("DEPLOY_ROOT") or (here / "env").is_dir():
        return here
    return project_root(Path(__file__).resolve().parent.parent)


def settings(env: str | None):
    from deploy.config import load
    from deploy.errors import SettingsError

    if not env:
        raise SettingsError("No environment given.", "Pass --env=NAME (see env/*.toml for the names).")
    return load(env, root())


def ledger():
    from deploy.ledger import Ledger

    return Ledger.open(root())


def out(text: str = "") -> None:
    print(redact(text), flush=True)


def emit_json(value) -> None:
    print(redact(json.dumps(value, indent=2, default=str)), flush=True)


def _quiet_stdout() -> None:
    """stdout's reader is gone (`invoke db.status | head -1`): send the rest, and the
    interpreter's final flush, to /dev/null instead of a BrokenPipeError traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def guarded(fn):
    """Turn a DeployError into one clear paragraph on stderr and its exit code; a closed
    output pipe into a quiet exit; a full disk into one clear message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import errno

        from invoke.exceptions import Exit

        try:
            return fn(*args, **kwargs)
        except DeployError as e:
            try:
                print(redact(f"error: {e}"), file=sys.stderr, flush=True)
            except BrokenPipeError:
                pass
            raise Exit(code=e.exit_code) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise Exit(code=0) from None  # the reader read what it wanted, as `head` means
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise Exit(code=130) from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            where = f" writing {e.filename}" if e.filename else ""
            print(redact(f"error: No space left on the device{where}.\nFree space there (.deploy/ holds artifacts, "
                         "backups and the ledger) and run the command again."), file=sys.stderr, flush=True)
            raise Exit(code=1) from None

    return wrapper


def need(**flags) -> None:
    """A SettingsError naming every required flag that was not given."""
    from deploy.errors import SettingsError

    missing = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is None or v == ""]
    if missing:
        raise SettingsError(f"Missing {', '.join(missing)}.", "See `invoke <task> --help` for every flag.")


def confirm(question: str, yes: bool) -> None:
    """Ask unless --yes; refuse without a terminal."""
    from deploy.errors import Aborted

    if yes:
        return
    if not sys.stdin.isatty() or os.environ.get("CI"):
        raise Aborted(f"{question} needs confirmation and there is no terminal to ask.", "Pass --yes to confirm.")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Aborted("Not confirmed; nothing was changed.")
