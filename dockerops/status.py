"""What runs on this host, per service and per replica."""

from __future__ import annotations

from typing import Any

from .errors import SpecError
from .host import DockerHost
from .ledger import Ledger
from .plan import plan_service
from .records import DEFAULT_STATE_DIR, ServiceRecord
from .replicas import desired_replicas
from .spec import ServiceSpec


def replica_status(
    host: DockerHost, service: str | None = None, state_dir: str = DEFAULT_STATE_DIR
) -> dict[str, list[dict[str, Any]]]:
    """Per service, per replica: container, image, state, health, restart count,
    and the config version it runs (for live-mounted config: the one it loaded)."""
    out: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, dict[str, str]] = {}
    proven: dict[str, set[str] | None] = {}
    for container in sorted(host.managed(service), key=lambda c: (c.service, c.index or 0)):
        if container.service not in seen:
            try:
                record = ServiceRecord(state_dir, container.service)
                ledger = Ledger(state_dir, container.service)
            except SpecError:  # a label no service of ours carries: nothing recorded
                seen[container.service], proven[container.service] = {}, set()
            else:
                seen[container.service] = record.config_seen()
                proven[container.service] = ledger.proven()
        known = proven[container.service]
        details = host.inspect(container.id)
        state = details.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        out.setdefault(container.service, []).append(
            {
                "replica": container.index,
                "container": container.name,
                "id": container.id[:12],
                "image": container.image,
                "state": container.state,
                "health": health,
                "restart_count": int(details.get("RestartCount") or 0),
                "ports": _published(details),
                "started_at": state.get("StartedAt"),
                "config_version": seen[container.service].get(container.id)
                or container.config_version
                or None,
                "environment": container.environment,
                # False: left by an interrupted run, never seen healthy (the next
                # run proves or replaces it). None: no record from before.
                "proven": None if known is None else container.id in known,
            }
        )
    return out


def services_overview(
    host: DockerHost, specs: list[ServiceSpec], config_versions: dict[str, str | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Desired vs running for every pillar service, plus containers no pillar asks for.

    ``config_versions`` gives each service's rendered config version.
    """
    running = host.managed()
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        mine = [c for c in running if c.service == spec.name]
        version = (config_versions or {}).get(spec.name)
        pending = plan_service(desired_replicas(spec, version), mine)
        out[spec.name] = {
            "image": spec.image_ref,
            "config_version": version,
            "desired": spec.replicas,
            "running": sum(1 for c in mine if c.state == "running"),
            "in_sync": not pending,
            "pending": [f"{a.kind} {a.name}" for a in pending],
        }
    declared = {spec.name for spec in specs}
    for container in running:
        if container.service not in declared:
            entry = out.setdefault(
                container.service,
                {
                    "image": container.image,
                    "desired": 0,
                    "running": 0,
                    "in_sync": False,
                    "pending": [],
                    "orphaned": True,
                },
            )
            entry["running"] += container.state == "running"
            entry["pending"].append(f"remove {container.name} (not in pillar)")
    return out


def _published(details: dict[str, Any]) -> list[str]:
    """``host_ip:host_port->container_port/proto`` for every published port."""
    bindings = (details.get("HostConfig") or {}).get("PortBindings") or {}
    out = []
    for container_port, hosts in sorted(bindings.items()):
        for host in hosts or []:
            out.append(
                f"{host.get('HostIp') or '0.0.0.0'}:{host.get('HostPort')}->{container_port}"
            )
    return out
