"""What the task layer hands a flow: the project, its settings, the ledger, the terminal and
the process environment (drawn in docs/architecture.md).

deploy/cli.py builds one `Services` per task (`cli.services()`); flows take it as their
first argument and never import deploy/cli (tests/test_layers.py checks the rule). A test
or another front end builds its own: `Services(root=tmp, environ={...}, term=Terminal(out))`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TextIO

from deploy import display, envs
from deploy.config import environments, load
from deploy.errors import Aborted, DeployError, SettingsError
from deploy.ledger import Ledger, default_url
from deploy.redact import redact


def terminal_width() -> int:
    """The terminal's width in columns: COLUMNS when set, else the terminal's. Output that
    goes to no terminal (a CI log, a pipe, a file) is not wrapped: a log keeps each
    message on one line, whole, for grep and for the reader's own wrapping."""
    return shutil.get_terminal_size((UNWRAPPED, 24)).columns


UNWRAPPED = 1000   # columns when there is no terminal: wide enough that nothing is wrapped


class Terminal:
    """Where a task prints and asks: every line redacted; tables fitted to the width."""

    def __init__(self, out: TextIO | None = None, stdin: TextIO | None = None, environ: Mapping[str, str] | None = None):
        self._out = out
        self._stdin = stdin
        self._environ = os.environ if environ is None else environ

    @property
    def stream(self) -> TextIO:
        return self._out or sys.stdout  # looked up late: pytest's capsys swaps sys.stdout

    def out(self, text: str = "") -> None:
        print(redact(text), file=self.stream, flush=True)

    def width(self) -> int:
        return terminal_width()

    def note(self, text: str) -> None:
        """A footnote under a table, wrapped to the terminal's width."""
        self.out(display.note(text, self.width()))

    def table(self, rows, headers, *, fmt: str = "simple", optional=()) -> str:
        """`rows` as a table that fits the terminal (deploy/display.py: wrap, then drop `optional`)."""
        return display.fit(rows, headers, self.width(), fmt=fmt, optional=optional)

    def emit_json(self, value: Any) -> None:
        print(redact(json.dumps(value, indent=2, default=str)), file=self.stream, flush=True)

    def confirm(self, question: str, yes: bool) -> None:
        """Ask unless --yes; refuse (Aborted) without a terminal or in CI."""
        if yes:
            return
        stdin = self._stdin or sys.stdin
        if not stdin.isatty() or self._environ.get("CI"):
            raise Aborted(f"{question} needs confirmation and there is no terminal to ask.", "Pass --yes to confirm.")
        if self._stdin is None:
            answer = input(f"{question} [y/N] ").strip().lower()
        else:
            self.stream.write(f"{question} [y/N] ")
            self.stream.flush()
            answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Aborted("Not confirmed; nothing was changed.")


@dataclass(frozen=True)
class Services:
    """The project root, its settings and ledger, the terminal and the environment of one task."""

    root: Path
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    term: Terminal = field(default_factory=Terminal)

    def settings(self, env: str | None, flag: str = "--env"):
        """The typed settings of `env`; a SettingsError naming `flag` (the task's own flag,
        e.g. promote's --to) and the environments there are when none was given."""
        if not env:
            try:
                names = ", ".join(environments(self.root)) or "none yet"
            except (DeployError, OSError):
                names = "see env/*.toml"
            raise SettingsError(f"No environment given: {flag} is required.",
                                f"Pass {flag}=NAME, one of the files env/NAME.toml ({names}).")
        return load(env, self.root)

    def environ_for(self, env: str) -> Mapping[str, str]:
        """The environment a task acting on `env` reads: this process's, with every variable of
        the matrix replaced by what `invoke env.check --env=ENV` reports (envs.deployer_environ)."""
        return envs.deployer_environ(self.root, env, self.environ)

    def ledger(self):
        """The project's ledger (DEPLOY_LEDGER_URL of this environment, else SQLite under .deploy/), opened now."""
        return Ledger.open(self.root, default_url(self.root, self.environ))
