"""Sockets inside a replica's network namespace: /proc/net parsing, the
comparison with expect_ports, and reading a (fake) /proc safely against a
hostile, racing container."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockerops import netns
from dockerops.errors import NotFound, SpecError
from dockerops.inputs import INPUT_NAMES, service_inputs
from dockerops.netns import ReplicaSockets, Socket
from dockerops.replicas import ActualReplica
from dockerops.spec import ServiceSpec

# Real lines, from a replica listening on [::]:9999 and connected to itself.
HEADER_4 = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode"
)
TCP4_ESTABLISHED = (
    "   0: 0100007F:9A98 0100007F:270F 01 00000000:00000000 00:00000000 00000000     0        0 "
    "25151252 1 00000000d878d7d5 20 0 0 10 -1"
)
TCP6_LISTEN = (
    "   0: 00000000000000000000000000000000:270F 00000000000000000000000000000000:0000 0A "
    "00000000:00000000 00:00000000 00000000     0        0 25151066 1 00000000427ac8f3 100 0 0 10 0"
)
TCP6_MAPPED = (
    "   1: 0000000000000000FFFF00000100007F:270F 0000000000000000FFFF00000100007F:9A98 01 "
    "00000000:00000000 00:00000000 00000000     0        0 25151067 1 0000000046d067dd 20 0 0 10 -1"
)


def line(local: str, remote: str, state: str, number: int = 0) -> str:
    return (
        f"{number:4d}: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0 "
        "       0 12345 2 0000000000000000 0"
    )


@pytest.mark.parametrize(
    ("text", "byteorder", "address"),
    [
        ("0100007F", "little", "127.0.0.1"),
        ("00000000", "little", "0.0.0.0"),
        ("0A01A8C0", "little", "192.168.1.10"),
        ("7F000001", "big", "127.0.0.1"),
        ("00000000000000000000000001000000", "little", "::1"),
        ("00000000000000000000000000000000", "little", "::"),
        ("B80D0120000000000000000001000000", "little", "2001:db8::1"),
        ("20010DB8000000000000000000000001", "big", "2001:db8::1"),
        ("000080FE00000000FF020000FEDCBA98", "little", "fe80::2ff:98ba:dcfe"),
        # IPv4 peers of a dual-stack socket.
        ("0000000000000000FFFF00000100007F", "little", "::ffff:127.0.0.1"),
        ("0000000000000000FFFF00000A01A8C0", "little", "::ffff:192.168.1.10"),
    ],
)
def test_addresses_are_words_in_the_hosts_byte_order(
    text: str, byteorder: netns.ByteOrder, address: str
) -> None:
    assert netns.parse_address(text, byteorder) == address


@pytest.mark.parametrize(
    ("text", "proto", "family", "expected"),
    [
        (
            TCP4_ESTABLISHED,
            "tcp",
            4,
            Socket("tcp", "127.0.0.1", 39576, "127.0.0.1", 9999, "ESTABLISHED"),
        ),
        (TCP6_LISTEN, "tcp", 6, Socket("tcp", "::", 9999, "::", 0, "LISTEN")),
        (
            TCP6_MAPPED,
            "tcp",
            6,
            Socket("tcp", "::ffff:127.0.0.1", 9999, "::ffff:127.0.0.1", 39576, "ESTABLISHED"),
        ),
        (
            line("00000000:0035", "00000000:0000", "07"),
            "udp",
            4,
            Socket("udp", "0.0.0.0", 53, "0.0.0.0", 0, "CLOSE"),
        ),
        (
            line("0100007F:1F90", "0100007F:D431", "06"),
            "tcp",
            4,
            Socket("tcp", "127.0.0.1", 8080, "127.0.0.1", 54321, "TIME_WAIT"),
        ),
        (
            line("0100007F:1F90", "0100007F:D431", "0C"),
            "tcp",
            4,
            Socket("tcp", "127.0.0.1", 8080, "127.0.0.1", 54321, "NEW_SYN_RECV"),
        ),
        # Lower-case hex, and a line with nothing after the state.
        (
            "0: 0100007f:1f90 00000000:0000 0a",
            "tcp",
            4,
            Socket("tcp", "127.0.0.1", 8080, "0.0.0.0", 0, "LISTEN"),
        ),
    ],
)
def test_a_table_line_parses_to_its_socket(
    text: str, proto: Any, family: Any, expected: Socket
) -> None:
    assert netns.parse_line(text, proto, family, "little") == expected


@pytest.mark.parametrize(
    ("text", "family"),
    [
        (HEADER_4, 4),
        ("", 4),
        ("   ", 4),
        # The other family's width.
        (TCP4_ESTABLISHED, 6),
        (TCP6_LISTEN, 4),
        # Mixed widths on one line.
        (line("0100007F:1F90", "00000000000000000000000000000000:0000", "0A"), 4),
        # Cut short, a missing port, a missing state, a port too wide.
        ("   0: 0100007F:1F90 0100007F:D431", 4),
        ("   0: 0100007F 0100007F:D431 01", 4),
        ("   0: 0100007F:1F90 0100007F:D431", 4),
        ("   0: 0100007F:1F900 0100007F:D431 01", 4),
        # Not hex, an address of another length, no slot number.
        ("   0: 0100007G:1F90 0100007F:D431 01", 4),
        ("   0: 0100007F00:1F90 0100007F:D431 01", 4),
        ("0100007F:1F90 0100007F:D431 01 00000000:00000000", 4),
        # States the kernel does not have.
        (line("0100007F:1F90", "00000000:0000", "00"), 4),
        (line("0100007F:1F90", "00000000:0000", "0D"), 4),
        (line("0100007F:1F90", "00000000:0000", "FF"), 4),
        # Control characters, non-ASCII digits, a huge slot number's garbage.
        ("   0: 0100007F:1F90\x000100007F:D431 01", 4),
        ("   0: 0100007F:1F90 0100007F:D431 01\n", 4),
        ("   \u0661: 0100007F:1F90 0100007F:D431 01", 4),
        ("9" * 5000 + ": " + "F" * 5000, 4),
    ],
)
def test_malformed_lines_are_rejected_not_crashing(text: str, family: Any) -> None:
    assert netns.parse_line(text, "tcp", family, "little") is None


def test_a_table_counts_the_lines_it_rejects_after_the_header() -> None:
    text = "\n".join([HEADER_4, TCP4_ESTABLISHED, "garbage", "", "  1: 0100007F:1F90"]) + "\n"
    sockets, rejected = netns.parse_table(text, "tcp", 4, "little")

    assert [s.local for s in sockets] == ["127.0.0.1:39576"]
    assert rejected == 2


def sock(proto: Any, local: str, port: int, state: str, remote: str = "", rport: int = 0) -> Socket:
    return Socket(proto, local, port, remote or ("::" if ":" in local else "0.0.0.0"), rport, state)


@pytest.mark.parametrize(
    ("socket", "listening", "held"),
    [
        (sock("tcp", "0.0.0.0", 8080, "LISTEN"), True, False),
        (sock("tcp", "127.0.0.1", 8080, "ESTABLISHED", "127.0.0.1", 4000), False, True),
        (sock("tcp", "127.0.0.1", 8080, "CLOSE_WAIT", "127.0.0.1", 4000), False, True),
        (sock("tcp", "127.0.0.1", 8080, "SYN_SENT", "127.0.0.1", 4000), False, True),
        # Nobody holds these.
        (sock("tcp", "127.0.0.1", 8080, "TIME_WAIT", "127.0.0.1", 4000), False, False),
        (sock("tcp", "127.0.0.1", 8080, "NEW_SYN_RECV", "127.0.0.1", 4000), False, False),
        (sock("tcp", "0.0.0.0", 0, "CLOSE"), False, False),
        # UDP: bound and unconnected listens; connected is a connection.
        (sock("udp", "0.0.0.0", 53, "CLOSE"), True, False),
        (sock("udp", "::", 5353, "CLOSE"), True, False),
        (sock("udp", "10.0.0.2", 40000, "ESTABLISHED", "10.0.0.1", 53), False, True),
        (sock("udp", "0.0.0.0", 0, "CLOSE"), False, False),
    ],
)
def test_what_counts_as_listening_and_as_a_held_connection(
    socket: Socket, listening: bool, held: bool
) -> None:
    assert (socket.listening, socket.held) == (listening, held)


def test_listening_ports_are_distinct_by_protocol_then_port() -> None:
    sockets = [
        sock("tcp", "0.0.0.0", 9090, "LISTEN"),
        sock("tcp", "::", 9090, "LISTEN"),
        sock("tcp", "0.0.0.0", 8080, "LISTEN"),
        sock("udp", "0.0.0.0", 8080, "CLOSE"),
        sock("tcp", "127.0.0.1", 7000, "ESTABLISHED", "127.0.0.1", 9090),
    ]
    assert netns.listening_ports(sockets) == ["8080/tcp", "9090/tcp", "8080/udp"]


@pytest.mark.parametrize(
    ("sockets", "only"),
    [
        ([sock("tcp", "127.0.0.1", 8080, "LISTEN")], ["8080/tcp"]),
        ([sock("tcp", "::1", 8080, "LISTEN")], ["8080/tcp"]),
        ([sock("tcp", "::ffff:127.0.0.1", 8080, "LISTEN")], ["8080/tcp"]),
        ([sock("tcp", "127.0.0.1", 8080, "LISTEN"), sock("tcp", "::", 8080, "LISTEN")], []),
        ([sock("tcp", "0.0.0.0", 8080, "LISTEN")], []),
        ([sock("tcp", "172.17.0.2", 8080, "LISTEN")], []),
        (
            [sock("udp", "127.0.0.11", 53, "CLOSE"), sock("tcp", "0.0.0.0", 53, "LISTEN")],
            ["53/udp"],
        ),
    ],
)
def test_ports_only_on_loopback_are_named(sockets: list[Socket], only: list[str]) -> None:
    assert netns.loopback_only(sockets) == only


@pytest.mark.parametrize(
    ("expected", "found", "missing"),
    [
        ([], [], []),
        (["8080/tcp"], ["8080/tcp"], []),
        (["8080/tcp"], ["8080/udp"], ["8080/tcp"]),
        (["9090/udp", "8080/tcp"], [], ["9090/udp", "8080/tcp"]),
        (["8080/tcp", "5432/tcp"], ["5432/tcp", "22/tcp"], ["8080/tcp"]),
    ],
)
def test_missing_expected_keeps_the_expected_order(
    expected: list[str], found: list[str], missing: list[str]
) -> None:
    assert netns.missing_expected(expected, found) == missing


def replica(name: str, *sockets: Socket, **fields: Any) -> ReplicaSockets:
    defaults: dict[str, Any] = {
        "container": name,
        "id": "0123456789ab",
        "slot": int(name.rsplit("-", 1)[1]),
        "state": "running",
        "running": True,
        "sockets": sockets,
    }
    return ReplicaSockets(**{**defaults, **fields})


LISTEN_8080 = sock("tcp", "0.0.0.0", 8080, "LISTEN")


def test_the_report_names_each_running_replica_missing_an_expected_port() -> None:
    report = netns.port_report(
        "web",
        [
            replica("web-1", LISTEN_8080, sock("udp", "0.0.0.0", 9090, "CLOSE")),
            replica("web-2", LISTEN_8080),
            replica("web-3", state="exited", running=False),
        ],
        ["8080/tcp", "9090/udp"],
        3,
    )
    assert report["result"] is False
    assert report["comment"] == "web-2 does not listen on 9090/udp; 1 not running"
    assert report["replicas"]["web-1"]["missing"] == []
    assert report["replicas"]["web-2"]["missing"] == ["9090/udp"]
    assert report["replicas"]["web-3"] == {
        "slot": 3,
        "id": "0123456789ab",
        "state": "exited",
        "running": False,
        "note": "not running: nothing to read",
    }


def test_the_report_passes_when_every_running_replica_listens() -> None:
    held = sock("tcp", "127.0.0.1", 8080, "ESTABLISHED", "127.0.0.1", 40000)
    report = netns.port_report("web", [replica("web-1", LISTEN_8080, held)], ["8080/tcp"], 1)
    assert report["result"] is True
    assert (
        report["comment"] == "1 running replica(s) of web listen on every expected port (8080/tcp)"
    )
    assert report["replicas"]["web-1"] == {
        "slot": 1,
        "id": "0123456789ab",
        "state": "running",
        "running": True,
        "ports": ["8080/tcp"],
        "missing": [],
        "loopback_only": [],
        "listening": ["0.0.0.0:8080/tcp"],
        "connections": [
            {
                "proto": "tcp",
                "local": "127.0.0.1:8080",
                "remote": "127.0.0.1:40000",
                "state": "ESTABLISHED",
            }
        ],
        "connection_count": 1,
    }


@pytest.mark.parametrize(
    ("replicas", "expected", "wanted", "result"),
    [
        # Nothing runs while ports are expected from wanted replicas.
        ([], ["8080/tcp"], 2, False),
        ([replica("web-1", state="exited", running=False)], ["8080/tcp"], 1, False),
        # Nothing wanted (replicas: 0), or nothing expected.
        ([], ["8080/tcp"], 0, True),
        ([replica("web-1", state="exited", running=False)], [], 1, True),
        # A replica that cannot be read is not a pass.
        ([replica("web-1", error="process 7 is not in the container's cgroup")], [], 1, False),
    ],
)
def test_the_report_fails_when_nothing_can_vouch_for_the_ports(
    replicas: list[ReplicaSockets], expected: list[str], wanted: int, result: bool
) -> None:
    assert netns.port_report("web", replicas, expected, wanted)["result"] is result


def test_the_report_bounds_what_it_lists_but_counts_everything() -> None:
    held = [
        sock("tcp", "127.0.0.1", 8080, "ESTABLISHED", "127.0.0.1", 10000 + i) for i in range(500)
    ]
    listening = [sock("tcp", "0.0.0.0", 1000 + i, "LISTEN") for i in range(300)]
    row = netns.port_report(
        "web", [replica("web-1", *listening, *held, truncated=True)], ["1299/tcp"], 1
    )["replicas"]["web-1"]
    assert len(row["connections"]) == netns.CONNECTIONS_SHOWN
    assert row["connection_count"] == 500
    assert len(row["listening"]) == netns.LISTENING_SHOWN
    assert len(row["ports"]) == 300 and row["missing"] == []
    assert row["truncated"] is True


# --- reading a fake /proc ---------------------------------------------------------------------

CONTAINER_ID = "ab" * 32


class FakeProc:
    """A /proc tree: /proc/<pid>/{cgroup, ns/net, net/*} and the container's
    sandbox (the file its ns/net is a hard link of: the same inode)."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        self.proc.mkdir()
        self.sandbox = root / "netns-sandbox"
        self.sandbox.write_text("")

    def process(
        self, pid: int, tables: dict[str, str], container_id: str = CONTAINER_ID, netns: bool = True
    ) -> Path:
        base = self.proc / str(pid)
        (base / "net").mkdir(parents=True)
        (base / "ns").mkdir()
        (base / "cgroup").write_text(
            f"12:pids:/docker/{container_id}\n0::/system.slice/docker-{container_id}.scope\n"
        )
        if netns:
            os.link(self.sandbox, base / "ns" / "net")
        else:
            (base / "ns" / "net").write_text("")
        for name, text in tables.items():
            (base / "net" / name).write_text(text)
        return base


def details(pid: int, started: str = "2026-12-01T10:00:00Z", sandbox: str = "") -> dict[str, Any]:
    return {
        "Id": CONTAINER_ID,
        "Name": "/web-1",
        "State": {"Status": "running", "Running": pid > 0, "Pid": pid, "StartedAt": started},
        "NetworkSettings": {"SandboxKey": sandbox},
    }


def inspections(*answers: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """docker inspect answering ``answers`` in turn (the last one from then on)."""
    seen: list[str] = []

    def inspect(container_id: str) -> dict[str, Any]:
        seen.append(container_id)
        return answers[min(len(seen), len(answers)) - 1]

    inspect.calls = seen  # type: ignore[attr-defined]
    return inspect


TCP_TABLE = HEADER_4 + "\n" + line("00000000:1F90", "00000000:0000", "0A") + "\n"
TCP6_TABLE = "  sl  local_address ...\n" + TCP6_LISTEN + "\n"


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


def test_a_replica_is_read_through_its_process_and_checked_to_be_its_own(fake: FakeProc) -> None:
    fake.process(41, {"tcp": TCP_TABLE, "tcp6": TCP6_TABLE, "udp": "", "udp6": ""})
    inspect = inspections(details(41, sandbox=str(fake.sandbox)))

    got = netns.read_replica(inspect, "web-1", "web-1", 1, proc=str(fake.proc))

    assert got.error is None and got.running
    assert got.ports() == ["8080/tcp", "9999/tcp"]
    assert inspect.calls == ["web-1", "web-1"]  # type: ignore[attr-defined]


def test_missing_ipv6_tables_read_as_empty(fake: FakeProc) -> None:
    fake.process(41, {"tcp": TCP_TABLE, "udp": ""})
    got = netns.read_replica(
        inspections(details(41, sandbox=str(fake.sandbox))), "c", proc=str(fake.proc)
    )
    assert (got.error, got.ports()) == (None, ["8080/tcp"])


@pytest.mark.parametrize("pid", [0, -1, None, True, "41"])
def test_a_replica_without_a_process_is_not_running_and_proc_is_not_read(
    tmp_path: Path, pid: Any
) -> None:
    answer = details(0)
    answer["State"].update(Pid=pid, Running=True, Status="restarting")
    inspect = inspections(answer)

    # A /proc that cannot be opened: any read would fail the test.
    got = netns.read_replica(inspect, "c", proc=str(tmp_path / "missing"))

    assert (got.running, got.state, got.sockets, got.error) == (False, "restarting", (), None)
    assert inspect.calls == ["c"]  # type: ignore[attr-defined]


def test_a_stopped_replica_is_not_read(tmp_path: Path) -> None:
    answer = details(0)
    answer["State"]["Status"] = "exited"
    got = netns.read_replica(inspections(answer), "c", proc=str(tmp_path / "missing"))
    assert (got.running, got.state) == (False, "exited")


def test_a_pid_reused_by_another_process_is_not_reported_as_the_replicas(fake: FakeProc) -> None:
    """The replica restarted between inspect and read: pid 41 now belongs to
    another container. Its sockets are not reported; the new process is read."""
    fake.process(41, {"tcp": TCP_TABLE}, container_id="cd" * 32)
    fake.process(42, {"tcp": HEADER_4 + "\n" + line("00000000:0050", "00000000:0000", "0A")})
    old = details(41, sandbox=str(fake.sandbox))
    new = details(42, started="2026-12-01T10:00:05Z", sandbox=str(fake.sandbox))

    got = netns.read_replica(inspections(old, new), "c", proc=str(fake.proc))

    assert (got.error, got.ports()) == (None, ["80/tcp"])


def test_a_read_whose_process_changed_meanwhile_is_read_again(fake: FakeProc) -> None:
    """The read itself passed every check, but the container restarted before
    the second inspect: the first read is dropped, the new process read."""
    fake.process(41, {"tcp": TCP_TABLE})
    fake.process(42, {"tcp": HEADER_4 + "\n" + line("00000000:0050", "00000000:0000", "0A")})
    first = details(41, sandbox=str(fake.sandbox))
    second = details(42, started="2026-12-01T10:00:05Z", sandbox=str(fake.sandbox))

    got = netns.read_replica(inspections(first, second), "c", proc=str(fake.proc))

    assert got.ports() == ["80/tcp"]


def test_a_container_that_keeps_restarting_gives_an_error_not_a_guess(fake: FakeProc) -> None:
    fake.process(41, {"tcp": TCP_TABLE})
    answers = [
        details(41, started=f"2026-12-01T10:00:0{i}Z", sandbox=str(fake.sandbox)) for i in range(5)
    ]

    got = netns.read_replica(inspections(*answers), "c", proc=str(fake.proc))

    assert got.running and got.sockets == ()
    assert got.error == "its main process kept changing while it was read"


@pytest.mark.parametrize(
    ("setup", "error"),
    [
        (
            lambda fake: fake.process(41, {"tcp": TCP_TABLE}, container_id="cd" * 32),
            "process 41 is not in the container's cgroup",
        ),
        (
            # Only a prefix of the container id in the cgroup.
            lambda fake: fake.process(41, {"tcp": TCP_TABLE}, container_id="ab" * 31),
            "process 41 is not in the container's cgroup",
        ),
        (
            lambda fake: fake.process(41, {"tcp": TCP_TABLE}, netns=False),
            "process 41 is not in the container's network namespace",
        ),
        (
            lambda fake: fake.process(41, {}),
            "the process is gone (net/tcp",
        ),
        (
            # /proc/<pid> a symlink: never followed.
            lambda fake: (
                fake.process(7, {"tcp": TCP_TABLE}),
                (fake.proc / "41").symlink_to(fake.proc / "7"),
            ),
            "cannot open",
        ),
        (
            # A table that is a symlink: never followed.
            lambda fake: (
                fake.process(41, {}),
                (fake.proc / "41/net/tcp").symlink_to("/etc/hostname"),
            ),
            "net/tcp",
        ),
    ],
)
def test_a_process_that_is_not_the_replicas_own_is_refused(
    fake: FakeProc, setup: Callable[[FakeProc], Any], error: str
) -> None:
    setup(fake)
    got = netns.read_replica(
        inspections(details(41, sandbox=str(fake.sandbox))), "c", proc=str(fake.proc)
    )
    assert got.running and got.sockets == ()
    assert got.error is not None and error in got.error, got.error


def test_a_foreign_process_of_this_very_host_is_refused() -> None:
    """The real /proc: a pid the daemon gives that is not the container's (a
    daemon on another host, in another PID namespace, or a reused pid)."""
    got = netns.read_replica(inspections(details(os.getpid(), sandbox="/nonexistent")), "c")
    assert got.error is not None and "is not in the container's cgroup" in got.error


def test_a_bad_container_id_is_refused(fake: FakeProc) -> None:
    fake.process(41, {"tcp": TCP_TABLE})
    answer = details(41, sandbox=str(fake.sandbox))
    answer["Id"] = ".*"
    got = netns.read_replica(inspections(answer), "c", proc=str(fake.proc))
    assert got.error is not None and "no container id" in got.error


def test_a_huge_table_is_read_only_up_to_its_bound(
    fake: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns, "TABLE_BYTES_MAX", 1000)
    rows = [
        line(f"00000000:{port:04X}", "00000000:0000", "0A", n)
        for n, port in enumerate(range(1, 200))
    ]
    fake.process(41, {"tcp": HEADER_4 + "\n" + "\n".join(rows) + "\n"})

    got = netns.read_replica(
        inspections(details(41, sandbox=str(fake.sandbox))), "c", proc=str(fake.proc)
    )

    assert got.truncated is True and got.rejected == 0  # cut at a whole line
    assert 0 < len(got.sockets) < 10
    assert got.ports() == [f"{port}/tcp" for port in range(1, len(got.sockets) + 1)]


# --- expect_ports in pillar -------------------------------------------------------------------


def test_expect_ports_are_normalized_to_port_and_protocol(
    make_spec: Callable[..., ServiceSpec],
) -> None:
    spec = make_spec(expect_ports=[8080, "9090/udp", "5432/tcp", "53"])
    assert spec.expect_ports == ["8080/tcp", "9090/udp", "5432/tcp", "53/tcp"]
    assert make_spec().expect_ports == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            [8080, "x"],
            "dockerops:services:web:expect_ports:1: expected a port 1-65535, optionally with "
            "/tcp or /udp (got 'x')",
        ),
        ([0], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        (["65536"], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        ([True], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        (["8080/sctp"], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        (["8080/TCP "], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        ([8080.5], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        ([{"port": 80}], "dockerops:services:web:expect_ports:0: expected a port 1-65535"),
        ([8080, "8080/tcp"], "dockerops:services:web:expect_ports: 8080/tcp listed twice"),
        ("8080", "dockerops:services:web:expect_ports: Input should be a valid list"),
        ([80], None),
    ],
)
def test_bad_expect_ports_are_reported_with_their_pillar_path(
    make_spec: Callable[..., ServiceSpec], value: Any, problem: str | None
) -> None:
    if problem is None:
        make_spec(expect_ports=value)
        return
    with pytest.raises(SpecError) as err:
        make_spec(expect_ports=value)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_expect_ports_is_not_a_container_input(make_spec: Callable[..., ServiceSpec]) -> None:
    """Adding or changing expect_ports recreates nothing: no input, no hash moves."""
    assert "expect_ports" not in INPUT_NAMES
    plain = service_inputs(make_spec())
    for ports in ([8080], ["9090/udp", 8080]):
        made = service_inputs(make_spec(expect_ports=ports))
        assert (made.digests, made.spec_hash) == (plain.digests, plain.spec_hash)


class FakeHost:
    """What service_sockets needs of a DockerHost: the list call and inspect."""

    def __init__(self, replicas: list[ActualReplica], answers: dict[str, dict[str, Any]]) -> None:
        self.replicas, self.answers = replicas, answers

    def managed(self, service: str | None = None, kept: bool = False) -> list[ActualReplica]:
        return [r for r in self.replicas if r.service == service]

    def inspect(self, container_id: str) -> dict[str, Any]:
        if container_id not in self.answers:
            raise NotFound(f"inspecting container {container_id}: no such container")
        return self.answers[container_id]


def test_the_beacon_gets_each_replicas_listening_ports_by_container(fake: FakeProc) -> None:
    fake.process(41, {"tcp": TCP_TABLE})
    stopped = details(0)
    stopped["State"]["Status"] = "exited"
    host = FakeHost(
        [
            ActualReplica("id-3", "web-3", "web", 3, "web:1", "h"),  # removed meanwhile
            ActualReplica("id-2", "web-2", "web", 2, "web:1", "h"),
            ActualReplica("id-1", "web-1", "web", 1, "web:1", "h"),
            ActualReplica("id-9", "db-1", "db", 1, "db:1", "h"),
        ],
        {"id-1": details(41, sandbox=str(fake.sandbox)), "id-2": stopped},
    )

    found = netns.listening_by_replica(host, "web", proc=str(fake.proc))  # type: ignore[arg-type]

    assert found == {"web-1": ["8080/tcp"], "web-2": None}
    assert netns.missing_expected(["8080/tcp", "53/udp"], found["web-1"] or []) == ["53/udp"]
