"""The app's variables as `init` writes them: one entry per variable (from .env.example, the
code, the Shopify configs, the datasource and the toolkit's own), rendered as the matrix
`env/variables.toml` and the plain values of `env/<env>.env`."""

from __future__ import annotations

import json
import re
from datetime import date

from deploy.scaffold.facts import ENVIRONMENTS, AppFacts

# Names that hold credentials wherever they appear (a key that is public, such as
# SHOPIFY_API_KEY, the app's client id, is listed apart).
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|_KEY$|^KEY$|DATABASE_URL$|DIRECT_URL$")
_PUBLIC = {"SHOPIFY_API_KEY", "SHOPIFY_APP_URL", "SCOPES", "PORT", "NODE_ENV", "HOST"}


def toml_str(s: str) -> str:
    return json.dumps(s)


def _is_secret(name: str) -> bool:
    return name not in _PUBLIC and bool(_SECRET_NAME.search(name))


def _kind(name: str, value: str) -> str:
    v = value.strip()
    if name.endswith("_URL") or re.match(r"^(https?|postgres(ql)?|file|mysql|redis)://?", v) or v.startswith("file:"):
        return "url"
    if name == "PORT" or (v.isdigit() and len(v) < 10):
        return "int"
    if v.lower() in ("true", "false"):
        return "bool"
    return "string"


def variables(f: AppFacts) -> list[dict]:
    """One entry per variable the app reads: from .env.example, the Shopify app config, the
    datasource, and the toolkit's own (the automation token). Values per environment."""
    # A literal `url = "file:dev.sqlite"` (the template's) still means DATABASE_URL elsewhere:
    # Postgres needs `url = env("DATABASE_URL")`, which the staging settings point out.
    db_var = ((f.datasource.url_var or "DATABASE_URL") if f.datasource else "")
    direct = (f.datasource.direct_url_var if f.datasource else "") or ""
    by: dict[str, dict] = {}

    def add(name, description, *, value="", kind=None, secret=None, parity=None, source=None,
            local_value=None, values=None, known=False, only=None, only_local=False):
        """`known`: the toolkit knows this variable better than a .env.example comment does.
        `only`: required in that environment only (a deployer variable of one environment);
        `only_local`: the app's own name for a URL that hosts get through env.push."""
        v = by.setdefault(name, {"name": name, "values": {}})
        if only:
            v["only"] = only
        if only_local:
            v["only_local"] = True
        if known or "description" not in v:
            v["description"] = description
        v["kind"] = kind or v.get("kind") or _kind(name, value)
        v["secret"] = _is_secret(name) if secret is None else secret
        v["parity"] = parity or v.get("parity") or "differs"
        v["source"] = source or v.get("source")
        if local_value is not None and not v["values"].get("local"):
            v["values"]["local"] = local_value
        for env, val in (values or {}).items():
            if val and not v["values"].get(env):
                v["values"][env] = val

    for e in f.env_example:
        kind = _kind(e.name, e.value)
        add(e.name, e.comment or f"{e.name} (from the app's .env.example)", value=e.value, kind=kind,
            parity="free" if not _is_secret(e.name) else "differs",
            local_value=e.value if e.value and not _is_secret(e.name) and e.name != db_var else None)
    for e in f.code_vars:
        # What the code reads is what the app needs: seeded with no value (env.check names it
        # until it is set), never with another environment's.
        if e.name != db_var and e.name != direct:
            add(e.name, f"{e.name}: {e.comment}", kind=_kind(e.name, ""), parity="differs" if _is_secret(e.name)
                else "free")
    for env in ENVIRONMENTS:
        # Each environment's values come from its own config only (shopify_choice).
        c = f.shopify_config(env)
        if c is None:
            continue
        add("SHOPIFY_API_KEY", "Client ID of the environment's Shopify app (client_id of its shopify.app toml; "
                               "public)", kind="string", secret=False, source="shopify-partners",
            parity="differs", values={env: c.client_id}, known=True)
        add("SHOPIFY_APP_URL", "Public HTTPS URL of the app (application_url of its shopify.app toml)",
            kind="url", secret=False, parity="differs", values={env: c.application_url}, known=True)
        if c.scopes:
            add("SCOPES", "Access scopes the app requests (access_scopes.scopes)", kind="string", secret=False,
                parity="same", values={env: c.scopes}, known=True)
    if f.shopify:
        add("SHOPIFY_API_SECRET", "Client secret of the environment's Shopify app", kind="string", secret=True,
            source="shopify-partners")
        add("SHOPIFY_APP_AUTOMATION_TOKEN", "App Automation Token the deploy uses for `shopify app deploy` "
                                            "(Dev Dashboard; expires after 1, 3 or 6 months)",
            kind="string", secret=True, source="shopify-partners")
    if db_var:
        provider = f.datasource.provider if f.datasource else ""
        example = next((e.value for e in f.env_example if e.name == db_var), "")
        if provider == "sqlite":
            local_url = (f.datasource.url if f.datasource else "") or (example if example.startswith("file:") else "") or "file:./dev.sqlite"
            what = "a SQLite file locally"
        else:
            # A Postgres app's local database is Postgres: the app's own example URL, else the
            # developer fills it in (env.check names it); never a SQLite file, never staging's.
            local_url = example if re.match(r"postgres(ql)?://", example) else ""
            what = "a Postgres database on this machine locally"
        add(db_var, f"Prisma datasource URL the app reads ({what}; on hosts env.push writes the environment's)",
            kind="url", secret=True, source="runner", local_value=local_url or None, known=True,
            only_local=True)
        for env in ENVIRONMENTS[1:]:
            # The deployer reads each environment's URL from its own variable: a shell that holds
            # one environment's URL can never make a task act on or report another's database.
            add(f"{env.upper()}_DATABASE_URL", f"URL of the {env} database (the deployer's; the app gets it as "
                f"{db_var} through env.push)", kind="url", secret=True, source="runner", only=env, known=True)
            if direct:
                add(f"{env.upper()}_DIRECT_URL", f"Direct (session) URL of the {env} database for migrations and "
                    f"pg_dump (Prisma's directUrl; the app gets it as {direct})", kind="url", secret=True,
                    source="runner", only=env, known=True)
    if direct:
        add(direct, "Direct (session) connection for migrations and pg_dump (Prisma's directUrl)", kind="url",
            secret=True, only_local=True)
    return list(by.values())


def matrix_toml(f: AppFacts, today: date) -> str:
    lines = [
        "# The variable matrix of this app: one [variables.NAME] table per variable the app or the",
        "# deploy reads (seeded by `invoke init` from the app's .env.example, its shopify.app*.toml and",
        "# schema.prisma). Per variable: description, owner, type, parity (same | differs | free,",
        "# staging against production) and, per environment, required / secret / source.",
        "# Plain values live in env/<env>.env, secrets in the process environment (GitHub environment",
        "# secrets in CI) or the git-ignored env/<env>.local.env. Check with `invoke env.check --env=NAME`.",
        "#",
        f"# last_rotated = {today.isoformat()} below is the day `invoke init` ran: set it to the day each",
        "# secret's current value was issued.",
        "",
        "[matrix]",
        f"environments = [{', '.join(toml_str(e) for e in ENVIRONMENTS)}]",
        '''production = ["production"]''',
        '''local_files = ["local"]''',
    ]
    for v in variables(f):
        name = v["name"]
        lines += ["", f"[variables.{name}]", f"description = {toml_str(v['description'])}", 'owner = "team"',
                  f"type = {toml_str(v['kind'])}", f"parity = {toml_str(v['parity'])}"]
        if v["secret"] and v.get("only"):
            lines += ["secret = true", "rotation_days = 90", f"source = {toml_str(v['source'] or 'runner')}",
                      "required = false"]
            lines.append(f"{v['only']} = {{ required = true, last_rotated = {today.isoformat()} }}")
        elif v["secret"] and v.get("only_local"):
            # The app's name for it; each remote environment's value comes from <ENV>_DATABASE_URL.
            lines += ["secret = true", "rotation_days = 90", f"source = {toml_str(v['source'] or 'runner')}",
                      "required = false", 'local = { secret = false, source = "dotenv", required = true }']
        elif v["secret"]:
            lines += ["secret = true", "rotation_days = 90",
                      f"source = {toml_str(v['source'] or 'runner')}"]
            # Locally nothing is a secret: a SQLite file, dev credentials (or none at all).
            local_has = bool(v["values"].get("local"))
            lines.append(f"local = {{ secret = false, source = \"dotenv\"{'' if local_has else ', required = false'} }}")
            for env in ENVIRONMENTS[1:]:
                lines.append(f"{env} = {{ last_rotated = {today.isoformat()} }}")
        else:
            if v["source"] and v["source"] != "dotenv":
                lines.append(f"source = {toml_str(v['source'])}")
            for env in ENVIRONMENTS:
                if env == "local" and not v["values"].get("local"):
                    lines.append("local = { required = false }")
    return "\n".join(lines) + "\n"


def dotenv_text(f: AppFacts, env: str) -> str:
    head = {
        "local": "# Plain values for `local` (this machine), python-dotenv syntax; nothing here is a secret.",
        "staging": "# Plain (non-secret) values for `staging`. Secrets come from the GitHub environment \"staging\".",
        "production": "# Plain (non-secret) values for `production`. Secrets come from the GitHub environment "
                      "\"production\".",
    }[env]
    lines = [head, "# Declared in env/variables.toml; check with `invoke env.check --env=" + env + "`."]
    for v in variables(f):
        if v["secret"] and env != "local":
            continue
        val = v["values"].get(env, "")
        if v.get("only") or (v.get("only_local") and env != "local"):
            continue          # a deployer variable of one environment, or the app's name on hosts
        if env == "local" and not val and not v.get("only_local"):
            continue
        if not val:
            lines.append(f"# {v['name']}=   (fill in: {v['description']})")
        else:
            lines.append(f"{v['name']}={val}")
    return "\n".join(lines) + "\n"
