"""dockerops.status: the ports a service answers on, and services_overview (pillar
services against what runs, and the containers of services this pillar does not
declare)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops.replicas import (
    ActualReplica,
    actual_from_list_entry,
    desired_replicas,
    published_of,
)
from dockerops.spec import ServiceSpec
from dockerops.status import service_ports, services_overview


class ListedHost:
    """A Docker host that answers the one list call ``services_overview`` makes."""

    def __init__(self, containers: list[ActualReplica]) -> None:
        self.containers = containers

    def managed(self, service: str | None = None) -> list[ActualReplica]:
        return [c for c in self.containers if service is None or c.service == service]


def foreign(
    name: str, state: str = "running", ports: list[dict[str, Any]] | None = None
) -> ActualReplica:
    """A dockerops container of service ``api``, which this pillar does not declare."""
    return actual_from_list_entry(
        {
            "Ports": ports or [],
            "Id": f"{name}-0123456789abcdef",
            "Names": [f"/{name}"],
            "Image": "sha256:0123456789ab",
            "Labels": {
                "io.dockerops.managed": "true",
                "io.dockerops.service": "api",
                "io.dockerops.replica": name.rsplit("-", 1)[1],
                "io.dockerops.image": "registry.example.com/api:2.0",
            },
            "State": state,
            "Status": "Up 2 hours" if state == "running" else "Exited (0) 1 hour ago",
        }
    )


def test_a_service_not_in_this_pillar_is_listed_as_such_with_nothing_pending(
    make_spec: Callable[..., ServiceSpec], actual: Callable[..., Any]
) -> None:
    web = make_spec(replicas=1)
    (slot,) = desired_replicas(web, None)
    host = ListedHost([actual(slot), foreign("api-1"), foreign("api-2", state="exited")])

    overview = services_overview(host, [web])  # type: ignore[arg-type]

    assert overview["api"] == {
        "image": "registry.example.com/api:2.0",
        "running": 1,
        "containers": ["api-1", "api-2"],
        "pending": [],
        "not_in_pillar": True,
        "note": "not managed by this pillar; `dockerops.remove api` removes it",
    }
    assert overview["web"]["in_sync"] is True
    assert overview["web"]["pending"] == []
    assert "not_in_pillar" not in overview["web"]


def bound(host_port: int, container_port: int = 8080, **more: Any) -> dict[str, Any]:
    """One ``Ports`` item of the container list API: a published port."""
    return {
        "IP": "127.0.0.1",
        "PrivatePort": container_port,
        "PublicPort": host_port,
        "Type": "tcp",
        **more,
    }


@pytest.mark.parametrize(
    ("ports", "published"),
    [
        ([], ()),
        ([{"PrivatePort": 8080, "Type": "tcp"}], ()),  # exposed, not published
        ([bound(18081), bound(18080)], ("127.0.0.1:18080->8080/tcp", "127.0.0.1:18081->8080/tcp")),
        ([bound(9000), bound(10000)], ("127.0.0.1:9000->8080/tcp", "127.0.0.1:10000->8080/tcp")),
        # Docker lists a port bound on every address once per address family.
        (
            [bound(18080, IP="0.0.0.0"), bound(18080, IP="::"), bound(18080, IP="0.0.0.0")],
            ("0.0.0.0:18080->8080/tcp", "[::]:18080->8080/tcp"),
        ),
        ([bound(5353, 53, Type="udp")], ("127.0.0.1:5353->53/udp",)),
    ],
)
def test_published_ports_from_the_list_call(
    ports: list[dict[str, Any]], published: tuple[str, ...]
) -> None:
    assert published_of({"Ports": ports}) == published
    assert foreign("api-1", ports=ports).published == published


def test_service_ports_are_those_its_running_containers_publish_by_slot() -> None:
    containers = [
        foreign("api-4", ports=[bound(18083), bound(19083, 9090)]),
        foreign("api-3", ports=[bound(18082), bound(19082, 9090)]),
        foreign("api-1", state="exited"),  # publishes nothing now
        foreign("api-2", state="restarting", ports=[bound(18081)]),
    ]

    assert service_ports(containers) == [
        "127.0.0.1:18082->8080/tcp",
        "127.0.0.1:19082->9090/tcp",
        "127.0.0.1:18083->8080/tcp",
        "127.0.0.1:19083->9090/tcp",
    ]
    assert service_ports([]) == []
