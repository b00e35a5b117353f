"""dockerops.status: the ports a service answers on, and services_overview (pillar
services against what runs, and the containers of services this pillar does not
declare)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops.converge import known_secrets
from dockerops.errors import NotFound
from dockerops.replicas import (
    ActualReplica,
    actual_from_list_entry,
    desired_replicas,
    published_of,
)
from dockerops.spec import ServiceSpec
from dockerops.status import (
    replica_status,
    service_ports,
    services_grain,
    services_overview,
)


class ListedHost:
    """A Docker host that answers the one list call ``services_overview`` makes."""

    def __init__(self, containers: list[ActualReplica]) -> None:
        self.containers = containers

    def managed(self, service: str | None = None, kept: bool = False) -> list[ActualReplica]:
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


class RetiringHost(ListedHost):
    """Lists every container, but the first one listed is removed (a rollout
    retiring it) before it can be inspected."""

    def __init__(self, containers: list[ActualReplica], details: dict[str, Any]) -> None:
        super().__init__(containers)
        self.details = details
        self.inspected: list[str] = []

    def inspect(self, container_id: str) -> dict[str, Any]:
        self.inspected.append(container_id)
        if container_id == self.containers[0].id:
            raise NotFound(f"inspecting container {container_id[:12]}: No such container")
        return self.details


def test_status_leaves_out_a_replica_removed_between_the_list_and_its_inspect(
    make_spec: Callable[..., ServiceSpec], actual: Callable[..., Any], tmp_path: Any
) -> None:
    first, second = desired_replicas(make_spec(replicas=2), None)
    listed = [
        actual(first, ports=[{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8081}]),
        actual(second, ports=[{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8082}]),
    ]
    details = {"State": {"Status": "running", "Running": True}, "Config": {}, "HostConfig": {}}
    host = RetiringHost(listed, details)

    rows = replica_status(host, None, str(tmp_path))  # type: ignore[arg-type]

    assert sorted(host.inspected) == sorted([listed[0].id, listed[1].id])
    assert [row["container"] for row in rows["web"]] == [second.name]
    # The ports it answered on are gone with it.
    assert rows["web"][0]["service_ports"] == service_ports([listed[1]])
    assert "8081" not in " ".join(rows["web"][0]["service_ports"])


def test_secret_values_are_read_from_the_containers_still_there(
    make_spec: Callable[..., ServiceSpec], actual: Callable[..., Any]
) -> None:
    spec = make_spec(replicas=2, secrets={"TOKEN": "now-s3cret"})
    first, second = desired_replicas(spec, None)
    details = {"Config": {"Env": ["TOKEN=rotated-0ld"], "Labels": second.docker_labels()}}
    host = RetiringHost([actual(first), actual(second)], details)

    assert sorted(known_secrets(host, spec)) == ["now-s3cret", "rotated-0ld"]  # type: ignore[arg-type]


def test_the_services_grain_says_the_image_and_running_replicas_per_service(
    make_spec: Callable[..., ServiceSpec], actual: Callable[..., Any]
) -> None:
    one, two, three = desired_replicas(make_spec(replicas=3), None)
    (new,) = desired_replicas(make_spec(replicas=1, tag="1.5"), None)
    containers = [
        actual(one),
        actual(two),
        actual(three, state="exited"),
        actual(new, name="web-4", container_id="web-4-0123456789abcdef"),
        foreign("api-1", state="exited"),
    ]
    assert services_grain(containers) == {
        # A rollout under way: the image most replicas run, and all of them.
        "web": {
            "image": "registry.example.com/web:1.4",
            "replicas": 3,
            "images": ["registry.example.com/web:1.4", "registry.example.com/web:1.5"],
        },
        # None runs: the image its containers have.
        "api": {"image": "registry.example.com/api:2.0", "replicas": 0},
    }
    assert services_grain([actual(one)]) == {
        "web": {"image": "registry.example.com/web:1.4", "replicas": 1}
    }
