"""Small helpers shared by functional tests."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import docker


def service_pillar(name: str, repository: str, **fields: Any) -> dict[str, Any]:
    service = {"image": repository, "tag": "1.0", "replicas": 1, **fields}
    return {"dockerops": {"environment": "integration", "services": {name: service}}}


def containers(client: docker.DockerClient, service: str) -> dict[str, Any]:
    """name -> container, for one service's containers (running or not)."""
    # ignore_removed: docker-py inspects each listed container; one removed
    # meanwhile (a run retiring it while a test polls) is left out, not a 404.
    found = client.containers.list(
        all=True, filters={"label": f"io.dockerops.service={service}"}, ignore_removed=True
    )
    return {c.name: c for c in found}


def http_get(port: int, path: str = "/version", timeout: float = 20) -> str:
    """GET http://127.0.0.1:port/path, retrying until the service answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def state_return(ret: Any) -> dict[str, Any]:
    """The single state's return dict from a Loaders state call."""
    return {
        "result": ret.result,
        "changes": ret.changes,
        "comment": str(ret.comment),
    }


def container_events(
    client: docker.DockerClient, service: str, since: float
) -> list[tuple[str, str, str]]:
    """(action, container name, id) for one service's containers since ``since``, in order.

    Read from the daemon's event log, so tests can assert the order of what
    happened (a replica healthy before the next one is replaced) without timing.
    """
    events = client.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "label": f"io.dockerops.service={service}"},
    )
    return [
        (event["Action"], event["Actor"]["Attributes"].get("name", ""), event["Actor"]["ID"])
        for event in events
        if event.get("timeNano", 0) >= since * 1e9
    ]


def first(events: list[tuple[str, str, str]], action: str, name: str) -> int:
    """Index of the first event ``action`` of container ``name`` (ValueError if none)."""
    return next(i for i, event in enumerate(events) if event[:2] == (action, name))


def lowest_healthy(events: list[tuple[str, str, str]], healthy_at_start: set[str]) -> int:
    """Replay the events: the fewest healthy containers at any moment.

    A container counts from its ``health_status: healthy`` event (or from the
    start, for ``healthy_at_start`` ids) until it is killed, dies or is removed.
    """
    healthy = set(healthy_at_start)
    lowest = len(healthy)
    for action, _name, container_id in events:
        if action == "health_status: healthy":
            healthy.add(container_id)
        elif action in ("kill", "die", "stop", "destroy", "health_status: unhealthy"):
            healthy.discard(container_id)
        lowest = min(lowest, len(healthy))
    return lowest
