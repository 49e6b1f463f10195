"""How output looks to a person: tables that fit a terminal, colour only on a terminal.

`fit` wraps the widest columns, then drops the optional ones. It is pure: the width is
passed in (deploy/cli.py's `width()` reads the terminal's), so tests render the same table
at 80 and 200 columns without a terminal. tabulate does the drawing, except the plan's table
(`plain_table`, drawn here so a dry run does not import tabulate).
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

MIN_COLUMN = 8        # a column is never wrapped narrower than this (or its longest word: see WORD)
WORD = 24             # words up to this long (env names, statuses, release ids) are not cut while the
                      # table can fit so; longer tokens (URLs, paths) may be, or one would decide the width
SHORT_WORD = 10       # ... and when it cannot, the longest words go first (16, then 10): words up to
                      # this long ("production", statuses, flags) are never cut
_WORD_TIERS = (WORD, 16, SHORT_WORD)
COMFORTABLE = 18      # before any optional column is dropped, none is wrapped narrower than this
WIDE = 60             # ... and a `wide` column (the reasons) first not narrower than this


def _cell(v) -> str:
    return "" if v is None else str(v)


def _natural(rows: list[list[str]], headers: list[str]) -> list[int]:
    return [max(len(line) for cell in [h, *(r[i] for r in rows)] for line in (cell.split("\n") or [""]))
            for i, h in enumerate(headers)]


def _render(rows, headers, fmt: str, widths: list[int] | None) -> str:
    from tabulate import tabulate

    # Headers wrap too (between their words: each column is at least its header's longest word).
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True,
                    maxcolwidths=widths if widths else None, maxheadercolwidths=widths if widths else None)


def plain_table(rows: Sequence[Sequence], headers: Sequence[str]) -> str:
    """`rows` under `headers` as tabulate's "simple" format draws them (numbers to the right, text
    to the left, a cell's lines stacked), drawn here for the plan a dry run shows: importing tabulate
    costs more than showing the plan (its version lookup loads importlib.metadata; bench_overhead)."""
    right = [bool(rows) and all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
    cells = [[_cell(v).strip().split("\n") for v in r] for r in rows]
    widths = [max([len(h) + 2, *(len(line) for r in cells for line in r[i])]) for i, h in enumerate(headers)]

    def line(parts: Sequence[str]) -> str:
        return "  ".join(p.rjust(w) if r else p.ljust(w) for p, w, r in zip(parts, widths, right)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    for r in cells:
        out += [line([c[k] if k < len(c) else "" for c in r]) for k in range(max(len(c) for c in r))]
    return "\n".join(out)


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
    # Each pass drops optional columns before the next one wraps narrower or cuts longer words.
    passes = [(COMFORTABLE, WIDE, WORD), (COMFORTABLE, COMFORTABLE, WORD),
              *((MIN_COLUMN, MIN_COLUMN, limit) for limit in _WORD_TIERS)]
    for floor, wide_floor, limit in passes:
        keep = list(range(len(headers)))
        dropped: list[str] = []
        while True:
            h = [headers[i] for i in keep]
            t = [[r[i] for i in keep] for r in table]
            text = _shrink(t, h, fmt, width, floor, [x in wide for x in h], wide_floor, limit)
            if text is not None or not any(o in h for o in optional):
                break
            victim = next(o for o in optional if o in h)
            keep.remove(headers.index(victim))
            dropped.append(victim)
        if text is not None:
            break
    if text is None:   # even the kept columns at their narrowest are wider: show them anyway, words whole
        text = _render(t, h, fmt, [max(MIN_COLUMN, w) for w in _longest_word(t, h, SHORT_WORD)])
    if dropped:
        text += "\n" + note(f"(not shown to fit {width} columns: {', '.join(dropped)}; "
                            "a wider terminal or --json shows them)", width)
    return text


def _word(header: str) -> int:
    return max((len(w) for w in header.split()), default=1)


def _longest_word(rows: list[list[str]], headers: list[str], limit: int = WORD) -> list[int]:
    """Per column: its longest word (header and cells) up to `limit` characters, so wrapping
    breaks lines between words, never inside one ("producti/on")."""
    return [max([_word(h), *(len(w) for r in rows for w in r[i].split() if len(w) <= limit)])
            for i, h in enumerate(headers)]


def note(text: str, width: int | None) -> str:
    """A line under a table (a footnote), wrapped at word boundaries to `width`."""
    if not width or len(text) <= width:
        return text
    return "\n".join(textwrap.wrap(text, width=max(20, width), break_long_words=False, break_on_hyphens=False))


def _shrink(rows: list[list[str]], headers: list[str], fmt: str, width: int | None,
            floor: int = MIN_COLUMN, last: list[bool] | None = None, last_floor: int = MIN_COLUMN,
            limit: int = WORD) -> str | None:
    """The table wrapped to `width`, or None when it cannot get that narrow."""
    text = _render(rows, headers, fmt, None)
    if width is None or _visible_width(text) <= width:
        return text
    widths = _natural(rows, headers)
    overhead = _visible_width(text) - sum(widths)
    last = last or [False] * len(widths)
    budget = width - overhead
    words = _longest_word(rows, headers, limit)
    floors = [min(w, max(last_floor if wide else floor, word)) for w, word, wide in zip(widths, words, last)]
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
