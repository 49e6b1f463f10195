"""Verified database backups: take, verify, restore, prune; what a restore would discard; and
provisioning a database.

Postgres: `pg_dump --format=custom` to `<backup_dir>/<env>/<UTC timestamp>-<sha7>.dump`, with
a `.sha256` sidecar and a `.json` manifest holding the per-table row counts, taken inside the
very snapshot pg_dump dumps. SQLite: a consistent copy through the online backup API. The
password never reaches argv: the tools get the URL without it and `PGPASSWORD` in their
environment.

    store         where backups lie, their sidecars; load, list, latest, prune
    tools         pg_dump/pg_restore/psql found by the server's version and checked
    postgres      dump in one snapshot, verify in a scratch database, restore in one transaction
    sqlite        the same three for a SQLite file
    operations    backup, verify, restore: settings and URL read, the engine's module called
    writes        written_since (what a restore would discard), app_rows (what emptying would)
    provisioning  db.provision: a database and its login role
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.backups.operations import RestoreResult, TableCount, VerifyResult, backup, restore, verify
    from deploy.backups.postgres import SchemaFacts, dump_schemas, pg_dump_argv, restore_sql, schema_facts
    from deploy.backups.provisioning import ProvisionResult, provision
    from deploy.backups.store import (Backup, backup_name, free_name, latest, list_backups, load_backup, prune,
                                      select_to_prune, sha256_file)
    from deploy.backups.tools import check_tool_version, find_tool, parse_tool_major
    from deploy.backups.writes import TableWrites, Writes, app_rows, written_since
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.backups.operations": ("RestoreResult", "TableCount", "VerifyResult", "backup", "restore", "verify"),
        "deploy.backups.postgres": ("SchemaFacts", "dump_schemas", "pg_dump_argv", "restore_sql", "schema_facts"),
        "deploy.backups.provisioning": ("ProvisionResult", "provision"),
        "deploy.backups.store": ("Backup", "backup_name", "free_name", "latest", "list_backups", "load_backup",
                                 "prune", "select_to_prune", "sha256_file"),
        "deploy.backups.tools": ("check_tool_version", "find_tool", "parse_tool_major"),
        "deploy.backups.writes": ("TableWrites", "Writes", "app_rows", "written_since"),
    })

__all__ = [
    "Backup", "TableCount", "VerifyResult", "RestoreResult", "ProvisionResult", "backup_name", "free_name",
    "sha256_file", "parse_tool_major", "check_tool_version", "select_to_prune", "find_tool", "load_backup",
    "list_backups", "latest", "backup", "verify", "restore", "prune", "provision", "SchemaFacts", "schema_facts",
    "dump_schemas", "restore_sql", "pg_dump_argv", "TableWrites", "Writes", "written_since", "app_rows",
]
