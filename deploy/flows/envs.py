"""`invoke env.*` and `invoke secrets.*`: the variable matrix, parity and rotation."""

from __future__ import annotations

import datetime as dt
import os

from deploy import cli


def _matrix():
    from deploy import envs

    return envs.load_matrix(cli.root())


def check(env: str, as_json: bool = False) -> int:
    from deploy import envs

    cli.settings(env)  # an unknown environment name is caught with the settings' message
    report = envs.check(_matrix(), env, cli.root(), os.environ)
    if as_json:
        from deploy.flows import shapes

        cli.emit_json(shapes.env_check(report))
    else:
        cli.out(envs.render_check(report))
    return report.exit_code


def parity(left: str, right: str) -> int:
    from deploy import envs

    report = envs.parity_from_files(_matrix(), cli.root(), left, right)
    cli.out(envs.render_parity(report))
    return report.exit_code


def matrix() -> None:
    from deploy import envs

    path = envs.write_matrix_doc(_matrix(), cli.root())
    cli.out(f"wrote {path.relative_to(cli.root())}")


def dotenv(env: str, force: bool) -> None:
    from deploy import envs

    s = cli.settings(env)
    target = s.app_dir / ".env"
    res = envs.write_dotenv(_matrix(), env, target, root=cli.root(), force=force)
    cli.out(f"wrote {target} ({res})" if res else f"wrote {target}")


def rotation() -> int:
    from deploy import secrets

    m = _matrix()
    today = dt.datetime.now(dt.UTC).date()
    report = secrets.rotation_report(m, today, secrets.read_rotations(secrets.rotation_log_path(m)))
    cli.out(secrets.render_rotation(report))
    return report.exit_code


def rotated(name: str, env: str, by: str | None) -> None:
    from deploy import secrets
    from deploy.ledger import whoami

    m = _matrix()
    secrets.record_rotation(m, name, env, by or whoami(), dt.datetime.now(dt.UTC))
    cli.out(f"recorded: {name} rotated in {env} by {by or whoami()} today")
