"""The cross-field checks on parsed settings: the rules a single field's type cannot express
(ranges, ports, variable names, paths, and the [app], [proxy] and [image] sections against
the rest), each failure naming the file, the key and what to use instead.
"""

from __future__ import annotations

import dataclasses
import re

from deploy.config._sections import IMAGE_TARGET, LighthouseThresholds, Settings
from deploy.errors import SettingsError
from deploy.rollout import batches


def check(s: Settings) -> None:
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


_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


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


_REGISTRY = re.compile(r"^(localhost|[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?\Z")


_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")


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
