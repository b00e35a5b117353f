"""The host-wide layout of every service: host paths and host ports that must not clash.

One service's spec can be valid on its own and still endanger another: a
config root that is (or lies inside) a data mount lets a container plant
symlinks where dockerops writes as root, and lets a config removal delete data;
two services sharing a config root swap each other's files; a writable data
directory holding another mount lets its container swap that mount for a
symlink, which dockerd then follows; overlapping host ports fail every rolling
update with "port is already allocated". These checks compare every service
of a host with every other, purely, from their validated specs.

Each problem names the pillar path of the service it is reported for, and the
other service concerned.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import ServiceSpec

PILLAR_KEY = "dockerops"


@dataclass(frozen=True)
class HostPath:
    """A host directory a service uses: its config root or a data mount."""

    service: str
    where: str  # the pillar path of the value
    path: str  # absolute, normalised
    kind: str  # "config root" or "data mount"
    writable: bool  # whether the service's containers can write to it

    def describe(self) -> str:
        mode = "writable " if self.writable and self.kind == "data mount" else ""
        return f"{mode}{self.kind} of service {self.service} ({self.where})"


@dataclass(frozen=True)
class PortRange:
    """The host ports one published port takes over all the service's slots."""

    service: str
    where: str
    host_ip: str
    protocol: str
    first: int
    last: int


@dataclass(frozen=True)
class VolumeUse:
    """A named Docker volume one data mount of a service uses."""

    service: str
    where: str
    name: str
    # (driver, sorted options); None when read from pillar that fails validation.
    made_with: tuple[str, tuple[tuple[str, str], ...]] | None
    writable: bool


@dataclass(frozen=True)
class Footprint:
    """What one service takes on the host: directories, port ranges and volumes."""

    service: str
    paths: tuple[HostPath, ...]
    ports: tuple[PortRange, ...]
    volumes: tuple[VolumeUse, ...] = ()


def footprint(spec: ServiceSpec) -> Footprint:
    """The host paths and port ranges of a validated spec."""
    base = f"{PILLAR_KEY}:services:{spec.name}"
    paths, volumes = [], []
    for i, mount in enumerate(spec.data):
        writable = not mount.read_only
        if mount.host is not None:
            paths.append(
                HostPath(spec.name, f"{base}:data:{i}:host", mount.host, "data mount", writable)
            )
            continue
        assert mount.volume is not None
        made_with = (mount.volume_driver, tuple(sorted(mount.driver_opts.items())))
        volumes.append(
            VolumeUse(spec.name, f"{base}:data:{i}:volume", mount.volume, made_with, writable)
        )
        if mount.bind_device is not None:
            # Its containers write in the bound directory as in a host path's.
            where = f"{base}:data:{i}:driver_opts:device"
            paths.append(HostPath(spec.name, where, mount.bind_device, "data mount", writable))
    if spec.config_root is not None:
        paths.append(
            HostPath(spec.name, f"{base}:config:root", spec.config_root, "config root", False)
        )
    if spec.log_dir is not None:
        # Its slots' containers write there, as into a writable data mount.
        paths.append(HostPath(spec.name, f"{base}:logs:path", spec.log_dir, "log directory", True))
    slots = spec.slots
    ports = tuple(
        PortRange(
            spec.name,
            f"{base}:ports:{i}:host",
            str(port.host_ip),
            port.protocol,
            port.host,
            port.host + slots - 1,
        )
        for i, port in enumerate(spec.ports)
        if port.host is not None
    )
    return Footprint(spec.name, tuple(paths), ports, tuple(volumes))


def raw_footprint(name: str, declared: Mapping[str, Any], default_config_root: str) -> Footprint:
    """The host paths a service that fails validation still names, read from
    pillar as it stands: its containers may still run (and write) there, so
    the other services are compared with them. Anything unreadable is skipped;
    a data mount is writable unless it says ``read_only: true``.
    """
    base = f"{PILLAR_KEY}:services:{name}"
    paths, volumes = [], []
    data = declared.get("data")
    for i, mount in enumerate(data if isinstance(data, list) else []):
        volume = mount.get("volume") if isinstance(mount, Mapping) else None
        if isinstance(volume, str):
            writable = mount.get("read_only") is not True
            volumes.append(VolumeUse(name, f"{base}:data:{i}:volume", volume, None, writable))
        host = mount.get("host") if isinstance(mount, Mapping) else None
        if isinstance(host, str) and host.startswith("/") and "\0" not in host:
            writable = mount.get("read_only") is not True
            paths.append(
                HostPath(name, f"{base}:data:{i}:host", _normal(host), "data mount", writable)
            )
    config = declared.get("config")
    if isinstance(config, Mapping):
        root = config.get("root")
        if root is None:
            root = default_config_root.format(service=name)
        if isinstance(root, str) and root.startswith("/") and "\0" not in root:
            paths.append(HostPath(name, f"{base}:config:root", _normal(root), "config root", False))
    return Footprint(name, tuple(paths), (), tuple(volumes))


def _normal(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def problems(
    footprints: Iterable[Footprint], allowed_host_paths: Sequence[str], only: str | None = None
) -> list[str]:
    """Every clash between the services' paths and ports, each reported for the
    service whose value it names (both sides of a clash are reported).

    ``only``: report just the problems of that service (the others are still
    compared with it).
    """
    by_service = problems_by_service(footprints, allowed_host_paths, only)
    return [problem for found in by_service.values() for problem in found]


def problems_by_service(
    footprints: Iterable[Footprint], allowed_host_paths: Sequence[str], only: str | None = None
) -> dict[str, list[str]]:
    """:func:`problems`, per service (every service has an entry, maybe empty)."""
    prints = list(footprints)
    paths = [p for f in prints for p in f.paths]
    ports = [p for f in prints for p in f.ports]
    out: dict[str, list[str]] = {f.service: [] for f in prints if only in (None, f.service)}
    for path in paths:
        if only in (None, path.service):
            found = out[path.service]
            found.extend(_own_path_problems(path, allowed_host_paths))
            found.extend(_path_problem(path, other) for other in paths if other is not path)
    for port in ports:
        if only in (None, port.service):
            found = out[port.service]
            found.extend(_port_problem(port, other) for other in ports if other is not port)
    volumes = [v for f in prints for v in f.volumes]
    for volume in volumes:
        if only in (None, volume.service):
            found = out[volume.service]
            found.extend(_volume_problem(volume, other) for other in volumes if other is not volume)
    return {service: [p for p in found if p] for service, found in out.items()}


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def _own_path_problems(path: HostPath, allowed: Sequence[str]) -> list[str]:
    if path.kind != "config root":
        return []
    for root in allowed:
        if _within(root, path.path):
            what = "is" if root == path.path else "contains"
            return [
                f"{path.where}: {path.path} {what} the allow-list root {root} "
                f"({PILLAR_KEY}:allowed_host_paths); a config root is a directory of its "
                "own below it, which dockerops owns"
            ]
    return []


def _path_problem(mine: HostPath, other: HostPath) -> str:
    """Why ``mine`` may not sit where it does beside ``other`` ('' when it may)."""
    inside, contains = _within(mine.path, other.path), _within(other.path, mine.path)
    if not (inside or contains):
        return ""
    both_data = mine.kind == other.kind == "data mount"
    if both_data:
        # A shared directory is fine; nesting lets the outer one's containers
        # swap the inner directory for a symlink that dockerd then follows.
        if mine.path == other.path:
            return ""
        if inside and other.writable:
            return (
                f"{mine.where}: {mine.path} lies inside {other.path}, the "
                f"{other.describe()}: its containers could replace {mine.path} with a symlink"
            )
        if contains and mine.writable:
            return (
                f"{mine.where}: {mine.path} contains {other.path}, the {other.describe()}: "
                f"containers of {mine.service} could replace it with a symlink"
            )
        return ""
    if mine.service == other.service and mine.kind == other.kind:
        return ""
    if mine.path == other.path:
        relation = "is also"
    elif inside:
        relation = "lies inside"
    else:
        relation = "contains"
    reason = (
        "dockerops writes and removes config roots as root and owns them alone"
        if "config root" in (mine.kind, other.kind)
        else ""
    )
    text = f"{mine.where}: {mine.path} {relation} {other.path}, the {other.describe()}"
    if mine.path == other.path:
        text = f"{mine.where}: {mine.path} is also the {other.describe()}"
    return f"{text}; {reason}" if reason else text


def _volume_problem(mine: VolumeUse, other: VolumeUse) -> str:
    """Why ``mine`` may not use the volume it names beside ``other`` ('' when it may)."""
    if mine.name != other.name:
        return ""
    if mine.made_with and other.made_with and mine.made_with != other.made_with:
        return (
            f"{mine.where}: volume {mine.name} is made with another driver or driver_opts "
            f"by {other.where}; a volume is made once, so both must say the same"
        )
    if mine.service != other.service and mine.writable and other.writable:
        # A backup's consistency stop, and a restore, act on one service: the
        # other would keep writing in the data being copied or swapped.
        return (
            f"{mine.where}: volume {mine.name} is also mounted writable by service "
            f"{other.service} ({other.where}); one service may write in a volume (mount it "
            "read_only in the others)"
        )
    return ""


def _overlap(a: str, b: str) -> bool:
    """Whether two host IPs can clash: equal, or either is a wildcard (0.0.0.0, ::)."""
    first, second = ip_address(a), ip_address(b)
    if first.is_unspecified or second.is_unspecified:
        return True
    mapped = [getattr(x, "ipv4_mapped", None) or x for x in (first, second)]
    return mapped[0] == mapped[1]


def _port_problem(mine: PortRange, other: PortRange) -> str:
    if mine.last < other.first or other.last < mine.first or mine.protocol != other.protocol:
        return ""
    if not _overlap(mine.host_ip, other.host_ip):
        return ""
    port = max(mine.first, other.first)
    whose = "another port of service" if mine.service == other.service else "service"
    return (
        f"{mine.where}: host port {mine.host_ip}:{port}/{mine.protocol} (of "
        f"{mine.first}-{mine.last}, one per slot: replicas and start-first spares) is also "
        f"taken by {whose} {other.service} ({other.where}: {other.host_ip}:"
        f"{other.first}-{other.last}/{other.protocol})"
    )
