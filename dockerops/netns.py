"""What a replica listens on and which connections it holds, inside its own
network namespace, read from the host.

The host's ``ss`` cannot see into a container's network namespace, and the
image may have no shell or tools to ``docker exec``. The kernel shows every
network namespace through ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}`` of any
process in it, so the container's main process (``State.Pid``) is enough.

The container is treated as hostile and racing: its main process may exit and
its pid be reused between ``docker inspect`` and the read. So the process is
opened once as a directory (reads through that descriptor fail once the
process is gone, whatever takes its pid), checked to be the container's (its
cgroup names the container, its network namespace is the container's sandbox),
and the container is inspected again after the read: a different ``Pid`` or
``StartedAt`` means the read may be someone else's and it is retried once.
Nothing under ``/proc/<pid>/root`` is touched, every read is bounded, and a
replica that is not running (``Pid`` 0) is reported as such, never read.

Parsing (pure, table-tested) is separate from reading (:func:`read_replica`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .errors import NotFound
from .host import DockerHost

PROC = "/proc"
# The tables read, with their protocol and address family.
TABLES: tuple[tuple[str, Literal["tcp", "udp"], Literal[4, 6]], ...] = (
    ("tcp", "tcp", 4),
    ("tcp6", "tcp", 6),
    ("udp", "udp", 4),
    ("udp6", "udp", 6),
)
# A table line is ~150 bytes (IPv4) or ~180 (IPv6): 4 MiB is ~25,000 sockets.
# A container may open many more to bloat every read; beyond this the rest is
# left unread and the report says ``truncated``.
TABLE_BYTES_MAX = 4 * 1024 * 1024
CGROUP_BYTES_MAX = 64 * 1024
# What a report lists per replica (counts are always complete).
LISTENING_SHOWN = 200
CONNECTIONS_SHOWN = 100

# include/net/tcp_states.h
TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
# Sockets no process holds: a closed connection's TIME_WAIT, a handshake the
# listener has not accepted, an unused socket.
_NOT_HELD = {"TIME_WAIT", "NEW_SYN_RECV", "CLOSE"}

# "  12: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 ..."
_LINE_RE = re.compile(
    r"[ ]*[0-9]+:[ ]+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})"
    r"[ ]+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})[ ]+([0-9A-Fa-f]{2})(?:[ ][ -~]*)?"
)
_CONTAINER_ID_RE = re.compile(r"[0-9a-f]{64}")

ByteOrder = Literal["little", "big"]
NATIVE: ByteOrder = "little" if sys.byteorder == "little" else "big"


# --- parsing (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Socket:
    """One line of a ``/proc/<pid>/net`` table."""

    proto: Literal["tcp", "udp"]
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str

    @property
    def local(self) -> str:
        return _endpoint(self.local_ip, self.local_port)

    @property
    def remote(self) -> str:
        return _endpoint(self.remote_ip, self.remote_port)

    @property
    def port_key(self) -> str:
        """``8080/tcp``: the form ``expect_ports`` is written in."""
        return f"{self.local_port}/{self.proto}"

    @property
    def listening(self) -> bool:
        """A TCP listener, or a UDP socket bound to a port and connected to no peer."""
        if self.local_port == 0:
            return False
        if self.proto == "tcp":
            return self.state == "LISTEN"
        return self.remote_port == 0 and self.state == "CLOSE"

    @property
    def held(self) -> bool:
        """A connection the container holds (TCP not listening, or connected UDP)."""
        if self.proto == "tcp":
            return self.state not in _NOT_HELD and self.state != "LISTEN"
        return self.remote_port != 0

    @property
    def loopback(self) -> bool:
        address = ipaddress.ip_address(self.local_ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            return address.ipv4_mapped.is_loopback
        return address.is_loopback

    def connection(self) -> dict[str, str]:
        return {
            "proto": self.proto,
            "local": self.local,
            "remote": self.remote,
            "state": self.state,
        }


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_address(text: str, byteorder: ByteOrder = NATIVE) -> str:
    """The kernel's hex address as text: IPv4 is one 32-bit word, IPv6 four,
    each printed as a number in the host's byte order (``0100007F`` is
    127.0.0.1 on a little-endian host). ValueError when it is neither."""
    if len(text) not in (8, 32):
        raise ValueError(f"not an address: {text!r}")
    raw = b"".join(int(text[i : i + 8], 16).to_bytes(4, byteorder) for i in range(0, len(text), 8))
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        # An IPv4 peer of a dual-stack socket, shown as Python 3.13 does.
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def parse_line(
    line: str, proto: Literal["tcp", "udp"], family: Literal[4, 6], byteorder: ByteOrder = NATIVE
) -> Socket | None:
    """One table line as a :class:`Socket`; None for anything else (the header,
    a malformed or unknown line, an address of the other family)."""
    match = _LINE_RE.fullmatch(line)
    if not match:
        return None
    local, local_port, remote, remote_port, state = match.groups()
    width = 8 if family == 4 else 32
    if len(local) != width or len(remote) != width:
        return None
    state_name = TCP_STATES.get(int(state, 16))
    if state_name is None:
        return None
    return Socket(
        proto=proto,
        local_ip=parse_address(local, byteorder),
        local_port=int(local_port, 16),
        remote_ip=parse_address(remote, byteorder),
        remote_port=int(remote_port, 16),
        state=state_name,
    )


def parse_table(
    text: str, proto: Literal["tcp", "udp"], family: Literal[4, 6], byteorder: ByteOrder = NATIVE
) -> tuple[list[Socket], int]:
    """Every socket of one table, and how many lines after the header were rejected."""
    sockets, rejected = [], 0
    for number, line in enumerate(text.splitlines()):
        found = parse_line(line, proto, family, byteorder)
        if found is not None:
            sockets.append(found)
        elif number > 0 and line.strip():
            rejected += 1
    return sockets, rejected


def listening_ports(sockets: Iterable[Socket]) -> list[str]:
    """The distinct ``port/proto`` listened on, by protocol then port."""
    found = {(s.proto, s.local_port) for s in sockets if s.listening}
    return [f"{port}/{proto}" for proto, port in sorted(found)]


def loopback_only(sockets: Iterable[Socket]) -> list[str]:
    """The ports listened on only on a loopback address: nothing outside the
    container reaches them, not even through a published port."""
    on: dict[tuple[str, int], bool] = {}
    for sock in sockets:
        if sock.listening:
            key = (sock.proto, sock.local_port)
            on[key] = on.get(key, True) and sock.loopback
    return [f"{port}/{proto}" for (proto, port), only in sorted(on.items()) if only]


def missing_expected(expected: Iterable[str], found: Iterable[str]) -> list[str]:
    """The ``expect_ports`` entries (``port/proto``, as the spec normalizes
    them) not among ``found`` (:func:`listening_ports`), in ``expected``'s order."""
    there = set(found)
    return [port for port in expected if port not in there]


# --- reading from the host --------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaSockets:
    """What one replica's network namespace holds, or why it could not be read."""

    container: str
    id: str
    slot: int | None
    state: str
    running: bool
    sockets: tuple[Socket, ...] = ()
    # Tables cut at TABLE_BYTES_MAX: ports may be missing from ``sockets``.
    truncated: bool = False
    # Lines that did not parse (none from a real kernel).
    rejected: int = 0
    error: str | None = None

    @property
    def was_read(self) -> bool:
        return self.running and self.error is None

    def ports(self) -> list[str]:
        return listening_ports(self.sockets)


class _Changed(Exception):
    """The process read may not be the container's any more: inspect again."""


Inspect = Callable[[str], dict[str, Any]]


def read_replica(
    inspect: Inspect,
    container_id: str,
    name: str = "",
    slot: int | None = None,
    proc: str = PROC,
) -> ReplicaSockets:
    """Read one replica's sockets from ``proc``, checked to be its own.

    ``inspect(id)`` is ``docker inspect``. A replica whose main process
    changes while it is read is read again once; one not running is returned
    with ``running: False``. Raises :class:`NotFound` when the container is gone.
    """
    problem = "its main process kept changing while it was read"
    for _attempt in range(2):
        before = inspect(container_id)
        base = ReplicaSockets(
            container=name or str(before.get("Name") or "").lstrip("/"),
            id=str(before.get("Id") or container_id)[:12],
            slot=slot,
            state=str((before.get("State") or {}).get("Status") or "unknown"),
            running=False,
        )
        pid = _running_pid(before)
        if pid is None:
            return base
        texts: list[str] | None = None
        try:
            texts, truncated = _read_tables(proc, pid, before)
        except _Changed as why:
            problem = str(why)
        if _generation(inspect(container_id)) != _generation(before):
            # Stopped or restarted meanwhile: what was read may be another
            # process's, and a failed check may be the race's. Read afresh.
            problem = "its main process kept changing while it was read"
            continue
        if texts is None:  # the same process throughout: the check failed for real
            return _replace(base, running=True, error=problem)
        sockets: list[Socket] = []
        rejected = 0
        for (_table, proto, family), text in zip(TABLES, texts, strict=True):
            found, bad = parse_table(text, proto, family)
            sockets.extend(found)
            rejected += bad
        return _replace(
            base, running=True, sockets=tuple(sockets), truncated=truncated, rejected=rejected
        )
    return _replace(base, running=True, error=problem)


def _replace(base: ReplicaSockets, **changes: Any) -> ReplicaSockets:
    fields = {**base.__dict__, **changes}
    return ReplicaSockets(**fields)


def _running_pid(details: dict[str, Any]) -> int | None:
    """The main process's pid, or None when there is none to read (stopped,
    restarting, paused between runs: Docker reports Pid 0)."""
    state = details.get("State") or {}
    pid = state.get("Pid")
    if not state.get("Running") or isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    return pid


def _generation(details: dict[str, Any]) -> tuple[Any, ...]:
    """What changes whenever the container's main process is another one."""
    state = details.get("State") or {}
    return (state.get("Running"), state.get("Pid"), state.get("StartedAt"))


def _read_tables(proc: str, pid: int, details: dict[str, Any]) -> tuple[list[str], bool]:
    """The four tables' text, read through one descriptor of ``/proc/<pid>``
    after checking that process is the container's, in its sandbox."""
    container_id = str(details.get("Id") or "")
    if not _CONTAINER_ID_RE.fullmatch(container_id):
        raise _Changed(f"docker inspect gave no container id ({container_id[:80]!r})")
    sandbox = str((details.get("NetworkSettings") or {}).get("SandboxKey") or "")
    try:
        process = os.open(
            os.path.join(proc, str(pid)),
            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
        )
    except OSError as err:
        raise _Changed(f"cannot open {proc}/{pid}: {err.strerror}") from None
    try:
        cgroup, _cut = _read_at(process, "cgroup", CGROUP_BYTES_MAX)
        if not re.search(rf"(?<![0-9a-f]){container_id}(?![0-9a-f])", cgroup):
            raise _Changed(
                f"process {pid} is not in the container's cgroup (is the Docker daemon on "
                "another host, or in another PID namespace?)"
            )
        if not sandbox.startswith("/"):
            raise _Changed("the container has no network namespace of its own (SandboxKey)")
        try:
            mine = os.stat("ns/net", dir_fd=process)
            theirs = os.stat(sandbox)
        except OSError as err:
            raise _Changed(f"cannot compare network namespaces: {err}") from None
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            raise _Changed(f"process {pid} is not in the container's network namespace")
        texts, truncated = [], False
        for table, _proto, _family in TABLES:
            try:
                text, cut = _read_at(process, f"net/{table}", TABLE_BYTES_MAX)
            except _Changed:
                if table == "tcp":  # always there while the process lives
                    raise
                text, cut = "", False  # IPv6 disabled: no tcp6/udp6
            texts.append(text)
            truncated = truncated or cut
        return texts, truncated
    finally:
        os.close(process)


def _read_at(directory: int, path: str, limit: int) -> tuple[str, bool]:
    """At most ``limit`` bytes of ``path`` under ``directory``, cut at the last
    whole line; and whether there was more."""
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ESRCH):
            raise _Changed(f"the process is gone ({path}: {err.strerror})") from None
        raise _Changed(f"cannot read {path}: {err.strerror}") from None
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(handle, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise _Changed(f"cannot read {path}: {err.strerror}") from None
    finally:
        os.close(handle)
    data = b"".join(chunks)
    if len(data) <= limit:
        return data.decode("ascii", "replace"), False
    data = data[:limit]
    return data[: data.rfind(b"\n") + 1].decode("ascii", "replace"), True


def service_sockets(host: DockerHost, service: str, proc: str = PROC) -> list[ReplicaSockets]:
    """Every replica of ``service`` on ``host``, by slot; one removed while
    being read is left out."""
    out = []
    for container in sorted(host.managed(service), key=lambda c: (c.index or 0, c.name)):
        try:
            out.append(
                read_replica(host.inspect, container.id, container.name, container.index, proc)
            )
        except NotFound:
            continue
    return out


def listening_by_replica(
    host: DockerHost, service: str, proc: str = PROC
) -> dict[str, list[str] | None]:
    """Container name -> the ``port/proto`` it listens on; None when it is not
    running or could not be read (for the beacon: compare with
    :func:`missing_expected`)."""
    return {
        r.container: r.ports() if r.was_read else None for r in service_sockets(host, service, proc)
    }


# --- the report (pure) ------------------------------------------------------------------------


def port_report(
    service: str, replicas: list[ReplicaSockets], expected: list[str], wanted: int
) -> dict[str, Any]:
    """``dockerops.check_ports``' return: per replica what it listens on and
    holds, and ``missing`` expected ports. ``result`` is False when a running
    replica misses an expected port or cannot be read, or when ports are
    expected, ``wanted`` replicas are wanted and none runs."""
    rows: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for replica in replicas:
        row: dict[str, Any] = {
            "slot": replica.slot,
            "id": replica.id,
            "state": replica.state,
            "running": replica.running,
        }
        rows[replica.container] = row
        if not replica.running:
            row["note"] = "not running: nothing to read"
            continue
        if replica.error is not None:
            row["error"] = replica.error
            problems.append(f"{replica.container}: cannot read its sockets: {replica.error}")
            continue
        listening = [s for s in replica.sockets if s.listening]
        held = [s for s in replica.sockets if s.held]
        ports = listening_ports(listening)
        missing = missing_expected(expected, ports)
        row.update(
            {
                "ports": ports,
                "missing": missing,
                "loopback_only": loopback_only(listening),
                "listening": sorted({f"{s.local}/{s.proto}" for s in listening})[:LISTENING_SHOWN],
                "connections": [s.connection() for s in held[:CONNECTIONS_SHOWN]],
                "connection_count": len(held),
            }
        )
        if replica.truncated:
            row["truncated"] = True
        if replica.rejected:
            row["unparsed_lines"] = replica.rejected
        if missing:
            problems.append(f"{replica.container} does not listen on {', '.join(missing)}")
    running = [r for r in replicas if r.running]
    if expected and wanted and not running:
        problems.append(
            f"no replica of {service} runs, so nothing listens on {', '.join(expected)}"
        )
    if problems:
        comment = "; ".join(problems)
    elif expected:
        comment = (
            f"{len(running)} running replica(s) of {service} listen on every expected port "
            f"({', '.join(expected)})"
        )
    else:
        comment = f"read {len(running)} running replica(s) of {service} (no expect_ports)"
    stopped = len(replicas) - len(running)
    if stopped:
        comment += f"; {stopped} not running"
    return {"result": not problems, "comment": comment, "expected": expected, "replicas": rows}


def check_ports(
    host: DockerHost, service: str, expected: list[str], wanted: int, proc: str = PROC
) -> dict[str, Any]:
    """Read every replica of ``service`` and compare with ``expected``
    (:func:`port_report`)."""
    return port_report(service, service_sockets(host, service, proc), expected, wanted)
