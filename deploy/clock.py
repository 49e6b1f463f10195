"""Small time helpers shared by every report that shows an age."""

from __future__ import annotations


def age(seconds: float) -> str:
    """A duration as a person reads it: 45s, 12 min, 3h05m, 4 days (negative: '-' first)."""
    s = int(seconds)
    if s < 0:
        return f"-{age(-s)}"
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400} days"
