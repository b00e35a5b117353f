"""Fixtures shared by the unit tests: specs from pillar, list-API entries, actual replicas.

Plain builders (pillar, kinds_and_names, ...) are in tests/support/builders.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops.replicas import ActualReplica, DesiredReplica, actual_from_list_entry
from dockerops.spec import ServiceSpec, load_service

BASE_SERVICE: dict[str, Any] = {"image": "registry.example.com/web", "tag": "1.4"}


@pytest.fixture
def make_spec() -> Callable[..., ServiceSpec]:
    """``make_spec(replicas=2, env={...})``: BASE_SERVICE plus fields, validated from pillar."""

    def make(environment: str = "production", **fields: Any) -> ServiceSpec:
        service = {**BASE_SERVICE, **fields}
        pillar = {"dockerops": {"environment": environment, "services": {"web": service}}}
        return load_service(pillar, "web")

    return make


@pytest.fixture
def list_entry() -> Callable[..., dict[str, Any]]:
    """The container list API's entry for a container created from ``replica``."""

    def make(
        replica: DesiredReplica,
        *,
        state: str = "running",
        status: str = "Up 5 minutes",
        name: str | None = None,
        container_id: str | None = None,
        labels: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return {
            "Ports": ports or [],
            "Id": container_id or f"{replica.name}-0123456789abcdef0123456789abcdef",
            "Names": [f"/{name or replica.name}"],
            "Image": "sha256:0123456789ab",
            "Labels": {**replica.docker_labels(), **(labels or {})},
            "State": state,
            "Status": status,
        }

    return make


@pytest.fixture
def actual(list_entry: Callable[..., dict[str, Any]]) -> Callable[..., ActualReplica]:
    """``actual(replica, state=..., name=..., labels=...)``: what Docker lists for it."""

    def make(replica: DesiredReplica, **kwargs: Any) -> ActualReplica:
        return actual_from_list_entry(list_entry(replica, **kwargs))

    return make
