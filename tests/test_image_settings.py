"""The [image] settings: parsed into types, every mistake named with its key and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy import config
from deploy.config import ImageSection
from deploy.errors import SettingsError

REMOTE = {"environment": {"kind": "remote"}, "hosts": {"hosts": ["deploy@a.example"]}}


def parse(image: dict, **extra) -> config.Settings:
    return config.parse({**REMOTE, "image": image, **extra}, name="staging", file=Path("env/staging.toml"),
                        root=Path("/p"))


def test_defaults_name_the_credential_variables_and_verify_tls():
    im = parse({}).image
    assert im == ImageSection()
    assert (im.build, im.insecure, im.ca_file, im.runtime) == ("toolkit", False, "", "auto")
    assert (im.username_var, im.password_var) == ("REGISTRY_USERNAME", "REGISTRY_PASSWORD")
    assert "alpine" not in im.base   # the artifact's node_modules were installed against glibc


@pytest.mark.parametrize("image", [
    {"registry": "ghcr.io", "repository": "acme/occ-app"},
    {"registry": "127.0.0.1:5000", "repository": "occ", "build": "Dockerfile"},
    {"registry": "registry.internal:443", "repository": "team/app.web_1", "build": "docker/Containerfile",
     "ca_file": "/etc/ssl/internal-ca.pem", "runtime": "docker", "keep": 5},
    {"registry": "localhost:5000", "repository": "a/b/c", "insecure": True, "username_var": "", "password_var": ""},
], ids=["public-host", "ip-port-own-dockerfile", "ca-file-docker", "insecure-anonymous"])
def test_good_image_settings_are_read(image):
    im = parse(image).image
    for k, v in image.items():
        assert getattr(im, k) == v


@pytest.mark.parametrize("image, match", [
    ({"registry": "https://ghcr.io"}, "image.registry = 'https://ghcr.io' is not a registry address"),
    ({"registry": "ghcr.io/acme"}, "image.registry = 'ghcr.io/acme' is not a registry address"),
    ({"repository": "Acme/App"}, "image.repository = 'Acme/App' is not an image name"),
    ({"repository": "acme//app"}, "image.repository = 'acme//app' is not an image name"),
    ({"build": "../Dockerfile"}, "image.build = '../Dockerfile' is neither \"toolkit\" nor a path inside"),
    ({"build": "/srv/Dockerfile"}, "image.build = '/srv/Dockerfile' is neither"),
    ({"base": "node 20"}, "image.base = 'node 20' is not an image reference"),
    ({"password_var": "hunter2-secret!"}, "image.password_var is not a variable name"),
    ({"username_var": ""}, "image.username_var and image.password_var must be set together"),
    ({"insecure": True, "ca_file": "ca.pem"}, "image.insecure = true and image.ca_file are both set"),
    ({"keep": 0}, "image.keep = 0 is out of range"),
    ({"runtime": "containerd"}, "image.runtime = 'containerd' is not allowed"),
    ({"push_timeout": 0}, "image.build_timeout and image.push_timeout must be more than 0"),
    ({"registy": "ghcr.io"}, "unknown key image.registy"),
    ({"insecure": "yes"}, "image.insecure must be true or false"),
], ids=["scheme", "path-in-registry", "upper-case-name", "empty-path-part", "escaping-dockerfile",
        "absolute-dockerfile", "space-in-base", "value-instead-of-name", "half-credentials",
        "insecure-and-ca", "keep-zero", "unknown-runtime", "zero-timeout", "typo", "string-bool"])
def test_bad_image_settings_name_the_file_and_key(image, match):
    with pytest.raises(SettingsError, match=match) as e:
        parse(image)
    assert "env/staging.toml" in str(e.value)


@pytest.mark.parametrize("key, value", [("password_var", "s3cr3t pass!"), ("username_var", "ci@acme.example"),
                                        ("password_var", "ghp_0123456789abcdefXYZ-")],
                         ids=["password-with-space", "username-email", "token-with-dash"])
def test_a_credential_put_where_its_variable_name_goes_is_not_shown_in_the_error(key, value):
    other = "password_var" if key == "username_var" else "username_var"
    with pytest.raises(SettingsError) as e:
        parse({key: value, other: "REGISTRY_X"})
    assert value not in str(e.value) and f"image.{key} is not a variable name" in str(e.value)
    assert "Name the variable that holds the value" in (e.value.hint or "")


@pytest.mark.parametrize("target, expected", [
    ("image", ["gate", "build", "image", "backup"]),
    ("tree", ["gate", "build", "backup"]),
], ids=["image-target-builds-then-pushes", "tree-target-has-no-image-step"])
def test_promotion_plan_pushes_the_image_right_after_the_build(target, expected):
    from deploy.flows import promote

    s = parse({"registry": "ghcr.io", "repository": "acme/app"}, release={"target": target},
              database={"provider": "none"})
    names = [st.name for st in promote.plan(s, sha="a" * 40, release_id="20260101000000-aaaaaaa").steps]
    start = names.index("gate")
    assert names[start:start + len(expected)] == expected


def test_the_image_target_needs_a_registry_and_a_repository():
    with pytest.raises(SettingsError, match='release.target = "image" needs image.registry'):
        parse({}, release={"target": "image"})
    with pytest.raises(SettingsError, match='needs image.repository'):
        parse({"registry": "ghcr.io"}, release={"target": "image"})


# ---------------------------------------------------------------- the login folder and the flags (data)

def _image_settings(tmp_path: Path, **image) -> config.Settings:
    return config.parse({**REMOTE, "image": {"registry": "registry.example:5000", "repository": "acme/app", **image}},
                        name="staging", file=Path("env/staging.toml"), root=tmp_path)


@pytest.mark.parametrize("tool_name, auth_name", [("podman", "auth.json"), ("docker", "config.json")],
                         ids=["podman-authfile", "docker-config-folder"])
def test_the_login_is_only_in_a_private_auth_file_removed_afterwards(tmp_path, tool_name, auth_name):
    import base64
    import json

    from deploy.images import Access, Credentials
    from deploy.redact import Secret

    s = _image_settings(tmp_path)
    with Access(s, tool_name, Credentials(Secret("ci-bot"), Secret("pa55-word-xyz"))) as acc:
        folder = acc.dir
        assert folder is not None and folder.stat().st_mode & 0o777 == 0o700
        assert acc.auth_file.name == auth_name and acc.auth_file.stat().st_mode & 0o777 == 0o600
        token = json.loads(acc.auth_file.read_text())["auths"]["registry.example:5000"]["auth"]
        assert base64.b64decode(token).decode() == "ci-bot:pa55-word-xyz"
        flags = acc.flags("podman")
        assert "pa55-word-xyz" not in " ".join(flags) and "ci-bot" not in " ".join(flags)
        assert acc.env == ({"DOCKER_CONFIG": str(folder)} if tool_name == "docker" else {})
    assert not folder.exists()


def test_an_unreadable_ca_file_is_named_and_leaves_no_login_behind(tmp_path):
    from deploy.images import Access, Credentials
    from deploy.redact import Secret

    s = _image_settings(tmp_path, ca_file="certs/missing-ca.pem")
    made = []
    with pytest.raises(SettingsError, match="image.ca_file = 'certs/missing-ca.pem'"):
        acc = Access(s, "podman", Credentials(Secret("u"), Secret("secret-value-1")))
        made.append(acc)
        with acc:
            pass
    assert made[0].dir is None


@pytest.mark.parametrize("image, kind, flags", [
    ({}, "podman", ["--authfile", "<private auth file>"]),
    ({"ca_file": "ca.pem"}, "podman", ["--authfile", "<private auth file>", "--cert-dir", "<private cert dir>"]),
    ({"insecure": True}, "skopeo", ["--authfile", "<private auth file>", "--tls-verify=false"]),
    ({"ca_file": "ca.pem"}, "docker", []),
], ids=["verified-by-system-roots", "private-ca", "explicit-insecure", "docker-daemon-owns-tls"])
def test_registry_flags_say_how_tls_is_verified(tmp_path, image, kind, flags):
    from deploy.images import registry_flags

    assert registry_flags(_image_settings(tmp_path, **image).image, kind) == flags
