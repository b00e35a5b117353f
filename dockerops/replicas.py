"""Desired and actual replicas, and the labels that tie them together (pure).

Every container dockerops runs carries labels saying which service and replica
it is and a hash of every input that must force a recreate. Comparing desired
with actual is then a comparison of hashes read from one ``docker ps``-style
list call: no per-container inspect, no throwaway container.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .inputs import (
    LABEL_ENVIRONMENT,
    CreateCall,
    Mount,
    PublishedPort,
    create_call,
    service_inputs,
    slot_ports,
)
from .spec import ServiceSpec

# Re-exported: callers name them from here.
__all__ = ["LABEL_ENVIRONMENT", "Mount", "PublishedPort"]

LABEL_PREFIX = "io.dockerops"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
# The slot a container occupies (1..replicas, then start-first spares).
LABEL_SLOT = f"{LABEL_PREFIX}.slot"
# The same, under the name earlier releases gave it: still read, still written.
LABEL_REPLICA = f"{LABEL_PREFIX}.replica"
LABEL_IMAGE = f"{LABEL_PREFIX}.image"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"
# The config version the container was created with (see dockerops.config).
LABEL_CONFIG_VERSION = f"{LABEL_PREFIX}.config-version"
# On a config image (dockerops.configimage), inherited by its containers.
LABEL_IMAGE_CONFIG_VERSION = f"{LABEL_PREFIX}.config.version"
# Per-input hashes, so a recreate can say *what* changed without an inspect.
LABEL_INPUTS = f"{LABEL_PREFIX}.inputs"
# The names (never the values) of the env entries that are secrets, comma
# separated: whatever pillar says later, the values this container holds under
# them stay masked. Not an input: adding it recreates nothing.
LABEL_SECRET_KEYS = f"{LABEL_PREFIX}.secret-keys"

_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True)
class DesiredReplica:
    """One slot's container as it should be.

    ``values`` holds every input's value (see :mod:`dockerops.inputs`), shared
    by all the service's slots; a slot differs only by its name, its slot
    number and its published host ports.
    """

    service: str
    index: int
    name: str
    image: str
    inputs: tuple[tuple[str, str], ...]
    spec_hash: str
    # Kept out of repr and comparisons: env values may be credentials, and the
    # hashes above already say whether two replicas are made the same.
    values: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    config_version: str | None = None
    config_live: bool = False
    secret_keys: tuple[str, ...] = ()

    @property
    def command(self) -> tuple[str, ...] | None:
        command: tuple[str, ...] | None = self.values["command"]
        return command

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        env: tuple[tuple[str, str], ...] = self.values["env"]
        return env

    @property
    def ports(self) -> tuple[PublishedPort, ...]:
        return slot_ports(self.values["ports"], self.index)

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        labels: tuple[tuple[str, str], ...] = self.values["labels"]
        return labels

    @property
    def restart_policy(self) -> str:
        return str(self.values["restart_policy"])

    @property
    def mounts(self) -> tuple[Mount, ...]:
        mounts: tuple[Mount, ...] = self.values["mounts"]
        return mounts

    @property
    def log_driver(self) -> str:
        return str(self.values["logging"][0])

    @property
    def log_options(self) -> tuple[tuple[str, str], ...]:
        options: tuple[tuple[str, str], ...] = self.values["logging"][1]
        return options

    @property
    def healthcheck(self) -> tuple[tuple[str, Any], ...] | None:
        check: tuple[tuple[str, Any], ...] | None = self.values["healthcheck"]
        return check

    def create_call(self) -> CreateCall:
        """Docker's create call for this slot's container (every input applied)."""
        return create_call(self.values, self.index)

    def docker_labels(self) -> dict[str, str]:
        labels = dict(self.labels)
        labels.update(
            {
                LABEL_MANAGED: "true",
                LABEL_SERVICE: self.service,
                LABEL_SLOT: str(self.index),
                # Read by earlier releases (a downgrade must not orphan the container).
                LABEL_REPLICA: str(self.index),
                LABEL_IMAGE: self.image,
                LABEL_SPEC_HASH: self.spec_hash,
                LABEL_INPUTS: json.dumps(dict(self.inputs), sort_keys=True, separators=(",", ":")),
                LABEL_SECRET_KEYS: ",".join(self.secret_keys),
            }
        )
        if self.config_version:
            labels[LABEL_CONFIG_VERSION] = self.config_version
        return labels

    def docker_healthcheck(self) -> dict[str, Any] | None:
        return dict(self.healthcheck) if self.healthcheck else None


@dataclass(frozen=True)
class ActualReplica:
    """One container as the daemon's list call reports it (``index``: its slot)."""

    id: str
    name: str
    service: str
    index: int | None
    image: str
    spec_hash: str
    inputs: dict[str, str] = field(default_factory=dict, compare=False)
    state: str = "unknown"
    status: str = ""
    environment: str = ""
    config_version: str = ""
    # Secret env names from LABEL_SECRET_KEYS; None on containers created
    # before that label existed.
    secret_keys: tuple[str, ...] | None = field(default=None, compare=False)
    # What it publishes now, ``host_ip:host_port->container_port/proto`` (the
    # list call reports the bindings of running containers only).
    published: tuple[str, ...] = field(default=(), compare=False)

    @property
    def health(self) -> str | None:
        """``healthy``/``unhealthy``/``starting``, or None without a healthcheck."""
        match = _HEALTH_RE.search(self.status)
        if not match:
            return None
        return "starting" if match.group(1) == "health: starting" else match.group(1)


def container_name(service: str, index: int) -> str:
    return f"{service}-{index}"


def desired_replicas(
    spec: ServiceSpec, config_version: str | None = None, slots: int | None = None
) -> list[DesiredReplica]:
    """The container for each slot 1..``slots`` (default: the replica count).

    Slot i is container ``<service>-i`` publishing host port ``host + i - 1``;
    every slot's container has the same ``spec_hash`` (the inputs are valued
    and hashed once, :func:`dockerops.inputs.service_inputs`). Callers that roll
    start-first pass ``spec.slots``. ``config_version`` is the
    version of the service's config directory to run (see :mod:`dockerops.config`).
    """
    made = service_inputs(spec, config_version)
    return [
        DesiredReplica(
            service=spec.name,
            index=index,
            name=container_name(spec.name, index),
            image=spec.image_ref,
            inputs=made.digests,
            spec_hash=made.spec_hash,
            values=made.values,
            config_version=config_version if spec.config is not None else None,
            config_live=bool(spec.config and spec.config.live),
            secret_keys=tuple(sorted(spec.secrets)),
        )
        for index in range(1, (spec.replicas if slots is None else slots) + 1)
    ]


def actual_from_list_entry(entry: dict[str, Any]) -> ActualReplica:
    """Build an :class:`ActualReplica` from one entry of the container list API."""
    labels = entry.get("Labels") or {}
    try:
        index: int | None = int(labels.get(LABEL_SLOT) or labels.get(LABEL_REPLICA, ""))
    except ValueError:
        index = None
    try:
        inputs = json.loads(labels.get(LABEL_INPUTS) or "{}")
    except ValueError:
        inputs = {}
    names = entry.get("Names") or [""]
    return ActualReplica(
        id=str(entry.get("Id", "")),
        name=str(names[0]).lstrip("/"),
        service=str(labels.get(LABEL_SERVICE, "")),
        index=index,
        image=str(labels.get(LABEL_IMAGE) or entry.get("Image", "")),
        spec_hash=str(labels.get(LABEL_SPEC_HASH, "")),
        inputs=inputs if isinstance(inputs, dict) else {},
        state=str(entry.get("State", "unknown")),
        status=str(entry.get("Status", "")),
        environment=str(labels.get(LABEL_ENVIRONMENT, "")),
        config_version=str(labels.get(LABEL_CONFIG_VERSION, "")),
        secret_keys=secret_keys_of(labels),
        published=published_of(entry),
    )


def published_of(entry: dict[str, Any]) -> tuple[str, ...]:
    """The host ports one entry of the container list API says it publishes,
    ``host_ip:host_port->container_port/proto``, by host port."""
    found = set()
    for port in entry.get("Ports") or []:
        if isinstance(port, dict) and isinstance(port.get("PublicPort"), int):
            address = str(port.get("IP") or "0.0.0.0")
            if ":" in address:  # IPv6
                address = f"[{address}]"
            found.add(
                (
                    port["PublicPort"],
                    f"{address}:{port['PublicPort']}->"
                    f"{port.get('PrivatePort')}/{port.get('Type') or 'tcp'}",
                )
            )
    return tuple(text for _port, text in sorted(found))


def secret_keys_of(labels: dict[str, Any]) -> tuple[str, ...] | None:
    """The secret env names a container's labels record (None: not recorded)."""
    if LABEL_SECRET_KEYS not in labels:
        return None
    return tuple(key for key in str(labels[LABEL_SECRET_KEYS]).split(",") if key)
