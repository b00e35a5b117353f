"""A long-running minion keeps its resources bounded: connections to the Docker
daemon (jobs as threads, ``multiprocessing: False``, each with a fresh
``__context__``) and the rollout history of each service."""

from __future__ import annotations

import gc
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker.api.client
import pytest
from salt.loader import grain_funcs

from dockerops.history import History
from dockerops.records import DEFAULT_HISTORY_KEEP
from tests.functional.helpers import service_pillar

pytestmark = pytest.mark.docker

CALLS = 200


def daemon_connections(docker_url: str) -> int:
    """This process's sockets connected to the Docker daemon's unix socket."""
    path = docker_url.removeprefix("unix://")
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # closed since listed
        with sock:
            try:
                if sock.family == socket.AF_UNIX and sock.getpeername() == path:
                    count += 1
            except OSError:
                pass
    return count


@pytest.fixture
def deployed(salt, demo_images, service_name) -> str:
    """A one-replica service on 1.0."""
    salt.set_pillar(service_pillar(service_name, demo_images["repository"]))
    out = salt.modules.dockerops.apply(service_name)
    assert out[service_name]["result"] is True, out
    return service_name


@pytest.fixture
def version_requests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the GET /version a client makes to negotiate its API version."""
    made: list[int] = []
    real = docker.api.client.APIClient._retrieve_server_version

    def counting(self: Any) -> Any:
        made.append(1)
        return real(self)

    monkeypatch.setattr(docker.api.client.APIClient, "_retrieve_server_version", counting)
    return made


class ClientTracker:
    """Every DockerClient built while it watches, and which of them were closed."""

    def __init__(self) -> None:
        self.built: list[Any] = []  # held, so that no id is reused
        self.closed: set[int] = set()

    @property
    def open(self) -> int:
        return sum(id(built) not in self.closed for built in self.built)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> ClientTracker:
    tracker = ClientTracker()
    real_init, real_close = docker.DockerClient.__init__, docker.DockerClient.close

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        tracker.built.append(self)

    def close(self: Any) -> None:
        tracker.closed.add(id(self))
        real_close(self)

    monkeypatch.setattr(docker.DockerClient, "__init__", init)
    monkeypatch.setattr(docker.DockerClient, "close", close)
    return tracker


@pytest.fixture
def no_garbage_collector() -> Iterator[None]:
    """Only explicit closes free connections here: the collector runs when it likes
    (idle connections piled up to 98 in a minion between its runs)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def test_many_calls_in_one_process_keep_daemon_connections_bounded(
    salt, minion_opts, docker_url, deployed, version_requests, clients, no_garbage_collector
):
    name = deployed
    grain = grain_funcs(minion_opts)["dockerops.dockerops"]
    calls: list[Callable[[], Any]] = [
        lambda: salt.modules.dockerops.status(name),
        lambda: salt.modules.dockerops.services(),
        lambda: salt.modules.dockerops.version(),
        lambda: salt.modules.dockerops.apply(name),  # a no-op
        lambda: salt.modules.dockerops.rolling_update(name, tag="1.1", test=True),
        lambda: salt.modules.dockerops.restart(name, test=True),
        lambda: salt.modules.dockerops.history(name),
        grain,  # a grains refresh
    ]
    baseline = daemon_connections(docker_url)
    seen, left_open = [], []
    for number in range(CALLS):
        # A job run as a thread gets a fresh __context__.
        salt.context.clear()
        if number % 20 == 0:
            # A no-op state (a state call through the loaders takes a second or two).
            assert salt.states.dockerops.running(name=name).result is True
        else:
            calls[number % len(calls)]()
        seen.append(daemon_connections(docker_url))
        left_open.append(clients.open)

    assert max(seen) <= baseline + 2, f"connections to the daemon grew: {seen}"
    # Every client a call built was closed when the call ended.
    assert len(clients.built) > CALLS // 2  # most calls built one (history needs none)
    assert max(left_open) == 0, f"clients left open: {left_open}"
    # One version negotiation per daemon for the process, not one per call.
    assert len(version_requests) <= 1


def test_grains_close_their_client(minion_opts, docker_url, clients, no_garbage_collector):
    grain = grain_funcs(minion_opts)["dockerops.dockerops"]
    baseline = daemon_connections(docker_url)

    for _ in range(20):
        assert grain()["dockerops"]["docker"]["reachable"] is True
        assert clients.open == 0

    assert len(clients.built) == 20
    assert daemon_connections(docker_url) <= baseline


def test_history_stays_under_its_cap(salt, minion_opts, demo_images, deployed):
    name = deployed
    state_dir = minion_opts["dockerops.state_dir"]
    # A history grown long before the cap existed.
    path = Path(state_dir) / "history" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {"to": demo_images["1.0"], "result": True, "jid": "old"}
    with path.open("a") as handle:
        for number in range(DEFAULT_HISTORY_KEEP + 50):
            handle.write(json.dumps({**old, "number": number}) + "\n")

    out = salt.modules.dockerops.rolling_update(name, tag="1.1")
    assert out["result"] is True, out["comment"]

    lines = path.read_text().splitlines()
    assert len(lines) == DEFAULT_HISTORY_KEEP
    entries = salt.modules.dockerops.history(name, limit=10 * DEFAULT_HISTORY_KEEP)
    assert len(entries) == DEFAULT_HISTORY_KEEP
    assert entries[0]["to"] == demo_images["1.1"]  # newest first: the rollout just made
    assert History(state_dir, name).entries() == list(reversed(entries))
