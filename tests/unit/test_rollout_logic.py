"""The decisions around a rollout, without Docker: health timings and progress events.

dockerops.health (detection_time, min_healthy_time) and dockerops.events
(event_progress, event_bus_listens). The update spec and the ports its slots
need are tested with the spec (test_spec*.py); plan_service over slots and
describe_plan with the plan (test_plan.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from dockerops.errors import SpecError
from dockerops.events import event_bus_listens, event_progress
from dockerops.health import NO_HEALTHCHECK_SETTLE, detection_time, min_healthy_time
from dockerops.host import DockerHost
from tests.support.builders import WEB, MakeSpec

OLD_IMAGE = "registry.example.com/web:1.4"
NEW_IMAGE = "registry.example.com/web:1.5"
SECONDS = 1_000_000_000  # Docker's durations are in nanoseconds


class FakeHost:
    """The one DockerHost call the timing helpers make: inspecting the image."""

    def __init__(self, image: dict[str, Any] | None = None) -> None:
        self.image = image
        self.asked: list[str] = []

    def inspect_image(self, ref: str) -> dict[str, Any]:
        self.asked.append(ref)
        if self.image is None:
            raise AssertionError("the image was not to be inspected")
        return self.image


def host_with(image: dict[str, Any] | None = None) -> tuple[DockerHost, FakeHost]:
    fake = FakeHost(image)
    return cast(DockerHost, fake), fake


def image_check(**healthcheck: Any) -> dict[str, Any]:
    """An image inspect whose Config.Healthcheck is ``healthcheck``."""
    return {"Id": "sha256:0123", "Config": {"Healthcheck": healthcheck, "Cmd": ["serve"]}}


# --- detection_time --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthcheck", "seconds"),
    [
        ({"test": "true"}, 15.0),  # defaults: 5s x 3
        ({"test": "true", "interval": "2s", "retries": 4}, 8.0),
        ({"test": ["CMD", "check"], "interval": "500ms", "retries": 1}, 0.5),
        ({"test": "true", "interval": "1m", "retries": 2, "start_period": "5m"}, 120.0),
    ],
)
def test_spec_healthcheck_wins(
    make_spec: MakeSpec, healthcheck: dict[str, Any], seconds: float
) -> None:
    host, fake = host_with(None)  # inspecting the image would fail

    assert detection_time(host, make_spec(healthcheck=healthcheck)) == pytest.approx(seconds)
    assert fake.asked == []


@pytest.mark.parametrize(
    ("image", "seconds"),
    [
        pytest.param(
            image_check(Test=["CMD-SHELL", "curl -f localhost"], Interval=10 * SECONDS, Retries=5),
            50.0,
            id="interval-and-retries",
        ),
        pytest.param(
            image_check(Test=["CMD", "check"], Interval=SECONDS // 2, Retries=2),
            1.0,
            id="sub-second-interval",
        ),
        pytest.param(
            image_check(Test=["CMD", "check"], Interval=0, Retries=2), 60.0, id="interval-0"
        ),
        pytest.param(image_check(Test=["CMD", "check"], Retries=4), 120.0, id="no-interval"),
        pytest.param(
            image_check(Test=["CMD", "check"], Interval=7 * SECONDS, Retries=0),
            21.0,
            id="retries-0",
        ),
        pytest.param(
            image_check(Test=["CMD", "check"], Interval=7 * SECONDS), 21.0, id="no-retries"
        ),
        pytest.param(image_check(Test=["CMD-SHELL", "true"]), 90.0, id="docker-defaults"),
        pytest.param(
            image_check(Test=["CMD", "check"], Interval=0, Retries=0, Timeout=0, StartPeriod=0),
            90.0,
            id="all-zero",
        ),
    ],
)
def test_image_healthcheck_is_used_without_a_spec_one(
    make_spec: MakeSpec, image: dict[str, Any], seconds: float
) -> None:
    host, fake = host_with(image)

    assert detection_time(host, make_spec()) == pytest.approx(seconds)
    assert fake.asked == [OLD_IMAGE]


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(image_check(Test=["NONE"]), id="healthcheck-none"),
        pytest.param(image_check(Test=["NONE"], Interval=5 * SECONDS, Retries=3), id="none-set"),
        pytest.param(image_check(Test=[]), id="empty-test"),
        pytest.param(image_check(Interval=5 * SECONDS, Retries=3), id="no-test"),
        pytest.param(image_check(Test=None), id="test-null"),
        pytest.param({"Config": {"Healthcheck": None}}, id="healthcheck-null"),
        pytest.param({"Config": {"Cmd": ["serve"]}}, id="no-healthcheck"),
        pytest.param({"Config": None}, id="config-null"),
        pytest.param({}, id="no-config"),
    ],
)
def test_no_healthcheck_anywhere(make_spec: MakeSpec, image: dict[str, Any]) -> None:
    host, _fake = host_with(image)

    assert detection_time(host, make_spec()) is None


def test_spec_healthcheck_wins_over_an_image_without_one(make_spec: MakeSpec) -> None:
    host, _fake = host_with(image_check(Test=["NONE"]))

    spec = make_spec(healthcheck={"test": "true", "interval": "3s", "retries": 2})

    assert detection_time(host, spec) == pytest.approx(6.0)


# --- min_healthy_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "image", "seconds"),
    [
        pytest.param(
            {"healthcheck": {"test": "true", "interval": "2s", "retries": 3}},
            None,
            6.0,
            id="default-is-spec-detection",
        ),
        pytest.param(
            {},
            image_check(Test=["CMD", "check"], Interval=4 * SECONDS, Retries=2),
            8.0,
            id="default-is-image-detection",
        ),
        pytest.param({}, image_check(Test=["CMD", "check"]), 90.0, id="default-docker-defaults"),
        pytest.param({}, image_check(Test=["NONE"]), NO_HEALTHCHECK_SETTLE, id="default-no-check"),
        pytest.param({}, {}, NO_HEALTHCHECK_SETTLE, id="default-image-without-config"),
        pytest.param(
            {
                "healthcheck": {"test": "true", "interval": "2s", "retries": 3},
                "update": {"min_healthy_time": "6s"},
            },
            None,
            6.0,
            id="equal-to-detection",
        ),
        pytest.param(
            {
                "healthcheck": {"test": "true", "interval": "2s", "retries": 3},
                "update": {"min_healthy_time": "1m"},
            },
            None,
            60.0,
            id="longer-than-detection",
        ),
        pytest.param(
            {"update": {"min_healthy_time": "100s"}},
            image_check(Test=["CMD", "check"]),
            100.0,
            id="longer-than-image-detection",
        ),
        pytest.param(
            {"update": {"min_healthy_time": "5s"}},
            image_check(Test=["NONE"]),
            5.0,
            id="explicit-without-check",
        ),
    ],
)
def test_min_healthy_time(
    make_spec: MakeSpec, fields: dict[str, Any], image: dict[str, Any] | None, seconds: float
) -> None:
    host, _fake = host_with(image)

    assert min_healthy_time(host, make_spec(**fields)) == pytest.approx(seconds)


def test_no_healthcheck_settle_is_one_second() -> None:
    assert NO_HEALTHCHECK_SETTLE == 1.0


@pytest.mark.parametrize(
    ("fields", "image", "wanted", "detect"),
    [
        pytest.param(
            {"healthcheck": {"test": "true", "interval": "2s", "retries": 3}},
            None,
            "5s",
            "6s",
            id="spec-check",
        ),
        pytest.param(
            {"healthcheck": {"test": "true", "interval": "1.5s", "retries": 3}},
            None,
            "4s",
            "4.5s",
            id="fractional",
        ),
        pytest.param({}, image_check(Test=["CMD", "check"]), "0s", "90s", id="image-check-zero"),
        pytest.param(
            {},
            image_check(Test=["CMD", "check"], Interval=10 * SECONDS, Retries=5),
            "49s",
            "50s",
            id="image-check",
        ),
    ],
)
def test_min_healthy_time_shorter_than_detection_is_refused(
    make_spec: MakeSpec,
    fields: dict[str, Any],
    image: dict[str, Any] | None,
    wanted: str,
    detect: str,
) -> None:
    host, _fake = host_with(image)
    spec = make_spec(**{**fields, "update": {"min_healthy_time": wanted}})

    with pytest.raises(SpecError) as caught:
        min_healthy_time(host, spec)

    (problem,) = caught.value.problems
    assert problem.startswith(f"{WEB}:update:min_healthy_time: {wanted} is shorter"), problem
    assert f"({detect} = interval x retries)" in problem, problem
    assert problem in str(caught.value)


# --- event_progress --------------------------------------------------------------------------


def test_event_progress_without_send_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dockerops.rollout")
    progress = event_progress(None, "web")

    progress("batch", {"batch": 1, "of": 2})

    (record,) = [r for r in caplog.records if r.name == "dockerops.rollout"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "dockerops rollout web: batch batch=1 of=2"


def test_event_progress_sends_tagged_events(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dockerops.rollout")
    sent: list[tuple[str, dict[str, Any]]] = []
    progress = event_progress(lambda tag, data: sent.append((tag, data)), "web")
    data = {"replica": "web-3", "state": "healthy", "seconds": 1.5}

    progress("replica", data)
    progress("done", {"result": True})

    assert sent == [
        (
            "dockerops/rollout/web/replica",
            {"service": "web", "seq": 1, "replica": "web-3", "state": "healthy", "seconds": 1.5},
        ),
        ("dockerops/rollout/web/done", {"service": "web", "seq": 2, "result": True}),
    ]
    assert data == {"replica": "web-3", "state": "healthy", "seconds": 1.5}  # not mutated
    messages = [r.getMessage() for r in caplog.records if r.name == "dockerops.rollout"]
    assert messages == [
        "dockerops rollout web: replica replica=web-3 state=healthy seconds=1.5",
        "dockerops rollout web: done result=True",
    ]


@pytest.mark.parametrize(
    "error",
    [RuntimeError("no event bus"), OSError("socket gone"), TimeoutError(), ValueError("x")],
)
def test_event_progress_survives_a_failing_send(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    caplog.set_level(logging.DEBUG, logger="dockerops.rollout")
    calls: list[str] = []

    def send(tag: str, data: dict[str, Any]) -> None:
        calls.append(tag)
        raise error

    progress = event_progress(send, "api")

    progress("start", {"to": NEW_IMAGE})
    progress("done", {"result": False})

    assert calls == ["dockerops/rollout/api/start", "dockerops/rollout/api/done"]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("event start not sent" in message for message in debug), debug


# --- event_bus_listens -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "socket_file", "listens"),
    [
        pytest.param({}, None, True, id="minion-defaults"),
        pytest.param({"file_client": "remote", "ipc_mode": "ipc"}, None, True, id="remote"),
        pytest.param({"file_client": "local"}, None, False, id="local-no-socket"),
        pytest.param({"file_client": "local", "ipc_mode": "ipc"}, None, False, id="local-ipc"),
        pytest.param({"local": True}, None, False, id="salt-call-local"),
        pytest.param({"master_type": "disable"}, None, False, id="masterless"),
        pytest.param(
            {"file_client": "local"}, "minion_event_4f1c2d_pull.ipc", True, id="local-with-minion"
        ),
        pytest.param(
            {"local": True, "ipc_mode": "ipc"},
            "minion_event_abc_pull.ipc",
            True,
            id="salt-call-local-with-minion",
        ),
        pytest.param(
            {"file_client": "local"}, "minion_event_abc_pub.ipc", False, id="only-a-pub-socket"
        ),
        pytest.param({"file_client": "local"}, "master_event_pull.ipc", False, id="master-socket"),
        pytest.param({"file_client": "local", "ipc_mode": "tcp"}, None, True, id="local-tcp"),
        pytest.param({"local": True, "ipc_mode": "tcp"}, None, True, id="salt-call-local-tcp"),
    ],
)
def test_event_bus_listens(
    tmp_path: Path, opts: dict[str, Any], socket_file: str | None, listens: bool
) -> None:
    if socket_file is not None:
        (tmp_path / socket_file).touch()

    assert event_bus_listens({**opts, "sock_dir": str(tmp_path)}) is listens


def test_event_bus_listens_looks_in_sock_dir_only(tmp_path: Path) -> None:
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "minion_event_abc_pull.ipc").touch()
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir()

    assert event_bus_listens({"file_client": "local", "sock_dir": str(sock_dir)}) is False
    assert event_bus_listens({"file_client": "local", "sock_dir": str(elsewhere)}) is True
