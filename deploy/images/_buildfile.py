"""The toolkit's own build file for an app: its base image, the artifact's unpacked tree in
/app, the `[app]` start command. Pure text from values, so --dry-run shows what a build would
use and tests check it without a container tool."""

from __future__ import annotations

import json
from typing import Mapping, Sequence

WORKDIR = "/app"


def containerfile(*, base: str, start: Sequence[str], port: int, port_var: str,
                  labels: Mapping[str, str] = {}) -> str:
    """A Containerfile that runs the artifact as the host-tree target does: cwd = the release
    tree, node_modules/.bin first on PATH (as `npm run` puts it), the app's port variable set
    (hosts override it when they run the image), and the start argv as the container's command
    in exec form, so signals reach the app itself. Nothing runs at build time: the artifact
    was installed, built and pruned by the toolkit already, so the image holds the same bytes."""
    lines = [
        "# Written by the deploy toolkit (deploy/images/): the release artifact on its base image.",
        f"FROM {base}",
        f"WORKDIR {WORKDIR}",
        f"COPY . {WORKDIR}",
        f"ENV NODE_ENV=production PATH={WORKDIR}/node_modules/.bin:$PATH {port_var}={port}",
        f"EXPOSE {port}",
    ]
    lines += [f"LABEL {k}={json.dumps(v)}" for k, v in sorted(labels.items())]
    lines.append(f"CMD {json.dumps(list(start))}")
    return "\n".join(lines) + "\n"
