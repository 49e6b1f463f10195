"""`invoke env.*`: the variable matrix, an environment's variables, parity, .env files."""

from __future__ import annotations

from deploy import envs
from deploy.errors import SettingsError
from deploy.flows import rights, shapes, steps
from deploy.services import Services


def _matrix(svc: Services):
    return envs.load_matrix(svc.root)


def check(svc: Services, env: str, as_json: bool = False) -> int:
    s = svc.settings(env)  # an unknown environment name is caught with the settings' message
    report = envs.check(_matrix(svc), env, svc.root, svc.environ, not_needed=steps.not_needed(s, skip_shopify=False))
    if as_json:
        svc.term.emit_json(shapes.env_check(report))
    else:
        svc.term.out(envs.render_check(report))
    return report.exit_code


def parity(svc: Services, left: str, right: str) -> int:
    report = envs.parity_from_files(_matrix(svc), svc.root, left, right)
    svc.term.out(envs.render_parity(report))
    return report.exit_code


def matrix(svc: Services) -> None:
    path = envs.write_matrix_doc(_matrix(svc), svc.root)
    svc.term.out(f"wrote {path.relative_to(svc.root)}")


def dotenv(svc: Services, env: str, force: bool) -> None:
    s = svc.settings(env)
    target = s.app_dir / ".env"
    res = envs.write_dotenv(_matrix(svc), env, target, root=svc.root, force=force)
    svc.term.out(f"wrote {target} ({res})" if res else f"wrote {target}")


def push(svc: Services, env: str, *, yes: bool = False, dry_run: bool = False) -> None:
    """Write <deploy_to>/shared/.env on every host of `env` from its variables: one run under
    the environment's ledger lock and the hosts' deploy lock, recorded; a protected
    environment asks first (or --yes). A host that fails gets its previous file back."""
    s = svc.settings(env)
    t = steps.target(s)
    if not t.holds_env:
        raise SettingsError(f"{env} has no hosts ([hosts] hosts in {s.file.name} is empty).",
                            "env.push writes shared/.env on an environment's hosts; the local app reads env/ itself.")
    environ = svc.environ_for(s.name)
    report = envs.check(_matrix(svc), env, svc.root, svc.environ, not_needed={
        s.shopify.token_var: "env.push leaves it out: only the Shopify step uses it, the app never reads it"})
    if not report.ok:
        raise SettingsError(f"env.check {env} found problems; nothing was pushed:\n{envs.render_check(report)}",
                            f"Fix them, then run `invoke env.push --env={env}` again.")
    text = steps.shared_env_text(s, environ)
    names = _names(text)
    where = t.places()
    if dry_run:
        svc.term.out(f"would write {t.env_file()} (0600) on {', '.join(where)} with "
                     f"{len(names)} variable(s): {', '.join(names)}\ndry run: nothing was changed.")
        return
    # A promotion's rights and locks (flows/rights.py): the hosts' deploy lock for the run, the
    # ledger's lock, promote's question on a protected environment; the step's undo puts the
    # previous file back on every host, its finish drops the copy once the run succeeded.
    rights.act(svc, s, "env.push", [steps.env_push(s, environ)], led=svc.ledger(), yes=yes,
               question=f"Replace shared/.env on {len(where)} host(s) of {env} ({', '.join(names)})?")
    svc.term.out(f"{env}: shared/.env written (0600) on {', '.join(where)}: {', '.join(names)}")
    svc.term.out(f"the running app reads it at its next start (invoke promote --to={env}, or hosts.rollback)")


def _names(text: str) -> list[str]:
    """The variable names of a dotenv text (python-dotenv's reading: multi-line values kept whole)."""
    import io

    from dotenv import dotenv_values

    return list(dotenv_values(stream=io.StringIO(text), interpolate=False))
