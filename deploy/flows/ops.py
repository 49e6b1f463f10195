"""`invoke golive.check`, `invoke bootstrap`, `invoke log.*`, `invoke runbooks.*`."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from deploy import cli, feedback


def golive_check(env: str, sha: str | None, as_json: bool = False) -> int:
    from deploy import golive
    from deploy.flows.common import app_sha

    s = cli.settings(env)
    led = cli.ledger()
    full = app_sha(s, sha)
    cl = golive.run_checklist(s, led, full, datetime.now(timezone.utc), os.environ)
    path = golive.write_markdown(cl, s.root)
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.golive(cl))
    else:
        cli.out(golive.render(cl, width=cli.width()))
        cli.out(f"wrote {path.relative_to(s.root)}")
    feedback.append(s.root, feedback.Entry(kind="golive", env=env, outcome="GO" if cl.ok else "NO GO",
                                           who=_who(), sha=full,
                                           text="; ".join(f"{i.name}: {i.reason}" for i in cl.failing)[:400] or None))
    return cl.exit_code


def bootstrap() -> int:
    from deploy import bootstrap as b

    root = cli.root()
    r = b.bootstrap(root, cli.settings("local"), os.environ, datetime.now(timezone.utc))
    cli.out(b.render(r))
    return r.exit_code


def _who() -> str:
    from deploy.ledger import whoami

    return whoami()


def log_entry(kind: str, env: str, text: str) -> None:
    from deploy.errors import SettingsError

    s = cli.settings(env)
    if not (text or "").strip():
        raise SettingsError("--text is empty.", f'Say what the {kind} is: --text="..."')
    path = feedback.append(s.root, feedback.Entry(kind=kind, env=env, outcome=kind, who=_who(), text=text))
    cli.out(f"logged {kind} for {env} in {path.relative_to(s.root)}")


def runbooks_check() -> int:
    from deploy import runbooks

    from pathlib import Path

    root = cli.root()
    toolkit = Path(__file__).resolve().parents[2]  # the tasks.py this toolkit runs from
    report = runbooks.check(root, root if (root / "tasks.py").exists() else toolkit)
    cli.out(report.render())
    return report.exit_code


def runbooks_stamp() -> None:
    from deploy import runbooks

    root = cli.root()
    changed = runbooks.stamp(root, cli.ledger())
    cli.out("\n".join(f"stamped {p.relative_to(root)}" for p in changed) or "runbooks already current")
