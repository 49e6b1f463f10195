"""The release-target seam (deploy/targets/): every target implements the whole interface,
the settings name only known targets, and promote/rollback never ask which target they have."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from deploy import config, targets
from deploy.errors import SettingsError
from deploy.targets import METHODS, TARGETS, ReleaseTarget, target_class, target_for
from deploy.targets.local import LocalTree
from deploy.targets.tree import HostsTree

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = sorted({target_class(ref) for pair in TARGETS.values() for ref in pair if ref is not None},
                         key=lambda c: c.__name__)


def settings(raw: dict, name: str = "staging") -> config.Settings:
    return config.parse(raw, name=name, file=Path(f"env/{name}.toml"), root=Path("/p"))


def test_the_interface_has_the_seams_operations():
    # prepare, release, switch back, rollback, status, prune (and the lock a shared target needs)
    assert {"prepare", "release", "switch_back", "rollback", "serving", "releases", "prune",
            "lock", "unlock", "unlock_reachable"} <= set(METHODS)


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_every_target_implements_every_method_of_the_interface(cls):
    assert issubclass(cls, ReleaseTarget)
    assert not cls.__abstractmethods__, f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} unimplemented"
    for name in METHODS:
        owner = next(k for k in cls.__mro__ if name in k.__dict__)
        assert owner is not ReleaseTarget, f"{cls.__name__}.{name} is the interface's, not the target's own"
        assert not getattr(getattr(cls, name), "__isabstractmethod__", False)


def test_every_settings_value_has_a_target_and_every_target_a_settings_value():
    allowed = typing.get_args(typing.get_type_hints(config.ReleaseSection)["target"])
    assert set(allowed) == set(TARGETS)
    assert config.ReleaseSection().target == "tree"


@pytest.mark.parametrize("raw, cls", [
    ({"environment": {"kind": "local"}}, LocalTree),
    ({"environment": {"kind": "local"}, "release": {"target": "tree"}}, LocalTree),
    ({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1", "web2"]}}, HostsTree),
    ({"environment": {"kind": "remote"}, "hosts": {"hosts": ["deploy@10.0.0.5"]}, "release": {"target": "tree"}},
     HostsTree),
], ids=["local-default", "local-tree", "remote-default", "remote-tree"])
def test_target_for_picks_the_place_from_the_environment_kind(raw, cls):
    t = target_for(settings(raw))
    assert type(t) is cls
    assert t.shared is (cls is HostsTree and bool(raw.get("hosts")))


@pytest.mark.parametrize("value", ["platform", "Image", "Tree", "hosts", "", "tree ", 1, ["tree"]],
                         ids=["next-target", "wrong-case-image", "wrong-case", "old-word", "empty", "trailing-space",
                              "number", "list"])
def test_an_unknown_release_target_is_refused_naming_file_key_and_allowed_values(value):
    with pytest.raises(SettingsError) as e:
        settings({"environment": {"kind": "remote"}, "release": {"target": value}})
    text = f"{e.value.message} {e.value.hint}"
    assert "env/staging.toml" in text and "release.target" in text and "'tree'" in text and "'image'" in text


def test_an_unknown_key_under_release_names_the_allowed_keys():
    with pytest.raises(SettingsError, match=r"unknown key release\.targets") as e:
        settings({"release": {"targets": "tree"}})
    assert "target" in e.value.hint


def test_an_unknown_target_stops_promote_and_rollback_with_one_paragraph(project):
    toml = project.root / "env" / "local.toml"
    toml.write_text(toml.read_text() + '\n[release]\ntarget = "platform"\n')
    for task in (["promote", "--to=local"], ["rollback", "--env=local"], ["promote", "--to=local", "--dry-run"]):
        r = project.invoke(*task)
        assert r.returncode == 2, (task, r.stdout, r.stderr)
        assert "local.toml" in r.stderr and "release.target = 'platform' is not allowed" in r.stderr
        assert "Allowed values: 'tree'" in r.stderr and "Traceback" not in r.stderr
    assert not (project.root / ".deploy" / "local").exists()   # nothing was released


# promote and rollback, and what else acts on where releases go: the lock tasks, the env step
# and the steps that release, lock and smoke-check.
FLOWS = ["deploy/flows/promote.py", "deploy/flows/rollback.py", "deploy/flows/lock.py",
         "deploy/flows/steps/_env.py", "deploy/flows/steps/_lock.py", "deploy/flows/steps/_release.py",
         "deploy/flows/steps/_smoke.py"]


@pytest.mark.parametrize("path", FLOWS)
def test_promote_and_rollback_never_ask_which_target_they_have(path):
    """A new target plugs in without an edit here: no import of a target's own module and no
    branch on whether the environment is local or on its hosts."""
    tree = ast.parse((ROOT / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.update({node.module, *(f"{node.module}.{a.name}" for a in node.names)})
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    kinds = {"deploy.hosts", "deploy.local", "deploy.targets.local", "deploy.targets.tree"}
    assert not imported & kinds, f"{path} imports {sorted(imported & kinds)}"
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"is_local", "hosts"}, f"{path} reads {sorted(attrs & {'is_local', 'hosts'})}"


def test_the_package_exports_what_it_documents():
    assert set(targets.__all__) <= set(dir(targets))


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "targets").glob("*.py")), ids=lambda p: p.name)
def test_a_target_sits_below_the_engine_and_the_flows(path):
    """Targets are called by steps; they read and write the run's facts through RunState, never
    through the engine, and know nothing of the flows (docs/architecture.md's layers)."""
    tree = ast.parse(path.read_text())
    found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    above = {m for m in found if m in ("deploy.engine", "deploy.cli", "deploy.tasks", "deploy.services")
             or m.startswith("deploy.flows")}
    assert not above, f"deploy/targets/{path.name} imports {sorted(above)}"


# ----------------------------------------------------------------------------- what flows ask the target besides releasing

@pytest.mark.parametrize("raw, serving, origins", [
    ({"environment": {"kind": "remote", "app_url": "https://shop.example"},
      "hosts": {"hosts": ["web1", "deploy@web2:2222"], "app_ports": [3001, 3002]}}, None,
     ["https://shop.example", "http://web1:3001", "http://web2:3002"]),
    ({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1"]}}, "http://127.0.0.1:4567", ["http://web1:3000"]),
    ({"environment": {"kind": "local"}}, "http://127.0.0.1:4567", ["http://127.0.0.1:4567"]),
    ({"environment": {"kind": "local"}}, None, []),
], ids=["hosts-and-public-url", "hosts-ignore-a-local-url", "local-once-started", "local-before-it-started"])
def test_the_smoke_checks_ask_the_urls_the_target_names(raw, serving, origins):
    from deploy.facts import Serving, put

    state: dict = {}
    if serving:
        put(state, Serving(serving))
    assert target_for(settings(raw)).origins(state) == origins


@pytest.mark.parametrize("raw, holds, writes", [
    ({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1"], "push_env": True}}, True, True),
    ({"environment": {"kind": "remote"}, "hosts": {"hosts": ["web1"], "push_env": False}}, True, False),
    ({"environment": {"kind": "remote", "app_url": "https://shop.example"}}, False, False),
    ({"environment": {"kind": "local"}, "hosts": {"push_env": True}}, False, False),
], ids=["hosts-push-env", "hosts-env-pushed-by-hand", "remote-without-hosts", "local"])
def test_the_env_step_and_env_push_follow_what_the_target_holds(raw, holds, writes):
    from deploy.flows import steps

    s = settings(raw)
    t = target_for(s)
    assert (t.holds_env, t.writes_env, steps.pushes_env(s)) == (holds, writes, writes)
    if not holds:
        assert t.places() == [] and t.locks_held() == [] and t.break_locks(force=True) == []


def test_a_target_on_hosts_names_each_host_and_its_variables_file():
    t = target_for(settings({"environment": {"kind": "remote"},
                             "hosts": {"hosts": ["web1", "deploy@web2:2222"], "deploy_to": "/srv/shop"}}))
    assert t.places() == ["deploy@web1:22", "deploy@web2:2222"]
    assert t.env_file() == "/srv/shop/shared/.env"
    assert [c.where for c in t.env_shows("the variables")] == t.places()
    assert all(c.what.startswith("/srv/shop/shared/.env: ") for c in t.env_shows("the variables"))
