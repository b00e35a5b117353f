"""dockerops.plan: desired vs actual replicas -> actions, and their ``changes`` entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops.plan import Action, plan_service
from dockerops.replicas import (
    LABEL_CONFIG_VERSION,
    LABEL_INPUTS,
    LABEL_REPLICA,
    LABEL_SPEC_HASH,
    ActualReplica,
    DesiredReplica,
    actual_from_list_entry,
    desired_replicas,
)
from dockerops.spec import ServiceSpec

MakeSpec = Callable[..., ServiceSpec]
ListEntry = Callable[..., dict[str, Any]]

CONTAINER_ID = "0123456789abcdef" * 4


@pytest.fixture
def actual(list_entry: ListEntry) -> Callable[..., ActualReplica]:
    """``actual(replica, state=..., name=..., labels=...)``: what Docker lists for it."""

    def make(replica: DesiredReplica, **kwargs: Any) -> ActualReplica:
        return actual_from_list_entry(list_entry(replica, **kwargs))

    return make


def kinds_and_names(actions: list[Action]) -> list[tuple[str, str]]:
    return [(action.kind, action.name) for action in actions]


# --- which containers to create, start, remove -----------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "containers", "expected"),
    [
        pytest.param(2, [(1, {}), (2, {})], [], id="nothing-to-do"),
        pytest.param(0, [], [], id="nothing-wanted-nothing-there"),
        pytest.param(2, [(1, {})], [("create", "web-2")], id="create-missing"),
        pytest.param(2, [], [("create", "web-1"), ("create", "web-2")], id="create-all"),
        pytest.param(
            2,
            [(1, {"state": "exited", "status": "Exited (1) 2 minutes ago"}), (2, {})],
            [("start", "web-1")],
            id="start-exited",
        ),
        pytest.param(1, [(1, {"state": "created"})], [("start", "web-1")], id="start-created"),
        pytest.param(
            3,
            [(1, {"state": "running"}), (2, {"state": "restarting"}), (3, {"state": "paused"})],
            [],
            id="leave-running-restarting-paused",
        ),
        pytest.param(
            1,
            [(1, {}), (2, {}), (3, {})],
            [("remove", "web-2"), ("remove", "web-3")],
            id="scale-down",
        ),
        pytest.param(
            0, [(1, {}), (2, {})], [("remove", "web-1"), ("remove", "web-2")], id="scale-to-zero"
        ),
        pytest.param(
            3,
            [(4, {}), (3, {})],
            [("remove", "web-4"), ("create", "web-1"), ("create", "web-2")],
            id="removals-first",
        ),
        pytest.param(
            1,
            [(1, {}), (1, {"name": "web-1-old"})],
            [("remove", "web-1-old")],
            id="duplicate-index-wrong-name",
        ),
        pytest.param(
            1,
            [(1, {"name": "old-web"})],
            [("remove", "old-web"), ("create", "web-1")],
            id="wrong-name",
        ),
        pytest.param(
            2,
            [(2, {"name": "web-1"})],  # replica label 2, name of replica 1
            [("remove", "web-1"), ("create", "web-1"), ("create", "web-2")],
            id="name-and-index-disagree",
        ),
        pytest.param(
            1,
            [(1, {"labels": {LABEL_REPLICA: "x"}})],
            [("remove", "web-1"), ("create", "web-1")],
            id="index-none",
        ),
        pytest.param(
            1,
            [(1, {"labels": {LABEL_REPLICA: "0"}}), (1, {"name": "web-1"})],
            [("remove", "web-1")],
            id="index-zero-removed-right-one-kept",
        ),
    ],
)
def test_plan_service(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    wanted: int,
    containers: list[tuple[int, dict[str, Any]]],
    expected: list[tuple[str, str]],
) -> None:
    # The same spec, so every listed container is up to date with its replica.
    pool = desired_replicas(make_spec(replicas=5))
    desired = pool[:wanted]
    listed = [actual(pool[index - 1], **kwargs) for index, kwargs in containers]

    actions = plan_service(desired, listed)

    assert kinds_and_names(actions) == expected
    for action in actions:
        if action.kind in ("create", "start"):
            assert action.desired == desired[action.index - 1]
        if action.kind in ("remove", "start"):
            assert action.actual in listed


def test_duplicates_of_the_same_container_keep_one(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (replica,) = desired_replicas(make_spec())
    first = actual(replica, container_id="a" * 64)
    second = actual(replica, container_id="b" * 64)

    actions = plan_service([replica], [first, second])

    assert kinds_and_names(actions) == [("remove", "web-1")]
    assert actions[0].actual in (first, second)


def test_plan_ignores_input_order(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    pool = desired_replicas(make_spec(replicas=4))
    listed = [actual(pool[3]), actual(pool[0], state="exited"), actual(pool[2])]

    forward = plan_service(pool[:2], listed)
    backward = plan_service(list(reversed(pool[:2])), list(reversed(listed)))

    assert kinds_and_names(forward) == kinds_and_names(backward)
    assert kinds_and_names(forward) == [
        ("remove", "web-3"),
        ("remove", "web-4"),
        ("create", "web-2"),
        ("start", "web-1"),
    ]


# --- recreate --------------------------------------------------------------------------------

BASE = {
    "command": ["serve"],
    "env": {"A": "1"},
    "ports": [{"container": 80, "host": 8080}],
    "labels": {"team": "platform"},
    "restart_policy": "on-failure:5",
}


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"tag": "1.5"}, ["image"]),
        ({"command": ["serve", "-v"]}, ["command"]),
        ({"env": {"A": "2"}}, ["env"]),
        ({"ports": [{"container": 80, "host": 9090}]}, ["ports"]),
        ({"labels": {"team": "other"}}, ["labels"]),
        ({"environment": "staging"}, ["labels"]),
        ({"restart_policy": "always"}, ["restart_policy"]),
        ({"env": {"A": "2"}, "restart_policy": "always"}, ["env", "restart_policy"]),
        ({"tag": "1.5", "command": None, "labels": {}}, ["command", "image", "labels"]),
    ],
)
def test_recreate_names_exactly_the_changed_inputs(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    change: dict[str, Any],
    changed: list[str],
) -> None:
    old = desired_replicas(make_spec(replicas=2, **BASE))
    new = desired_replicas(make_spec(replicas=2, **{**BASE, **change}))

    actions = plan_service(new, [actual(replica) for replica in old])

    assert kinds_and_names(actions) == [("recreate", "web-1"), ("recreate", "web-2")]
    for action, replica in zip(actions, new, strict=True):
        assert sorted(action.changed) == changed
        assert action.desired == replica


def test_scaling_up_does_not_recreate_existing_replicas(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old = desired_replicas(make_spec(replicas=2, **BASE))
    new = desired_replicas(make_spec(replicas=3, **BASE))

    actions = plan_service(new, [actual(replica) for replica in old])

    assert kinds_and_names(actions) == [("create", "web-3")]


def test_scaling_down_with_a_change_removes_first(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old = desired_replicas(make_spec(replicas=2, **BASE))
    new = desired_replicas(make_spec(replicas=1, **{**BASE, "tag": "1.5"}))

    actions = plan_service(new, [actual(replica) for replica in old])

    assert kinds_and_names(actions) == [("remove", "web-2"), ("recreate", "web-1")]


def test_an_exited_outdated_container_is_recreated_not_started(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5"}))

    actions = plan_service([new], [actual(old, state="exited")])

    assert [(a.kind, a.changed) for a in actions] == [("recreate", ("image",))]


def test_container_without_inputs_label_reports_every_input_changed(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5"}))

    (action,) = plan_service([new], [actual(old, labels={LABEL_INPUTS: ""})])

    assert action.kind == "recreate"
    assert sorted(action.changed) == sorted(key for key, _ in new.inputs)


def test_hash_mismatch_with_equal_inputs_reports_spec(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (replica,) = desired_replicas(make_spec(**BASE))

    (action,) = plan_service([replica], [actual(replica, labels={LABEL_SPEC_HASH: "stale"})])

    assert (action.kind, action.changed) == ("recreate", ("spec",))


# --- describe(): the state's changes ---------------------------------------------------------


def test_describe_create(make_spec: MakeSpec) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([replica], [])

    assert action.describe() == {"created": {"image": "registry.example.com/web:1.4"}}


def test_describe_remove(make_spec: MakeSpec, actual: Callable[..., ActualReplica]) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([], [actual(replica, container_id=CONTAINER_ID)])

    assert action.describe() == {
        "removed": {"image": "registry.example.com/web:1.4", "container": CONTAINER_ID[:12]}
    }


def test_describe_start(make_spec: MakeSpec, actual: Callable[..., ActualReplica]) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([replica], [actual(replica, state="exited")])

    assert action.describe() == {"started": {"old": "exited", "new": "running"}}


def test_describe_recreate_with_new_image(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5", "env": {"A": "2"}}))

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {
        "recreated": {"changed": ["env", "image"]},
        "image": {"old": "registry.example.com/web:1.4", "new": "registry.example.com/web:1.5"},
    }


def test_describe_recreate_without_image_change(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "restart_policy": "always"}))

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {"recreated": {"changed": ["restart_policy"]}}


def test_describe_never_contains_env_values(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old_secret, new_secret = "old-s3cr3t-Pa55word", "new-s3cr3t-Pa55word"
    old = desired_replicas(make_spec(replicas=5, env={"DB_PASSWORD": old_secret}))
    new = desired_replicas(make_spec(replicas=5, env={"DB_PASSWORD": new_secret}))
    listed = [actual(old[0]), actual(new[1], state="exited"), actual(new[4])]

    actions = plan_service(new[:3], listed)

    assert {action.kind for action in actions} == {"create", "recreate", "start", "remove"}
    assert dict(new[0].env)["DB_PASSWORD"] == new_secret  # the plan does carry the secret
    for action in actions:
        described = str(action.describe())
        assert old_secret not in described
        assert new_secret not in described


# --- config versions: signals and config recreates -------------------------------------------

V1, V2 = "0123456789abcdef", "fedcba9876543210"


def _config(on_change: str) -> dict[str, Any]:
    return {"path": "/etc/web", "files": {"web.conf": {"contents": "x"}}, "on_change": on_change}


@pytest.mark.parametrize(
    ("label", "seen", "state", "signal", "expected", "seen_version"),
    [
        pytest.param(V1, {}, "running", "SIGHUP", ["signal"], V1, id="label-behind"),
        pytest.param(V2, {}, "running", "SIGHUP", [], None, id="label-current"),
        pytest.param(V1, {"ID": V2}, "running", "SIGHUP", [], None, id="seen-current"),
        pytest.param(V2, {"ID": V1}, "running", "SIGHUP", ["signal"], V1, id="seen-behind"),
        pytest.param(V1, {"other": V2}, "running", "SIGHUP", ["signal"], V1, id="seen-other-id"),
        pytest.param("", {}, "running", "SIGHUP", ["signal"], None, id="no-label"),
        pytest.param(V1, {}, "running", "SIGUSR1", ["signal"], V1, id="other-signal"),
        pytest.param(V1, {}, "exited", "SIGHUP", ["start"], None, id="exited-is-started"),
        pytest.param(V1, {}, "created", "SIGHUP", ["start"], None, id="created-is-started"),
        pytest.param(V1, {}, "restarting", "SIGHUP", [], None, id="restarting-not-signalled"),
        pytest.param(V1, {}, "paused", "SIGHUP", [], None, id="paused-not-signalled"),
        pytest.param(V1, {}, "running", None, [], None, id="no-signal-policy"),
    ],
)
def test_live_config_replicas_behind_the_desired_version_are_signalled(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    label: str,
    seen: dict[str, str],
    state: str,
    signal: str | None,
    expected: list[str],
    seen_version: str | None,
) -> None:
    spec = make_spec(config=_config("signal:SIGHUP"))
    (old,) = desired_replicas(spec, V1)
    (new,) = desired_replicas(spec, V2)
    listed = actual(
        old, state=state, container_id=CONTAINER_ID, labels={LABEL_CONFIG_VERSION: label}
    )
    seen = {CONTAINER_ID if key == "ID" else key: value for key, value in seen.items()}

    actions = plan_service([new], [listed], seen, signal)

    assert [action.kind for action in actions] == expected
    for action in actions:
        assert (action.desired, action.actual) == (new, listed)
        if action.kind == "signal":
            assert (action.signal, action.seen_version) == (signal, seen_version)


def test_only_replicas_behind_are_signalled(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    spec = make_spec(replicas=3, config=_config("signal:SIGHUP"))
    old = desired_replicas(spec, V1)
    new = desired_replicas(spec, V2)
    listed = [actual(replica, container_id=f"{i}" * 64) for i, replica in enumerate(old, 1)]

    actions = plan_service(new, listed, {"2" * 64: V2}, "SIGHUP")

    assert kinds_and_names(actions) == [("signal", "web-1"), ("signal", "web-3")]


def test_a_changed_live_replica_is_recreated_not_signalled(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(env={"A": "1"}, config=_config("signal:SIGHUP")), V1)
    (new,) = desired_replicas(make_spec(env={"A": "2"}, config=_config("signal:SIGHUP")), V2)

    (action,) = plan_service([new], [actual(old)], {}, "SIGHUP")

    assert (action.kind, action.changed) == ("recreate", ("env",))


@pytest.mark.parametrize("on_change", ["rolling", "restart"])
def test_pinned_config_replicas_are_recreated_never_signalled(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica], on_change: str
) -> None:
    spec = make_spec(replicas=2, config=_config(on_change))
    old, new = desired_replicas(spec, V1), desired_replicas(spec, V2)

    actions = plan_service(new, [actual(replica) for replica in old], {}, "SIGHUP")

    assert kinds_and_names(actions) == [("recreate", "web-1"), ("recreate", "web-2")]
    assert all(action.changed == ("config",) for action in actions)


def test_describe_signal(make_spec: MakeSpec, actual: Callable[..., ActualReplica]) -> None:
    spec = make_spec(config=_config("signal:SIGHUP"))
    (old,) = desired_replicas(spec, V1)
    (new,) = desired_replicas(spec, V2)

    (action,) = plan_service([new], [actual(old)], {}, "SIGHUP")

    assert action.describe() == {
        "signaled": "SIGHUP",
        "config_version": {"old": V1, "new": V2},
    }


@pytest.mark.parametrize(("label", "old_version"), [(V1, V1), ("", None)])
def test_describe_config_recreate(
    make_spec: MakeSpec,
    actual: Callable[..., ActualReplica],
    label: str,
    old_version: str | None,
) -> None:
    spec = make_spec(config=_config("rolling"))
    (old,) = desired_replicas(spec, V1)
    (new,) = desired_replicas(spec, V2)

    (action,) = plan_service([new], [actual(old, labels={LABEL_CONFIG_VERSION: label})])

    assert action.describe() == {
        "recreated": {"changed": ["config"]},
        "config_version": {"old": old_version, "new": V2},
    }


def test_describe_recreate_without_config_change_has_no_config_version(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    (old,) = desired_replicas(make_spec(tag="1.4", config=_config("rolling")), V1)
    (new,) = desired_replicas(make_spec(tag="1.5", config=_config("rolling")), V1)

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {
        "recreated": {"changed": ["image"]},
        "image": {"old": "registry.example.com/web:1.4", "new": "registry.example.com/web:1.5"},
    }


def test_describe_never_contains_secret_values(
    make_spec: MakeSpec, actual: Callable[..., ActualReplica]
) -> None:
    old_secret, new_secret = "old-s3cr3t-Pa55word", "new-s3cr3t-Pa55word"
    old = desired_replicas(
        make_spec(replicas=2, secrets={"PW": old_secret}, config=_config("signal:SIGHUP")), V1
    )
    new = desired_replicas(
        make_spec(replicas=2, secrets={"PW": new_secret}, config=_config("signal:SIGHUP")), V2
    )

    actions = plan_service(
        new, [actual(old[0]), actual(new[1], labels={LABEL_CONFIG_VERSION: V1})], {}, "SIGHUP"
    )

    assert [(a.kind, a.changed) for a in actions] == [("recreate", ("secrets",)), ("signal", ())]
    for action in actions:
        assert old_secret not in str(action.describe())
        assert new_secret not in str(action.describe())
