"""What runs on this host, per service and per replica."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import SpecError
from .filelogs import old_log_settings
from .host import DockerHost, inspect_all
from .inputs import read_back
from .ledger import Ledger
from .monitoring import CrashLoopPolicy, replica_monitoring
from .plan import plan_service
from .records import DEFAULT_STATE_DIR, ServiceRecord
from .replicas import LABEL_IMAGE_CONFIG_VERSION, ActualReplica, desired_replicas
from .restarts import RestartSamples
from .schedules import BackupOutcomes, last_backup, last_backup_failure, read_outcomes
from .spec import ServiceSpec, load_monitoring


def replica_status(
    host: DockerHost,
    service: str | None = None,
    state_dir: str = DEFAULT_STATE_DIR,
    crash_loop: CrashLoopPolicy | None = None,
    now: float | None = None,
    log_settings: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Per service, per replica: container, image, state, health, restart count,
    the config version it runs (for live-mounted config: the one it loaded),
    and how it runs (:func:`dockerops.monitoring.replica_monitoring`).

    Each look notes the restart counts (:class:`RestartSamples`), so that a
    crash loop (``crash_loop`` restarts within its window) can be timed.
    """
    policy = crash_loop or CrashLoopPolicy()
    clock = time.time() if now is None else now
    out: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, dict[str, str]] = {}
    proven: dict[str, set[str] | None] = {}
    last_stop: dict[str, dict[str, Any] | None] = {}
    backups: dict[str, BackupOutcomes] = {}
    listed = sorted(host.managed(service, kept=True), key=lambda c: (c.service, c.index or 0))
    # One removed between the list and its inspect (a rollout retiring it
    # while status runs) no longer runs, so it is not shown.
    found = inspect_all(host, [c.id for c in listed])
    inspected = {cid: details for cid, details in found.items() if details is not None}
    gone = {cid for cid, details in found.items() if details is None}
    samples: dict[str, list[Any]] = {}
    for name in sorted({c.service for c in listed}):
        counts = {
            c.id: int(inspected[c.id].get("RestartCount") or 0)
            for c in listed
            if c.service == name and c.id in inspected
        }
        # A label no service of ours carries (SpecError): nothing kept.
        with contextlib.suppress(SpecError):
            samples.update(RestartSamples(state_dir, name).observe(counts, clock, policy.window))
    for container in listed:
        if container.id in gone:
            continue
        details = inspected[container.id]
        if container.service not in seen:
            try:
                record = ServiceRecord(state_dir, container.service)
                ledger = Ledger(state_dir, container.service)
            except SpecError:  # a label no service of ours carries: nothing recorded
                seen[container.service], proven[container.service] = {}, set()
                last_stop[container.service] = None
                backups[container.service] = BackupOutcomes()
            else:
                seen[container.service] = record.config_seen()
                proven[container.service] = ledger.proven()
                last_stop[container.service] = ledger.last_stop()
                backups[container.service] = read_outcomes(state_dir, container.service)
        known = proven[container.service]
        state = details.get("State") or {}
        health = (state.get("Health") or {}).get("Status")
        out.setdefault(container.service, []).append(
            {
                # The slot it occupies (not a count: 3 and 4 after a start-first rollout).
                "slot": container.index,
                "container": container.name,
                "id": container.id[:12],
                "image": container.image,
                "state": container.state,
                "health": health,
                "restart_count": int(details.get("RestartCount") or 0),
                "ports": _published(details),
                # Each input as docker inspect reports it (image defaults included).
                "settings": read_back(details),
                # True: created with other log settings than pillar's now
                # (dockerops.filelogs); the next state run recreates it.
                "old_log_settings": _old_log_settings(container, log_settings),
                # Last exit, OOM kill, health-check output, gave up (dockerops.monitoring).
                **replica_monitoring(details, samples.get(container.id, ()), clock, policy),
                "config_version": seen[container.service].get(container.id)
                or container.config_version
                or _image_config_version(details),
                "environment": container.environment,
                # False: left by an interrupted run, never seen healthy (the next
                # run proves or replaces it). None: no record from before.
                "proven": None if known is None else container.id in known,
                # The service's last replica stop (the same for each of its
                # replicas): its container is gone, but a kill after the grace
                # period says what to set (init, stop_signal). None: none recorded.
                "last_stop": last_stop[container.service],
                # The service's last successful backup ({time, age, snapshot}) and
                # last failed one ({time, age, error}), from its record (None: none).
                "last_backup": last_backup(backups[container.service], clock),
                "last_backup_failure": last_backup_failure(backups[container.service], clock),
            }
        )
    for name, rows in out.items():
        # The same for each of the service's replicas, like last_stop.
        answering = service_ports(c for c in listed if c.service == name and c.id not in gone)
        for row in rows:
            row["service_ports"] = answering
    return out


def services_grain(containers: Iterable[ActualReplica]) -> dict[str, dict[str, Any]]:
    """The ``dockerops:services`` grain: per service with containers here, the
    image:tag most of its running replicas run (of all its containers when
    none runs; ``images`` lists them all while a rollout mixes them) and how
    many run. Targets such as ``salt -G 'dockerops:services:web:*'`` or
    ``salt -G 'dockerops:services:web:image:*:1.4'`` select by it."""
    running: dict[str, dict[str, int]] = {}
    every: dict[str, dict[str, int]] = {}
    for container in containers:
        for table, counted in ((every, True), (running, container.state == "running")):
            images = table.setdefault(container.service, {})
            if counted:
                images[container.image] = images.get(container.image, 0) + 1
    out: dict[str, dict[str, Any]] = {}
    for service, images in every.items():
        counts = running[service] or images
        ranked = sorted(counts, key=lambda image: (-counts[image], image))
        out[service] = {"image": ranked[0], "replicas": sum(running[service].values())}
        if len(ranked) > 1:
            out[service]["images"] = sorted(ranked)
    return out


def crash_loop_policy(pillar: Any) -> CrashLoopPolicy:
    """The crash-loop policy ``dockerops:monitoring:crash_loop`` sets."""
    spec = load_monitoring(pillar).crash_loop
    return CrashLoopPolicy(restarts=spec.restarts, window=spec.window)


def _old_log_settings(
    container: ActualReplica, wanted: Mapping[str, Mapping[str, str]] | None
) -> bool | None:
    """None when pillar was not consulted or does not declare the service."""
    if wanted is None or container.service not in wanted:
        return None
    return old_log_settings(container.inputs, wanted[container.service])


def service_ports(containers: Iterable[ActualReplica]) -> list[str]:
    """Every host port a service answers on now: what its running containers
    publish (from the list call, no inspect), by slot. A start-first rollout
    moves them: slots 3-4 publish other host ports than slots 1-2 did."""
    out: list[str] = []
    for container in sorted(containers, key=lambda c: c.index or 0):
        if container.state == "running":
            out.extend(port for port in container.published if port not in out)
    return out


def services_overview(
    host: DockerHost, specs: list[ServiceSpec], config_versions: dict[str, str | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Desired vs running for every pillar service, plus the dockerops containers of
    services not in this pillar (``not_in_pillar``: listed, never acted on).

    ``config_versions`` gives each service's rendered config version.
    """
    running = host.managed(kept=True)
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
            # Another minion config sharing the daemon, or a service taken out of
            # pillar: no state run acts on it, so nothing is pending.
            entry = out.setdefault(
                container.service,
                {
                    "image": container.image,
                    "running": 0,
                    "containers": [],
                    "pending": [],
                    "not_in_pillar": True,
                    "note": (
                        "not managed by this pillar; "
                        f"`dockerops.remove {container.service}` removes it"
                    ),
                },
            )
            entry["running"] += container.state == "running"
            entry["containers"].append(container.name)
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


def _image_config_version(details: Mapping[str, Any]) -> str | None:
    """The config version a config image carries (its label, which Docker
    copies onto each container of it); None for any other image."""
    labels = (details.get("Config") or {}).get("Labels") or {}
    version = labels.get(LABEL_IMAGE_CONFIG_VERSION)
    return str(version) if version else None
