"""dockerops.running / dockerops.absent against a real dockerd."""

from __future__ import annotations

import socket

import pytest

from tests.functional.helpers import containers, http_get, service_pillar, state_return

pytestmark = pytest.mark.docker


@pytest.fixture(params=[False, True], ids=["apply", "test-mode"])
def testmode(request):
    return request.param


def test_first_apply_creates_replicas_then_second_is_noop(
    salt, docker_client, demo_images, service_name, free_ports
):
    port = free_ports(4)
    salt.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            replicas=2,
            env={"GREETING": "hi"},
            ports=[{"container": 8080, "host": port}],
        )
    )
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"] == {
        f"{service_name}-1": {"created": {"image": demo_images["1.0"]}},
        f"{service_name}-2": {"created": {"image": demo_images["1.0"]}},
    }
    found = containers(docker_client, service_name)
    assert sorted(found) == [f"{service_name}-1", f"{service_name}-2"]
    # Replica i publishes host port + i - 1, on 127.0.0.1 only.
    assert http_get(port) == "1.0\n"
    assert http_get(port + 1) == "1.0\n"
    bindings = found[f"{service_name}-2"].attrs["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port + 1)}]}
    assert found[f"{service_name}-1"].attrs["HostConfig"]["RestartPolicy"] == {
        "Name": "on-failure",
        "MaximumRetryCount": 5,
    }
    ids = {name: c.id for name, c in found.items()}

    again = state_return(salt.states.dockerops.running(name=service_name))
    assert again["result"] is True
    assert again["changes"] == {}
    assert "desired state" in again["comment"]
    assert {n: c.id for n, c in containers(docker_client, service_name).items()} == ids


def test_test_mode_touches_nothing(salt, docker_client, demo_images, service_name):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], replicas=2))
    ret = state_return(salt.states.dockerops.running(name=service_name, test=True))
    assert ret["result"] is None
    assert set(ret["changes"]) == {f"{service_name}-1", f"{service_name}-2"}
    assert containers(docker_client, service_name) == {}


def test_tag_change_recreates_only_that_service(
    salt, docker_client, demo_images, service_name, extra_service, testmode
):
    other = extra_service("x")
    pillar = service_pillar(service_name, demo_images["repository"], replicas=2)
    pillar["dockerops"]["services"][other] = {"image": demo_images["repository"], "tag": "1.0"}
    salt.set_pillar(pillar)
    for name in (service_name, other):
        assert salt.states.dockerops.running(name=name).result is True
    before = {c.name: c.id for c in containers(docker_client, other).values()}
    before_mine = {c.name: c.id for c in containers(docker_client, service_name).values()}

    pillar["dockerops"]["services"][service_name]["tag"] = "1.1"
    salt.set_pillar(pillar)
    ret = state_return(salt.states.dockerops.running(name=service_name, test=testmode))
    assert ret["result"] is (None if testmode else True), ret["comment"]
    # Keyed by what runs (or will run) now: start-first replaces -1 in the spare slot 3.
    replaced, now = f"{service_name}-1", f"{service_name}-3"
    assert ret["changes"][now] == {
        "recreated": {"changed": ["image"]},
        "image": {"old": demo_images["1.0"], "new": demo_images["1.1"]},
        "container": {"old": replaced, "new": now},
    }
    mine = containers(docker_client, service_name)
    if testmode:
        assert {c.name: c.id for c in mine.values()} == before_mine
    else:
        assert all(c.labels["io.dockerops.image"] == demo_images["1.1"] for c in mine.values())
        assert not set(c.id for c in mine.values()) & set(before_mine.values())
    # The other service was not touched.
    assert {c.name: c.id for c in containers(docker_client, other).values()} == before


def test_env_change_names_env_but_never_its_value(salt, docker_client, demo_images, service_name):
    pillar = service_pillar(service_name, demo_images["repository"], env={"TOKEN": "s3cr3t-one"})
    salt.set_pillar(pillar)
    assert salt.states.dockerops.running(name=service_name).result is True
    pillar["dockerops"]["services"][service_name]["env"] = {"TOKEN": "s3cr3t-two"}
    salt.set_pillar(pillar)
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["changes"] == {
        f"{service_name}-2": {
            "recreated": {"changed": ["env"]},
            "container": {"old": f"{service_name}-1", "new": f"{service_name}-2"},
        }
    }
    assert "s3cr3t" not in repr(ret)


def test_scale_up_and_down(salt, docker_client, demo_images, service_name):
    pillar = service_pillar(service_name, demo_images["repository"], replicas=1)
    salt.set_pillar(pillar)
    assert salt.states.dockerops.running(name=service_name).result is True
    first_id = containers(docker_client, service_name)[f"{service_name}-1"].id

    pillar["dockerops"]["services"][service_name]["replicas"] = 3
    salt.set_pillar(pillar)
    up = state_return(salt.states.dockerops.running(name=service_name))
    assert set(up["changes"]) == {f"{service_name}-2", f"{service_name}-3"}
    assert containers(docker_client, service_name)[f"{service_name}-1"].id == first_id

    pillar["dockerops"]["services"][service_name]["replicas"] = 1
    salt.set_pillar(pillar)
    down = state_return(salt.states.dockerops.running(name=service_name))
    assert set(down["changes"]) == {f"{service_name}-2", f"{service_name}-3"}
    assert all("removed" in change for change in down["changes"].values())
    assert sorted(containers(docker_client, service_name)) == [f"{service_name}-1"]
    assert containers(docker_client, service_name)[f"{service_name}-1"].id == first_id


def test_container_deleted_by_hand_is_recreated(salt, docker_client, demo_images, service_name):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], replicas=2))
    assert salt.states.dockerops.running(name=service_name).result is True
    containers(docker_client, service_name)[f"{service_name}-2"].remove(force=True)
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["changes"] == {f"{service_name}-2": {"created": {"image": demo_images["1.0"]}}}
    assert len(containers(docker_client, service_name)) == 2


def test_stopped_container_is_started(salt, docker_client, demo_images, service_name):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"]))
    assert salt.states.dockerops.running(name=service_name).result is True
    container = containers(docker_client, service_name)[f"{service_name}-1"]
    container.stop(timeout=2)
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["changes"] == {f"{service_name}-1": {"started": {"old": "exited", "new": "running"}}}
    container.reload()
    assert container.status == "running"


def test_bad_pillar_fails_with_path_and_touches_nothing(
    salt, docker_client, demo_images, service_name
):
    salt.set_pillar(
        service_pillar(service_name, demo_images["repository"], replicas="many", replica=2)
    )
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["result"] is False
    assert f"dockerops:services:{service_name}:replicas:" in ret["comment"]
    assert "'many'" in ret["comment"]
    assert f"dockerops:services:{service_name}:replica: unknown key" in ret["comment"]
    assert "did you mean 'replicas'" in ret["comment"]
    assert containers(docker_client, service_name) == {}


def test_missing_image_is_pulled_from_the_registry(salt, docker_client, demo_images, service_name):
    # A tag only the registry has: the apply must really pull it.
    ref = demo_images["repository"] + ":pulltest"
    docker_client.images.get(demo_images["1.0"]).tag(demo_images["repository"], "pulltest")
    docker_client.images.push(demo_images["repository"], tag="pulltest")
    docker_client.images.remove(ref)
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], tag="pulltest"))
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["result"] is True, ret["comment"]
    assert docker_client.images.get(ref)


def test_image_missing_everywhere_names_service_and_replica(
    salt, docker_client, demo_images, service_name
):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], tag="does-not-exist"))
    ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["result"] is False
    assert f"service {service_name} replica 1" in ret["comment"]
    assert "does-not-exist" in ret["comment"]
    assert containers(docker_client, service_name) == {}


def test_port_already_taken_fails_cleanly(
    salt, docker_client, demo_images, service_name, free_ports
):
    port = free_ports(1)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        salt.set_pillar(
            service_pillar(
                service_name, demo_images["repository"], ports=[{"container": 8080, "host": port}]
            )
        )
        ret = state_return(salt.states.dockerops.running(name=service_name))
    assert ret["result"] is False
    assert f"service {service_name} replica 1" in ret["comment"]
    # The container that could not start is not left behind.
    assert containers(docker_client, service_name) == {}


def test_daemon_unreachable_is_a_clear_failure(salt, demo_images, service_name):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"]))
    salt.opts["dockerops.docker_url"] = "unix:///nonexistent/docker.sock"
    try:
        ret = state_return(salt.states.dockerops.running(name=service_name))
    finally:
        salt.reload_all()
    assert ret["result"] is False
    assert "unreachable" in ret["comment"]


def test_absent_removes_every_replica(salt, docker_client, demo_images, service_name, testmode):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], replicas=2))
    assert salt.states.dockerops.running(name=service_name).result is True
    ret = state_return(salt.states.dockerops.absent(name=service_name, test=testmode))
    assert ret["result"] is (None if testmode else True)
    assert set(ret["changes"]) == {f"{service_name}-1", f"{service_name}-2"}
    assert len(containers(docker_client, service_name)) == (2 if testmode else 0)
    if not testmode:
        again = state_return(salt.states.dockerops.absent(name=service_name))
        assert again["result"] is True and again["changes"] == {}
