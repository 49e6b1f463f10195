"""Secrets as a type, and the one redaction layer every output path goes through.

`Secret` is a `str` whose display forms (`str`, `repr`, `format`) are `***`, so a secret
interpolated into a message, a table or an echoed command cannot show its value. The
real value is only reachable through `.reveal()`, which is what goes into a child
process's environment.

`register()` records secret values process-wide; `redact()` masks every registered value
(and any password inside a URL) in a text before it is shown or logged: the terminal, the
deployment log, a step summary, an error message, a step's result line in the ledger.

Redaction is for display only. Stored run state is never redacted (a masked migration name
or path read back as the truth would corrupt an undo); it holds no secret by type instead
(the ledger refuses a `Secret` in it).

How short a secret is masked (the trade-off):
- shorter than MIN_LENGTH (4) characters: not masked by value. A 1-character "secret" would
  turn every `1` of every message into `***`, and such a value protects nothing anyway
  (it is guessed in a few tries). A `Secret` object still always displays as `***`.
- MIN_LENGTH up to WORD_LENGTH-1 (4..7) characters: masked where it stands as a whole token
  (not inside a longer run of letters and digits), so `SESSION_SECRET=2024` does not mask the
  `2024` inside `20240105093000_init`. The cost: a short secret glued to other letters or
  digits is shown; the leak suite's minimum is this same MIN_LENGTH.
- WORD_LENGTH (8) characters and longer: masked wherever it appears.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_LENGTH = 4     # shorter values are not masked by value (see the module docstring)
WORD_LENGTH = 8    # shorter values are masked as whole tokens only

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


class Secret(str):
    """A string that never displays its value."""

    __slots__ = ()

    def __new__(cls, value: str):
        # str(Secret) is the mask: a Secret made from a Secret must copy its value, not "***".
        plain = str.__str__(value) if isinstance(value, str) else value
        self = super().__new__(cls, plain)
        register(plain)
        return self

    def reveal(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)


def reveal(value: str) -> str:
    """The plain value of a `Secret`, or the string itself."""
    return value.reveal() if isinstance(value, Secret) else str(value)


def register(value: str | None) -> None:
    """Remember a secret value so every later `redact()` masks it."""
    global _pattern
    if not value:
        return
    plain = str.__str__(value)
    if plain.strip() == "" or len(plain) < MIN_LENGTH or plain in _values:
        return
    with _lock:
        _values.add(plain)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(_alternative(v) for v in ordered))


def _alternative(value: str) -> str:
    if len(value) >= WORD_LENGTH:
        return re.escape(value)
    # A short value only as a whole token: no letter or digit right before or after it.
    return rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])"


def forget_all() -> None:
    """Forget every registered value (tests only)."""
    global _pattern
    with _lock:
        _values.clear()
        _pattern = None


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<at>@)")


def redact(text: object) -> str:
    """`text` with every registered secret and every URL password replaced by `***`."""
    s = text if isinstance(text, str) and not isinstance(text, Secret) else str(text)
    if isinstance(text, Secret):
        return MASK
    pattern = _pattern
    if pattern is not None:
        s = pattern.sub(MASK, s)
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + m.group("at"), s)


def mask_url(url: str) -> str:
    """A connection URL with its password shown as `***`."""
    plain = reveal(url)
    try:
        parts = urlsplit(plain)
    except ValueError:
        return redact(plain)
    if parts.password is None:
        return redact(plain)
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return redact(urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostport}")))
