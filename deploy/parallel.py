"""The one thread pool: a function over items, at most `workers` at once, results in order.

Hosts, smoke URLs and tool probes are waits on the network or on a child process, so
threads suffice; a single item runs inline (no thread for the common one-host case)."""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def pmap(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """[fn(item) for item in items], at most `workers` at once; the first exception is raised."""
    items = list(items)
    if len(items) <= 1:
        return [fn(it) for it in items]
    from concurrent.futures import ThreadPoolExecutor   # not at import: smoke is imported by `invoke --list`

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))
