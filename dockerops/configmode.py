"""What a service runs, given how its config reaches the container.

A config directory is mounted (``config.mode: mount``, the default): the
service runs its app image with the rendered version mounted. A config image
(``config.mode: image``): the same rendered files are baked into a final image
(:mod:`dockerops.configimage`), and the service runs that image with nothing
mounted, so a config change is a new image, rolled out and rolled back like
any other. Every Salt face asks here, so a state run, ``dockerops.apply``,
``rolling_update`` and ``services`` agree on what should run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import RenderedConfig
from .configcheck import ensure_image_checked
from .configimage import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_NAME,
    LABEL_CONFIG_VERSION,
    ConfigImage,
    config_tag,
    ensure_config_image,
    for_image,
)
from .errors import NotFound
from .host import DockerHost
from .spec import RegistrySettings, ServiceSpec

Ensure = Callable[..., ConfigImage]


@dataclass(frozen=True)
class Running:
    """What converge is given: the spec to run, the config to mount (None for
    a config image) and the config image (None when mounted)."""

    spec: ServiceSpec
    rendered: RenderedConfig | None
    image: ConfigImage | None = None
    # The config image's check, when one ran and passed (for the report).
    checked: str | None = None


def uses_image(spec: ServiceSpec) -> bool:
    """Whether ``spec``'s config is baked into a config image."""
    return spec.config is not None and spec.config.mode == "image"


def image_spec(spec: ServiceSpec, tag: str) -> ServiceSpec:
    """``spec`` running the config image ``tag`` of its repository, nothing mounted.

    The image carries the config; dropping ``config`` here keeps its mount
    and its version label off the containers (the image's label says it).
    """
    return spec.model_copy(update={"tag": tag, "config": None})


def running(
    host: DockerHost,
    spec: ServiceSpec,
    rendered: RenderedConfig | None,
    registries: Mapping[str, RegistrySettings],
    state_dir: str,
    test: bool = False,
    build: bool | None = None,
    ensure: Ensure = ensure_config_image,
) -> Running:
    """What to converge ``spec`` to.

    For a config image: the image for ``rendered`` is looked up in the
    registry and, unless it is there, built and pushed (``build``: default
    the service's ``config.build``; under ``test`` nothing is built). Then
    ``config.check`` runs in a throwaway container of it (once per image): a
    failure raises :class:`~dockerops.configcheck.ConfigCheckFailed` before
    any replica runs it.
    """
    if not uses_image(spec) or rendered is None:
        return Running(spec, rendered)
    assert spec.config is not None
    image = here(host, spec, rendered)
    if image is None:
        image = ensure(
            host.api,
            spec,
            rendered,
            registries,
            build=spec.config.build if build is None else build,
            test=test,
        )
    run = image_spec(spec, image.tag)
    checked = None
    if not test:
        checked = ensure_image_checked(
            host, spec, run.image_ref, image.version, state_dir, spec.secret_values
        )
    return Running(run, None, image, checked)


def here(host: DockerHost, spec: ServiceSpec, rendered: RenderedConfig) -> ConfigImage | None:
    """The config image for ``rendered`` when this host has it already
    (pulled or run before): no registry is asked, so a no-op state run
    neither waits for nor depends on the registry. None: ask the registry."""
    assert spec.config is not None
    version = for_image(rendered, spec.config.path).version
    tag = config_tag(spec.tag, spec.env_short, version, spec.name)
    ref = f"{spec.image}:{tag}"
    try:
        details = host.inspect_image(ref)
    except NotFound:
        return None
    labels = (details.get("Config") or {}).get("Labels") or {}
    # The config version alone is not enough: ``1.0`` in environment ``a-b``
    # and ``1.0-a`` in ``b`` make the same tag, and a local image may be one
    # built on another app image. Anything else: the registry decides.
    if labels.get(LABEL_CONFIG_VERSION) != version:
        return None
    if labels.get(LABEL_BASE_NAME) != spec.image_ref:
        return None
    digests = [d for d in details.get("RepoDigests") or [] if d.startswith(spec.image + "@")]
    return ConfigImage(
        ref=ref,
        tag=tag,
        version=version,
        image_id=str(details.get("Id") or ""),
        base_ref=spec.image_ref,
        base_digest=str(labels.get(LABEL_BASE_DIGEST) or ""),
        built=False,
        pushed=False,
        present=True,
        digest=digests[0].split("@", 1)[1] if digests else "",
        comment=f"{ref} is on this host",
    )


def exact(spec: ServiceSpec, rendered: RenderedConfig | None) -> Running:
    """``spec`` whose ``tag`` already names what to run (a rollback to an
    image from the history): a config image runs as it is, nothing built."""
    if not uses_image(spec):
        return Running(spec, rendered)
    return Running(image_spec(spec, spec.tag), None)
