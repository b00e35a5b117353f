"""Fleet planning: batches, canaries, the healthy floor, failure budgets."""

from __future__ import annotations

import pytest

from dockerops import fleet
from dockerops.errors import ArgumentError, SpecError
from dockerops.fleet import (
    HostRollout,
    RolloutOptions,
    healthy_replicas,
    judge_returns,
    losses,
    parse_amount,
    plan_fleet,
    replicas_running,
    stop_reason,
)

FLEET = {"a": 2, "b": 2, "c": 2, "d": 2}


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(3, 10, 3), ("3", 10, 3), ("25%", 10, 3), ("75%", 6, 5), ("100%", 7, 7), ("0%", 5, 0)],
)
def test_parse_amount(value, total, expected):
    assert parse_amount(value, total, "x") == expected


@pytest.mark.parametrize("value", ["-1", "150%", "a lot", "2.5"])
def test_parse_amount_refuses(value):
    with pytest.raises(SpecError, match="x: expected a count or a percentage"):
        parse_amount(value, 10, "x")


@pytest.mark.parametrize(
    ("kwargs", "batches"),
    [
        ({}, [("a",), ("b",), ("c",), ("d",)]),
        ({"batch": 2}, [("a", "b"), ("c", "d")]),
        ({"batch": "50%", "canary": 1}, [("a",), ("b", "c"), ("d",)]),
        ({"batch": 3, "canary": 2}, [("a", "b"), ("c", "d")]),
    ],
)
def test_batches_with_and_without_canaries(kwargs, batches):
    plan = plan_fleet("web", FLEET, **kwargs)
    assert list(plan.batches) == batches
    assert plan.total == 8 and plan.floor == 6


def test_describe_names_the_canary_and_the_numbers():
    lines = plan_fleet("web", FLEET, batch=2, canary=1, max_failures=1).describe()
    assert lines[0] == (
        "web: 4 minions, 8 replicas, healthy floor 6, worst case during a batch 8, failure budget 1"
    )
    assert lines[1:] == ["canary: a", "batch 2: b, c", "batch 3: d"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_healthy": 9}, "a floor of 9 is more than the 8 replicas"),
        ({"canary": 4}, "leave no minion"),
        ({"batch": 0}, "at least one minion per batch"),
        # stop-first, 2 down per minion, 2 minions per batch: 4 of 8 left < 6.
        (
            {"batch": 2, "loss_per_minion": dict.fromkeys(FLEET, 2)},
            "a batch can take the fleet to 4 healthy replicas, below the floor of 6",
        ),
    ],
)
def test_settings_that_cannot_make_progress_are_refused(kwargs, message):
    with pytest.raises(SpecError, match=message):
        plan_fleet("web", FLEET, **kwargs)


def test_no_minion_is_refused():
    with pytest.raises(SpecError, match="no targeted minion runs it"):
        plan_fleet("web", {})


def test_start_first_loses_nothing_so_any_batch_keeps_the_floor():
    plan = plan_fleet("web", FLEET, batch="100%", min_healthy="100%", loss_per_minion={})
    assert plan.worst_case_healthy == 8 and plan.floor == 8


def test_healthy_replicas_counts_running_healthy_or_unchecked():
    status = {
        "a": {
            "web": [{"state": "running", "health": "healthy"}, {"state": "running", "health": None}]
        },
        "b": {
            "web": [{"state": "running", "health": "starting"}, {"state": "exited", "health": None}]
        },
        "c": "Minion did not return",
    }
    assert healthy_replicas(status, "web") == {"a": 2, "b": 0, "c": 0}


def preview(order, parallelism=1, plan=()):
    """A minion's ``dockerops.rolling_update web test=True`` return."""
    return host_return(order=order, parallelism=parallelism, test=True, plan=tuple(plan))


def host_return(**fields):
    """A minion's ``dockerops.rolling_update`` return (1.0 -> 1.1, start-first)."""
    values = {
        "result": True,
        "comment": "",
        "changes": {},
        "before": ("web:1.0",),
        "to": "web:1.1",
        "now": ("web:1.1",),
        "duration": 3.0,
        "order": "start-first",
        "parallelism": 1,
    }
    values.update(fields)
    return HostRollout(**values).to_dict()


@pytest.mark.parametrize(
    ("previews", "expected"),
    [
        pytest.param(
            {m: preview("start-first", 2) for m in FLEET}, dict.fromkeys(FLEET, 0), id="start-first"
        ),
        pytest.param(
            {m: preview("stop-first") for m in FLEET}, dict.fromkeys(FLEET, 1), id="stop-first"
        ),
        pytest.param(
            {"a": preview("stop-first", 5), "b": preview("start-first")},
            {"a": 2, "b": 0, "c": 2, "d": 2},
            id="capped-by-replicas-missing-count-all",
        ),
        pytest.param(
            {"a": "Minion did not return. [No response]", "b": {"result": False}},
            {"a": 2, "b": 2, "c": 2, "d": 2},
            id="no-preview-loses-all",
        ),
    ],
)
def test_losses(previews, expected):
    assert losses(previews, FLEET) == expected


def test_stop_first_losses_make_a_large_batch_refused():
    previews = {m: preview("stop-first") for m in FLEET}

    with pytest.raises(SpecError, match="a batch can take the fleet to 4 healthy replicas"):
        plan_fleet(
            "web", FLEET, batch=4, min_healthy="75%", loss_per_minion=losses(previews, FLEET)
        )
    plan = plan_fleet(
        "web", FLEET, batch=2, min_healthy="75%", loss_per_minion=losses(previews, FLEET)
    )
    assert plan.worst_case_healthy == 6 and plan.floor == 6


def test_replicas_running():
    status = {
        "a": {"web": [{"replica": 1}, {"replica": 2}]},
        "b": {"web": []},
        "c": {"api": [{"replica": 1}]},
        "d": "Minion did not return. [No response]",
    }

    assert replicas_running(status, "web") == {"a": 2}


@pytest.mark.parametrize(
    ("failures", "healthy", "expected"),
    [
        (0, 6, None),
        (0, 8, None),
        (1, 8, "1 failed minion(s), over the failure budget of 0: stopped before batch 2"),
        (0, 5, "fleet has 5 healthy replicas, below the floor of 6: stopped before batch 2"),
        (2, 5, "2 failed minion(s), over the failure budget of 0: stopped before batch 2"),
    ],
)
def test_stop_reason(failures, healthy, expected):
    plan = plan_fleet("web", FLEET, batch=1, min_healthy="75%")

    assert stop_reason(plan, failures, healthy, "batch 2") == expected


@pytest.mark.parametrize(
    ("tag", "override", "expected"),
    [
        (None, None, ["web"]),
        ("1.5", None, ["web", "tag=1.5"]),
        ("1.5", "1.4", ["web", "tag=1.4"]),
        (None, "1.4", ["web", "tag=1.4"]),
    ],
)
def test_module_args(tag, override, expected):
    assert RolloutOptions("web", "*", tag=tag).module_args(tag=override) == expected


STATES_OK = {"dockerops_|-web_|-web_|-running": {"result": True, "comment": "ok"}}
STATES_FAILED = {
    "dockerops_|-web_|-web_|-running": {"result": False, "comment": "web-2 became unhealthy"},
    "dockerops_|-api_|-api_|-running": {"result": True, "comment": "ok"},
}


@pytest.mark.parametrize(
    ("ret", "result", "comment"),
    [
        pytest.param({"ret": {"result": True}, "retcode": 0}, True, None, id="module-ok"),
        pytest.param({"ret": {"result": None}, "retcode": 0}, True, None, id="module-test"),
        pytest.param({"ret": {"result": False}, "retcode": 1}, False, None, id="module-failed"),
        pytest.param({"ret": {"result": True}, "retcode": 1}, False, None, id="retcode-wins"),
        pytest.param({"ret": STATES_OK, "retcode": 0}, True, None, id="states-ok"),
        pytest.param(
            {"ret": STATES_FAILED, "retcode": 2}, False, "web-2 became unhealthy", id="state-failed"
        ),
        pytest.param(
            {"ret": ["Rendering SLS 'base:dockerops' failed: bad"], "retcode": 1},
            False,
            "Rendering SLS 'base:dockerops' failed: bad",
            id="render-error-list",
        ),
        pytest.param(
            {"ret": "ERROR: boom", "retcode": 1}, False, "ERROR: boom", id="exception-string"
        ),
        pytest.param(False, False, "no answer within 30s", id="did-not-return"),
        pytest.param({"failed": True}, False, "no answer within 30s", id="failed-marker"),
        pytest.param(None, False, "no answer within 30s", id="missing"),
    ],
)
def test_judge_returns(ret, result, comment):
    returns = {} if ret is None else {"m1": ret}

    (judged,) = judge_returns(returns, ["m1"], 30, 4.2).values()

    assert judged["result"] is result
    assert judged.get("comment") == comment
    assert judged["duration"] == 4.2


# -- the engine: a fleet run as a state machine ----------------------------------

FOUR = {"a": 2, "b": 2, "c": 2, "d": 2}


def status_of(healthy=FOUR, image="web:1.0", silent=()):
    """``dockerops.status web`` returns: ``healthy`` replicas per minion."""
    return {
        m: {"web": [{"image": image, "state": "running", "health": "healthy"}] * count}
        for m, count in healthy.items()
        if m not in silent
    }


def rollout(status=None, previews=None, **options):
    status = status_of() if status is None else status
    previews = {m: preview("start-first") for m in status} if previews is None else previews
    return fleet.plan_rollout(
        fleet.RolloutOptions.from_args("web", "*", **options), status, previews
    )


def ok(**fields):
    return {"ret": host_return(**fields), "retcode": 0}


def failed(comment="web-1 became unhealthy"):
    return {
        "ret": host_return(result=False, comment=comment, now=("web:1.0",), rolled_back=()),
        "retcode": 1,
    }


def run_batches(engine, script):
    """Drive ``engine`` as the runner does: per batch, (status, returns) from
    ``script``; returns the lines it printed."""
    lines = []
    steps = iter(script)
    for batch in engine.batches():
        status, returns = next(steps)
        gate = engine.may_start(batch, status if engine.checks_health else None)
        lines.extend(gate.lines)
        if gate.minions:
            lines.extend(engine.record(batch, returns, 5.0, gate.minions))
    return lines


def states(engine):
    return {m: e["state"] for m, e in engine.entries.items()}


def test_a_rollout_that_goes_through_updates_every_minion():
    engine = rollout(batch=2, canary=1)
    lines = run_batches(
        engine,
        [
            (status_of(), {"a": ok()}),
            (status_of(), {"b": ok(), "c": ok()}),
            (status_of(), {"d": ok()}),
        ],
    )
    assert engine.finish() == ["web rolled on 4 minion(s)"]
    assert lines[:2] == ["canary: a (8 healthy, floor 6)", "  a: ok web:1.0 -> web:1.1 (3.0s)"]
    assert lines[2] == "batch 2/3: b, c (8 healthy, floor 6)"
    assert states(engine) == dict.fromkeys(FOUR, "updated")
    summary = engine.summary()
    assert (summary["result"], summary["retcode"]) == (True, 0)
    assert summary["minions"]["a"] == {
        "state": "updated",
        "result": True,
        "from": "web:1.0",
        "to": "web:1.1",
        "now": "web:1.1",
        "duration": 3.0,
        "comment": None,
    }
    assert engine.rollback_groups() == []


def test_a_failed_canary_stops_the_rollout_and_leaves_the_rest_not_started():
    engine = rollout(batch=2, canary=1)
    lines = run_batches(engine, [(status_of(), {"a": failed()})])
    assert lines[-2:] == [
        "  a: FAILED web:1.0 -> web:1.1 (3.0s): web-1 became unhealthy",
        "1 failed minion(s), over the failure budget of 0: stopped after canary",
    ]
    # Its own host put it back; nothing else was touched, so nothing to roll back.
    assert engine.rollback_groups() == []
    assert engine.finish() == []
    summary = engine.summary()
    assert summary["result"] is False and summary["retcode"] == 1
    assert summary["comment"] == (
        "1 failed minion(s), over the failure budget of 0: stopped after canary"
    )
    assert states(engine) == {
        "a": "failed",
        "b": "not started",
        "c": "not started",
        "d": "not started",
    }
    assert summary["minions"]["a"]["now"] == "web:1.0"
    assert summary["minions"]["b"] == {
        "state": "not started",
        "result": None,
        "from": "web:1.0",
        "comment": "the run stopped before this minion's batch",
    }


def test_the_budget_runs_out_mid_rollout_then_the_updated_roll_back_in_batches():
    engine = rollout(batch=1, max_failures=1)
    lines = run_batches(
        engine,
        [
            (status_of(), {"a": ok()}),
            (status_of(), {"b": failed()}),  # within the budget of 1: go on
            (status_of(), {"c": failed()}),
        ],
    )
    assert lines[-1] == "2 failed minion(s), over the failure budget of 1: stopped after batch 3"
    assert states(engine) == {"a": "updated", "b": "failed", "c": "failed", "d": "not started"}
    (group,) = engine.rollback_groups()
    assert (group.image, group.minions) == ("web:1.0", ("a",))
    assert group.call == fleet.Call("dockerops.rolling_update", ["web", "tag=1.0"])
    assert group.lines == ("rolling back 1 minion(s), 1 at a time",)
    back = engine.record_rollback(
        group, {"a": ok(before=("web:1.1",), to="web:1.0", now=("web:1.0",))}, 4.0
    )
    assert back == ["  a: rolled back to web:1.0: ok"]
    a = engine.summary()["minions"]["a"]
    # Where it ended up, not only where it went.
    assert (a["state"], a["rolled_back"], a["to"], a["now"]) == (
        "rolled back",
        True,
        "web:1.1",
        "web:1.0",
    )


def test_rollback_goes_in_the_rollouts_batch_size_one_call_per_earlier_version():
    before = status_of()
    before["b"]["web"] = [{"image": "web:0.9", "state": "running", "health": "healthy"}] * 2
    engine = rollout(status=before, batch=2, max_failures=0)
    run_batches(
        engine,
        [
            (before, {"a": ok(), "b": ok(before=("web:0.9",))}),
            (before, {"c": ok(before=("web:1.0", "web:0.9")), "d": failed()}),
        ],
    )
    groups = engine.rollback_groups()
    assert [(g.image, g.minions, g.call.args) for g in groups] == [
        ("web:0.9", ("b",), ["web", "tag=0.9"]),
        ("web:1.0", ("a",), ["web", "tag=1.0"]),
        # c ran two versions before: no single one to go back to.
        ("", (), []),
    ]
    assert groups[0].lines == ("rolling back 3 minion(s), 2 at a time",)
    assert groups[2].lines == (
        "  c: not rolled back: it ran several versions before (['web:1.0', 'web:0.9'])",
    )
    assert engine.entries["c"]["state"] == "not rolled back"
    lines = engine.record_rollback(groups[0], {"b": failed("pull failed")}, 2.0)
    assert lines == ["  b: rolled back to web:0.9: FAILED: pull failed"]
    assert engine.entries["b"]["state"] == "rollback failed"
    assert engine.entries["b"]["rolled_back"] is False


def test_no_rollback_when_asked_not_to():
    engine = rollout(batch=1, rollback=False)
    run_batches(engine, [(status_of(), {"a": ok()}), (status_of(), {"b": failed()})])
    assert engine.stopped and engine.rollback_groups() == []


def test_a_silent_minion_counts_once_and_is_not_run():
    engine = rollout(batch=1, max_failures=1)
    script = [
        (status_of(), {"a": ok()}),
        # b stops answering: failed (1, within the budget), and not run.
        (status_of(silent="b"), {}),
        # Still silent: not counted again.
        (status_of(silent="b"), {"c": ok()}),
        # It answers late: it stays failed and is not run.
        (status_of(), {"d": ok()}),
    ]
    lines = run_batches(engine, script)
    assert "  b: FAILED: no answer within 300s to dockerops.status" in lines
    assert lines.count("  b: FAILED: no answer within 300s to dockerops.status") == 1
    assert engine.failures == 1 and engine.stopped is None
    assert states(engine) == {"a": "updated", "b": "no answer", "c": "updated", "d": "updated"}
    # Within the budget, the rollout went through.
    assert engine.finish() == ["web rolled on 3 minion(s)"]
    assert engine.summary()["result"] is True


def test_a_silent_minion_past_the_budget_stops_before_the_next_batch():
    engine = rollout(batch=1)
    lines = run_batches(engine, [(status_of(), {"a": ok()}), (status_of(silent="c"), {})])
    assert lines[-2:] == [
        "  c: FAILED: no answer within 300s to dockerops.status",
        "1 failed minion(s), over the failure budget of 0: stopped before batch 2",
    ]
    assert states(engine) == {
        "a": "updated",
        "b": "not started",
        "c": "no answer",
        "d": "not started",
    }
    assert [g.minions for g in engine.rollback_groups()] == [("a",)]


def test_a_minion_that_answers_its_rollout_late_failed_and_is_rolled_back_too():
    """No return within the timeout: its rollout may still be running there."""
    engine = rollout(batch=2, max_failures=0, timeout=20)
    lines = run_batches(engine, [(status_of(), {"a": ok()})])  # b: no return
    assert lines[-2:] == [
        "  b: FAILED web:1.0 -> None (5.0s): no answer within 20s",
        "1 failed minion(s), over the failure budget of 0: stopped after batch 1",
    ]
    assert engine.entries["b"]["state"] == "no answer"
    (group,) = engine.rollback_groups()
    assert group.minions == ("a", "b")


def test_the_floor_stops_a_batch_when_the_fleet_is_short():
    engine = rollout(batch=1)
    short = status_of({"a": 2, "b": 1, "c": 2, "d": 0})
    lines = run_batches(engine, [(status_of(), {"a": ok()}), (short, {})])
    assert lines[-1] == (
        "fleet has 5 healthy replicas, below the floor of 6: stopped before batch 2"
    )


def test_stop_first_losses_count_against_the_floor_before_each_batch():
    previews = {m: preview("stop-first", parallelism=1) for m in FOUR}
    engine = rollout(previews=previews, batch=2)
    assert engine.plan.worst_case_healthy == 6
    # One replica of c is down: batch 2 (c, d) may take 2 more, 5 < 6.
    lines = run_batches(
        engine,
        [
            (status_of(), {"a": ok(order="stop-first"), "b": ok(order="stop-first")}),
            (status_of({"a": 2, "b": 2, "c": 1, "d": 2}), {}),
        ],
    )
    assert lines[-1] == (
        "fleet has 7 healthy replicas and batch 2 may take down 2, below the floor of 6: "
        "stopped before batch 2"
    )
    # Start-first loses nothing: the same fleet goes on.
    engine = rollout(batch=2)
    run_batches(
        engine,
        [
            (status_of(), {"a": ok(), "b": ok()}),
            (status_of({"a": 2, "b": 2, "c": 1, "d": 2}), {"c": ok(), "d": ok()}),
        ],
    )
    assert engine.stopped is None


def test_test_runs_no_batch_and_lists_every_minion():
    previews = {m: preview("start-first", plan=["batch 1 (start-first): web-1"]) for m in FOUR}
    engine = rollout(previews=previews, test=True)
    assert list(engine.batches()) == []
    assert engine.describe()[-4:] == [f"{m}: batch 1 (start-first): web-1" for m in sorted(FOUR)]
    summary = engine.summary()
    assert summary["comment"] == "test: nothing changed" and summary["result"] is True
    assert states(engine) == dict.fromkeys(FOUR, "tested")


def test_targeted_minions_outside_the_plan_are_listed():
    status = status_of({"a": 2, "b": 2})
    status["c"] = {"web": []}
    status["d"] = "Minion did not return. [No response]"
    engine = rollout(status=status)
    assert sorted(engine.plan.replicas) == ["a", "b"]
    assert states(engine) == {
        "a": "not started",
        "b": "not started",
        "c": "does not run the service",
        "d": "no answer",
    }


def test_an_unreadable_return_is_a_failure():
    engine = rollout(batch=4)
    run_batches(engine, [(status_of(), {m: {"ret": {"result": True}, "retcode": 0} for m in FOUR})])
    assert engine.entries["a"]["result"] is False
    assert engine.entries["a"]["comment"].startswith("not a dockerops.rolling_update return")


def test_pause_only_between_batches_that_run():
    engine = rollout(batch=2, pause=7)
    assert len(engine.plan.batches) == 2
    batches = engine.batches()
    one = next(batches)
    assert engine.pause_after(one) == 7
    two = next(batches)
    assert engine.pause_after(two) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": "abc"}, "invalid argument: batch: expected a count or a percentage, got 'abc'"),
        ({"pause": "soon"}, "invalid argument: pause: expected a non-negative number of seconds"),
        ({"timeout": 0}, "invalid argument: timeout: expected a positive number of seconds"),
        ({"rollback": "maybe"}, "invalid argument: rollback: expected True or False"),
    ],
)
def test_bad_arguments_are_reported_as_arguments(kwargs, message):
    with pytest.raises(ArgumentError) as err:
        rollout(**kwargs)
    assert str(err.value).startswith(message)
    assert "pillar" not in str(err.value)


# -- apply: the same batches, floor and budget ------------------------------------


def applied(ok=True):
    state = {"result": ok, "comment": "ok" if ok else "web-2 became unhealthy"}
    return {"ret": {"dockerops_|-web_|-web_|-running": state}, "retcode": 0 if ok else 2}


def test_apply_stops_past_the_budget_and_lists_the_rest_not_started():
    engine = fleet.plan_apply(fleet.ApplyOptions.from_args("*"), ["m3", "m1", "m2"], None)
    assert not engine.checks_health
    lines = run_batches(engine, [(None, {"m1": applied()}), (None, {"m2": applied(False)})])
    assert lines == [
        "batch 1/3: m1",
        "  m1: ok (5.0s)",
        "batch 2/3: m2",
        "  m2: FAILED (5.0s): web-2 became unhealthy",
        "1 failed minion(s), over the failure budget of 0: stopped after batch 2",
    ]
    assert engine.rollback_groups() == []
    assert states(engine) == {"m1": "applied", "m2": "failed", "m3": "not started"}


def test_apply_with_a_service_keeps_its_floor():
    options = fleet.ApplyOptions.from_args("*", service="web", min_healthy="75%", batch=2)
    engine = fleet.plan_apply(options, list(FOUR), status_of())
    assert engine.checks_health and engine.plan.floor == 6
    lines = run_batches(
        engine,
        [
            (status_of(), {"a": applied(), "b": applied()}),
            (status_of({"a": 2, "b": 2, "c": 1, "d": 0}), {}),
        ],
    )
    assert lines[-1] == (
        "fleet has 5 healthy replicas, below the floor of 6: stopped before batch 2"
    )


# -- the health gate asks only what the floor needs --------------------------------


def checked_batches(engine, fleet_status, returns_of, asked_log=None):
    """Drive ``engine`` as the runner does now: per batch, ``dockerops.status``
    of :meth:`to_check`'s minions only (``fleet_status(number)`` says what the
    whole fleet would answer), then ``returns_of(number, minions)``."""
    lines = []
    for batch in engine.batches():
        asked = engine.to_check(batch)
        if asked_log is not None:
            asked_log.append(asked)
        answers = fleet_status(batch.number)
        status = {m: answers[m] for m in asked if m in answers}
        gate = engine.may_start(batch, status, asked)
        lines.extend(gate.lines)
        if gate.minions:
            lines.extend(
                engine.record(batch, returns_of(batch.number, gate.minions), 5.0, gate.minions)
            )
    return lines


EIGHT = {m: 2 for m in "abcdefgh"}


def test_host_rollout_carries_its_healthy_count_and_a_bad_one_is_unknown():
    assert HostRollout.from_dict(host_return(healthy=2)).healthy == 2
    assert "healthy" not in host_return()
    for bad in (-1, True, "2", None, 1.5):
        data = {**host_return(), "healthy": bad}
        assert HostRollout.from_dict(data).healthy is None


def test_each_check_asks_its_batch_and_a_refresh_round_not_the_fleet():
    engine = rollout(status=status_of(EIGHT), batch=2)
    asked = []
    checked_batches(
        engine,
        lambda n: status_of(EIGHT),
        lambda n, minions: {m: ok(healthy=2) for m in minions},
        asked,
    )
    assert engine.stopped is None
    # The batch, plus as many others from the end of the plan, round the fleet.
    assert asked == [
        ["a", "b", "g", "h"],
        ["c", "d", "e", "f"],
        # Then round the minions already done, latest first.
        ["c", "d", "e", "f"],
        ["a", "b", "g", "h"],
    ]
    engine = rollout(status=status_of(EIGHT), batch=2)
    engine.refresh = 0
    asked = []
    checked_batches(
        engine, lambda n: status_of(EIGHT), lambda n, ms: {m: ok(healthy=2) for m in ms}, asked
    )
    assert asked == [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]


def test_a_return_without_a_healthy_count_is_asked_at_the_next_check():
    engine = rollout(status=status_of(EIGHT), batch=2)
    engine.refresh = 0
    asked = []
    checked_batches(
        engine,
        lambda n: status_of(EIGHT),
        # c and d's minions say how many are healthy; the others do not.
        lambda n, ms: {m: ok(healthy=2) if m in "cd" else ok() for m in ms},
        asked,
    )
    assert asked == [["a", "b"], ["a", "b", "c", "d"], ["e", "f"], ["e", "f", "g", "h"]]


def test_the_floor_counts_what_returns_report():
    """b's and d's own rollouts returned with no healthy replica: 14, then 12
    of 16; the floor (13) stops batch 3, asking nobody but each batch."""
    engine = rollout(status=status_of(EIGHT), batch=2, min_healthy=13)
    engine.refresh = 0
    asked = []
    lines = checked_batches(
        engine,
        lambda n: status_of(EIGHT),
        lambda n, ms: {m: ok(healthy=0 if m in "bd" else 2) for m in ms},
        asked,
    )
    assert asked == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert "batch 2/4: c, d (14 healthy, floor 13)" in lines
    assert lines[-1] == (
        "fleet has 12 healthy replicas, below the floor of 13: stopped before batch 3"
    )
    assert (engine.healthy, engine.known_healthy("b"), engine.known_healthy("e")) == (12, 0, 2)
    assert engine.failures == 0


def test_an_untouched_minion_that_decays_is_seen_by_the_refresh_round():
    """h loses both replicas after the plan: the first check's refresh reads it."""
    engine = rollout(status=status_of(EIGHT), batch=2, min_healthy=15)
    decayed = {**EIGHT, "h": 0}
    lines = checked_batches(
        engine, lambda n: status_of(decayed), lambda n, ms: {m: ok(healthy=2) for m in ms}
    )
    assert lines == ["fleet has 14 healthy replicas, below the floor of 15: stopped before batch 1"]
    # Without the refresh, the plan's count of h stands until h's own batch.
    engine = rollout(status=status_of(EIGHT), batch=2, min_healthy=15)
    engine.refresh = 0
    lines = checked_batches(
        engine, lambda n: status_of(decayed), lambda n, ms: {m: ok(healthy=2) for m in ms}
    )
    assert lines[-1] == (
        "fleet has 14 healthy replicas, below the floor of 15: stopped before batch 4"
    )


def test_a_silent_minion_in_a_scoped_check_counts_once_and_is_not_asked_again():
    engine = rollout(status=status_of(EIGHT), batch=2, max_failures=1)
    engine.refresh = 0
    asked = []
    lines = checked_batches(
        engine,
        # c stops answering after the plan.
        lambda n: status_of(EIGHT, silent="c"),
        lambda n, ms: {m: ok(healthy=2) for m in ms},
        asked,
    )
    assert lines.count("  c: FAILED: no answer within 300s to dockerops.status") == 1
    assert asked == [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    assert engine.failures == 1 and engine.stopped is None
    assert states(engine)["c"] == "no answer"
    assert "batch 2/4: c, d (14 healthy, floor 12)" in lines  # c counts nothing
    assert engine.healthy == 14


def test_a_minion_not_asked_is_not_taken_for_silent():
    engine = rollout(status=status_of(EIGHT), batch=2)
    (batch, *_rest) = engine.batches()
    gate = engine.may_start(batch, status_of({"a": 2, "b": 2}), ["a", "b"])
    assert gate.go and gate.minions == ("a", "b")
    assert engine.failures == 0 and engine.silent == set()
    assert gate.lines == ("batch 1/4: a, b (16 healthy, floor 12)",)


def test_a_minion_that_did_not_answer_its_rollout_is_asked_at_the_next_check():
    engine = rollout(status=status_of(EIGHT), batch=2, max_failures=1)
    engine.refresh = 0
    asked = []
    checked_batches(
        engine,
        lambda n: status_of(EIGHT),
        lambda n, ms: {m: ok(healthy=2) for m in ms if m != "b"},
        asked,
    )
    assert asked[:2] == [["a", "b"], ["b", "c", "d"]]
    assert engine.entries["b"]["state"] == "no answer"


def test_a_minion_the_plan_did_not_hear_from_is_asked_first():
    options = fleet.ApplyOptions.from_args("*", service="web", min_healthy="75%", batch=2)
    status = status_of(FOUR, silent="d")
    engine = fleet.plan_apply(options, list(FOUR), status)
    engine.refresh = 0
    (batch, *_rest) = engine.batches()
    assert engine.to_check(batch) == ["a", "b", "d"]


def test_apply_asks_each_batch_again_at_the_next_check():
    """A highstate's return does not say how many replicas are healthy."""
    options = fleet.ApplyOptions.from_args("*", service="web", min_healthy="75%", batch=2)
    engine = fleet.plan_apply(options, list(EIGHT), status_of(EIGHT))
    engine.refresh = 0
    asked = []
    checked_batches(
        engine,
        lambda n: status_of({**EIGHT, "a": 1}),
        lambda n, ms: {m: applied() for m in ms},
        asked,
    )
    assert asked == [["a", "b"], ["a", "b", "c", "d"], ["c", "d", "e", "f"], ["e", "f", "g", "h"]]
    assert engine.healthy == 15 - 4  # g and h applied, not asked since: unknown
    assert engine.known_healthy("a") == 1 and engine.known_healthy("g") is None


def test_rollback_returns_feed_the_known_counts():
    engine = rollout(status=status_of(EIGHT), batch=2)
    engine.refresh = 0
    checked_batches(
        engine,
        lambda n: status_of(EIGHT),
        lambda n, ms: {m: ok(healthy=2) if n == 1 else failed() for m in ms},
    )
    (group,) = engine.rollback_groups()
    assert group.minions == ("a", "b")
    back = {"a": ok(before=("web:1.1",), to="web:1.0", now=("web:1.0",), healthy=1)}
    engine.record_rollback(group, back, 3.0)
    # a said 1; b did not answer: unknown, counting nothing.
    assert (engine.known_healthy("a"), engine.known_healthy("b")) == (1, None)
