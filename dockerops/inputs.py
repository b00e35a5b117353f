"""Container inputs, each declared once (pure).

An *input* is one thing a replica's container is made from: its image, env,
mounts, memory limit, user, networks... Each has one entry in :data:`INPUTS`
saying, in one place:

- ``value(spec, config_version)``: where it comes from in the spec (None: unset);
- ``hashed``: what of it forces a recreate when it changes (default: the
  value). An input is hashed only when set, so one added in a later release
  leaves the hash of every existing container alone; ``legacy`` inputs (those
  of the first release) are hashed even when unset, as they always were;
- ``apply(value, call)``: how it goes into Docker's create call;
- ``read(details)``: how it reads back from ``docker inspect`` (for status).

Adding an input is one entry here, its field and validation in
:class:`dockerops.spec.ServiceSpec`, and its tests. Nothing else changes:
:func:`service_inputs` hashes every entry once per service,
:meth:`dockerops.host.DockerHost.create` applies every entry, and
:func:`dockerops.status.replica_status` reads every entry back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from docker.types import LogConfig, Ulimit

from .spec import DataMount, ServiceSpec

# Labels every dockerops container carries (see dockerops.replicas).
LABEL_ENVIRONMENT = "io.dockerops.environment"


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
class NamedVolume:
    """A Docker volume a replica mounts by name, as it is made when missing
    (:meth:`dockerops.host.DockerHost.ensure_volume`)."""

    name: str
    driver: str
    options: tuple[tuple[str, str], ...]
    # A local bind volume's host directory, and the allow-list root it lies
    # under: made and checked like a bind's host path.
    device: str | None = None
    device_root: str | None = None


@dataclass(frozen=True)
class Mount:
    host: str  # "" for a volume
    container: str
    read_only: bool
    # The allow-list root ``host`` lies under: below it, no component of
    # ``host`` may be a symlink (dockerd would follow it). Not a container input.
    trusted_root: str = field(default="/", compare=False)
    volume: NamedVolume | None = None

    @property
    def source(self) -> str:
        """What Docker's bind syntax names: the host path or the volume."""
        return self.volume.name if self.volume is not None else self.host


@dataclass(frozen=True)
class Network:
    """A user-defined bridge network a replica joins, with its DNS aliases there."""

    name: str
    aliases: tuple[str, ...]


@dataclass
class CreateCall:
    """Docker's create call for one slot's container, as the inputs build it.

    ``container`` holds the keyword arguments of docker-py's
    ``APIClient.create_container``, ``host`` those of ``create_host_config``.
    ``networks`` are joined in order: the first at create, the others before
    the container starts (Docker's API takes one network at create).
    """

    slot: int
    container: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    networks: list[Network] = field(default_factory=list)


Value = Callable[[ServiceSpec, "str | None"], Any]


def _same(_spec: ServiceSpec, value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Input:
    """One container input (see the module docstring)."""

    name: str
    value: Value
    apply: Callable[[Any, CreateCall], None]
    hashed: Callable[[ServiceSpec, Any], Any] = _same
    legacy: bool = False
    read: Callable[[dict[str, Any]], Any] | None = None


def _nanoseconds(seconds: float) -> int:
    return round(seconds * 1e9)


def digest(value: Any) -> str:
    """The short hash of a JSON-able value, as every container label records it."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _config(inspect: dict[str, Any]) -> dict[str, Any]:
    return inspect.get("Config") or {}


def _host_config(inspect: dict[str, Any]) -> dict[str, Any]:
    return inspect.get("HostConfig") or {}


# --- the inputs of the first release (hashed even when unset) ---------------------------------


def _command(spec: ServiceSpec, _version: str | None) -> tuple[str, ...] | None:
    return tuple(spec.command) if spec.command is not None else None


def _apply_command(value: tuple[str, ...] | None, call: CreateCall) -> None:
    call.container["command"] = list(value) if value is not None else None


def _env(spec: ServiceSpec, _version: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(spec.all_env.items()))


def _ports(spec: ServiceSpec, _version: str | None) -> PortPool:
    return tuple((p.container, p.protocol, str(p.host_ip), p.host) for p in spec.ports)


PortPool = tuple[tuple[int, str, str, int | None], ...]


def slot_ports(pool: PortPool, slot: int) -> tuple[PublishedPort, ...]:
    """Slot ``slot`` publishes each port of the pool on ``host + slot - 1``."""
    return tuple(
        PublishedPort(container, protocol, host_ip, None if host is None else host + slot - 1)
        for container, protocol, host_ip, host in pool
    )


def _apply_ports(pool: PortPool, call: CreateCall) -> None:
    ports = slot_ports(pool, call.slot)
    bindings: dict[str, list[tuple[str, int] | tuple[str]]] = {}
    for port in ports:
        binding = (port.host_ip, port.host_port) if port.host_port else (port.host_ip,)
        bindings.setdefault(port.key, []).append(binding)
    call.host["port_bindings"] = bindings or None
    call.container["ports"] = [(p.container, p.protocol) for p in ports] or None


def _labels(spec: ServiceSpec, _version: str | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**spec.labels, LABEL_ENVIRONMENT: spec.environment}.items()))


def _apply_restart(value: str, call: CreateCall) -> None:
    name, _, count = value.partition(":")
    call.host["restart_policy"] = {"Name": name, "MaximumRetryCount": int(count or 0)}


# --- inputs hashed only when set ---------------------------------------------------------------


def named_volume(spec: ServiceSpec, mount: DataMount) -> NamedVolume:
    """The volume a ``data`` entry with ``volume`` names, as it is made."""
    assert mount.volume is not None
    device = mount.bind_device
    return NamedVolume(
        mount.volume,
        mount.volume_driver,
        tuple(sorted(mount.driver_opts.items())),
        device,
        spec.trusted_root(device) if device is not None else None,
    )


def _data_mount(spec: ServiceSpec, mount: DataMount) -> Mount:
    if mount.host is not None:
        return Mount(mount.host, mount.container, mount.read_only, spec.trusted_root(mount.host))
    return Mount("", mount.container, mount.read_only, volume=named_volume(spec, mount))


def service_volumes(spec: ServiceSpec) -> list[NamedVolume]:
    """The volumes ``spec`` mounts, each once, in pillar order."""
    out: dict[str, NamedVolume] = {}
    for mount in spec.data:
        if mount.volume is not None:
            out.setdefault(mount.volume, named_volume(spec, mount))
    return list(out.values())


def _mounts(spec: ServiceSpec, version: str | None) -> tuple[Mount, ...]:
    mounts = [_data_mount(spec, d) for d in spec.data]
    if spec.config is not None:
        root = spec.config_root
        assert root is not None
        if spec.config.live:
            # The live view: new versions reach the replica through ..data.
            mounts.append(Mount(root, spec.config.path, True, spec.trusted_root(root)))
        else:
            if version is None:
                raise ValueError(f"service {spec.name}: the config version is not known")
            pinned = f"{root}/..{version}"
            mounts.append(Mount(pinned, spec.config.path, True, spec.trusted_root(root)))
    return tuple(mounts)


def _hashed_mounts(spec: ServiceSpec, mounts: tuple[Mount, ...]) -> Any:
    # The config mount is the "config" input's.
    config_path = spec.config.path if spec.config is not None else None
    # A host path's entry is what it always was (its containers keep their hash).
    data = [
        {"host": m.host, "container": m.container, "read_only": m.read_only}
        if m.volume is None
        # Driver and options too: a change is planned as a recreate, whose
        # ensure_volume then says the volume differs (rather than nothing said).
        else {
            "volume": m.volume.name,
            "driver": m.volume.driver,
            "driver_opts": dict(m.volume.options),
            "container": m.container,
            "read_only": m.read_only,
        }
        for m in mounts
        if m.container != config_path
    ]
    return data or None


def _apply_mounts(mounts: tuple[Mount, ...], call: CreateCall) -> None:
    call.mounts.extend(mounts)
    binds = [f"{m.source}:{m.container}:{'ro' if m.read_only else 'rw'}" for m in mounts]
    call.host["binds"] = binds or None


def _config_input(spec: ServiceSpec, version: str | None) -> list[Any] | None:
    if spec.config is None:
        return None
    root = spec.config_root
    if spec.config.live:
        return ["live", root, spec.config.path]
    return ["pinned", root, spec.config.path, version]


def _file_logs(spec: ServiceSpec, _version: str | None) -> tuple[str, str, str] | None:
    """(host directory, container path, its allow-list root): each slot
    mounts ``<host directory>/<slot>`` (see :mod:`dockerops.filelogs`)."""
    if spec.logs is None or spec.log_dir is None:
        return None
    return (spec.log_dir, spec.logs.path, spec.trusted_root(spec.log_dir))


def _apply_file_logs(value: tuple[str, str, str] | None, call: CreateCall) -> None:
    if value is None:
        return
    log_dir, path, trusted_root = value
    # Made, if missing, without following a symlink (DockerHost.create checks
    # every bind): the slot's container writes there.
    mount = Mount(f"{log_dir}/{call.slot}", path, False, trusted_root)
    call.mounts.append(mount)
    call.host["binds"] = [*(call.host.get("binds") or []), f"{mount.host}:{path}:rw"]


def _logging(spec: ServiceSpec, _version: str | None) -> list[Any]:
    return [spec.logging.driver, tuple(sorted(spec.logging.effective_options.items()))]


def _apply_logging(value: list[Any], call: CreateCall) -> None:
    call.host["log_config"] = LogConfig(type=value[0], config=dict(value[1]))


def _healthcheck(spec: ServiceSpec, _version: str | None) -> tuple[tuple[str, Any], ...] | None:
    check = spec.healthcheck
    if check is None:
        return None
    return (
        ("interval", _nanoseconds(check.interval)),
        ("retries", check.retries),
        ("start_period", _nanoseconds(check.start_period)),
        ("test", check.docker_test),
        ("timeout", _nanoseconds(check.timeout)),
    )


def _apply_healthcheck(value: tuple[tuple[str, Any], ...] | None, call: CreateCall) -> None:
    call.container["healthcheck"] = dict(value) if value else None


def _resources(spec: ServiceSpec, _version: str | None) -> dict[str, Any] | None:
    set_ = spec.resources.model_dump(exclude_none=True)
    return set_ or None


def _apply_resources(value: dict[str, Any] | None, call: CreateCall) -> None:
    if not value:
        return
    names = {"memory": "mem_limit", "memory_reservation": "mem_reservation"}
    for key, amount in value.items():
        if key == "cpus":
            call.host["nano_cpus"] = round(amount * 1e9)
        else:
            call.host[names.get(key, key)] = amount


def _read_resources(details: dict[str, Any]) -> dict[str, Any] | None:
    host = _host_config(details)
    out = {
        "memory": host.get("Memory") or None,
        "memory_reservation": host.get("MemoryReservation") or None,
        "cpus": (host.get("NanoCpus") or 0) / 1e9 or None,
        "pids_limit": host.get("PidsLimit") or None,
    }
    return {key: value for key, value in out.items() if value} or None


def _ulimits(spec: ServiceSpec, _version: str | None) -> list[list[Any]] | None:
    return [[name, limit.soft, limit.hard] for name, limit in sorted(spec.ulimits.items())] or None


def _apply_ulimits(value: list[list[Any]] | None, call: CreateCall) -> None:
    if value:
        call.host["ulimits"] = [Ulimit(name=n, soft=soft, hard=hard) for n, soft, hard in value]


def _field(name: str) -> Value:
    """The spec field ``name`` as it is (None, empty or False: unset)."""

    def value(spec: ServiceSpec, _version: str | None) -> Any:
        item = getattr(spec, name)
        if isinstance(item, (list, tuple)):
            return list(item) or None
        if isinstance(item, dict):
            return dict(sorted(item.items())) or None
        return item if item not in (None, False) else None

    return value


def _into(where: str, key: str) -> Callable[[Any, CreateCall], None]:
    """Apply a value as keyword ``key`` of the container (or host) config."""

    def apply(value: Any, call: CreateCall) -> None:
        if value is not None:
            (call.container if where == "container" else call.host)[key] = value

    return apply


def _security(spec: ServiceSpec, _version: str | None) -> list[str]:
    options = list(spec.security_opt)
    if spec.no_new_privileges and "no-new-privileges" not in {
        o.split(":")[0].split("=")[0] for o in options
    }:
        options.append("no-new-privileges:true")
    return options


def _hashed_security(spec: ServiceSpec, _options: list[str]) -> Any:
    # no-new-privileges on is the default: it alone changes no existing
    # container's hash (they get it at their next recreate).
    if not spec.security_opt and spec.no_new_privileges:
        return None
    return [sorted(spec.security_opt), spec.no_new_privileges]


def _apply_security(options: list[str], call: CreateCall) -> None:
    call.host["security_opt"] = options or None


def _tmpfs(spec: ServiceSpec, _version: str | None) -> dict[str, str] | None:
    return dict(sorted(spec.tmpfs.items())) or None


def _stop_grace(spec: ServiceSpec, _version: str | None) -> int | None:
    # Docker keeps whole seconds.
    return None if spec.stop_grace_period is None else round(spec.stop_grace_period)


def _networks(spec: ServiceSpec, _version: str | None) -> tuple[Network, ...] | None:
    if not spec.networks:
        return None
    return tuple(
        Network(name, tuple(sorted({spec.name, *entry.aliases})))
        for name, entry in spec.networks.items()
    )


def _hashed_networks(_spec: ServiceSpec, networks: tuple[Network, ...] | None) -> Any:
    return [[n.name, list(n.aliases)] for n in networks] if networks else None


def _apply_networks(networks: tuple[Network, ...] | None, call: CreateCall) -> None:
    if networks:
        call.networks.extend(networks)
        call.host["network_mode"] = networks[0].name


def _read_networks(details: dict[str, Any]) -> list[str] | None:
    settings = (details.get("NetworkSettings") or {}).get("Networks") or {}
    mode = _host_config(details).get("NetworkMode")
    names = sorted(settings) if settings else ([mode] if mode else [])
    return [n for n in names if n not in ("default", "bridge")] or None


def _extra_hosts(spec: ServiceSpec, _version: str | None) -> dict[str, str] | None:
    return dict(sorted(spec.extra_hosts.items())) or None


def _read(where: str, key: str) -> Callable[[dict[str, Any]], Any]:
    def read(details: dict[str, Any]) -> Any:
        item = (_config(details) if where == "container" else _host_config(details)).get(key)
        return item or None

    return read


INPUTS: tuple[Input, ...] = (
    # The first release's inputs: every container's label has them.
    Input("image", lambda spec, _v: spec.image_ref, lambda _v, _c: None, legacy=True),
    Input("command", _command, _apply_command, legacy=True, read=_read("container", "Cmd")),
    # The container gets env and secrets; only plain env is this input's hash.
    Input(
        "env",
        _env,
        lambda env, call: call.container.__setitem__("environment", dict(env)),
        hashed=lambda spec, _v: sorted(spec.env.items()),
        legacy=True,
    ),
    # The port pool, not a slot's ports: all slots are interchangeable.
    Input(
        "ports",
        _ports,
        _apply_ports,
        hashed=lambda _s, pool: [list(p) for p in pool],
        legacy=True,
    ),
    Input("labels", _labels, lambda _v, _c: None, legacy=True),
    Input(
        "restart_policy",
        lambda spec, _v: spec.restart_policy,
        _apply_restart,
        legacy=True,
        read=lambda d: (_host_config(d).get("RestartPolicy") or {}).get("Name") or None,
    ),
    # Added later: hashed only when set.
    Input(
        "secrets",
        lambda spec, _v: sorted(spec.secrets.items()) or None,
        lambda _v, _c: None,  # they go in with env
    ),
    Input("mounts", _mounts, _apply_mounts, hashed=_hashed_mounts),
    Input("config", _config_input, lambda _v, _c: None),  # its mount is among "mounts"
    # After "mounts": adds its bind to theirs.
    Input("logs", _file_logs, _apply_file_logs, hashed=lambda _s, value: list(value[:2])),
    Input(
        "logging",
        _logging,
        _apply_logging,
        hashed=lambda _s, value: [value[0], value[1]],
        read=lambda d: (_host_config(d).get("LogConfig") or {}).get("Type") or None,
    ),
    Input(
        "healthcheck",
        _healthcheck,
        _apply_healthcheck,
        hashed=lambda _s, value: [list(pair) for pair in value] if value else None,
    ),
    Input("resources", _resources, _apply_resources, read=_read_resources),
    Input("ulimits", _ulimits, _apply_ulimits, read=_read("host", "Ulimits")),
    Input("user", _field("user"), _into("container", "user"), read=_read("container", "User")),
    Input(
        "working_dir",
        _field("working_dir"),
        _into("container", "working_dir"),
        read=_read("container", "WorkingDir"),
    ),
    Input(
        "entrypoint",
        _field("entrypoint"),
        _into("container", "entrypoint"),
        read=_read("container", "Entrypoint"),
    ),
    Input(
        "read_only",
        _field("read_only"),
        _into("host", "read_only"),
        read=_read("host", "ReadonlyRootfs"),
    ),
    Input("tmpfs", _tmpfs, _into("host", "tmpfs"), read=_read("host", "Tmpfs")),
    Input("cap_add", _field("cap_add"), _into("host", "cap_add"), read=_read("host", "CapAdd")),
    Input("cap_drop", _field("cap_drop"), _into("host", "cap_drop"), read=_read("host", "CapDrop")),
    Input(
        "security_opt",
        _security,
        _apply_security,
        hashed=_hashed_security,
        read=_read("host", "SecurityOpt"),
    ),
    Input(
        "privileged",
        _field("privileged"),
        _into("host", "privileged"),
        read=_read("host", "Privileged"),
    ),
    Input("init", _field("init"), _into("host", "init"), read=_read("host", "Init")),
    Input(
        "stop_signal",
        _field("stop_signal"),
        _into("container", "stop_signal"),
        read=_read("container", "StopSignal"),
    ),
    Input(
        "stop_grace_period",
        _stop_grace,
        _into("container", "stop_timeout"),
        read=_read("container", "StopTimeout"),
    ),
    Input("networks", _networks, _apply_networks, hashed=_hashed_networks, read=_read_networks),
    Input(
        "extra_hosts",
        _extra_hosts,
        lambda value, call: _into("host", "extra_hosts")(
            [f"{name}:{ip}" for name, ip in value.items()] if value else None, call
        ),
        read=_read("host", "ExtraHosts"),
    ),
    Input("dns", _field("dns"), _into("host", "dns"), read=_read("host", "Dns")),
)

INPUT_NAMES = tuple(entry.name for entry in INPUTS)


@dataclass(frozen=True)
class ServiceInputs:
    """A service's inputs, valued and hashed once for all its slots."""

    values: Mapping[str, Any]
    # Per-input hashes of the inputs that are set (and every legacy one).
    digests: tuple[tuple[str, str], ...]
    spec_hash: str


def service_inputs(spec: ServiceSpec, config_version: str | None = None) -> ServiceInputs:
    """Value and hash every input of ``spec`` (see :data:`INPUTS`)."""
    values: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for entry in INPUTS:
        value = entry.value(spec, config_version)
        values[entry.name] = value
        hashed = entry.hashed(spec, value) if value is not None else None
        if hashed is not None or entry.legacy:
            digests[entry.name] = digest(hashed)
    return ServiceInputs(values, tuple(sorted(digests.items())), digest(digests))


def create_call(values: Mapping[str, Any], slot: int) -> CreateCall:
    """Docker's create call for slot ``slot``'s container: every input applied."""
    call = CreateCall(slot)
    for entry in INPUTS:
        entry.apply(values[entry.name], call)
    return call


def read_back(details: dict[str, Any]) -> dict[str, Any]:
    """The inputs a container's ``inspect`` shows set, by input name (for status)."""
    out = {}
    for entry in INPUTS:
        if entry.read is not None:
            value = entry.read(details)
            if value is not None:
                out[entry.name] = value
    return out
