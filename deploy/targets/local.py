"""The local tree target: a local environment's releases on this machine (deploy/local.py),
one release root per app, the app started in its own session from `current`."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from deploy import dburl, envs, local
from deploy.build import start_command
from deploy.errors import DeployError, PlanChanged, SettingsError
from deploy.facts import LocalReleaseFacts, Serving, get
from deploy.locations import app_database_url, sqlite_base
from deploy.targets._base import Command, PlaceReleases, ReleaseTarget, RunState, Unlocked, WayBack

if TYPE_CHECKING:
    from deploy.build import Artifact
    from deploy.config import Settings


def local_root(s: Settings) -> Path:
    """This app's release root under [local] root: `<root>/<app folder>-<hash of app_dir>`.
    One root per app, so `current`, `previous` and every undo or rollback only ever name
    releases of the app the settings deploy, never another app's."""
    key = os.path.normpath(s.environment.app_dir)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(key).name).strip(".-") or "app"
    return s.path(s.local.root) / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def stop_app(s: Settings) -> bool:
    """Stop the local environment's app: this app's, and any other app's still running from
    the same [local] root (one local environment serves one app)."""
    base = s.path(s.local.root)
    stopped = local.stop(local_root(s))
    if base.is_dir():
        for d in [base, *sorted(p for p in base.iterdir() if p.is_dir())]:
            if (d / "app.pid").exists():
                stopped = local.stop(d) or stopped
    return stopped


def app_env(s: Settings, environ: Mapping[str, str]) -> dict:
    """What the locally started app gets besides the minimal base: DATABASE_URL and the
    variables [app] runtime_env names. Nothing else of the deployer's environment."""
    env = {n: environ[n] for n in s.app.runtime_env if n in environ}
    # The values env/<env>.env and env/<env>.local.env hold (and the secrets env.check takes
    # from the process) are the values the app gets: the one view env.check reports.
    env.update(envs.app_values(s.root, s.name, environ))
    if s.database.provider == "sqlite":
        # Absolute: a relative file: URL would resolve inside the release folder.
        path = dburl.parse(app_database_url(s, environ) or "", sqlite_base=sqlite_base(s)).sqlite_path
        env[s.database.app_url_var] = f"file:{path}"
    elif s.database.provider == "postgresql":
        env[s.database.app_url_var] = app_database_url(s, environ) or ""   # postgresql: a URL, or SettingsError
    return env


def restart_app(s: Settings, environ: Mapping[str, str]) -> local.ServerInfo:
    """(Re)start the local app from this app's `current` as the settings say; its ServerInfo.
    The app's environment is worked out first: a missing variable stops nothing."""
    env = app_env(s, environ)
    stop_app(s)
    return local.restart(local_root(s), s.local.host, s.local.port, app=s.app, env=env)


def start_text(s: Settings) -> str:
    return f"`{' '.join(s.app.start)}`" if isinstance(s.app.start, tuple) else "the package's start script"


def start_argv(s: Settings, where: str) -> list[str] | None:
    """The start command of a release (`where`, relative to the root), for --dry-run; None for a package script."""
    try:
        return start_command(s.app, s.app_dir, where)
    except SettingsError:
        return None


class LocalTree(ReleaseTarget):
    """releases/<id> under this app's root on this machine, `current` switched, the app restarted."""

    name = "local tree"

    @property
    def root(self) -> Path:
        return local_root(self.s)

    @property
    def shared(self) -> bool:
        return False   # this machine's runs share the ledger's lock; nothing else changes this root

    @property
    def ledger_first(self) -> bool:
        return False   # the root's own `current`/`previous` are the record (one ledger per machine)

    def _restart(self, environ: Mapping[str, str]) -> local.ServerInfo:
        return restart_app(self.s, environ)

    # ------------------------------------------------------------ before anything changes

    def prepare(self, environ: Mapping[str, str]) -> str:
        return ""   # the app's variables are checked by preflight's env.check; the root is made on release

    def lock(self, run_id: str, release_id: str) -> list[str]:
        return []

    def unlock(self, run_id: str) -> list[str]:
        return []

    def unlock_reachable(self, run_id: str) -> Unlocked:
        return Unlocked(())

    def lock_text(self) -> str:
        return "no lock of its own: the ledger's lock of the environment covers this machine"

    def lock_shows(self) -> list[Command]:
        return []

    # ------------------------------------------------------------ promote

    def release(self, state: RunState, release_id: str, artifact: Artifact, environ: Mapping[str, str]) -> str:
        root = self.root
        if state.get(LocalReleaseFacts) is None:
            state.put(LocalReleaseFacts(local.current(root)))
            state.checkpoint()
        placed = local.place_sharing(artifact, root, release_id)
        local.switch(root, release_id)
        info = self._restart(environ)
        state.put(Serving(info.url))
        pruned = self.prune()
        shared = (f"; {placed.linked} unchanged file(s) linked from {placed.base}, {placed.written} written"
                  if placed.base else "")
        return (f"{release_id} serving on {info.url} (pid {info.pid})" + shared
                + (f"; pruned {len(pruned)}" if pruned else ""))

    def switch_back(self, state: RunState, release_id: str, environ: Mapping[str, str]) -> str:
        root = self.root
        prev = (state.get(LocalReleaseFacts) or LocalReleaseFacts(None)).previous
        if local.current(root) != release_id:
            local.remove(root, release_id)  # placed but never switched to
            return "current is not this release: nothing to switch back"
        if prev and prev in local.releases(root):
            # `root` holds this app's releases only: prev is this app's previous release.
            local.switch(root, prev)
            info = self._restart(environ)
            state.put(Serving(info.url))
            return f"back on {prev} ({info.url})"
        stop_app(self.s)
        (root / "current").unlink(missing_ok=True)
        local.remove(root, release_id)
        return "first release of this app removed; the app is stopped"

    def release_text(self, release_id: str) -> str:
        s, root = self.s, self.root
        return (f"unpack to {root.relative_to(s.root) if root.is_relative_to(s.root) else root}/releases/"
                f"{release_id}, switch current, start {start_text(s)}, wait for {s.app.health_path}")

    def switch_back_text(self) -> str:
        return "switch current back to this app's previous release and restart, or stop the app if it had none"

    def release_shows(self, release_id: str) -> list[Command]:
        s, root = self.s, self.root
        argv = start_argv(s, f"releases/{release_id}")
        return [Command("local", f"unpack the artifact -> {root}/releases/{release_id}"),
                Command("local", f"current -> releases/{release_id}"),
                Command("local", f"start {shlex.join(str(a) for a in argv) if argv else 'the package start script'} "
                                 f"on {s.local.host}:{s.local.port}, wait for {s.app.health_path}")]

    # ------------------------------------------------------------ rollback

    def way_back(self, to: str | None) -> WayBack:
        root = self.root
        now = local.current(root)
        if to:
            if to not in local.releases(root):
                raise SettingsError(f"Release {to} is not in {root}/releases.",
                                    f"Known: {', '.join(local.releases(root)[-5:]) or '(none)'}.")
            return WayBack(to, now)
        prev = local.previous(root)
        if not prev:
            older = [r for r in local.releases(root) if now and r < now]
            prev = older[-1] if older else None
        if not prev:
            raise DeployError(f"{self.s.name} has no earlier release to roll back to (current: {now or 'none'}).")
        return WayBack(prev, now)

    def still_serving(self, expect: str | None) -> None:
        now = local.current(self.root)
        if expect and now not in (expect, None):
            raise PlanChanged(f"{self.s.name}'s current release is {now} now, not {expect} "
                              "as the plan showed. Nothing was changed.", "Run the rollback again.")

    def rollback(self, state: RunState, to: str, *, expect: str | None, environ: Mapping[str, str]) -> str:
        root = self.root
        if local.current(root) != to:
            local.switch(root, to)
        info = self._restart(environ)
        state.put(Serving(info.url))
        return f"{expect or '-'} -> {to} ({info.url})"

    def rollback_shows(self, to: str) -> list[Command]:
        return [Command("local", f"current -> releases/{to}; restart the app")]

    # ------------------------------------------------------------ status

    def origins(self, state: dict[str, Any]) -> list[str]:
        """The app's URL once the run started it (its Serving fact); none before."""
        serving = get(state, Serving)
        return [serving.url] if serving else []

    def serving(self) -> dict[str, str | None]:
        return {"local": local.current(self.root)}

    def releases(self) -> list[PlaceReleases]:
        root = self.root
        return [PlaceReleases("local", tuple(local.releases(root)), local.current(root))]

    def prune(self) -> list[str]:
        return local.prune(self.root, self.s.local.keep_releases)
