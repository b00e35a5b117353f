"""config.mode: image — the states build the layered config image, run it,
roll a config change out as a new image, and roll back to the previous one."""

from __future__ import annotations

import re

import pytest

from tests.functional.helpers import containers, state_return
from tests.functional.test_config_dirs import HEALTH_FROM_CONFIG

pytestmark = pytest.mark.docker


@pytest.fixture
def image_pillar(demo_images, service_name):
    """``image_pillar(health, **config)``: one service, 2 replicas of demo-http
    1.0, its config (``health.conf`` = ``health``) baked into a config image."""

    def make(health, **config):
        files = {
            "health.conf": {"contents": f"{health}\n"},
            # Unique to the test, so its tags are its own in the shared registry.
            "service": {"contents": f"{service_name}\n", "mode": "0600"},
        }
        return {
            "dockerops": {
                "environment": "integration",
                "environment_short": "int",
                "services": {
                    service_name: {
                        "image": demo_images["repository"],
                        "tag": "1.0",
                        "replicas": 2,
                        "healthcheck": HEALTH_FROM_CONFIG,
                        "update": {"health_timeout": "10s", "min_healthy_time": "1s"},
                        "config": {"path": "/etc/app", "mode": "image", "files": files, **config},
                    }
                },
            }
        }

    return make


def apply(salt, name):
    """The service's two states, as the formula orders them."""
    config = state_return(salt.states.dockerops.config_managed(name=name))
    run = state_return(salt.states.dockerops.running(name=name))
    return config, run


def images(client, name):
    return {
        c.image.tags[0] if c.image.tags else c.image.id for c in containers(client, name).values()
    }


def all_healthy(client, name):
    found = containers(client, name).values()
    return bool(found) and all(
        c.attrs["State"].get("Health", {}).get("Status") == "healthy" for c in found
    )


def test_a_config_change_is_a_new_image_rolled_out_and_rolled_back(
    salt, docker_client, demo_images, image_pillar, service_name
):
    repository = demo_images["repository"]
    salt.set_pillar(image_pillar("ok v1"))
    config, run = apply(salt, service_name)
    assert config["result"] is True, config["comment"]
    first = config["changes"]["config_image"]["new"]
    assert config["changes"]["config_image"]["old"] is None  # nothing ran before
    assert re.fullmatch(rf"{re.escape(repository)}:1\.0-int-[0-9a-f]{{12}}", first), first
    assert run["result"] is True, run["comment"]
    assert images(docker_client, service_name) == {first}
    assert all_healthy(docker_client, service_name)
    # Nothing mounted: the config is in the image, at config.path, with its mode.
    for container in containers(docker_client, service_name).values():
        assert container.attrs["Mounts"] == []
        out = container.exec_run(["stat", "-c", "%a %u %Y", "/etc/app/service"]).output.decode()
        assert out.split()[:2] == ["600", "0"], out
    status = salt.modules.dockerops.status(service_name)[service_name]
    version_v1 = {row["config_version"] for row in status}
    assert len(version_v1) == 1 and None not in version_v1
    assert first.endswith("-" + next(iter(version_v1))[:12])

    # The same config again: nothing built, nothing recreated.
    config, run = apply(salt, service_name)
    # This host has it: the registry is not even asked.
    assert config["changes"] == {} and "is on this host" in config["comment"]
    assert run["changes"] == {} and run["result"] is True

    # One value changes: a new tag, rolled out health-gated.
    salt.set_pillar(image_pillar("ok v2"))
    config, run = apply(salt, service_name)
    second = config["changes"]["config_image"]["new"]
    assert config["changes"]["config_image"]["old"] == first
    assert config["changes"]["config_image"]["image_id"].startswith("sha256:")
    assert second != first and second.startswith(f"{repository}:1.0-int-")
    assert run["result"] is True, run["comment"]
    assert images(docker_client, service_name) == {second}
    assert all_healthy(docker_client, service_name)
    history = salt.modules.dockerops.history(service_name, limit=1)
    assert (history[0]["from"], history[0]["to"], history[0]["result"]) == (first, second, True)

    # Rollback: the previous image, config and all.
    back = salt.modules.dockerops.rollback(service_name)
    assert back["result"] is True, back["comment"]
    assert back["to"] == first
    assert images(docker_client, service_name) == {first}
    assert all_healthy(docker_client, service_name)
    status = salt.modules.dockerops.status(service_name)[service_name]
    assert {row["config_version"] for row in status} == version_v1


def test_a_config_the_app_rejects_never_replaces_a_replica(
    salt, docker_client, image_pillar, service_name
):
    salt.set_pillar(image_pillar("ok"))
    _, run = apply(salt, service_name)
    assert run["result"] is True, run["comment"]
    before = {n: c.id for n, c in containers(docker_client, service_name).items()}
    running_image = images(docker_client, service_name)

    # config.check stops it before any replica runs it.
    salt.set_pillar(image_pillar("bad", check="grep -q ok /etc/app/health.conf"))
    config, run = apply(salt, service_name)
    assert config["result"] is False and "failed its check" in config["comment"]
    assert run["result"] is False and "failed its check" in run["comment"]
    assert {n: c.id for n, c in containers(docker_client, service_name).items()} == before

    # Without a check, the health gate stops it and puts the replica back.
    salt.set_pillar(image_pillar("bad"))
    _, run = apply(salt, service_name)
    assert run["result"] is False
    assert images(docker_client, service_name) == running_image
    assert all_healthy(docker_client, service_name)


def test_build_false_expects_the_image_built_elsewhere(
    salt, docker_client, image_pillar, service_name
):
    salt.set_pillar(image_pillar("ok elsewhere", build=False))
    config, run = apply(salt, service_name)
    assert config["result"] is False and "build_config_image" in config["comment"]
    assert run["result"] is False
    assert containers(docker_client, service_name) == {}
    # The overview says so for this service alone.
    overview = salt.modules.dockerops.services()[service_name]
    assert overview["in_sync"] is None and "build_config_image" in overview["error"]

    preview = salt.modules.dockerops.build_config_image(service_name, test=True)
    assert preview["built"] is False and "would be built" in preview["comment"]
    built = salt.modules.dockerops.build_config_image(service_name)
    assert built["built"] is True and built["pushed"] is True
    again = salt.modules.dockerops.build_config_image(service_name)
    assert (again["built"], again["pushed"], again["image_id"]) == (False, False, built["image_id"])

    config, run = apply(salt, service_name)
    assert config["result"] is True and config["changes"] == {}
    assert run["result"] is True, run["comment"]
    assert images(docker_client, service_name) == {built["ref"]}
