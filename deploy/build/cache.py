"""The dependency cache: installed node_modules reused across builds with the same inputs.

`DepsCache.hit` builds with an entry's install hard-linked in, `DepsCache.fill` builds
with a fresh install and keeps a copy of it as the entry, `entry_ok` (deploy.build.entry)
verifies an entry before and after a build: cached files are shared, never written. An
entry a build wrote into is dropped and the build redone without it (`run_recipe`), so the
artifact is always what a build without the cache packs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

from deploy import proc, trash
from deploy.build.cachekey import deps_key, npm_context, tool_versions
from deploy.build.entry import (PROD_INFO, SPARE, entry_index, entry_ok, entry_scan, prod_ready, prod_sha256,
                                stamp_is, touch, write_index)
from deploy.build.ops import fs, scan_tree, sha256_file, step, tree_bytes, tree_stamp
from deploy.build.prodtree import (cached_intact, check_linked, check_spare_linked, linked_shape, prelink_prod,
                                   prod_cacheable, prune_beside, prune_beside_setup, prune_inputs, swap_in_prod,
                                   take_spare, unshare_top_files, vouch_prod)
from deploy.build.recipes import DEPS, Recipe
from deploy.errors import BuildFailed, DeployError

Env = Mapping[str, str]
AGAIN = object()   # a build on a spare that was not the cached tree after it: built again on the tree linked anew


def run_recipe(app: Path, plan: Recipe, env: Env, timeout: float, cache: DepsCache | None) -> list[str]:
    """Run the recipe's commands in `app` (display forms returned); with a cache, the install
    comes from the entry of the app's `deps_key` when there is a sound one (`hit`), else
    the build installs and fills it (`fill`), also when the hit's build wrote into the entry."""
    key = cache.key(app, plan, env) if cache is not None and plan.install and not (app / DEPS).exists() else None
    if cache is None or key is None:
        return [step(argv, app, env, timeout) for argv in plan.commands]
    ran = cache.hit(key, app, plan, env, timeout)
    return ran if ran is not None else cache.fill(key, app, plan, env, timeout)


class DepsCache:
    """The dependency cache folder `root`, for one build: at most `keep` entries kept.

    An entry holds `full/node_modules`, as the install left it (before any build wrote into
    it), and for npm (`prod_cacheable`) `prod/node_modules`, what the prune leaves of it. A
    hit hard-links `full` into the checkout (cp -al) and runs the build there, so what the
    build writes into node_modules (a generated client, a cache) is this commit's own. Then,
    when the build left node_modules as linked (or only added top-level dot-folders, which
    npm never reads) and package.json, the lockfile and npm's config are byte for byte the
    ones `prod` was pruned with (and npm's variables and npmrc files too: `npm_context`),
    `prod` is linked in instead of running the prune; otherwise the prune runs in the
    checkout exactly as on a miss. The full tree a hit moved aside is kept as the entry's
    spare, which the next hit takes (`take_spare`) instead of linking anew.

    `known_sha256` collects hashes of files linked from a production tree (pack reads them
    without hashing again), `known_tree` that tree's rows once checked (the pack takes them
    instead of walking node_modules); `wait()` finishes the removals started in the background."""

    def __init__(self, root: Path, keep: int):
        self.root = root
        self.keep = keep
        self.known_sha256: dict[tuple[int, int, int, int], str] = {}
        self.known_tree: dict[str, tuple] | None = None
        self.filled = False
        self._verdict: Future | None = None          # the stat walks `confirmed` waits for
        self._verdict_entry = root
        self._checkout: tuple[Path, set[str]] | None = None   # the hit's checkout and its files before the build   # a fill ran: the cache may have grown
        self._background: list[Future] = []
        self._pool: ThreadPoolExecutor | None = None

    def key(self, app: Path, plan: Recipe, env: Env) -> str | None:
        """The entry name of `app`'s install (`deps_key`), None when it cannot be keyed."""
        versions = tool_versions(plan, env, self.root)
        return deps_key(app, plan, versions) if versions is not None else None

    # ---- a hit

    def hit(self, key: str, app: Path, plan: Recipe, env: Env, timeout: float) -> list[str] | None:
        """Build in `app` with the entry's install linked in; None when there is no sound
        entry, or when the build wrote into it (then the entry, node_modules and what the
        build added to the checkout are gone): build it as a miss.

        The entry's spare (its full tree, linked, left by the hit before) is taken by a rename
        and checked once, after the build (`check_linked`: every path, inode, mode, size and
        mtime, the index read while the build runs): the same walk that says whether the build
        left node_modules as linked. When it was not the cached tree then, the build changed it or
        the spare was not what the entry holds: the build's output is dropped and it runs again on
        the entry's tree linked anew (checked as it links). An app with no production tree to link
        after the build has its spare checked before the build, as it has nothing to gain."""
        entry = self.root / key
        if not entry.exists():
            return None
        touch(entry)   # in use from now: a concurrent prune keeps the most recently used
        sources = source_files(app)
        self._checkout = (app, sources)
        prod = prod_ready(entry, plan)
        ran: list[str] = []
        if prod is not None and take_spare(entry, app / DEPS):
            ran = [f"(dependency cache {key[:12]}) mv {entry / SPARE} {DEPS}"]
            got = self._build_linked(entry, app, plan, env, timeout, prod, self._pooled().submit(entry_index, entry),
                                     ran)
            if got is not AGAIN:
                return self._settle(got, entry, key, app, sources, ran)
            ran.append(f"(dependency cache {key[:12]}) node_modules was not the cached tree after the build: "
                       "built again on the entry linked anew")
            self._clear(app, sources)
            if not entry.exists():
                return None
        index = None
        spare = prod is None and take_spare(entry, app / DEPS)
        if spare:
            index = check_spare_linked(entry, app / DEPS)
            spare = index is not None
        if index is None:
            index = self._link_full(entry, app) if entry.exists() else None
            if index is None:
                return None
            unshare_top_files(app / DEPS)
        ran.append(f"(dependency cache {key[:12]}) " + (f"mv {entry / SPARE} {DEPS}" if spare else
                                                        f"cp -al {entry / 'full' / DEPS} {DEPS}"))
        got = self._build_linked(entry, app, plan, env, timeout, prod, index, ran)
        return self._settle(got, entry, key, app, sources, ran)

    def _build_linked(self, entry: Path, app: Path, plan: Recipe, env: Env, timeout: float, prod: dict | None,
                      index: dict[str, tuple] | Future, ran: list[str]) -> bool | object:
        """The build on node_modules linked from the entry, then the prune (`_prune_from_entry`).
        `index`: the full tree's index when the tree was checked before the build, or a Future
        of it for a spare checked only after. True when the build is sound, False when the
        entry is damaged, AGAIN when a spare was not the cached tree after the build."""
        rest = list(plan.commands[1:])
        # The production tree is linked beside (and checked) while the build runs (it only reads the entry).
        ready = self._pooled().submit(prelink_prod, entry, prod.get("stamp")) if prod is not None else None
        spare = isinstance(index, Future)
        try:
            try:
                ran += [step(argv, app, env, timeout) for argv in (rest[:-1] if prod else rest)]
            except BuildFailed:
                if isinstance(index, Future):   # the failure may be the spare's: looked at before it is reported
                    full = index.result()
                    intact, added = check_linked(app / DEPS, entry / "full", full) if full else (False, None)
                    if not intact:
                        return False
                    if added is None:
                        return AGAIN
                raise
            full = index.result() if isinstance(index, Future) else index
            if full is None:   # the entry's full tree is not the one it was filled with
                return False
            if prod is None:
                return entry_ok(entry)
            return self._prune_from_entry(entry, prod, full, app, plan, env, timeout, ran, ready=ready, spare=spare)
        finally:
            if ready is not None:
                left = ready.result()[1]
                if left is not None and left.exists():
                    trash.discard(left)   # not used (the build failed, or did not fit)

    def _settle(self, sound: bool | object, entry: Path, key: str, app: Path, sources: set[str],
                ran: list[str]) -> list[str] | None:
        if sound is True:
            touch(entry)
            self.prune(protect=(key,))
            return ran
        # The build wrote into a cached file: that entry can no longer be trusted, and
        # neither can this build's output. Drop both; the caller builds again and refills.
        fs(["rm", "-rf", str(entry)], "dropping a damaged cache entry")
        self._clear(app, sources)
        return None

    def _clear(self, app: Path, sources: set[str]) -> None:
        """Remove node_modules and what the build added to the checkout (its own files stay)."""
        fs(["rm", "-rf", str(app / DEPS)], "removing node_modules")
        for rel in sorted(source_files(app) - sources):
            (app / rel).unlink(missing_ok=True)
        self.known_sha256.clear()
        self.known_tree = None

    def _link_full(self, entry: Path, app: Path) -> dict[str, tuple] | None:
        """Hard-link the entry's full tree into `app` while checking the entry (both only read
        it): the entry's index, or None when it is damaged (then dropped, its links too)."""
        def link() -> DeployError | None:
            try:
                fs(["cp", "-al", str(entry / "full" / DEPS), str(app / DEPS)], "restoring node_modules from the cache")
            except DeployError as e:
                return e
            return None

        pending = self._pooled().submit(link)
        try:
            index = entry_scan(entry)
        finally:
            failed = pending.result()
        if index is None:
            fs(["rm", "-rf", str(entry), str(app / DEPS)], "dropping a damaged cache entry")
            return None
        if failed is not None:
            raise failed
        return index

    def _prune_from_entry(self, entry: Path, prod: dict, index: dict, app: Path, plan: Recipe, env: Env,
                          timeout: float, ran: list[str], linked: tuple[bool, list[str] | None] | None = None,
                          ready: Future | None = None, spare: bool = False) -> bool | object:
        """The prune after a hit's build: the entry's production tree linked in when it fits
        this build, else the prune run in the checkout. True when the build is sound (an
        entry whose production tree changed is dropped here, refilled next time), AGAIN when
        the build ran on the `spare` and node_modules is not the cached tree now. `linked`:
        `check_linked`'s answer for this checkout when the caller has it already; `ready`:
        `prelink_prod`'s (the tree linked, and checked by its listings, while the build ran).

        Whether node_modules is still as linked is read from its listings here; when the
        production tree fits, the stat walks (the full tree at its own paths, the production
        tree's own files) run while the caller packs, and `confirmed` waits for them before the
        caller keeps anything."""
        if linked is not None:
            intact, added = linked
        else:
            intact, added = None, linked_shape(app / DEPS, entry / "full", index)   # intact: stat'ed below
        fits = intact is not False and added is not None and prune_inputs(app) == prod["inputs"] \
            and npm_context(env) == prod.get("context") \
            and not any((entry / "prod" / DEPS / name).exists() for name in added)
        held, linked_prod, rows = ready.result() if ready is not None else (None, None, None)
        prod_ok = not fits or (held if held is not None else stamp_is(entry / "prod", prod.get("stamp")))
        if fits and prod_ok and added is not None:   # fits: added is known
            if intact is None:
                self._check_later(entry, index, rows)
            aside = swap_in_prod(app, entry, added, linked_prod)
            if aside is not None:
                self._in_background(["rm", "-rf", str(aside)], "removing the full node_modules")
            self.known_sha256.update(prod_sha256(prod))
            self.known_tree = rows   # what node_modules now holds (vouched for by `confirmed`): the pack takes its rows
            ran.append(f"(dependency cache {entry.name[:12]}) cp -al {entry / 'prod' / DEPS} {DEPS}")
            return True
        if intact is None:
            intact = cached_intact(entry / "full", index)
        if spare and intact and added is None:
            return AGAIN
        if not intact:
            return False
        ran.append(step(plan.prune, app, env, timeout))
        if not entry_ok(entry):   # the prune ran on the links too
            return False
        if not prod_ok:
            fs(["rm", "-rf", str(entry)], "dropping a damaged cache entry")
        return True

    def _check_later(self, entry: Path, index: dict, rows: dict | None) -> None:
        """Start the stat walks `confirmed` waits for: the entry's full tree against `index`,
        then the production tree's `rows` (`vouch_prod`)."""
        def check() -> bool:
            return cached_intact(entry / "full", index) and (rows is None or vouch_prod(rows, index, entry / "prod" / DEPS))
        self._verdict = self._pooled().submit(check)
        self._verdict_entry = entry

    def confirmed(self) -> bool:
        """Whether the stat walks left running while the build packed (`_prune_from_entry`)
        found the entry as it was filled (True when none ran). When not, the build may have
        written into the cache, or the cache was changed: the entry is dropped and the checkout
        cleared (node_modules, what the build added), and nothing of this build may be kept:
        the caller builds again (a miss)."""
        pending, self._verdict = self._verdict, None
        if pending is None or pending.result():
            return True
        fs(["rm", "-rf", str(self._verdict_entry)], "dropping a damaged cache entry")
        if self._checkout is not None:
            self._clear(*self._checkout)
        return False

    # ---- a miss

    def fill(self, key: str, app: Path, plan: Recipe, env: Env, timeout: float) -> list[str]:
        """Build in `app` with a fresh install, and keep that install as the entry (with, for
        npm, its production tree pruned beside the build), unless the install wrote outside
        node_modules. The install is moved into the entry and hard-linked back (`mv`, `cp -al`:
        never copied), so the build runs on links as a hit's does and gets the same checks
        (`check_linked`: a build that wrote into the install through a link keeps its output,
        which is its own install's, but no entry). A build that fails after its install still
        keeps it, so the retry after a fix links it."""
        entry = self.root / key
        before = source_stamp(app)
        ran = [step(plan.commands[0], app, env, timeout)]
        self.filled = True
        staged = index = None
        if source_stamp(app) == before and (app / DEPS).is_dir():
            staged, index = self._stage_install(key, app, plan)
        if staged is None or index is None:   # not cacheable: the build as without a cache
            return ran + [step(argv, app, env, timeout) for argv in plan.commands[1:]]
        try:
            full_stamp = json.loads((staged / "stamp.json").read_text())["full"]
            side = prune_beside_setup(app, staged) if prod_cacheable(app, plan) else None
            rest = list(plan.commands[1:])
            last_is_prune = bool(plan.prune) and bool(rest) and rest[-1] == plan.prune
            try:
                # The production tree is pruned beside the build, on its own links; the build stays
                # in this thread, where an interrupt reaches it (and kills its process group).
                with ThreadPoolExecutor(max_workers=1) as pool:
                    beside = pool.submit(prune_beside, *side, plan, env, timeout) if side is not None else None
                    ran += [step(argv, app, env, timeout) for argv in (rest[:-1] if last_is_prune else rest)]
            except BuildFailed:
                self._keep(staged, entry, full_stamp, side, pruned=False, plan=plan, env=env, quiet=True)
                raise
            pruned = beside is not None and beside.exception() is None and beside.result()
            intact, added = check_linked(app / DEPS, staged / "full", index)
            if not intact:
                # The build wrote into its install in place: its output is its own, but the
                # install is no longer what npm left, so it is not kept.
                fs(["rm", "-rf", str(staged)], "clearing a cache fill")
                if last_is_prune:
                    ran.append(step(plan.prune, app, env, timeout))
                return ran
            self._keep(staged, entry, full_stamp, side, pruned=pruned, plan=plan, env=env)
            ours = entry.exists() and not staged.exists()
            prod = prod_ready(entry, plan) if ours and last_is_prune else None
            if prod is not None:
                if not self._prune_from_entry(entry, prod, index, app, plan, env, timeout, ran, (intact, added)):
                    fs(["rm", "-rf", str(entry)], "dropping a damaged cache entry")
            elif last_is_prune:
                ran.append(step(plan.prune, app, env, timeout))
                if ours and not entry_ok(entry):   # the prune ran on the links too
                    fs(["rm", "-rf", str(entry)], "dropping a damaged cache entry")
        finally:
            if staged.exists():
                fs(["rm", "-rf", str(staged)], "clearing a cache fill")
        self.prune(protect=(key,))
        return ran

    def _stage_install(self, key: str, app: Path, plan: Recipe) -> tuple[Path | None, dict | None]:
        """<root>/.fill-<key>-<pid>/full/node_modules: the fresh install moved there (a rename),
        without what the build generates anew (a hit's build writes its own, never into the
        entry), stamped (stamp.json), and hard-linked back into the checkout while it is
        scanned (both only read it). (staged folder, its index), or (None, None) when the
        install cannot be moved (another file system): then nothing is kept."""
        staged = self.root / f".fill-{key[:16]}-{os.getpid()}"
        fs(["rm", "-rf", str(staged)], "clearing a cache fill")
        (staged / "full").mkdir(parents=True)
        try:
            os.rename(app / DEPS, staged / "full" / DEPS)
        except OSError:
            fs(["rm", "-rf", str(staged)], "clearing a cache fill")
            return None, None
        for name in plan.generated:
            fs(["rm", "-rf", str(staged / "full" / DEPS / name)], "filling the dependency cache")

        def link() -> DeployError | None:
            try:
                fs(["cp", "-al", str(staged / "full" / DEPS), str(app / DEPS)], "linking the install back")
            except DeployError as e:
                return e
            return None

        pending = self._pooled().submit(link)
        try:
            stamp, index = scan_tree(staged / "full")
        finally:
            failed = pending.result()
        if failed is not None:
            raise failed
        (staged / "stamp.json").write_text(json.dumps({"full": stamp}) + "\n")
        write_index(staged, stamp, index)
        unshare_top_files(app / DEPS)
        return staged, index

    def _keep(self, staged: Path, entry: Path, full_stamp: str | None, side, *, pruned: bool, plan: Recipe,
              env: Env, quiet: bool = False) -> None:
        """Complete the staged copy (stamp.json, and prod/ + prod.json when pruned beside) and rename
        it to the entry: complete entries only, and a concurrent filler's wins. `quiet`: after
        a failed build, keep only a sound `full` tree, and never fail for it."""
        if quiet and (not (staged / "full").is_dir() or tree_stamp(staged / "full") != full_stamp):
            return
        try:
            (staged / "stamp.json").write_text(json.dumps({"full": full_stamp}) + "\n")   # as staged
            if pruned:
                (staged / "prod").mkdir()
                os.rename(side[0] / DEPS, staged / "prod" / DEPS)
                stamp, index = scan_tree(staged / "prod")
                write_index(staged, stamp, index, part="prod")
                info = {"prune": list(plan.prune), "inputs": side[1], "context": npm_context(env), "stamp": stamp,
                        "sha256": [[*row[1:3], row[4], row[5], sha256_file(staged / "prod" / rel)]
                                   for rel, row in index.items() if row[0] == "f" and stat.S_ISREG(row[3])]}
                (staged / PROD_INFO).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
            if side is not None:
                fs(["rm", "-rf", str(side[0])], "clearing a cache fill")
            with contextlib.suppress(OSError):
                os.rename(staged, entry)   # complete entries only; a concurrent filler's wins
                touch(entry)
        except (BuildFailed, OSError):
            if not quiet:
                raise

    # ---- upkeep

    def prune(self, protect: Iterable[str] = ()) -> list[str]:
        """`prune_deps_cache` of this cache to `keep` entries."""
        return prune_deps_cache(self.root, self.keep, protect)

    def _pooled(self) -> ThreadPoolExecutor:
        self._pool = self._pool or ThreadPoolExecutor(max_workers=2)
        return self._pool

    def _in_background(self, argv: list[str], what: str) -> None:
        """Run a clean-up while the build goes on (`wait` finishes it); a leftover is never
        packed, and the next swap clears it."""
        def quietly() -> None:
            try:
                fs(argv, what)
            except DeployError:
                pass
        self._background.append(self._pooled().submit(quietly))

    def wait(self) -> None:
        """Finish the background clean-ups (and a check `confirmed` was not asked for: the
        build failed meanwhile; a damaged entry is dropped all the same)."""
        pending, self._verdict = self._verdict, None
        if pending is not None and pending.exception() is None and not pending.result():
            with contextlib.suppress(DeployError):
                fs(["rm", "-rf", str(self._verdict_entry)], "dropping a damaged cache entry")
        for f in self._background:
            f.exception()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def source_files(app: Path) -> set[str]:
    """The checkout's files outside node_modules (to remove what a build added)."""
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(app):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(app) and d == DEPS)]
        out.update(os.path.relpath(os.path.join(dirpath, f), app) for f in filenames)
    return out


def source_stamp(app: Path) -> str:
    """The checkout's own files, node_modules aside: an install that writes elsewhere
    (a postinstall generating sources) is not cacheable by node_modules alone."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(app):
        dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(app) and d == DEPS))
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, app)}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def deps_cache_dir(artifacts_dir: str | Path) -> Path:
    """The build's default dependency cache folder: <artifacts_dir>/../cache/deps."""
    return Path(artifacts_dir).parent / "cache" / "deps"


def prune_deps_cache(cache_root: str | Path, keep: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete all but the `keep` most recently used dependency cache entries (never a
    protected key) and leftovers of interrupted fills; returns the keys removed."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    rows = []
    for d in root.iterdir():
        if d.name.startswith(".fill-"):
            try:
                pid = int(d.name.rsplit("-", 1)[1])
            except ValueError:
                pid = 0
            if pid <= 0 or not proc.pid_alive(pid):
                fs(["rm", "-rf", str(d)], "removing an interrupted cache fill")
            continue
        if d.is_dir() and not d.name.startswith("."):   # .trash-*: being deleted (deploy.trash)
            try:
                used = (d / "used").stat().st_mtime
            except OSError:
                used = 0.0
            rows.append((used, d.name))
    rows.sort(reverse=True)
    protect = set(protect)
    doomed = [name for _, name in rows[max(1, keep):] if name not in protect]
    for name in doomed:
        trash.discard(root / name)   # renamed aside now, deleted in the background (deploy.trash)
    return doomed


def prune_deps_cache_to_size(cache_root: str | Path, max_mb: int, protect: Iterable[str] = ()) -> list[str]:
    """Delete least recently used dependency cache entries (never a protected key, nor the most
    recently used one) until the cache takes at most `max_mb` MB; returns the keys removed."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    rows = []
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            try:
                used = (d / "used").stat().st_mtime
            except OSError:
                used = 0.0
            rows.append((used, d.name, tree_bytes(d)))
    total = sum(r[2] for r in rows)
    doomed = []
    protect = set(protect) | {max(rows)[1]} if rows else set(protect)
    for used, name, size in sorted(rows):          # oldest use first
        if total <= max_mb * 1024 * 1024:
            break
        if name in protect:
            continue
        trash.discard(root / name)
        total -= size
        doomed.append(name)
    return doomed
