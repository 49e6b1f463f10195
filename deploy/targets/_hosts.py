"""What every target on the environment's SSH hosts shares, whatever it puts live there: the
hosts' deploy lock (for a run, and as lock.status/lock.release see it), shared/.env written by
the `env` step or `invoke env.push`, and the URLs the smoke checks ask. Every
operation is deploy/hosts/'s; a target on hosts subclasses `OnHosts` and adds how it releases."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from deploy import hosts
from deploy.errors import SettingsError
from deploy.targets._base import Command, PlaceLock, ReleaseTarget, Unlocked


class OnHosts(ReleaseTarget):
    """The environment's [hosts]: their deploy lock, their shared/.env, their origins."""

    @property
    def shared(self) -> bool:
        return bool(self.s.hosts.hosts)   # runners of other ledgers may release to the same hosts

    def _targets(self) -> list[Any]:
        return hosts.targets(self.s.hosts, self.s.app)

    def places(self) -> list[str]:
        return [t.name for t in self._targets()] if self.s.hosts.hosts else []

    def _proxy_ready(self) -> str:
        """Before a promotion changes anything: every host's proxy can switch without dropping a
        connection (hosts.proxy_unready); SettingsError naming the hosts and what to run."""
        s = self.s
        if not (s.hosts.hosts and s.proxy.enabled):
            return ""
        unready = hosts.proxy_unready(s.hosts, s.proxy)
        if unready:
            raise SettingsError(
                f"{s.proxy.kind} on {len(unready)} host(s) would drop connections at the switch; nothing was "
                "changed:\n" + "\n".join(f"  {u}" for u in unready),
                "Run what each line says on that host, then promote again (invoke hosts.setup checks it too).")
        return f"{s.proxy.kind} switches keep queued connections"

    # ------------------------------------------------------------ the hosts' deploy lock

    def lock(self, run_id: str, release_id: str) -> list[str]:
        return hosts.acquire_lock(self.s.hosts, run_id=run_id, release_id=release_id)

    def unlock(self, run_id: str) -> list[str]:
        return hosts.release_lock(self.s.hosts, run_id=run_id)

    def unlock_reachable(self, run_id: str) -> Unlocked:
        freed, dead = hosts.release_reachable_locks(self.s.hosts, run_id=run_id)
        return Unlocked(tuple(freed), tuple(dead))

    def lock_text(self) -> str:
        return f"take the deploy lock on every host ({self.s.hosts.deploy_to}/.deploy-lock) until the run ends"

    def lock_shows(self) -> list[Command]:
        return [Command(t.name, hosts.lock_command(t, "<holder, run, release, time>")) for t in self._targets()]

    def locks_held(self) -> list[PlaceLock]:
        if not self.shared:
            return []
        return [_place_lock(i) for i in hosts.lock_status(self.s.hosts)]

    def break_locks(self, *, force: bool) -> list[PlaceLock]:
        if not self.shared:
            return []
        return [_place_lock(i) for i in hosts.break_lock(self.s.hosts, force=force)]

    # ------------------------------------------------------------ shared/.env

    @property
    def holds_env(self) -> bool:
        return self.shared

    @property
    def writes_env(self) -> bool:
        return self.shared and self.s.hosts.push_env

    def env_file(self) -> str:
        return f"{self.s.hosts.deploy_to}/shared/.env"

    def push_env(self, text: str, run_id: str) -> list[str]:
        return hosts.push_env(self.s.hosts, text, run_id=run_id)

    def restore_env(self, run_id: str) -> list[str]:
        return hosts.restore_env(self.s.hosts, run_id=run_id)

    def finish_env(self, run_id: str) -> list[str]:
        return hosts.finish_env(self.s.hosts, run_id=run_id)

    def env_shows(self, what: str) -> list[Command]:
        return [Command(t.name, f"{t.deploy_to}/shared/.env: {what}") for t in self._targets()]

    # ------------------------------------------------------------ smoke

    def origins(self, state: dict[str, Any]) -> list[str]:
        """The environment's public URL (environment.app_url), then each host's origin
        (scheme://host:port of its health URL): the smoke checks ask the app and every host.
        Behind a per-host proxy with no health URL set, each host's origin is its proxy's
        listen port (the app's own port changes with every release)."""
        s = self.s
        out = [s.environment.app_url] if s.environment.app_url else []
        if not s.hosts.hosts:
            return out
        if s.proxy.enabled and not (s.hosts.health_url or s.hosts.health_urls):
            for i, t in enumerate(self._targets()):
                host = f"[{t.host}]" if ":" in t.host else t.host
                out.append(f"http://{host}:{s.proxy.for_host(i, t.deploy_to).listen}")
            return out
        for t in self._targets():
            if t.health_url:
                u = urlsplit(t.health_url)
                out.append(f"{u.scheme}://{u.netloc}")
        return out


def _place_lock(i: Any) -> PlaceLock:
    return PlaceLock(i.host, i.holder, i.run_id, i.acquired_at, i.release)
