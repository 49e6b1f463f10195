"""One dotenv dialect end to end: what `shared/.env` says (written by `invoke env.push`, or by a
team by hand) is, byte for byte, what the app the host supervisor starts receives.

The reference is python-dotenv itself (the toolkit's reader, interpolation off). The supervisor
(`bin/app`, deploy.hosts.SUPERVISOR) is run here for real: `bin/app _exec` is the last step
before the app's exec, and `env -0` stands in for the app, printing the environment it got.
A value the dialect cannot carry (a line python-dotenv cannot parse, a name that is not a
variable name, a name without `=`, NUL, text that is not UTF-8) is an error naming the line and
the name, never the value. (Through real releases on sshd hosts: test_reliability_trust_supervisor.py.)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy import envs, hosts

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q+/x9ZmT0=\n-----END PRIVATE KEY-----")
# Names the supervisor itself sets (they win over shared/.env) and what a shell may add.
OWN = {b"PATH", b"PORT", b"DEPLOY_APP_ROOT", b"PWD", b"SHLVL", b"_"}


def reference(data: bytes) -> dict[bytes, bytes] | None:
    """python-dotenv's reading of `data` as a file (text mode, UTF-8, no interpolation), or
    None when the dialect cannot carry it to an environment."""
    from dotenv.parser import parse_stream

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in text:
        return None
    import io

    binds = list(parse_stream(io.StringIO(text, newline=None)))
    out = {}
    for b in binds:
        if b.error or (b.key is not None and b.value is None):
            return None
        if b.key is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", b.key):
                return None
            out[b.key.encode()] = b.value.encode()
    return out


@pytest.fixture(scope="module")
def deploy_to(tmp_path_factory):
    root = tmp_path_factory.mktemp("dialect") / "srv"
    (root / "shared").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin" / "app").write_text(hosts.SUPERVISOR)
    (root / "bin" / "app").chmod(0o755)
    return root


def supervised(deploy_to: Path, data: bytes | None) -> tuple[dict[bytes, bytes] | None, str]:
    """What the app gets from shared/.env holding `data` (None: no file): its environment
    without the supervisor's own names, or None and the supervisor's message."""
    env_file = deploy_to / "shared" / ".env"
    env_file.unlink(missing_ok=True)
    if data is not None:
        env_file.write_bytes(data)
    r = subprocess.run(["env", "-i", f"PATH={os.environ['PATH']}", str(deploy_to / "bin" / "app"), "_exec", "PORT",
                        "4100", "--", "env", "-0"], capture_output=True, timeout=30)
    if r.returncode != 0:
        return None, r.stderr.decode("utf-8", "replace")
    got = dict(item.split(b"=", 1) for item in r.stdout.split(b"\0") if item)
    assert got[b"PORT"] == b"4100" and got[b"DEPLOY_APP_ROOT"] == str(deploy_to.resolve()).encode()
    return {k: v for k, v in got.items() if k not in OWN}, r.stderr.decode()


CASES = [
    ("plain", b"A=1\nB=two words\n"),
    ("spaces-around-equals", b"A = 1 \n  B  =  x y  \n"),
    ("export-prefix", b"export A=1\nexport  B = 'x y'\nexport=3\n"),
    ("escaped-double-quote", b'A="say \\"hi\\""\n'),
    ("escaped-backslash", b'A="C:\\\\dir\\\\"\nB=\'C:\\\\dir\'\n'),
    ("backslash-kept", b'A="\\$x \\q"\nB=\'C:\\path\\n\'\nC=a\\nb\n'),
    ("double-quote-escapes", b'A="\\a\\b\\f\\n\\r\\t\\v\\\'"\n'),
    ("single-quote-escape", b"A='it\\'s'\n"),
    ("quoted-then-comment", b'A="x y" # note\nB=\'q\'# tight\n'),
    ("hash-in-quotes", b'A="a # b"\nB=\'#c\'\n'),
    ("unquoted-inline-comment", b"LOG=info # note\nC=x\t# tab\n"),
    ("hash-without-space", b"A=a#b\nB=#c\n"),
    ("empty-then-comment", b"A= # only a comment\nB=\t#\n"),
    ("equals-in-value", b"A=a=b==c\nB==\nURL=postgres://u:p@h/db?x=1&y=2\n"),
    ("pem-escaped", ('KEY="' + PEM.replace("\n", "\\n") + '"\n').encode()),
    ("pem-multi-line-double", ('KEY="' + PEM + '"\nNEXT=1\n').encode()),
    ("pem-multi-line-single", ("KEY='" + PEM + "'\n").encode()),
    ("unicode", "NAME=Zoë ☃ 日本 🚀\nQ=\"é\\n\"\n".encode()),
    ("unicode-spaces", "A=x\u00a0#c\nB=\u2003y\u3000\n\u00a0C=1\n".encode()),
    ("empty-values", b"A=\nB=''\nC=\"\"\nD=   \n"),
    ("crlf", b"A=1\r\nB=\"x\r\ny\"\r\nC='z'\r\n"),
    ("cr-only", b"A=1\rB=2\r"),
    ("bom", b"\xef\xbb\xbfA=1\n"),
    ("comments-and-blank-lines", b"# top\n\n   \n\t# indented\nA=1\n#B=2\n"),
    ("dollar-not-expanded", b"A=${HOME}\nB=\"$A ${A:-d}\"\n"),
    ("later-wins", b"A=1\nA=2\n"),
    ("no-final-newline", b"A=1\nB='x'"),
    ("quoted-name", b"'A'=1\n"),
]

ERRORS = [
    ("unparseable-line", b"A=1\nthis is not a binding\n", 2, "this"),
    ("junk-after-quotes", b'A="x"y\n', 1, "A"),
    ("unterminated-double", b'OK=1\nA="never closed\nB=2\n', 2, "A"),
    ("unterminated-single", b"A='x\n", 1, "A"),
    ("name-without-equals", b"A=1\nFLAG\n", 2, "FLAG"),
    ("name-then-comment", b"FLAG # on\n", 1, "FLAG"),
    ("dotted-name", b"a.b=1\n", 1, "a.b"),
    ("dashed-name", b"\n\nMY-KEY=1\n", 3, "MY-KEY"),
    ("digit-first-name", b"1A=1\n", 1, "1A"),
    ("line-starts-with-equals", b"=1\n", 1, ""),
    ("not-utf8", b"A=1\nB=caf\xe9\n", 2, ""),
    ("nul-byte", b"A=1\nB=x\x00y\n", 0, "NUL"),
]


@pytest.mark.parametrize("data", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_app_gets_exactly_what_python_dotenv_reads(deploy_to, data):
    want = reference(data)
    assert want is not None, "a case of this table must be carried"
    got, err = supervised(deploy_to, data)
    assert got == want, err


@pytest.mark.parametrize("data, line, name", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_what_the_dialect_cannot_carry_is_an_error_naming_the_line_and_the_name(deploy_to, data, line, name):
    assert reference(data) is None
    got, err = supervised(deploy_to, data)
    assert got is None
    assert str(deploy_to / "shared" / ".env") in err or ".env" in err, err
    if line:
        assert f"line {line}:" in err, err
    assert name in err, err
    # The supervisor's other entry points refuse the same file, before anything is stopped.
    check = subprocess.run([str(deploy_to / "bin" / "app"), "check-env"], capture_output=True, text=True,
                           errors="replace", timeout=30)
    assert check.returncode == 1 and check.stderr.strip(), check
    start = subprocess.run([str(deploy_to / "bin" / "app"), "start", "PORT", "1", "--", "sleep", "60"],
                           capture_output=True, text=True, errors="replace", timeout=30)
    assert start.returncode == 1 and "was not restarted" in start.stderr, start
    assert not (deploy_to / "run" / "app.pid").exists()


def test_an_error_never_shows_the_value(deploy_to):
    secret = "s3cr3t-Value-9"
    for data in (f'KEY="{secret}\n', f"KEY {secret}\n", f"KEY='{secret}'x\n", f"KEY=\"{secret}\" {secret}\n"):
        got, err = supervised(deploy_to, data.encode())
        assert got is None and "KEY" in err and secret not in err, err


def test_no_shared_env_gives_the_app_only_the_supervisors_names(deploy_to):
    assert supervised(deploy_to, None) == ({}, "")


def test_the_supervisor_s_own_names_win_over_shared_env(deploy_to):
    got, _ = supervised(deploy_to, b"PORT=1\nDEPLOY_APP_ROOT=/elsewhere\nA=1\n")
    assert got == {b"A": b"1"}   # supervised() checked PORT and DEPLOY_APP_ROOT are the supervisor's


def test_names_in_shared_env_never_change_the_supervisor_s_own_variables(deploy_to):
    # The values go to env(1) as arguments: a name like the script's own variables changes nothing.
    data = b"root=/tmp\nport=1\nport_var=X\nwords=x\ncmd=y\nIFS=:\n"
    got, err = supervised(deploy_to, data)
    assert got == reference(data), err


AWKS = [a for a in (["mawk"], ["gawk"], ["original-awk"], ["busybox", "awk"]) if shutil.which(a[0])]


@pytest.mark.parametrize("awk", AWKS, ids=[a[-1] if a[0] != "busybox" else "busybox" for a in AWKS])
def test_the_parser_reads_the_same_under_every_awk_found(tmp_path, awk):
    f = tmp_path / ".env"
    for name, data in CASES + [(e[0], e[1]) for e in ERRORS if e[0] != "nul-byte"]:
        f.write_bytes(data)
        r = subprocess.run([*awk, "-v", "F=x", hosts.DOTENV_AWK, str(f)], capture_output=True, env={"LC_ALL": "C"},
                           timeout=30)
        want = reference(data)
        if want is None:
            assert r.returncode == 1 and r.stderr, name
            continue
        words = shlex.split(r.stdout.decode("latin-1"))
        got = dict(w.encode("latin-1").split(b"=", 1) for w in words)
        assert (r.returncode, got) == (0, want), name


# Files built from the pieces the dialect's rules turn on.
PIECES = ["A", "B_1", "export", " ", "\t", "=", "#", "'", '"', "\\", "\n", "\r", "\r\n", "x", "é", "\u00a0",
          "\u2003", "\u3000", "\x0b", "\x1c", "$", "${A}", "\\n", "\\\"", "\\'", "\\\\", "\u0085", "\u2028", "1", "-"]
line = st.one_of(
    st.tuples(st.sampled_from(["", "export ", "  "]), st.sampled_from(["A", "B_1", "'C'", "D "]),
              st.sampled_from(["=", " = ", "= ", "=\t"]), st.lists(st.sampled_from(PIECES), max_size=6))
    .map(lambda t: t[0] + t[1] + t[2] + "".join(t[3])),
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(line, min_size=1, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_any_file_reads_as_python_dotenv_reads_it_or_is_refused(deploy_to, lines, eol):
    data = eol.join(lines).encode()
    got, err = supervised(deploy_to, data)
    assert got == reference(data), err


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).filter(lambda k: k not in
                                                                                       {"PORT", "PATH", "PWD", "SHLVL", "DEPLOY_APP_ROOT", "_"}),
                       st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=40),
                       max_size=5))
def test_what_env_push_writes_reaches_the_app_unchanged(deploy_to, values):
    got, err = supervised(deploy_to, envs.render_shared_env("staging", values).encode())
    assert got == {k.encode(): v.encode() for k, v in values.items()}, err
