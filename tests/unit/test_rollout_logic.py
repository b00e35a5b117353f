"""The decisions behind a rollout, without Docker: timings, plan text, events, slots.

dockerops.rollout's helpers (detection_time, min_healthy_time, describe_plan,
event_progress, event_bus_listens), the update spec and the ports its surge
slots need, and plan_service over the slots of a start-first service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from dockerops.errors import SpecError
from dockerops.host import DockerHost
from dockerops.plan import Action, plan_service
from dockerops.replicas import ActualReplica, DesiredReplica, actual_from_list_entry
from dockerops.replicas import desired_replicas as replicas_of
from dockerops.rollout import (
    NO_HEALTHCHECK_SETTLE,
    describe_plan,
    detection_time,
    event_bus_listens,
    event_progress,
    min_healthy_time,
)
from dockerops.spec import ServiceSpec, UpdateSpec, load_service, load_services

MakeSpec = Callable[..., ServiceSpec]
ListEntry = Callable[..., dict[str, Any]]

WEB = "dockerops:services:web"
OLD_IMAGE = "registry.example.com/web:1.4"
NEW_IMAGE = "registry.example.com/web:1.5"
SECONDS = 1_000_000_000  # Docker's durations are in nanoseconds


@pytest.fixture
def actual(list_entry: ListEntry) -> Callable[..., ActualReplica]:
    """``actual(replica, state=...)``: the container Docker lists for ``replica``."""

    def make(replica: DesiredReplica, **kwargs: Any) -> ActualReplica:
        return actual_from_list_entry(list_entry(replica, **kwargs))

    return make


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


def kinds_and_names(actions: list[Action]) -> list[tuple[str, str]]:
    return [(action.kind, action.name) for action in actions]


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


# --- describe_plan ---------------------------------------------------------------------------


def plan_for(
    old: ServiceSpec,
    new: ServiceSpec,
    actual: Callable[..., ActualReplica],
    slots: list[int] | None = None,
) -> list[Action]:
    """The plan from ``old``'s containers in ``slots`` (default 1..replicas) to ``new``."""
    pool = replicas_of(old, slots=10)
    listed = [actual(pool[i - 1]) for i in slots or range(1, old.replicas + 1)]
    desired = replicas_of(new, slots=new.slots)
    return plan_service(desired, listed, count=new.replicas)


def image_change(name: str) -> str:
    return f"{name} ({OLD_IMAGE} -> {NEW_IMAGE})"


@pytest.mark.parametrize(
    ("parallelism", "batches"),
    [
        (1, [["web-1"], ["web-2"], ["web-3"], ["web-4"]]),
        (2, [["web-1", "web-2"], ["web-3", "web-4"]]),
        (3, [["web-1", "web-2", "web-3"], ["web-4"]]),
        (4, [["web-1", "web-2", "web-3", "web-4"]]),
        (10, [["web-1", "web-2", "web-3", "web-4"]]),
    ],
)
@pytest.mark.parametrize("order", ["start-first", "stop-first"])
def test_describe_plan_batches(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    parallelism: int,
    batches: list[list[str]],
    order: str,
) -> None:
    update = {"parallelism": parallelism, "order": order}
    old = make_spec(replicas=4, update=update)
    new = make_spec(replicas=4, update=update, tag="1.5")
    actions = plan_for(old, new, actual)

    lines = describe_plan(new, actions)

    assert lines == [
        f"batch {number} ({order}): " + "; ".join(image_change(name) for name in batch)
        for number, batch in enumerate(batches, 1)
    ]


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        pytest.param({"env": {"A": "2"}}, "env", id="env"),
        pytest.param({"restart_policy": "always"}, "restart_policy", id="restart-policy"),
        pytest.param(
            {"env": {"A": "2"}, "command": ["serve", "-v"], "restart_policy": "always"},
            "command, env, restart_policy",
            id="several-in-input-order",
        ),
        pytest.param({"labels": {"team": "x"}}, "labels", id="labels"),
    ],
)
def test_describe_plan_names_other_changes_by_input(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica], change: dict[str, Any], shown: str
) -> None:
    base = {"replicas": 2, "env": {"A": "1"}, "command": ["serve"]}
    old = make_spec(**base)
    new = make_spec(**{**base, **change})

    lines = describe_plan(new, plan_for(old, new, actual))

    assert lines == [
        f"batch 1 (start-first): web-1 ({shown})",
        f"batch 2 (start-first): web-2 ({shown})",
    ]


def test_describe_plan_shows_an_image_change_as_old_to_new(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old = make_spec(env={"A": "1"})
    new = make_spec(env={"A": "1"}, tag="1.5")

    assert describe_plan(new, plan_for(old, new, actual)) == [
        f"batch 1 (start-first): web-1 ({OLD_IMAGE} -> {NEW_IMAGE})"
    ]


def test_describe_plan_lists_removes_and_creates_before_batches(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    update = {"parallelism": 2}
    old = make_spec(replicas=2, update=update)
    new = make_spec(replicas=3, update=update, tag="1.5")
    # Slots 1..7 are valid (3 replicas + 2 x 2 spares): web-8 is not.
    actions = plan_for(old, new, actual, slots=[1, 2, 8])

    lines = describe_plan(new, actions)

    assert kinds_and_names(actions) == [
        ("remove", "web-8"),
        ("recreate", "web-1"),
        ("recreate", "web-2"),
        ("create", "web-3"),
    ]
    assert lines == [
        "remove web-8",
        "create web-3",
        f"batch 1 (start-first): {image_change('web-1')}; {image_change('web-2')}",
    ]


def test_describe_plan_without_recreates(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    spec = make_spec(replicas=2)
    pool = replicas_of(spec, slots=5)
    listed = [actual(pool[0], state="exited"), actual(pool[4])]
    actions = plan_service(pool[:3], listed, count=2)

    assert describe_plan(spec, actions) == ["remove web-5", "create web-2", "start web-1"]


def test_describe_plan_of_nothing(make_spec: MakeSpec) -> None:
    assert describe_plan(make_spec(), []) == []


def test_describe_plan_lists_signals_last(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    config = {"path": "/etc/web", "files": {"a": {"contents": "x"}}, "on_change": "signal:HUP"}
    old = make_spec(replicas=2, config=config)
    new = make_spec(replicas=2, config=config, env={"A": "2"})
    listed = [actual(replicas_of(old, "v1")[0]), actual(replicas_of(new, "v1")[1])]
    actions = plan_service(replicas_of(new, "v2", slots=3), listed, {}, "SIGHUP", count=2)

    assert describe_plan(new, actions) == ["batch 1 (start-first): web-1 (env)", "signal web-2"]


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


# --- UpdateSpec: parallelism, order, surge ---------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "fields", "spares"),
    [
        pytest.param(1, {}, 1, id="one-replica-one-batch"),
        pytest.param(2, {}, 2, id="two-batches-both-in-flight"),
        pytest.param(3, {}, 3, id="three-batches"),
        pytest.param(10, {}, 3, id="at-most-three-batches-in-flight"),
        pytest.param(4, {"parallelism": 2}, 4, id="two-batches-of-two"),
        pytest.param(7, {"parallelism": 2}, 6, id="three-of-four-batches-of-two"),
        pytest.param(2, {"parallelism": 5}, 2, id="a-batch-is-at-most-the-replicas"),
        pytest.param(100, {"parallelism": 100}, 100, id="all-at-once"),
        pytest.param(4, {"order": "stop-first"}, 0, id="stop-first"),
        pytest.param(4, {"parallelism": 5, "order": "stop-first"}, 0, id="stop-first-wide"),
    ],
)
def test_update_spares(
    make_spec: MakeSpec, replicas: int, fields: dict[str, Any], spares: int
) -> None:
    spec = make_spec(replicas=replicas, update=fields)

    assert spec.update.spares(replicas) == spares
    assert UpdateSpec(**fields).spares(replicas) == spares
    assert spec.slots == replicas + spares


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"parallelism": 0}, "parallelism", "greater than or equal to 1"),
        ({"parallelism": 101}, "parallelism", "less than or equal to 100"),
        ({"order": "blue-green"}, "order", "'start-first' or 'stop-first'"),
    ],
)
def test_invalid_update_order(fields: dict[str, Any], path: str, message: str) -> None:
    pillar = {"dockerops": {"services": {"web": {"image": "web", "update": fields}}}}

    with pytest.raises(SpecError) as caught:
        load_service(pillar, "web")

    (problem,) = caught.value.problems
    assert problem.startswith(f"{WEB}:update:{path}: "), problem
    assert message in problem, problem


# --- ports: every slot, spares included, needs its own host port -----------------------------


def web_pillar(**fields: Any) -> dict[str, Any]:
    return {"dockerops": {"services": {"web": {"image": "web", **fields}}}}


def port(container: int, host: int, **fields: Any) -> dict[str, Any]:
    return {"container": container, "host": host, **fields}


START_FIRST_2 = {"order": "start-first", "parallelism": 2}
STOP_FIRST_2 = {"order": "stop-first", "parallelism": 2}


@pytest.mark.parametrize(
    ("replicas", "update", "ports"),
    [
        pytest.param(2, STOP_FIRST_2, [port(80, 65533)], id="stop-first-no-spares"),
        pytest.param(2, {"parallelism": 1}, [port(80, 65532)], id="two-spares-fit"),
        pytest.param(1, {"order": "stop-first"}, [port(80, 65535)], id="last-port-stop-first"),
        pytest.param(1, {}, [port(80, 65534)], id="last-port-is-the-spare"),
        pytest.param(
            2, {"order": "stop-first"}, [port(80, 8080), port(81, 8082)], id="stop-first-adjacent"
        ),
        pytest.param(
            2, {}, [port(80, 8080), port(81, 8084)], id="start-first-adjacent-with-spares"
        ),
        pytest.param(
            3,
            START_FIRST_2,
            [port(80, 8080), port(81, 8080, host_ip="127.0.0.2")],
            id="other-host-ip",
        ),
        pytest.param(
            3,
            START_FIRST_2,
            [port(53, 5300), port(53, 5300, protocol="udp")],
            id="other-protocol",
        ),
        pytest.param(
            100, {"parallelism": 100}, [{"container": 80}], id="no-host-port-no-slots-check"
        ),
    ],
)
def test_ports_fit_every_slot(
    replicas: int, update: dict[str, Any], ports: list[dict[str, Any]]
) -> None:
    spec = load_service(web_pillar(replicas=replicas, update=update, ports=ports), "web")

    assert len(spec.ports) == len(ports)


@pytest.mark.parametrize(
    ("replicas", "update", "ports", "message"),
    [
        pytest.param(
            2,
            START_FIRST_2,
            [port(80, 65533)],
            "host port 65533 with 4 slots (replicas and start-first spares) runs past 65535",
            id="spares-past-65535",
        ),
        pytest.param(
            1,
            {},
            [port(80, 65535)],
            "host port 65535 with 2 slots",
            id="default-spare-past-65535",
        ),
        pytest.param(
            4,
            STOP_FIRST_2,
            [port(80, 65533)],
            "host port 65533 with 4 slots",
            id="replicas-past-65535",
        ),
        pytest.param(
            2,
            {},
            [port(80, 8080), port(81, 8083)],
            "host port 127.0.0.1:8083/tcp is published twice (container ports 80 and 81)",
            id="spare-collides",
        ),
        pytest.param(
            2,
            START_FIRST_2,
            [port(80, 8080), port(81, 8083)],
            "host port 127.0.0.1:8083/tcp is published twice (container ports 80 and 81)",
            id="last-spare-collides",
        ),
        pytest.param(
            2,
            {"order": "stop-first"},
            [port(80, 8080), port(81, 8081)],
            "host port 127.0.0.1:8081/tcp is published twice (container ports 80 and 81)",
            id="replicas-collide",
        ),
    ],
)
def test_ports_past_the_slots_are_refused(
    replicas: int, update: dict[str, Any], ports: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        load_service(web_pillar(replicas=replicas, update=update, ports=ports), "web")

    (problem,) = caught.value.problems
    assert problem.startswith(f"{WEB}:ports: "), problem
    assert message in problem, problem


def test_port_slots_of_update_from_defaults() -> None:
    pillar = {
        "dockerops": {
            "defaults": {"update": START_FIRST_2},
            "services": {"web": {"image": "web", "replicas": 2, "ports": [port(80, 65533)]}},
        }
    }

    with pytest.raises(SpecError) as caught:
        load_service(pillar, "web")

    assert "host port 65533 with 4 slots" in str(caught.value)


def test_port_ranges_of_two_services_on_one_host_are_compared() -> None:
    # Both run on every minion that gets this pillar: overlapping slot ranges
    # would make every rolling update of one fail on "port is already allocated".
    services = {
        "web": {"image": "web", "replicas": 2, "ports": [port(80, 8080)]},
        "api": {"image": "api", "replicas": 2, "ports": [port(80, 8081)]},
    }

    with pytest.raises(SpecError) as caught:
        load_services({"dockerops": {"services": services}})

    assert "api" in str(caught.value) and "web" in str(caught.value)


# --- plan_service over slots: count replicas among replicas + spares -------------------------

# Slots: "g" an up-to-date container, "s" a stale one (older image), "x" exited up-to-date.
Layout = dict[int, str]


@pytest.mark.parametrize(
    ("count", "slots", "layout", "expected"),
    [
        pytest.param(2, 3, {1: "g", 2: "g"}, [], id="up-to-date"),
        pytest.param(2, 3, {2: "g", 3: "g"}, [], id="one-in-the-spare-slot"),
        pytest.param(2, 3, {1: "g", 3: "g"}, [], id="gap-below-the-spare"),
        pytest.param(2, 4, {3: "g", 4: "g"}, [], id="all-in-spare-slots"),
        pytest.param(2, 3, {1: "g", 2: "g", 3: "g"}, [("remove", "web-3")], id="one-too-many"),
        pytest.param(2, 3, {1: "g", 3: "g", 2: "g"}, [("remove", "web-3")], id="listing-order"),
        pytest.param(
            1,
            3,
            {1: "g", 2: "g", 3: "g"},
            [("remove", "web-3"), ("remove", "web-2")],
            id="highest-slots-go",
        ),
        pytest.param(1, 2, {2: "g"}, [], id="only-the-spare"),
        pytest.param(0, 1, {1: "g"}, [("remove", "web-1")], id="scale-to-zero-with-spare"),
        pytest.param(
            2, 3, {1: "s", 2: "s"}, [("recreate", "web-1"), ("recreate", "web-2")], id="stale"
        ),
        pytest.param(
            2,
            3,
            {1: "s", 2: "s", 3: "s"},
            [("remove", "web-3"), ("recreate", "web-1"), ("recreate", "web-2")],
            id="extra-stale-removed",
        ),
        pytest.param(
            2,
            3,
            {1: "s", 2: "s", 3: "g"},
            [("remove", "web-2"), ("recreate", "web-1")],
            id="half-done-start-first",
        ),
        pytest.param(
            2,
            3,
            {1: "s", 2: "g", 3: "g"},
            [("remove", "web-1")],
            id="done-but-the-old-one",
        ),
        pytest.param(2, 3, {1: "g", 3: "s"}, [("recreate", "web-3")], id="stale-spare-recreated"),
        pytest.param(
            2, 3, {2: "s"}, [("recreate", "web-2"), ("create", "web-1")], id="stale-and-create"
        ),
        pytest.param(2, 3, {2: "g"}, [("create", "web-1")], id="create-lowest-free"),
        pytest.param(2, 3, {1: "g"}, [("create", "web-2")], id="create-next"),
        pytest.param(2, 3, {3: "g"}, [("create", "web-1")], id="create-below-spare"),
        pytest.param(
            3, 5, {2: "g", 4: "g"}, [("create", "web-1")], id="create-only-what-is-missing"
        ),
        pytest.param(2, 3, {}, [("create", "web-1"), ("create", "web-2")], id="create-all"),
        pytest.param(2, 3, {1: "g", 2: "g", 4: "g"}, [("remove", "web-4")], id="beyond-the-slots"),
        pytest.param(
            2,
            3,
            {5: "s"},
            [("remove", "web-5"), ("create", "web-1"), ("create", "web-2")],
            id="stale-beyond-the-slots",
        ),
        pytest.param(
            2,
            3,
            {1: "g", 2: "g", 3: "g", 6: "g"},
            [("remove", "web-6"), ("remove", "web-3")],
            id="beyond-and-one-too-many",
        ),
        pytest.param(2, 3, {1: "x", 3: "g"}, [("start", "web-1")], id="start-exited"),
        pytest.param(
            2, 3, {1: "x", 2: "g", 3: "g"}, [("remove", "web-3"), ("start", "web-1")], id="start"
        ),
    ],
)
def test_plan_over_slots(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    count: int,
    slots: int,
    layout: Layout,
    expected: list[tuple[str, str]],
) -> None:
    new = make_spec(replicas=count, tag="1.5")
    old_pool = replicas_of(make_spec(replicas=count), slots=10)
    new_pool = replicas_of(new, slots=10)
    listed = []
    for index, kind in layout.items():
        pool = old_pool if kind == "s" else new_pool
        listed.append(actual(pool[index - 1], state="exited" if kind == "x" else "running"))
    desired = new_pool[:slots]

    actions = plan_service(desired, listed, count=count)

    assert kinds_and_names(actions) == expected
    for action in actions:
        assert action.index is not None
        if action.kind in ("create", "recreate", "start"):
            assert action.desired == desired[action.index - 1]
        if action.kind in ("remove", "recreate", "start"):
            assert action.actual in listed
            assert action.actual is not None and action.actual.index == action.index
        if action.kind == "recreate":
            assert action.changed == ("image",)


def test_plan_over_slots_from_the_spec(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    """A start-first rollout that finished with a replica in the spare slot is left alone."""
    spec = make_spec(replicas=2, update={"parallelism": 2})
    desired = replicas_of(spec, slots=spec.slots)
    assert [replica.name for replica in desired] == ["web-1", "web-2", "web-3", "web-4"]

    settled = plan_service(desired, [actual(desired[2]), actual(desired[3])], count=2)
    no_count = plan_service(desired, [actual(desired[2]), actual(desired[3])])

    assert settled == []
    # Without count every slot is wanted: the spares would be filled too.
    assert kinds_and_names(no_count) == [("create", "web-1"), ("create", "web-2")]
