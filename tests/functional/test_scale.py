"""What a state run asks the daemon, and first deploys that overlap.

A real ``salt-call --local`` highstate of the formula, its Docker requests
counted by a proxy in front of the daemon's socket (tests/support/dockerproxy.py):
a no-op run lists the host's containers once, whatever the number of services;
services with no replica running start in parallel, each reporting its own
health, and the metrics are written once they all finished.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from tests.support.dockerproxy import DockerProxy
from tests.support.salt import Masterless

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, docker_url: str) -> Iterator[DockerProxy]:
    path = tmp_path_factory.mktemp("proxy") / "docker.sock"
    server = DockerProxy(path, docker_url.removeprefix("unix://")).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def minion(tmp_path_factory: pytest.TempPathFactory, proxy: DockerProxy) -> Masterless:
    """A masterless minion whose Docker daemon is the counting proxy, with a
    metrics file (a no-op run writes it too, from the same list)."""
    root = tmp_path_factory.mktemp("scale")
    (root / "metrics").mkdir()
    minion = Masterless(
        root,
        "int-scale",
        proxy.url,
        **{
            "dockerops.state_dir": str(root / "state"),
            "dockerops.metrics_file": str(root / "metrics" / "dockerops.prom"),
        },
    )
    synced = minion.run("saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    return minion


def _services(
    names: list[str], repository: str, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "dockerops": {
            "environment": "integration",
            "services": {
                name: {
                    "image": repository,
                    "tag": (tags or {}).get(name, "1.0"),
                    "replicas": 2,
                    # The demo image's own probe: the broken tag's never passes.
                    "update": {"health_timeout": "8s"},
                }
                for name in names
            },
        }
    }


def _by_service(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        ret["name"]: ret
        for key, ret in data.items()
        if key.startswith("dockerops_|-dockerops-") and key.split("_|-")[-1] == "running"
    }


def test_a_noop_state_run_lists_the_host_once(
    minion: Masterless,
    proxy: DockerProxy,
    demo_images: dict[str, str],
    service_name: str,
    extra_service: Callable[[str], str],
) -> None:
    names = [service_name, extra_service("-b"), extra_service("-c")]
    minion.set_pillar(_services(names, demo_images["repository"]))
    first = minion.run("state.apply", "dockerops.services")
    assert first.returncode == 0, first.stdout + first.stderr

    proxy.reset()
    again = minion.run("state.apply", "dockerops.services")

    assert again.returncode == 0, again.stdout + again.stderr
    states = _by_service(again.data)
    assert sorted(states) == sorted(names)
    assert all(s["result"] is True and not s["changes"] for s in states.values()), states
    # salt-call first computes its grains (their own /info and list call);
    # then the state run: three services, the formula's look at the host and
    # the metrics file, from one list call.
    requests = proxy.seen("GET", "")
    assert requests.count("/info") == 1, requests
    grains = requests.index("/info")
    assert requests[grains + 1].startswith("/containers/json?"), requests
    state_run = requests[grains + 2 :]
    assert [r for r in state_run if r.startswith("/containers/json")] == [
        "/containers/json?limit=-1&all=1&size=0&trunc_cmd=0"
        "&filters=%7B%22label%22%3A+%5B%22io.dockerops.managed%3Dtrue%22%5D%7D"
    ], [r[:60] for r in state_run]
    assert len(proxy.seen("GET", r"^/version")) <= 1
    images = proxy.seen("GET", r"^/images/.*/json")
    assert len(images) == len(set(images)), images
    # Nothing written by a no-op run.
    assert proxy.seen("POST", "") == [] and proxy.seen("DELETE", "") == []
    metrics = (minion.root / "metrics" / "dockerops.prom").read_text()
    for name in names:
        assert f'dockerops_service_replicas_healthy{{service="{name}"}} 2\n' in metrics


def test_first_deploys_overlap_and_each_reports_its_own_health(
    minion: Masterless,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    extra_service: Callable[[str], str],
) -> None:
    a, b, c = service_name, extra_service("-b"), extra_service("-c")
    minion.set_pillar(_services([a, b, c], demo_images["repository"], tags={b: "broken"}))
    watch = _Events(docker_client, [a, b, c])

    run = minion.run("state.apply", "dockerops.services")

    stamps = watch.close()

    states = _by_service(run.data)
    # Each service says whether its own replicas became healthy.
    assert states[a]["result"] is True and states[c]["result"] is True, states
    assert states[b]["result"] is False, states[b]
    assert "healthy" in states[b]["comment"], states[b]["comment"]
    assert run.returncode != 0
    # a and b ran in processes of their own; c, the last, in the run itself.
    assert states[a].get("__parallel__") and states[b].get("__parallel__")
    assert not states[c].get("__parallel__")

    # Overlap, from Docker's own event order: b's and c's replicas started
    # before a's were healthy (one at a time, a would be healthy and held first).
    a_healthy = min(
        t for svc, action, t in stamps if svc == a and action == "health_status: healthy"
    )
    for other in (b, c):
        other_start = min(t for svc, action, t in stamps if svc == other and action == "start")
        assert other_start < a_healthy, (other, stamps)

    # The metrics were written after every service finished: a's and c's
    # replicas healthy, b's none (its failed replicas are gone or unhealthy).
    metrics = (minion.root / "metrics" / "dockerops.prom").read_text()
    assert f'dockerops_service_replicas_healthy{{service="{a}"}} 2\n' in metrics
    assert f'dockerops_service_replicas_healthy{{service="{c}"}} 2\n' in metrics
    assert f'dockerops_service_replicas_healthy{{service="{b}"}} 0\n' in metrics


class _Events:
    """The services' container events, read live while a run goes on (the
    daemon replays only its last 256 events, and health probes fill that)."""

    def __init__(self, client: docker.DockerClient, services: list[str]) -> None:
        self.services = services
        self.stamps: list[tuple[str, str, int]] = []
        self._stream = client.events(
            decode=True, filters={"type": "container", "label": "io.dockerops.managed=true"}
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed under it
            for event in self._stream:
                service = event["Actor"]["Attributes"].get("io.dockerops.service")
                if service in self.services:
                    self.stamps.append((service, event["Action"], int(event["timeNano"])))

    def close(self) -> list[tuple[str, str, int]]:
        time.sleep(0.5)  # what the daemon sent last is read
        self._stream.close()
        self._thread.join(10)
        return list(self.stamps)


def test_reads_kept_in_a_call_are_dropped_by_any_write_and_by_age(
    proxy: DockerProxy,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
) -> None:
    from dockerops.host import READ_MAX_AGE, minion_host

    context: dict[str, Any] = {}
    host = minion_host({"dockerops.docker_url": proxy.url}, context)
    now = [1000.0]
    host.clock = lambda: now[0]
    docker_client.containers.run(
        demo_images["1.0"],
        name=f"{service_name}-1",
        labels={"io.dockerops.managed": "true", "io.dockerops.service": service_name},
        detach=True,
    )
    proxy.reset()

    def lists() -> int:
        return len(proxy.seen("GET", r"^/containers/json"))

    def image_reads() -> int:
        return len(proxy.seen("GET", r"^/images/.*/json"))

    (mine,) = host.managed(service_name, kept=True)
    assert [c.id for c in host.managed(service_name, kept=True)] == [mine.id]
    assert host.managed(kept=True) and lists() == 1
    host.inspect_image(demo_images["1.0"])
    host.inspect_image(demo_images["1.0"])
    assert image_reads() == 1
    # A fresh look is never served from what was kept.
    host.managed(service_name)
    assert lists() == 2

    # Any write through a client of the same call drops both.
    host.signal(mine.id, mine.name, "SIGHUP")
    host.managed(service_name, kept=True)
    host.inspect_image(demo_images["1.0"])
    assert (lists(), image_reads()) == (3, 2)
    # A write by another client of the same call too (a second daemon URL
    # would have its own client; here the one client is closed and rebuilt).
    from dockerops.client import close_clients

    close_clients(context)
    other = minion_host({"dockerops.docker_url": proxy.url}, context)
    other.api.kill(mine.id, signal="SIGHUP")
    host.managed(service_name, kept=True)
    assert lists() == 4

    # And age: a long state run reads again.
    now[0] += READ_MAX_AGE + 0.1
    host.managed(service_name, kept=True)
    host.inspect_image(demo_images["1.0"])
    assert (lists(), image_reads()) == (5, 3)
    close_clients(context)
