"""The fleet runner over a simulated fleet of 1,000 minions: each pre-batch
health check asks what the floor needs (the batch, what no return has told, a
refresh round of the batch's size), never the whole fleet, and the floor,
the silent-minion rule and the runner's own speed hold at that size.

The simulated fleet (:class:`SimulatedFleet`) is a fake ``LocalClient`` that
answers as minions do and counts every call; ``bench/fleet_sim.py`` drives
the same one at other sizes.
"""

from __future__ import annotations

import importlib.util
import itertools
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import salt.client

from dockerops import fleet

REPO = Path(__file__).resolve().parents[2]
SERVICE = "web"


class SimulatedFleet:
    """A ``LocalClient`` over ``size`` minions, each running ``web`` (2
    replicas, start-first) and counting every call it gets.

    Each minion has an image and a number of healthy replicas, which
    ``dockerops.status`` reports. ``rolling_update`` moves a minion to the
    tag and leaves it with ``after.get(minion, 2)`` healthy replicas; its
    return says so (``healthy``) unless ``says_healthy`` is False (a minion of
    an earlier release). A minion in ``silent`` answers nothing; those in
    ``silent_after_plan`` start being silent once the plan's previews are in.
    """

    def __init__(self, size: int, *, says_healthy: bool = True) -> None:
        self.minions = [f"m{n:05d}" for n in range(size)]
        self.images = dict.fromkeys(self.minions, "web:1.0")
        self.healthy = dict.fromkeys(self.minions, 2)
        self.after: dict[str, int] = {}
        self.says_healthy = says_healthy
        self.silent: set[str] = set()
        self.silent_after_plan: set[str] = set()
        # (function, tgt_type, the minions targeted, arguments), in call order.
        self.calls: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = []
        self.destroyed = False

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", timeout=None, full_return=False):
        targets = tuple(self.minions) if tgt_type == "glob" and tgt == "*" else tuple(tgt)
        self.calls.append((fun, tgt_type, targets, tuple(arg)))
        answer = getattr(self, fun.replace(".", "_"))
        out = {}
        for minion in targets:
            if minion in self.silent:
                continue
            ret, retcode = answer(minion, arg)
            out[minion] = {"ret": ret, "retcode": retcode} if full_return else ret
        if fun == "dockerops.rolling_update" and "test=True" in arg:
            self.silent |= self.silent_after_plan
        return out

    def dockerops_status(self, minion: str, arg: Any) -> tuple[Any, int]:
        image, healthy = self.images[minion], self.healthy[minion]
        rows = [{"image": image, "state": "running", "health": "healthy"}] * healthy
        rows += [{"image": image, "state": "running", "health": "unhealthy"}] * (2 - healthy)
        return {SERVICE: rows}, 0

    def dockerops_rolling_update(self, minion: str, arg: Any) -> tuple[Any, int]:
        tag = next((a.split("=", 1)[1] for a in arg if a.startswith("tag=")), "1.1")
        test = "test=True" in arg
        before = self.images[minion]
        if not test:
            self.images[minion] = f"web:{tag}"
            self.healthy[minion] = self.after.get(minion, 2)
        ret = fleet.HostRollout(
            result=True,
            comment="",
            changes={},
            before=(before,),
            to=f"web:{tag}",
            now=(self.images[minion],),
            duration=1.0,
            order="start-first",
            parallelism=1,
            test=test,
            plan=("batch 1 (start-first): web-1",) if test else None,
            healthy=self.healthy[minion] if self.says_healthy and not test else None,
        )
        return ret.to_dict(), 0

    def destroy(self) -> None:
        self.destroyed = True

    def checks(self) -> list[tuple[str, ...]]:
        """The minions each pre-batch ``dockerops.status`` call targeted (the
        plan's, to the target, excluded)."""
        return [targets for fun, kind, targets, _a in self.calls[1:] if fun == "dockerops.status"]

    def rollouts(self) -> list[tuple[str, ...]]:
        """The minions each real (not ``test=True``) ``rolling_update`` targeted."""
        return [
            targets
            for fun, _kind, targets, arg in self.calls
            if fun == "dockerops.rolling_update" and "test=True" not in arg
        ]


def load_runner(cachedir: Path) -> ModuleType:
    """``_runners/dockerops.py`` loaded as Salt loads it, outside a job."""
    spec = importlib.util.spec_from_file_location(
        "dockerops_runner_scale", REPO / "_runners/dockerops.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"conf_file": str(cachedir / "master"), "cachedir": str(cachedir)}
    module.__context__ = {}
    return module


def roll(runner: ModuleType, sim: SimulatedFleet, **kwargs: Any) -> tuple[dict[str, Any], float]:
    """``salt-run dockerops.rolling_update web tgt=*`` over ``sim``: the
    summary and the runner's own time (plan + every batch), in seconds."""
    salt.client.get_local_client = lambda conf_file: sim
    started = time.perf_counter()
    summary = runner.rolling_update(SERVICE, "*", **{"tag": "1.1", **kwargs})
    return summary, time.perf_counter() - started


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setattr(salt.client, "get_local_client", salt.client.get_local_client)
    module = load_runner(tmp_path)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    return module


def batches_of(sim: SimulatedFleet, size: int) -> list[tuple[str, ...]]:
    return [tuple(sim.minions[i : i + size]) for i in range(0, len(sim.minions), size)]


def test_each_check_asks_its_batch_and_one_refresh_slice_never_the_fleet(runner):
    sim = SimulatedFleet(1000)

    summary, took = roll(runner, sim, batch="10%")
    print(f"\nrunner's own time, 1,000 minions in batches of 10%: {took:.3f}s")

    assert summary["result"] is True, summary["comment"]
    assert summary["comment"] == "web rolled on 1000 minion(s)"
    batches = batches_of(sim, 100)
    # The plan: one status call to the target, one preview call to those running web.
    assert sim.calls[0] == ("dockerops.status", "glob", tuple(sim.minions), (SERVICE,))
    assert sim.calls[1][:3] == ("dockerops.rolling_update", "list", tuple(sim.minions))
    assert [c[0] for c in sim.calls[2:]] == ["dockerops.status", "dockerops.rolling_update"] * 10
    # Before batch k: batch k (its status now) and, as the refresh, batch
    # 9 - k (the fleet from its end, round: the untouched first, then the
    # done). Nothing else: every other count is the plan's or a return's.
    assert [set(asked) for asked in sim.checks()] == [
        set(batches[k]) | set(batches[9 - k]) for k in range(10)
    ]
    assert all(len(asked) == 200 for asked in sim.checks())
    assert sim.rollouts() == batches
    assert took < 2.0, f"the runner took {took:.2f}s for 1,000 minions"


def test_returns_without_a_healthy_count_are_asked_again_once(runner):
    """Minions of an earlier release do not say how many replicas are healthy
    after their rollout: each check also asks the batch before it."""
    sim = SimulatedFleet(1000, says_healthy=False)

    summary, _took = roll(runner, sim, batch="10%")

    assert summary["result"] is True, summary["comment"]
    batches = batches_of(sim, 100)
    checks = [set(asked) for asked in sim.checks()]
    for k, asked in enumerate(checks):
        must = set(batches[k]) | (set(batches[k - 1]) if k else set())
        assert must <= asked
        # And the refresh: as many as the batch, from the others.
        assert len(asked - must) == 100
    # Every minion's count is re-read at least once after the plan.
    assert set().union(*checks) == set(sim.minions)


def test_a_batch_that_would_go_below_the_floor_is_refused(runner):
    """The first 150 minions come out of their rollout with 1 of 2 replicas
    healthy, and their returns say so: 1,900 then 1,850 of 2,000 healthy, below
    the floor of 1,860 (93%) before batch 3, counted without asking them again."""
    sim = SimulatedFleet(1000)
    sim.after = dict.fromkeys(sim.minions[:150], 1)

    summary, _took = roll(runner, sim, batch="10%", min_healthy="93%", rollback=False)

    assert summary["result"] is False
    assert summary["comment"] == (
        "fleet has 1850 healthy replicas, below the floor of 1860: stopped before batch 3"
    )
    # What the fleet really has: the gate's count is not a guess.
    assert sum(sim.healthy.values()) == 1850
    batches = batches_of(sim, 100)
    assert sim.rollouts() == batches[:2]
    # The refused batch was checked with its own minions and a refresh only.
    assert set(sim.checks()[-1]) == set(batches[2]) | set(batches[7])
    states = {e["state"] for m, e in summary["minions"].items() if m >= "m00200"}
    assert states == {"not started"}


def test_a_check_that_reads_fewer_healthy_than_the_plan_refuses_the_batch(runner):
    """Minions of the batch lose replicas after the plan (not the rollout's
    doing): read fresh before their batch, they take the fleet below the floor."""
    sim = SimulatedFleet(1000)

    def decay_batch_2_after_plan(tgt, fun, arg=(), **kw):
        if fun == "dockerops.rolling_update" and "test=True" in arg:
            sim.healthy.update(dict.fromkeys(sim.minions[100:200], 0))
        return cmd(tgt, fun, arg, **kw)

    cmd = sim.cmd
    sim.cmd = decay_batch_2_after_plan  # type: ignore[method-assign]

    summary, _took = roll(runner, sim, batch="10%", min_healthy="95%", rollback=False)

    assert summary["comment"] == (
        "fleet has 1800 healthy replicas, below the floor of 1900: stopped before batch 2"
    )
    assert sim.rollouts() == batches_of(sim, 100)[:1]


@pytest.mark.parametrize("budget", [0, 1])
def test_a_silent_minion_in_a_batch_counts_as_failed(runner, budget):
    sim = SimulatedFleet(1000)
    sim.silent_after_plan = {"m00250"}

    summary, _took = roll(runner, sim, batch="10%", max_failures=budget)

    entry = summary["minions"]["m00250"]
    assert (entry["state"], entry["result"]) == ("no answer", False)
    assert entry["comment"] == "no answer within 300s to dockerops.status"
    batches = batches_of(sim, 100)
    assert "m00250" in sim.checks()[2]
    if budget == 0:
        assert summary["comment"] == (
            "1 failed minion(s), over the failure budget of 0: stopped before batch 3"
        )
        assert sim.rollouts()[:2] == batches[:2]
        # The minions already updated go back, 100 at a time.
        assert [len(t) for t in sim.rollouts()[2:]] == [100, 100]
    else:
        assert summary["result"] is True
        # Counted once, never run, never asked again.
        assert sim.rollouts()[2] == tuple(m for m in batches[2] if m != "m00250")
        assert sum(1 for asked in sim.checks() if "m00250" in asked) == 1
        assert summary["comment"] == "web rolled on 999 minion(s)"


def test_the_runners_work_per_batch_does_not_grow_with_the_fleet(runner):
    """The first 100 batches of 10 over 1,000 and over 10,000 minions: the
    time per batch (the fake client's answers included) stays about the same.
    A check of the whole fleet before each batch makes it ~25 times longer."""

    def per_batch(size: int) -> float:
        sim = SimulatedFleet(size)
        engine = runner._plan_rollout(sim, fleet.RolloutOptions.from_args(SERVICE, "*", batch=10))
        every = engine.batches
        engine.batches = lambda: itertools.islice(every(), 100)
        started = time.perf_counter()
        runner._drive(sim, engine)
        took = time.perf_counter() - started
        assert len(sim.rollouts()) == 100
        assert all(len(asked) <= 20 for asked in sim.checks())
        return took / 100

    small = min(per_batch(1000) for _ in range(3))
    large = min(per_batch(10000) for _ in range(2))
    print(f"\nper batch of 10: {small * 1e3:.3f} ms at 1,000, {large * 1e3:.3f} ms at 10,000")
    assert large < 4 * small, (small, large)
