"""Hypothesis fuzzing of the parsers that read what users and tools hand us: settings
(config.parse), the variable matrix (envs.parse_matrix), dotenv files (envs.check),
Shopify CLI output (parse_versions, parse_deploy_output, parse_release_output) and the
host facts (parse_lock_details, parse_state). Each gives a result or a DeployError,
never another exception.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from deploy.errors import DeployError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECTIONS = ["environment", "local", "database", "hosts", "shopify", "gate", "approvals", "smoke", "watch",
            "lock", "decision_log", "golive", "hostz"]
KEYS = ["kind", "hosts", "port", "deploy_to", "checks", "url", "required", "retries", "timeout", "provider",
        "config", "window_seconds", "lighthouse", "performance", "max_parallel", "health_urls", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=12)
raw_settings = st.dictionaries(st.sampled_from(SECTIONS),
                               st.one_of(values, st.dictionaries(st.sampled_from(KEYS), values, max_size=5)),
                               max_size=5)


def result_or_deploy_error(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except DeployError as e:
        assert str(e).strip()
        return e


@SETTINGS
@given(raw=raw_settings)
def test_config_parse_gives_settings_or_a_settings_error(raw):
    from deploy import config

    root = Path("/nonexistent/project")
    result_or_deploy_error(config.parse, raw, name="staging", file=root / "env/staging.toml", root=root)


MATRIX_KEYS = ["description", "owner", "type", "values", "parity", "required", "secret", "source",
               "rotation_days", "staging", "production", "last_rotated", "environments", "local_files"]


@SETTINGS
@given(raw=st.fixed_dictionaries({}, optional={
    "matrix": st.dictionaries(st.sampled_from(["environments", "production", "local_files", "x"]), values, max_size=3),
    "variables": st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True) | st.text(max_size=5),
                                 st.one_of(values, st.dictionaries(st.sampled_from(MATRIX_KEYS), values, max_size=6)),
                                 max_size=4),
    "other": values,
}))
def test_matrix_parse_gives_a_matrix_or_a_settings_error(raw):
    from deploy import envs

    result_or_deploy_error(envs.parse_matrix, raw, file=Path("env/variables.toml"))


@pytest.fixture(scope="module")
def matrix_root():
    from deploy import envs
    from deploy.testing.project import REPO

    d = Path(tempfile.mkdtemp(prefix="occ-fuzz-"))
    (d / "env").mkdir()
    for f in ("variables.toml", "staging.toml"):
        (d / "env" / f).write_bytes((REPO / "env" / f).read_bytes())
    return d, envs.load_matrix(d)


dotenv_lines = st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["NODE_ENV", "PORT", "LOG_LEVEL", "SESSION_SECRET", "X Y"]),
              st.text(max_size=15)),
    st.text(max_size=30),
    st.sampled_from(['A="unterminated', "export PORT=1", "=", "#", "PORT='1'", "NODE_ENV=${HOME}"]),
), max_size=8)


@SETTINGS
@given(lines=dotenv_lines)
def test_env_check_reads_any_dotenv_text(matrix_root, lines):
    from deploy import envs

    root, matrix = matrix_root
    (root / "env/staging.env").write_text("\n".join(lines), encoding="utf-8")
    result_or_deploy_error(envs.check, matrix, "staging", root, {})


cli_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(["[", "]", "{", "}", '"versionTag": "a"', '"status": "active"', ",", "null",
                              '"createdAt": "2024-01-01T00:00:00Z"', "\u256d\u2500 success \u2500\u256e",
                              "\u2502 New version released to users.", "\u2570\u2500\u256f", "[1] https://x",
                              "\x1b[31m", "\n", "error", "Version couldn't be released."]),
             max_size=30).map("".join),
)


@SETTINGS
@given(text=cli_text)
def test_shopify_parsers_give_a_result_or_shopify_failed(text):
    from deploy import shopify

    for fn in (shopify.parse_versions, shopify.parse_deploy_output, shopify.parse_release_output,
               shopify.parse_cli_output):
        result_or_deploy_error(fn, text)


@SETTINGS
@given(text=st.text(max_size=300))
def test_host_fact_parsers_never_raise(text):
    from deploy import hosts

    hosts.parse_lock_details("h", text)
    hosts.parse_state(text)
    hosts.parse_check(text)


@SETTINGS
@given(rid=st.text(max_size=120))
def test_release_id_validation_lets_nothing_unsafe_through(rid):
    from deploy import hosts

    r = result_or_deploy_error(hosts.validate_release_id, rid)
    if not isinstance(r, DeployError):
        assert ".." not in r and "/" not in r and r == r.strip() and not set(r) & set(" ;$`'\"|&<>(){}\\\n*?!~")


@pytest.mark.parametrize("value", ["0\n", "20240501120000-abc1234\n", "r1\n"])
def test_a_trailing_newline_is_not_a_valid_release_id(value):
    """`$` matches before a final newline: every validator anchors at the very end (\\Z)."""
    from deploy import hosts

    assert isinstance(result_or_deploy_error(hosts.validate_release_id, value), DeployError)
