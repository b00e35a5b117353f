"""The reactor's runner (dockerops.reaction): a crash loop or give-up restarts
its service once per window, everything is recorded, and it never loops."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dockerops.reaction import KEEP, ReactionLog, decide

HOUR = 3600.0


@pytest.mark.parametrize(
    ("past", "event", "restart", "action"),
    [
        ([], "crash_loop", True, "restart"),
        ([], "gave_up", True, "restart"),
        # Restart disabled: recorded only.
        ([], "gave_up", False, "report"),
        # Other events never restart.
        ([], "unhealthy", True, "report"),
        ([], "oom_killed", True, "report"),
        # Restarted within the window: only reported.
        ([{"time": 1000 - 10, "action": "restart"}], "gave_up", True, "report"),
        ([{"time": 1000 - HOUR + 1, "action": "restart"}], "crash_loop", True, "report"),
        # The window has passed: restart again.
        ([{"time": 1000 - HOUR, "action": "restart"}], "crash_loop", True, "restart"),
        # Reports do not open a window.
        ([{"time": 990, "action": "report"}], "crash_loop", True, "restart"),
    ],
)
def test_decide(past: list[dict[str, float | str]], event: str, restart: bool, action: str) -> None:
    assert decide(past, event, 1000, HOUR, restart).action == action


def test_a_second_give_up_within_the_window_is_only_reported(tmp_path: Path) -> None:
    log = ReactionLog(tmp_path)
    event = {"event": "crash_loop", "replica": 1, "reason": "restarted 3 times"}
    assert log.react("m1", "web", event, 100.0).action == "restart"
    second = log.react("m1", "web", {**event, "event": "gave_up"}, 160.0)
    assert second.action == "report"
    assert "restarted 60s ago, within the 3600s window" in second.reason
    # Another minion, or another service, is its own window.
    assert log.react("m2", "web", event, 161.0).action == "restart"
    assert log.react("m1", "api", event, 162.0).action == "restart"
    # Every event is recorded, with what was decided.
    record = json.loads((tmp_path / "reactions.json").read_text())
    assert [(e["event"], e["action"]) for e in record["m1/web"]] == [
        ("crash_loop", "restart"),
        ("gave_up", "report"),
    ]
    assert record["m1/web"][0]["reason"] == "restarted 3 times"
    # The slot, from an event of an earlier beacon (``replica``) or of this one.
    assert record["m1/web"][0]["slot"] == 1
    log.react("m3", "web", {"event": "crash_loop", "slot": 2, "replica": 2}, 170.0)
    assert json.loads((tmp_path / "reactions.json").read_text())["m3/web"][0]["slot"] == 2
    # The window is configurable.
    assert log.react("m1", "web", event, 200.0, window="30s").action == "restart"


def test_events_at_once_restart_once(tmp_path: Path) -> None:
    log = ReactionLog(tmp_path)
    actions: list[str] = []
    start = threading.Barrier(8)

    def react() -> None:
        start.wait()
        actions.append(log.react("m1", "web", {"event": "gave_up"}, 100.0).action)

    threads = [threading.Thread(target=react) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(actions) == ["report"] * 7 + ["restart"]


def test_the_record_is_bounded(tmp_path: Path) -> None:
    log = ReactionLog(tmp_path)
    for number in range(KEEP + 10):
        log.react("m1", "web", {"event": "unhealthy"}, float(number))
    record = json.loads((tmp_path / "reactions.json").read_text())
    assert len(record["m1/web"]) == KEEP
    assert record["m1/web"][-1]["time"] == KEEP + 9
