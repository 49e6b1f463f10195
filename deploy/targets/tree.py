"""The tree target on hosts: releases/<id> trees on SSH hosts with an atomic `current`
switch, the app restarted by the toolkit's supervisor or the restart hook. Every operation
is deploy/hosts/'s; this class only puts it behind the target interface."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping

from deploy import hosts
from deploy.hosts import _proxy
from deploy.errors import DeployError, LockHeld, SettingsError
from deploy.facts import HostsReleaseFacts
from deploy.targets._base import Command, PlaceReleases, RunState, WayBack
from deploy.targets._hosts import OnHosts
from deploy.targets.local import start_argv

if TYPE_CHECKING:
    from deploy.build import Artifact


class HostsTree(OnHosts):
    """The environment's [hosts], all at once or in rolling batches (deploy/hosts/)."""

    name = "tree on hosts"

    @property
    def ledger_first(self) -> bool:
        return True   # the ledger says what was promoted; the hosts are asked when it knows nothing

    def _hook_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        return hosts.hook_env(self.s.hosts, environ)

    # ------------------------------------------------------------ before anything changes

    def prepare(self, environ: Mapping[str, str]) -> str:
        """The app's variables will be there: every host has shared/.env (unless this run
        pushes it, or the release links no .env); the hook variables are set and none is a secret."""
        s = self.s
        note = ""
        if s.hosts.hosts and not s.hosts.push_env and ".env" in s.hosts.shared_files:
            missing = hosts.missing_env(s.hosts)
            if missing:
                raise SettingsError(
                    f"{s.hosts.deploy_to}/shared/.env is missing on {len(missing)} host(s): {', '.join(missing)}. "
                    "The release links it into the app; without it the app starts with none of its variables.",
                    f"Write it with `invoke env.push --env={s.name}`, or set push_env = true under [hosts] in "
                    f"{s.file.name} so every promotion writes it.")
            note = "shared/.env on every host"
        elif s.hosts.hosts:
            note = "shared/.env pushed by this run" if s.hosts.push_env else "hosts answer"
        if s.hosts.hook_env:
            self._hook_env(environ)   # an unset or secret hook variable fails before anything changes
        ready = self._proxy_ready()
        return "; ".join(x for x in (note, ready) if x)

    # the hosts' deploy lock, shared/.env and the smoke origins: OnHosts (deploy/targets/_hosts.py)


    # ------------------------------------------------------------ promote

    def release(self, state: RunState, release_id: str, artifact: Artifact, environ: Mapping[str, str]) -> str:
        s = self.s
        art = dataclasses.replace(artifact, release_id=release_id)
        state.drop(HostsReleaseFacts)
        try:
            # The run's lock step holds the hosts' lock until the run ends.
            results = hosts.release(s.hosts, art, run_id=state.id, keep_lock=True,
                                    env=self._hook_env(environ), app=s.app, proxy=s.proxy)
        except LockHeld:
            state.put(HostsReleaseFacts(locked_out=True))  # another run holds the hosts: nothing was changed
            raise
        state.put(HostsReleaseFacts({r.host: r.previous for r in results}))
        deltas = sum(r.transfer.startswith("delta") and "sent in full" not in r.transfer for r in results)
        return (f"{release_id} live on {len(results)} host(s); sent {sum(r.uploaded for r in results) // 1024} KiB"
                + (f" ({deltas} as a delta)" if deltas else ""))

    def switch_back(self, state: RunState, release_id: str, environ: Mapping[str, str]) -> str:
        if (state.get(HostsReleaseFacts) or HostsReleaseFacts()).locked_out:
            return "another run held the hosts' lock: this run changed nothing there"
        results = hosts.undo_release(self.s.hosts, release_id, run_id=state.id, keep_lock=True,
                                     env=self._hook_env(environ), app=self.s.app, proxy=self.s.proxy)
        return ", ".join(f"{r.host}: {r.release or '-'}" for r in results)

    def release_text(self, release_id: str) -> str:
        s = self.s
        how = "the restart hook" if s.hosts.restart else "the toolkit's supervisor"
        if s.proxy.enabled:
            return (f"upload, unpack, switch current, start beside the live app on the free port, wait for "
                    f"{s.app.health_path} there, switch the host's {s.proxy.kind} to it, stop the old app after "
                    f"{s.proxy.drain_seconds:g}s, on {len(s.hosts.hosts)} host(s) (max {s.hosts.max_parallel} at once)")
        return (f"upload, unpack, switch current, start via {how}, wait for {s.app.health_path} on "
                f"{len(s.hosts.hosts)} host(s) (max {s.hosts.max_parallel} at once)")

    def switch_back_text(self) -> str:
        return "switch switched hosts back and restart; stop the app where it had none"

    def release_shows(self, release_id: str, *, sha256: str = "<artifact sha256>",
                      previous: str = "<current release>") -> list[Command]:
        """Per host, the commands a release sends (deploy/hosts/_commands.py's builders), in order. The
        artifact's checksum and each host's current release are read at run time: shown as placeholders."""
        s = self.s
        out = []
        argv = start_argv(s, f"releases/{release_id}") or ["<the package's start script>"]
        for t in self._targets():
            upload = f"{t.deploy_to}/.uploads/{release_id}.tar.gz"
            out.append(Command(t.name, f"upload the artifact -> {upload}"
                                       + (" (or a delta against a release it has: hosts.delta)" if s.hosts.delta
                                          else "")))
            out.append(Command(t.name, hosts.unpack_command(t, release_id, sha256, upload, previous,
                                                            s.hosts.shared_files)))
            if s.hosts.before_switch:
                out.append(Command(t.name, hosts.hook_command(t, s.hosts.before_switch,
                                                              f"{t.deploy_to}/releases/{release_id}",
                                                              self._hook_vars(t, release_id, previous))))
            if s.proxy.enabled:
                out += self._beside_shows(t, release_id, argv)
                continue
            if s.hosts.restart:
                hook = hosts.hook_command(t, s.hosts.restart, f"{t.deploy_to}/current",
                                          self._hook_vars(t, release_id, previous))
                out.append(Command(t.name, hosts.go_live_command(t, release_id, True, hook, s.hosts.health_command)))
            else:
                out.append(Command(t.name, hosts.switch_command(t, release_id)))
                via = "" if s.hosts.supervisor == "sh" else " (as a systemd user unit where systemd --user runs)"
                out.append(Command(t.name, hosts.supervise_command(t, "restart", s.app.port_var, t.app_port, argv)
                                   + via))
            if s.hosts.health_command:
                out.append(Command(t.name, f"health: {s.hosts.health_command}"))
            elif t.health_url:
                out.append(Command(t.name, f"GET {t.health_url} until it answers"))
        return out

    def _beside_shows(self, t, release_id: str, argv) -> list[Command]:
        """With a proxy: the release started beside the live app, health-checked, the proxy switched, the old
        app stopped (deploy/hosts/_slots.py). Which port of the pair is free is read at run time: shown for
        the spare port, the host's app port being live."""
        s = self.s
        i = [x.name for x in self._targets()].index(t.name)
        p = s.proxy.for_host(i, t.deploy_to)
        live, new = hosts.slot_ports(t, p)
        timeout = s.hosts.health_timeout or s.app.ready_timeout
        return [Command(t.name, hosts.slots_state_command(t, p)),
                Command(t.name, hosts.switch_command(t, release_id)),
                Command(t.name, hosts.start_slot_command(t, new, release_id, s.app.port_var, argv)
                        + f"  (port {new}, or {live} when {new} is the live one)"),
                Command(t.name, hosts.slot_health_command(t, new, s.app.health_path, timeout)),
                Command(t.name, _proxy.switch_command(p, new)),
                Command(t.name, f"after proxy.drain_seconds ({p.drain_seconds:g}s): "
                                + hosts.stop_slot_command(t, live))]

    def _hook_vars(self, t, release_id: str, previous: str) -> dict[str, str]:
        # What hosts passes a hook (RELEASE_ID, PREVIOUS_RELEASE, DEPLOY_TO, DEPLOY_HOST) and
        # hosts.hook_env's variables, whose values are read at run time.
        return {"RELEASE_ID": release_id, "PREVIOUS_RELEASE": previous, "DEPLOY_TO": t.deploy_to,
                "DEPLOY_HOST": t.name, **{n: f"<${n}>" for n in self.s.hosts.hook_env}}

    # ------------------------------------------------------------ rollback

    def way_back(self, to: str | None) -> WayBack:
        """(previous, current) as the hosts see them: for a runner that does not share the
        ledger that made the releases. Every host must agree on current."""
        s = self.s
        if to:
            return WayBack(to, None)
        if not s.hosts.hosts:
            return WayBack(None, None)
        seen = self.releases()
        currents = {h.current for h in seen}
        if len(currents) != 1 or None in currents:
            raise DeployError(
                "The hosts are not on one release: " + ", ".join(f"{h.place}: {h.current or '-'}" for h in seen),
                f"Name the release to go back to: invoke rollback --env={s.name} --to=RELEASE.")
        current = currents.pop()
        assert current is not None   # refused above
        common = sorted(set.intersection(*(set(h.releases) for h in seen)))
        older = [r for r in common if r < current]
        return WayBack(older[-1] if older else None, current)

    def still_serving(self, expect: str | None) -> None:
        return None   # checked under the hosts' lock by rollback(expect=...), before any host switches

    def rollback(self, state: RunState, to: str, *, expect: str | None, environ: Mapping[str, str]) -> str:
        results = hosts.rollback(self.s.hosts, to or None, run_id=state.id, env=self._hook_env(environ),
                                 app=self.s.app, expect=expect, proxy=self.s.proxy)
        for r in results:
            if r.note:
                state.note(f"WARNING {r.host}: {r.note}")
        return ", ".join(f"{r.host}: {r.previous or '-'} -> {r.release}" + (f" (WARNING: {r.note})" if r.note else "")
                         for r in results)

    def rollback_shows(self, to: str) -> list[Command]:
        s = self.s
        argv = start_argv(s, f"releases/{to}") or ["<the package's start script>"]
        out = []
        for t in self._targets():
            if s.proxy.enabled:
                out += self._beside_shows(t, to, argv)
                continue
            out.append(Command(t.name, hosts.switch_command(t, to)))
            out.append(Command(t.name, f"restart hook: {s.hosts.restart}" if s.hosts.restart else
                               hosts.supervise_command(t, "restart", s.app.port_var, t.app_port, argv)))
        return out

    # ------------------------------------------------------------ status

    def serving(self) -> dict[str, str | None]:
        return {r.place: r.current for r in self.releases()}

    def releases(self) -> list[PlaceReleases]:
        return [PlaceReleases(h.host, tuple(h.releases), h.current) for h in hosts.releases(self.s.hosts)]

    def prune(self) -> list[str]:
        # Each host prunes beyond hosts.keep_releases in the release's last phase, under the
        # lock, keeping the new and the previous release (deploy/hosts/_release.py): nothing
        # is left to prune between runs.
        return []

