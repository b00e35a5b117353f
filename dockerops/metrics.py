"""The services' state as Prometheus metrics, for node_exporter's textfile collector.

Every ``dockerops.running``/``absent`` state run (once, after its last dockerops
state) and the beacon write one file, by default
``/var/lib/prometheus/node-exporter/dockerops.prom`` (minion option
``dockerops.metrics_file``; an empty value turns it off). node_exporter serves
it on its next scrape.

Three steps, each on its own: :func:`collect` reads what runs (one
:func:`dockerops.status.replica_status`) and each service's last rollout from
its history; :func:`render` is a pure function from that to the text format;
:func:`write_textfile` replaces the file atomically without following a
symlink. Each metric is one row of :data:`FAMILIES`: a new one (the time of a
service's last successful backup, for instance) is a field of
:class:`ServiceState` and one row there.

Label values come from pillar and from container labels, which a hostile
container's creator may have set: they are escaped, and a series is never
written twice (node_exporter would then drop the whole file).
"""

from __future__ import annotations

import calendar
import contextlib
import math
import os
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from salt.exceptions import SaltInvocationError

from .errors import DockerError, SpecError
from .history import History
from .host import DockerHost
from .monitoring import CrashLoopPolicy
from .safepath import Dir, UnsafePath
from .schedules import declared_backups, read_outcomes
from .spec import load_service, service_names
from .status import crash_loop_policy, replica_status

# Debian's prometheus-node-exporter reads ``*.prom`` files here (its textfile collector).
DEFAULT_METRICS_FILE = "/var/lib/prometheus/node-exporter/dockerops.prom"
# Readable by node_exporter's user; nothing in it is secret (names, images, counts).
FILE_MODE = 0o644

Labels = dict[str, str]
Sample = tuple[Labels, float]


class MetricsError(DockerError):
    """The metrics file could not be written (a full disk, a read-only mount)."""


def metrics_file(opts: Mapping[str, Any]) -> str | None:
    """The metrics file: minion option ``dockerops.metrics_file`` (None: turned off).

    An absolute path; ``""`` or ``False`` turns the metrics off.
    """
    value = opts.get("dockerops.metrics_file", DEFAULT_METRICS_FILE)
    if value is None or value is False or value == "":
        return None
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.endswith("/")
        or "\0" in value
        or os.path.basename(value) in (".", "..")
    ):
        raise SaltInvocationError(
            "minion option dockerops.metrics_file must be an absolute file path "
            f"(or empty to write no metrics), not {value!r}"
        )
    return value


@dataclass(frozen=True)
class LastRollout:
    """A service's last rollout, from its history."""

    success: bool
    duration_seconds: float
    # When it ended (Unix time): the history records its start and duration.
    finished_seconds: float


@dataclass(frozen=True)
class ServiceState:
    """What the metrics say about one service.

    ``desired``: the replica count pillar (or this state run) declares; None for
    a service pillar does not declare, or declares invalidly. ``replicas``: its
    rows of :func:`dockerops.status.replica_status`.
    """

    name: str
    desired: int | None = None
    replicas: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    last_rollout: LastRollout | None = None
    # Pillar declares a backup for it (valid or not): "configured but never
    # succeeded" can then be alerted on.
    backup_configured: bool = False
    # When its last successful / failed backup started (Unix time).
    last_backup_success: float | None = None
    last_backup_failure: float | None = None


def _running(row: Mapping[str, Any]) -> bool:
    return row.get("state") == "running"


def _healthy(row: Mapping[str, Any]) -> bool:
    """Running and passing its health check; one without a check counts once running."""
    return _running(row) and row.get("health") in (None, "healthy")


def _replica_labels(service: ServiceState, row: Mapping[str, Any]) -> Labels:
    slot = row.get("slot")
    return {
        "service": service.name,
        "slot": "" if slot is None else str(slot),
        "container": str(row.get("container") or ""),
        "environment": str(row.get("environment") or ""),
        "image": str(row.get("image") or ""),
    }


def _per_service(
    value: Callable[[ServiceState], float | None],
) -> Callable[[ServiceState], Iterable[Sample]]:
    def samples(service: ServiceState) -> Iterable[Sample]:
        number = value(service)
        if number is not None:
            yield {"service": service.name}, number

    return samples


def _per_replica(
    value: Callable[[Mapping[str, Any]], float],
) -> Callable[[ServiceState], Iterable[Sample]]:
    def samples(service: ServiceState) -> Iterable[Sample]:
        for row in service.replicas:
            yield _replica_labels(service, row), value(row)

    return samples


def _config_versions(service: ServiceState) -> Iterable[Sample]:
    # Two lines while a rollout moves replicas from one version to the next.
    versions = {str(row["config_version"]) for row in service.replicas if row.get("config_version")}
    for version in sorted(versions):
        yield {"service": service.name, "version": version}, 1


def _rollout(value: Callable[[LastRollout], float]) -> Callable[[ServiceState], float | None]:
    def of(service: ServiceState) -> float | None:
        return None if service.last_rollout is None else value(service.last_rollout)

    return of


@dataclass(frozen=True)
class Family:
    """One metric: its name, type, help, and its samples for one service."""

    name: str
    kind: str
    help: str
    samples: Callable[[ServiceState], Iterable[Sample]]


FAMILIES: tuple[Family, ...] = (
    Family(
        "dockerops_service_replicas_desired",
        "gauge",
        "Replicas pillar declares for the service.",
        _per_service(lambda s: s.desired),
    ),
    Family(
        "dockerops_service_replicas_running",
        "gauge",
        "Replicas of the service whose container is running.",
        _per_service(lambda s: sum(1 for row in s.replicas if _running(row))),
    ),
    Family(
        "dockerops_service_replicas_healthy",
        "gauge",
        "Running replicas of the service that pass their health check (or have none).",
        _per_service(lambda s: sum(1 for row in s.replicas if _healthy(row))),
    ),
    Family(
        "dockerops_replica_restarts_total",
        "counter",
        "Times Docker restarted the replica's container.",
        _per_replica(lambda row: int(row.get("restart_count") or 0)),
    ),
    Family(
        "dockerops_replica_crash_loop",
        "gauge",
        "1 when the replica restarted too often within the crash-loop window.",
        _per_replica(lambda row: bool(row.get("crash_loop", False))),
    ),
    Family(
        "dockerops_replica_gave_up",
        "gauge",
        "1 when Docker will not restart the exited replica again.",
        _per_replica(lambda row: bool(row.get("gave_up", False))),
    ),
    Family(
        "dockerops_service_last_rollout_success",
        "gauge",
        "1 when the service's last rollout succeeded, 0 when it failed.",
        _per_service(_rollout(lambda r: r.success)),
    ),
    Family(
        "dockerops_service_last_rollout_duration_seconds",
        "gauge",
        "How long the service's last rollout took.",
        _per_service(_rollout(lambda r: r.duration_seconds)),
    ),
    Family(
        "dockerops_service_last_rollout_timestamp_seconds",
        "gauge",
        "When the service's last rollout ended (Unix time).",
        _per_service(_rollout(lambda r: r.finished_seconds)),
    ),
    Family(
        "dockerops_service_config_info",
        "gauge",
        "The config version the service's replicas run (always 1).",
        _config_versions,
    ),
    Family(
        "dockerops_backup_configured",
        "gauge",
        "1 when pillar declares a backup for the service.",
        _per_service(lambda s: True if s.backup_configured else None),
    ),
    Family(
        "dockerops_backup_last_success_timestamp_seconds",
        "gauge",
        "When the service's last successful backup started (Unix time).",
        _per_service(lambda s: s.last_backup_success),
    ),
    Family(
        "dockerops_backup_last_failure_timestamp_seconds",
        "gauge",
        "When the service's last failed backup started (Unix time).",
        _per_service(lambda s: s.last_backup_failure),
    ),
)


def escape_label_value(value: str) -> str:
    """A label value as the text format quotes it: ``\\``, ``"`` and newline escaped.

    Text that is not valid UTF-8 (a lone surrogate decoded from JSON) is
    replaced, so the file always encodes.
    """
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the text format writes it (booleans as 1/0)."""
    if isinstance(value, int):  # bool too: 1 or 0
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(services: Iterable[ServiceState], families: Sequence[Family] = FAMILIES) -> str:
    """The Prometheus text exposition format of ``services`` (pure).

    Families without samples are left out; a label set seen twice in a family
    keeps its first sample (node_exporter refuses a file with duplicates).
    """
    ordered = sorted(services, key=lambda s: s.name)
    lines: list[str] = []
    for family in families:
        seen: set[tuple[tuple[str, str], ...]] = set()
        body: list[str] = []
        for service in ordered:
            for labels, value in family.samples(service):
                key = tuple(sorted(labels.items()))
                if key in seen:
                    continue
                seen.add(key)
                text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
                body.append(f"{family.name}{{{text}}} {format_value(value)}")
        if body:
            lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            lines.extend(body)
    return "".join(line + "\n" for line in lines)


def last_rollout(entry: Mapping[str, Any] | None) -> LastRollout | None:
    """A history entry as a :class:`LastRollout` (None: none, or not readable)."""
    if not entry:
        return None
    try:
        started = calendar.timegm(time.strptime(str(entry["when"]), "%Y-%m-%dT%H:%M:%SZ"))
        duration = float(entry.get("duration") or 0.0)
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(duration) or duration < 0:
        return None
    return LastRollout(entry.get("result") is True, duration, started + duration)


def _history_last(state_dir: str, service: str) -> LastRollout | None:
    try:
        entries = History(state_dir, service).entries(1)
    except SpecError:  # a label no service of ours carries: no history
        return None
    return last_rollout(entries[-1] if entries else None)


def desired_counts(
    pillar: Mapping[str, Any],
    known: Mapping[str, int] | None = None,
    allow_privileged: bool = False,
) -> dict[str, int | None]:
    """Each pillar service's replica count: ``known`` ones as given (the state
    run's own), the others validated from pillar. A service that fails
    validation is listed with None (its replicas are still reported), and a
    pillar whose root is invalid gives only ``known``: metrics never fail on pillar.
    """
    out: dict[str, int | None] = dict(known or {})
    try:
        names = service_names(pillar)
    except SpecError:
        return out
    for name in names:
        if name in out:
            continue
        try:
            out[name] = load_service(pillar, name, allow_privileged=allow_privileged).replicas
        except SpecError:
            out[name] = None
    return out


def pillar_crash_loop(pillar: Mapping[str, Any]) -> CrashLoopPolicy | None:
    """``dockerops:monitoring:crash_loop``; None (the default) when it is invalid."""
    try:
        return crash_loop_policy(pillar)
    except SpecError:
        return None


def collect(
    host: DockerHost,
    state_dir: str,
    desired: Mapping[str, int | None],
    crash_loop: CrashLoopPolicy | None = None,
    rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    backed_up: Collection[str] = (),
) -> list[ServiceState]:
    """Every service pillar declares (``desired``) or that has containers here.

    ``rows``: ``dockerops.status`` rows the caller already has (the beacon),
    so the containers are not inspected twice. ``backed_up``: the services
    pillar declares a backup for."""
    if rows is None:
        rows = replica_status(host, None, state_dir, crash_loop)
    out = []
    for name in sorted(set(desired) | set(rows)):
        success, failure = _backup_times(state_dir, name, rows.get(name, ()), name in backed_up)
        out.append(
            ServiceState(
                name=name,
                desired=desired.get(name),
                replicas=tuple(rows.get(name, ())),
                last_rollout=_history_last(state_dir, name),
                backup_configured=name in backed_up,
                last_backup_success=success,
                last_backup_failure=failure,
            )
        )
    return out


def _backup_times(
    state_dir: str, service: str, rows: Sequence[Mapping[str, Any]], configured: bool
) -> tuple[float | None, float | None]:
    """When the service's last backup succeeded and failed: from its status
    rows, which carry its record already, else read from the record (for a
    service with a backup in pillar only: the others have nothing to show)."""
    if rows and "last_backup" in rows[0]:
        shown = (rows[0].get("last_backup"), rows[0].get("last_backup_failure"))
        return _time_of(shown[0]), _time_of(shown[1])
    if not configured:
        return None, None
    try:
        outcomes = read_outcomes(state_dir, service)
    except SpecError:  # no service name: no record
        return None, None
    return _time_of(outcomes.last_success), _time_of(outcomes.last_failure)


def _time_of(entry: Any) -> float | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("time"), (int, float)):
        return None
    return float(entry["time"])


def write_textfile(path: str, text: str) -> bool:
    """Replace the file ``path`` with ``text`` atomically; False when its directory
    does not exist (no textfile collector there: nothing is created).

    A temporary file is created (``O_EXCL | O_NOFOLLOW``) beside it, fsynced and
    renamed over it; a reader sees the old file or the new one, never a part.
    The temporary name does not end in ``.prom``, so node_exporter never reads
    it. A symlink or anything but a regular file at ``path`` is refused
    (UnsafePath), never followed or replaced. The directory is the admin's
    (a minion option), opened as given.
    """
    directory, name = os.path.split(path)
    try:
        parent = Dir.open_trusted(directory or "/")
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as err:
        raise MetricsError(f"could not open {directory}: {err.strerror or err}") from err
    with parent:
        info = parent.lstat(name)
        if info is not None and not stat.S_ISREG(info.st_mode):
            what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise UnsafePath(
                f"{path} is {what}: dockerops does not follow or replace it "
                "(something other than dockerops put it there)"
            )
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            parent.write_file(temporary, text.encode("utf-8"), FILE_MODE)
            # rename replaces a symlink planted since the check, never follows it.
            parent.rename(temporary, name)
            parent.fsync()
        except BaseException as err:
            with contextlib.suppress(OSError):
                parent.unlink(temporary)
            if isinstance(err, OSError):
                raise MetricsError(f"could not write {path}: {err.strerror or err}") from err
            raise
    return True


def write_metrics(
    host: DockerHost,
    path: str,
    state_dir: str,
    pillar: Mapping[str, Any],
    known: Mapping[str, int] | None = None,
    allow_privileged: bool = False,
    rows: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> bool:
    """Collect, render and write the metrics to ``path`` (False: its directory is missing).

    ``known``: replica counts the running state run declared (see
    :func:`desired_counts`). Pillar problems never stop it.
    """
    if not os.path.isdir(os.path.dirname(path) or "/"):
        return False  # checked first: no container is inspected for nothing
    desired = desired_counts(pillar, known, allow_privileged)
    backed_up = set(declared_backups(pillar))
    services = collect(host, state_dir, desired, pillar_crash_loop(pillar), rows, backed_up)
    return write_textfile(path, render(services))
