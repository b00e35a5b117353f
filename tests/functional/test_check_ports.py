"""dockerops.check_ports reads what a replica listens on and holds inside its
own network namespace, from the host, for an image with no shell and no tools:
a port opened inside and published nowhere, an expect_ports entry that is not
listening, a connection the replica holds to itself, a stopped replica."""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest

from tests.functional.helpers import containers, service_pillar
from tests.support import noshell
from tests.support.salt import Masterless

pytestmark = pytest.mark.docker

PORT = 9999
# The replica's one process: a server on PORT (inside only), each connection
# handed to a sleep that holds it open.
LISTEN = [noshell.TOOL, "nc", "-ll", "-p", str(PORT), "-e", noshell.TOOL, "sleep", "600"]


@pytest.fixture(scope="module")
def noshell_image(docker_client: docker.DockerClient) -> str:
    return noshell.ensure_image(docker_client)


def run_service(salt: Any, name: str, image: str, replicas: int, expect_ports: list[Any]) -> None:
    repository, tag = image.rsplit(":", 1)
    salt.set_pillar(
        service_pillar(
            name,
            repository,
            tag=tag,
            replicas=replicas,
            command=LISTEN,
            expect_ports=expect_ports,
            update={"health_timeout": "20s"},
        )
    )
    ret = salt.states.dockerops.running(name=name)
    assert ret.result is True, ret.comment


def test_a_port_opened_inside_an_image_without_a_shell_is_reported(
    salt: Any, docker_client: docker.DockerClient, noshell_image: str, service_name: str
) -> None:
    run_service(salt, service_name, noshell_image, 1, [PORT, "9998/tcp", f"{PORT}/udp"])
    container = containers(docker_client, service_name)[f"{service_name}-1"]
    # No shell to exec into, and the port is neither published nor exposed.
    no_shell = docker_client.api.exec_create(container.id, ["sh", "-c", "true"])
    output = docker_client.api.exec_start(no_shell["Id"])
    assert b"executable file not found" in output
    assert docker_client.api.exec_inspect(no_shell["Id"])["ExitCode"] != 0
    assert not container.attrs["NetworkSettings"]["Ports"]

    report = salt.modules.dockerops.check_ports(service_name)

    row = report["replicas"][f"{service_name}-1"]
    assert row["running"] is True and row["slot"] == 1
    assert row["ports"] == [f"{PORT}/tcp"]
    assert row["listening"] == [f"[::]:{PORT}/tcp"]
    assert row["missing"] == ["9998/tcp", f"{PORT}/udp"]
    assert report["expected"] == [f"{PORT}/tcp", "9998/tcp", f"{PORT}/udp"]
    assert report["result"] is False
    assert report["comment"] == f"{service_name}-1 does not listen on 9998/tcp, {PORT}/udp"

    # Only what listens expected: a pass. expect_ports recreated nothing.
    run_service(salt, service_name, noshell_image, 1, [PORT])
    assert containers(docker_client, service_name)[f"{service_name}-1"].id == container.id
    report = salt.modules.dockerops.check_ports(service_name)
    assert report["result"] is True, report["comment"]
    assert report["replicas"][f"{service_name}-1"]["missing"] == []


def test_a_held_connection_shows_and_a_stopped_replica_is_not_read(
    salt: Any, docker_client: docker.DockerClient, noshell_image: str, service_name: str
) -> None:
    run_service(salt, service_name, noshell_image, 2, [PORT])
    found = containers(docker_client, service_name)
    first, second = found[f"{service_name}-1"], found[f"{service_name}-2"]
    # A second process in the first replica connects to its own server on
    # 127.0.0.1 and holds the connection: all inside its network namespace.
    client = docker_client.api.exec_create(
        first.id, [noshell.TOOL, "nc", "127.0.0.1", str(PORT), "-e", noshell.TOOL, "sleep", "600"]
    )
    docker_client.api.exec_start(client["Id"], detach=True)
    second.stop(timeout=1)

    deadline = time.monotonic() + 15
    while True:
        report = salt.modules.dockerops.check_ports(service_name)
        row = report["replicas"][f"{service_name}-1"]
        if row["connection_count"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert row["connection_count"] == 2, row
    by_side = {c["remote"].rsplit(":", 1)[1] == str(PORT): c for c in row["connections"]}
    client_side, server_side = by_side[True], by_side[False]
    assert client_side["local"].startswith("127.0.0.1:")
    assert client_side == {
        "proto": "tcp",
        "local": client_side["local"],
        "remote": f"127.0.0.1:{PORT}",
        "state": "ESTABLISHED",
    }
    # The server's dual-stack socket sees an IPv4-mapped peer: the client's port.
    client_port = client_side["local"].rsplit(":", 1)[1]
    assert server_side == {
        "proto": "tcp",
        "local": f"[::ffff:127.0.0.1]:{PORT}",
        "remote": f"[::ffff:127.0.0.1]:{client_port}",
        "state": "ESTABLISHED",
    }
    assert report["replicas"][f"{service_name}-2"] == {
        "slot": 2,
        "id": second.id[:12],
        "state": "exited",
        "running": False,
        "note": "not running: nothing to read",
    }
    # The running replica listens: a pass, saying one is not running.
    assert report["result"] is True, report["comment"]
    assert report["comment"].endswith("; 1 not running")

    # No replica running while a port is expected: a failure.
    first.stop(timeout=1)
    report = salt.modules.dockerops.check_ports(service_name)
    assert report["result"] is False
    assert f"no replica of {service_name} runs" in report["comment"]


def test_salt_calls_exit_code_says_whether_the_expected_ports_listen(
    salt: Any,
    tmp_path_factory: pytest.TempPathFactory,
    docker_url: str,
    noshell_image: str,
    service_name: str,
) -> None:
    """What a monitoring check runs: ``salt-call dockerops.check_ports web``."""
    # A minion of its own: the session's masterless minion is synced by
    # test_salt_call, which checks what its first sync brings.
    root = tmp_path_factory.mktemp("check-ports")
    masterless = Masterless(
        root, "int-ports", docker_url, **{"dockerops.state_dir": str(root / "state")}
    )
    synced = masterless.run("saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    run_service(salt, service_name, noshell_image, 1, [PORT])
    repository, tag = noshell_image.rsplit(":", 1)

    for expect_ports, returncode in (([PORT, "9998/tcp"], 1), ([PORT], 0)):
        masterless.set_pillar(
            service_pillar(
                service_name, repository, tag=tag, command=LISTEN, expect_ports=expect_ports
            )
        )
        called = masterless.run("dockerops.check_ports", service_name)
        assert called.returncode == returncode, called.stdout + called.stderr
        assert called.data["result"] is (returncode == 0)
        assert called.data["replicas"][f"{service_name}-1"]["ports"] == [f"{PORT}/tcp"]
