"""The settings' shape: one frozen dataclass per `env/<name>.toml` section (its keys, their
types and defaults, a comment on each) and `Settings`, the sections of one environment together.

A later primitive adds its keys by adding a field to its section; the parser (_coerce) walks
the fields, so nothing reads a raw dict.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


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


IMAGE_TARGET: str = "image"   # `[release] target` of container images (deploy/targets/image.py)


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
