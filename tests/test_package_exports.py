"""deploy.backups, deploy.shopify and deploy.scaffold were one module each; as packages they
re-export every name their callers use (httpx's tested `__all__`), so `from deploy import
backups; backups.restore(...)` reads as before, and a name is the function, never a submodule
that happens to share it."""

import importlib
import types

import pytest

# The names callers use (deploy/, tests/, benchmarks/), beyond each package's __all__.
USED = {
    "deploy.backups": ["Backup", "backup", "backup_name", "free_name", "latest", "list_backups", "load_backup",
                       "pg_dump_argv", "provision", "prune", "restore", "restore_sql", "select_to_prune",
                       "verify", "written_since", "app_rows", "Writes", "VerifyResult", "RestoreResult",
                       "SchemaFacts", "dump_schemas", "check_tool_version"],
    "deploy.shopify": ["AUTOMATION_TOKEN_VAR", "PARTNERS_TOKEN_VAR", "LISTED_MAX", "RELEASED", "NOT_RELEASED",
                       "CREATED", "VERSION_RELEASED", "VERSION_NOT_RELEASED", "AppVersion", "active_version",
                       "auth_env", "check", "clip_message", "config_file_name", "confirm_release", "deploy",
                       "deploy_argv", "parse_cli_output", "parse_deploy_output", "parse_release_output",
                       "parse_versions", "prepare", "previous_version", "release", "release_argv", "rollback",
                       "skip_reason", "undo", "validate_version", "versions", "versions_argv"],
    "deploy.scaffold": ["ENVIRONMENTS", "IGNORE_HEADER", "Datasource", "EnvVar", "add_ignore_rules", "detect",
                        "ignore_rules", "ignores", "install_argv", "notices", "package_manager", "parse_datasource",
                        "parse_env_example", "render", "write"],
}


@pytest.mark.parametrize("package,name", [(p, n) for p, names in USED.items() for n in names],
                         ids=lambda v: v.rpartition(".")[2] if v.startswith("deploy.") else v)
def test_a_name_callers_use_is_still_there_as_a_value_not_a_module(package, name):
    value = getattr(importlib.import_module(package), name)
    assert not isinstance(value, types.ModuleType), f"{package}.{name} is a submodule, not the {name} callers use"


@pytest.mark.parametrize("package", sorted(USED))
def test_all_lists_only_names_the_package_has_each_defined_inside_it(package):
    mod = importlib.import_module(package)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ names {missing}, which it does not have"
    outside = [n for n in mod.__all__ if isinstance(getattr(mod, n), (type, types.FunctionType))
               and not getattr(mod, n).__module__.startswith(package + ".")]
    assert not outside, f"{package} re-exports {outside} from outside the package"
