"""Typed, validated settings for each environment, read once from `env/<name>.toml`.

Path settings and their base (also in docs/adopting.md):
- the project root (DEPLOY_ROOT, or the folder with env/): environment.app_dir, local.root,
  database.backup_dir, gate.evidence_dir (all through `Settings.path`);
- environment.app_dir: database.migrations_dir, shopify.config (a file name there);
- the folder of schema.prisma, i.e. the parent of migrations_dir in the working tree's
  app_dir (Prisma's own rule): a relative SQLite `file:` URL in database.url;
- on each host: hosts.deploy_to (absolute), hosts.shared_files (under <deploy_to>/shared);
- the folder `invoke` runs in, after `~` expansion: hosts.key_file, hosts.known_hosts,
  database.bin_dir (use absolute paths or `~`).

Every section is a frozen dataclass; the parser walks its fields, so a typo is caught
when the file is read, with the file, the key and the allowed keys or values. A later
primitive adds its keys by adding a field to its section, never by reading raw dicts.

    _sections   the sections: one frozen dataclass each, and Settings (all of one environment)
    _files      the project root, env/, the environments there, reading a file, load
    _coerce     parse and parse_table: a TOML table into the dataclasses, each value to its type
    _checks     the cross-field checks (ranges, ports, names, paths; [app], [proxy], [image])
"""

from deploy.config._coerce import parse, parse_table
from deploy.config._files import ENV_NAME, env_dir, environments, load, project_root, read_text
from deploy.config._sections import (IMAGE_TARGET, AppSection, ApprovalsSection, Command, DatabaseSection,
                                     DecisionLogSection, EnvironmentSection, GateSection, GoLiveSection, HostsSection,
                                     ImageSection, LighthouseThresholds, LocalSection, LockSection, ProxySection,
                                     ReleaseSection, Settings, ShopifySection, SmokeCheck, SmokeSection, WatchSection)
from deploy.errors import SettingsError

__all__ = [
    "IMAGE_TARGET", "AppSection", "ApprovalsSection", "Command", "DatabaseSection", "DecisionLogSection",
    "EnvironmentSection", "GateSection", "GoLiveSection", "HostsSection", "ImageSection", "LighthouseThresholds",
    "LocalSection", "LockSection", "ProxySection", "ReleaseSection", "Settings", "ShopifySection", "SmokeCheck",
    "SmokeSection", "WatchSection", "ENV_NAME", "env_dir", "environments", "load", "project_root", "read_text",
    "parse", "parse_table", "SettingsError",
]
