"""dockerops.plan: desired vs actual replicas (over slots) -> actions, their ``changes``
entries, and the plan as text (describe_plan)."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.plan import Action, describe_plan, plan_service
from dockerops.replicas import (
    LABEL_CONFIG_VERSION,
    LABEL_INPUTS,
    LABEL_SLOT,
    LABEL_SPEC_HASH,
    desired_replicas,
)
from dockerops.spec import ServiceSpec
from tests.support.builders import MakeActual, MakeSpec, config_dir, kinds_and_names

CONTAINER_ID = "0123456789abcdef" * 4
OLD_IMAGE = "registry.example.com/web:1.4"  # make_spec's image
NEW_IMAGE = "registry.example.com/web:1.5"


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
            [(1, {"labels": {LABEL_SLOT: "x"}})],
            [("remove", "web-1"), ("create", "web-1")],
            id="index-none",
        ),
        pytest.param(
            1,
            [(1, {"labels": {LABEL_SLOT: "0"}}), (1, {"name": "web-1"})],
            [("remove", "web-1")],
            id="index-zero-removed-right-one-kept",
        ),
    ],
)
def test_plan_service(
    make_spec: MakeSpec,
    actual: MakeActual,
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


def test_duplicates_of_the_same_container_keep_one(make_spec: MakeSpec, actual: MakeActual) -> None:
    (replica,) = desired_replicas(make_spec())
    first = actual(replica, container_id="a" * 64)
    second = actual(replica, container_id="b" * 64)

    actions = plan_service([replica], [first, second])

    assert kinds_and_names(actions) == [("remove", "web-1")]
    assert actions[0].actual in (first, second)


def test_plan_ignores_input_order(make_spec: MakeSpec, actual: MakeActual) -> None:
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
    actual: MakeActual,
    count: int,
    slots: int,
    layout: Layout,
    expected: list[tuple[str, str]],
) -> None:
    new = make_spec(replicas=count, tag="1.5")
    old_pool = desired_replicas(make_spec(replicas=count), slots=10)
    new_pool = desired_replicas(new, slots=10)
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


def test_plan_over_slots_from_the_spec(make_spec: MakeSpec, actual: MakeActual) -> None:
    """A start-first rollout that finished with a replica in the spare slot is left alone."""
    spec = make_spec(replicas=2, update={"parallelism": 2})
    desired = desired_replicas(spec, slots=spec.slots)
    assert [replica.name for replica in desired] == ["web-1", "web-2", "web-3", "web-4"]

    settled = plan_service(desired, [actual(desired[2]), actual(desired[3])], count=2)
    no_count = plan_service(desired, [actual(desired[2]), actual(desired[3])])

    assert settled == []
    # Without count every slot is wanted: the spares would be filled too.
    assert kinds_and_names(no_count) == [("create", "web-1"), ("create", "web-2")]


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
    actual: MakeActual,
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
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    old = desired_replicas(make_spec(replicas=2, **BASE))
    new = desired_replicas(make_spec(replicas=3, **BASE))

    actions = plan_service(new, [actual(replica) for replica in old])

    assert kinds_and_names(actions) == [("create", "web-3")]


def test_scaling_down_with_a_change_removes_first(make_spec: MakeSpec, actual: MakeActual) -> None:
    old = desired_replicas(make_spec(replicas=2, **BASE))
    new = desired_replicas(make_spec(replicas=1, **{**BASE, "tag": "1.5"}))

    actions = plan_service(new, [actual(replica) for replica in old])

    assert kinds_and_names(actions) == [("remove", "web-2"), ("recreate", "web-1")]


def test_an_exited_outdated_container_is_recreated_not_started(
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5"}))

    actions = plan_service([new], [actual(old, state="exited")])

    assert [(a.kind, a.changed) for a in actions] == [("recreate", ("image",))]


def test_container_without_inputs_label_reports_every_input_changed(
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5"}))

    (action,) = plan_service([new], [actual(old, labels={LABEL_INPUTS: ""})])

    assert action.kind == "recreate"
    assert sorted(action.changed) == sorted(key for key, _ in new.inputs)


def test_hash_mismatch_with_equal_inputs_reports_spec(
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    (replica,) = desired_replicas(make_spec(**BASE))

    (action,) = plan_service([replica], [actual(replica, labels={LABEL_SPEC_HASH: "stale"})])

    assert (action.kind, action.changed) == ("recreate", ("spec",))


# --- describe(): the state's changes ---------------------------------------------------------


def test_describe_create(make_spec: MakeSpec) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([replica], [])

    assert action.describe() == {"created": {"image": "registry.example.com/web:1.4"}}


def test_describe_remove(make_spec: MakeSpec, actual: MakeActual) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([], [actual(replica, container_id=CONTAINER_ID)])

    assert action.describe() == {
        "removed": {"image": "registry.example.com/web:1.4", "container": CONTAINER_ID[:12]}
    }


def test_describe_start(make_spec: MakeSpec, actual: MakeActual) -> None:
    (replica,) = desired_replicas(make_spec())

    (action,) = plan_service([replica], [actual(replica, state="exited")])

    assert action.describe() == {"started": {"old": "exited", "new": "running"}}


def test_describe_recreate_with_new_image(make_spec: MakeSpec, actual: MakeActual) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "tag": "1.5", "env": {"A": "2"}}))

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {
        "recreated": {"changed": ["env", "image"]},
        "image": {"old": "registry.example.com/web:1.4", "new": "registry.example.com/web:1.5"},
    }


def test_describe_recreate_without_image_change(make_spec: MakeSpec, actual: MakeActual) -> None:
    (old,) = desired_replicas(make_spec(**BASE))
    (new,) = desired_replicas(make_spec(**{**BASE, "restart_policy": "always"}))

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {"recreated": {"changed": ["restart_policy"]}}


def test_describe_never_contains_env_values(make_spec: MakeSpec, actual: MakeActual) -> None:
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


# --- describe_plan ---------------------------------------------------------------------------


def plan_for(
    old: ServiceSpec,
    new: ServiceSpec,
    actual: MakeActual,
    slots: list[int] | None = None,
) -> list[Action]:
    """The plan from ``old``'s containers in ``slots`` (default 1..replicas) to ``new``."""
    pool = desired_replicas(old, slots=10)
    listed = [actual(pool[i - 1]) for i in slots or range(1, old.replicas + 1)]
    desired = desired_replicas(new, slots=new.slots)
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
    actual: MakeActual,
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
    make_spec: MakeSpec, actual: MakeActual, change: dict[str, Any], shown: str
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
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    old = make_spec(env={"A": "1"})
    new = make_spec(env={"A": "1"}, tag="1.5")

    assert describe_plan(new, plan_for(old, new, actual)) == [
        f"batch 1 (start-first): web-1 ({OLD_IMAGE} -> {NEW_IMAGE})"
    ]


def test_describe_plan_lists_removes_and_creates_before_batches(
    make_spec: MakeSpec, actual: MakeActual
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


def test_describe_plan_without_recreates(make_spec: MakeSpec, actual: MakeActual) -> None:
    spec = make_spec(replicas=2)
    pool = desired_replicas(spec, slots=5)
    listed = [actual(pool[0], state="exited"), actual(pool[4])]
    actions = plan_service(pool[:3], listed, count=2)

    assert describe_plan(spec, actions) == ["remove web-5", "create web-2", "start web-1"]


def test_describe_plan_of_nothing(make_spec: MakeSpec) -> None:
    assert describe_plan(make_spec(), []) == []


def test_describe_plan_lists_signals_last(make_spec: MakeSpec, actual: MakeActual) -> None:
    config = {"path": "/etc/web", "files": {"a": {"contents": "x"}}, "on_change": "signal:HUP"}
    old = make_spec(replicas=2, config=config)
    new = make_spec(replicas=2, config=config, env={"A": "2"})
    listed = [actual(desired_replicas(old, "v1")[0]), actual(desired_replicas(new, "v1")[1])]
    actions = plan_service(desired_replicas(new, "v2", slots=3), listed, {}, "SIGHUP", count=2)

    assert describe_plan(new, actions) == ["batch 1 (start-first): web-1 (env)", "signal web-2"]


# --- config versions: signals and config recreates -------------------------------------------

V1, V2 = "0123456789abcdef", "fedcba9876543210"


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
    actual: MakeActual,
    label: str,
    seen: dict[str, str],
    state: str,
    signal: str | None,
    expected: list[str],
    seen_version: str | None,
) -> None:
    spec = make_spec(config=config_dir(on_change="signal:SIGHUP"))
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


def test_only_replicas_behind_are_signalled(make_spec: MakeSpec, actual: MakeActual) -> None:
    spec = make_spec(replicas=3, config=config_dir(on_change="signal:SIGHUP"))
    old = desired_replicas(spec, V1)
    new = desired_replicas(spec, V2)
    listed = [actual(replica, container_id=f"{i}" * 64) for i, replica in enumerate(old, 1)]

    actions = plan_service(new, listed, {"2" * 64: V2}, "SIGHUP")

    assert kinds_and_names(actions) == [("signal", "web-1"), ("signal", "web-3")]


def test_a_changed_live_replica_is_recreated_not_signalled(
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    (old,) = desired_replicas(
        make_spec(env={"A": "1"}, config=config_dir(on_change="signal:SIGHUP")), V1
    )
    (new,) = desired_replicas(
        make_spec(env={"A": "2"}, config=config_dir(on_change="signal:SIGHUP")), V2
    )

    (action,) = plan_service([new], [actual(old)], {}, "SIGHUP")

    assert (action.kind, action.changed) == ("recreate", ("env",))


@pytest.mark.parametrize("on_change", ["rolling", "restart"])
def test_pinned_config_replicas_are_recreated_never_signalled(
    make_spec: MakeSpec, actual: MakeActual, on_change: str
) -> None:
    spec = make_spec(replicas=2, config=config_dir(on_change=on_change))
    old, new = desired_replicas(spec, V1), desired_replicas(spec, V2)

    actions = plan_service(new, [actual(replica) for replica in old], {}, "SIGHUP")

    assert kinds_and_names(actions) == [("recreate", "web-1"), ("recreate", "web-2")]
    assert all(action.changed == ("config",) for action in actions)


def test_describe_signal(make_spec: MakeSpec, actual: MakeActual) -> None:
    spec = make_spec(config=config_dir(on_change="signal:SIGHUP"))
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
    actual: MakeActual,
    label: str,
    old_version: str | None,
) -> None:
    spec = make_spec(config=config_dir(on_change="rolling"))
    (old,) = desired_replicas(spec, V1)
    (new,) = desired_replicas(spec, V2)

    (action,) = plan_service([new], [actual(old, labels={LABEL_CONFIG_VERSION: label})])

    assert action.describe() == {
        "recreated": {"changed": ["config"]},
        "config_version": {"old": old_version, "new": V2},
    }


def test_describe_recreate_without_config_change_has_no_config_version(
    make_spec: MakeSpec, actual: MakeActual
) -> None:
    (old,) = desired_replicas(make_spec(tag="1.4", config=config_dir(on_change="rolling")), V1)
    (new,) = desired_replicas(make_spec(tag="1.5", config=config_dir(on_change="rolling")), V1)

    (action,) = plan_service([new], [actual(old)])

    assert action.describe() == {
        "recreated": {"changed": ["image"]},
        "image": {"old": "registry.example.com/web:1.4", "new": "registry.example.com/web:1.5"},
    }


def test_describe_never_contains_secret_values(make_spec: MakeSpec, actual: MakeActual) -> None:
    old_secret, new_secret = "old-s3cr3t-Pa55word", "new-s3cr3t-Pa55word"
    old = desired_replicas(
        make_spec(
            replicas=2, secrets={"PW": old_secret}, config=config_dir(on_change="signal:SIGHUP")
        ),
        V1,
    )
    new = desired_replicas(
        make_spec(
            replicas=2, secrets={"PW": new_secret}, config=config_dir(on_change="signal:SIGHUP")
        ),
        V2,
    )

    actions = plan_service(
        new, [actual(old[0]), actual(new[1], labels={LABEL_CONFIG_VERSION: V1})], {}, "SIGHUP"
    )

    assert [(a.kind, a.changed) for a in actions] == [("recreate", ("secrets",)), ("signal", ())]
    for action in actions:
        assert old_secret not in str(action.describe())
        assert new_secret not in str(action.describe())
