"""Fleet planning: batches, canaries, the healthy floor, failure budgets."""

from __future__ import annotations

import pytest

from dockerops.errors import SpecError
from dockerops.fleet import (
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


def preview(order, parallelism=1):
    return {"result": None, "plan": [], "update": {"order": order, "parallelism": parallelism}}


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
