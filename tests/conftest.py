"""Session-wide test bed: a real Docker daemon, a real registry, demo images.

Tiers: tests/unit (no daemon), tests/functional (real dockerd, Salt loader or
salt-call --local), tests/integration (real salt-master and salt-minions, each
minion on its own Docker host).
"""

from __future__ import annotations

import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import salt._logging.impl

from tests.support import dockerd, nginx
from tests.support.etcd import Etcd
from tests.support.registry import Registry

REPO = Path(__file__).resolve().parents[1]

# Importing salt installs a deferred stderr handler that flushes at exit, after
# pytest has closed the stream; pytest's own log capture replaces it.
salt._logging.impl.shutdown_temp_handler()


@pytest.fixture(scope="session")
def docker_url() -> str:
    """The main Docker host: the running daemon, or one started for the run."""
    return dockerd.ensure_main_daemon()


@pytest.fixture(scope="session")
def docker_client(docker_url: str) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_url, timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real registry on 127.0.0.1 (Debian's docker-registry)."""
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    """A real etcd on 127.0.0.1 (Debian's etcd-server), shared by the session:
    tests put keys under prefixes of their own, and do not compact or enable auth."""
    server = Etcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_images(docker_url: str, registry: Registry) -> dict[str, str]:
    """demo-http 1.0, 1.1, broken, crashloop: built locally, pushed to the registry.

    Returns the repository and each tag's full reference.
    """
    repository = f"{registry.address}/dockerops/demo-http"
    subprocess.run(
        [str(REPO / "images" / "build.sh"), repository],
        check=True,
        env={"PUSH": "1", "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
    )
    refs = {tag: f"{repository}:{tag}" for tag in ("1.0", "1.1", "broken", "crashloop")}
    return {"repository": repository, **refs}


@pytest.fixture(scope="session")
def nginx_image(docker_client: docker.DockerClient) -> str:
    """Debian's nginx as a local image (tests/support/nginx.py), built once and cached."""
    return nginx.ensure_image(docker_client)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Published test ports stay below the kernel's ephemeral range: an outgoing
# connection (Salt, Docker, the registry) may take any port in it at any time.
PORTS_FROM = 20000
PORTS_BELOW = 32768  # Linux's default ip_local_port_range starts here


def ports_below() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return PORTS_BELOW
    return max(PORTS_FROM + 1000, min(low, PORTS_BELOW))


@pytest.fixture
def free_ports():
    """free_ports(n): the first of n consecutive free ports on 127.0.0.1.

    Ranges handed out in one test never overlap (nothing binds them until the
    containers start), and all lie below the ephemeral port range.
    """
    taken: list[range] = []

    def find(count: int = 1) -> int:
        for _ in range(200):
            first = random.randrange(PORTS_FROM, ports_below() - count)
            wanted = range(first, first + count)
            if any(set(wanted) & set(r) for r in taken):
                continue
            if all(_port_free(port) for port in wanted):
                taken.append(wanted)
                return first
        raise RuntimeError("no free port range found")

    return find


@pytest.fixture
def service_name(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient
) -> Iterator[str]:
    """A service name unique to this test; its containers are removed afterwards."""
    name = f"t{random.randrange(16**6):06x}"
    yield name
    for container in docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"io.dockerops.service={name}"}
    ):
        container.remove(force=True)
