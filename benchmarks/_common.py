"""Shared by the benchmark scripts: the machine's description, medians, and claims.

A *claim* is one figure a benchmark states against a target ("toolkit/ansible at 16
hosts: 12.3x, target >= 9x, met"). Each script prints its own tables; when run by
benchmarks/run.py it also writes its claims as JSON (`--claims-out FILE`), so run.py can
print one summary table for the whole suite.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Claim:
    bench: str
    figure: str        # what was measured, e.g. "toolkit/parallel @16 hosts"
    value: str         # formatted, e.g. "1.07x"
    target: str        # e.g. "<= 1.15x"; "" when the figure is reported without a target
    met: bool | None   # None: no target


def claim(bench: str, figure: str, value: str, target: str = "", met: bool | None = None) -> Claim:
    return Claim(bench, figure, value, target, met)


def write_claims(path: str | None, claims: list[Claim]) -> None:
    if path:
        Path(path).write_text(json.dumps([asdict(c) for c in claims], indent=1))


def read_claims(path: Path) -> list[Claim]:
    if not path.exists() or not path.read_text().strip():
        return []
    return [Claim(**c) for c in json.loads(path.read_text())]


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "MISSED")


def print_claims(claims: list[Claim]) -> int:
    """The script's closing table of its claims; the exit code: 1 when a target was missed."""
    from tabulate import tabulate

    print()
    print(tabulate([(c.figure, c.value, c.target or "-", verdict(c.met)) for c in claims],
                   headers=["figure", "value", "target", "met?"]))
    return 0 if all(c.met is not False for c in claims) else 1


def on_each(items, fn: Callable[..., object]) -> None:
    """fn(item) for every item at once, one thread each; the first error is raised after all ended."""
    errors: list[BaseException] = []

    def one(item) -> None:
        try:
            fn(item)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others ended
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def ssh_options(farm) -> list[str]:
    """`ssh` with the farm's key and known hosts, as an operator's bare command runs: each call
    opens its own connection (and pays for it, as the toolkit's run does)."""
    return ["ssh", "-i", str(farm.key_file), "-o", f"UserKnownHostsFile={farm.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]


def ssh_argv(farm, h) -> list[str]:
    """`ssh_options` aimed at host `h` (a remote command goes after it)."""
    return [*ssh_options(farm), "-p", str(h.port), f"{h.user}@{h.host}"]


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median(xs) -> float:
    return statistics.median(list(xs))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def postgres_version() -> str:
    try:
        from deploy.testing.postgres import find_bin

        out = subprocess.run([find_bin("postgres"), "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")
    except Exception as e:  # noqa: BLE001 - the description must not stop the suite
        return f"not found ({type(e).__name__})"


def machine() -> list[tuple[str, str]]:
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip() if shutil.which("ssh") else "-"
    return [
        ("CPU", cpu_model()),
        ("cores", str(os.cpu_count())),
        ("memory", mem),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("Postgres", postgres_version()),
        ("OpenSSH", ssh.split(",")[0]),
    ]
