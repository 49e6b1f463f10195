"""Environment variables: the matrix of every variable the app and the deploy read, each
environment's values, the checks over them, and what is written from them.

`env/variables.toml` declares every variable the Operator Control Center app reads: what
it is, who owns it, where its value comes from, and per environment whether it is
required and whether it is a secret. Values live apart from the matrix:

- non-secret values in the committed `env/<env>.env` (python-dotenv syntax);
- secret values only in the process environment (a GitHub environment secret on the
  runner), passed in by the caller as a mapping, never read implicitly; for the
  environments listed in `matrix.local_files` also in the git-ignored
  `env/<env>.local.env`. A secret with a value in a committed file is an error.

The process environment is read for secrets only: a developer's shell that happens to
export PORT or NODE_ENV must not change what `env.check --env=production` judges.

    _matrix   the matrix: env/variables.toml parsed into types (load_matrix, parse_matrix), and
              the pure value rules (validate_value, is_placeholder, convert, where_to_set)
    _values   one environment's values from its dotenv files and the deployer's secrets
              (resolve, EnvValues); deployer_environ, the one view every task takes of them
    _checks   the reports: env.check (check, render_check) and env.parity (parity, render_parity)
    _render   what is written: the matrix doc, a developer's .env, the hosts' shared/.env text

Everything is pure over its inputs except `load_matrix`, the file reads in
`resolve`/`check`, and the two writers (`write_matrix_doc`, `write_dotenv`).
"""

import typing

if typing.TYPE_CHECKING:
    from deploy.envs._checks import (ERROR_STATUSES, CheckReport, CheckRow, ParityReport, ParityRow, Status, check,
                                     parity, parity_from_files, render_check, render_parity)
    from deploy.envs._matrix import (DOC_FILE, KINDS, MATRIX_FILE, PARITY_RULES, REGENERATE, SOURCE_TEXT, SOURCES,
                                     EnvRule, Kind, Matrix, Parity, Source, Variable, VarType, convert, is_placeholder,
                                     load_matrix, parse_matrix, validate_value, where_to_set)
    from deploy.envs._render import (DotenvResult, render_dotenv, render_matrix, render_shared_env, write_dotenv,
                                     write_matrix_doc)
    from deploy.envs._values import EnvValues, app_values, deployer_environ, resolve
else:   # each module imported when one of its names is first used (deploy/deferred.py, exports)
    from deploy import deferred

    __getattr__, __dir__ = deferred.exports(__name__, {
        "deploy.envs._checks": ("ERROR_STATUSES", "CheckReport", "CheckRow", "ParityReport", "ParityRow", "Status",
                                "check", "parity", "parity_from_files", "render_check", "render_parity"),
        "deploy.envs._matrix": ("DOC_FILE", "KINDS", "MATRIX_FILE", "PARITY_RULES", "REGENERATE", "SOURCE_TEXT",
                                "SOURCES", "EnvRule", "Kind", "Matrix", "Parity", "Source", "Variable", "VarType",
                                "convert", "is_placeholder", "load_matrix", "parse_matrix", "validate_value",
                                "where_to_set"),
        "deploy.envs._render": ("DotenvResult", "render_dotenv", "render_matrix", "render_shared_env",
                                "write_dotenv", "write_matrix_doc"),
        "deploy.envs._values": ("EnvValues", "app_values", "deployer_environ", "resolve"),
    })

__all__ = [
    "MATRIX_FILE", "DOC_FILE", "REGENERATE", "Kind", "Parity", "Source", "KINDS", "PARITY_RULES", "SOURCES",
    "SOURCE_TEXT", "VarType", "EnvRule", "Variable", "Matrix", "load_matrix", "parse_matrix",
    "is_placeholder", "validate_value", "convert", "where_to_set",
    "EnvValues", "resolve", "deployer_environ", "app_values",
    "Status", "ERROR_STATUSES", "CheckRow", "CheckReport", "check", "render_check",
    "ParityRow", "ParityReport", "parity", "parity_from_files", "render_parity",
    "render_matrix", "write_matrix_doc", "DotenvResult", "render_dotenv", "write_dotenv", "render_shared_env",
]
