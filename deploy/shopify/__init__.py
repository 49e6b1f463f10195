"""The Shopify push: `shopify app deploy` for an environment's app configuration and
extensions, `shopify app versions list --json` to learn what is live, and
`shopify app release --version <previous>` as the undo.

Commands are built as data, the CLI's output is read by pure parsers, and one helper runs
the CLI: in the app directory, without a TTY (stdin empty, `CI=1`), with the automation
token only in the child's environment.

    commands   argv of deploy, release and versions list; the CLI's limits checked first
    output     the CLI's banners, links and versions JSON parsed; which version is live
    preflight  config, client_id, token and CLI present; the CLI's child environment
    push       running the CLI: deploy, release (the undo), versions, rollback
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.shopify.commands import (AUTOMATION_TOKEN_VAR, LISTED_MAX, MESSAGE_MAX, PARTNERS_TOKEN_VAR, VERSION_MAX,
                                         clean_source_url, clip_message, config_file_name, deploy_argv, release_argv,
                                         skip_reason, validate_version, versions_argv)
    from deploy.shopify.output import (CREATED, NOT_RELEASED, RELEASED, VERSION_NOT_RELEASED, VERSION_RELEASED,
                                       AppVersion, Banner, CliOutput, DeployOutcome, ReleaseOutcome, active_version,
                                       confirm_release, parse_cli_output, parse_deploy_output, parse_release_output,
                                       parse_versions, previous_version)
    from deploy.shopify.preflight import auth_env, check, check_client_id
    from deploy.shopify.push import (ShopifyDeployResult, ShopifyReleaseResult, deploy, prepare, release, rollback, undo,
                                     versions)
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.shopify.commands": ("AUTOMATION_TOKEN_VAR", "LISTED_MAX", "MESSAGE_MAX", "PARTNERS_TOKEN_VAR",
                                    "VERSION_MAX", "clean_source_url", "clip_message", "config_file_name",
                                    "deploy_argv", "release_argv", "skip_reason", "validate_version", "versions_argv"),
        "deploy.shopify.output": ("CREATED", "NOT_RELEASED", "RELEASED", "VERSION_NOT_RELEASED", "VERSION_RELEASED",
                                  "AppVersion", "Banner", "CliOutput", "DeployOutcome", "ReleaseOutcome",
                                  "active_version", "confirm_release", "parse_cli_output", "parse_deploy_output",
                                  "parse_release_output", "parse_versions", "previous_version"),
        "deploy.shopify.preflight": ("auth_env", "check", "check_client_id"),
        "deploy.shopify.push": ("ShopifyDeployResult", "ShopifyReleaseResult", "deploy", "prepare", "release",
                                "rollback", "undo", "versions"),
    })

__all__ = [
    "AUTOMATION_TOKEN_VAR", "PARTNERS_TOKEN_VAR", "MESSAGE_MAX", "VERSION_MAX",
    "AppVersion", "Banner", "CliOutput", "DeployOutcome", "ReleaseOutcome",
    "ShopifyDeployResult", "ShopifyReleaseResult",
    "skip_reason", "config_file_name", "validate_version", "clip_message", "clean_source_url",
    "deploy_argv", "release_argv", "versions_argv",
    "parse_cli_output", "parse_versions", "parse_deploy_output", "parse_release_output",
    "active_version", "previous_version", "confirm_release", "check_client_id", "LISTED_MAX",
    "auth_env", "check", "versions", "deploy", "release", "undo", "rollback", "prepare",
    "RELEASED", "NOT_RELEASED", "CREATED", "VERSION_RELEASED", "VERSION_NOT_RELEASED",
]
