"""Log settings outside the container: file logs for the formula, and which
replicas still run old log settings (pure).

A service declaring ``logs: {path: /var/log/app}`` gets, per slot, the host
directory ``<dockerops:logs:root>/<service>/<slot>/`` mounted at that path (the
``logs`` input, :mod:`dockerops.inputs`), so the files the application writes
there (error.log, access.log) outlive its container. The formula asks
:func:`file_log_services` once for what to forward and rotate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SpecError
from .inputs import INPUTS, digest
from .spec import ServiceSpec, deep_merge, load_root, load_service

# The inputs that make up a replica's log settings.
LOG_INPUTS = ("logging", "logs")


def file_log_services(
    pillar: Mapping[str, Any], allow_privileged: bool = False
) -> dict[str, dict[str, Any]]:
    """Per pillar service that declares ``logs``: its host directory, the
    container path, its environment and its slots (replicas and start-first
    spares: a replica may run in any of them), sorted by service.

    A service that fails validation is left out: its own states fail, naming
    the pillar path. Raises SpecError only for an invalid top of pillar.
    """
    root = load_root(pillar)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(root.services):
        declared = root.services[name]
        # Only those that declare logs are validated: every highstate asks.
        if not isinstance(declared, Mapping) or not deep_merge(root.defaults, declared).get("logs"):
            continue
        try:
            spec = load_service(pillar, name, allow_privileged=allow_privileged)
        except SpecError:
            continue
        if spec.logs is None or spec.log_dir is None:
            continue
        settings = root.logs
        out[name] = {
            "dir": spec.log_dir,
            "path": spec.logs.path,
            "environment": spec.environment,
            "slots": list(range(1, spec.slots + 1)),
            # What the formula writes for it, and where.
            "filebeat_file": f"{settings.filebeat_dir}/dockerops-{name}.yml",
            "rsyslog_file": f"{settings.rsyslog_dir}/dockerops-{name}.conf",
            "logrotate_file": f"{settings.logrotate_dir}/dockerops-{name}",
            "rotate": {
                "frequency": settings.frequency,
                "rotate": settings.rotate,
                "maxsize": settings.maxsize,
            },
        }
    return out


def rsyslog_module_file(pillar: Mapping[str, Any]) -> str | None:
    """Where the formula loads rsyslog's imfile module once for every service's
    input (rsyslog refuses a second load), or None when pillar says the admin's
    rsyslog config loads it (``dockerops:logs:rsyslog_load_imfile: false``)."""
    settings = load_root(pillar).logs
    if not settings.rsyslog_load_imfile:
        return None
    return f"{settings.rsyslog_dir}/00-dockerops-imfile.conf"


def log_settings(spec: ServiceSpec) -> dict[str, str]:
    """The hashes of the service's log inputs (logging driver and options, file
    logs), as its containers' labels record them when created from pillar now."""
    out = {}
    for entry in INPUTS:
        if entry.name in LOG_INPUTS:
            value = entry.value(spec, None)
            hashed = entry.hashed(spec, value) if value is not None else None
            if hashed is not None or entry.legacy:
                out[entry.name] = digest(hashed)
    return out


def pillar_log_settings(
    pillar: Mapping[str, Any], allow_privileged: bool = False
) -> dict[str, dict[str, str]]:
    """:func:`log_settings` of every valid pillar service (invalid ones: left out)."""
    out = {}
    try:
        names = sorted(load_root(pillar).services)
    except SpecError:
        return {}
    for name in names:
        try:
            out[name] = log_settings(load_service(pillar, name, allow_privileged=allow_privileged))
        except SpecError:
            continue
    return out


def old_log_settings(container_inputs: Mapping[str, str], wanted: Mapping[str, str]) -> bool | None:
    """Whether a container runs other log settings than pillar asks for now.

    ``container_inputs`` are the per-input hashes its labels record; None when
    they record none (a container of an early release: unknown).
    """
    if not container_inputs:
        return None
    return any(container_inputs.get(name) != wanted.get(name) for name in LOG_INPUTS)


def formula_file_logs(pillar: Mapping[str, Any], allow_privileged: bool = False) -> dict[str, Any]:
    """What the formula writes for file logs: per service (:func:`file_log_services`),
    the file loading rsyslog's imfile module (:func:`rsyslog_module_file`), and
    the ``problems`` of a pillar whose top is invalid (then nothing else)."""
    try:
        services = file_log_services(pillar, allow_privileged)
        module = rsyslog_module_file(pillar) if services else None
    except SpecError as err:  # the formula renders one failing state saying so
        return {"services": {}, "rsyslog_module_file": None, "problems": err.problems}
    return {"services": services, "rsyslog_module_file": module, "problems": []}
