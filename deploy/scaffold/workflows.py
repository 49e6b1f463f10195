"""The GitHub workflows `init` writes: deploy-staging, deploy-production, rollback and hotfix.

The toolkit's own workflows (.github/workflows/) are the model. Hardening, as in ours:
actions pinned to commit SHAs (the tag in the comment), the Shopify CLI pinned, each secret
given to the one step that needs it, workflow values reach `run:` scripts through `env:`
only, npm and pip cached, a first step that names every required secret or variable that
is not set. Production takes the evidence and artifact the staging run of the same commit
proved (found with `gh run list`, never pasted) and runs no test itself.
"""

from __future__ import annotations

from typing import Sequence

from deploy.scaffold.detection import install_argv
from deploy.scaffold.facts import AppFacts
from deploy.scaffold.variables import variables

SHOPIFY_CLI_VERSION = "3.94.3"          # the release the toolkit's contract test checked
PG_MAJOR_DEFAULT = "17"                 # pg_dump must be at least the server's major: vars.PG_MAJOR overrides
ACTIONS = {
    "checkout": "actions/checkout@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0",
    "setup-node": "actions/setup-node@49933ea5288caeca8642d1e84afbd3f7d6820020 # v4.4.0",
    "setup-python": "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065 # v5.6.0",
    "cache": "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684 # v4.2.3",
    "upload-artifact": "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02 # v4.6.2",
    "download-artifact": "actions/download-artifact@d3f86a106a0bac45b974a628896c90dbdf5c8093 # v4.3.0",
}
# What every deploying job needs besides the app's own secrets (docs/adopting.md says where each comes from).
WORKFLOW_VARS = ("DEPLOY_TOOLKIT", "DEPLOY_KNOWN_HOSTS")       # repository or environment variables
WORKFLOW_SECRETS = ("DEPLOY_SSH_KEY", "DEPLOY_LEDGER_URL")     # environment secrets


def _e(expr: str) -> str:
    return "${{ " + expr + " }}"


def _env_block(pairs: Sequence[tuple[str, str]], n: int = 10) -> str:
    return "".join(f"{' ' * n}{k}: {v}\n" for k, v in pairs) or f"{' ' * n}NO_SECRETS: \"\"\n"


def _app_secrets(f: AppFacts) -> list[str]:
    return [v["name"] for v in variables(f) if v["secret"]]


def _check_inputs_step(f: AppFacts, env: str) -> str:
    """Fail fast: every secret and variable the job reads is set, else the names of the missing."""
    names = [*WORKFLOW_VARS, *WORKFLOW_SECRETS, *_app_secrets(f)]
    pairs = [(n, _e(f"vars.{n}") if n in WORKFLOW_VARS else _e(f"secrets.{n}")) for n in names]
    return (
        f"      - name: Required secrets and variables are set\n"
        f"        env:\n{_env_block(pairs)}"
        f"        run: |\n"
        f"          missing=\"\"\n"
        f"          for name in {' '.join(names)}; do\n"
        f"            [ -n \"$(printenv \"$name\")\" ] || missing=\"$missing $name\"\n"
        f"          done\n"
        f"          if [ -n \"$missing\" ]; then\n"
        f"            echo \"::error::not set for environment {env}:$missing (Settings > Secrets and variables > Actions, "
        f"or the environment's own; docs/adopting.md says what each is)\"\n"
        f"            exit 1\n"
        f"          fi\n"
    )


def _node_cache(f: AppFacts) -> str:
    if not f.lockfile or f.package_manager not in ("npm", "yarn"):
        return ""   # pnpm's cache needs pnpm on PATH first; no lockfile, nothing to key on
    return (f"          cache: {f.package_manager}\n"
            f"          cache-dependency-path: {_e('env.APP_DIR')}/{f.lockfile}\n")


def _setup_steps(f: AppFacts, *, ref: str = "", tools: bool = True) -> str:
    """Checkout, Node and Python (cached), the toolkit; with `tools`: the pinned Shopify CLI, a
    pg_dump matching the server, and the SSH key and known hosts."""
    with_ref = f"          ref: {ref}\n" if ref else ""
    out = (
        f"      - uses: {ACTIONS['checkout']}\n"
        f"        with:\n{with_ref}"
        f"          fetch-depth: 0   # promote resolves the SHA and checks the tree is clean\n"
        f"          persist-credentials: false\n\n"
        f"      - uses: {ACTIONS['setup-node']}\n"
        f"        with:\n"
        f"          node-version: 20   # Shopify CLI 3.x runs on Node 20\n{_node_cache(f)}\n"
        f"      - uses: {ACTIONS['setup-python']}\n"
        f"        with:\n"
        f"          python-version: \"3.11\"\n\n"
        f"      - name: Cache pip's downloads\n"
        f"        uses: {ACTIONS['cache']}\n"
        f"        with:\n"
        f"          path: ~/.cache/pip\n"
        f"          key: pip-{_e('runner.os')}-py3.11-{_e('vars.DEPLOY_TOOLKIT')}\n\n"
        f"      - name: Install the deploy toolkit\n"
        f"        env:\n"
        f"          DEPLOY_TOOLKIT: {_e('vars.DEPLOY_TOOLKIT')}   # pip requirement, e.g. git+https://github.com/ORG/TOOLKIT@TAG\n"
        f"        run: pip install \"$DEPLOY_TOOLKIT\"\n"
    )
    if not tools:
        return out
    out += (
        f"\n      - name: Install the Shopify CLI (pinned)\n"
        f"        run: npm install --global \"@shopify/cli@$SHOPIFY_CLI_VERSION\"\n"
    )
    if f.datasource and f.datasource.provider == "postgresql":
        pg_major = f"vars.PG_MAJOR || '{PG_MAJOR_DEFAULT}'"
        out += (
            f"\n      - name: PostgreSQL client matching the server (pg_dump must be at least its major version)\n"
            f"        env:\n"
            f"          PG_MAJOR: {_e(pg_major)}\n"
            f"        run: |\n"
            f"          sudo /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y\n"
            f"          sudo apt-get install -y --no-install-recommends \"postgresql-client-$PG_MAJOR\"\n"
            f"          echo \"/usr/lib/postgresql/$PG_MAJOR/bin\" >> \"$GITHUB_PATH\"\n"
        )
    out += (
        f"\n      - name: SSH key and known hosts for the hosts\n"
        f"        env:\n"
        f"          DEPLOY_SSH_KEY: {_e('secrets.DEPLOY_SSH_KEY')}\n"
        f"          DEPLOY_KNOWN_HOSTS: {_e('vars.DEPLOY_KNOWN_HOSTS')}\n"
        f"        run: |\n"
        f"          install -m 700 -d ~/.ssh\n"
        f"          ( umask 077 && printf '%s\\n' \"$DEPLOY_SSH_KEY\" > ~/.ssh/id_ed25519 )\n"
        f"          printf '%s\\n' \"$DEPLOY_KNOWN_HOSTS\" > ~/.ssh/known_hosts\n"
    )
    return out


def _evidence_steps(f: AppFacts, env: str) -> str:
    install = " ".join(install_argv(f.package_manager, lockfile=bool(f.lockfile)))
    return (
        f"      - name: Install the app and make the evidence (Vitest JSON)\n"
        f"        working-directory: {_e('env.APP_DIR')}\n"
        f"        run: |\n"
        f"          {install}\n"
        f"          mkdir -p \"$GITHUB_WORKSPACE/evidence\"\n"
        f"          npx vitest run --reporter=default --reporter=json --outputFile.json=\"$GITHUB_WORKSPACE/evidence/vitest.json\"\n\n"
        f"      - name: Bind the reports to this commit (invoke evidence.collect)\n"
        f"        run: invoke evidence.collect --sha=\"$SHA\" --env={env} --files=evidence/vitest.json\n"
    )


def _promote_steps(f: AppFacts, env: str) -> str:
    secrets = _env_block([(n, _e(f"secrets.{n}")) for n in _app_secrets(f)])
    return (
        f"      - name: Check the variables (invoke env.check)\n"
        f"        env:\n{secrets}"
        f"        run: invoke env.check --env={env}\n\n"
        f"      - name: Promote (invoke promote)\n"
        f"        env:\n{secrets}"
        f"          DEPLOY_LEDGER_URL: {_e('secrets.DEPLOY_LEDGER_URL')}   # one ledger: locks, history, staging's record\n"
        f"        run: invoke promote --to={env} --sha=\"$SHA\" --yes\n"
    )


def _upload(name: str, path: str, days: int) -> str:
    return (
        f"        uses: {ACTIONS['upload-artifact']}\n"
        f"        with:\n"
        f"          name: {name}\n"
        f"          path: {path}\n"
        f"          include-hidden-files: true\n"
        f"          if-no-files-found: error\n"
        f"          retention-days: {days}\n"
    )


def _download(name: str, path: str, run_id: str = "") -> str:
    other = f"          run-id: {run_id}\n          github-token: {_e('github.token')}\n" if run_id else ""
    return (
        f"        uses: {ACTIONS['download-artifact']}\n"
        f"        with:\n"
        f"          name: {name}\n"
        f"          path: {path}\n{other}"
    )


def _keep_for_production(sha: str) -> str:
    return (
        f"      - name: Keep the evidence and the artifact for production (the bytes staging tested)\n"
        f"        if: success()\n"
        f"        uses: {ACTIONS['upload-artifact']}\n"
        f"        with:\n"
        f"          name: staging-proof-{sha}\n"
        f"          path: |\n"
        f"            evidence/\n"
        f"            .deploy/artifacts/\n"
        f"          include-hidden-files: true   # .deploy and .lighthouseci are dot-folders\n"
        f"          if-no-files-found: error\n"
        f"          retention-days: 90\n"
    )


def _header(what: str) -> str:
    return (f"# {what}\n"
            "# Written by `invoke init`; every command is a toolkit task (`invoke --list`). Hardening, as the\n"
            "# toolkit's own workflows: actions pinned to commit SHAs, the Shopify CLI pinned, npm and pip\n"
            "# cached, each secret given to the one step that needs it, workflow values reach `run:`\n"
            "# scripts through `env:` only, and a first step that names any secret or variable not set.\n")


def _job(name: str, env: str, title: str, body: str, *, extra: str = "", timeout: int = 45,
         sha: str = "github.sha") -> str:
    return (
        f"  {name}:\n"
        f"    name: {title}\n{extra}"
        f"    runs-on: ubuntu-24.04\n"
        f"    timeout-minutes: {timeout}\n"
        f"    environment:\n"
        f"      name: {env}\n"
        f"    concurrency:\n"
        f"      group: deploy-{env}\n"
        f"      cancel-in-progress: false   # never kill a promotion half way; the next one waits\n"
        f"    env:\n"
        f"      SHA: {_e(sha)}\n"
        f"      DEPLOY_WHO: {_e('github.actor')}\n"
        f"    steps:\n{body}"
    )


def _top(name: str, trigger: str, app_rel: str, *, actions_read: bool = False) -> str:
    perms = "  contents: read\n" + ("  actions: read       # artifacts and runs of another workflow run\n"
                                    if actions_read else "")
    return (f"name: {name}\n\non:\n{trigger}\n\npermissions:\n{perms}\n"
            f"env:\n  APP_DIR: {app_rel}\n  SHOPIFY_CLI_VERSION: {SHOPIFY_CLI_VERSION}\n"
            f"  PYTHONUNBUFFERED: \"1\"\n\njobs:\n")


_SHA_CHECK = (
    "      - name: The input is a full commit SHA\n"
    "        run: |\n"
    "          if ! printf '%s' \"$SHA\" | grep -Eq '^[0-9a-f]{40}$'; then\n"
    "            echo \"::error::sha must be 40 lowercase hex characters\"\n"
    "            exit 2\n"
    "          fi\n"
)
_SHA_INPUT = ("  workflow_dispatch:\n    inputs:\n      sha:\n"
              "        description: \"Commit to promote (40 hex characters; a deploy-staging run of it succeeded)\"\n"
              "        required: true\n        type: string")


def _find_staging_run() -> str:
    """The newest succeeded deploy-staging run of $SHA, as the step output `run_id`."""
    return (
        "      - name: Find the staging run of this commit\n"
        "        id: staging\n"
        "        env:\n"
        f"          GH_TOKEN: {_e('github.token')}\n"
        f"          REPO: {_e('github.repository')}\n"
        "        run: |\n"
        "          run_id=$(gh run list --repo \"$REPO\" --workflow deploy-staging.yml --commit \"$SHA\" \\\n"
        "            --status success --limit 1 --json databaseId --jq '.[0].databaseId // empty')\n"
        "          if [ -z \"$run_id\" ]; then\n"
        "            echo \"::error::no succeeded deploy-staging run of $SHA: promote it to staging first\"\n"
        "            exit 1\n"
        "          fi\n"
        "          echo \"run_id=$run_id\" >> \"$GITHUB_OUTPUT\"\n"
    )


def workflow(f: AppFacts, env: str, app_rel: str) -> str:
    if env == "staging":
        body = "\n".join([_check_inputs_step(f, env), _setup_steps(f), _evidence_steps(f, env),
                          _promote_steps(f, env), _keep_for_production(_e("github.sha"))])
        return (_header("Push to main -> the app's tests make the evidence -> `invoke promote --to=staging`;\n"
                        "# the evidence and artifact are kept for production.")
                + _top("deploy-staging", "  push:\n    branches: [main]", app_rel)
                + _job("deploy", env, "promote to staging", body))
    body = "\n".join([
        _SHA_CHECK, _check_inputs_step(f, env), _find_staging_run(),
        _setup_steps(f, ref=_e("inputs.sha")),   # before the download: checkout empties the workspace
        "      - name: The evidence and artifact staging proved (the download fails when that run has none)\n"
        + _download(f"staging-proof-{_e('inputs.sha')}", ".", _e("steps.staging.outputs.run_id")),
        "      - name: Judge staging's evidence (invoke gate)\n"
        f"        run: invoke gate --env={env} --sha=\"$SHA\"\n",
        _promote_steps(f, env)])
    return (_header("Run by hand after staging: the evidence and artifact the staging run of the commit proved\n"
                    "# -> `invoke promote --to=production` (no test is re-run, nothing is rebuilt).")
            + _top("deploy-production", _SHA_INPUT, app_rel, actions_read=True)
            + _job("deploy", env, "promote to production", body, timeout=60, sha="inputs.sha"))


def rollback_workflow(f: AppFacts, app_rel: str) -> str:
    trigger = ("  workflow_dispatch:\n    inputs:\n"
               "      environment:\n        description: \"Environment to roll back\"\n        required: true\n"
               "        type: choice\n        options: [staging, production]\n"
               "      db:\n        description: \"Database: keep it, down-migrate this release's migrations, or restore "
               "the pre-deploy backup\"\n        required: true\n        type: choice\n"
               "        options: [keep, down, restore]\n        default: keep")
    check = _check_inputs_step(f, "the chosen environment")
    secrets = _env_block([(n, _e(f"secrets.{n}")) for n in _app_secrets(f)])
    body = "\n".join([
        check, _setup_steps(f),
        "      - name: Roll back (invoke rollback)\n"
        f"        env:\n{secrets}"
        f"          DEPLOY_LEDGER_URL: {_e('secrets.DEPLOY_LEDGER_URL')}\n"
        "          TARGET: " + _e("inputs.environment") + "\n"
        "          DB_MODE: " + _e("inputs.db") + "\n"
        "        run: invoke rollback --env=\"$TARGET\" --db=\"$DB_MODE\" --yes\n"])
    job = _job("rollback", _e("inputs.environment"), f"roll back {_e('inputs.environment')}", body, timeout=30)
    return (_header("On-call's way back (docs/runbooks/rollback.md): previous release, previous Shopify version,\n"
                    "# the database as chosen; waits for the chosen environment's reviewers.")
            + _top("rollback", trigger, app_rel) + job)


def hotfix_workflow(f: AppFacts, app_rel: str) -> str:
    trigger = (_SHA_INPUT.replace("Commit to promote (40 hex characters; a deploy-staging run of it succeeded)",
                                  "The hotfix commit (40 hex characters, on the hotfix branch)")
               + "\n      environment:\n        description: \"How far: staging only, or staging then production\"\n"
                 "        required: true\n        type: choice\n        options: [staging, production]\n"
                 "        default: staging")
    staging = "\n".join([_SHA_CHECK, _check_inputs_step(f, "staging"), _setup_steps(f, ref=_e("inputs.sha")),
                         _evidence_steps(f, "staging"), _promote_steps(f, "staging"),
                         _keep_for_production(_e("inputs.sha"))])
    production = "\n".join([
        _check_inputs_step(f, "production"), _setup_steps(f, ref=_e("inputs.sha")),
        "      - name: The evidence and artifact this run's staging job proved\n"
        + _download(f"staging-proof-{_e('inputs.sha')}", "."),
        "      - name: Judge staging's evidence (invoke gate)\n"
        "        run: invoke gate --env=production --sha=\"$SHA\"\n",
        _promote_steps(f, "production")])
    return (_header("A hotfix through the same gated path (docs/runbooks/hotfix.md): its tests, staging, then\n"
                    "# production with this run's evidence and artifact when asked.")
            + _top("hotfix", trigger, app_rel)
            + _job("staging", "staging", "promote the hotfix to staging", staging, sha="inputs.sha") + "\n"
            + _job("production", "production", "promote the hotfix to production", production, timeout=60,
                   sha="inputs.sha", extra="    needs: staging\n    if: inputs.environment == 'production'\n"))
