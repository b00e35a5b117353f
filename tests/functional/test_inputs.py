"""Container inputs against a real dockerd: each reaches ``docker inspect``,
changing one recreates only its service (health-gated), and inputs left unset
leave the containers of the previous release alone."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest

from dockerops.errors import SpecError
from dockerops.replicas import LABEL_SLOT, desired_replicas
from dockerops.spec import load_service
from tests.functional.helpers import containers, http_get, service_pillar

pytestmark = pytest.mark.docker

# The demo image's serve script writes /www: a read-only root needs it on a tmpfs.
HARDENED: dict[str, Any] = {
    "resources": {"memory": "64m", "memory_reservation": "32m", "cpus": 0.5, "pids_limit": 64},
    "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 512},
    "user": "65534:65534",
    "working_dir": "/tmp",
    "entrypoint": ["/bin/serve"],
    "read_only": True,
    "tmpfs": {"/www": "size=16m,mode=1777", "/tmp": ""},
    "cap_drop": ["ALL"],
    "cap_add": ["net_bind_service"],
    "security_opt": ["label=disable"],
    "init": True,
    "stop_signal": "SIGINT",
    "stop_grace_period": "3s",
    "extra_hosts": {"db.internal": "127.0.0.1"},
    "dns": ["127.0.0.1"],
}


def _only(client: docker.DockerClient, service: str) -> Any:
    (container,) = containers(client, service).values()
    container.reload()
    return container


def _recreated(changes: dict[str, Any]) -> list[list[str]]:
    """The ``changed`` inputs of every recreate in a service's changes."""
    return [
        entry["recreated"]["changed"]
        for entry in changes.values()
        if isinstance(entry, dict) and "recreated" in entry
    ]


@pytest.fixture
def network_name(docker_client: docker.DockerClient) -> Iterator[str]:
    """A network name for this test; the network goes afterwards (dockerops never removes one)."""
    name = f"dockerops-t{random.randrange(16**6):06x}"
    yield name
    for network in docker_client.networks.list(names=[name]):
        network.reload()
        for container in network.containers:
            container.remove(force=True)
        network.remove()


def test_every_input_reaches_docker_and_reads_back(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    free_ports: Callable[..., int],
    docker_client: docker.DockerClient,
    network_name: str,
) -> None:
    port = free_ports(2)
    fields = {
        **HARDENED,
        "ports": [{"container": 8080, "host": port}],
        "networks": {network_name: {"aliases": ["web-alias"]}},
    }
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], **fields))

    out = salt.modules.dockerops.apply(service_name)

    assert out[service_name]["result"] is True, out
    assert http_get(port) == "1.0\n"
    container = _only(docker_client, service_name)
    host, config = container.attrs["HostConfig"], container.attrs["Config"]
    assert (host["Memory"], host["MemoryReservation"]) == (64 * 2**20, 32 * 2**20)
    assert (host["NanoCpus"], host["PidsLimit"]) == (500_000_000, 64)
    assert sorted((u["Name"], u["Soft"], u["Hard"]) for u in host["Ulimits"]) == [
        ("nofile", 1024, 2048),
        ("nproc", 512, 512),
    ]
    assert (config["User"], config["WorkingDir"], config["Entrypoint"]) == (
        "65534:65534",
        "/tmp",
        ["/bin/serve"],
    )
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/www": "size=16m,mode=1777", "/tmp": ""}
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["CAP_NET_BIND_SERVICE"]
    assert sorted(host["SecurityOpt"]) == ["label=disable", "no-new-privileges:true"]
    assert host["Privileged"] is False and host["Init"] is True
    assert (config["StopSignal"], config["StopTimeout"]) == ("SIGINT", 3)
    assert host["ExtraHosts"] == ["db.internal:127.0.0.1"] and host["Dns"] == ["127.0.0.1"]
    network = container.attrs["NetworkSettings"]["Networks"][network_name]
    assert {service_name, "web-alias"} <= set(network["Aliases"])
    # The root filesystem really is read-only, and the process runs as nobody.
    assert container.exec_run(["touch", "/etc/x"]).exit_code != 0
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "65534"
    assert "db.internal" in container.exec_run(["cat", "/etc/hosts"]).output.decode()

    (status,) = salt.modules.dockerops.status(service_name)[service_name]
    settings = status["settings"]
    assert settings["resources"] == {
        "memory": 64 * 2**20,
        "memory_reservation": 32 * 2**20,
        "cpus": 0.5,
        "pids_limit": 64,
    }
    assert (settings["user"], settings["init"], settings["read_only"]) == (
        "65534:65534",
        True,
        True,
    )
    assert settings["networks"] == [network_name]
    assert settings["stop_grace_period"] == 3


def test_no_new_privileges_is_on_by_default(
    salt: Any, demo_images: dict[str, str], service_name: str, docker_client: docker.DockerClient
) -> None:
    salt.set_pillar(service_pillar(service_name, demo_images["repository"]))

    assert salt.modules.dockerops.apply(service_name)[service_name]["result"] is True

    container = _only(docker_client, service_name)
    assert container.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert container.attrs["HostConfig"]["Privileged"] is False


# One change per input, applied in turn; each must recreate its service for
# that input alone, health-gated, and leave the other service alone.
CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("resources", {"resources": {"memory": "96m"}}),
    ("ulimits", {"ulimits": {"nofile": 4096}}),
    ("user", {"user": "0:0"}),
    ("working_dir", {"working_dir": "/"}),
    ("entrypoint", {"entrypoint": ["/bin/sh", "-c", "exec /bin/serve"]}),
    ("tmpfs", {"tmpfs": ["/www"]}),
    ("read_only", {"read_only": True}),  # the demo image writes /www: a tmpfs now
    ("cap_drop", {"cap_drop": ["mknod"]}),
    ("cap_add", {"cap_add": ["net_bind_service"]}),
    ("security_opt", {"security_opt": ["label=disable"]}),
    ("init", {"init": True}),
    ("stop_signal", {"stop_signal": "SIGINT"}),
    ("stop_grace_period", {"stop_grace_period": "2s"}),
    ("extra_hosts", {"extra_hosts": {"db.internal": "127.0.0.1"}}),
    ("dns", {"dns": ["127.0.0.1"]}),
]


def test_changing_an_input_recreates_only_its_service(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    extra_service: Callable[[str], str],
    docker_client: docker.DockerClient,
    network_name: str,
) -> None:
    other = extra_service("-b")
    repository = demo_images["repository"]
    base = service_pillar(service_name, repository)
    base["dockerops"]["services"][other] = {"image": repository, "tag": "1.0"}
    salt.set_pillar(base)
    first = salt.modules.dockerops.apply()
    assert first[service_name]["result"] is True and first[other]["result"] is True, first
    untouched = _only(docker_client, other).id
    changes = [*CHANGES, ("networks", {"networks": [network_name]})]
    fields: dict[str, Any] = {}

    for name, change in changes:
        before = _only(docker_client, service_name).id
        fields.update(change)
        pillar = service_pillar(service_name, repository, **fields)
        pillar["dockerops"]["services"][other] = {"image": repository, "tag": "1.0"}
        salt.set_pillar(pillar)

        out = salt.modules.dockerops.apply()

        mine = out[service_name]
        assert mine["result"] is True, (name, mine)
        assert _recreated(mine["changes"]) == [[name]], (name, mine["changes"])
        assert f"replaced {service_name}-" in mine["comment"], mine
        assert out[other]["changes"] == {}, (name, out[other])
        after = _only(docker_client, service_name)
        assert after.id != before and after.attrs["State"]["Health"]["Status"] == "healthy"
        assert _only(docker_client, other).id == untouched


def test_unset_inputs_leave_containers_of_the_previous_release_alone(
    salt: Any, demo_images: dict[str, str], service_name: str, docker_client: docker.DockerClient
) -> None:
    """A container as the previous release made it (its labels: no slot label,
    no new input hashed; no security options) is in the desired state."""
    pillar = service_pillar(service_name, demo_images["repository"], env={"A": "1"})
    salt.set_pillar(pillar)
    (replica,) = desired_replicas(load_service(pillar, service_name))
    labels = replica.docker_labels()
    del labels[LABEL_SLOT]  # the previous release wrote io.dockerops.replica only
    old = docker_client.containers.run(
        replica.image,
        name=replica.name,
        labels=labels,
        environment=dict(replica.env),
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
        detach=True,
    )

    out = salt.modules.dockerops.apply(service_name)

    assert out[service_name]["result"] is True and out[service_name]["changes"] == {}, out
    assert [c.id for c in containers(docker_client, service_name).values()] == [old.id]
    (status,) = salt.modules.dockerops.status(service_name)[service_name]
    assert status["slot"] == 1


def test_services_on_one_network_reach_each_other_by_name(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    extra_service: Callable[[str], str],
    docker_client: docker.DockerClient,
    network_name: str,
) -> None:
    other = extra_service("-b")
    repository = demo_images["repository"]
    pillar = service_pillar(service_name, repository, networks={network_name: {"aliases": ["api"]}})
    pillar["dockerops"]["services"][other] = {
        "image": repository,
        "tag": "1.1",
        "networks": [network_name],
    }
    salt.set_pillar(pillar)
    assert not docker_client.networks.list(names=[network_name])

    out = salt.modules.dockerops.apply()

    assert out[service_name]["result"] is True and out[other]["result"] is True, out
    (network,) = docker_client.networks.list(names=[network_name])
    assert network.attrs["Driver"] == "bridge"
    assert network.attrs["Labels"] == {"io.dockerops.managed": "true"}
    client = _only(docker_client, other)
    for name in (service_name, "api", f"{service_name}-1"):
        fetched = client.exec_run(["wget", "-q", "-O-", f"http://{name}:8080/version"])
        assert (fetched.exit_code, fetched.output.decode()) == (0, "1.0\n"), name
    server = _only(docker_client, service_name)
    back = server.exec_run(["wget", "-q", "-O-", f"http://{other}:8080/version"])
    assert (back.exit_code, back.output.decode()) == (0, "1.1\n")

    # Removing a service leaves its network (another may use it).
    assert salt.modules.dockerops.remove(other)["result"] is True
    assert docker_client.networks.list(names=[network_name])


def test_privileged_is_refused_unless_the_minion_allows_it(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], privileged=True))

    with pytest.raises(SpecError) as refused:
        salt.modules.dockerops.apply(service_name)

    assert refused.value.problems == [
        f"dockerops:services:{service_name}:privileged: privileged containers are refused "
        "on this minion (set the minion option dockerops.allow_privileged: True to allow "
        "them) (got True)"
    ]
    assert containers(docker_client, service_name) == {}

    monkeypatch.setitem(salt.opts, "dockerops.allow_privileged", True)
    out = salt.modules.dockerops.apply(service_name, test=True)

    assert out[service_name]["result"] is None, out
    assert out[service_name]["changes"] == {
        f"{service_name}-1": {"created": {"image": f"{demo_images['repository']}:1.0"}}
    }
    # This sandbox's runtime cannot start a privileged container; dockerd
    # takes the create call, which is dockerops' part.
    pillar = service_pillar(service_name, demo_images["repository"], privileged=True)
    (replica,) = desired_replicas(load_service(pillar, service_name, allow_privileged=True))
    call = replica.create_call()
    api = docker_client.api
    created = api.create_container(
        replica.image,
        name=replica.name,
        labels=replica.docker_labels(),
        host_config=api.create_host_config(**call.host),
        **call.container,
    )
    assert api.inspect_container(created["Id"])["HostConfig"]["Privileged"] is True
