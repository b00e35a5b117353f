"""dockerops.ledger and the plan's handling of unproven replicas (pure and file-level)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockerops.ledger import Ledger
from dockerops.plan import Action, plan_service
from dockerops.replicas import ActualReplica, DesiredReplica, actual_from_list_entry
from dockerops.replicas import desired_replicas as replicas_of
from dockerops.rollout import Slots, replace
from dockerops.spec import ServiceSpec
from tests.unit.test_rollout_engine import Rollout, rollout  # noqa: F401 - a fixture

MakeSpec = Callable[..., ServiceSpec]


@pytest.fixture
def actual(list_entry: Callable[..., dict[str, Any]]) -> Callable[..., ActualReplica]:
    def make(replica: DesiredReplica, **kwargs: Any) -> ActualReplica:
        return actual_from_list_entry(list_entry(replica, **kwargs))

    return make


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.name) for a in actions]


def test_an_interrupted_start_first_rollout_is_proven_before_the_old_replica_goes(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    """1.4 in slot 1, the never-counted 1.5 replacement in spare slot 2."""
    old = replicas_of(make_spec(replicas=1))[0]
    new_spec = make_spec(replicas=1, tag="1.5")
    slots = replicas_of(new_spec, slots=new_spec.slots)
    listed = [actual(old), actual(slots[1], container_id="new-one")]
    proven = {listed[0].id}
    # Without the ledger the plan "completes" onto the unproven replica.
    assert kinds(plan_service(slots, listed, count=1)) == [("remove", "web-1")]
    assert kinds(plan_service(slots, listed, count=1, proven=proven)) == [
        ("prove", "web-2"),
        ("remove", "web-1"),
    ]


@pytest.mark.parametrize(
    ("proven_slots", "expected"),
    [
        pytest.param(None, [], id="no-record-trusts-all"),
        pytest.param({1, 2}, [], id="all-proven"),
        pytest.param({1}, [("prove", "web-2")], id="one-unproven"),
        pytest.param(set(), [("prove", "web-1"), ("prove", "web-2")], id="none-proven"),
    ],
)
def test_only_unproven_up_to_date_replicas_are_proven(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    proven_slots: set[int] | None,
    expected: list[tuple[str, str]],
) -> None:
    replicas = replicas_of(make_spec(replicas=2))
    listed = [actual(r) for r in replicas]
    proven = None if proven_slots is None else {listed[i - 1].id for i in proven_slots}
    assert kinds(plan_service(replicas, listed, proven=proven)) == expected


def test_a_stale_unproven_replica_is_recreated_not_proven(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old = replicas_of(make_spec(replicas=1))[0]
    new = replicas_of(make_spec(replicas=1, tag="1.5"))
    assert kinds(plan_service(new, [actual(old)], proven=set())) == [("recreate", "web-1")]


def test_surplus_replicas_drop_unproven_before_proven(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    spec = make_spec(replicas=1)
    slots = replicas_of(spec, slots=2)
    listed = [actual(slots[0], container_id="a" * 64), actual(slots[1], container_id="b" * 64)]
    # Slot 1 is unproven, slot 2 proven: keep slot 2, drop slot 1 without proving it.
    actions = plan_service(slots, listed, count=1, proven={"b" * 64})
    assert kinds(actions) == [("remove", "web-1")]


def test_an_unproven_stopped_replica_is_proven_not_just_started(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (replica,) = replicas_of(make_spec(replicas=1))
    actions = plan_service([replica], [actual(replica, state="exited")], proven=set())
    assert kinds(actions) == [("prove", "web-1")]
    assert actions[0].describe()["proving"]["why"] == "left unproven by an interrupted run"


def test_ledger_records_survive_and_keep_env_private(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "web")
    assert ledger.proven() is None
    ledger.adopt(["a", "b"])
    ledger.adopt(["c"])  # only the first adoption counts
    assert ledger.proven() == {"a", "b"}
    ledger.prove("d")
    ledger.keep_only(["b", "d", "z"])
    assert Ledger(str(tmp_path), "web").proven() == {"b", "d"}
    ledger.stop_in_place(2, {"Name": "/web-2", "Config": {"Env": ["TOKEN=x"]}})
    assert Ledger(str(tmp_path), "web").stopped_in_place() == {
        2: {"Name": "/web-2", "Config": {"Env": ["TOKEN=x"]}}
    }
    path = tmp_path / "services" / "web.json"
    assert os.stat(path).st_mode & 0o077 == 0
    ledger.settle(2)
    assert ledger.stopped_in_place() == {}
    assert json.loads(path.read_text())["proven"] == ["b", "d"]


def test_ledger_ignores_malformed_records(tmp_path: Path) -> None:
    path = tmp_path / "services" / "web.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"proven": "nope", "stopped_in_place": {"x": 1, "3": []}}))
    ledger = Ledger(str(tmp_path), "web")
    assert ledger.proven() is None
    assert ledger.stopped_in_place() == {}


# --- the engine keeps the ledger (simulated host and clock) ----------------------------------


class WatchedLedger(Ledger):
    """An in-memory ledger that logs each call with the simulated time."""

    def __init__(self, run: Rollout) -> None:
        super().__init__(None, "web")
        self.run = run
        self.calls: list[tuple[float, str, Any]] = []

    def prove(self, container_id: str) -> None:
        self.calls.append((self.run.clock.now(), "prove", container_id))
        super().prove(container_id)

    def stop_in_place(self, slot: int, before: dict[str, Any]) -> None:
        self.calls.append((self.run.clock.now(), "journal", slot))
        super().stop_in_place(slot, before)


def run_with(run: Rollout, ledger: Ledger, settle: float = 2.0) -> Any:
    return replace(run.context(settle, ledger), run.actions, Slots(run.slots, run.occupied))


def test_each_replacement_is_recorded_before_the_replica_it_replaces_goes(
    rollout: Callable[..., Rollout],  # noqa: F811
) -> None:
    run = rollout("1.5", replicas=3)
    ledger = WatchedLedger(run)
    run_with(run, ledger)
    proved = {cid: t for t, kind, cid in ledger.calls if kind == "prove"}
    new = {c.name: c for c in run.host.containers.values() if c.tag == "1.5"}
    assert set(proved) == {c.id for c in new.values()}
    removed = sorted(t for t, kind, _name in run.host.log if kind == "remove")
    # Every removal of an old replica comes after some replacement was recorded,
    # and there are never more removals than recorded replacements at any time.
    for when in removed:
        assert sum(1 for t in proved.values() if t <= when) >= sum(1 for r in removed if r <= when)
    assert ledger.stopped_in_place() == {}


def test_stop_first_journals_before_removing_and_settles(
    rollout: Callable[..., Rollout],  # noqa: F811
) -> None:
    run = rollout("1.5", replicas=2, order="stop-first")
    ledger = WatchedLedger(run)
    run_with(run, ledger)
    journaled = [t for t, kind, _ in ledger.calls if kind == "journal"]
    removals = [t for t, kind, name in run.host.log if kind == "remove"]
    assert len(journaled) == 2
    assert all(j <= r for j, r in zip(journaled, removals, strict=True))
    assert ledger.stopped_in_place() == {}


@pytest.mark.parametrize("rollback", [True, False])
def test_a_failed_stop_first_rollout_settles_its_journal(
    rollout: Callable[..., Rollout],  # noqa: F811
    rollback: bool,
) -> None:
    run = rollout("broken", replicas=2, order="stop-first", rollback=rollback)
    ledger = WatchedLedger(run)
    assert not run_with(run, ledger).ok
    # Rolled back (or told not to): nothing is left for the next run to put back.
    assert ledger.stopped_in_place() == {}
