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
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deploy.errors import SettingsError
from deploy.rollout import batches

ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class EnvironmentSection:
    kind: Literal["local", "remote"] = "remote"
    description: str = ""
    app_dir: str = "examples/app"          # the app project, relative to the project root (may be its own git repo)
    app_url: str = ""                      # public URL of the app for this environment
    protected: bool = False                # destructive steps need --yes
    requires_staging_run: bool = False     # production: the SHA must have a succeeded staging run
    staging_env: str = "staging"
    repo_url: str = ""                     # for --source-control-url links
    golive_required: bool = False          # production: the go-live checklist is a step of every promotion


@dataclass(frozen=True)
class LocalSection:
    # Relative to the project root. Each app gets its own folder under it
    # (<root>/<app folder name>-<hash>/: releases/, current, previous, pidfile, logs), so an
    # undo or rollback can only ever start a release of the app being deployed.
    root: str = ".deploy/local"
    host: str = "127.0.0.1"
    port: int = 0                          # 0: pick a free loopback port (the last one while it is free)
    keep_releases: int = 5
    # What .deploy on this machine may take on disk (MB; hard-linked files counted once): over it,
    # the build step removes the oldest local releases, checkouts and artifacts that are neither live
    # nor previous (deploy/disk.py). Read from the settings of the environment being promoted.
    max_deploy_mb: int = 8192


Command = typing.Union[tuple[str, ...], Literal["auto", "none"]]


@dataclass(frozen=True)
class AppSection:
    """The release contract: how the app is built, what its artifact holds, how it runs.
    The same for local and remote environments; hosts need nothing from the app beyond it.

    Commands are argv lists (no shell). Build commands run with cwd = the app folder of the
    commit's checkout (.deploy/src/<sha>/<app_dir>); the start command runs with cwd = the
    release folder (<root>/current locally, <deploy_to>/current on hosts)."""

    # "auto": the package manager's clean install, found from the lockfile
    # (package-lock.json: npm ci; pnpm-lock.yaml: pnpm install --frozen-lockfile; yarn.lock:
    # yarn install --frozen-lockfile; yarn 2+ (packageManager yarn@2+ or .yarnrc.yml): yarn
    # install --immutable, refused under Plug'n'Play); nothing when package.json declares no
    # dependencies; refused when it declares some but no lockfile is committed. "none": skip.
    install: Command = "auto"
    # "auto": `<pm> run build` when package.json has a build script, else nothing.
    build: Command = "auto"
    # Code generated from the app's sources, run after the install and before the build.
    # "auto": for a Prisma app (a schema where Prisma looks for it, and `prisma` in package.json),
    # `node_modules/.bin/prisma generate` (the app's own Prisma, from its lockfile), unless the
    # build or install scripts already run `prisma generate`. "none": the build does it (or there
    # is nothing to generate). Or an argv, e.g. ["npx", "prisma", "generate", "--no-hints"].
    generate: Command = "auto"
    # "auto": after the build, remove devDependencies (npm prune --omit=dev, pnpm prune
    # --prod, yarn install --production --frozen-lockfile, yarn 2+: yarn workspaces focus --all
    # --production) so the artifact carries exactly
    # the production node_modules that run on every host. "none": ship node_modules as built.
    prune: Command = "auto"
    # Paths relative to the app folder that the artifact holds; empty: the whole app tree at
    # the commit plus what the build wrote (build output, node_modules), without .git.
    include: tuple[str, ...] = ()
    # "auto": the package.json `start` script, run as npm would (sh -c with
    # node_modules/.bin on PATH) but without npm in between, so the app is the process the
    # toolkit supervises and signals. Or an argv, e.g. ["node", "build/server.js"].
    start: Command = "auto"
    port_var: str = "PORT"                 # the variable the app reads its port from
    port: int = 3000                       # the port on hosts (hosts.app_ports overrides per host); local: [local] port
    health_path: str = "/"                 # passes on 2xx/3xx, redirects not followed (a Shopify app's / redirects)
    ready_timeout: float = 30.0            # seconds a started app has to answer health_path
    build_env: tuple[str, ...] = ()        # names of the deployer's variables the build may see (none by default)
    runtime_env: tuple[str, ...] = ()      # names the locally started app gets (hosts: put them in shared/.env)
    build_timeout: float = 900.0           # seconds each build command may take
    keep_builds: int = 5                   # artifacts and .deploy/src checkouts kept (live/previous always kept)
    # Reuse installed dependencies across commits with the same lockfile, install scripts (and the
    # files they name), Prisma schema and config, package manager,
    # node version, platform and install/prune argv: .deploy/cache/deps/<key> under the
    # project root (keep_builds entries kept). The artifact is the same bytes either way.
    deps_cache: bool = True
    cache_max_mb: int = 2048               # the dependency cache is pruned, least recently used first, to this size


@dataclass(frozen=True)
class DatabaseSection:
    provider: Literal["sqlite", "postgresql", "none"] = "none"
    url_var: str = "DATABASE_URL"          # variable that holds the URL (a secret for Postgres)
    # The variable the app itself reads the URL from (Prisma's `url = env("...")`): the local app
    # and `env.push` give it the environment's URL under this name, whatever url_var is
    # (e.g. url_var = "STAGING_DATABASE_URL" on a deployer that also holds other environments').
    app_url_var: str = "DATABASE_URL"
    url: str = ""                          # allowed only for sqlite (no credentials); a relative file: path is
                                           # relative to the parent of migrations_dir in app_dir (Prisma's rule)
    migrations_dir: str = "prisma/migrations"  # relative to app_dir; read from the promoted commit's checkout
    runner: Literal["builtin", "prisma"] = "builtin"
    backup: bool = True
    backup_dir: str = ".deploy/backups"    # relative to the project root
    backup_keep: int = 5
    admin_url_var: str = "DATABASE_ADMIN_URL"
    direct_url_var: str = "DIRECT_URL"     # Prisma's directUrl: the session (non-pooled) URL for migrations,
                                           # backups, restores and the lock; unset variable: url_var's URL is used
    lock_timeout: float = 10.0             # seconds to wait for Prisma's migrate lock (advisory lock 72707369) and,
                                           # as Postgres' lock_timeout, for any table lock a migration, rollback,
                                           # restore or pg_dump needs (the app's queries queue behind such a wait)
    statement_timeout: float = 900.0       # seconds one migration or down.sql statement may run; 0: no limit
    bin_dir: str = ""                      # folder with pg_dump/pg_restore/psql (an absolute path, ~ expanded);
                                           # empty: the server's major version's tools
    # Destructive migrations (a drop, rename, type change, SET NOT NULL, data rewrite: squawk's
    # verdict) that have no down.sql are refused before a promotion changes anything, unless
    # named here (committed, so reviewed) or with `promote --accept-destructive=NAME`.
    accept_destructive: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostsSection:
    hosts: tuple[str, ...] = ()            # "user@host:port" or "host"
    # Empty/0 = not set: the entry (user@host:port) wins, then these, then the host's
    # ~/.ssh/config block (User, Port), then "deploy" and 22.
    user: str = ""
    port: int = 0
    key_file: str = ""                     # "": ssh_config's IdentityFile, the agent, ~/.ssh/id_*
    # "": the files ssh reads for the host (UserKnownHostsFile, default ~/.ssh/known_hosts[2],
    # then GlobalKnownHostsFile, default /etc/ssh/ssh_known_hosts[2]); set: only these (space-separated).
    known_hosts: str = ""
    deploy_to: str = "/srv/occ"            # "{host}", "{port}", "{user}", "{name}" are replaced per host
    max_parallel: int = 16
    keep_releases: int = 5
    shared_files: tuple[str, ...] = (".env",)
    # true: every promotion writes <deploy_to>/shared/.env on each host from the environment's
    # variables (the matrix values env.check reports; `invoke env.push --env=NAME` does the same
    # on its own), atomically, mode 0600; its undo puts the previous file back.
    push_env: bool = False
    before_switch: str = ""
    restart: str = ""                      # custom restart hook (shell, cwd = current); empty: the toolkit supervises
    supervisor: Literal["auto", "systemd", "sh"] = "auto"   # auto: a systemd user unit where usable, else the sh supervisor
    app_ports: tuple[int, ...] = ()        # one app port per entry of `hosts`; empty: app.port on every host
    # Per host; "{host}", "{port}" (ssh), "{app_port}", "{user}", "{name}" are replaced.
    # Empty: http://{host}:{app_port}<app.health_path>.
    health_url: str = ""
    health_urls: tuple[str, ...] = ()      # one per entry of `hosts`, in order; overrides health_url
    health_command: str = ""               # alternative check, run on the host in <deploy_to>/current
    health_timeout: float = 0.0            # seconds to wait for the health check to pass; 0: app.ready_timeout
    connect_timeout: float = 10.0
    command_timeout: float = 600.0         # seconds for any one remote command (hooks included)
    upload_timeout: float = 1800.0         # seconds the artifact upload to one host may take in all
    upload_stall_timeout: float = 60.0     # seconds an upload may go without progress (a frozen host) before it fails
    # true: a host holding an earlier release gets only the files it lacks (unchanged ones are
    # hard-linked from that release, the whole tree is verified against the manifest before the
    # switch; a mismatch sends the full artifact). false: every host gets the whole artifact.
    delta: bool = True
    # "all": every host switches and restarts at once. "rolling": in batches of batch_size hosts
    # (a number, or a share such as "25%"); each batch must pass its health check before the
    # next starts, and a failing batch stops the rollout and switches every switched host back.
    rollout: Literal["all", "rolling"] = "all"
    batch_size: int | str = "25%"
    # Rolling only, for the load balancer in front of the hosts (deploy/rollout.py): `balancer` is
    # a command run on this machine as `<balancer...> out <host:port>...` before a batch stops (it
    # returns once the balancer sends those hosts nothing new) and `... in <host:port>...` once the
    # batch is healthy (it returns once the balancer sends to them again). `drain_seconds`: after
    # `out`, the time requests in flight get before the apps stop. `settle_seconds`: the wait after
    # a batch before the next goes down, at least a passive balancer's fail_timeout (nginx keeps a
    # host it saw failing out that long; a rollout faster than that empties its pool).
    balancer: tuple[str, ...] = ()
    drain_seconds: float = 0.0
    settle_seconds: float = 0.0
    # Rolling only, for the load balancer in front of the hosts (deploy/rollout.py): `balancer` is
    # a command run on this machine as `<balancer...> out <host:port>...` before a batch stops (it
    # returns once the balancer sends those hosts nothing new) and `... in <host:port>...` once the
    # batch is healthy (it returns once the balancer sends to them again). `drain_seconds`: after
    # `out`, the time requests in flight get before the apps stop. `settle_seconds`: the wait after
    # a batch before the next goes down, at least a passive balancer's fail_timeout (nginx keeps a
    # host it saw failing out that long; a rollout faster than that empties its pool).
    balancer: tuple[str, ...] = ()
    drain_seconds: float = 0.0
    settle_seconds: float = 0.0
    hook_env: tuple[str, ...] = ()         # deployer variables exported to before_switch/restart (no secrets: the
                                           # exports are on the remote command line; secrets go in shared/.env)
    min_free_mb: int = 100                 # `check` fails a host with less free space under deploy_to
    lock_max_age_minutes: int = 120


@dataclass(frozen=True)
class ProxySection:
    # A reverse proxy on each host in front of the app (deploy/hosts/_proxy.py), for zero downtime on
    # one host: a release starts beside the live app on the other port of the pair (app port,
    # app port + spare_port_offset), is health-checked there, the proxy is switched, the old app drained
    # and stopped. "none": no proxy, the app restarts in place (the behaviour without this section).
    # Per-host values: "{deploy_to}" in the paths; listen_ports/admin_ports override listen/admin per host.
    kind: Literal["none", "caddy", "nginx"] = "none"
    listen: int = 8080                     # the port the proxy serves the app on (all interfaces)
    listen_ports: tuple[int, ...] = ()     # one per entry of hosts.hosts; overrides listen
    admin: str = "127.0.0.1:2019"          # caddy: its admin API (a loopback address; switch by PATCH)
    admin_ports: tuple[int, ...] = ()      # caddy: one admin port per host (on admin's address); overrides its port
    config_dir: str = "{deploy_to}/proxy"  # the proxy's own files on the host (config, pid, logs, data)
    nginx_conf: str = "{config_dir}/nginx.conf"        # nginx: the main config hosts.setup writes
    upstream_file: str = "{config_dir}/upstream.conf"  # nginx: the include naming the live upstream
    spare_port_offset: int = 1             # the second app port = the host's app port + this
    drain_seconds: float = 2.0             # after the switch, the old app keeps running this long (in-flight)
    switch_timeout: float = 10.0           # seconds the switch may take to be seen serving the new upstream

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def for_host(self, index: int, deploy_to: str) -> "ProxySection":
        """This section with one host's values: its listen and admin port, `{deploy_to}` and
        `{config_dir}` filled in (what deploy/hosts/_proxy.py's commands take)."""
        listen = self.listen_ports[index] if self.listen_ports else self.listen
        admin = self.admin
        if self.admin_ports:
            admin = f"{admin.rsplit(':', 1)[0]}:{self.admin_ports[index]}"
        config_dir = self.config_dir.replace("{deploy_to}", deploy_to.rstrip("/"))
        fill = {"{deploy_to}": deploy_to.rstrip("/"), "{config_dir}": config_dir}

        def path(v: str) -> str:
            for k, val in fill.items():
                v = v.replace(k, val)
            return v

        return dataclasses.replace(self, listen=listen, listen_ports=(), admin=admin, admin_ports=(),
                                   config_dir=config_dir, nginx_conf=path(self.nginx_conf),
                                   upstream_file=path(self.upstream_file))


@dataclass(frozen=True)
class ReleaseSection:
    # Where a release goes (deploy/targets/): "tree" puts releases/<id> trees behind an atomic
    # `current` switch, on this machine for a local environment and on [hosts] for a remote one;
    # "image" runs the [image] built for the commit, by digest, in a container on each of [hosts]
    # behind its [proxy]. Another value is refused when the file is read, naming the allowed ones.
    target: Literal["tree", "image"] = "tree"


@dataclass(frozen=True)
class ImageSection:
    """The image target's build and registry (`[release] target = "image"`, deploy/images/).
    The image is built once per build key (commit, app folder, release contract), tagged with
    the commit, pushed, and from then on named by its digest only."""

    registry: str = ""                     # host[:port] of the registry, e.g. "ghcr.io" or "10.0.0.9:5000"
    repository: str = ""                   # the image's name there, e.g. "acme/occ-app" (lower case)
    # "toolkit": a build file the toolkit writes (FROM base, the artifact's unpacked tree, the
    # [app] start command); or the path of the app's own Dockerfile, relative to environment.app_dir.
    build: str = "toolkit"
    # The toolkit build's base image: it must run the artifact's node_modules, which were
    # installed on the deployer (glibc), so a Debian-based Node, not alpine (musl).
    base: str = "docker.io/library/node:20-bookworm-slim"
    insecure: bool = False                 # true: no TLS verification for this registry (an explicit opt-out)
    ca_file: str = ""                      # an extra CA (PEM) the registry's certificate is verified against
    # Names of the deployer's variables whose values are the registry login. Secrets: they go
    # to podman/docker through a private auth file, never on a command line, never in the ledger.
    # Both "": an anonymous registry.
    username_var: str = "REGISTRY_USERNAME"
    password_var: str = "REGISTRY_PASSWORD"
    runtime: Literal["auto", "podman", "docker"] = "auto"   # the container tool, here and on hosts; auto: podman, else docker
    keep: int = 3                          # images kept per host (live + previous ones, for rollback)
    # On the hosts (deploy/targets/image.py): flags the runtime gets on every call ("{deploy_to}",
    # "{host}", "{port}", "{key}" (a short hash of deploy_to) filled per host, e.g. ["--root", "{deploy_to}/containers/storage"] for a
    # storage of its own), and flags `run` gets (e.g. ["--ulimit", "nofile=1024:1024"]).
    runtime_args: tuple[str, ...] = ()
    run_args: tuple[str, ...] = ()
    # "host": the container shares the host's network and the app listens on the port picked for
    # it (given in app.port_var); "publish": the app listens on app.port inside, and
    # 127.0.0.1:<picked port> is published to it.
    network: Literal["host", "publish"] = "host"
    port_span: int = 20                    # a new container's port: the first free one of app port .. + port_span - 1
    stop_timeout: int = 10                 # seconds an old container has after SIGTERM (after proxy.drain_seconds)
    # true: after a release or rollback the container the proxy served before stays running, idle
    # (its memory stays in use), so going back to it is a health check and the proxy switch, no start
    previous_running: bool = False
    build_timeout: float = 1800.0          # seconds a build may take
    push_timeout: float = 900.0            # seconds a push (or a registry check) may take


@dataclass(frozen=True)
class ShopifySection:
    config: str = ""                       # shopify.app.<config>.toml in app_dir (of the promoted commit); empty: skipped
    token_var: str = "SHOPIFY_APP_AUTOMATION_TOKEN"
    cli: str = "shopify"                   # the executable, or a command such as "npx shopify"
    allow_deletes: bool = False            # also pass --allow-deletes (removes extensions without a prompt)
    timeout: float = 900.0                 # seconds one CLI call may take (deploy builds extensions)


@dataclass(frozen=True)
class LighthouseThresholds:
    performance: float | None = None
    accessibility: float | None = None
    best_practices: float | None = None
    seo: float | None = None
    pwa: float | None = None


@dataclass(frozen=True)
class GateSection:
    required: tuple[Literal["vitest", "playwright", "lighthouse"], ...] = ("vitest", "playwright", "lighthouse")
    evidence_dir: str = "evidence"         # holds manifest.json (`invoke evidence.collect`); relative to the project root
    max_failed: int = 0
    max_skipped_ratio: float = 0.5         # share of a report's tests that may be skipped or todo (0..1); a report
                                           # in which no test ran closes the gate whatever this says
    allow_flaky: bool = True               # flaky = passed on a retry; production should set false
    max_age_hours: float = 72.0            # 0 turns the age check off
    bind_to_sha: bool = True               # false only for `local`: gate on committed sample evidence
    lighthouse: LighthouseThresholds = field(default_factory=LighthouseThresholds)


@dataclass(frozen=True)
class ApprovalsSection:
    required_roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class SmokeCheck:
    url: str = ""
    status: int = 200                      # 0: any 2xx or 3xx (redirects are not followed)
    contains: str = ""
    json_field: str = ""                   # e.g. "release": must equal the release being deployed
    json_value: str = "{release}"          # expected value of json_field; "{release}" = the release id
    timeout: float = 5.0


@dataclass(frozen=True)
class SmokeSection:
    checks: tuple[SmokeCheck, ...] = ()
    retries: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class WatchSection:
    window_seconds: float = 0.0
    interval_seconds: float = 2.0
    max_error_ratio: float = 0.2
    max_p95_ms: float = 2000.0
    decision_log_check: bool = False
    urls: tuple[str, ...] = ()             # "/path": joined to the app URL and each host's URL; empty: app.health_path
    timeout_seconds: float = 5.0           # per request
    max_consecutive_failures: int = 3      # one URL failing this many polls in a row fires at once
    min_samples: int = 5                   # ratio and p95 are judged from this many samples on


@dataclass(frozen=True)
class LockSection:
    max_age_minutes: int = 120             # a lock older than this may be broken with --force


@dataclass(frozen=True)
class DecisionLogSection:
    url_var: str = "DECISION_LOG_DATABASE_URL"
    table: str = "decision_log"
    time_column: str = "created_at"
    status_column: str = "status"
    error_value: str = "error"
    max_age_minutes: int = 60
    max_errors_last_hour: int = 5


@dataclass(frozen=True)
class GoLiveSection:
    backup_max_age_hours: float = 24.0     # the newest verified backup must be younger than this
    drill_max_age_days: int = 30           # a rollback or hotfix drill must have passed within this
    backup_verify_url_var: str = ""        # server to restore the backup into for verification; "" = database.url_var


@dataclass(frozen=True)
class Settings:
    """Everything a flow needs to know about one environment."""

    name: str
    file: Path
    root: Path
    environment: EnvironmentSection = field(default_factory=EnvironmentSection)
    local: LocalSection = field(default_factory=LocalSection)
    app: AppSection = field(default_factory=AppSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    hosts: HostsSection = field(default_factory=HostsSection)
    release: ReleaseSection = field(default_factory=ReleaseSection)
    image: ImageSection = field(default_factory=ImageSection)
    proxy: ProxySection = field(default_factory=ProxySection)
    shopify: ShopifySection = field(default_factory=ShopifySection)
    gate: GateSection = field(default_factory=GateSection)
    approvals: ApprovalsSection = field(default_factory=ApprovalsSection)
    smoke: SmokeSection = field(default_factory=SmokeSection)
    watch: WatchSection = field(default_factory=WatchSection)
    lock: LockSection = field(default_factory=LockSection)
    decision_log: DecisionLogSection = field(default_factory=DecisionLogSection)
    golive: GoLiveSection = field(default_factory=GoLiveSection)

    @property
    def is_local(self) -> bool:
        return self.environment.kind == "local"

    @property
    def app_dir(self) -> Path:
        return (self.root / self.environment.app_dir).resolve()

    def path(self, rel: str) -> Path:
        """A path from the settings, relative to the project root unless absolute."""
        p = Path(os.path.expanduser(rel))
        return p if p.is_absolute() else (self.root / p)


_SECTIONS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in ("name", "file", "root")}


# ---------------------------------------------------------------- parsing

def read_text(path: Path) -> str:
    """A settings file's text; SettingsError naming the file when it is not UTF-8.
    (FileNotFoundError is left to the caller, which knows what a missing file means.)"""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SettingsError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}).",
                            "Save the file as UTF-8 and run again.") from None
    except IsADirectoryError:
        raise SettingsError(f"{path} is a folder, not a file.") from None


def project_root(start: Path | None = None) -> Path:
    """The project root: `DEPLOY_ROOT`, else the nearest folder above `start` with `env/`."""
    if os.environ.get("DEPLOY_ROOT"):
        return Path(os.environ["DEPLOY_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "env").is_dir() and ((p / "tasks.py").exists() or (p / "pyproject.toml").exists()):
            return p
    return here


def env_dir(root: Path) -> Path:
    return root / "env"


def environments(root: Path) -> list[str]:
    """Names of the environments described in `env/`."""
    d = env_dir(root)
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.toml") if ENV_NAME.match(p.stem) and p.stem != "variables")


def load(name: str, root: Path | None = None) -> Settings:
    """Read and validate `env/<name>.toml`."""
    root = (root or project_root()).resolve()
    if not isinstance(name, str) or not ENV_NAME.match(name or ""):
        raise SettingsError(
            f"{name!r} is not a valid environment name.",
            "Use lower-case letters, digits, '-' or '_' (e.g. --env=staging).",
        )
    path = env_dir(root) / f"{name}.toml"
    if not path.is_file():
        known = environments(root)
        if not env_dir(root).is_dir():
            raise SettingsError(
                f"No env/ folder under {root}: there are no environment settings to read.",
                "Run from the project root, or set DEPLOY_ROOT to it.",
            )
        raise SettingsError(
            f"Unknown environment {name!r}: {path} does not exist.",
            f"Known environments: {', '.join(known) or '(none)'}.",
        )
    try:
        try:
            raw = tomllib.loads(read_text(path))
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{path}: not valid TOML ({e}).", "Fix the syntax and run again.") from None
        except OSError as e:
            raise SettingsError(f"{path}: cannot be read ({e.strerror}).") from None
        return parse(raw, name=name, file=path, root=root)
    except SettingsError as e:
        e.file = e.file or str(path)   # every settings error names its file as a field too
        raise e.in_env(name)


def parse(raw: dict[str, Any], *, name: str, file: Path, root: Path) -> Settings:
    """Build `Settings` from a parsed TOML table; every error names the file and key."""
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise SettingsError(
            f"{file}: unknown section [{unknown[0]}].",
            f"Allowed sections: {', '.join(sorted(_SECTIONS))}.",
        )
    values: dict[str, Any] = {}
    hints = _type_hints(Settings)
    for key, value in raw.items():
        values[key] = _coerce(hints[key], value, file, key)
    settings = Settings(name=name, file=file, root=root, **values)
    _check(settings)
    return settings


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    """A settings class's field types, resolved once per process: every settings file read
    (and every table parsed by `parse_table`) would otherwise evaluate each section's string
    annotations again, a cost `--dry-run` paid on every load."""
    return typing.get_type_hints(tp)


def _coerce(tp: Any, value: Any, file: Path, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SettingsError(f"{file}: [{key}] must be a table, not {type(value).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        hints = _type_hints(tp)
        out = {}
        for k, v in value.items():
            if k not in fields:
                raise SettingsError(
                    f"{file}: unknown key {key}.{k}.",
                    f"Allowed keys in [{key}]: {', '.join(fields)}.",
                )
            out[k] = _coerce(hints[k], v, file, f"{key}.{k}")
        return tp(**out)
    if origin is Literal:
        if value not in args:
            raise SettingsError(
                f"{file}: {key} = {value!r} is not allowed.",
                f"Allowed values: {', '.join(repr(a) for a in args)}.",
            )
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, file, key)
        errors = []
        for a in inner:   # the first alternative that accepts the value
            try:
                return _coerce(a, value, file, key)
            except SettingsError as e:
                errors.append(e.message)
        raise SettingsError(f"{file}: {key} = {value!r} is not allowed.",
                            "It may be: " + "; or ".join(_describe(a) for a in inner) + ".")
    if origin is tuple:
        if not isinstance(value, list):
            raise SettingsError(f"{file}: {key} must be a list, not {type(value).__name__} ({value!r}).")
        return tuple(_coerce(args[0], v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{file}: {key} must be true or false, not {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{file}: {key} must be a whole number, not {value!r}.")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{file}: {key} must be a number, not {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{file}: {key} must be a string, not {value!r}.")
        return value
    if tp is datetime.date:
        # TOML's local date (2026-10-01, unquoted); a date-time or a quoted string is not one.
        if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
            raise SettingsError(f"{file}: {key} must be a date like 2026-10-01 (no quotes), not {value!r}.")
        return value
    raise SettingsError(f"{file}: {key} has a type this version cannot read ({tp}).")


def parse_table(tp: Any, value: Any, file: Path, key: str) -> Any:
    """One TOML table parsed into the frozen dataclass `tp` by the settings' own validator
    (unknown keys, types, allowed values, each error naming the file and the key)."""
    return _coerce(tp, value, file, key)


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list of strings (an argv)"
    return getattr(tp, "__name__", str(tp))


def _check(s: Settings) -> None:
    """Cross-field rules that a single field's type cannot express."""
    f = s.file
    if s.database.provider == "postgresql" and s.database.url:
        raise SettingsError(
            f"{f}: database.url is set for a Postgres database; its URL carries a password.",
            f"Remove database.url and provide the URL in the {s.database.url_var} variable instead.",
        )
    if s.environment.kind == "remote" and not s.hosts.hosts and s.environment.app_url == "":
        raise SettingsError(
            f"{f}: a remote environment needs hosts.hosts or environment.app_url.",
            "List the hosts under [hosts] (hosts = [\"deploy@10.0.0.5\"]).",
        )
    for lim, lo, hi in (("hosts.max_parallel", 1, 256), ("hosts.keep_releases", 1, 100), ("local.keep_releases", 1, 100),
                        ("local.max_deploy_mb", 1, 10_000_000)):
        sec, key = lim.split(".")
        v = getattr(getattr(s, sec), key)
        if not lo <= v <= hi:
            raise SettingsError(f"{f}: {lim} = {v} is out of range.", f"Use a value from {lo} to {hi}.")
    if not s.database.lock_timeout > 0:
        raise SettingsError(f"{f}: database.lock_timeout = {s.database.lock_timeout:g} must be more than 0.",
                            "It bounds how long a migration, restore or backup waits for a lock; e.g. 10.")
    if s.database.statement_timeout < 0:
        raise SettingsError(f"{f}: database.statement_timeout = {s.database.statement_timeout:g} is negative.",
                            "Use seconds (e.g. 900), or 0 for no limit.")
    if not 0.0 <= s.gate.max_skipped_ratio <= 1.0:
        raise SettingsError(f"{f}: gate.max_skipped_ratio = {s.gate.max_skipped_ratio:g} is out of range.",
                            "It is a share of the tests: from 0 (nothing may be skipped) to 1.")
    _check_app(s)
    _check_image(s)
    for key in ("drain_seconds", "settle_seconds"):
        if not 0 <= getattr(s.hosts, key) <= 600:
            raise SettingsError(f"{f}: hosts.{key} = {getattr(s.hosts, key):g} is out of range.",
                                "Use seconds from 0 to 600.")
    if any(not isinstance(a, str) or not a or "\0" in a for a in s.hosts.balancer):
        raise SettingsError(f"{f}: hosts.balancer must be a command as a list of non-empty strings.",
                            'e.g. balancer = ["scripts/lb", "--pool", "app"] (run as <it> out|in <host:port>...).')
    for key in ("drain_seconds", "settle_seconds"):
        if not 0 <= getattr(s.hosts, key) <= 600:
            raise SettingsError(f"{f}: hosts.{key} = {getattr(s.hosts, key):g} is out of range.",
                                "Use seconds from 0 to 600.")
    if any(not isinstance(a, str) or not a or "\0" in a for a in s.hosts.balancer):
        raise SettingsError(f"{f}: hosts.balancer must be a command as a list of non-empty strings.",
                            'e.g. balancer = ["scripts/lb", "--pool", "app"] (run as <it> out|in <host:port>...).')
    if s.hosts.rollout == "rolling":
        try:
            batches(max(1, len(s.hosts.hosts)), s.hosts.batch_size)
        except SettingsError as e:
            raise SettingsError(f"{f}: {e.message}", e.hint) from None
    if s.hosts.app_ports and len(s.hosts.app_ports) != len(s.hosts.hosts):
        raise SettingsError(f"{f}: hosts.app_ports has {len(s.hosts.app_ports)} entries for {len(s.hosts.hosts)} hosts.",
                            "Give one port per host, in the order of hosts.hosts, or use app.port for all.")
    _check_proxy(s)
    for cat in dataclasses.fields(LighthouseThresholds):
        v = getattr(s.gate.lighthouse, cat.name)
        if v is not None and not 0.0 <= v <= 1.0:
            raise SettingsError(
                f"{f}: gate.lighthouse.{cat.name} = {v} is out of range.", "Lighthouse scores are from 0 to 1."
            )


_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_proxy(s: Settings) -> None:
    f, p = s.file, s.proxy
    if not p.enabled:
        return
    if s.hosts.restart:
        raise SettingsError(f"{f}: proxy.kind = {p.kind!r} with hosts.restart set: the proxy mode starts each "
                            "release beside the live one with the toolkit's supervisor, which a restart hook replaces.",
                            "Remove hosts.restart, or set proxy.kind = \"none\".")
    for key, ports in (("listen_ports", p.listen_ports), ("admin_ports", p.admin_ports)):
        if ports and len(ports) != len(s.hosts.hosts):
            raise SettingsError(f"{f}: proxy.{key} has {len(ports)} entries for {len(s.hosts.hosts)} hosts.",
                                f"Give one port per host, in the order of hosts.hosts, or leave {key} out.")
    for name, v in (("proxy.listen", p.listen), *((f"proxy.listen_ports[{i}]", x) for i, x in enumerate(p.listen_ports)),
                    *((f"proxy.admin_ports[{i}]", x) for i, x in enumerate(p.admin_ports))):
        if not 0 < v < 65536:
            raise SettingsError(f"{f}: {name} = {v} is out of range.", "Use a port from 1 to 65535.")
    if not re.fullmatch(r"(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}", p.admin):
        raise SettingsError(f"{f}: proxy.admin = {p.admin!r} is not a loopback address with a port.",
                            "Caddy's admin API changes what the host serves: keep it on loopback, e.g. \"127.0.0.1:2019\".")
    if not 1 <= p.spare_port_offset < 1000:
        raise SettingsError(f"{f}: proxy.spare_port_offset = {p.spare_port_offset} is out of range.",
                            "Use 1 to 999: the second app port is the app port plus this.")
    if p.drain_seconds < 0 or p.switch_timeout <= 0:
        raise SettingsError(f"{f}: proxy.drain_seconds must be 0 or more and proxy.switch_timeout more than 0.")
    for key in ("config_dir", "nginx_conf", "upstream_file"):
        v = getattr(p, key)
        probe = v.replace("{deploy_to}", "/d").replace("{config_dir}", "/c")
        if not re.fullmatch(r"/[A-Za-z0-9._/+-]*", probe) or ".." in probe.split("/"):
            raise SettingsError(f"{f}: proxy.{key} = {v!r} is not a safe absolute path.",
                                "Use an absolute path (or one starting with {deploy_to}) of letters, digits and . _ / + -.")


def _check_app(s: Settings) -> None:
    f, a = s.file, s.app
    for key in ("install", "build", "generate", "prune", "start"):
        v = getattr(a, key)
        if isinstance(v, tuple) and (not v or not all(v)):
            raise SettingsError(f"{f}: app.{key} is an empty command.",
                                f'Give an argv such as ["npm", "run", "{key}"], or "auto" or "none".')
    if a.start == "none":
        raise SettingsError(f"{f}: app.start = \"none\": a release needs a start command.",
                            'Use "auto" (the package.json start script) or an argv.')
    names = [("app.port_var", a.port_var)]
    names += [(f"app.build_env[{i}]", v) for i, v in enumerate(a.build_env)]
    names += [(f"app.runtime_env[{i}]", v) for i, v in enumerate(a.runtime_env)]
    for key, v in names:
        if not _VAR.match(v):
            raise SettingsError(f"{f}: {key} = {v!r} is not a variable name.", "Use letters, digits and _.")
    for i, p in enumerate(a.include):
        parts = p.split("/")
        if not p or p.startswith("/") or ".." in parts:
            raise SettingsError(f"{f}: app.include[{i}] = {p!r} is not a path inside the app folder.",
                                "Use paths relative to the app folder (environment.app_dir), e.g. \"build\".")
    if not a.health_path.startswith("/"):
        raise SettingsError(f"{f}: app.health_path = {a.health_path!r} must start with /.", 'E.g. "/" or "/healthz".')
    for name, v in (("app.port", a.port), *((f"hosts.app_ports[{i}]", p) for i, p in enumerate(s.hosts.app_ports))):
        if not 0 < v < 65536:
            raise SettingsError(f"{f}: {name} = {v} is out of range.", "Use a port from 1 to 65535.")
    if a.ready_timeout <= 0 or a.build_timeout <= 0:
        raise SettingsError(f"{f}: app.ready_timeout and app.build_timeout must be more than 0 seconds.")
    if not 1 <= a.keep_builds <= 100:
        raise SettingsError(f"{f}: app.keep_builds = {a.keep_builds} is out of range.", "Use a value from 1 to 100.")
    if not 100 <= a.cache_max_mb <= 1_000_000:
        raise SettingsError(f"{f}: app.cache_max_mb = {a.cache_max_mb} is out of range.",
                            "Use a size in MB from 100 (one app's install) to 1000000.")


_REGISTRY = re.compile(r"^(localhost|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


IMAGE_TARGET: str = "image"   # `[release] target` of container images (deploy/targets/image.py)


def _check_image(s: Settings) -> None:
    """[image]: checked whenever the release target is "image" (and its shapes always)."""
    f, im = s.file, s.image
    if im.registry and not _REGISTRY.match(im.registry):
        raise SettingsError(f"{f}: image.registry = {im.registry!r} is not a registry address.",
                            'Give host[:port] without a scheme or path, e.g. "ghcr.io" or "10.0.0.9:5000".')
    if im.repository and not _REPOSITORY.match(im.repository):
        raise SettingsError(f"{f}: image.repository = {im.repository!r} is not an image name.",
                            'Use lower-case letters, digits and . _ - separated by /, e.g. "acme/occ-app".')
    if im.build != "toolkit":
        parts = im.build.split("/")
        if not im.build or im.build.startswith("/") or ".." in parts:
            raise SettingsError(f"{f}: image.build = {im.build!r} is neither \"toolkit\" nor a path inside the app folder.",
                                'Use "toolkit", or the Dockerfile\'s path relative to environment.app_dir, e.g. "Dockerfile".')
    if not im.base or any(c.isspace() for c in im.base):
        raise SettingsError(f"{f}: image.base = {im.base!r} is not an image reference.",
                            'E.g. "docker.io/library/node:20-bookworm-slim".')
    for key in ("username_var", "password_var"):
        v = getattr(im, key)
        if v and not _VAR.match(v):
            # Not quoted: a value put where its variable's name goes may be the password itself.
            raise SettingsError(f"{f}: image.{key} is not a variable name (its value is not shown: it may be a secret).",
                                "Name the variable that holds the value (letters, digits and _), not the value itself.")
    if bool(im.username_var) != bool(im.password_var):
        raise SettingsError(f"{f}: image.username_var and image.password_var must be set together.",
                            'Name both variables, or set both to "" for an anonymous registry.')
    if im.insecure and im.ca_file:
        raise SettingsError(f"{f}: image.insecure = true and image.ca_file are both set.",
                            "Keep ca_file (the registry's certificate is then verified) and remove insecure.")
    if not 1 <= im.keep <= 100:
        raise SettingsError(f"{f}: image.keep = {im.keep} is out of range.", "Use a value from 1 to 100.")
    if im.build_timeout <= 0 or im.push_timeout <= 0:
        raise SettingsError(f"{f}: image.build_timeout and image.push_timeout must be more than 0 seconds.")
    if not 1 <= im.port_span <= 1000 or not 0 <= im.stop_timeout <= 600:
        raise SettingsError(f"{f}: image.port_span ({im.port_span}) or image.stop_timeout ({im.stop_timeout}) is "
                            "out of range.", "Use port_span from 1 to 1000 and stop_timeout from 0 to 600 seconds.")
    ours = ("--name", "--network", "--net", "-p", "--publish", "--env-file", "--rm", "-d", "--detach", "--label")
    for key in ("runtime_args", "run_args"):
        for a in getattr(im, key):
            if not isinstance(a, str) or "\n" in a or "\0" in a:
                raise SettingsError(f"{f}: image.{key} holds {a!r}, which is not one flag.", "Give one string per flag.")
            if key == "run_args" and a.split("=", 1)[0] in ours:
                raise SettingsError(f"{f}: image.run_args sets {a.split('=', 1)[0]}, which the image target sets itself "
                                    "(name, network, port, env file, labels).", f"Remove it from image.run_args.")
    if s.release.target == IMAGE_TARGET:
        for key in ("registry", "repository"):
            if not getattr(im, key):
                raise SettingsError(f"{f}: release.target = \"image\" needs image.{key}.",
                                    'Set [image] registry = "host[:port]" and repository = "name/app".')
