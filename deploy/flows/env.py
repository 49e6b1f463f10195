"""`invoke env.*`: the variable matrix, an environment's variables, parity, .env files."""

from __future__ import annotations

from deploy import envs
from deploy.flows import shapes


def _matrix(svc):
    return envs.load_matrix(svc.root)


def check(svc, env: str, as_json: bool = False) -> int:
    svc.settings(env)  # an unknown environment name is caught with the settings' message
    report = envs.check(_matrix(svc), env, svc.root, svc.environ)
    if as_json:
        svc.term.emit_json(shapes.env_check(report))
    else:
        svc.term.out(envs.render_check(report))
    return report.exit_code


def parity(svc, left: str, right: str) -> int:
    report = envs.parity_from_files(_matrix(svc), svc.root, left, right)
    svc.term.out(envs.render_parity(report))
    return report.exit_code


def matrix(svc) -> None:
    path = envs.write_matrix_doc(_matrix(svc), svc.root)
    svc.term.out(f"wrote {path.relative_to(svc.root)}")


def dotenv(svc, env: str, force: bool) -> None:
    s = svc.settings(env)
    target = s.app_dir / ".env"
    res = envs.write_dotenv(_matrix(svc), env, target, root=svc.root, force=force)
    svc.term.out(f"wrote {target} ({res})" if res else f"wrote {target}")
