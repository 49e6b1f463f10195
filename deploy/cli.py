"""The edge between Invoke and the library: settings, ledger, output, exit codes.

Kept free of heavy imports so `invoke --list` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from deploy.display import colour
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


def settings(env: str | None, flag: str = "--env"):
    """The typed settings of `env`; a SettingsError naming `flag` (the task's own flag,
    e.g. promote's --to) and the environments there are when none was given."""
    from deploy.config import environments, load
    from deploy.errors import SettingsError

    if not env:
        try:
            names = ", ".join(environments(root())) or "none yet"
        except (DeployError, OSError):
            names = "see env/*.toml"
        raise SettingsError(f"No environment given: {flag} is required.",
                            f"Pass {flag}=NAME, one of the files env/NAME.toml ({names}).")
    return load(env, root())


def ledger():
    from deploy.ledger import Ledger

    return Ledger.open(root())


def out(text: str = "") -> None:
    print(redact(text), flush=True)


def width() -> int:
    """The terminal's width in columns (COLUMNS when set; 120 when stdout is no terminal)."""
    import shutil

    return shutil.get_terminal_size((120, 24)).columns


def table(rows, headers, *, fmt: str = "simple", optional=()) -> str:
    """`rows` as a table that fits the terminal (deploy/display.py: wrap, then drop `optional`)."""
    from deploy import display

    return display.fit(rows, headers, width(), fmt=fmt, optional=optional)


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


def reads_only(fn):
    """Mark a task that changes nothing: Invoke's `--dry` runs it as usual."""
    fn.reads_only = True
    return fn


def task_name(fn) -> str:
    """The Invoke name of a task function: evidence_collect -> evidence.collect."""
    name = fn.__name__.removesuffix("_task")
    group, _, rest = name.partition("_")
    return f"{group}.{rest.replace('_', '-')}" if rest else group


def _invoke_flags(fn, args, kwargs) -> None:
    """Invoke's own --dry, --echo and --hide (they set the Context's `run` config), which
    act on `c.run` and so would be silently ignored: this toolkit runs children itself.

    --dry: a task with --dry-run dry-runs; a read-only task (`@reads_only`) runs, it
    changes nothing; any other task is refused (exit 2) rather than run for real.
    --echo: every command the toolkit runs is printed (redacted) on stderr before it runs.
    --hide=out|err|both: that output of long children (build, install, Shopify CLI) is not
    streamed; it is still kept for error messages. See README "Invoke's own flags"."""
    import inspect

    from deploy import proc
    from deploy.errors import SettingsError

    run_cfg = getattr(getattr(args[0], "config", None), "run", None) if args else None
    if run_cfg is None:
        return
    get = (lambda k: run_cfg.get(k)) if hasattr(run_cfg, "get") else (lambda k: getattr(run_cfg, k, None))
    proc.configure(echo=bool(get("echo")), hide=get("hide"))
    if not get("dry"):
        return
    name = task_name(fn)
    if "dry_run" in inspect.signature(fn).parameters:
        kwargs["dry_run"] = True
    elif not getattr(fn, "reads_only", False):
        raise SettingsError(f"invoke --dry: `{name}` changes things and has no dry run, so it was not run.",
                            "Run the same command without --dry to do it; tasks with --dry-run "
                            "(promote, rollback) accept --dry as the same thing.")


def guarded(fn):
    """Turn a DeployError into one clear paragraph on stderr and its exit code; a closed
    output pipe into a quiet exit; a full disk into one clear message. Applies Invoke's own
    --dry/--echo/--hide first (see `_invoke_flags`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import errno

        from invoke.exceptions import Exit

        try:
            _invoke_flags(fn, args, kwargs)
            return fn(*args, **kwargs)
        except DeployError as e:
            try:
                print(colour("error:", stream=sys.stderr) + redact(_with_env(f" {e}", kwargs)),
                      file=sys.stderr, flush=True)
            except BrokenPipeError:
                pass
            raise Exit(code=e.exit_code) from None
        except BrokenPipeError:
            _quiet_stdout()
            raise Exit(code=0) from None  # the reader read what it wanted, as `head` means
        except KeyboardInterrupt:
            from deploy.errors import INTERRUPTED

            print("interrupted", file=sys.stderr)
            raise Exit(code=INTERRUPTED) from None
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            where = f" writing {e.filename}" if e.filename else ""
            print(redact(f"error: No space left on the device{where}.\nFree space there (.deploy/ holds artifacts, "
                         "backups and the ledger) and run the command again."), file=sys.stderr, flush=True)
            raise Exit(code=1) from None

    return wrapper


def _with_env(text: str, kwargs) -> str:
    """Hints written deep down (a migration, a backup) say `<env>`; the task knows which."""
    env = kwargs.get("env") or kwargs.get("to")
    return text.replace("<env>", env) if isinstance(env, str) and env else text


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
