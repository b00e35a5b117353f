"""Images whose PID 1 ignores SIGTERM, against the real dockerd.

Such a replica stops only when Docker kills it after its grace period. Old
replicas retire concurrently, so a 3-replica rolling update of such an image
takes about one grace period longer than the same rollout of an image that
stops promptly (not one per replica); ``dockerops.status`` says the last stop
needed a kill; with ``init: true`` (Docker's init as PID 1 passes the signal
on) old replicas stop in well under a second.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.functional.helpers import containers, service_pillar

pytestmark = pytest.mark.docker

REPLICAS = 3
GRACE = 5  # seconds: a short stop_grace_period keeps the test quick
# sh as PID 1 ignores SIGTERM (the kernel drops default-action signals to a
# namespace's init), and the trailing ":" keeps it from exec-ing serve.
IGNORES_SIGTERM = ["/bin/sh", "-c", "/bin/serve; :"]


def pillar_of(name: str, repository: str, port: int, **fields: Any) -> dict[str, Any]:
    return service_pillar(
        name,
        repository,
        replicas=REPLICAS,
        ports=[{"container": 8080, "host": port}],
        stop_grace_period=f"{GRACE}s",
        update={"health_timeout": "30s"},
        **fields,
    )


def deployed(salt: Any, pillar: dict[str, Any]) -> None:
    salt.set_pillar(pillar)
    for name in pillar["dockerops"]["services"]:
        ret = salt.states.dockerops.running(name=name)
        assert ret.result is True, ret.comment


def rolled(salt: Any, name: str, tag: str) -> tuple[float, dict[str, Any]]:
    """A rolling update of ``name`` to ``tag``: its wall time and its return."""
    started = time.monotonic()
    out = salt.modules.dockerops.rolling_update(name, tag=tag)
    took = time.monotonic() - started
    assert out["result"] is True, out["comment"]
    return took, out


def last_stops(salt: Any, name: str) -> list[dict[str, Any]]:
    return [replica["last_stop"] for replica in salt.modules.dockerops.status(name)[name]]


def test_old_replicas_that_ignore_sigterm_cost_one_grace_period_per_rollout(
    salt, docker_client, demo_images, service_name, extra_service, free_ports
):
    prompt = extra_service("p")
    repository = demo_images["repository"]
    pillar = pillar_of(prompt, repository, free_ports(2 * REPLICAS))
    stubborn = pillar_of(
        service_name, repository, free_ports(2 * REPLICAS), command=IGNORES_SIGTERM
    )
    pillar["dockerops"]["services"].update(stubborn["dockerops"]["services"])
    deployed(salt, pillar)
    for container in containers(docker_client, service_name).values():
        assert container.attrs["Config"]["StopTimeout"] == GRACE

    prompt_took, _ = rolled(salt, prompt, "1.1")
    stubborn_took, out = rolled(salt, service_name, "1.1")

    # Three old replicas were killed after their grace period, all at once.
    kills = [s for s in out["steps"] if f"needed a kill after its {GRACE}s grace period" in s]
    assert len(kills) == REPLICAS, out["steps"]
    assert stubborn_took - prompt_took <= GRACE + 3, (prompt_took, stubborn_took)
    assert stubborn_took - prompt_took >= GRACE - 1, (prompt_took, stubborn_took)
    # dockerops.status tells the operator, with what to do about it.
    for stop in last_stops(salt, service_name):
        assert stop["killed"] is True and stop["grace"] == GRACE
        assert stop["seconds"] >= GRACE
        assert stop["hint"] == (
            f"needed a kill after its {GRACE}s grace period: its PID 1 ignores the stop "
            "signal; set init: true or stop_signal"
        )
    for stop in last_stops(salt, prompt):
        assert stop["killed"] is False and stop["seconds"] < 1.0 and "hint" not in stop


def test_with_init_old_replicas_stop_in_well_under_a_second(
    salt, docker_client, demo_images, service_name, free_ports
):
    port = free_ports(2 * REPLICAS)
    repository = demo_images["repository"]
    deployed(salt, pillar_of(service_name, repository, port, command=IGNORES_SIGTERM, init=True))
    for container in containers(docker_client, service_name).values():
        assert container.attrs["HostConfig"]["Init"] is True

    took, out = rolled(salt, service_name, "1.1")

    assert not [s for s in out["steps"] if "needed a kill" in s], out["steps"]
    for stop in last_stops(salt, service_name):
        assert stop["killed"] is False and stop["seconds"] < 1.0, stop
    assert took < GRACE + 10


def test_scaling_down_or_removing_stops_every_replica_at_once(
    salt, docker_client, demo_images, service_name, free_ports
):
    """Removals wait one grace period, not one per replica."""
    port = free_ports(2 * REPLICAS)
    pillar = pillar_of(service_name, demo_images["repository"], port, command=IGNORES_SIGTERM)
    deployed(salt, pillar)
    pillar["dockerops"]["services"][service_name]["replicas"] = 1
    salt.set_pillar(pillar)

    started = time.monotonic()
    ret = salt.states.dockerops.running(name=service_name)
    took = time.monotonic() - started

    assert ret.result is True, ret.comment
    assert sorted(ret.changes) == [f"{service_name}-2", f"{service_name}-3"]
    assert GRACE - 1 <= took < 2 * GRACE, took
    assert f"needed a kill after its {GRACE}s grace period" in ret.comment
    assert len(containers(docker_client, service_name)) == 1

    pillar["dockerops"]["services"][service_name]["replicas"] = REPLICAS
    deployed(salt, pillar)
    started = time.monotonic()
    out = salt.modules.dockerops.remove(service_name)
    took = time.monotonic() - started

    assert out["result"] is True, out
    assert GRACE - 1 <= took < 2 * GRACE, took
    assert containers(docker_client, service_name) == {}
