"""Config images: a service's rendered config files baked into a final image.

The layered standard: a base runtime image, the app image built on it
(``repo/app:1.0``), and a final image that adds one environment's rendered
config files (:class:`dockerops.config.RenderedConfig`) at ``config:path`` as
its last layer, in the app's repository, tagged
``<app tag>-<environment short>-<config hash>`` (``1.0-prod-16ba0012ab34``).

The final image is assembled in the registry, the way ``crane append`` does,
with no Docker daemon and no ``docker build``: the new layer blob, the image
config blob and a manifest that lists the app image's layers (already in that
repository) plus the new one. Everything is derived from the inputs only (the
app image's manifest and config, the rendered files, the tag): file times,
modes and owners in the layer are fixed, the gzip header carries no time, and
the image config keeps the app image's ``created``. So the same inputs give
the same tag and the same image ID (the config's digest) wherever and
whenever it is built, and the registry is asked first: an image already there
is neither built nor pushed again. Any host then gets it by a plain
``docker pull``.

The pure parts (tag, layer, image config, manifest) are separate from the one
I/O function, :func:`ensure_config_image`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .config import RenderedConfig, RenderedFile
from .errors import DockerError, SpecError
from .registry import (
    OCI_MANIFEST,
    Manifest,
    RegistryClient,
    parse_reference,
    sha256_digest,
)
from .replicas import LABEL_IMAGE_CONFIG_VERSION
from .spec import ENV_SHORT_RE, PILLAR_KEY, TAG_RE, RegistrySettings, ServiceSpec

LABEL_VERSION = "org.opencontainers.image.version"
LABEL_BASE_NAME = "org.opencontainers.image.base.name"
LABEL_BASE_DIGEST = "org.opencontainers.image.base.digest"
# The config version (also read by dockerops.status from any container of it).
LABEL_CONFIG_VERSION = LABEL_IMAGE_CONFIG_VERSION
# Where the files are: the config version hashes the files, not their place.
LABEL_CONFIG_PATH = "io.dockerops.config.path"

# Hex digits of the config version in the tag.
TAG_HASH_LENGTH = 12
# Docker's limit on a tag.
TAG_MAX = 128
# Every entry of the layer has this mtime (2000-01-01T00:00:00Z): fixed, so the
# layer's digest does not depend on when it was built; not 0, which some tools
# take for "unknown".
LAYER_MTIME = 946684800
DIRECTORY_MODE = 0o755
# Makes the config directory opaque (the OCI/Docker layer whiteout): files the
# app image has there are hidden, so the container sees exactly the rendered
# files, as with a mounted config directory.
OPAQUE_MARKER = ".wh..wh..opq"
GZIP_LEVEL = 9

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class ConfigImageError(DockerError):
    """A config image is missing where it may not be built, or is not what it should be."""


@dataclass(frozen=True)
class ConfigImage:
    """A service's config image, and what :func:`ensure_config_image` did about it.

    ``present``: it was in the registry already, for this config version and
    this app image (nothing built, nothing pushed). ``built``/``pushed``: it
    was assembled and pushed by this call. Under ``test`` all three are False
    when it would be built; ``image_id`` is what it would be.
    """

    ref: str
    tag: str
    version: str
    image_id: str
    base_ref: str
    base_digest: str
    built: bool
    pushed: bool
    present: bool
    # The manifest's digest in the registry (``ref@digest`` pins it).
    digest: str = ""
    # What was done, or would be done, in a sentence.
    comment: str = ""


# -- pure parts -----------------------------------------------------------------


def for_image(rendered: RenderedConfig, path: str) -> RenderedConfig:
    """``rendered`` with the version a config image carries: its files *and*
    where they go, so moving ``config.path`` is a new tag too (a host that has
    the old image under a tag never pulls that tag again)."""
    digest = hashlib.sha256(f"{rendered.version}\0{path}".encode()).hexdigest()
    return replace(rendered, version=digest[: len(rendered.version)])


def _tag_path(service: str | None) -> str:
    return f"{PILLAR_KEY}:services:{service}:tag" if service else "tag"


def config_tag(app_tag: str, env_short: str, version: str, service: str | None = None) -> str:
    """``<app tag>-<environment short>-<first 12 hex of the config version>``.

    Refuses (naming the pillar path) what would not make a valid Docker tag.
    """
    problems = []
    if not TAG_RE.fullmatch(app_tag):
        problems.append(f"{_tag_path(service)}: {app_tag!r} is not a valid image tag")
    if not ENV_SHORT_RE.fullmatch(env_short):
        problems.append(
            f"{PILLAR_KEY}:environment_short: {env_short!r} is not a valid short name for "
            "an image tag (letters, digits, '_', '.' and '-', at most 32)"
        )
    short = version[:TAG_HASH_LENGTH]
    if len(short) != TAG_HASH_LENGTH or any(c not in "0123456789abcdef" for c in short):
        problems.append(f"config version {version!r} is not a hex hash")
    if problems:
        raise SpecError(problems)
    tag = f"{app_tag}-{env_short}-{short}"
    if len(tag) > TAG_MAX:
        room = TAG_MAX - len(env_short) - TAG_HASH_LENGTH - 2
        raise SpecError(
            [
                f"{_tag_path(service)}: the config image tag {tag!r} is {len(tag)} characters, "
                f"Docker allows {TAG_MAX}: with environment short name {env_short!r} the app "
                f"tag may have {room} (shorten the tag or dockerops:environment_short)"
            ]
        )
    return tag


def _numeric_id(value: str | int | None) -> int | None:
    """The id ``value`` gives, 0 when unset; None for a name."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else None


def file_ids(rendered: RenderedConfig, service: str) -> dict[str, tuple[int, int]]:
    """Each file's (uid, gid) in the image: 0 unless a numeric id is given.

    A user or group *name* is refused: it would be resolved in the image's
    own ``/etc/passwd``, which is not read here.
    """
    problems = []
    ids = {}
    for item in rendered.files:
        uid, gid = _numeric_id(item.owner), _numeric_id(item.group)
        for what, value, number in (("owner", item.owner, uid), ("group", item.group, gid)):
            if number is None:
                problems.append(
                    f"{PILLAR_KEY}:services:{service}:config:files:{item.name}:{what}: "
                    f"{value!r} is a name; a config image takes numeric ids only (a name "
                    "cannot be resolved outside the image): give the id"
                )
        ids[item.name] = (uid or 0, gid or 0)
    if problems:
        raise SpecError(problems)
    return ids


def _entry(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = LAYER_MTIME
    return info


def layer_tar(path: str, rendered: RenderedConfig, service: str) -> bytes:
    """The uncompressed layer: the config directory at ``path`` with every file.

    Deterministic: entries sorted by path, directories 0755 owned by root, file
    modes from the rendered files, numeric owners only (see :func:`file_ids`),
    every mtime :data:`LAYER_MTIME`, GNU format (no pax headers, so no atime
    or ctime). The directories above ``path`` are not in the layer: the app
    image's stay as they are (a missing one is made 0755 when the layer is
    applied). The config directory is opaque (:data:`OPAQUE_MARKER`).
    """
    root = path.strip("/")
    if not root:
        raise ValueError("a config directory is never the image's root")
    ids = file_ids(rendered, service)
    files: dict[str, RenderedFile] = {f"{root}/{f.name}": f for f in rendered.files}
    directories = {root}
    for name in files:
        parent = name.rsplit("/", 1)[0]
        while parent != root:
            directories.add(parent)
            parent = parent.rsplit("/", 1)[0]
    entries = sorted([*directories, *files, f"{root}/{OPAQUE_MARKER}"])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in entries:
            if name in directories:
                tar.addfile(_entry(name, tarfile.DIRTYPE, DIRECTORY_MODE))
            elif name in files:
                item = files[name]
                uid, gid = ids[item.name]
                info = _entry(name, tarfile.REGTYPE, item.mode, uid, gid)
                info.size = len(item.content)
                tar.addfile(info, io.BytesIO(item.content))
            else:
                tar.addfile(_entry(name, tarfile.REGTYPE, 0o644))
    return out.getvalue()


def compress(tar: bytes) -> bytes:
    """gzip with no time and no file name in its header: stable bytes for stable input."""
    return gzip.compress(tar, compresslevel=GZIP_LEVEL, mtime=0)


def image_labels(
    tag: str, base_ref: str, base_digest: str, version: str, path: str
) -> dict[str, str]:
    """The labels a config image carries (on top of the app image's)."""
    return {
        LABEL_VERSION: tag,
        LABEL_BASE_NAME: base_ref,
        LABEL_BASE_DIGEST: base_digest,
        LABEL_CONFIG_VERSION: version,
        LABEL_CONFIG_PATH: path,
    }


def image_config(
    base_config: bytes, labels: Mapping[str, str], diff_id: str, created_by: str
) -> bytes:
    """The config image's config JSON, from the app image's raw config.

    The app image's config, plus ``labels``, the new layer's ``diff_id`` and
    one history entry; ``created`` stays the app image's, so nothing depends
    on the clock. Serialized canonically (sorted keys, no spaces).
    """
    config: dict[str, Any] = json.loads(base_config)
    runtime = dict(config.get("config") or {})
    runtime["Labels"] = {**(runtime.get("Labels") or {}), **labels}
    config["config"] = runtime
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), diff_id]
    config["rootfs"] = rootfs
    step: dict[str, Any] = {"created_by": created_by, "comment": "dockerops config image"}
    if "created" in config:
        step["created"] = config["created"]
    config["history"] = [*(config.get("history") or []), step]
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_manifest(base: Manifest, config: bytes, layer: bytes) -> bytes:
    """The manifest: the app image's layers plus ``layer``, and ``config``.

    Of the app image's manifest type (Docker schema 2 or OCI), and its config
    media type; its annotations are the app image's and are left out.
    """
    data = base.data
    layer_type = OCI_LAYER if base.media_type == OCI_MANIFEST else DOCKER_LAYER
    manifest = {
        "schemaVersion": 2,
        "mediaType": base.media_type,
        "config": {
            "mediaType": data["config"]["mediaType"],
            "size": len(config),
            "digest": sha256_digest(config),
        },
        "layers": [
            *data["layers"],
            {"mediaType": layer_type, "size": len(layer), "digest": sha256_digest(layer)},
        ],
    }
    return json.dumps(manifest, indent=3).encode()


@dataclass(frozen=True)
class Assembled:
    """A config image's blobs and manifest, ready to push."""

    layer: bytes  # gzipped
    config: bytes
    manifest: bytes
    media_type: str

    @property
    def image_id(self) -> str:
        return sha256_digest(self.config)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def assemble(
    spec: ServiceSpec,
    rendered: RenderedConfig,
    tag: str,
    base: Manifest,
    base_config: bytes,
) -> Assembled:
    """Every blob of ``spec``'s config image, from its app image (pure)."""
    assert spec.config is not None
    tar = layer_tar(spec.config.path, rendered, spec.name)
    layer = compress(tar)
    labels = image_labels(tag, spec.image_ref, base.digest, rendered.version, spec.config.path)
    created_by = f"dockerops: config {rendered.version} at {spec.config.path}"
    config = image_config(base_config, labels, sha256_digest(tar), created_by)
    return Assembled(layer, config, image_manifest(base, config, layer), base.media_type)


# -- I/O --------------------------------------------------------------------------


def ensure_config_image(
    docker_api: Any,
    spec: ServiceSpec,
    rendered: RenderedConfig,
    registries: Mapping[str, RegistrySettings],
    build: bool = True,
    test: bool = False,
) -> ConfigImage:
    """Make sure ``spec``'s config image for ``rendered`` is in the registry.

    The registry is asked first: the tag there, labelled with the same config
    version, config path and app image digest, is left alone. Another image
    under the tag is never replaced (a tag must name one image on every
    host): :class:`ConfigImageError`, e.g. when the app tag was pushed again
    since. Else, with ``build``, the image is assembled and pushed in the
    app's repository (under ``test``, only said); without ``build`` a missing
    image is an error (it is built elsewhere, with
    ``dockerops.build_config_image``).

    ``docker_api`` is not used: the image is assembled in the registry, with
    no daemon (it is accepted so every Salt face passes the same arguments).
    Credentials: ``registries`` (``dockerops:registries``), by registry host.
    """
    del docker_api
    if spec.config is None:
        raise SpecError([f"{PILLAR_KEY}:services:{spec.name}:config: the service has none"])
    rendered = for_image(rendered, spec.config.path)
    tag = config_tag(spec.tag, spec.env_short, rendered.version, spec.name)
    file_ids(rendered, spec.name)  # a name is refused before anything is asked
    ref = parse_reference(spec.image_ref)
    client = RegistryClient.for_reference(ref, registries, push=build and not test)
    final_ref = f"{spec.image}:{tag}"

    base_digest = client.manifest_digest(spec.tag)
    if base_digest is None:
        raise ConfigImageError(
            f"service {spec.name}: the app image {spec.image_ref} is not in its registry; "
            "push it there first (its config image is built on it)"
        )

    def result(**fields: Any) -> ConfigImage:
        return ConfigImage(
            ref=final_ref,
            tag=tag,
            version=rendered.version,
            base_ref=spec.image_ref,
            base_digest=base_digest,
            **fields,
        )

    existing = client.manifest(tag)
    if existing is not None:
        labels = _labels(client.blob(existing.config_digest))
        wanted = {
            LABEL_CONFIG_VERSION: rendered.version,
            LABEL_CONFIG_PATH: spec.config.path,
            LABEL_BASE_NAME: spec.image_ref,
            LABEL_BASE_DIGEST: base_digest,
        }
        if all(labels.get(key) == value for key, value in wanted.items()):
            return result(
                image_id=existing.config_digest,
                digest=existing.digest,
                built=False,
                pushed=False,
                present=True,
                comment=f"{final_ref} is in the registry",
            )
        # Never replaced: hosts that pulled the tag would keep running another
        # image than hosts pulling it from now on, and a rollback to the tag
        # would not give back what ran.
        raise ConfigImageError(f"service {spec.name}: {_differs(spec, final_ref, labels, wanted)}")
    if not build:
        raise ConfigImageError(
            f"service {spec.name}: {final_ref} is not in the registry; config:build is "
            f"false, so it is built elsewhere with dockerops.build_config_image {spec.name}"
        )

    base = client.manifest(base_digest)
    if base is None:
        raise ConfigImageError(f"service {spec.name}: {spec.image_ref} vanished from the registry")
    image = assemble(spec, rendered, tag, base, client.blob(base.config_digest))
    if test:
        return result(
            image_id=image.image_id,
            digest=image.digest,
            built=False,
            pushed=False,
            present=False,
            comment=f"{final_ref} would be built and pushed",
        )
    # The app image's layers are in this repository already: only ours go up,
    # and only when the registry does not have them (a rebuild sends nothing).
    client.upload_blob(image.layer)
    client.upload_blob(image.config)
    digest = client.put_manifest(tag, image.manifest, image.media_type)
    return result(
        image_id=image.image_id,
        digest=digest,
        built=True,
        pushed=True,
        present=False,
        comment=f"{final_ref} built and pushed",
    )


def _differs(
    spec: ServiceSpec, final_ref: str, labels: Mapping[str, str], wanted: Mapping[str, str]
) -> str:
    """Why the image under ``final_ref`` is not the one wanted, and what to do."""
    others = [key for key in wanted if key != LABEL_BASE_DIGEST]
    if all(labels.get(key) == wanted[key] for key in others):
        built_on = labels.get(LABEL_BASE_DIGEST) or "unknown"
        return (
            f"the app tag {spec.tag} was pushed again (digest {wanted[LABEL_BASE_DIGEST]}, "
            f"the config image {final_ref} was built on {built_on}): give the app a new "
            f"tag (dockerops:services:{spec.name}:tag); a config image tag is never "
            "overwritten, as hosts that pulled it would run another image"
        )
    differences = ", ".join(
        f"{key} is {labels.get(key) or 'unset'}, not {value}"
        for key, value in wanted.items()
        if labels.get(key) != value
    )
    return (
        f"{final_ref} in the registry is another image ({differences}); it is never "
        "overwritten: remove that tag from the registry if it is not in use, or give the "
        f"app a new tag (dockerops:services:{spec.name}:tag)"
    )


def _labels(config: bytes) -> dict[str, str]:
    try:
        labels = (json.loads(config).get("config") or {}).get("Labels") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
