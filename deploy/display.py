"""How output looks to a person: tables that fit a terminal, colour only on a terminal.

`fit` wraps the widest columns, then drops the optional ones. It is pure: the width is
passed in (deploy/cli.py's `width()` reads the terminal's), so tests render the same table
at 80 and 200 columns without a terminal. tabulate does the drawing.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import Sequence

_STYLES = {"ok": "32", "done": "32", "OPEN": "32", "FAILED": "1;31", "FAIL": "1;31", "CLOSED": "1;31",
           "error:": "1;31", "UNDO-ERR": "1;31", "undone": "33", "skipped": "2", "warning:": "33"}


def colour(text: str, word: str | None = None, stream=None) -> str:
    """`text` in the colour of `word` (default: the text itself) when `stream` (default
    stdout) is a terminal, NO_COLOR is not set (https://no-color.org) and TERM is not
    `dumb`; otherwise `text` unchanged."""
    stream = stream or sys.stdout
    code = _STYLES.get((word or text).strip())
    if not code or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return text
    try:
        if not stream.isatty():
            return text
    except (AttributeError, ValueError):
        return text
    return f"\x1b[{code}m{text}\x1b[0m"

MIN_COLUMN = 8        # a column is never wrapped narrower than this (or its header's longest word)
COMFORTABLE = 18      # before any optional column is dropped, none is wrapped narrower than this
WIDE = 60             # ... and a `wide` column (the reasons) first not narrower than this


def _cell(v) -> str:
    return "" if v is None else str(v)


def _natural(rows: list[list[str]], headers: list[str]) -> list[int]:
    return [max(len(line) for cell in [h, *(r[i] for r in rows)] for line in (cell.split("\n") or [""]))
            for i, h in enumerate(headers)]


def _render(rows, headers, fmt: str, widths: list[int] | None) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True,
                    maxcolwidths=widths if widths else None)


def _visible_width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit(rows: Sequence[Sequence], headers: Sequence[str], width: int | None, *, fmt: str = "simple",
        optional: Sequence[str] = (), wide: Sequence[str] = ()) -> str:
    """Render `rows` under `headers` no wider than `width` (None: as wide as it comes).

    First the widest columns are wrapped (none below COMFORTABLE characters); if that is
    not enough, the `optional` columns are dropped in the order given; then the rest are
    wrapped down to MIN_COLUMN. A last line names what was dropped. Every cell of the
    columns kept is shown whole, wrapped. The `wide` columns (the reasons) are wrapped
    only once the others are at their floor."""
    table = [[_cell(v) for v in r] for r in rows]
    # An optional or wide column with nothing in it (no reasons: all passed) costs width and
    # says nothing: leave it out.
    empty = [i for i, h in enumerate(headers)
             if (h in optional or h in wide) and table and not any(r[i].strip() for r in table)]
    if width is not None and empty:
        headers = [h for i, h in enumerate(headers) if i not in empty]
        table = [[c for i, c in enumerate(r) if i not in empty] for r in table]
    headers = list(headers)
    text = None
    for floor, wide_floor in ((COMFORTABLE, WIDE), (COMFORTABLE, COMFORTABLE), (MIN_COLUMN, MIN_COLUMN)):
        keep = list(range(len(headers)))
        dropped: list[str] = []
        while True:
            h = [headers[i] for i in keep]
            t = [[r[i] for i in keep] for r in table]
            text = _shrink(t, h, fmt, width, floor, [x in wide for x in h], wide_floor)
            if text is not None or not any(o in h for o in optional):
                break
            victim = next(o for o in optional if o in h)
            keep.remove(headers.index(victim))
            dropped.append(victim)
        if text is not None:
            break
    if text is None:   # even the kept columns at their narrowest are wider: show them anyway
        text = _render(t, h, fmt, [max(MIN_COLUMN, _word(x)) for x in h])
    if dropped:
        note = (f"(not shown to fit {width} columns: {', '.join(dropped)}; "
                "a wider terminal or --json shows them)")
        text += "\n" + "\n".join(textwrap.wrap(note, width=max(20, width or 0)))
    return text


def _word(header: str) -> int:
    return max((len(w) for w in header.split()), default=1)


def _shrink(rows: list[list[str]], headers: list[str], fmt: str, width: int | None,
            floor: int = MIN_COLUMN, last: list[bool] | None = None, last_floor: int = MIN_COLUMN) -> str | None:
    """The table wrapped to `width`, or None when it cannot get that narrow."""
    text = _render(rows, headers, fmt, None)
    if width is None or _visible_width(text) <= width:
        return text
    widths = _natural(rows, headers)
    overhead = _visible_width(text) - sum(widths)
    last = last or [False] * len(widths)
    floors = [min(w, max(last_floor if wide else floor, _word(h))) for w, h, wide in zip(widths, headers, last)]
    budget = width - overhead
    if sum(floors) > budget:
        return None
    # Take one character at a time from the widest column still above its floor (the
    # `last` columns only when no other one can give any more).
    while sum(widths) > budget:
        i = max((j for j in range(len(widths)) if widths[j] > floors[j]), key=lambda j: (not last[j], widths[j]))
        widths[i] -= 1
    for _ in range(8):   # wrapping at word boundaries can leave a line a little wider: tighten
        text = _render(rows, headers, fmt, widths)
        over = _visible_width(text) - width
        if over <= 0:
            return text
        shrinkable = [j for j in range(len(widths)) if widths[j] > floors[j]]
        if not shrinkable:
            return None
        i = max(shrinkable, key=lambda j: (not last[j], widths[j]))
        widths[i] = max(floors[i], widths[i] - over)
    return None
