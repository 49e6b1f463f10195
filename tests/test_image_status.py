"""`invoke status` for an environment that runs images on hosts: each host's live release and
its image digest, read from the hosts themselves (real sshd hosts running rootless podman
behind caddy, images from the loopback registry; see tests/test_image_target.py), and a host
that cannot be reached is named with why, while the others are still shown."""

from __future__ import annotations

import json

import pytest

from test_image_target import _release, env, images  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.containers]

FIRST, SECOND = "20260101000000-aaaaaaa", "20260101000100-bbbbbbb"


def _toml(raw: dict) -> str:
    """The settings as env/staging.toml (JSON values are TOML values for these types)."""
    out = []
    for section, values in raw.items():
        out.append(f"[{section}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


def _status(project) -> tuple[dict, str]:
    r = project.invoke("status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {x["env"]: x for x in json.loads(r.stdout)}
    t = project.invoke("status", extra_env={"COLUMNS": "200"})
    assert t.returncode == 0, t.stdout + t.stderr
    return rows, t.stdout


@pytest.mark.parametrize("down", [pytest.param(None, id="every-host-answers"),
                                  pytest.param(1, id="second-host-down")])
def test_status_shows_each_hosts_live_release_and_image_digest(env, images, project, sshd_farm, down):
    project.write_env("staging", _toml(env.raw))
    _release(env, "run-1", FIRST, images["v1"])
    _release(env, "run-2", SECOND, images["v2"])
    digest = images["v2"].rsplit("@", 1)[1]
    if down is not None:
        sshd_farm.stop_host(env.hosts[down])
    try:
        rows, table = _status(project)
    finally:
        if down is not None:
            sshd_farm.bring_back(env.hosts[down])
    live = rows["staging"]["hosts"]
    assert [h["host"] for h in live] == [h.address for h in env.hosts]
    for i, h in enumerate(live):
        if i == down:
            assert h["release"] is None and h["digest"] is None and h["error"], h
            assert f"{h['host']}" in table and "cannot be reached or read" in table
        else:
            assert (h["release"], h["digest"], h["error"]) == (SECOND, digest, None), h
    assert table.count(digest[:19]) == len(env.hosts) - (down is not None), table
    assert digest[:20] not in table, "the table shows the short form"
    assert all(rows[e]["hosts"] is None for e in rows if e != "staging"), "only an image environment reads hosts"
