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
