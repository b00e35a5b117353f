"""The host-local rollout engine: replace replicas, health-gated, with rollback.

Replacements go ``update.parallelism`` at a time. ``start-first`` starts each
replacement in a free slot (a spare host port) and stops the replica it
replaces only once the replacement counts, so capacity never drops below the
replica count; ``stop-first`` replaces in place and dips by at most
``parallelism``. A replacement counts when Docker reports it healthy and it
stays so, without restarting, for ``min_healthy_time``. Start-first overlaps
one batch's ``min_healthy_time`` with the start of the next ones (up to
``PIPELINE`` batches in flight, hence :meth:`UpdateSpec.spares`), so the hold
costs no more wall time than Swarm's unheld monitor period, without counting a
replica early. The first failure (not
healthy in time, unhealthy, exited, crash loop) stops the rollout; with
``update.rollback`` every replica already replaced is put back exactly as it
was (from its inspect), newest first, each health-gated the same way, without
ever stopping a replica before its predecessor is back where the slot allows.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .configcheck import replica_logs
from .errors import DockerError, NotFound, SpecError
from .host import POLL, Clock, DockerHost, HealthReport, HealthWatch
from .ledger import Ledger
from .plan import Action
from .replicas import DesiredReplica
from .spec import PILLAR_KEY, PIPELINE, ServiceSpec

Progress = Callable[[str, dict[str, Any]], None]
log = logging.getLogger(__name__)

# Docker's defaults for a HEALTHCHECK that leaves them unset.
_DEFAULT_INTERVAL = 30.0
_DEFAULT_RETRIES = 3
# Without a healthcheck, a replacement must at least keep running this long.
NO_HEALTHCHECK_SETTLE = 1.0


class RolloutFailed(DockerError):
    """A replacement did not become healthy (details in the message)."""

    def __init__(self, message: str, report: RolloutReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Replaced:
    action: Action
    before: dict[str, Any]
    new_id: str
    new_name: str


@dataclass
class RolloutReport:
    steps: list[str] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    previous_config: str | None = None


def event_bus_listens(opts: Mapping[str, Any]) -> bool:
    """Whether an event sent now reaches anyone.

    Under ``salt-call --local`` with no minion daemon there is no event bus, and
    Salt's ``event.send`` spends a second per event failing to reach it.
    """
    local = (
        opts.get("local")
        or opts.get("file_client") == "local"
        or opts.get("master_type") == "disable"
    )
    if not local or opts.get("ipc_mode", "ipc") != "ipc":
        return True
    sock_dir = opts.get("sock_dir")
    if not sock_dir:
        return True
    return bool(glob.glob(os.path.join(str(sock_dir), "minion_event_*_pull.ipc")))


def event_progress(send: Callable[[str, dict[str, Any]], Any] | None, service: str) -> Progress:
    """A :data:`Progress` that logs each step and fires it as an event.

    Events are tagged ``dockerops/rollout/<service>/<stage>`` and numbered
    (``seq`` from 1): a minion forwards events to the master concurrently, so
    they may arrive out of order. ``send`` is Salt's ``event.send`` (None: log
    only). An event that cannot be sent never breaks the rollout.
    """
    counter = itertools.count(1)

    def fire(stage: str, data: dict[str, Any]) -> None:
        details = " ".join(f"{key}={value}" for key, value in data.items())
        log.info("dockerops rollout %s: %s %s", service, stage, details)
        if send is None:
            return
        try:
            body = {"service": service, "seq": next(counter), **data}
            send(f"dockerops/rollout/{service}/{stage}", body)
        except Exception as err:
            log.debug("dockerops: event %s not sent: %s", stage, err)

    return fire


def detection_time(host: DockerHost, spec: ServiceSpec) -> float | None:
    """Seconds the effective healthcheck needs to notice a failure, or None without one."""
    if spec.healthcheck is not None:
        return spec.healthcheck.interval * spec.healthcheck.retries
    details = host.inspect_image(spec.image_ref)
    check = (details.get("Config") or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    interval = (check.get("Interval") or 0) / 1e9 or _DEFAULT_INTERVAL
    retries = check.get("Retries") or _DEFAULT_RETRIES
    return float(interval * retries)


def min_healthy_time(host: DockerHost, spec: ServiceSpec) -> float:
    """``update.min_healthy_time``, defaulted and checked against the healthcheck."""
    detect = detection_time(host, spec)
    wanted = spec.update.min_healthy_time
    if wanted is None:
        return detect if detect is not None else NO_HEALTHCHECK_SETTLE
    if detect is not None and wanted < detect:
        raise SpecError(
            [
                f"{PILLAR_KEY}:services:{spec.name}:update:min_healthy_time: {wanted:g}s is "
                f"shorter than the healthcheck needs to notice a failure ({detect:g}s = "
                "interval x retries): a broken version would be reported healthy"
            ]
        )
    return wanted


def describe_plan(spec: ServiceSpec, actions: list[Action]) -> list[str]:
    """The rollout plan in words: which replicas, in what order, from what to what."""
    lines = [f"{a.kind} {a.name}" for a in actions if a.kind not in ("recreate", "signal")]
    recreates = [a for a in actions if a.kind == "recreate"]
    size = spec.update.parallelism
    for number, start in enumerate(range(0, len(recreates), size), 1):
        batch = recreates[start : start + size]
        parts = []
        for action in batch:
            assert action.actual is not None and action.desired is not None
            others = [c for c in action.changed if c != "image"]
            change = ", ".join(others)
            if "image" in action.changed:
                image = f"{action.actual.image} -> {action.desired.image}"
                change = image + (f"; {change}" if change else "")
            parts.append(f"{action.name} ({change})")
        lines.append(f"batch {number} ({spec.update.order}): " + "; ".join(parts))
    lines.extend(f"{a.kind} {a.name}" for a in actions if a.kind == "signal")
    return lines


@dataclass
class _Member:
    """One replacement in a batch: the replica it replaces and its container."""

    action: Action
    name: str
    slot: int
    in_place: bool
    before: dict[str, Any] | None = None
    new_id: str = ""
    watch: HealthWatch | None = None
    counted: bool = False

    @property
    def healthy(self) -> bool:
        return self.counted or (self.watch is not None and self.watch.healthy)


@dataclass
class _Batch:
    number: int
    members: list[_Member]

    @property
    def healthy(self) -> bool:
        return all(m.healthy for m in self.members)

    @property
    def counted(self) -> bool:
        return all(m.counted for m in self.members)


def replace(
    host: DockerHost,
    spec: ServiceSpec,
    actions: list[Action],
    slots: dict[int, DesiredReplica],
    occupied: set[int],
    settle: float,
    all_at_once: bool = False,
    progress: Progress | None = None,
    clock: Clock | None = None,
    ledger: Ledger | None = None,
) -> RolloutReport:
    """Replace the containers of ``actions`` (kind ``recreate``); raise on failure.

    ``slots`` is the desired container of every slot, ``occupied`` the slots
    holding containers now. Start-first batches overlap: once every replacement
    in flight is healthy, the next batch starts in spare slots while the
    earlier ones prove themselves for ``settle`` seconds (``PIPELINE`` batches
    at most); an old replica is stopped only once its replacement counts. In-place batches
    (stop-first, or no spare slot) run one at a time. On failure, after rolling
    back (when enabled), the :class:`RolloutFailed` raised carries the report
    in ``err.report``.

    ``ledger`` records each replacement that counts before the replica it
    replaces is removed, and journals each replica stopped in place, so a run
    killed at any point can be recovered (see :mod:`dockerops.ledger`).
    """
    ledger = ledger or Ledger(None, spec.name)
    report = RolloutReport()
    notify = progress or (lambda _tag, _data: None)
    clock = clock or Clock()
    update = spec.update
    start_first = update.order == "start-first" and not all_at_once
    size = len(actions) if all_at_once else update.parallelism
    queue = deque(actions[i : i + size] for i in range(0, len(actions), size))
    total = len(queue)
    flying: list[_Batch] = []
    try:
        while queue or flying:
            if queue and _may_launch(len(queue[0]), flying, start_first, slots, occupied):
                batch = _Batch(total - len(queue) + 1, [])
                flying.append(batch)
                _launch(
                    host, spec, batch, queue.popleft(), slots, occupied, start_first, report, ledger
                )
                notify(
                    "batch",
                    {
                        "batch": batch.number,
                        "of": total,
                        "replicas": [m.action.name for m in batch.members],
                    },
                )
                for member in batch.members:
                    member.watch = HealthWatch(
                        member.name, update.health_timeout, settle, clock.now(), restarts=0
                    )
                    notify(
                        "replica",
                        {
                            "replica": member.name,
                            "state": "started",
                            "replaces": member.action.name,
                        },
                    )
                continue
            moved = _observe(host, flying, clock, notify, ledger)
            while flying and flying[0].counted:
                _finish(host, flying.pop(0), occupied, report, ledger)
                moved = True
            if not moved:
                clock.sleep(POLL)
    except DockerError as err:
        failed = [m.name for batch in flying for m in batch.members if m.new_id]
        report.steps.append(f"{', '.join(failed) or 'batch'}: {err}")
        # The cause is in the failed replacement's log: quote it before it is removed.
        logs = _failure_logs(host, spec, flying, str(err))
        if update.rollback:
            try:
                _undo(host, spec, flying, occupied, report, settle, notify, ledger)
            except DockerError as undo_err:
                # E.g. the daemon went away: what is left is proven or replaced
                # by the next run (dockerops.ledger); say so rather than hide it.
                report.steps.append(f"could not roll back: {undo_err}")
        else:
            # Told not to roll back: what was stopped in place stays stopped.
            for batch in flying:
                for member in batch.members:
                    if member.in_place:
                        ledger.settle(member.slot)
        raise RolloutFailed(f"{err}{logs}", report) from err
    return report


def _failure_logs(host: DockerHost, spec: ServiceSpec, flying: list[_Batch], error: str) -> str:
    """The last log lines of the replacement(s) the failure is about: the one
    ``error`` names, else every one started and not yet healthy."""
    started = [m for batch in flying for m in batch.members if m.new_id and not m.counted]
    named = [m for m in started if error.startswith(f"{m.name} ")]
    unhealthy = [m for m in started if m.watch is None or not m.watch.healthy]
    return "".join(
        replica_logs(host, m.new_id, m.name, spec.secret_values)
        for m in named or unhealthy or started
    )


def _undo(
    host: DockerHost,
    spec: ServiceSpec,
    flying: list[_Batch],
    occupied: set[int],
    report: RolloutReport,
    settle: float,
    notify: Progress,
    ledger: Ledger,
) -> None:
    """Replacements started beside their old replica go; replicas stopped in
    place come back with the earlier batches (:func:`rollback`)."""
    for batch in flying:
        for member in batch.members:
            if not member.in_place:
                if member.new_id:
                    host.remove(member.new_id, member.name, graceful=False)
                occupied.discard(member.slot)
            elif member.before is not None:
                report.replaced.append(
                    Replaced(member.action, member.before, member.new_id, member.name)
                )
    rollback(host, spec, report, settle, notify, ledger)


def _may_launch(
    size: int,
    flying: list[_Batch],
    start_first: bool,
    slots: dict[int, DesiredReplica],
    occupied: set[int],
) -> bool:
    """Whether the next batch may start now (see :func:`replace`)."""
    if not flying:
        return True
    if not start_first or len(flying) >= PIPELINE or not all(b.healthy for b in flying):
        return False
    return sum(1 for s in slots if s not in occupied) >= size


def _launch(
    host: DockerHost,
    spec: ServiceSpec,
    batch: _Batch,
    actions: list[Action],
    slots: dict[int, DesiredReplica],
    occupied: set[int],
    start_first: bool,
    report: RolloutReport,
    ledger: Ledger,
) -> None:
    """Choose each replacement's slot (stopping in-place ones first, all of the
    batch before any replacement starts), then create them."""
    for action in actions:
        assert action.actual is not None and action.index is not None
        if "config" in action.changed and report.previous_config is None:
            report.previous_config = action.actual.config_version or None
        slot = None
        if start_first:
            slot = min((s for s in slots if s not in occupied), default=None)
        if slot is None:  # stop-first, or no spare slot left: in place
            member = _Member(action, slots[action.index].name, action.index, True)
            member.before = host.inspect(action.actual.id)
            batch.members.append(member)
            # Journaled first: a run killed before its replacement counts puts it back.
            ledger.stop_in_place(action.index, member.before)
            host.remove(action.actual.id, action.name)
            occupied.discard(action.index)
        else:
            batch.members.append(_Member(action, slots[slot].name, slot, False))
        occupied.add(batch.members[-1].slot)
    for member in batch.members:
        member.new_id = host.create(slots[member.slot])
        report.touched.add(member.new_id)


def _observe(
    host: DockerHost, flying: list[_Batch], clock: Clock, notify: Progress, ledger: Ledger
) -> bool:
    """Inspect every replacement not yet counted; raise on the first failure.

    Returns whether anything moved on (became healthy, or counts now).
    """
    moved = False
    for batch in flying:
        for member in batch.members:
            if member.counted or member.watch is None:
                continue
            was_healthy = member.watch.healthy
            verdict = member.watch.observe(host.inspect(member.new_id), clock.now())
            if verdict is not None and not verdict.healthy:
                raise RolloutFailed(verdict.reason)
            if verdict is not None:
                # Recorded before the replica it replaces goes (see dockerops.ledger).
                ledger.prove(member.new_id)
                member.counted = True
                notify(
                    "replica",
                    {
                        "replica": member.name,
                        "state": "healthy",
                        "seconds": round(verdict.seconds, 2),
                    },
                )
            moved = moved or member.counted or member.watch.healthy != was_healthy
    return moved


def _finish(
    host: DockerHost, batch: _Batch, occupied: set[int], report: RolloutReport, ledger: Ledger
) -> None:
    """A batch counts: the replicas it replaces beside them stop now."""
    for member in batch.members:
        if member.in_place:
            ledger.settle(member.slot)
        action = member.action
        assert action.actual is not None and action.index is not None
        if not member.in_place:
            member.before = host.inspect(action.actual.id)
            host.remove(action.actual.id, action.name)
            occupied.discard(action.index)
        assert member.before is not None
        report.replaced.append(Replaced(action, member.before, member.new_id, member.name))
        why = ", ".join(action.changed)
        step = f"replaced {action.name}" + (
            f" by {member.name}" if member.name != action.name else ""
        )
        report.steps.append(f"{step} ({why})")


def rollback(
    host: DockerHost,
    spec: ServiceSpec,
    report: RolloutReport,
    settle: float,
    notify: Progress,
    ledger: Ledger | None = None,
) -> None:
    """Put every replaced replica back as it was, newest first, health-gated.

    Where the old container's name (slot) is free, it is started before its
    replacement is stopped, so a rollback does not cost capacity either.
    """
    for item in reversed(report.replaced):
        old_name = str(item.before["Name"]).lstrip("/")
        restarted_first = False
        if item.new_id and not _exists(host, old_name):
            restarted_first = True
        elif item.new_id:
            host.remove(item.new_id, item.new_name, graceful=False)
        try:
            old_id = host.recreate_from(item.before, spec.trusted_root)
        except DockerError as err:
            report.steps.append(f"rollback of {old_name} failed: {err}")
            continue
        health = host.wait_healthy(old_id, old_name, spec.update.health_timeout, settle, restarts=0)
        if ledger is not None:
            if health.healthy:
                ledger.prove(old_id)
            if item.action.index is not None:
                ledger.settle(item.action.index)
        if restarted_first:
            host.remove(item.new_id, item.new_name)
        report.rolled_back.append(old_name)
        state = "healthy" if health.healthy else f"NOT healthy: {health.reason}"
        report.steps.append(f"rolled back {old_name} ({state})")
        notify("rollback", {"replica": old_name, "healthy": health.healthy})
    report.rolled_back.sort()


def _exists(host: DockerHost, container_id: str) -> bool:
    """Whether a container (id or name) exists."""
    if not container_id:
        return False
    try:
        host.inspect(container_id)
    except DockerError:
        return False
    return True


def prove(
    host: DockerHost,
    spec: ServiceSpec,
    actions: list[Action],
    settle: float,
    clock: Clock | None = None,
) -> list[tuple[Action, HealthReport]]:
    """Watch the containers of ``prove`` actions until each counts or fails.

    They were left by an interrupted run: each must become healthy within
    ``update.health_timeout`` and stay so for ``settle`` seconds, like a
    replacement, all watched at once. One that is not running is started first
    (a daemon restart stops containers); a running one fails on any restart
    since it was created.
    """
    clock = clock or Clock()
    watches: list[tuple[Action, HealthWatch]] = []
    for action in actions:
        assert action.actual is not None
        baseline: int | None = 0
        if action.actual.state not in ("running", "restarting", "paused"):
            host.start(action.actual.id, action.name)
            baseline = None
        watch = HealthWatch(
            action.name, spec.update.health_timeout, settle, clock.now(), restarts=baseline
        )
        watches.append((action, watch))
    verdicts: dict[str, HealthReport] = {}
    while len(verdicts) < len(watches):
        for action, watch in watches:
            assert action.actual is not None
            if action.name in verdicts:
                continue
            try:
                details = host.inspect(action.actual.id)
            except NotFound:
                verdicts[action.name] = HealthReport(False, f"{action.name} is gone", 0.0)
                continue
            verdict = watch.observe(details, clock.now())
            if verdict is not None:
                verdicts[action.name] = verdict
        if len(verdicts) < len(watches):
            clock.sleep(POLL)
    return [(action, verdicts[action.name]) for action, _ in watches]
