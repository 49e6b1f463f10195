"""SQL scripts as statements: where each top-level statement of a migration starts and ends,
and which of them are transaction control (`BEGIN;` ... `COMMIT;`). Pure.

The splitter knows what can hide a `;` in Postgres and SQLite scripts: quoted strings
('...', with '' inside; E'...' with backslash escapes), quoted identifiers ("..."),
dollar quotes ($$...$$, $tag$...$tag$), line comments (--) and nested block comments
(/* /* */ */). It does not parse SQL: it finds statement boundaries and each statement's
leading words, which is all that transaction control and the SQLite classifier need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Statement:
    """One top-level statement: its text without the `;`, where it starts (character offset
    and 1-based line of its first word) and its leading words, upper-cased."""

    text: str
    start: int
    line: int
    words: tuple[str, ...]

    def starts(self, *words: str) -> bool:
        return self.words[:len(words)] == words


def _skip(script: str, i: int) -> int:
    """The index after the quoted string, identifier, dollar quote or comment starting at i
    (i itself when none starts there)."""
    c = script[i]
    nxt = script[i + 1] if i + 1 < len(script) else ""
    if c == "-" and nxt == "-":
        j = script.find("\n", i)
        return len(script) if j < 0 else j + 1
    if c == "/" and nxt == "*":
        depth, j = 1, i + 2
        while j < len(script) and depth:
            if script.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif script.startswith("*/", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        return j
    if c in ("'", '"'):
        escapes = c == "'" and i > 0 and script[i - 1] in "eE" and (i < 2 or not script[i - 2].isalnum())
        j = i + 1
        while j < len(script):
            if escapes and script[j] == "\\":
                j += 2
                continue
            if script[j] == c:
                if script[j + 1:j + 2] == c:   # a doubled quote inside
                    j += 2
                    continue
                return j + 1
            j += 1
        return len(script)
    if c == "$" and (i == 0 or not (script[i - 1].isalnum() or script[i - 1] == "_")):
        m = _DOLLAR.match(script, i)
        if m:
            end = script.find(m.group(0), m.end())
            return len(script) if end < 0 else end + len(m.group(0))
    return i


def _code(text: str) -> str:
    """`text` with comments replaced by spaces (for reading a statement's leading words)."""
    out, i = [], 0
    while i < len(text):
        j = _skip(text, i)
        if j == i:
            out.append(text[i])
            i += 1
            continue
        piece = text[i:j]
        out.append(" " * len(piece) if piece.startswith(("--", "/*")) else piece)
        i = j
    return "".join(out)


def split(script: str) -> tuple[Statement, ...]:
    """The script's top-level statements, in order (empty ones and bare comments left out)."""
    out: list[Statement] = []
    start, i = 0, 0

    def add(end: int) -> None:
        raw = script[start:end]
        code = _code(raw)
        body = code.strip()
        if not body:
            return
        lead = len(code) - len(code.lstrip())
        at = start + lead
        words = tuple(w.upper() for w in _WORD.findall(body[:200])[:6])
        out.append(Statement(raw[lead:].rstrip(), at, script.count("\n", 0, at) + 1, words))

    while i < len(script):
        j = _skip(script, i)
        if j != i:
            i = j
            continue
        if script[i] == ";":
            add(i)
            start = i + 1
        i += 1
    add(len(script))
    return tuple(out)


# Transaction control a migration may carry. Plain BEGIN/COMMIT (Prisma's enum changes) can be
# left out when the whole script runs in one transaction; anything else (a ROLLBACK, a
# savepoint, an isolation level) changes what the script means, so it runs as written.
_PLAIN_BEGIN = {("BEGIN",), ("BEGIN", "TRANSACTION"), ("BEGIN", "WORK"), ("START", "TRANSACTION")}
_PLAIN_COMMIT = {("COMMIT",), ("COMMIT", "TRANSACTION"), ("COMMIT", "WORK"), ("END",), ("END", "TRANSACTION"),
                 ("END", "WORK")}
_CONTROL = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "PREPARE", "ABORT"}


def transaction_control(script: str) -> tuple[Statement, ...]:
    """The statements of `script` that begin, end or roll back a transaction."""
    return tuple(s for s in split(script) if s.words and s.words[0] in _CONTROL
                 and not (s.words[0] == "PREPARE" and s.words[1:2] != ("TRANSACTION",))
                 and not (s.words[0] == "RELEASE" and not s.words[1:2]))


def without_transaction_control(script: str) -> str | None:
    """`script` with its plain BEGIN/COMMIT statements left out (each replaced by blank lines, so
    error positions and line numbers still point into the file), for running the whole migration
    in one transaction; None when it holds transaction control that cannot be left out so."""
    control = transaction_control(script)
    if not control:
        return script
    if any(s.words not in _PLAIN_BEGIN | _PLAIN_COMMIT for s in control):
        return None
    # Pairs only, BEGIN first: a lone END is more likely the end of a body the splitter cut (a
    # SQLite trigger's BEGIN ... END, a Postgres BEGIN ATOMIC function) than a COMMIT.
    opens = [s.words in _PLAIN_BEGIN for s in control]
    if opens != [i % 2 == 0 for i in range(len(control))] or len(control) % 2:
        return None
    out = script
    for s in sorted(control, key=lambda s: s.start, reverse=True):
        end = s.start + len(s.text)
        if out[end:end + 1] == ";":
            end += 1
        piece = out[s.start:end]
        out = out[:s.start] + re.sub(r"[^\n]", " ", piece) + out[end:]
    return out
