"""The rollout engine's schedule, on a simulated Docker host with a simulated clock.

``dockerops.rollout.replace`` decides when a batch starts, when an old replica
stops and what is undone on failure. These tests run it against ``SimHost``:
containers whose health follows their image's script over simulated time
(create and remove cost time too), so whole rollouts run in milliseconds and
every container's life is recorded to check capacity and ordering.
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dockerops import rollout as engine
from dockerops.errors import DockerError, NotFound
from dockerops.events import Wakeup
from dockerops.health import Clock, HealthWatch
from dockerops.host import DockerHost, StopReport
from dockerops.ledger import Ledger
from dockerops.plan import Action, plan_service
from dockerops.replicas import ActualReplica, DesiredReplica, actual_from_list_entry
from dockerops.replicas import desired_replicas as replicas_of
from dockerops.rollout import RolloutReport, replace
from dockerops.spec import ServiceSpec

MakeSpec = Callable[..., ServiceSpec]

CREATE_COST = 0.3
REMOVE_COST = 0.1
# Docker's grace period: a stop that is not heeded is a kill this much later.
GRACE = 10
# What each tag's containers do, in seconds after their start.
BEHAVIOUR: dict[str, dict[str, float]] = {
    "1.4": {"healthy": 1.0},
    "1.5": {"healthy": 1.0},
    "slow": {"healthy": 3.0},
    "broken": {"unhealthy": 2.0},  # never healthy
    "crashloop": {"restart": 0.5},
    "flaky": {"healthy": 1.0, "unhealthy": 2.5},  # healthy, then fails while proving itself
    "late": {"healthy": 1.0, "unhealthy": 8.0},  # fails long after it counted
    # PID 1 ignores SIGTERM: every stop waits the grace period, then kills.
    "stubborn": {"healthy": 1.0, "ignores_sigterm": 1.0},
}


class SimClock:
    """Simulated time, shared by the rollout loop and the threads stopping old replicas.

    Only the loop advances it, and only while every stopping thread (the
    engine names them ``dockerops-stop-*``) waits on simulated time or has
    ended: a stop that takes 10 s ends at exactly 10 s, however the threads
    are scheduled.
    """

    def __init__(self) -> None:
        self.t = 0.0
        self.cond = threading.Condition()
        self.waiting: dict[int, float] = {}  # thread ident -> the time it waits for

    def now(self) -> float:
        return self.t

    def _quiet(self) -> bool:
        return all(
            not thread.is_alive() or thread.ident in self.waiting
            for thread in threading.enumerate()
            if thread.name.startswith(("dockerops-stop-", "dockerops-create-"))
        )

    def _settle(self) -> None:
        while not self._quiet():  # a thread ending does not notify: look again soon
            self.cond.wait(0.001)

    def sleep(self, seconds: float) -> None:
        with self.cond:
            self._settle()
            self.t += seconds
            for ident, when in list(self.waiting.items()):
                if when <= self.t:
                    del self.waiting[ident]
            self.cond.notify_all()
            self._settle()

    def wait_until(self, when: float) -> None:
        """Block a stopping thread until simulated time reaches ``when``."""
        ident = threading.get_ident()
        with self.cond:
            self.waiting[ident] = when
            self.cond.notify_all()
            self.cond.wait_for(lambda: ident not in self.waiting)


@dataclass
class SimContainer:
    id: str
    name: str
    tag: str
    started: float
    labels: dict[str, str]
    removed: float | None = None
    restored: bool = False


@dataclass
class SimHost:
    """The DockerHost calls the engine makes, on containers living in simulated time."""

    clock: SimClock
    containers: dict[str, SimContainer] = field(default_factory=dict)
    log: list[tuple[float, str, str]] = field(default_factory=list)
    fail_create: set[str] = field(default_factory=set)
    fail_remove: set[str] = field(default_factory=set)
    serial: int = 0

    def add(self, replica: DesiredReplica, started: float = -100.0) -> SimContainer:
        self.serial += 1
        tag = replica.image.rpartition(":")[2]
        container = SimContainer(
            f"c{self.serial:03d}", replica.name, tag, started, replica.docker_labels()
        )
        self.containers[container.id] = container
        return container

    def live(self, name: str) -> SimContainer | None:
        found = [c for c in self.containers.values() if c.name == name and c.removed is None]
        return found[0] if found else None

    # --- DockerHost -------------------------------------------------------------------------

    def create(self, replica: DesiredReplica) -> str:
        if self.live(replica.name) is not None:
            raise DockerError(f"name {replica.name} in use")
        if threading.current_thread() is threading.main_thread():
            self.clock.sleep(CREATE_COST)
        else:  # created beside the others of its batch: simulated time goes on
            self.clock.wait_until(self.clock.now() + CREATE_COST)
        if replica.name in self.fail_create:
            raise DockerError(f"starting {replica.name}: port is already allocated")
        container = self.add(replica, self.clock.now())
        self.log.append((self.clock.now(), "create", replica.name))
        return container.id

    def recreate_from(self, details: dict[str, Any], trusted_root: Any = None) -> str:
        name = str(details["Name"]).lstrip("/")
        if self.live(name) is not None:
            raise DockerError(f"name {name} in use")
        self.clock.sleep(CREATE_COST)
        self.serial += 1
        tag = str(details["Config"]["Image"]).rpartition(":")[2]
        labels = dict(details["Config"]["Labels"])
        container = SimContainer(f"c{self.serial:03d}", name, tag, self.clock.now(), labels)
        container.restored = True
        self.containers[container.id] = container
        self.log.append((self.clock.now(), "restore", name))
        return container.id

    def remove(
        self,
        container_id: str,
        name: str,
        graceful: bool = True,
        details: dict[str, Any] | None = None,
    ) -> StopReport | None:
        container = self.containers.get(container_id)
        if container is None or container.removed is not None:
            return None
        killed = graceful and "ignores_sigterm" in BEHAVIOUR[container.tag]
        took = GRACE + REMOVE_COST if killed else REMOVE_COST
        end = self.clock.now() + took
        if threading.current_thread() is threading.main_thread():
            self.clock.sleep(took)
        else:  # stopping beside the rollout: simulated time goes on meanwhile
            self.clock.wait_until(end)
        if name in self.fail_remove:
            raise DockerError(f"removing {name}: dockerd says no")
        container.removed = end
        self.log.append((end, "remove", name))
        return StopReport(name, took, GRACE, killed) if graceful else None

    def managed(self, service: str | None = None, kept: bool = False) -> list[ActualReplica]:
        """The live containers, as Docker's list call shows them."""
        return [
            actual_from_list_entry(
                {
                    "Id": c.id,
                    "Names": [f"/{c.name}"],
                    "Labels": c.labels,
                    "State": "running",
                    "Status": "Up",
                }
            )
            for c in self.containers.values()
            if c.removed is None
        ]

    def ensure_image(self, ref: str, doing: str) -> None:
        return None

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return {"Id": f"sha256:{ref}", "Config": {"Healthcheck": {"Test": ["CMD", "check"]}}}

    def log_tail(self, container_id: str, lines: int = 20, max_bytes: int = 4096) -> str:
        container = self.containers.get(container_id)
        return f"{container.name} {container.tag}: simulated log line\n" if container else ""

    def inspect(self, container_id: str) -> dict[str, Any]:
        container = self.containers.get(container_id) or self.live(container_id)
        if container is None or container.removed is not None:
            raise NotFound(f"no container {container_id}")
        status, health, restarts = self.state(container, self.clock.now())
        return {
            "Id": container.id,
            "Name": f"/{container.name}",
            "RestartCount": restarts,
            "Config": {
                "Image": f"registry.example.com/web:{container.tag}",
                "Labels": container.labels,
                "Healthcheck": {"Test": ["CMD", "check"]},
                "StopTimeout": GRACE,
            },
            "HostConfig": {},
            "State": {"Status": status, "Health": {"Status": health}, "Restarting": False},
        }

    def wait_healthy(self, *args: Any, **kwargs: Any) -> Any:
        """DockerHost's own wait, on the simulated clock."""
        clock = Clock(self.clock.now, self.clock.sleep)
        return DockerHost.wait_healthy(cast(DockerHost, self), *args, clock=clock, **kwargs)

    # --- the simulation ---------------------------------------------------------------------

    @staticmethod
    def state(container: SimContainer, now: float) -> tuple[str, str, int]:
        age = now - container.started
        script = BEHAVIOUR[container.tag]
        if "restart" in script and age >= script["restart"]:
            return "running", "starting", 1
        if "unhealthy" in script and age >= script["unhealthy"]:
            return "running", "unhealthy", 0
        if "healthy" in script and age >= script["healthy"]:
            return "running", "healthy", 0
        return "running", "starting", 0

    def healthy_at(self, now: float) -> int:
        """Replicas alive and healthy at ``now``."""
        return sum(
            1
            for c in self.containers.values()
            if c.started <= now
            and (c.removed is None or c.removed > now)
            and self.state(c, now)[1] == "healthy"
        )

    def alive_at(self, now: float) -> int:
        return sum(
            1
            for c in self.containers.values()
            if c.started <= now and (c.removed is None or c.removed > now)
        )

    def live_tags(self) -> list[tuple[str, str]]:
        return sorted((c.name, c.tag) for c in self.containers.values() if c.removed is None)


@dataclass
class Rollout:
    host: SimHost
    clock: SimClock
    spec: ServiceSpec
    actions: list[Action]
    slots: dict[int, DesiredReplica]
    occupied: set[int]
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)

    def context(self, settle: float = 2.0, ledger: Ledger | None = None) -> engine.Rollout:
        """The engine's view of this rollout, on simulated time."""

        def progress(stage: str, data: dict[str, Any]) -> None:
            self.events.append((self.clock.now(), stage, data))

        return engine.Rollout(
            cast(DockerHost, self.host),
            self.spec,
            settle,
            ledger or Ledger(None, self.spec.name),
            progress,
            Clock(self.clock.now, self.clock.sleep),
        )

    def run(self, settle: float = 2.0, all_at_once: bool = False) -> RolloutReport:
        slots = engine.Slots(self.slots, self.occupied)
        return replace(self.context(settle), self.actions, slots, all_at_once)

    def times(self, what: str) -> dict[str, float]:
        return {name: t for t, kind, name in self.host.log if kind == what}

    def capacity_samples(self, step: float = 0.05) -> list[int]:
        """Healthy replicas every ``step`` simulated seconds over the whole rollout."""
        end = self.clock.now()
        return [self.host.healthy_at(i * step) for i in range(int(end / step) + 1)]


@pytest.fixture
def rollout(make_spec: MakeSpec) -> Callable[..., Rollout]:
    """``rollout(tag, replicas=4, old="1.4", update={...})``: replicas on ``old``, to ``tag``."""

    def make(tag: str, replicas: int = 4, old: str = "1.4", **update: Any) -> Rollout:
        clock = SimClock()
        host = SimHost(clock)
        before = make_spec(replicas=replicas, update=update, tag=old)
        new = make_spec(replicas=replicas, update=update, tag=tag)
        listed = []
        for replica in replicas_of(before):
            container = host.add(replica)
            entry = {
                "Id": container.id,
                "Names": [f"/{replica.name}"],
                "Labels": replica.docker_labels(),
                "State": "running",
                "Status": "Up",
            }
            listed.append(actual_from_list_entry(entry))
        desired = replicas_of(new, slots=new.slots)
        actions = plan_service(desired, listed, count=new.replicas)
        assert {a.kind for a in actions} == {"recreate"}
        slots = {r.index: r for r in desired}
        occupied = {r.index for r in replicas_of(before)}
        return Rollout(host, clock, new, actions, slots, occupied)

    return make


# --- HealthWatch -----------------------------------------------------------------------------


def inspect(status: str = "running", health: str | None = "starting", **extra: Any) -> Any:
    details: dict[str, Any] = {
        "State": {"Status": status, "Health": {"Status": health}, **extra.pop("state", {})},
        "Config": {"Healthcheck": {"Test": ["CMD", "check"]} if health else {}},
        "RestartCount": extra.pop("restarts", 0),
    }
    return details


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        pytest.param(
            [(0.0, inspect()), (1.0, inspect(health="healthy")), (2.9, inspect(health="healthy"))],
            None,
            id="healthy-still-proving",
        ),
        pytest.param(
            [(1.0, inspect(health="healthy")), (3.0, inspect(health="healthy"))],
            (True, "web-5 healthy"),
            id="counts-after-min-healthy-time",
        ),
        pytest.param(
            [(1.0, inspect(health="healthy")), (2.0, inspect(health="unhealthy"))],
            (False, "web-5 became unhealthy"),
            id="unhealthy-while-proving",
        ),
        pytest.param(
            [(1.0, inspect(health="healthy")), (2.0, inspect(health="starting"))],
            (False, "web-5 stopped being healthy"),
            id="loses-health",
        ),
        pytest.param(
            [(0.5, inspect(restarts=1))],
            (False, "web-5 restarted (crash loop)"),
            id="restart-from-zero",
        ),
        pytest.param(
            [(0.5, inspect(state={"Restarting": True}))],
            (False, "web-5 restarted (crash loop)"),
            id="restarting",
        ),
        pytest.param(
            [(0.5, inspect(status="exited", state={"ExitCode": 3}))],
            (False, "web-5 exited with code 3"),
            id="exited",
        ),
        pytest.param(
            [(9.9, inspect())],
            None,
            id="starting-within-timeout",
        ),
        pytest.param(
            [(10.1, inspect())],
            (False, "web-5 not healthy within 10s (health: starting)"),
            id="timeout",
        ),
        pytest.param(
            # The timeout is for becoming healthy; proving itself may run past it.
            [(9.0, inspect(health="healthy")), (10.5, inspect(health="healthy"))],
            None,
            id="timeout-does-not-cut-the-hold",
        ),
        pytest.param(
            [(0.2, inspect(health=None)), (2.1, inspect(health=None))],
            None,
            id="no-healthcheck-running-not-long-enough",
        ),
        pytest.param(
            [(0.2, inspect(health=None)), (2.3, inspect(health=None))],
            (True, "web-5 healthy"),
            id="no-healthcheck-running-long-enough",
        ),
    ],
)
def test_health_watch(observations: list[tuple[float, Any]], expected: Any) -> None:
    watch = HealthWatch("web-5", timeout=10, min_healthy_time=2.0, started=0.0, restarts=0)

    verdicts = [watch.observe(details, now) for now, details in observations]

    assert all(v is None for v in verdicts[:-1])
    last = verdicts[-1]
    assert (None if last is None else (last.healthy, last.reason)) == expected


def test_health_watch_without_a_healthcheck_wants_a_second_running() -> None:
    watch = HealthWatch("web-1", timeout=10, min_healthy_time=0.0, started=0.0, restarts=0)

    assert watch.observe(inspect(health=None), 0.1) is None
    assert watch.observe(inspect(health=None), 1.0) is None
    verdict = watch.observe(inspect(health=None), 1.2)

    assert verdict is not None and verdict.healthy


def test_health_watch_takes_its_baseline_from_the_first_inspect() -> None:
    watch = HealthWatch("web-1", timeout=10, min_healthy_time=1.0, started=0.0)

    assert watch.observe(inspect(health="healthy", restarts=4), 0.1) is None
    verdict = watch.observe(inspect(health="healthy", restarts=5), 0.2)

    assert verdict is not None and verdict.reason == "web-1 restarted (crash loop)"


# --- replace: good updates -------------------------------------------------------------------


def test_start_first_overlaps_each_hold_with_the_next_start(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5")

    report = run.run(settle=2.0)

    # web-1, web-2 and web-3 are replaced in the spare slots 5, 6 and 7,
    # web-4 in the slot web-1 freed.
    assert run.host.live_tags() == [(f"web-{i}", "1.5") for i in (1, 5, 6, 7)]
    assert [r.new_name for r in report.replaced] == ["web-5", "web-6", "web-7", "web-1"]
    assert [r.action.name for r in report.replaced] == ["web-1", "web-2", "web-3", "web-4"]
    created, removed = run.times("create"), run.times("remove")
    # Each old replica stops only once its replacement has been healthy for 2 s.
    for item in report.replaced:
        healthy_since = created[item.new_name] + 1.0
        assert removed[item.action.name] >= healthy_since + 2.0
    # The second replacement starts while the first is still proving itself.
    second = report.replaced[1].new_name
    assert created[second] < removed["web-1"]
    # Capacity never drops, and the surge stays within three batches.
    assert min(run.capacity_samples()) == 4
    assert max(run.host.alive_at(t / 20) for t in range(int(run.clock.now() * 20))) <= 7
    # Serialised it would take 4 x (0.3 create + 1 healthy + 2 held) = 13.2 s.
    assert run.clock.now() < 10.0


def test_start_first_parallelism_two(rollout: Callable[..., Rollout]) -> None:
    run = rollout("1.5", parallelism=2)

    report = run.run(settle=2.0)

    batches = [data["replicas"] for _t, stage, data in run.events if stage == "batch"]
    assert len(batches) == 2 and all(len(b) == 2 for b in batches)
    assert sorted(r.action.name for r in report.replaced) == ["web-1", "web-2", "web-3", "web-4"]
    assert min(run.capacity_samples()) == 4
    assert sorted(tag for _n, tag in run.host.live_tags()) == ["1.5"] * 4


def test_a_batch_creates_its_replacements_at_once(rollout: Callable[..., Rollout]) -> None:
    """Each create takes 0.3 s: a batch of 3 created one after another would
    end 0.3 s apart; at once, together."""
    run = rollout("1.5", replicas=6, parallelism=3)

    report = run.run(settle=2.0)

    assert report.ok and len(report.replaced) == 6
    made = sorted(t for t, kind, _name in run.host.log if kind == "create")
    assert len(made) == 6
    assert made[2] - made[0] < 0.01 and made[5] - made[3] < 0.01, made


def test_one_failed_create_in_a_batch_removes_the_others_made(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", replicas=3, parallelism=3)
    run.host.fail_create.add("web-5")

    report = run.run(settle=2.0)

    assert not report.ok and "port is already allocated" in (report.failure or "")
    # The two replacements made beside it were removed; the old replicas run on.
    assert sorted(run.host.live_tags()) == [(f"web-{i}", "1.4") for i in (1, 2, 3)]


def test_stop_first_replaces_in_place_one_batch_at_a_time(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", order="stop-first")

    report = run.run(settle=2.0)

    assert run.host.live_tags() == [(f"web-{i}", "1.5") for i in range(1, 5)]
    assert [r.new_name for r in report.replaced] == ["web-1", "web-2", "web-3", "web-4"]
    # Never more than the replica count, never below it minus one batch.
    assert max(run.host.alive_at(t / 20) for t in range(int(run.clock.now() * 20))) <= 4
    assert min(run.capacity_samples()) == 3
    # Serial: a batch starts only once the one before counts.
    created = [t for t, kind, _n in run.host.log if kind == "create"]
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(created))


def test_a_slow_batch_holds_the_next_back(rollout: Callable[..., Rollout]) -> None:
    """The next batch starts only once every replacement in flight is healthy."""
    run = rollout("slow")

    run.run(settle=2.0)

    created = sorted(t for t, kind, _n in run.host.log if kind == "create")
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(created))
    assert min(run.capacity_samples()) == 4


def test_events_follow_each_replica(rollout: Callable[..., Rollout]) -> None:
    run = rollout("1.5", replicas=2)

    run.run(settle=2.0)

    stages = [(stage, data.get("state"), data.get("replica")) for _t, stage, data in run.events]
    assert stages[0] == ("batch", None, None)
    started = [r for s, state, r in stages if state == "started"]
    healthy = [r for s, state, r in stages if state == "healthy"]
    assert started == healthy and len(started) == 2
    # A batch names the replicas it replaces; each start names its replacement.
    batches = [(d["batch"], d["of"], d["replicas"]) for _t, s, d in run.events if s == "batch"]
    assert batches == [(1, 2, ["web-1"]), (2, 2, ["web-2"])]
    assert [
        (r, d["replaces"])
        for _t, s, d in run.events
        if (r := d.get("replica")) and d.get("state") == "started"
    ] == [("web-3", "web-1"), ("web-4", "web-2")]


# --- replace: failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("broken", "became unhealthy"),
        ("crashloop", "restarted (crash loop)"),
    ],
)
def test_a_version_never_healthy_stops_at_the_first_batch(
    rollout: Callable[..., Rollout], tag: str, reason: str
) -> None:
    run = rollout(tag)

    report = run.run(settle=2.0)

    assert report.failure is not None and re.search(re.escape(reason), report.failure)
    assert len([1 for _t, kind, _n in run.host.log if kind == "create"]) == 1
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 5)]
    assert report.rolled_back == []
    assert min(run.capacity_samples()) == 4
    assert run.occupied == {1, 2, 3, 4}


def test_failure_while_proving_removes_both_batches_in_flight(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("flaky")

    report = run.run(settle=2.0)

    assert report.failure is not None and "became unhealthy" in report.failure
    # Later batches had started (the first was healthy); all go, no old
    # replica was ever stopped.
    created = sorted(run.times("create"))
    assert len(created) >= 2
    assert sorted(run.times("remove")) == created
    assert set(created) <= {"web-5", "web-6", "web-7"}
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 5)]
    assert run.occupied == {1, 2, 3, 4}


def test_failure_after_batches_counted_rolls_them_back_newest_first(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", replicas=5)
    # Replacements go to the spares web-6, web-7 and web-8, then to the freed
    # web-1 and web-2: the fifth fails to start, after two batches counted.
    run.host.fail_create.add("web-2")

    report = run.run(settle=2.0)

    assert report.failure is not None and "port is already allocated" in report.failure
    assert report.rolled_back == ["web-1", "web-2"]
    restores = [name for _t, kind, name in run.host.log if kind == "restore"]
    assert restores == ["web-2", "web-1"]
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 6)]
    # Capacity held throughout, the rollback included.
    assert min(run.capacity_samples()) == 5


def test_stop_first_failure_puts_the_stopped_replica_back(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", order="stop-first")
    run.host.fail_create.add("web-2")

    report = run.run(settle=2.0)

    assert not report.ok
    assert report.rolled_back == ["web-1", "web-2"]
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 5)]


def test_without_rollback_the_failed_replacement_is_left(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("broken", rollback=False)

    assert not run.run(settle=2.0).ok

    assert ("web-5", "broken") in run.host.live_tags()
    assert len(run.host.live_tags()) == 5


def test_all_at_once_replaces_every_replica_in_one_batch(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5")

    run.run(settle=2.0, all_at_once=True)

    assert [d["replicas"] for _t, s, d in run.events if s == "batch"] == [
        ["web-1", "web-2", "web-3", "web-4"]
    ]
    assert run.host.live_tags() == [(f"web-{i}", "1.5") for i in range(1, 5)]


# --- retiring old replicas beside the rollout ------------------------------------------------


def test_old_replicas_that_ignore_sigterm_cost_one_grace_period_not_one_each(
    rollout: Callable[..., Rollout],
) -> None:
    prompt = rollout("1.5", replicas=3)
    prompt.run(settle=2.0)
    stubborn = rollout("1.5", replicas=3, old="stubborn")

    report = stubborn.run(settle=2.0)

    assert report.ok
    assert stubborn.host.live_tags() == [(f"web-{i}", "1.5") for i in (4, 5, 6)]
    # Three stops of 10 s each, yet the rollout is one grace period longer.
    assert [(s.container, s.killed, s.grace) for s in report.stops] == [
        (f"web-{i}", True, GRACE) for i in (1, 2, 3)
    ]
    grown = stubborn.clock.now() - prompt.clock.now()
    assert GRACE - 1 <= grown <= GRACE + 1, grown
    # The stops overlapped: the second began before the first ended.
    assert min(stubborn.capacity_samples()) == 3
    assert report.steps.count("web-1 " + report.stops[0].hint) == 1  # type: ignore[operator]


def test_a_slot_is_reused_only_once_its_old_replica_is_gone(
    rollout: Callable[..., Rollout],
) -> None:
    """Four replicas, three spares: web-4's replacement waits for web-1's slot,
    whose old replica takes a whole grace period to stop; it never goes in place."""
    run = rollout("1.5", replicas=4, old="stubborn")

    report = run.run(settle=2.0)

    assert report.ok
    created, removed = run.times("create"), run.times("remove")
    assert created["web-1"] >= removed["web-1"]
    assert [r.new_name for r in report.replaced] == ["web-5", "web-6", "web-7", "web-1"]
    # Capacity never dips (a replacement in place would have cost one replica).
    assert min(run.capacity_samples()) == 4
    assert max(run.host.alive_at(t / 20) for t in range(int(run.clock.now() * 20))) <= 7


def test_an_old_replica_retires_only_once_its_replacement_counts(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", replicas=3, old="stubborn")

    report = run.run(settle=2.0)

    healthy_at = {
        data["replica"]: t
        for t, stage, data in run.events
        if stage == "replica" and data.get("state") == "healthy"
    }
    removed = run.times("remove")
    for item in report.replaced:
        # Removed a grace period after its stop began, which was once its replacement counted.
        assert removed[item.action.name] >= healthy_at[item.new_name] + GRACE


def test_a_failure_while_old_replicas_retire_rolls_back_once_they_are_gone(
    rollout: Callable[..., Rollout],
) -> None:
    """web-4's replacement fails to start in web-1's freed slot while web-2 and
    web-3 are still being stopped: the rollback waits for them, then puts all
    three back, newest first, without ever dropping below four replicas."""
    run = rollout("1.5", replicas=4, old="stubborn")
    run.host.fail_create.add("web-1")

    report = run.run(settle=2.0)

    assert report.failure is not None and "port is already allocated" in report.failure
    assert report.rolled_back == ["web-1", "web-2", "web-3"]
    restores = [(t, name) for t, kind, name in run.host.log if kind == "restore"]
    assert [name for _t, name in restores] == ["web-3", "web-2", "web-1"]
    removed = run.times("remove")
    assert all(t >= removed[name] for t, name in restores)
    assert not any("rollback of" in step for step in report.steps), report.steps
    assert run.host.live_tags() == [(f"web-{i}", "stubborn") for i in range(1, 5)]
    assert min(run.capacity_samples()) == 4
    assert run.occupied == {1, 2, 3, 4}


def test_stop_first_stops_a_batch_together(rollout: Callable[..., Rollout]) -> None:
    run = rollout("1.5", replicas=4, old="stubborn", order="stop-first", parallelism=2)

    report = run.run(settle=2.0)

    assert report.ok
    # Two batches, each one grace period of stops (not two), then create + healthy + hold.
    assert run.clock.now() <= 2 * (GRACE + REMOVE_COST + CREATE_COST + 1.0 + 2.0) + 1
    assert min(run.capacity_samples()) == 2
    assert run.host.live_tags() == [(f"web-{i}", "1.5") for i in range(1, 5)]


def test_a_failed_removal_fails_the_rollout_and_keeps_the_slot(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("1.5", replicas=2, rollback=False)
    run.host.fail_remove.add("web-1")

    report = run.run(settle=2.0)

    assert report.failure is not None and "removing web-1: dockerd says no" in report.failure
    # web-1 may still be there: its slot is not taken for granted.
    assert 1 in run.occupied


# --- Wakeup: the rollout loop's sleep, cut short by Docker's events -------------------------


class FakeEvents:
    """An events stream fed by the test; close() ends it like docker-py's."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.filters: dict[str, Any] = {}
        self.closed = False

    def events(self, filters: dict[str, Any], decode: bool) -> FakeEvents:
        self.filters = filters
        return self

    def __iter__(self) -> FakeEvents:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self.queue.get()
        if item is None:
            raise StopIteration
        return item

    def close(self) -> None:
        self.closed = True
        self.queue.put(None)


def wakeup_on(api: Any) -> Wakeup:
    return Wakeup(cast(DockerHost, SimpleNamespace(api=api)), "web")


def test_wakeup_returns_when_an_event_comes() -> None:
    api = FakeEvents()
    wakeup = wakeup_on(api)
    assert api.filters == {"type": "container", "label": "io.dockerops.service=web"}

    threading.Timer(0.05, api.queue.put, [{"Action": "health_status: healthy"}]).start()
    started = time.monotonic()
    wakeup.sleep(5)
    woke = time.monotonic() - started

    assert woke < 2
    wakeup.close()
    assert api.closed


def test_wakeup_sleeps_the_whole_time_without_events() -> None:
    api = FakeEvents()
    wakeup = wakeup_on(api)

    started = time.monotonic()
    wakeup.sleep(0.2)

    assert time.monotonic() - started >= 0.19
    wakeup.close()


def test_wakeup_without_an_events_stream_just_sleeps() -> None:
    class NoEvents:
        def events(self, **_kwargs: Any) -> None:
            raise DockerError("events: not supported")

    wakeup = wakeup_on(NoEvents())

    started = time.monotonic()
    wakeup.sleep(0.1)
    wakeup.close()  # nothing to close

    assert time.monotonic() - started >= 0.09
