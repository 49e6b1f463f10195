"""Removing big folders off the critical path: an old checkout or cache entry (hundreds of MB,
tens of thousands of files: seconds of `rm -rf`) is renamed aside at once (`.trash-<pid>-<n>-<name>`
beside it, a hidden name every listing here skips) and deleted by one background thread, which
the process waits for before it exits (a non-daemon thread). A rename is atomic: the folder is
gone from its place the moment `discard` returns, whether or not the deletion finished.
Leftovers of a process killed meanwhile are swept by the next `discard` in that folder.
"""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import threading
from pathlib import Path

from deploy import proc

PREFIX = ".trash-"
_todo: queue.Queue[Path] = queue.Queue()
_worker: threading.Thread | None = None
_lock = threading.Lock()
_count = itertools.count()


def discard(path: Path) -> bool:
    """Move `path` aside and delete it in the background; False when it was not there. A folder
    that cannot be renamed (another file system) is deleted here and now."""
    path = Path(path)
    aside = path.with_name(f"{PREFIX}{os.getpid()}-{next(_count)}-{path.name}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        return True
    _sweep(path.parent)
    _todo.put(aside)
    _start()
    return True


def drain() -> None:
    """Wait until everything discarded so far is deleted."""
    _todo.join()


def _start() -> None:
    global _worker
    with _lock:
        if _worker is None:
            _worker = threading.Thread(target=_work, name="deploy-trash", daemon=False)
            _worker.start()


def _work() -> None:
    global _worker
    while True:
        try:
            p = _todo.get(timeout=0.5)
        except queue.Empty:
            with _lock:   # idle: the thread ends (a later discard starts another), so the process can exit
                if _todo.empty():
                    _worker = None
                    return
            continue
        try:
            shutil.rmtree(p, ignore_errors=True)
        finally:
            _todo.task_done()


def _sweep(folder: Path) -> None:
    """Queue the trash a dead process left in `folder`."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(PREFIX)]
    except OSError:
        return
    for n in names:
        pid = n[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not proc.pid_alive(int(pid)):
            _todo.put(folder / n)
