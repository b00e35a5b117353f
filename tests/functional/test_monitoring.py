"""How replicas run, as ``dockerops.status`` shows it, against the real dockerd:
the last exit, an OOM kill, a replica that gave up, the health-check output,
and the warning for restart policies that hide a failing replica."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.functional.helpers import service_pillar

pytestmark = pytest.mark.docker

# Healthy at once (the image's own check needs its HTTP server).
QUICK_CHECK = {"test": "echo checked-ok", "interval": "1s", "retries": 1}


def status_when(
    salt: Any, service: str, done: Callable[[dict[str, Any]], bool], timeout: float = 40
) -> dict[str, Any]:
    """The service's one replica's status once ``done`` holds of it."""
    deadline = time.monotonic() + timeout
    while True:
        (replica,) = salt.modules.dockerops.status(service)[service]
        if done(replica) or time.monotonic() > deadline:
            return replica
        time.sleep(0.5)


def test_a_replica_that_used_up_its_retries_is_reported_as_gave_up(
    salt: Any, demo_images: dict[str, str], service_name: str
) -> None:
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        command="sleep 3; exit 3",
        restart_policy="on-failure:2",
        healthcheck=QUICK_CHECK,
    )
    salt.set_pillar(pillar)
    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    replica = status_when(salt, service_name, lambda r: r["gave_up"])

    assert replica["gave_up"] is True, replica
    assert replica["gave_up_reason"] == (
        "exited with code 3 after 2 restarts: on-failure:2 has used up its retries, "
        "Docker will not restart it"
    )
    assert (replica["state"], replica["exit_code"], replica["oom_killed"]) == ("exited", 3, False)
    assert replica["finished_at"] and replica["started_at"]
    assert replica["health_output"] == "checked-ok"
    assert "warning" not in replica


def test_a_crash_looping_replica_is_reported_within_the_window_then_as_gave_up(
    salt: Any, demo_images: dict[str, str], service_name: str
) -> None:
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        command="sleep 3; exit 1",
        restart_policy="on-failure:5",
        healthcheck=QUICK_CHECK,
    )
    pillar["dockerops"]["monitoring"] = {"crash_loop": {"restarts": 3, "window": "1m"}}
    salt.set_pillar(pillar)
    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    seen: list[tuple[int, bool, bool]] = []
    reasons: set[str] = set()

    def looped_then_gave_up(replica: dict[str, Any]) -> bool:
        seen.append((replica["restart_count"], replica["crash_loop"], replica["gave_up"]))
        if replica["crash_loop"]:
            reasons.add(replica["crash_loop_reason"])
        return replica["gave_up"]

    replica = status_when(salt, service_name, looped_then_gave_up, timeout=60)

    # Docker restarts it after 3 s runs (and its growing back-off): 3 restarts
    # within the minute make a loop; after the fifth it gives up.
    looping = [count for count, loop, _ in seen if loop]
    assert looping and min(looping) == 3, seen
    assert all(not loop for count, loop, _ in seen if count < 3), seen
    assert replica["gave_up"] and not replica["crash_loop"], replica
    assert replica["restart_count"] == 5
    assert not any(loop and gave for _, loop, gave in seen), seen
    # While it looped, status said why.
    assert "restarted 3 times in the last 1m (crash_loop: 3 restarts within 1m)" in reasons


def test_an_oom_kill_is_reported(salt: Any, demo_images: dict[str, str], service_name: str) -> None:
    # The shell holds 40 MB in a variable under a 16 MB limit.
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        command="sleep 3; x=$(head -c 40000000 /dev/zero | tr '\\0' a); sleep 60",
        restart_policy="no",
        resources={"memory": "16m"},
        healthcheck=QUICK_CHECK,
    )
    salt.set_pillar(pillar)
    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    replica = status_when(salt, service_name, lambda r: r["state"] == "exited")

    assert (replica["exit_code"], replica["oom_killed"]) == (137, True), replica
    assert replica["gave_up"] is True
    assert replica["gave_up_reason"] == "exited with code 137: restart_policy no never restarts it"


def test_restart_policies_that_restart_forever_are_warned_of(
    salt: Any, demo_images: dict[str, str], service_name: str
) -> None:
    salt.set_pillar(
        service_pillar(service_name, demo_images["repository"], restart_policy="always")
    )

    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    warning = (
        "restart_policy always restarts a persistently failing container forever, "
        "unnoticed; on-failure:N stops after N tries and status reports it (gave_up)"
    )
    assert ret.full_return["warnings"] == [f"service {service_name}: {warning}"]
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert replica["warning"] == warning
    assert (replica["gave_up"], replica["exit_code"]) == (False, None)


def test_grains_are_fast_name_the_host_and_never_fail_when_docker_is_down(
    salt: Any,
    minion_opts: dict[str, Any],
    demo_images: dict[str, str],
    service_name: str,
    tmp_path: Any,
) -> None:
    from salt.loader import grain_funcs

    pillar = service_pillar(
        service_name, demo_images["repository"], replicas=2, healthcheck=QUICK_CHECK
    )
    salt.set_pillar(pillar)
    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    grain = grain_funcs(minion_opts)["dockerops.dockerops"]
    grain()  # the first call imports and negotiates; what a refresh costs is the next
    took = []
    for _ in range(5):
        started = time.perf_counter()
        found = grain()["dockerops"]
        took.append(time.perf_counter() - started)
    # Measured here: 11-14 ms a refresh (one info call, one list call).
    assert max(took) < 0.5, took
    assert found["docker"]["reachable"] is True
    assert found["docker"]["storage_driver"] == "overlay2"
    assert found["docker"]["cgroup_version"] in ("1", "2")
    assert found["services"][service_name] == {
        "image": f"{demo_images['repository']}:1.0",
        "replicas": 2,
    }

    down = dict(minion_opts, **{"dockerops.docker_url": f"unix://{tmp_path}/none.sock"})
    started = time.perf_counter()
    answer = grain_funcs(down)["dockerops.dockerops"]()["dockerops"]
    assert time.perf_counter() - started < 1.0
    assert answer["docker"]["reachable"] is False
    assert answer["services"] == {}


def test_the_beacon_fires_once_when_an_expected_port_stops_listening(
    salt: Any,
    minion_opts: dict[str, Any],
    demo_images: dict[str, str],
    service_name: str,
    docker_client: Any,
) -> None:
    from salt.loader import beacons, minion_mods

    from tests.functional.conftest import REPO

    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        command="httpd -p 9000 -h /; sleep 600",
        healthcheck=QUICK_CHECK,
        expect_ports=[9000],
    )
    salt.set_pillar(pillar)
    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    opts = dict(minion_opts, pillar=pillar, beacons_dirs=[str(REPO / "_beacons")])
    beacon = beacons(opts, minion_mods(opts))["dockerops.beacon"]
    config = [{"services": [service_name]}]

    def look() -> list[str]:
        return [f"{e['tag']}: {e['reason']}" for e in beacon(config)]

    assert look() == []  # listening: nothing to say
    (container,) = docker_client.containers.list(
        ignore_removed=True, filters={"label": f"io.dockerops.service={service_name}"}
    )
    assert container.exec_run("killall httpd").exit_code == 0
    deadline = time.monotonic() + 10
    fired: list[str] = []
    while not fired and time.monotonic() < deadline:
        fired = look()
        time.sleep(0.2)
    assert fired == [f"{service_name}/port_missing: 9000/tcp no longer listening"]
    assert look() == [] and look() == []  # once, not at every pass
