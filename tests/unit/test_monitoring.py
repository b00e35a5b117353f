"""dockerops.monitoring: what an inspect says about how a replica runs."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.monitoring import (
    MAX_SAMPLES,
    CrashLoopPolicy,
    crash_loop,
    docker_time,
    exit_status,
    gave_up,
    last_health_output,
    record_sample,
    replica_monitoring,
    restart_warning,
    restarts_within,
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
        # It gave up: no longer a loop, even with 5 restarts just now.
        "crash_loop": False,
    }
    assert "warning" in replica_monitoring(inspect(status="running", policy="always"))


NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
LONG_AGO = "2026-01-01T00:00:00.123456789Z"


def running(restarts: int, created: str = LONG_AGO, started: str = LONG_AGO) -> dict[str, Any]:
    return {
        "Created": created,
        "State": {"Status": "running", "StartedAt": started},
        "RestartCount": restarts,
        "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5}},
    }


def iso(seconds_before_now: float) -> str:
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(NOW - seconds_before_now, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds, as Docker


def test_docker_times_read_with_nanoseconds_and_the_zero_time_is_none() -> None:
    assert docker_time(iso(30)) == pytest.approx(NOW - 30, abs=1e-5)
    assert docker_time("2026-01-01T00:00:00Z") == 1767225600.0
    assert docker_time("0001-01-01T00:00:00Z") is None
    assert docker_time("not a time") is None
    assert docker_time(None) is None


@pytest.mark.parametrize(
    ("samples", "details", "expected"),
    [
        # Restarts since the oldest sample inside the window.
        ([(NOW - 400, 0), (NOW - 200, 2), (NOW - 10, 6)], running(6), 4),
        # The sample before the window is not a baseline (restarts may predate it).
        ([(NOW - 400, 0)], running(6, started=iso(350)), 0),
        # Created inside the window: created with 0 restarts.
        ([], running(4, created=iso(100), started=iso(5)), 4),
        # Nothing known but a last start inside the window: at least one restart.
        ([], running(9, started=iso(20)), 1),
        ([], running(0, started=iso(20)), 0),
        # Docker reset its count (a start by hand): older, higher samples ignored.
        ([(NOW - 200, 7), (NOW - 100, 1)], running(2), 1),
    ],
)
def test_restarts_within_the_window_never_count_more_than_happened(
    samples: list[tuple[float, int]], details: dict[str, Any], expected: int
) -> None:
    assert restarts_within(samples, details, NOW, 300) == expected


def test_a_replica_restarted_often_enough_within_the_window_is_a_crash_loop() -> None:
    policy = CrashLoopPolicy(restarts=3, window=300)
    samples = [(NOW - 250, 2), (NOW - 5, 5)]

    assert crash_loop(samples, running(5), NOW, policy) == (
        "restarted 3 times in the last 5m (crash_loop: 3 restarts within 5m)"
    )
    assert crash_loop(samples, running(4), NOW, policy) is None
    # Restarting (between two runs) counts; one that gave up or was stopped does not.
    restarting = running(5)
    restarting["State"] = {"Status": "restarting", "Restarting": True}
    assert crash_loop(samples, restarting, NOW, policy) is not None
    # Exited between two runs, Docker about to start it again: still a loop.
    between = running(3)
    between["State"] = {"Status": "exited", "ExitCode": 1}
    assert crash_loop([(NOW - 250, 0)], between, NOW, policy) is not None
    # Exited for good (on-failure:5 used up): it gave up, no longer a loop.
    exited = running(5)
    exited["State"] = {"Status": "exited", "ExitCode": 1}
    assert crash_loop(samples, exited, NOW, policy) is None
    # The same restarts spread over a longer time are no loop in a shorter window.
    assert crash_loop(samples, running(5), NOW, CrashLoopPolicy(3, 60)) is None


def test_replica_monitoring_reports_a_crash_loop_with_its_reason() -> None:
    shown = replica_monitoring(
        running(4, created=iso(60), started=iso(1)), (), NOW, CrashLoopPolicy(3, 300)
    )
    assert shown["crash_loop"] is True
    assert shown["crash_loop_reason"].startswith("restarted 4 times in the last 5m")
    assert shown["gave_up"] is False


def test_samples_keep_the_window_and_each_run_of_one_count_as_two() -> None:
    samples: list[tuple[float, int]] = []
    for step in range(100):
        samples = record_sample(samples, NOW + step * 10, step // 25, 300)
    # The window is 690 s to 990 s: count 2 from 500 s (its first sample is
    # older, its last one inside still says 2), count 3 from 750 s.
    assert samples == [(NOW + 740, 2), (NOW + 750, 3), (NOW + 990, 3)]
    # Whatever happens, a container's samples stay bounded.
    for step in range(MAX_SAMPLES * 2):
        samples = record_sample(samples, NOW + 2000 + step, step, 10**6)
    assert len(samples) == MAX_SAMPLES
    assert samples[-1] == (NOW + 2000 + MAX_SAMPLES * 2 - 1, MAX_SAMPLES * 2 - 1)
