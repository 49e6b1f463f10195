"""The recording Shopify CLI stand-in, and the real CLI for contract tests.

`shopify_cli` (fixture) writes a small `shopify` executable into a temp bin folder put
first on PATH. It takes the flags Shopify CLI 3.x takes for `app deploy`, `app release`
and `app versions list` (unknown flags fail as oclif fails them), checks what the real
CLI checks before talking to Shopify (the config file, a token variable, the non-TTY
flag rule, the version tag rules), keeps the app's versions in a state file, and prints
what the real CLI prints: the boxed banners of `services/deploy.ts` and
`services/release.ts`, link footnotes, and the `versions list --json` array of
`services/versions-list.ts` in the App Management API's shape, capped like the real
CLI at the newest 20 (`app release --version` finds any tag). Every call is appended
to a JSONL file with its argv, the NAMES of the auth variables that were set and the
environment it received (the token's value masked), for the leak tests.

`real_shopify_cli` (fixture) installs the real `@shopify/cli@3` with npm once into a
cache folder and returns its executable; it skips only when npm is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy import config

AUTH_VARS = ("SHOPIFY_APP_AUTOMATION_TOKEN", "SHOPIFY_CLI_PARTNERS_TOKEN")

# Flags of Shopify CLI 3.94 (`shopify app <cmd> --help`): name -> takes a value.
COMMON_FLAGS = {"config": True, "client-id": True, "no-color": False, "path": True, "reset": False, "verbose": False}
COMMAND_FLAGS = {
    "deploy": {**COMMON_FLAGS, "force": False, "allow-deletes": False, "allow-updates": False, "message": True,
               "no-build": False, "no-release": False, "source-control-url": True, "version": True},
    "release": {**COMMON_FLAGS, "force": False, "allow-deletes": False, "allow-updates": False, "version": True},
    "versions list": {**COMMON_FLAGS, "json": False},
}
SHORT_FLAGS = {"c": "config", "f": "force", "j": "json"}
LISTED_MAX = 20   # `app versions list` returns the newest 20 (Shopify CLI 3.94.3: `versions(first: 20)`)

_SCRIPT = r'''
import hashlib, json, os, re, sys, textwrap
from datetime import datetime, timedelta, timezone

STATE_DIR = __STATE_DIR__
FLAGS = __FLAGS__
SHORT = __SHORT__
AUTH_VARS = __AUTH_VARS__
LISTED_MAX = __LISTED_MAX__
STATE = os.path.join(STATE_DIR, "state.json")
CONTROL = os.path.join(STATE_DIR, "control.json")
CALLS = os.path.join(STATE_DIR, "calls.jsonl")
WIDTH = 80


def load(path, default):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def box(kind, paragraphs, out):
    """A banner as cli-kit draws it without a TTY: 80 columns, 2 spaces of padding."""
    top = "\u256d\u2500 " + kind + " "
    lines = [top + "\u2500" * (WIDTH - len(top) - 1) + "\u256e", "\u2502" + " " * (WIDTH - 2) + "\u2502"]
    for i, para in enumerate(paragraphs):
        if i:
            lines.append("\u2502" + " " * (WIDTH - 2) + "\u2502")
        for raw in para.split("\n"):
            for ln in (textwrap.wrap(raw, WIDTH - 6, break_long_words=True) or [""]):
                lines.append("\u2502  " + ln.ljust(WIDTH - 6) + "  \u2502")
    lines.append("\u2502" + " " * (WIDTH - 2) + "\u2502")
    lines.append("\u2570" + "\u2500" * (WIDTH - 2) + "\u256f")
    out.write("\n".join(lines) + "\n")


def error(paragraphs, code=1):
    box("error", paragraphs, sys.stderr)
    sys.stderr.write("\n")
    sys.exit(code)


def config_file_name(config):
    if re.fullmatch(r"shopify\.app(\.[-\w]+)?\.toml", config, re.ASCII):
        return config
    slug = re.sub(r"[^\w\s-]", "", config.lower().strip(), flags=re.ASCII)
    return "shopify.app." + re.sub(r"[\s_-]+", "-", slug, flags=re.ASCII).strip("-") + ".toml"


def parse(argv):
    words = []
    while argv and not argv[0].startswith("-") and len(words) < 3:
        words.append(argv.pop(0))
    if words[:1] != ["app"]:
        error(["Command " + " ".join(words) + " not found (this stand-in knows app deploy|release|versions list)."], 127)
    cmd = " ".join(words[1:])
    if cmd not in FLAGS:
        error(["Command app " + cmd + " not found."], 127)
    known, flags = FLAGS[cmd], {}
    while argv:
        a = argv.pop(0)
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
        elif a.startswith("-") and len(a) == 2 and a[1] in SHORT:
            name, eq, val = SHORT[a[1]], "", ""
        else:
            error(["Unexpected argument: " + a, "See more help with --help"], 2)
        if name not in known:
            error(["Nonexistent flag: --" + name + "\nSee more help with --help"], 2)
        if known[name]:
            if not eq:
                if not argv:
                    error(["Flag --" + name + " expects a value\nSee more help with --help"], 2)
                val = argv.pop(0)
            flags[name] = val
        else:
            flags[name] = True
    return cmd, flags


def record(argv):
    entry = {
        "argv": argv, "cwd": os.getcwd(),
        "auth_env": [v for v in AUTH_VARS if os.environ.get(v)],
        "ci": os.environ.get("CI", ""), "stdin_tty": sys.stdin.isatty() if sys.stdin else False,
        # The whole environment it was given, so tests can prove no other secret reached
        # it; the token itself (which it must get) is recorded as a mark, not its value.
        "env": {k: ("<token>" if k in AUTH_VARS else v) for k, v in os.environ.items()},
    }
    with open(CALLS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def take_failure(cmd):
    ctl = load(CONTROL, [])
    for i, f in enumerate(ctl):
        if f["command"] == cmd:
            ctl.pop(i)
            save(CONTROL, ctl)
            return f
    return None


def stamp(state):
    t = datetime.fromisoformat(state["clock"]) + timedelta(minutes=1)
    state["clock"] = t.isoformat()
    return t


def fmt(ts):
    # cli-kit formatDate(): the UTC time as "YYYY-MM-DD HH:MM:SS"
    return datetime.fromisoformat(ts).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def url(state, v):
    return "https://dev.shopify.com/dashboard/%s/apps/%s/versions/%s" % (state["org_id"], state["app_id"], v["versionId"])


def validate_version(tag):
    head = "Invalid version name: " + tag
    if len(tag) > 100:
        error([head, "Version name must be 100 characters or less."])
    if tag in (".", ".."):
        error([head, "Version name may not be any of: '.' , '..'"])
    if not re.match(r"^[a-zA-Z0-9.\-_]+$", tag):
        error([head, "Version name can only contain alphanumeric characters, periods, hyphens, and underscores"])


def main():
    argv = sys.argv[1:]
    record(argv)
    cmd, flags = parse(list(argv))
    state = load(STATE, None)
    if flags.get("version") is not None and cmd == "deploy":
        validate_version(flags["version"])
    if cmd == "deploy" and len(flags.get("message", "").encode("utf-16-le")) > 400:
        error(["Invalid message: " + flags["message"], "Message name must be 200 characters or less."])
    if cmd == "release" and "version" not in flags:
        error(["The following error occurred:\n  Missing required flag version\nSee more help with --help"], 2)
    if cmd == "deploy" and flags.get("no-release") and (flags.get("allow-updates") or flags.get("allow-deletes")):
        error(["--no-release cannot also be provided when using --allow-updates\nSee more help with --help"], 2)
    needed = {"deploy": ("allow-updates", "allow-deletes", "no-release", "force"),
              "release": ("allow-updates", "allow-deletes", "force")}.get(cmd)
    if needed and not sys.stdin.isatty() and not any(flags.get(n) for n in needed):
        error(["Flag not specified:", needed[0],
               "This flag is required in non-interactive terminal environments, such as a CI environment, "
               "or when piping input from another process.",
               "To resolve this, specify the option in the command, or run the command in an interactive "
               "environment such as your local terminal."])
    app_dir = flags.get("path") or os.getcwd()
    name = config_file_name(flags.get("config", "shopify.app.toml"))
    if not os.path.isfile(os.path.join(app_dir, name)):
        error(["Could not find a Shopify app configuration file. Looked in " + app_dir + " and parent directories."])
    token = next((os.environ[v] for v in AUTH_VARS if os.environ.get(v)), "")
    if not token:
        error(["Failed to prompt:\n\nLog in to Shopify\n\nThis command can't prompt for a login in a "
               "non-interactive environment. Set SHOPIFY_APP_AUTOMATION_TOKEN."])
    if state.get("token_sha256") and hashlib.sha256(token.encode()).hexdigest() != state["token_sha256"]:
        error(["The custom token provided can't be used for the App Management API.",
               "Ensure the token is correct and not expired."])
    fail = take_failure(cmd)
    mode = fail["mode"] if fail else None
    code = fail.get("exit_code", 1) if fail else 0
    why = (fail or {}).get("message") or "Something went wrong (stand-in failure)."
    if mode == "error":
        error([why], code)
    if mode == "leak_token":
        error(["Request failed with token " + token, why], code)
    if mode == "garbage":
        sys.stdout.write("unexpected output from a stand-in that was told to misbehave\n")
        sys.exit(0)
    flags["_config_file"] = os.path.join(app_dir, name)
    {"deploy": deploy, "release": release, "versions list": versions}[cmd](state, flags, mode, code, why)


def deploy(state, flags, mode, code, why):
    tag = flags.get("version")
    if tag is not None and any(v["versionTag"] == tag for v in state["versions"]):
        # Wording is the stand-in's own: the real message comes from Shopify's API.
        error(["Version tag " + tag + " is already in use by another version of this app."])
    release_it = not flags.get("no-release") and mode not in ("after_create", "not_released")
    state["next_id"] += 1
    v = {"versionId": str(state["next_id"]), "versionTag": tag or "%s-%d" % (state["app_handle"], state["next_id"]),
         "createdAt": stamp(state).isoformat(), "createdBy": state["created_by"],
         "message": flags.get("message", ""), "sourceControlUrl": flags.get("source-control-url", ""),
         "status": "inactive",
         # What Shopify keeps of a deploy (include_config_on_deploy): the app configuration as
         # read from --path, and the app folder it came from.
         "config": open(flags["_config_file"], encoding="utf-8").read(), "path": os.path.dirname(flags["_config_file"])}
    if release_it:
        for old in state["versions"]:
            old["status"] = "inactive"
        v["status"] = "active"
    state["versions"].insert(0, v)
    save(STATE, state)
    out = sys.stdout
    out.write("\n%s a new app version as part of %s\n\n" % ("Releasing" if not flags.get("no-release") else "Creating", state["app_title"]))
    body = [v["versionTag"] + " [1]" + ("\n" + v["message"] if v["message"] else "")]
    if mode in ("after_create", "after_release"):
        error([why], code)
    if mode == "not_released":
        box("info", ["New version created, but not released."] + body + [why], out)
    elif flags.get("no-release"):
        box("success", ["New version created."] + body + ["Next steps\n  \u2022 Run `shopify app release --version=%s` to release this version to users." % v["versionTag"]], out)
    else:
        box("success", ["New version released to users."] + body, out)
    out.write("[1] %s\n" % url(state, v))


def release(state, flags, mode, code, why):
    tag = flags["version"]
    v = next((x for x in state["versions"] if x["versionTag"] == tag), None)
    if v is None:
        error(["Version not found for tag: " + tag])
    body = [tag + " [1]" + ("\n" + v["message"] if v["message"] else "")]
    if mode == "user_error":
        box("error", ["Version couldn't be released."] + body + [why], sys.stdout)
    else:
        for old in state["versions"]:
            old["status"] = "inactive"
        v["status"] = "active"
        save(STATE, state)
        box("success", ["Version released to users."] + body, sys.stdout)
    sys.stdout.write("[1] %s\n" % url(state, v))


def versions(state, flags, mode, code, why):
    # Like Shopify CLI 3.94.3, which asks for `versions(first: 20)`: the newest 20 only.
    newest = sorted(state["versions"], key=lambda v: v["createdAt"], reverse=True)[:LISTED_MAX]
    rows = [{"createdAt": fmt(v["createdAt"]), "createdBy": v["createdBy"], "versionTag": v["versionTag"],
             "status": v["status"], "versionId": v["versionId"], "message": v["message"]} for v in newest]
    if flags.get("json"):
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    if not rows:
        sys.stdout.write("No app versions found for this app\n")
        return
    for r in rows:
        star = "\u2605 " if r["status"] == "active" else ""
        sys.stdout.write("%s  %s%s  %s  %s  %s\n" % (r["versionTag"], star, r["status"], r["message"], r["createdAt"], r["createdBy"]))
    sys.stdout.write("\nView all %d app versions in the Dev Dashboard ( %s )\n"
                     % (len(state["versions"]), url(state, {"versionId": ""}).rstrip("/")))


main()
'''


@dataclass
class ShopifyStandIn:
    """Handle on the stand-in: what it was asked, what it holds, what it should break."""

    bin_dir: Path
    state_dir: Path
    app_dir: Path
    token: str
    root: Path
    configs: tuple[str, ...] = ("staging", "production")

    @property
    def executable(self) -> Path:
        return self.bin_dir / "shopify"

    @property
    def environ(self) -> dict[str, str]:
        """A process environment holding the token the stand-in accepts."""
        return {"SHOPIFY_APP_AUTOMATION_TOKEN": self.token}

    def calls(self) -> list[dict[str, Any]]:
        p = self.state_dir / "calls.jsonl"
        if not p.exists():
            return []
        return [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def environments(self) -> list[dict[str, str]]:
        """The environment of every call (the token's value shown as `<token>`)."""
        return [c.get("env", {}) for c in self.calls()]

    def argvs(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    def _state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "state.json").read_text(encoding="utf-8"))

    def _save(self, state: dict[str, Any]) -> None:
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")

    def versions(self) -> list[dict[str, Any]]:
        """The stand-in's versions, newest first (its own fields, not the CLI's JSON)."""
        return self._state()["versions"]

    def active(self) -> str | None:
        return next((v["versionTag"] for v in self.versions() if v["status"] == "active"), None)

    def seed(self, *tags: str, active: str | None = None) -> None:
        """Versions that exist before the test (oldest first); `active` (default: the last) is live."""
        from datetime import datetime, timedelta

        state = self._state()
        active = active if active is not None else (tags[-1] if tags else None)
        for tag in tags:
            state["next_id"] += 1
            t = datetime.fromisoformat(state["clock"]) + timedelta(minutes=1)
            state["clock"] = t.isoformat()
            state["versions"].insert(0, {
                "versionId": str(state["next_id"]), "versionTag": tag, "createdAt": t.isoformat(),
                "createdBy": "Release Engineer", "message": f"seeded {tag}", "sourceControlUrl": "",
                "status": "inactive",
            })
        for v in state["versions"]:
            v["status"] = "active" if v["versionTag"] == active else "inactive"
        self._save(state)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """`shopify <args>` run as a user would: in the app folder, no TTY, with the token."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CI": "1", **self.environ}
        return subprocess.run([str(self.executable), *args], cwd=self.app_dir, env=env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)

    def deploy_versions(self, tags, config: str = "staging") -> None:
        """Create (and release) one app version per tag, oldest first, through `shopify app deploy`."""
        for tag in tags:
            p = self.run("app", "deploy", "--config", config, "--allow-updates", "--version", tag)
            if p.returncode != 0:
                raise RuntimeError(f"stand-in deploy of {tag} failed: {p.stderr[-500:]}")

    def fail_next(self, command: str = "deploy", mode: str = "error", *, exit_code: int = 1,
                  message: str | None = None) -> None:
        """Make the next `command` ("deploy" | "release" | "versions list") misbehave once.

        Modes: error (exit non-zero, nothing changed), after_create (deploy: the version is
        created, not released, then exit non-zero), after_release (deploy: released, then
        exit non-zero), not_released (deploy: exit 0 with "New version created, but not
        released."), user_error (release: exit 0 with "Version couldn't be released."),
        garbage (exit 0 with output the CLI never prints), leak_token (exit non-zero
        printing the token, to prove redaction).
        """
        if command not in COMMAND_FLAGS:
            raise ValueError(f"unknown command {command!r}")
        p = self.state_dir / "control.json"
        ctl = json.loads(p.read_text(encoding="utf-8")) if p.exists() else []
        ctl.append({"command": command, "mode": mode, "exit_code": exit_code, "message": message})
        p.write_text(json.dumps(ctl), encoding="utf-8")

    def settings(self, name: str = "staging", **sections: dict[str, Any]):
        """Settings for environment `name` whose app dir is the stand-in's app and whose
        [shopify] config is `name` (override with shopify={...})."""
        raw: dict[str, Any] = {
            "environment": {"kind": "remote", "app_url": "https://app.example.test",
                            "app_dir": str(self.app_dir)},
            "shopify": {"config": name},
        }
        for sec, values in sections.items():
            raw[sec] = {**raw.get(sec, {}), **values}
        return config.parse(raw, name=name, file=self.root / "env" / f"{name}.toml", root=self.root)


def install_stand_in(base: Path, token: str, configs: tuple[str, ...] = ("staging", "production")) -> ShopifyStandIn:
    """Write the stand-in executable, an empty app state and an app folder under `base`."""
    bin_dir, state_dir, app_dir = base / "bin", base / "state", base / "app"
    for d in (bin_dir, state_dir, app_dir, base / "env"):
        d.mkdir(parents=True, exist_ok=True)
    script = (_SCRIPT
              .replace("__STATE_DIR__", repr(str(state_dir)))
              .replace("__FLAGS__", repr(COMMAND_FLAGS))
              .replace("__SHORT__", repr(SHORT_FLAGS))
              .replace("__AUTH_VARS__", repr(AUTH_VARS))
              .replace("__LISTED_MAX__", repr(LISTED_MAX)))
    exe = bin_dir / "shopify"
    exe.write_text(f"#!{sys.executable}\n{script}", encoding="utf-8")
    exe.chmod(0o755)
    state = {
        "app_title": "OCC Operator Control Center", "app_handle": "occ", "org_id": "4242", "app_id": "777001",
        "created_by": "App Automation Token", "clock": "2026-08-01T12:00:00+00:00", "next_id": 1000,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "versions": [],
    }
    (state_dir / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    for c in configs:
        (app_dir / f"shopify.app.{c}.toml").write_text(
            f'client_id = "0000{c}"\nname = "occ-{c}"\napplication_url = "https://{c}.example.test"\nembedded = true\n',
            encoding="utf-8")
    return ShopifyStandIn(bin_dir, state_dir, app_dir, token, base, configs)


@pytest.fixture
def shopify_cli(tmp_path_factory, monkeypatch) -> ShopifyStandIn:
    """The recording stand-in first on PATH, its token in the environment."""
    base = tmp_path_factory.mktemp("shopify")
    stand_in = install_stand_in(base, token="shpat-standin-" + hashlib.sha256(os.urandom(8)).hexdigest()[:24])
    monkeypatch.setenv("PATH", f"{stand_in.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SHOPIFY_APP_AUTOMATION_TOKEN", stand_in.token)
    monkeypatch.delenv("SHOPIFY_CLI_PARTNERS_TOKEN", raising=False)
    return stand_in


# ---------------------------------------------------------------- the real CLI

def shopify_cli_cache() -> Path:
    """Where the real CLI is installed once: $OCC_SHOPIFY_CLI_DIR or ~/.cache/occ-deploy/shopify-cli-3."""
    env = os.environ.get("OCC_SHOPIFY_CLI_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "occ-deploy" / "shopify-cli-3"


def install_real_cli(dest: Path, timeout: float = 600.0) -> Path:
    """`npm install @shopify/cli@3` into `dest` (kept for the next run); the executable."""
    exe = dest / "node_modules" / ".bin" / "shopify"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm")
    dest.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [npm, "install", "--prefix", str(dest), "--no-audit", "--no-fund", "--loglevel=error", "@shopify/cli@3"],
        capture_output=True, text=True, timeout=timeout,
    )
    if p.returncode != 0 or not exe.exists():
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"npm install @shopify/cli@3 into {dest} failed (exit {p.returncode}):\n{tail}")
    return exe


def real_help(exe: Path, *command: str) -> str:
    """`shopify <command> --help` of the real CLI, without colour or analytics."""
    env = {**os.environ, "CI": "1", "NO_COLOR": "1", "SHOPIFY_CLI_NO_ANALYTICS": "1"}
    for v in AUTH_VARS:
        env.pop(v, None)
    p = subprocess.run([str(exe), *command, "--help"], capture_output=True, text=True, timeout=120,
                       env=env, stdin=subprocess.DEVNULL, cwd=exe.parent)
    if p.returncode != 0:
        raise RuntimeError(f"`shopify {' '.join(command)} --help` exited {p.returncode}: {p.stderr[-500:]}")
    return p.stdout


@pytest.fixture(scope="session")
def real_shopify_cli() -> Path:
    """The real Shopify CLI 3.x executable (installed once with npm); skipped without npm."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("npm/node not on PATH: cannot install the real @shopify/cli@3 for the contract test")
    try:
        return install_real_cli(shopify_cli_cache())
    except RuntimeError as e:
        pytest.fail(str(e))
