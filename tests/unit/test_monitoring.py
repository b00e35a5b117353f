"""dockerops.monitoring: what an inspect says about how a replica runs."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.monitoring import (
    exit_status,
    gave_up,
    last_health_output,
    replica_monitoring,
    restart_warning,
)


def inspect(
    status: str = "exited",
    code: int = 1,
    policy: str = "on-failure",
    retries: int = 5,
    restarts: int = 5,
    **state: Any,
) -> dict[str, Any]:
    return {
        "State": {"Status": status, "ExitCode": code, **state},
        "RestartCount": restarts,
        "HostConfig": {"RestartPolicy": {"Name": policy, "MaximumRetryCount": retries}},
    }


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        (
            inspect(code=3),
            "exited with code 3 after 5 restarts: on-failure:5 has used up its retries, "
            "Docker will not restart it",
        ),
        (inspect(code=3, restarts=4), None),  # Docker tries once more
        (inspect(status="running", code=0, restarts=5), None),
        (inspect(code=3, Restarting=True), None),
        (inspect(code=0, restarts=0), "exited with code 0: on-failure restarts only failures"),
        (
            inspect(code=137, policy="no", restarts=0),
            "exited with code 137: restart_policy no never restarts it",
        ),
        (inspect(code=137, policy="always"), None),
        (inspect(code=137, policy="unless-stopped"), None),
        (
            inspect(status="dead", code=3, retries=2, restarts=2),
            (
                "exited with code 3 after 2 restarts: on-failure:2 has used up its retries, "
                "Docker will not restart it"
            ),
        ),
        ({}, None),
    ],
)
def test_gave_up(details: dict[str, Any], reason: str | None) -> None:
    assert gave_up(details) == reason


def test_the_last_health_output_is_its_last_lines_trimmed() -> None:
    log = [
        {"Output": "old"},
        {"Output": "\n".join(f"line {i}   " for i in range(1, 9)) + "\n\n"},
    ]
    details = {"State": {"Health": {"Status": "unhealthy", "Log": log}}}

    assert last_health_output(details) == "line 4\nline 5\nline 6\nline 7\nline 8"
    assert last_health_output({"State": {}}) is None
    long = {"State": {"Health": {"Log": [{"Output": "x" * 2000}]}}}
    assert last_health_output(long) == "..." + "x" * 500


def test_exit_status_of_a_container_that_never_finished_and_of_an_oom_kill() -> None:
    fresh = {"State": {"ExitCode": 0, "StartedAt": "S", "FinishedAt": "0001-01-01T00:00:00Z"}}
    killed = {"State": {"ExitCode": 137, "OOMKilled": True, "StartedAt": "S", "FinishedAt": "F"}}

    assert exit_status(fresh) == {
        "exit_code": None,
        "oom_killed": False,
        "started_at": "S",
        "finished_at": None,
    }
    assert exit_status(killed) == {
        "exit_code": 137,
        "oom_killed": True,
        "started_at": "S",
        "finished_at": "F",
    }


@pytest.mark.parametrize(
    ("policy", "warns"),
    [("always", True), ("unless-stopped", True), ("on-failure:5", False), ("no", False)],
)
def test_restart_policies_that_hide_a_failing_replica_are_warned_of(
    policy: str, warns: bool
) -> None:
    warning = restart_warning(policy)

    assert (warning is not None) == warns
    if warns:
        assert warning is not None and warning.startswith(f"restart_policy {policy} restarts")


def test_replica_monitoring_names_each_flag_with_its_reason() -> None:
    shown = replica_monitoring(inspect(code=3, FinishedAt="F", StartedAt="S"))

    assert shown == {
        "exit_code": 3,
        "oom_killed": False,
        "started_at": "S",
        "finished_at": "F",
        "health_output": None,
        "gave_up": True,
        "gave_up_reason": (
            "exited with code 3 after 5 restarts: on-failure:5 has used up its retries, "
            "Docker will not restart it"
        ),
    }
    assert "warning" in replica_monitoring(inspect(status="running", policy="always"))
