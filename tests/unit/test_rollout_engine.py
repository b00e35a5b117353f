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

from dockerops.errors import DockerError, NotFound
from dockerops.host import Clock, DockerHost, HealthWatch, Wakeup
from dockerops.plan import Action, plan_service
from dockerops.replicas import DesiredReplica, actual_from_list_entry
from dockerops.replicas import desired_replicas as replicas_of
from dockerops.rollout import RolloutFailed, replace
from dockerops.spec import ServiceSpec

MakeSpec = Callable[..., ServiceSpec]

CREATE_COST = 0.3
REMOVE_COST = 0.1
# What each tag's containers do, in seconds after their start.
BEHAVIOUR: dict[str, dict[str, float]] = {
    "1.4": {"healthy": 1.0},
    "1.5": {"healthy": 1.0},
    "slow": {"healthy": 3.0},
    "broken": {"unhealthy": 2.0},  # never healthy
    "crashloop": {"restart": 0.5},
    "flaky": {"healthy": 1.0, "unhealthy": 2.5},  # healthy, then fails while proving itself
    "late": {"healthy": 1.0, "unhealthy": 8.0},  # fails long after it counted
}


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


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
        self.clock.sleep(CREATE_COST)
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

    def remove(self, container_id: str, name: str, graceful: bool = True) -> None:
        container = self.containers.get(container_id)
        if container is None or container.removed is not None:
            return
        self.clock.sleep(REMOVE_COST)
        container.removed = self.clock.now()
        self.log.append((self.clock.now(), "remove", name))

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

    def run(self, settle: float = 2.0, all_at_once: bool = False) -> Any:
        def progress(stage: str, data: dict[str, Any]) -> None:
            self.events.append((self.clock.now(), stage, data))

        return replace(
            cast(DockerHost, self.host),
            self.spec,
            self.actions,
            self.slots,
            self.occupied,
            settle,
            all_at_once,
            progress,
            Clock(self.clock.now, self.clock.sleep),
        )

    def times(self, what: str) -> dict[str, float]:
        return {name: t for t, kind, name in self.host.log if kind == what}

    def capacity_samples(self, step: float = 0.05) -> list[int]:
        """Healthy replicas every ``step`` simulated seconds over the whole rollout."""
        end = self.clock.now()
        return [self.host.healthy_at(i * step) for i in range(int(end / step) + 1)]


@pytest.fixture
def rollout(make_spec: MakeSpec) -> Callable[..., Rollout]:
    """``rollout(tag, replicas=4, update={...})``: replicas on 1.4 (healthy), to ``tag``."""

    def make(tag: str, replicas: int = 4, **update: Any) -> Rollout:
        clock = SimClock()
        host = SimHost(clock)
        old = make_spec(replicas=replicas, update=update)
        new = make_spec(replicas=replicas, update=update, tag=tag)
        listed = []
        for replica in replicas_of(old):
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
        occupied = {r.index for r in replicas_of(old)}
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

    with pytest.raises(RolloutFailed, match=re.escape(reason)) as failed:
        run.run(settle=2.0)

    assert len([1 for _t, kind, _n in run.host.log if kind == "create"]) == 1
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 5)]
    assert failed.value.report is not None and failed.value.report.rolled_back == []
    assert min(run.capacity_samples()) == 4
    assert run.occupied == {1, 2, 3, 4}


def test_failure_while_proving_removes_both_batches_in_flight(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("flaky")

    with pytest.raises(RolloutFailed, match="became unhealthy"):
        run.run(settle=2.0)

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

    with pytest.raises(RolloutFailed, match="port is already allocated") as failed:
        run.run(settle=2.0)

    report = failed.value.report
    assert report is not None
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

    with pytest.raises(RolloutFailed) as failed:
        run.run(settle=2.0)

    assert failed.value.report is not None
    assert failed.value.report.rolled_back == ["web-1", "web-2"]
    assert run.host.live_tags() == [(f"web-{i}", "1.4") for i in range(1, 5)]


def test_without_rollback_the_failed_replacement_is_left(
    rollout: Callable[..., Rollout],
) -> None:
    run = rollout("broken", rollback=False)

    with pytest.raises(RolloutFailed):
        run.run(settle=2.0)

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
