"""Rollout batches: which hosts switch together when `hosts.rollout = "rolling"`, and what
the load balancer in front of them is told around each batch so that no request is lost.

A batch goes: `hosts.balancer ... out <upstream>...` (the balancer sends those hosts nothing
new; the command returns once it applied that), `hosts.drain_seconds` for requests in flight,
switch + restart + health, `... in <upstream>...` (returns once the balancer sends to them
again), then `hosts.settle_seconds` before the next batch goes down: a balancer with passive
checks (nginx `max_fails`/`fail_timeout`) keeps a host it saw failing out for its
`fail_timeout`, and a rollout faster than that takes every host out of its view at once.

Below both the settings (which check `hosts.batch_size` when they are read) and the hosts
(which roll out batch by batch), so neither imports the other for it.
"""

from __future__ import annotations

import re
from typing import Sequence

from deploy.errors import SettingsError


def batches(n: int, batch_size: int | str) -> list[range]:
    """Index ranges of `n` hosts in rollout batches: `batch_size` hosts each (an int), or a
    share of them ("25%": rounded up, at least 1)."""
    if isinstance(batch_size, str):
        m = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", batch_size)
        if not m or not 1 <= int(m[1]) <= 100:
            raise SettingsError(f"hosts.batch_size = {batch_size!r} is not a share of the hosts.",
                                'Use a whole number of hosts (e.g. 1) or a percentage from "1%" to "100%".')
        size = max(1, -(-n * int(m[1]) // 100))
    else:
        if isinstance(batch_size, bool) or batch_size < 1:
            raise SettingsError(f"hosts.batch_size = {batch_size!r}: a batch needs at least 1 host.",
                                'Use a whole number of hosts (e.g. 1) or a percentage such as "25%".')
        size = batch_size
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def balancer_argv(balancer: Sequence[str], action: str, upstreams: Sequence[str]) -> list[str]:
    """The balancer command for one batch: `<hosts.balancer...> out|in <host:port>...`, where
    each upstream is the address the balancer sends to (the host and its app port, or its
    proxy's listen port)."""
    if action not in ("out", "in"):
        raise ValueError(f"balancer action {action!r}")
    return [*balancer, action, *upstreams]
