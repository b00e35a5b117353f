"""The host-local rollout engine: replace replicas, health-gated, with rollback.

Replacements go ``update.parallelism`` at a time. ``start-first`` starts each
replacement in a free slot (a spare host port) and stops the replica it
replaces only once the replacement counts, so capacity never drops below the
replica count; ``stop-first`` replaces in place and dips by at most
``parallelism``. A replacement counts when Docker reports it healthy and it
stays so, without restarting, for ``min_healthy_time`` (:mod:`dockerops.health`).
Start-first overlaps one batch's ``min_healthy_time`` with the start of the
next ones (up to ``PIPELINE`` batches in flight, hence :meth:`UpdateSpec.spares`),
so the hold costs no more wall time than Swarm's unheld monitor period,
without counting a replica early.

Old replicas retire in the background: once a batch counts, the replicas it
replaces are stopped and removed on threads of their own while the rollout
goes on, so an image whose PID 1 ignores SIGTERM (every stop waits its whole
grace period, then Docker kills it) costs one grace period per rollout, not one
per replica. A slot is free again only once its old replica is gone, and the
rollout ends only once every retirement has.

The first failure (not healthy in time, unhealthy, exited, crash loop) stops
the rollout; with ``update.rollback`` every replica already replaced is put
back exactly as it was (from its inspect), newest first, each health-gated the
same way, without ever stopping a replica before its predecessor is back where
the slot allows. Either way :func:`replace` returns its :class:`RolloutReport`.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from .configcheck import replica_logs
from .errors import DockerError, NotFound
from .events import Progress, quiet
from .health import POLL, Clock, HealthReport, HealthWatch
from .host import DockerHost, StopReport
from .ledger import Ledger
from .plan import Action
from .replicas import DesiredReplica
from .spec import PIPELINE, ServiceSpec

T = TypeVar("T")


class RolloutFailed(DockerError):
    """A replica did not become healthy (details in the message)."""


class Background(Generic[T]):
    """One call on a thread of its own; the rollout loop polls whether it ended.

    docker-py's client is safe for concurrent requests (a pooled connection
    per request), so old replicas stop while the loop keeps inspecting.
    """

    def __init__(self, call: Callable[[], T], name: str) -> None:
        self._call = call
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._call()
        except BaseException as err:  # handed to the loop by result()
            self._error = err

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        """The call's return (it has ended: see :attr:`done`); raises what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._result)


Removal = Background[StopReport | None]


@dataclass
class Rollout:
    """What every step of one service's rollout works with."""

    host: DockerHost
    spec: ServiceSpec
    # Seconds a replacement must stay healthy to count (min_healthy_time).
    settle: float
    # Records proven replicas, in-place stops and the last stop (dockerops.ledger).
    ledger: Ledger
    notify: Progress = quiet
    clock: Clock = field(default_factory=Clock)


@dataclass
class Slots:
    """A service's slots while it rolls out.

    ``desired`` is the container each slot should run (every slot the service
    may use, spares included), ``occupied`` the slots holding a container now.
    A slot whose old replica is being retired stays occupied until its removal
    has ended: its name and host port are taken until then.
    """

    desired: dict[int, DesiredReplica]
    occupied: set[int]

    @classmethod
    def of(cls, desired: Iterable[DesiredReplica], occupied: Iterable[int | None]) -> Slots:
        return cls({r.index: r for r in desired}, {i for i in occupied if i is not None})

    def free(self) -> list[int]:
        return sorted(slot for slot in self.desired if slot not in self.occupied)


@dataclass
class Replaced:
    action: Action
    before: dict[str, Any]
    new_id: str
    new_name: str


@dataclass
class RolloutReport:
    """What a rollout did, whether it succeeded (``failure`` None) or not."""

    steps: list[str] = field(default_factory=list)
    replaced: list[Replaced] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    previous_config: str | None = None
    # Graceful stops of old replicas, in the order they ended.
    stops: list[StopReport] = field(default_factory=list)
    # Actions other than replacements carried out (new replicas started).
    carried_out: list[Action] = field(default_factory=list)
    # Why the rollout failed (with the failed replica's last log lines).
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def done(self) -> list[Replaced]:
        """Replacements carried out and not undone."""
        back = set(self.rolled_back)
        return [r for r in self.replaced if r.new_id and r.action.name not in back]


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


@dataclass
class _Retirement:
    """An old replica being stopped and removed in the background."""

    member: _Member
    task: Removal


def slot_schedule(
    spec: ServiceSpec, actions: list[Action], slots: Slots, all_at_once: bool = False
) -> dict[str, int]:
    """The slot each replacement (by the name of the replica it replaces) will run in.

    Pure, so ``test=True`` names the containers a rollout will leave running,
    and :func:`replace` follows it whatever order old replicas finish stopping
    in. Start-first batches take the free slots in ascending order, then the
    slots of the replicas earlier batches replaced, in order (a batch waits for
    its slot to be freed); stop-first and ``all_at_once`` replace in place.
    """
    start_first = spec.update.order == "start-first" and not all_at_once
    size = len(actions) if all_at_once else spec.update.parallelism
    free = slots.free()
    freed: list[int] = []
    schedule: dict[str, int] = {}
    for start in range(0, len(actions), size):
        batch = actions[start : start + size]
        for action in batch:
            assert action.index is not None
            spare = free or freed
            schedule[action.name] = spare.pop(0) if start_first and spare else action.index
        freed.extend(a.index for a in batch if a.index is not None and schedule[a.name] != a.index)
    return schedule


def replace(
    rollout: Rollout, actions: list[Action], slots: Slots, all_at_once: bool = False
) -> RolloutReport:
    """Replace the containers of ``actions`` (kind ``recreate``); the report says how it went.

    Start-first batches overlap: once every replacement in flight is healthy,
    the next batch starts in free slots while the earlier ones prove
    themselves (``PIPELINE`` batches at most), each in the slots
    :func:`slot_schedule` gives it; an old replica is retired only once its
    replacement counts. In-place batches (stop-first, or no slot to spare) run
    one at a time, their stops together. On failure, after rolling back (when
    enabled), the report's ``failure`` says why.

    ``rollout.ledger`` records each replacement that counts before the replica
    it replaces is removed, and journals each replica stopped in place, so a
    run killed at any point can be recovered (see :mod:`dockerops.ledger`).
    ``slots.occupied`` follows the slots as they are taken and freed.
    """
    return _Engine(rollout, slots, all_at_once).run(actions)


class _Engine:
    """One run of :func:`replace`."""

    def __init__(self, rollout: Rollout, slots: Slots, all_at_once: bool) -> None:
        self.ctx = rollout
        self.host = rollout.host
        self.slots = slots
        self.all_at_once = all_at_once
        self.start_first = rollout.spec.update.order == "start-first" and not all_at_once
        self.report = RolloutReport()
        self.flying: list[_Batch] = []
        self.retiring: list[_Retirement] = []
        self.schedule: dict[str, int] = {}

    def run(self, actions: list[Action]) -> RolloutReport:
        ctx, update = self.ctx, self.ctx.spec.update
        self.schedule = slot_schedule(ctx.spec, actions, self.slots, self.all_at_once)
        size = len(actions) if self.all_at_once else update.parallelism
        queue = deque(actions[i : i + size] for i in range(0, len(actions), size))
        total = len(queue)
        try:
            while queue or self.flying or self.retiring:
                if queue and self._may_launch(queue[0]):
                    batch = _Batch(total - len(queue) + 1, [])
                    self.flying.append(batch)
                    self._launch(batch, queue.popleft())
                    ctx.notify(
                        "batch",
                        {
                            "batch": batch.number,
                            "of": total,
                            "replicas": [m.action.name for m in batch.members],
                        },
                    )
                    for member in batch.members:
                        member.watch = HealthWatch(
                            member.name, update.health_timeout, ctx.settle, ctx.clock.now(), 0
                        )
                        ctx.notify(
                            "replica",
                            {
                                "replica": member.name,
                                "state": "started",
                                "replaces": member.action.name,
                            },
                        )
                    continue
                moved = self._observe()
                while self.flying and self.flying[0].counted:
                    self._finish(self.flying.pop(0))
                    moved = True
                moved = self._retired() or moved
                if not moved:
                    ctx.clock.sleep(POLL)
        except DockerError as err:
            self._fail(err)
        return self.report

    def _fail(self, err: DockerError) -> None:
        report, spec = self.report, self.ctx.spec
        failed = [m.name for batch in self.flying for m in batch.members if m.new_id]
        report.steps.append(f"{', '.join(failed) or 'batch'}: {err}")
        # Old replicas already retiring had their replacement counted: their
        # stop goes on; a rollback puts them back once they are gone.
        self._await_retirements()
        # The cause is in the failed replacement's log: quote it before it is removed.
        logs = _failure_logs(self.host, spec, self.flying, str(err))
        if spec.update.rollback:
            try:
                self._undo()
            except DockerError as undo_err:
                # E.g. the daemon went away: what is left is proven or replaced
                # by the next run (dockerops.ledger); say so rather than hide it.
                report.steps.append(f"could not roll back: {undo_err}")
        else:
            # Told not to roll back: what was stopped in place stays stopped.
            for batch in self.flying:
                for member in batch.members:
                    if member.in_place:
                        self.ctx.ledger.settle(member.slot)
        report.failure = f"{err}{logs}"

    def _may_launch(self, actions: list[Action]) -> bool:
        """Whether the next batch may start now (see :func:`replace`)."""
        beside = [self.schedule[a.name] for a in actions if self.schedule[a.name] != a.index]
        # A slot still being freed is waited for (replacing in place would cost capacity).
        free = all(slot not in self.slots.occupied for slot in beside)
        if not self.flying:
            return free or not self.retiring
        if not self.start_first or len(self.flying) >= PIPELINE:
            return False
        return all(b.healthy for b in self.flying) and free

    def _launch(self, batch: _Batch, actions: list[Action]) -> None:
        """Choose each replacement's slot (stopping in-place ones first, all of the
        batch before any replacement starts), then create them."""
        ledger, desired = self.ctx.ledger, self.slots.desired
        in_place: list[_Member] = []
        for action in actions:
            assert action.actual is not None and action.index is not None
            if "config" in action.changed and self.report.previous_config is None:
                self.report.previous_config = action.actual.config_version or None
            slot = self.schedule[action.name]
            if slot == action.index or slot in self.slots.occupied:  # in place
                member = _Member(action, desired[action.index].name, action.index, True)
                member.before = self.host.inspect(action.actual.id)
                # Journaled first: a run killed before its replacement counts puts it back.
                ledger.stop_in_place(action.index, member.before)
                in_place.append(member)
            else:
                member = _Member(action, desired[slot].name, slot, False)
            batch.members.append(member)
            self.slots.occupied.add(member.slot)
        # The batch's in-place stops run together; each slot is reused only once free.
        removals = [self._retire(member) for member in in_place]
        while not all(r.task.done for r in removals):
            self.ctx.clock.sleep(POLL)
        errors = []
        for removal in removals:
            try:
                self._stopped(removal.member, removal.task.result())
            except DockerError as err:
                errors.append(err)
        if errors:
            raise errors[0]
        self._create(batch.members)

    def _create(self, members: list[_Member]) -> None:
        """Create and start the batch's replacements, all at once (each
        mostly waits on dockerd). Every one created is recorded before the
        first error is raised: the failure path removes them."""
        desired = self.slots.desired
        if len(members) == 1:
            (member,) = members
            member.new_id = self.host.create(desired[member.slot])
            self.report.touched.add(member.new_id)
            return
        creates = [
            Background(
                functools.partial(self.host.create, desired[m.slot]), f"dockerops-create-{m.name}"
            )
            for m in members
        ]
        while not all(task.done for task in creates):
            self.ctx.clock.sleep(POLL)
        errors = []
        for member, task in zip(members, creates, strict=True):
            try:
                member.new_id = task.result()
            except DockerError as err:
                errors.append(err)
                continue
            self.report.touched.add(member.new_id)
        if errors:
            raise errors[0]

    def _observe(self) -> bool:
        """Inspect every replacement not yet counted; raise on the first failure.

        Returns whether anything moved on (became healthy, or counts now).
        """
        ctx = self.ctx
        moved = False
        for batch in self.flying:
            for member in batch.members:
                if member.counted or member.watch is None:
                    continue
                was_healthy = member.watch.healthy
                verdict = member.watch.observe(self.host.inspect(member.new_id), ctx.clock.now())
                if verdict is not None and not verdict.healthy:
                    raise RolloutFailed(verdict.reason)
                if verdict is not None:
                    # Recorded before the replica it replaces goes (see dockerops.ledger).
                    ctx.ledger.prove(member.new_id)
                    member.counted = True
                    ctx.notify(
                        "replica",
                        {
                            "replica": member.name,
                            "state": "healthy",
                            "seconds": round(verdict.seconds, 2),
                        },
                    )
                moved = moved or member.counted or member.watch.healthy != was_healthy
        return moved

    def _finish(self, batch: _Batch) -> None:
        """A batch counts: the replicas it replaces beside them retire now."""
        for member in batch.members:
            action = member.action
            assert action.actual is not None
            if member.in_place:
                self.ctx.ledger.settle(member.slot)
                self._replaced(member)
                continue
            member.before = self.host.inspect(action.actual.id)
            self.report.replaced.append(Replaced(action, member.before, member.new_id, member.name))
            self.retiring.append(self._retire(member))

    def _retire(self, member: _Member) -> _Retirement:
        """Stop and remove the replica ``member`` replaces, in the background."""
        action = member.action
        assert action.actual is not None
        remove = functools.partial(
            self.host.remove, action.actual.id, action.name, details=member.before
        )
        return _Retirement(member, Background(remove, f"dockerops-stop-{action.name}"))

    def _retired(self) -> bool:
        """Free the slots of old replicas whose removal ended; raise the first
        removal that failed. Returns whether any ended."""
        ended = [r for r in self.retiring if r.task.done]
        for retirement in ended:
            self.retiring.remove(retirement)
            stop = retirement.task.result()  # a failed removal keeps its slot taken
            self._stopped(retirement.member, stop)
            self._replaced(retirement.member)
        return bool(ended)

    def _await_retirements(self) -> None:
        """Let every retirement end (a failed one becomes a step)."""
        while self.retiring:
            try:
                moved = self._retired()
            except DockerError as err:
                self.report.steps.append(str(err))
                continue
            if not moved:
                self.ctx.clock.sleep(POLL)

    def _stopped(self, member: _Member, stop: StopReport | None) -> None:
        """An old replica is gone: its slot is free; how it stopped is remembered."""
        assert member.action.index is not None
        if not member.in_place:
            self.slots.occupied.discard(member.action.index)
        if stop is None:
            return
        self.report.stops.append(stop)
        self.ctx.ledger.record_stop(stop)
        if stop.hint:
            self.report.steps.append(f"{stop.container} {stop.hint}")

    def _replaced(self, member: _Member) -> None:
        action = member.action
        if member.in_place:
            assert member.before is not None
            self.report.replaced.append(Replaced(action, member.before, member.new_id, member.name))
        why = ", ".join(action.changed)
        step = f"replaced {action.name}" + (
            f" by {member.name}" if member.name != action.name else ""
        )
        self.report.steps.append(f"{step} ({why})")

    def _undo(self) -> None:
        """Replacements started beside their old replica go; replicas stopped in
        place come back with the earlier batches (:func:`rollback`)."""
        for batch in self.flying:
            for member in batch.members:
                if not member.in_place:
                    if member.new_id:
                        self.host.remove(member.new_id, member.name, graceful=False)
                    self.slots.occupied.discard(member.slot)
                elif member.before is not None:
                    self.report.replaced.append(
                        Replaced(member.action, member.before, member.new_id, member.name)
                    )
        rollback(self.ctx, self.report)
        back = set(self.report.rolled_back)
        slot_of = {replica.name: slot for slot, replica in self.slots.desired.items()}
        for item in self.report.replaced:
            if item.action.name in back and item.action.index is not None:
                self.slots.occupied.discard(slot_of.get(item.new_name, item.action.index))
                self.slots.occupied.add(item.action.index)


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


def rollback(rollout: Rollout, report: RolloutReport) -> None:
    """Put every replaced replica back as it was, newest first, health-gated.

    Where the old container's name (slot) is free, it is started before its
    replacement is stopped, so a rollback does not cost capacity either.
    """
    host, spec, ledger = rollout.host, rollout.spec, rollout.ledger
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
        health = host.wait_healthy(
            old_id, old_name, spec.update.health_timeout, rollout.settle, restarts=0
        )
        if health.healthy:
            ledger.prove(old_id)
        if item.action.index is not None:
            ledger.settle(item.action.index)
        if restarted_first:
            stop = host.remove(item.new_id, item.new_name)
            if stop is not None:
                ledger.record_stop(stop)
        report.rolled_back.append(old_name)
        state = "healthy" if health.healthy else f"NOT healthy: {health.reason}"
        report.steps.append(f"rolled back {old_name} ({state})")
        rollout.notify("rollback", {"replica": old_name, "healthy": health.healthy})
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


def prove(rollout: Rollout, actions: list[Action]) -> list[tuple[Action, HealthReport]]:
    """Watch the containers of ``prove`` actions until each counts or fails.

    They were left by an interrupted run: each must become healthy within
    ``update.health_timeout`` and stay so for ``rollout.settle`` seconds, like
    a replacement, all watched at once. One that is not running is started
    first (a daemon restart stops containers); a running one fails on any
    restart since it was created.
    """
    host = rollout.host
    watched: list[tuple[str, str, int | None]] = []
    for action in actions:
        assert action.actual is not None
        baseline: int | None = 0
        if action.actual.state not in ("running", "restarting", "paused"):
            host.start(action.actual.id, action.name)
            baseline = None
        watched.append((action.name, action.actual.id, baseline))
    verdicts = watch_all(rollout, watched)
    return [(action, verdicts[action.name]) for action in actions]


def watch_all(
    rollout: Rollout, containers: list[tuple[str, str, int | None]]
) -> dict[str, HealthReport]:
    """Watch ``(name, container id, restart count it starts from)`` containers
    together until each counts as healthy or fails (:class:`HealthWatch`:
    ``update.health_timeout``, then ``rollout.settle`` seconds healthy); the
    verdict per name. Watched at once, the holds overlap: N new replicas cost
    one ``min_healthy_time``, not N.
    """
    host, clock, timeout = rollout.host, rollout.clock, rollout.spec.update.health_timeout
    watches = [
        (name, container_id, HealthWatch(name, timeout, rollout.settle, clock.now(), restarts))
        for name, container_id, restarts in containers
    ]
    verdicts: dict[str, HealthReport] = {}
    while len(verdicts) < len(watches):
        for name, container_id, watch in watches:
            if name in verdicts:
                continue
            try:
                details = host.inspect(container_id)
            except NotFound:
                verdicts[name] = HealthReport(False, f"{name} is gone", 0.0)
                continue
            verdict = watch.observe(details, clock.now())
            if verdict is not None:
                verdicts[name] = verdict
        if len(verdicts) < len(watches):
            clock.sleep(POLL)
    return verdicts
