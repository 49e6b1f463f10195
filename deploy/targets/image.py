"""The image target on hosts (`[release] target = "image"`): the container image the build step
pushed (the run's `ImageRef`: `<registry>/<repository>@sha256:...`) runs by digest on every host
of `[hosts]`, behind the host's proxy (`[proxy]`), with podman or docker (`[image] runtime`,
detected per host when "auto"). The operations are deploy/hosts/_images.py's (phases over the
hosts, each host's commands from deploy/hosts/_containers.py); this class puts them behind the
target interface and reads the settings and the registry's credentials.

A release pulls (unless the host has the image), starts the new container beside the live one,
waits for `[app] health_path` on the host, switches the proxy, and returns; the old container
drains and stops and images beyond `[image] keep` releases' go in a finish left running in the
background on the host, which the next operation's first read of the host waits for. Rollback is an earlier
release's image: no build, no pull while the host still has it. Migrations and Shopify are the
promotion's own steps, as for the tree target; an image whose start command migrates (the
template's `docker-start` runs `prisma migrate deploy`) does so on every start.

What the run state records (`ImageReleaseFacts`, before anything changes): what each host served
and on which port, and where this release pulled its image; the undo reads the hosts again and
uses these only for what a host no longer shows.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping

from deploy import hosts, images
from deploy.errors import DeployError, LockHeld, SettingsError
from deploy.facts import ImageRef, ImageReleaseFacts
from deploy.hosts import _images as ops
from deploy.hosts._containers import (ImageHostState, Runtime, container_name, fill_args, health_command,
                                      background_finish_command, pull_command, run_command, stop_command)
from deploy.hosts._proxy import switch_command as proxy_switch, upstream_command as proxy_upstream
from deploy.targets._base import Command, PlaceReleases, RunState, WayBack
from deploy.targets._hosts import OnHosts

if TYPE_CHECKING:
    from deploy.build import Artifact
    from deploy.config import Settings
    from deploy.hosts._values import Target


@dataclasses.dataclass(frozen=True)
class LiveImage:
    """What one host serves: its live release and that release's image (None: nothing, or no
    record of it), or why the host could not be read."""

    host: str
    release: str | None
    ref: str | None
    error: str = ""

    @property
    def digest(self) -> str | None:
        """`sha256:<64 hex>` of the live image."""
        return self.ref.rsplit("@", 1)[1] if self.ref and "@" in self.ref else None


def _port(text: str) -> int | None:
    line = (text.strip().splitlines() or [""])[-1].strip()
    return int(line) if line.isdigit() else None


class HostsImage(OnHosts):
    """The environment's [hosts], each running the release's image behind its proxy."""

    name = "image on hosts"

    @property
    def ledger_first(self) -> bool:
        return True   # the ledger says what was promoted; the hosts' records when it knows nothing

    # ------------------------------------------------------------ settings -> what the hosts need

    def _proxy(self) -> ops.ImageProxy | None:
        s = self.s
        if not s.proxy.enabled:
            return None
        index = {t.name: i for i, t in enumerate(hosts.targets(s.hosts, s.app))}

        def one(t: Target):
            return s.proxy.for_host(index[t.name], t.deploy_to)

        return ops.ImageProxy(switch=lambda t, port: proxy_switch(one(t), port),
                         upstream=lambda t: proxy_upstream(one(t)), parse=_port)

    def _containers(self, environ: Mapping[str, str] | None = None, *, creds: bool = True) -> ops.Containers:
        s, im = self.s, self.s.image
        login = images.credentials(s, environ) if creds and environ is not None else None
        ca = b""
        if im.ca_file:
            path = s.path(im.ca_file)
            try:
                ca = path.read_bytes()
            except OSError as e:
                raise SettingsError(f"image.ca_file = {im.ca_file!r} in {s.file.name} cannot be read "
                                    f"({e.strerror}).", "Point it at the registry's CA certificate (PEM).") from None
        return ops.Containers(
            runtime=im.runtime, runtime_args=im.runtime_args, run_args=im.run_args, network=im.network,
            port_span=im.port_span, keep=im.keep, stop_timeout=im.stop_timeout, previous_running=im.previous_running,
            drain_seconds=s.proxy.drain_seconds, health_path=s.app.health_path,
            health_timeout=s.hosts.health_timeout or s.app.ready_timeout, port_var=s.app.port_var,
            app_port=s.app.port, insecure=im.insecure, ca=ca, username=login.username if login else "",
            password=login.password if login else None, proxy=self._proxy())

    def _read(self) -> list[tuple[str, ImageHostState | None, str]]:
        return ops.read_image_hosts(self.s.hosts, self._containers(creds=False), self.s.app)

    # ------------------------------------------------------------ before anything changes

    def prepare(self, environ: Mapping[str, str]) -> str:
        """Every host answers, has its runtime, curl or wget, and shared/.env (unless the run
        pushes it); the registry login works there; the proxy is set."""
        s = self.s
        if not s.hosts.hosts:
            return ""
        if not s.proxy.enabled:
            raise SettingsError(f"{s.file.name}: release.target = \"image\" needs a proxy in front of the app on "
                                "each host ([proxy] kind = \"caddy\" or \"nginx\").",
                                f"Add [proxy] to {s.file.name}, then install it: invoke hosts.setup --env={s.name}.")
        if not s.hosts.push_env and ".env" in s.hosts.shared_files:
            missing = hosts.missing_env(s.hosts)
            if missing:
                raise SettingsError(
                    f"{s.hosts.deploy_to}/shared/.env is missing on {len(missing)} host(s): {', '.join(missing)}. "
                    "The container gets its variables from it.",
                    f"Write it with `invoke env.push --env={s.name}`, or set push_env = true under [hosts].")
        found = ops.check_image_hosts(s.hosts, self._containers(environ), s.image.registry, s.app)
        notes = [*found, f"logged in to {s.image.registry}" if s.image.username_var else "", self._proxy_ready()]
        return "; ".join(n for n in notes if n)

    # the hosts' deploy lock and shared/.env: OnHosts (deploy/targets/_hosts.py)


    # ------------------------------------------------------------ promote

    def _ref(self, state: RunState) -> str:
        ref = state.get(ImageRef)
        if ref is None:
            raise DeployError("This run has no image to release (no ImageRef in its state: the build step did not "
                              "push one).", "Run the promotion again; its build step builds and pushes the image.")
        return ref.reference

    def release(self, state: RunState, release_id: str, artifact: Artifact, environ: Mapping[str, str]) -> str:
        s = self.s
        ref = self._ref(state)
        c = self._containers(environ)
        try:
            hosts.acquire_lock(s.hosts, run_id=state.id, release_id=release_id)   # the run's own: re-entrant
        except LockHeld:
            state.put(ImageReleaseFacts(ref=ref, locked_out=True))
            raise
        known = state.get(ImageReleaseFacts)

        def remember(before: dict[str, ops.ServedBefore]) -> None:
            if known is not None and known.ref == ref and known.previous:
                return   # a resumed run: what the hosts served before its first attempt stands
            state.put(ImageReleaseFacts(ref=ref, previous={h: b.release for h, b in before.items()},
                                        ports={h: b.port for h, b in before.items()}))
            state.checkpoint()

        def pulled(names: list[str]) -> None:
            facts = state.get(ImageReleaseFacts)
            if facts is not None and names:
                state.put(dataclasses.replace(facts, pulled=tuple(sorted({*facts.pulled, *names}))))
                state.checkpoint()

        results = ops.release_image(s.hosts, c, release_id, ref, run_id=state.id, remember=remember, pulled=pulled,
                              app=s.app)
        for r in results:
            if r.note and not r.note.startswith("pruned"):
                state.note(f"{r.host}: {r.note}")
        digest = ref.rsplit("@", 1)[1]
        return f"{release_id} ({digest[:19]}) live on {len(results)} host(s) behind the proxy"

    def switch_back(self, state: RunState, release_id: str, environ: Mapping[str, str]) -> str:
        facts = state.get(ImageReleaseFacts)
        if facts is not None and facts.locked_out:
            return "another run held the hosts' lock: this run changed nothing there"
        before = {h: ops.ServedBefore(r, (facts.ports or {}).get(h)) for h, r in (facts.previous or {}).items()} if facts \
            else {}
        results = ops.undo_image_release(self.s.hosts, self._containers(environ), release_id, run_id=state.id,
                                   before=before, pulled=facts.pulled if facts else (), app=self.s.app)
        return ", ".join(f"{r.host}: {r.release or '-'}" + (f" ({r.note})" if r.note else "") for r in results)

    def release_text(self, release_id: str) -> str:
        s = self.s
        return (f"pull the image by digest (unless there), start it beside the live container, wait for "
                f"{s.app.health_path}, switch the {s.proxy.kind} proxy, drain and stop the old one, on "
                f"{len(s.hosts.hosts)} host(s)")

    def switch_back_text(self) -> str:
        return ("switch the proxy back to the previous release's container (started again from its image if it "
                "stopped); remove the new container")

    def _shown_runtime(self, t: Target) -> Runtime:
        im = self.s.image
        name = im.runtime if im.runtime != "auto" else "podman"
        return Runtime(name, fill_args(im.runtime_args, t), fill_args(im.run_args, t))

    def release_shows(self, release_id: str, *, ref: str = "") -> list[Command]:
        """Per host, the commands a release sends, in order. The digest (known once the build
        pushed), the port picked and the registry login (on stdin) are shown as placeholders."""
        s, im = self.s, self.s.image
        ref = ref or f"{im.registry}/{im.repository}@sha256:<digest of the build>"
        out = []
        proxy = self._proxy()
        for t in self._targets():
            rt = self._shown_runtime(t)
            pull = pull_command(t, rt, ref, auth=bool(im.username_var), insecure=im.insecure, ca=bool(im.ca_file),
                                shown=True)
            out.append(Command(t.name, pull + (" (auth file on stdin: <registry login>)" if im.username_var else "")))
            out.append(Command(t.name, run_command(t, rt, release_id, ref, port_var=s.app.port_var, app_port=s.app.port,
                                                   first_port=t.app_port, span=im.port_span, network=im.network,
                                                   shown=True)))
            out.append(Command(t.name, health_command(t, rt, release_id, 0, s.app.health_path,
                                                      s.hosts.health_timeout or s.app.ready_timeout)
                               .replace("127.0.0.1:0", "127.0.0.1:<port>")))
            if proxy is not None:
                out.append(Command(t.name, f"proxy: switch to <port>: {proxy.switch(t, 65535)}"
                                   .replace("65535", "<port>")))
            stop = stop_command(t, rt, "<previous release>", drain=s.proxy.drain_seconds, stop_timeout=im.stop_timeout)
            out.append(Command(t.name, background_finish_command(
                t, stop + f"; <prune records and images beyond the newest {im.keep}>")))
        return out

    # ------------------------------------------------------------ rollback

    def way_back(self, to: str | None) -> WayBack:
        """(previous, current) as the hosts' records say: every host must serve the same release;
        previous is the release it replaced (its record), if every host still holds it."""
        s = self.s
        if to:
            return WayBack(to, None)
        if not s.hosts.hosts:
            return WayBack(None, None)
        seen = self._read()
        bad = [f"{h}: {err}" for h, st, err in seen if err or st is None]
        if bad:
            raise DeployError("Cannot read every host: " + "; ".join(bad),
                              f"Name the release to go back to: invoke rollback --env={s.name} --to=RELEASE.")
        states = [st for _, st, _ in seen if st is not None]
        currents = {st.current for st in states}
        if len(currents) != 1 or None in currents:
            raise DeployError(
                "The hosts are not on one release: " + ", ".join(f"{h}: {st.current if st else '-'}"
                                                                 for h, st, _ in seen),
                f"Name the release to go back to: invoke rollback --env={s.name} --to=RELEASE.")
        current = currents.pop()
        prevs = {(rec.previous if (rec := st.record(current)) else None) for st in states}
        prev = prevs.pop() if len(prevs) == 1 else None
        if prev is None or not all(st.record(prev) for st in states):
            common = sorted(set.intersection(*({r.release for r in st.records} for st in states)))
            older = [r for r in common if current and r < current]
            prev = older[-1] if older else None
        return WayBack(prev, current)

    def still_serving(self, expect: str | None) -> None:
        return None   # checked under the hosts' lock by rollback(expect=...), before any host switches

    def rollback(self, state: RunState, to: str, *, expect: str | None, environ: Mapping[str, str]) -> str:
        s = self.s
        hosts.validate_release_id(to)
        c = self._containers(environ, creds=bool(s.image.username_var and s.image.username_var in environ))
        hosts.acquire_lock(s.hosts, run_id=state.id, release_id=to)
        try:
            results = ops.rollback_image(s.hosts, c, to, run_id=state.id, expect=expect, app=s.app)
        finally:
            hosts.release_lock(s.hosts, run_id=state.id)
        return ", ".join(f"{r.host}: {r.previous or '-'} -> {r.release}" for r in results)

    def rollback_shows(self, to: str) -> list[Command]:
        s, im = self.s, self.s.image
        out = []
        proxy = self._proxy()
        for t in self._targets():
            rt = self._shown_runtime(t)
            out.append(Command(t.name, f"image of {to} from {t.deploy_to}/image/releases/{to} (pulled only when the "
                                       "host no longer has it)"))
            out.append(Command(t.name, run_command(t, rt, to, f"{im.registry}/{im.repository}@sha256:<digest of {to}>",
                                                   port_var=s.app.port_var, app_port=s.app.port,
                                                   first_port=t.app_port, span=im.port_span, network=im.network,
                                                   shown=True)))
            out.append(Command(t.name, f"GET http://127.0.0.1:<port>{s.app.health_path} on the host until it answers"))
            if proxy is not None:
                out.append(Command(t.name, f"proxy: switch to <port>: {proxy.switch(t, 65535)}"
                                   .replace("65535", "<port>")))
            stop = stop_command(t, rt, "<current release>", drain=s.proxy.drain_seconds, stop_timeout=im.stop_timeout)
            out.append(Command(t.name, background_finish_command(t, stop)))
        return out

    # ------------------------------------------------------------ status

    def serving(self) -> dict[str, str | None]:
        return {h: (st.current if st else None) for h, st, _ in self._read()}

    def releases(self) -> list[PlaceReleases]:
        out = []
        for h, st, _ in self._read():
            rec = st.record(st.current) if st else None
            out.append(PlaceReleases(h, tuple(r.release for r in st.records) if st else (), st.current if st else None,
                                     f"live image {rec.ref}" if rec else ""))
        return out

    def live_images(self) -> list[LiveImage]:
        """Per host, in settings order, its live release and that release's image by digest, read
        from the host (every host at once, each bounded by hosts.connect_timeout and the short
        commands' bound); a host that cannot be reached or read has its error instead."""
        out = []
        for h, st, err in self._read():
            rec = st.record(st.current) if st else None
            out.append(LiveImage(h, st.current if st else None, rec.ref if rec else None,
                                 err or ("" if st else "not read")))
        return out

    def digests(self) -> dict[str, tuple[str | None, str | None]]:
        """host -> (live release, its image reference by digest, or `unreadable: <why>`)."""
        return {i.host: (i.release, i.ref if not i.error else f"unreadable: {i.error}") for i in self.live_images()}

    def prune(self) -> list[str]:
        # Each host prunes beyond image.keep in the release's finish phase, under the lock
        # (deploy/hosts/_images.py): nothing is left to prune between runs.
        return []


__all__ = ["HostsImage", "LiveImage", "container_name"]
