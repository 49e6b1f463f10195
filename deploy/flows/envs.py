"""`invoke env.*` and `invoke secrets.*`: the variable matrix, parity and rotation."""

from __future__ import annotations

import datetime as dt



def _matrix(svc):
    from deploy import envs

    return envs.load_matrix(svc.root)


def check(svc, env: str, as_json: bool = False) -> int:
    from deploy import envs

    svc.settings(env)  # an unknown environment name is caught with the settings' message
    report = envs.check(_matrix(svc), env, svc.root, svc.environ)
    if as_json:
        from deploy.flows import shapes

        svc.term.emit_json(shapes.env_check(report))
    else:
        svc.term.out(envs.render_check(report))
    return report.exit_code


def parity(svc, left: str, right: str) -> int:
    from deploy import envs

    report = envs.parity_from_files(_matrix(svc), svc.root, left, right)
    svc.term.out(envs.render_parity(report))
    return report.exit_code


def matrix(svc) -> None:
    from deploy import envs

    path = envs.write_matrix_doc(_matrix(svc), svc.root)
    svc.term.out(f"wrote {path.relative_to(svc.root)}")


def dotenv(svc, env: str, force: bool) -> None:
    from deploy import envs

    s = svc.settings(env)
    target = s.app_dir / ".env"
    res = envs.write_dotenv(_matrix(svc), env, target, root=svc.root, force=force)
    svc.term.out(f"wrote {target} ({res})" if res else f"wrote {target}")


def rotation(svc) -> int:
    from deploy import secrets

    m = _matrix(svc)
    today = dt.datetime.now(dt.UTC).date()
    report = secrets.rotation_report(m, today, secrets.read_rotations(secrets.rotation_log_path(m)))
    svc.term.out(secrets.render_rotation(report))
    return report.exit_code


def rotated(svc, name: str, env: str, by: str | None) -> None:
    from deploy import secrets
    from deploy.ledger import whoami

    m = _matrix(svc)
    secrets.record_rotation(m, name, env, by or whoami(), dt.datetime.now(dt.UTC))
    svc.term.out(f"recorded: {name} rotated in {env} by {by or whoami()} today")
