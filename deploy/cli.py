"""The edge between Invoke and the library: settings, ledger, output, exit codes.

Kept free of heavy imports so `invoke --list` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from deploy.display import colour
from deploy.errors import DeployError
from deploy.redact import redact


def root() -> Path:
    """The project whose env/ the tasks read: DEPLOY_ROOT; else the nearest folder at or above
    the current one with env/<name>.toml files (an app that adopted the toolkit, see
    docs/adopting.md); else the toolkit's own checkout (its example project)."""
    from deploy.config import project_root

    here = project_root(Path.cwd())
    # env/*.toml, not just env/: a virtualenv is often called env/ too.
    if os.environ.get("DEPLOY_ROOT") or any((here / "env").glob("*.toml")):
        return here
    return project_root(Path(__file__).resolve().parent.parent)


def services():
    """What a flow is handed (deploy/services.py): this project's root, the process
    environment and the terminal."""
    from deploy.services import Services

    return Services(root=root(), environ=os.environ)


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
            env = kwargs.get("env") or kwargs.get("to")
            e.in_env(env if isinstance(env, str) else None)  # a hint from below says <env>; the task knows which
            try:
                print(colour("error:", stream=sys.stderr) + redact(f" {e}"), file=sys.stderr, flush=True)
                if e.traceback and os.environ.get("DEPLOY_DEBUG") == "1":
                    print(redact(e.traceback), file=sys.stderr, flush=True)
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


def need(**flags) -> None:
    """A SettingsError naming every required flag that was not given."""
    from deploy.errors import SettingsError

    missing = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is None or v == ""]
    if missing:
        raise SettingsError(f"Missing {', '.join(missing)}.", "See `invoke <task> --help` for every flag.")
