"""ServiceSpec's ports check: duplicates, and every slot's host port (replicas and
start-first spares) valid and free of collisions, checked on the whole model."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.spec import load_service

WEB = "dockerops:services:web"
STOP_FIRST = {"order": "stop-first"}


def pillar(defaults: dict[str, Any] | None = None, **service: Any) -> dict[str, Any]:
    return {
        "dockerops": {
            "defaults": defaults or {},
            "services": {"web": {"image": "registry.example.com/web", **service}},
        }
    }


def problems(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_service(data, "web", overrides)
    return caught.value.problems


def port(container: int, host: int | None = None, **more: Any) -> dict[str, Any]:
    return {"container": container, "host": host, **more}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            pillar(ports=[port(80, 8080), port(80, 9090)]),
            f"{WEB}:ports: container port 80/tcp listed twice",
        ),
        (
            pillar(replicas=2, update=STOP_FIRST, ports=[port(80, 65535)]),
            f"{WEB}:ports: host port 65535 with 2 slots (replicas and start-first spares) "
            "runs past 65535",
        ),
        (  # start-first: one spare slot beyond the replica
            pillar(replicas=1, ports=[port(80, 65535)]),
            f"{WEB}:ports: host port 65535 with 2 slots (replicas and start-first spares) "
            "runs past 65535",
        ),
        (  # no replicas still counts one slot
            pillar(replicas=0, update=STOP_FIRST, ports=[port(80, 65534), port(81, 65534)]),
            f"{WEB}:ports: host port 127.0.0.1:65534/tcp is published twice "
            "(container ports 80 and 81)",
        ),
        (  # replica 2 of container port 80 takes replica 1's port of 81
            pillar(replicas=2, update=STOP_FIRST, ports=[port(80, 8080), port(81, 8081)]),
            f"{WEB}:ports: host port 127.0.0.1:8081/tcp is published twice "
            "(container ports 80 and 81)",
        ),
        (  # the ports, the replicas and the order each from another layer
            pillar(defaults={"ports": [port(80, 65535)]}, replicas=1),
            "dockerops:defaults:ports: host port 65535 with 2 slots (replicas and start-first "
            "spares) runs past 65535",
        ),
    ],
    ids=[
        "duplicate",
        "past-65535",
        "start-first-spare",
        "zero-replicas",
        "slots-collide",
        "from-defaults",
    ],
)
def test_port_problems_name_the_pillar_path(data: dict[str, Any], expected: str) -> None:
    assert problems(data) == [expected]


def test_ports_given_as_an_argument_are_reported_there() -> None:
    found = problems(pillar(replicas=3, update=STOP_FIRST), {"ports": [port(80, 65534)]})

    assert found == [
        "argument:ports: host port 65534 with 3 slots (replicas and start-first spares) "
        "runs past 65535"
    ]


@pytest.mark.parametrize(
    "ports",
    [
        [port(80, 65534)],  # replica 1 and its start-first spare
        [port(80, 8080), port(81, 8082)],
        [port(80, 8080), port(80, 8081, protocol="udp")],
        [port(80, 8080), port(81, 8080, host_ip="127.0.0.2")],
        [port(80), port(81)],  # not published
    ],
)
def test_ports_that_fit_every_slot(ports: list[dict[str, Any]]) -> None:
    assert load_service(pillar(replicas=1, ports=ports), "web").ports


def test_the_slots_are_counted_from_the_validated_replicas_and_update() -> None:
    # A replica count that is itself invalid is reported alone: no port check
    # runs on a guessed count.
    found = problems(pillar(replicas="many", ports=[port(80, 65535)]))

    assert found == [
        f"{WEB}:replicas: Input should be a valid integer, unable to parse string as an "
        "integer (got 'many')"
    ]
