"""Container images as the release artifact: built once per build key, pushed, named by digest.

The image target (`[release] target = "image"`, settings in `[image]`) ships the same commit
as the tree target, as an image: either the toolkit's build file (the `[image] base` image, the
artifact's unpacked tree in /app, the `[app]` start command as its command: nothing runs at
build time, so the image holds the bytes the artifact holds) or the app's own Dockerfile
(`image.build = "Dockerfile"`), built from the commit's checkout under .deploy/src/. It is
tagged `<commit>-<16 hex>` (the tag names the commit; the hex covers the app folder, the
[app] build keys and how the image is made), pushed, and from then on referred to by its
digest only: `<registry>/<repository>@sha256:...`.

A second promotion of the same key (staging, then production) neither builds nor pushes:
.deploy/images/index/ (0600) records the digest, and the registry is asked (`skopeo inspect`)
that it still has it; if not, the image is built and pushed again.

Registry credentials are secrets: the variables `image.username_var`/`password_var` name are
read here, written only into an auth file (0600) in a private temp folder for the duration of
the commands, and never reach a command line, the ledger or the output. TLS is verified unless
`image.insecure = true`; `image.ca_file` adds a CA. Children get the minimal base environment
plus the container tool's own configuration variables (CONTAINERS_CONF and friends).

One job per module:

    _tool.py       the container tool (podman or docker), the login and CA folder, every argv
    _buildfile.py  the toolkit's Containerfile (pure)
    _index.py      what was pushed per (registry, repository, tag)
    _ping.py       before a build: the registry answers, is trusted, takes the login
    _ensure.py     build once, push, read the digest; what --dry-run shows

For the promotion (deploy/flows/steps/): the image step puts the `ImageRef` fact
(deploy.facts.ImageRef: `reference`, `digest`, `registry`, `repository`, `tag`) into the
run's state; a release target reads it with `state.get(ImageRef)` and pulls and runs
`ref.reference` (by digest). Production refuses a digest other than the one its staging run
recorded for the commit (`PromotionRecord.image_digest`).
"""

from deploy.facts import ImageRef
from deploy.images._buildfile import containerfile
from deploy.images._ensure import (ImageCommand, ImageResult, build_image, ensure_image, image_shows, image_tag,
                                   registry_trouble)
from deploy.images._index import images_dir
from deploy.images._ping import check_registry, registry_ready
from deploy.images._tool import (AUTH_PLACEHOLDER, Access, Credentials, credentials, registry_flags, tool,
                                 tool_env)

__all__ = [
    "Access",
    "AUTH_PLACEHOLDER",
    "build_image",
    "check_registry",
    "containerfile",
    "Credentials",
    "credentials",
    "ensure_image",
    "image_shows",
    "image_tag",
    "ImageCommand",
    "ImageRef",
    "ImageResult",
    "images_dir",
    "registry_flags",
    "registry_ready",
    "registry_trouble",
    "tool",
    "tool_env",
]
