"""Data mounts that name a Docker volume, against the real dockerd: made by the
state with their driver options, written by the replicas, never removed, backed
up by restic in a helper container into a real repository, set aside and put
back byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from dockerops.host import DockerHost
from dockerops.restic import Restic
from dockerops.spec import DataMount, load_service
from dockerops.volumes import (
    HelperMount,
    asides,
    container_executor,
    helper_image,
    put_back,
    run_helper,
    set_aside,
)
from tests.functional.helpers import containers, state_return

pytestmark = pytest.mark.docker

PASSWORD = "correct horse battery staple"


def pillar(root: Path, services: dict[str, dict[str, Any]], **top: Any) -> dict[str, Any]:
    return {
        "dockerops": {
            "environment": "integration",
            "allowed_host_paths": [str(root)],
            "services": services,
            **top,
        }
    }


WRITER = "echo $HOSTNAME > /data/$HOSTNAME.txt && exec /bin/serve"


def writer(repository: str, volume: str, device: Path, replicas: int = 2) -> dict[str, Any]:
    return {
        "image": repository,
        "tag": "1.0",
        "replicas": replicas,
        "command": ["/bin/sh", "-c", WRITER],
        "update": {"health_timeout": "20s"},
        "data": [
            {
                "volume": volume,
                "container": "/data",
                "driver_opts": {"type": "none", "o": "bind", "device": str(device)},
            }
        ],
    }


def restic_on_host(repository: Path, password_file: Path, *args: str) -> bytes:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repository.parent),
        "RESTIC_REPOSITORY": str(repository),
        "RESTIC_PASSWORD_FILE": str(password_file),
    }
    done = subprocess.run(["restic", *args], env=env, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, Path]:
    """A real local restic repository (``restic init``) and its password file."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o400)
    repo = tmp_path / "repo"
    restic_on_host(repo, password_file, "init")
    return repo, password_file


def test_state_makes_a_bind_volume_and_restic_backs_it_up_through_the_helper(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    volume_name: Callable[[str], str],
    host_root: Path,
    docker_client: docker.DockerClient,
    repository: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    volume = volume_name("-data")
    device = host_root / service_name / "vol"  # made by the state, not by dockerd
    services = {service_name: writer(demo_images["repository"], volume, device)}
    salt.set_pillar(pillar(host_root, services))

    ret = state_return(salt.states.dockerops.running(name=service_name))

    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["volumes"] == {"created": [volume]}
    made = docker_client.api.inspect_volume(volume)
    assert made["Driver"] == "local"
    assert made["Options"] == {"type": "none", "o": "bind", "device": str(device)}
    running = containers(docker_client, service_name)
    assert len(running) == 2
    written = {p.name: p.read_text() for p in device.iterdir()}
    assert written == {f"{c.id[:12]}.txt": f"{c.id[:12]}\n" for c in running.values()}

    # The no-op run makes and reports nothing.
    again = state_return(salt.states.dockerops.running(name=service_name))
    assert again["result"] is True and again["changes"] == {}, again

    # A backup through the helper container, into a real local repository.
    repo, password_file = repository
    spec = load_service(pillar(host_root, services), service_name)
    host = DockerHost(docker_client)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    executor = container_executor(host, spec, list(spec.data), secrets_dir=str(secrets_dir))
    restic = Restic(str(repo), PASSWORD, executor, cache_dir=str(tmp_path / "cache"))
    summary = restic.backup(["/data"], {"service": service_name}, "test-minion")

    assert summary.total_files == 2 and not summary.incomplete
    assert list(secrets_dir.iterdir()) == []  # the password file went with the run
    nodes = json.loads(
        "["
        + restic_on_host(repo, password_file, "ls", "--json", summary.snapshot_id)
        .decode()
        .strip()
        .replace("\n", ",")
        + "]"
    )
    files = {n["path"]: n["size"] for n in nodes if n.get("type") == "file"}
    assert files == {f"/data/{name}": len(text) for name, text in written.items()}
    first = sorted(written)[0]
    dumped = restic_on_host(repo, password_file, "dump", summary.snapshot_id, f"/data/{first}")
    assert dumped.decode() == written[first]
    # The helper container is gone.
    assert not docker_client.containers.list(
        all=True, filters={"label": f"io.dockerops.helper={service_name}"}
    )

    # absent removes the replicas, never the volume nor its data.
    gone = state_return(salt.states.dockerops.absent(name=service_name))
    assert gone["result"] is True, gone["comment"]
    assert not containers(docker_client, service_name)
    assert docker_client.api.inspect_volume(volume)["Options"]["device"] == str(device)
    assert sorted(p.name for p in device.iterdir()) == sorted(written)


def test_a_volume_that_differs_from_pillar_is_an_error_and_left_alone(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    volume_name: Callable[[str], str],
    host_root: Path,
    docker_client: docker.DockerClient,
) -> None:
    volume = volume_name("-data")
    docker_client.api.create_volume(
        volume, driver="local", driver_opts={"type": "tmpfs", "device": "tmpfs"}
    )
    device = host_root / "vol"
    services = {service_name: writer(demo_images["repository"], volume, device, replicas=1)}
    salt.set_pillar(pillar(host_root, services))

    ret = state_return(salt.states.dockerops.running(name=service_name))

    assert ret["result"] is False
    assert (
        f"volume {volume} exists with driver local and options {{'device': 'tmpfs', "
        f"'type': 'tmpfs'}}, but pillar says driver local and options {{'device': "
        f"'{device}', 'o': 'bind', 'type': 'none'}}; dockerops never removes or re-creates "
        "a volume"
    ) in ret["comment"], ret["comment"]
    assert not containers(docker_client, service_name)  # failed before any replica
    assert docker_client.api.inspect_volume(volume)["Options"] == {
        "type": "tmpfs",
        "device": "tmpfs",
    }


def tree_digest(host: DockerHost, image: str, volume: str) -> str:
    """sha256 of every file's path, mode and content in ``volume``, read in a helper."""
    script = "cd /v && find . -exec stat -c '%n %a %u %F' {} + | sort && "
    script += "find . -type f -exec sha256sum {} + | sort"
    done = run_helper(
        host,
        image,
        ["/bin/busybox", "sh", "-c", script],
        [HelperMount(volume, "/v", False)],
        "test",
        60,
        "digest",
    )
    assert done.returncode == 0, done.stderr
    return hashlib.sha256(done.stdout).hexdigest()


def test_set_aside_then_put_back_keeps_every_byte(
    docker_client: docker.DockerClient, volume_name: Callable[[str], str]
) -> None:
    host = DockerHost(docker_client)
    image = helper_image(host)
    volume = volume_name("-data")
    docker_client.api.create_volume(volume)
    fill = (
        "cd /v && mkdir -p a/b && head -c 300000 /dev/urandom > a/b/blob && echo hi > top "
        "&& ln -s a/b/blob link && chmod 640 top && chown 1234:5678 a/b/blob && mkfifo pipe"
    )
    made = run_helper(
        host,
        image,
        ["/bin/busybox", "sh", "-c", fill],
        [HelperMount(volume, "/v", True)],
        "t",
        60,
        "fill",
    )
    assert made.returncode == 0, made.stderr
    before = tree_digest(host, image, volume)
    mount = DataMount(volume=volume, container="/data")

    aside = set_aside(host, "t", mount, now=0.0, image=image)

    assert aside == f"{volume}-before-restore-19700101T000000Z"
    assert asides(host, volume) == [aside]
    assert tree_digest(host, image, aside) == before
    empty = run_helper(
        host,
        image,
        ["/bin/busybox", "ls", "-A", "/v"],
        [HelperMount(volume, "/v", False)],
        "t",
        60,
        "ls",
    )
    assert empty.stdout == b""

    # A restore writes something else; put_back brings back the very bytes.
    run_helper(
        host,
        image,
        ["/bin/busybox", "sh", "-c", "echo restored > /v/new"],
        [HelperMount(volume, "/v", True)],
        "t",
        60,
        "w",
    )
    put_back(host, "t", mount, aside, image=image)

    assert tree_digest(host, image, volume) == before
    assert tree_digest(host, image, aside) == before  # kept as it was

    # A second set-aside within the same second gets a name of its own.
    assert set_aside(host, "t", mount, now=0.0, image=image) == f"{aside}-2"
