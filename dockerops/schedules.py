"""Backups on a schedule, and when the last one succeeded (pure, apart from
reading the record).

The formula (``salt/dockerops/backups.sls``) gives each pillar service with
``backup: {schedule: ...}`` an entry in the minion's own Salt scheduler, named
``dockerops-backup-<service>``, that runs ``dockerops.backup <service>``.
:func:`backup_schedules` says, in one call, which entries to keep, which to
remove and which to leave alone because pillar is invalid.

``dockerops.status``, the grain and the metrics file show each service's last
successful backup from its record (:class:`dockerops.backup.BackupRecord`,
``<state_dir>/backups/<service>.json``): :func:`read_outcomes` reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .backup import BackupRecord
from .errors import SpecError
from .spec import PILLAR_KEY, deep_merge, load_root, load_service

# Every scheduler entry the formula writes is named so (backups.sls): one
# named so whose service no longer has a schedule is the formula's to remove.
JOB_PREFIX = "dockerops-backup-"


def declared_backups(pillar: Mapping[str, Any]) -> dict[str, Any]:
    """Each pillar service's ``backup`` as declared (service over
    ``dockerops:defaults``), for the services that declare one, not validated:
    an invalid one still says that a backup is wanted."""
    raw = pillar.get(PILLAR_KEY)
    services = raw.get("services") if isinstance(raw, Mapping) else None
    if not isinstance(services, Mapping):
        return {}
    defaults = raw.get("defaults") if isinstance(raw, Mapping) else None
    if not isinstance(defaults, Mapping):
        defaults = {}
    out = {}
    for name, declared in services.items():
        if not isinstance(name, str) or not isinstance(declared, Mapping):
            continue
        backup = deep_merge(defaults, declared).get("backup")
        if backup is not None:
            out[name] = backup
    return out


def backup_schedules(
    pillar: Mapping[str, Any],
    scheduled: Iterable[str] = (),
    allow_privileged: bool = False,
) -> dict[str, Any]:
    """What the formula does to the minion's scheduler for backups.

    ``scheduled``: the names of the entries the minion's scheduler has now.
    Returns:

    - ``schedules``: per valid service with ``backup:schedule``, its scheduler
      keys (:meth:`dockerops.spec.BackupSchedule.scheduler_args`);
    - ``invalid``: per service that asks for a schedule but fails validation
      (or no repository is set), its problems: its entry, if any, is left as
      it is (a typo in pillar never stops backups silently) and its state fails;
    - ``stale``: the ``dockerops-backup-*`` entries of services that no longer
      have a schedule, to remove;
    - ``problems``: an invalid top of pillar (then nothing else: nothing is
      added or removed).
    """
    try:
        root = load_root(pillar)
    except SpecError as err:
        return {"schedules": {}, "invalid": {}, "stale": [], "problems": err.problems}
    schedules: dict[str, dict[str, Any]] = {}
    invalid: dict[str, list[str]] = {}
    for name, backup in sorted(declared_backups(pillar).items()):
        # Only a backup that may ask for a schedule is validated: every highstate asks.
        if isinstance(backup, Mapping) and backup.get("schedule") is None:
            continue
        try:
            spec = load_service(pillar, name, allow_privileged=allow_privileged)
        except SpecError as err:
            invalid[name] = err.problems
            continue
        if spec.backup is None or spec.backup.schedule is None:
            continue
        missing = [key for key in ("repository", "password") if getattr(root.backup, key) is None]
        if missing:
            invalid[name] = [
                f"{PILLAR_KEY}:backup: {' and '.join(missing)} not set "
                f"({PILLAR_KEY}:services:{name}:backup:schedule needs "
                f"{'them' if len(missing) > 1 else 'it'})"
            ]
            continue
        schedules[name] = spec.backup.schedule.scheduler_args()
    stale = sorted(
        job
        for job in scheduled
        if isinstance(job, str)
        and job.startswith(JOB_PREFIX)
        and job[len(JOB_PREFIX) :] not in schedules
        and job[len(JOB_PREFIX) :] not in invalid
    )
    return {"schedules": schedules, "invalid": invalid, "stale": stale, "problems": []}


@dataclass(frozen=True)
class BackupOutcomes:
    """A service's last successful and last failed backup, as recorded (None: none)."""

    last_success: Mapping[str, Any] | None = None
    last_failure: Mapping[str, Any] | None = None


def _outcome(entry: Any) -> Mapping[str, Any] | None:
    """An entry of the record with a usable ``time``; None otherwise."""
    if not isinstance(entry, Mapping):
        return None
    when = entry.get("time")
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    if not math.isfinite(when) or when <= 0:
        return None
    return entry


def read_outcomes(state_dir: str, service: str) -> BackupOutcomes:
    """The record :mod:`dockerops.backup` keeps of ``service``'s backups, both
    outcomes from one small file read. A missing, torn or foreign-shaped record
    reads as no backup yet; a name that is no service name raises SpecError
    (it would name another file)."""
    record = BackupRecord(state_dir, service).load()
    return BackupOutcomes(
        _outcome(record.get("last_success")), _outcome(record.get("last_failure"))
    )


def _shown(entry: Mapping[str, Any] | None, detail: str, now: float) -> dict[str, Any] | None:
    if entry is None:
        return None
    when = float(entry["time"])
    value = entry.get(detail)
    return {
        "time": when,
        # A clock set back shows 0, not a negative age.
        "age": round(max(0.0, now - when), 3),
        detail: value if isinstance(value, str) else None,
    }


def last_backup(outcomes: BackupOutcomes, now: float) -> dict[str, Any] | None:
    """``{time, age, snapshot}`` of the last successful backup (``age`` in
    seconds at ``now``), as ``dockerops.status`` shows it; None: none yet."""
    return _shown(outcomes.last_success, "snapshot", now)


def last_backup_failure(outcomes: BackupOutcomes, now: float) -> dict[str, Any] | None:
    """``{time, age, error}`` of the last failed backup; None: none yet."""
    return _shown(outcomes.last_failure, "error", now)


def last_backup_time(state_dir: str, service: str) -> float | None:
    """When ``service``'s last successful backup started (Unix time), for
    the grain; None: none, or no service name (a label no service of ours carries)."""
    try:
        success = read_outcomes(state_dir, service).last_success
    except SpecError:
        return None
    return None if success is None else float(success["time"])
