"""Secrets as a type, and the one redaction layer every output path goes through.

`Secret` is a `str` whose display forms (`str`, `repr`, `format`) are `***`, so a secret
interpolated into a message, a table or an echoed command cannot show its value. The
real value is only reachable through `.reveal()`, which is what goes into a child
process's environment.

`register()` records secret values process-wide; `redact()` masks every registered value
(and any password inside a URL) in a text before it is printed, stored in the ledger,
appended to the deployment log or written to a step summary. Short secrets are masked too.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None


class Secret(str):
    """A string that never displays its value."""

    __slots__ = ()

    def __new__(cls, value: str):
        self = super().__new__(cls, value)
        register(value)
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
    if plain.strip() == "" or plain in _values:
        return
    with _lock:
        _values.add(plain)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


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
