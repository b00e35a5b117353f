"""The Docker adapter: the few daemon operations dockerops needs.

All calls go through :func:`dockerops.client.translate_errors`, with a message
naming the service and replica concerned.
"""

from __future__ import annotations

from typing import Any

import docker

from .client import docker_client, translate_errors
from .errors import NotFound
from .replicas import (
    LABEL_MANAGED,
    LABEL_SERVICE,
    ActualReplica,
    DesiredReplica,
    actual_from_list_entry,
)

STOP_TIMEOUT = 10


class DockerHost:
    """One Docker daemon, seen through dockerops' labels."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.api = client.api

    def managed(self, service: str | None = None) -> list[ActualReplica]:
        """Every dockerops container (or one service's), from a single list call."""
        label = f"{LABEL_SERVICE}={service}" if service else f"{LABEL_MANAGED}=true"
        with translate_errors("listing containers"):
            entries = self.api.containers(all=True, filters={"label": label})
        return [actual_from_list_entry(entry) for entry in entries]

    def inspect(self, container_id: str) -> dict[str, Any]:
        with translate_errors(f"inspecting container {container_id[:12]}"):
            result: dict[str, Any] = self.api.inspect_container(container_id)
        return result

    def ensure_image(self, ref: str, doing: str) -> None:
        """Pull ``ref`` unless the daemon already has it."""
        try:
            with translate_errors(doing):
                self.api.inspect_image(ref)
            return
        except NotFound:
            pass
        repository, _, tag = ref.rpartition(":")
        with translate_errors(f"{doing}: pulling image {ref}"):
            self.api.pull(repository, tag=tag)

    def create(self, replica: DesiredReplica) -> str:
        """Create and start ``replica``'s container; return its id."""
        doing = f"service {replica.service} replica {replica.index} ({replica.name})"
        self.ensure_image(replica.image, doing)
        port_bindings: dict[str, list[tuple[str, int] | tuple[str]]] = {}
        for port in replica.ports:
            binding = (port.host_ip, port.host_port) if port.host_port else (port.host_ip,)
            port_bindings.setdefault(port.key, []).append(binding)
        name, _, count = replica.restart_policy.partition(":")
        host_config = self.api.create_host_config(
            port_bindings=port_bindings or None,
            restart_policy={"Name": name, "MaximumRetryCount": int(count or 0)},
        )
        with translate_errors(f"creating {doing}"):
            created = self.api.create_container(
                image=replica.image,
                name=replica.name,
                command=list(replica.command) if replica.command is not None else None,
                environment=dict(replica.env),
                ports=[(p.container, p.protocol) for p in replica.ports] or None,
                labels=replica.docker_labels(),
                host_config=host_config,
                detach=True,
            )
        container_id = str(created["Id"])
        try:
            with translate_errors(f"starting {doing}"):
                self.api.start(container_id)
        except Exception:
            # A container that cannot start (port taken, ...) is not left behind.
            self.remove(container_id, replica.name)
            raise
        return container_id

    def start(self, container_id: str, name: str) -> None:
        with translate_errors(f"starting {name}"):
            self.api.start(container_id)

    def remove(self, container_id: str, name: str) -> None:
        """Stop (gracefully) and remove a container; gone already is fine."""
        try:
            with translate_errors(f"stopping {name}"):
                self.api.stop(container_id, timeout=STOP_TIMEOUT)
            with translate_errors(f"removing {name}"):
                self.api.remove_container(container_id, force=True)
        except NotFound:
            return


def minion_host(opts: Any, context: Any = None) -> DockerHost:
    """The Docker host this minion manages (``dockerops.docker_url``)."""
    return DockerHost(docker_client(opts, context))
