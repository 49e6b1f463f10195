"""`invoke init`: the starting files for putting the toolkit on an existing app.

Two halves, as everywhere in the toolkit: `detect` reads an app folder into `AppFacts`, and
`render` turns those facts into files (relative path -> text) without touching anything.
`write` is the only part that changes the disk: it never replaces an existing file unless
`force`, and says which files it kept. (No module is named after a function it exports, so
`deploy.scaffold.detect` is always the function.)

    facts          AppFacts and its parts (EnvVar, Datasource, ShopifyConfig): what init knows
    detection      what the app has: an app folder read into AppFacts (`detect`; the place for
                   anything new init should notice about an app, its Dockerfile among them)
    report         what init tells the reader beyond the files (`notices`)
    variables      env/variables.toml and env/<env>.env
    settings       env/<env>.toml
    workflows      .github/workflows/ (deploy-staging, deploy-production, rollback, hotfix)
    runbook_files  docs/runbooks/ for the app
    rendering      facts -> every file (`render`: path -> text), and the .gitignore rules
    disk           write and add_ignore_rules: the only writers
"""

from deploy.scaffold.detection import (code_variables, detect, ignores, install_argv, package_manager,
                                       parse_datasource, parse_env_example, parse_shopify_config, workflow_configs)
from deploy.scaffold.disk import IGNORE_HEADER, WriteResult, add_ignore_rules, write
from deploy.scaffold.facts import ENVIRONMENTS, AppFacts, Datasource, EnvVar, PackageManager, ShopifyConfig
from deploy.scaffold.rendering import ignore_rules, render
from deploy.scaffold.report import notices

__all__ = [
    "PackageManager", "EnvVar", "Datasource", "ShopifyConfig", "AppFacts", "WriteResult",
    "package_manager", "install_argv", "parse_datasource", "parse_env_example", "parse_shopify_config",
    "detect", "render", "write", "ignore_rules", "add_ignore_rules", "IGNORE_HEADER", "notices", "ignores",
    "code_variables", "workflow_configs", "ENVIRONMENTS",
]
