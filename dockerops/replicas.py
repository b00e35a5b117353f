"""Desired and actual replicas, and the labels that tie them together (pure).

Every container dockerops runs carries labels saying which service and replica
it is and a hash of every input that must force a recreate. Comparing desired
with actual is then a comparison of hashes read from one ``docker ps``-style
list call: no per-container inspect, no throwaway container.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .spec import ServiceSpec

LABEL_PREFIX = "io.dockerops"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
LABEL_REPLICA = f"{LABEL_PREFIX}.replica"
LABEL_ENVIRONMENT = f"{LABEL_PREFIX}.environment"
LABEL_IMAGE = f"{LABEL_PREFIX}.image"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"
# The config version the container was created with (see dockerops.config).
LABEL_CONFIG_VERSION = f"{LABEL_PREFIX}.config-version"
# Per-input hashes, so a recreate can say *what* changed without an inspect.
LABEL_INPUTS = f"{LABEL_PREFIX}.inputs"
# The names (never the values) of the env entries that are secrets, comma
# separated: whatever pillar says later, the values this container holds under
# them stay masked. Not an input: adding it recreates nothing.
LABEL_SECRET_KEYS = f"{LABEL_PREFIX}.secret-keys"

_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True)
class PublishedPort:
    container: int
    protocol: str
    host_ip: str
    host_port: int | None

    @property
    def key(self) -> str:
        return f"{self.container}/{self.protocol}"


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool
    # The allow-list root ``host`` lies under: below it, no component of
    # ``host`` may be a symlink (dockerd would follow it). Not a container input.
    trusted_root: str = field(default="/", compare=False)


@dataclass(frozen=True)
class DesiredReplica:
    """One container as it should be."""

    service: str
    index: int
    name: str
    image: str
    command: tuple[str, ...] | None
    # Kept out of repr: env values may be credentials and must not reach logs.
    env: tuple[tuple[str, str], ...] = field(repr=False)
    ports: tuple[PublishedPort, ...]
    labels: tuple[tuple[str, str], ...]
    restart_policy: str
    inputs: tuple[tuple[str, str], ...]
    spec_hash: str
    mounts: tuple[Mount, ...] = ()
    log_driver: str = "json-file"
    log_options: tuple[tuple[str, str], ...] = ()
    healthcheck: tuple[tuple[str, Any], ...] | None = None
    config_version: str | None = None
    config_live: bool = False
    secret_keys: tuple[str, ...] = ()

    def docker_labels(self) -> dict[str, str]:
        labels = dict(self.labels)
        labels.update(
            {
                LABEL_MANAGED: "true",
                LABEL_SERVICE: self.service,
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
    """One container as the daemon's list call reports it."""

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

    @property
    def health(self) -> str | None:
        """``healthy``/``unhealthy``/``starting``, or None without a healthcheck."""
        match = _HEALTH_RE.search(self.status)
        if not match:
            return None
        return "starting" if match.group(1) == "health: starting" else match.group(1)


def container_name(service: str, index: int) -> str:
    return f"{service}-{index}"


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _nanoseconds(seconds: float) -> int:
    return round(seconds * 1e9)


def desired_replicas(
    spec: ServiceSpec, config_version: str | None = None, slots: int | None = None
) -> list[DesiredReplica]:
    """The container for each slot 1..``slots`` (default: the replica count).

    Slot i is container ``<service>-i`` publishing host port ``host + i - 1``;
    every slot's container has the same ``spec_hash``. Callers that roll
    start-first pass ``spec.slots``. ``config_version`` is the
    version of the service's config directory to run (see :mod:`dockerops.config`).
    """
    env = tuple(sorted(spec.all_env.items()))
    labels = tuple(sorted({**spec.labels, LABEL_ENVIRONMENT: spec.environment}.items()))
    command = tuple(spec.command) if spec.command is not None else None
    mounts = [Mount(d.host, d.container, d.read_only, spec.trusted_root(d.host)) for d in spec.data]
    config_input: Any = None
    if spec.config is not None:
        root = spec.config_root
        assert root is not None
        if spec.config.live:
            # The live view: new versions reach the replica through ..data.
            mounts.append(Mount(root, spec.config.path, True, spec.trusted_root(root)))
            config_input = ["live", root, spec.config.path]
        else:
            if config_version is None:
                raise ValueError(f"service {spec.name}: the config version is not known")
            pinned = f"{root}/..{config_version}"
            mounts.append(Mount(pinned, spec.config.path, True, spec.trusted_root(root)))
            config_input = ["pinned", root, spec.config.path, config_version]
    healthcheck = None
    if spec.healthcheck is not None:
        check = spec.healthcheck
        healthcheck = (
            ("interval", _nanoseconds(check.interval)),
            ("retries", check.retries),
            ("start_period", _nanoseconds(check.start_period)),
            ("test", check.docker_test),
            ("timeout", _nanoseconds(check.timeout)),
        )
    log_options = tuple(sorted(spec.logging.effective_options.items()))
    out = []
    for index in range(1, (spec.replicas if slots is None else slots) + 1):
        ports = tuple(
            PublishedPort(
                container=port.container,
                protocol=port.protocol,
                host_ip=str(port.host_ip),
                host_port=None if port.host is None else port.host + index - 1,
            )
            for port in spec.ports
        )
        # Each input that forces a recreate when it changes, hashed on its own.
        inputs = {
            "image": _digest(spec.image_ref),
            "command": _digest(command),
            "env": _digest(sorted(spec.env.items())),
            # The port pool, not this slot's port: all slots are interchangeable.
            "ports": _digest(
                [[p.container, p.protocol, str(p.host_ip), p.host] for p in spec.ports]
            ),
            "labels": _digest(labels),
            "restart_policy": _digest(spec.restart_policy),
        }
        # Inputs that did not exist in earlier releases are only hashed when
        # set, so adding them never changes the hash of existing containers.
        optional = {
            "secrets": sorted(spec.secrets.items()) or None,
            "mounts": [
                {"host": m.host, "container": m.container, "read_only": m.read_only}
                for m in mounts
                if m.container != _config_path(spec)
            ]
            or None,
            "config": config_input,
            "logging": [spec.logging.driver, log_options],
            "healthcheck": [list(pair) for pair in healthcheck] if healthcheck else None,
        }
        for key, value in optional.items():
            if value is not None:
                inputs[key] = _digest(value)
        out.append(
            DesiredReplica(
                service=spec.name,
                index=index,
                name=container_name(spec.name, index),
                image=spec.image_ref,
                command=command,
                env=env,
                ports=ports,
                labels=labels,
                restart_policy=spec.restart_policy,
                inputs=tuple(sorted(inputs.items())),
                spec_hash=_digest(inputs),
                mounts=tuple(mounts),
                log_driver=spec.logging.driver,
                log_options=log_options,
                healthcheck=healthcheck,
                config_version=config_version if spec.config is not None else None,
                config_live=bool(spec.config and spec.config.live),
                secret_keys=tuple(sorted(spec.secrets)),
            )
        )
    return out


def _config_path(spec: ServiceSpec) -> str | None:
    return spec.config.path if spec.config is not None else None


def actual_from_list_entry(entry: dict[str, Any]) -> ActualReplica:
    """Build an :class:`ActualReplica` from one entry of the container list API."""
    labels = entry.get("Labels") or {}
    try:
        index: int | None = int(labels.get(LABEL_REPLICA, ""))
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
    )


def secret_keys_of(labels: dict[str, Any]) -> tuple[str, ...] | None:
    """The secret env names a container's labels record (None: not recorded)."""
    if LABEL_SECRET_KEYS not in labels:
        return None
    return tuple(key for key in str(labels[LABEL_SECRET_KEYS]).split(",") if key)
