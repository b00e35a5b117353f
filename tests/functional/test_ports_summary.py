"""Where a service answers now: after a start-first rollout its replicas publish
other host ports (slots 3-4, not 1-2); the state's comment and dockerops.status
say which."""

from __future__ import annotations

from typing import Any

import docker
import pytest

from dockerops.host import DockerHost
from tests.functional.helpers import http_get, service_pillar, state_return

pytestmark = pytest.mark.docker


def published(client: docker.DockerClient, service: str) -> list[str]:
    """What the service's running containers publish, as ``docker inspect`` says, by port."""
    found = []
    for container in client.containers.list(
        ignore_removed=True, filters={"label": f"io.dockerops.service={service}"}
    ):
        for container_port, bindings in (container.ports or {}).items():
            found += [(int(b["HostPort"]), b["HostIp"], container_port) for b in bindings or []]
    return [f"{ip}:{port}->{inner}" for port, ip, inner in sorted(found)]


def test_the_state_and_status_show_the_ports_that_answer_after_a_start_first_rollout(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    free_ports: Any,
) -> None:
    port = free_ports(4)  # 2 replicas, 2 start-first spares
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        replicas=2,
        ports=[{"container": 8080, "host": port}],
        update={"health_timeout": "15s"},
    )
    salt.set_pillar(pillar)
    first = state_return(salt.states.dockerops.running(name=service_name))
    assert first["result"] is True, first["comment"]
    assert first["comment"].endswith(
        f"\nports: 127.0.0.1:{port}->8080/tcp, 127.0.0.1:{port + 1}->8080/tcp"
    ), first["comment"]

    pillar["dockerops"]["services"][service_name]["tag"] = "1.1"
    salt.set_pillar(pillar)
    rolled = state_return(salt.states.dockerops.running(name=service_name))

    assert rolled["result"] is True, rolled["comment"]
    moved = published(docker_client, service_name)
    assert moved == [f"127.0.0.1:{port + 2}->8080/tcp", f"127.0.0.1:{port + 3}->8080/tcp"]
    assert rolled["comment"].endswith("\nports: " + ", ".join(moved)), rolled["comment"]
    assert [http_get(port + 2), http_get(port + 3)] == ["1.1\n", "1.1\n"]
    rows = salt.modules.dockerops.status(service_name)[service_name]
    assert [row["service_ports"] for row in rows] == [moved, moved]


def test_the_no_op_run_shows_the_ports_from_its_one_list_call(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    free_ports: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_ports(4)
    salt.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            replicas=2,
            ports=[{"container": 8080, "host": port}],
        )
    )
    assert salt.states.dockerops.running(name=service_name).result is True
    calls: list[str] = []
    for method in ("managed", "inspect"):
        real = getattr(DockerHost, method)

        def counted(
            self: DockerHost, *args: Any, _real: Any = real, _name: str = method, **kwargs: Any
        ) -> Any:
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(DockerHost, method, counted)

    noop = state_return(salt.states.dockerops.running(name=service_name))

    assert noop["result"] is True and noop["changes"] == {}, noop
    assert noop["comment"].endswith(
        f"\nports: 127.0.0.1:{port}->8080/tcp, 127.0.0.1:{port + 1}->8080/tcp"
    ), noop["comment"]
    assert calls == ["managed"]  # the plan's list call; the ports come from it
