"""What the Shopify CLI printed, read by pure parsers: its boxed banners and footnote links
(`parse_cli_output`), the outcome of a deploy or a release (`parse_deploy_output`,
`parse_release_output`: the CLI exits 0 even when Shopify refused), the versions list
(`parse_versions`), and which version is live or was before (`active_version`,
`previous_version`, `confirm_release`).

Sources (Shopify/cli): the result banners from `services/deploy.ts`
(`outputCompletionMessage`) and `services/release.ts`; the JSON from
`services/versions-list.ts`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

from deploy.errors import ShopifyFailed
from deploy.redact import redact
from deploy.shopify.commands import VERSION_CHARS

RELEASED = "New version released to users."          # services/deploy.ts
NOT_RELEASED = "New version created, but not released."
CREATED = "New version created."                      # --no-release (or SHOPIFY_FLAG_NO_RELEASE)
VERSION_RELEASED = "Version released to users."       # services/release.ts
VERSION_NOT_RELEASED = "Version couldn't be released."


@dataclass(frozen=True)
class AppVersion:
    """One row of `shopify app versions list --json`."""

    version_tag: str | None
    status: str                      # "active" for the released one; others "inactive"/"released"
    created_at: datetime | None      # UTC; the CLI prints "YYYY-MM-DD HH:MM:SS"
    created_by: str = ""
    message: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class Banner:
    """One boxed message the CLI printed (`╭─ success ─…╮`)."""

    kind: str                        # success | info | warning | error | ...
    lines: tuple[str, ...]           # the text inside the box, frame removed, blank lines kept as ""

    def _split(self) -> tuple[list[str], list[str]]:
        rest = list(self.lines)
        while rest and not rest[0]:
            rest.pop(0)
        end = rest.index("") if "" in rest else len(rest)
        return rest[:end], rest[end:]

    @property
    def headline(self) -> str:
        """The first paragraph, unwrapped (the CLI wraps at 74 columns)."""
        return " ".join(self._split()[0])

    @property
    def body(self) -> tuple[str, ...]:
        return tuple(self._split()[1])


@dataclass(frozen=True)
class CliOutput:
    text: tuple[str, ...]            # lines outside any box
    banners: tuple[Banner, ...]
    links: Mapping[int, str]         # footnotes "[1] https://…" (links when hyperlinks are off)


@dataclass(frozen=True)
class DeployOutcome:
    released: bool                   # the new version is live
    created: bool                    # a version was created (released or not)
    version: str | None
    url: str
    headline: str
    detail: str = ""                 # the CLI's reason when the version was not released


@dataclass(frozen=True)
class ReleaseOutcome:
    released: bool
    version: str | None
    url: str
    headline: str
    detail: str = ""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


_BOX_TOP = re.compile(r"^\s*╭─\s*(?P<kind>[^─]*?)\s*─+╮\s*$")


_FOOTNOTE = re.compile(r"^\[(?P<n>\d+)\]\s+(?P<url>\S+)\s*$")


def plain_text(text: str) -> str:
    return _ANSI.sub("", text.replace("\r\n", "\n"))


def parse_cli_output(text: str) -> CliOutput:
    """Split the CLI's text into boxed banners, footnote links and the lines outside."""
    outside: list[str] = []
    banners: list[Banner] = []
    links: dict[int, str] = {}
    box: list[str] | None = None
    kind = ""
    for raw in plain_text(text).split("\n"):
        line = raw.rstrip()
        if box is None:
            m = _BOX_TOP.match(line)
            if m:
                box, kind = [], m.group("kind") or "info"
                continue
            f = _FOOTNOTE.match(line.strip())
            if f:
                links[int(f.group("n"))] = f.group("url")
            elif line.strip():
                outside.append(line.strip())
            continue
        if line.lstrip().startswith("╰"):
            banners.append(Banner(kind, tuple(box)))
            box = None
            continue
        inner = line.strip()
        if inner.startswith("│"):
            inner = inner[1:]
        if inner.endswith("│"):
            inner = inner[:-1]
        box.append(inner.strip())
    if box is not None:                       # cut off mid-box: keep what was there
        banners.append(Banner(kind, tuple(box)))
    return CliOutput(tuple(outside), tuple(banners), links)


_LINK_FOOTNOTE = re.compile(r"^(?P<label>\S+) \[(?P<n>\d+)\]$")


_LINK_INLINE = re.compile(r"^(?P<label>\S+) \( (?P<url>\S+) \)$")


def _version_link(banner: Banner, links: Mapping[int, str]) -> tuple[str | None, str]:
    """The version tag and URL the CLI shows as the first body line (`label [1]`)."""
    for line in banner.body:
        if not line:
            continue
        m = _LINK_FOOTNOTE.match(line)
        if m:
            return m.group("label"), links.get(int(m.group("n")), "")
        m = _LINK_INLINE.match(line)
        if m:
            return m.group("label"), m.group("url")
        return (line if VERSION_CHARS.match(line) else None), ""
    return None, ""


def _detail(banner: Banner, skip_first: bool = True) -> str:
    body = [ln for ln in banner.body if ln]
    return " ".join(body[1:] if skip_first and body else body)


def parse_deploy_output(text: str) -> DeployOutcome:
    """What `shopify app deploy` reported: released, created only, or neither."""
    out = parse_cli_output(text)
    for b in out.banners:
        if b.headline in (RELEASED, NOT_RELEASED, CREATED):
            version, url = _version_link(b, out.links)
            released = b.headline == RELEASED
            return DeployOutcome(released, True, version, url, b.headline,
                                 "" if released else _detail(b))
    return DeployOutcome(False, False, None, "", out.banners[0].headline if out.banners else "")


def parse_release_output(text: str) -> ReleaseOutcome:
    """What `shopify app release` reported (it exits 0 even when Shopify refused)."""
    out = parse_cli_output(text)
    for b in out.banners:
        if b.headline in (VERSION_RELEASED, VERSION_NOT_RELEASED):
            version, url = _version_link(b, out.links)
            ok = b.headline == VERSION_RELEASED
            return ReleaseOutcome(ok, version, url, b.headline, "" if ok else _detail(b))
    return ReleaseOutcome(False, None, "", out.banners[0].headline if out.banners else "")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # formatDate() in cli-kit/common/string.ts prints the UTC time without a zone.
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def parse_versions(text: str) -> list[AppVersion]:
    """`shopify app versions list --json` output -> versions, newest first.

    Lines before the JSON (an update notice, a warning) are skipped; anything that is
    not a list of version objects is ShopifyFailed.
    """
    plain = plain_text(text)
    start = next((i for i, ln in enumerate(plain.split("\n")) if ln.lstrip().startswith("[")), None)
    if start is None:
        raise ShopifyFailed(
            "`shopify app versions list --json` printed no JSON list: " + snippet(plain),
            "Run the command in the app directory to see what it says.",
        )
    body = "\n".join(plain.split("\n")[start:])
    try:
        data, _ = json.JSONDecoder().raw_decode(body.lstrip())
    except json.JSONDecodeError as e:
        raise ShopifyFailed(
            f"`shopify app versions list --json` printed JSON that cannot be read ({e.msg} at line {e.lineno}).",
            "Check the Shopify CLI version (3.x) and run the command by hand.",
        ) from None
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise ShopifyFailed(
            "`shopify app versions list --json` printed something other than a list of versions: " + snippet(body),
            "Check the Shopify CLI version (3.x).",
        )
    rows = []
    for i, v in enumerate(data):
        status = v.get("status")
        if not isinstance(status, str):
            raise ShopifyFailed(f"`shopify app versions list --json`: version #{i + 1} has no status: {snippet(json.dumps(v))}")
        tag = v.get("versionTag")
        rows.append((i, AppVersion(
            version_tag=tag if isinstance(tag, str) and tag else None,
            status=status,
            created_at=_parse_time(v.get("createdAt")),
            created_by=str(v.get("createdBy") or ""),
            message=str(v.get("message") or ""),
        )))
    # The API lists newest first; sort anyway (stable, undated rows keep their place last).
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    rows.sort(key=lambda r: (r[1].created_at or oldest, -r[0]), reverse=True)
    return [v for _, v in rows]


def snippet(text: str, n: int = 200) -> str:
    s = " ".join(redact(text).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def confirm_release(after: Sequence[AppVersion], version: str, command: str) -> str:
    """After `app release --version V` succeeded: '' when the list shows V active;
    ShopifyFailed when it shows V but another version active; a note saying the CLI's
    word was taken when V is older than the newest versions the list returns."""
    if any(v.version_tag == version for v in after):
        now = active_version(after)
        if now is None or now.version_tag != version:
            raise ShopifyFailed(
                f"`{command}` reported success but the active version is "
                f"{now.version_tag if now else 'none'!r}, not {version!r}.",
                "Check the app's versions in the Dev Dashboard before retrying.",
            )
        return ""
    return (f"{version} is older than the newest {len(after)} versions `shopify app versions list` returns, "
            f"so the release was confirmed by the CLI's exit status and its {VERSION_RELEASED!r} banner only")


def active_version(items: Sequence[AppVersion]) -> AppVersion | None:
    """The version users have now (status "active")."""
    return next((v for v in items if v.active), None)


def previous_version(items: Sequence[AppVersion]) -> AppVersion | None:
    """The version to go back to without a recorded one: the newest tagged version
    created before the active one (preferring ones marked "released" where the API
    says so; the App Management API marks every other version "inactive")."""
    act = active_version(items)
    if act is None:
        return None
    ordered = list(items)
    older = [v for v in ordered[ordered.index(act) + 1:] if v.version_tag]
    released = [v for v in older if v.status == "released"]
    return released[0] if released else older[0] if older else None
