"""The fleet runner as Salt runs it, against a simulated fleet: it only makes the
calls the engine asks for, prints one line per step, and closes what it opens."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path
from typing import Any

import pytest
import salt.client
import salt.runner

from dockerops import fleet
from dockerops.lock import RolloutLock

REPO = Path(__file__).resolve().parents[2]


class FakeFleet:
    """LocalClient over minions each running web (2 replicas) at ``images[m]``.

    A tag in ``broken``, or a (minion, tag) pair, fails its rollout (the host
    puts itself back); a minion in ``silent`` answers nothing.
    """

    def __init__(self, minions=("m1", "m2", "m3", "m4"), broken=(), silent=()):
        self.images = dict.fromkeys(minions, "web:1.0")
        self.broken = set(broken)
        self.silent = set(silent)
        self.calls: list[tuple[str, list[str], tuple[str, ...]]] = []
        self.destroyed = False

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", timeout=None, full_return=False):
        minions = sorted(self.images) if tgt_type != "list" else list(tgt)
        self.calls.append((fun, list(minions), tuple(arg)))
        out = {}
        for minion in minions:
            if minion in self.silent:
                continue
            ret, retcode = getattr(self, fun.replace(".", "_"))(minion, list(arg))
            out[minion] = {"ret": ret, "retcode": retcode} if full_return else ret
        return out

    def test_ping(self, minion, arg):
        return True, 0

    def dockerops_status(self, minion, arg):
        row = {"image": self.images[minion], "state": "running", "health": "healthy"}
        return {"web": [row, row]}, 0

    def dockerops_rolling_update(self, minion, arg):
        tag = next((a.split("=", 1)[1] for a in arg if a.startswith("tag=")), "1.1")
        before = self.images[minion]
        ok = tag not in self.broken and (minion, tag) not in self.broken
        test = "test=True" in arg
        if ok and not test:
            self.images[minion] = f"web:{tag}"
        ret = fleet.HostRollout(
            result=ok,
            comment="" if ok else "web-3 never became healthy",
            changes={},
            before=(before,),
            to=f"web:{tag}",
            now=(self.images[minion],),
            duration=1.5,
            order="start-first",
            parallelism=1,
            test=test,
            plan=("batch 1 (start-first): web-1",) if test else None,
        )
        return ret.to_dict(), 0 if ok else 1

    def state_apply(self, minion, arg):
        return {"dockerops_|-web_|-web_|-running": {"result": True, "comment": "ok"}}, 0

    def destroy(self):
        self.destroyed = True


class JidEvent:
    """What ``__jid_event__`` is in a runner job: fired events, and salt-run's printer."""

    def __init__(self, print_func=None):
        self.fired: list[tuple[dict[str, Any], str]] = []
        self.print_func = print_func

    def fire_event(self, data, tag):
        self.fired.append((data, tag))

    def lines(self):
        return [data["message"] for data, tag in self.fired if tag == "progress"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """``_runners/dockerops.py`` loaded as Salt loads it, with a simulated fleet."""
    spec = importlib.util.spec_from_file_location(
        "dockerops_runner", REPO / "_runners/dockerops.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"conf_file": str(tmp_path / "master"), "cachedir": str(tmp_path), "jid": "1"}
    module.__context__ = {}
    module.__jid_event__ = JidEvent()
    module.fake = FakeFleet()
    monkeypatch.setattr(salt.client, "get_local_client", lambda conf_file: module.fake)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    return module


def test_every_progress_step_is_one_line_for_the_dockerops_outputter(runner):
    runner.rolling_update("web", "*", batch=2, canary=1, tag="1.1")

    fired = runner.__jid_event__.fired
    assert {tag for _data, tag in fired} == {"progress"}
    assert all(data["outputter"] == "dockerops" for data, _tag in fired)
    assert runner.__jid_event__.lines() == [
        "web: 4 minions, 8 replicas, healthy floor 6, worst case during a batch 8, "
        "failure budget 0",
        "canary: m1",
        "batch 2: m2, m3",
        "batch 3: m4",
        "m1: batch 1 (start-first): web-1",
        "m2: batch 1 (start-first): web-1",
        "m3: batch 1 (start-first): web-1",
        "m4: batch 1 (start-first): web-1",
        "canary: m1 (8 healthy, floor 6)",
        "  m1: ok web:1.0 -> web:1.1 (1.5s)",
        "batch 2/3: m2, m3 (8 healthy, floor 6)",
        "  m2: ok web:1.0 -> web:1.1 (1.5s)",
        "  m3: ok web:1.0 -> web:1.1 (1.5s)",
        "batch 3/3: m4 (8 healthy, floor 6)",
        "  m4: ok web:1.0 -> web:1.1 (1.5s)",
        "web rolled on 4 minion(s)",
    ]
    # What salt-run prints for such an event (the outputter gets it wrapped).
    outputter = _load_outputter()
    data, _tag = fired[9]
    assert outputter.output({"suffix": "progress", "event": {**data, "_stamp": "t"}}) == (
        "  m1: ok web:1.0 -> web:1.1 (1.5s)"
    )


def _load_outputter():
    spec = importlib.util.spec_from_file_location("dockerops_out", REPO / "_output/dockerops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__opts__ = {"color": False}
    return module


def test_the_outputter_shows_anything_else_nested():
    outputter = _load_outputter()
    assert "suffix" in outputter.output({"suffix": "progress", "event": {"data": [1]}})


def test_a_stopped_rollout_lists_every_minion_and_where_each_ended_up(runner):
    runner.rolling_update("web", "*", batch=2, tag="1.1")
    # 1.2 is broken on m3 only: batch 2 (m3, m4) fails, and the rollout stops.
    runner.fake.broken = {("m3", "1.2")}
    runner.__jid_event__ = JidEvent()

    summary = runner.rolling_update("web", "*", batch=2, tag="1.2")

    assert summary["result"] is False and runner.__context__["retcode"] == 1
    assert summary["comment"] == (
        "1 failed minion(s), over the failure budget of 0: stopped after batch 2"
    )
    minions = summary["minions"]
    assert {m: e["state"] for m, e in minions.items()} == {
        "m1": "rolled back",
        "m2": "rolled back",
        "m3": "failed",
        "m4": "rolled back",
    }
    # Where each ended up: back on 1.1, whatever it was rolled to.
    assert {m: (e["to"], e["now"]) for m, e in minions.items()} == {
        "m1": ("web:1.2", "web:1.1"),
        "m2": ("web:1.2", "web:1.1"),
        "m3": ("web:1.2", "web:1.1"),
        "m4": ("web:1.2", "web:1.1"),
    }
    assert runner.fake.images == dict.fromkeys(minions, "web:1.1")
    lines = runner.__jid_event__.lines()
    assert lines[lines.index("rolling back 3 minion(s), 2 at a time") :] == [
        "rolling back 3 minion(s), 2 at a time",
        "  m1: rolled back to web:1.1: ok",
        "  m2: rolled back to web:1.1: ok",
        "  m4: rolled back to web:1.1: ok",
    ]
    rollbacks = [c for c in runner.fake.calls if c[2] == ("web", "tag=1.1")]
    assert [minions for _fun, minions, _arg in rollbacks][-2:] == [["m1", "m2"], ["m4"]]


def test_a_stopped_canary_lists_the_others_as_not_started(runner):
    runner.fake.broken = {"broken"}
    summary = runner.rolling_update("web", "*", canary=1, batch=2, tag="broken")
    assert {m: e["state"] for m, e in summary["minions"].items()} == {
        "m1": "failed",
        "m2": "not started",
        "m3": "not started",
        "m4": "not started",
    }
    # Nothing but the plan's calls and the canary's. The canary's health check
    # asks the canary and one other minion of the refresh round (the last
    # planned), not the whole fleet: the plan's status counts the rest.
    assert [(fun, minions) for fun, minions, _arg in runner.fake.calls] == [
        ("dockerops.status", ["m1", "m2", "m3", "m4"]),
        ("dockerops.rolling_update", ["m1", "m2", "m3", "m4"]),
        ("dockerops.status", ["m1", "m4"]),
        ("dockerops.rolling_update", ["m1"]),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": "abc"}, "invalid argument: batch: expected a count or a percentage, got 'abc'"),
        ({"pause": "x"}, "invalid argument: pause: expected a non-negative number of seconds"),
        ({"min_healthy": "200%"}, "invalid argument: min_healthy: expected a count or a"),
    ],
)
def test_a_bad_argument_is_reported_as_a_bad_argument(runner, kwargs, message):
    summary = runner.rolling_update("web", "*", **kwargs)
    assert summary["comment"].startswith(message)
    assert "pillar" not in summary["comment"]
    assert summary["result"] is False and runner.__context__["retcode"] == 1
    assert runner.__jid_event__.lines() == [summary["comment"]]


def test_apply_reports_a_bad_argument_as_a_bad_argument(runner):
    summary = runner.apply("*", batch="abc")
    assert summary["comment"] == (
        "invalid argument: batch: expected a count or a percentage, got 'abc'"
    )


def test_a_second_fleet_rollout_of_the_service_is_refused_by_name(runner, tmp_path):
    held = RolloutLock(tmp_path / "dockerops", "web", scope="fleet")
    held.acquire("20240101", "fleet rollout")
    try:
        summary = runner.rolling_update("web", "*", tag="1.1")
    finally:
        held.release()
    assert summary["result"] is False
    assert summary["comment"].startswith(
        f"a fleet rollout of web is already running (pid {held_pid()} on "
    )
    assert "fleet-web" not in summary["comment"].split("; lock:")[0]
    assert runner.fake.calls == []


def held_pid():
    import os

    return os.getpid()


def test_apply_uses_the_same_batches_and_lists_every_minion(runner):
    summary = runner.apply("*", batch=3)
    assert summary["result"] is True and summary["comment"] == "applied on 4 minion(s)"
    assert [m for fun, m, _a in runner.fake.calls if fun == "state.apply"] == [
        ["m1", "m2", "m3"],
        ["m4"],
    ]
    assert {e["state"] for e in summary["minions"].values()} == {"applied"}


def test_the_runner_closes_its_client_and_salt_runs_runner(runner):
    closed = []

    class Event:
        def destroy(self):
            closed.append("event")

    class MasterMinion:
        def destroy(self):
            closed.append("mminion")

    cli = salt.runner.Runner.__new__(salt.runner.Runner)
    cli.event = Event()
    cli._mminion = MasterMinion()
    printed = []
    cli.print_async_event = types.MethodType(lambda self, s, e: printed.append(s), cli)
    runner.__jid_event__ = JidEvent(print_func=cli.print_async_event)

    runner.rolling_update("web", "*", tag="1.1", test=True)

    assert runner.fake.destroyed
    assert closed == []  # still printing
    runner.__jid_event__.print_func("progress", {})
    assert closed == []
    runner.__jid_event__.print_func("ret", {})
    assert printed == ["progress", "ret"]
    assert closed == ["event", "mminion"] or closed == ["mminion", "event"]
    assert cli.event is None


def test_a_runner_client_that_lives_on_is_left_open(runner):
    class Client:
        def print_async_event(self, suffix, event):
            pass

    client = Client()
    event = JidEvent(print_func=client.print_async_event)
    runner.__jid_event__ = event
    runner.rolling_update("web", "*", tag="1.1", test=True)
    assert event.print_func == client.print_async_event
