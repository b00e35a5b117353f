"""dockerops.replicas: desired replicas from a spec, actual replicas from the list API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from dockerops.replicas import (
    LABEL_CONFIG_VERSION,
    LABEL_ENVIRONMENT,
    LABEL_IMAGE,
    LABEL_INPUTS,
    LABEL_MANAGED,
    LABEL_REPLICA,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    ActualReplica,
    Mount,
    PublishedPort,
    actual_from_list_entry,
    container_name,
    desired_replicas,
)
from dockerops.spec import ServiceSpec

MakeSpec = Callable[..., ServiceSpec]
ListEntry = Callable[..., dict[str, Any]]

RECREATE_INPUTS = {"image", "command", "env", "ports", "labels", "restart_policy"}


# --- desired replicas ------------------------------------------------------------------------


def test_one_replica_per_index_named_service_index(make_spec: MakeSpec) -> None:
    replicas = desired_replicas(make_spec(replicas=3))

    assert [(r.service, r.index, r.name) for r in replicas] == [
        ("web", 1, "web-1"),
        ("web", 2, "web-2"),
        ("web", 3, "web-3"),
    ]
    assert container_name("web", 2) == "web-2"


def test_zero_replicas_desires_nothing(make_spec: MakeSpec) -> None:
    assert desired_replicas(make_spec(replicas=0)) == []


def test_replica_i_publishes_on_host_port_plus_i_minus_one(make_spec: MakeSpec) -> None:
    spec = make_spec(
        replicas=3,
        ports=[
            {"container": 80, "host": 8080},
            {"container": 53, "host": 5300, "protocol": "udp", "host_ip": "0.0.0.0"},
            {"container": 9000},
        ],
    )

    ports = [replica.ports for replica in desired_replicas(spec)]

    assert ports == [
        (
            PublishedPort(80, "tcp", "127.0.0.1", 8080),
            PublishedPort(53, "udp", "0.0.0.0", 5300),
            PublishedPort(9000, "tcp", "127.0.0.1", None),
        ),
        (
            PublishedPort(80, "tcp", "127.0.0.1", 8081),
            PublishedPort(53, "udp", "0.0.0.0", 5301),
            PublishedPort(9000, "tcp", "127.0.0.1", None),
        ),
        (
            PublishedPort(80, "tcp", "127.0.0.1", 8082),
            PublishedPort(53, "udp", "0.0.0.0", 5302),
            PublishedPort(9000, "tcp", "127.0.0.1", None),
        ),
    ]
    assert [port.key for port in ports[0]] == ["80/tcp", "53/udp", "9000/tcp"]


def test_replica_carries_the_container_config(make_spec: MakeSpec) -> None:
    spec = make_spec(
        command="serve --port 80",
        env={"B": "2", "A": True},
        labels={"team": "platform"},
        restart_policy="always",
        environment="staging",
    )

    (replica,) = desired_replicas(spec)

    assert replica.image == "registry.example.com/web:1.4"
    assert replica.command == ("/bin/sh", "-c", "serve --port 80")
    assert replica.env == (("A", "true"), ("B", "2"))
    assert replica.labels == ((LABEL_ENVIRONMENT, "staging"), ("team", "platform"))
    assert replica.restart_policy == "always"
    assert {key for key, _ in replica.inputs} >= RECREATE_INPUTS


def test_spec_hash_is_stable_across_calls(make_spec: MakeSpec) -> None:
    fields = {"replicas": 2, "env": {"A": "1"}, "ports": [{"container": 80, "host": 8080}]}

    first = desired_replicas(make_spec(**fields))
    second = desired_replicas(make_spec(**fields))

    assert first == second
    assert [r.spec_hash for r in first] == [r.spec_hash for r in second]
    assert all(r.spec_hash for r in first)


def test_spec_hash_ignores_dict_ordering(make_spec: MakeSpec) -> None:
    forward = make_spec(env={"A": "1", "B": "2", "C": "3"}, labels={"x": "1", "y": "2"})
    backward = make_spec(env={"C": "3", "B": "2", "A": "1"}, labels={"y": "2", "x": "1"})

    (one,) = desired_replicas(forward)
    (other,) = desired_replicas(backward)

    assert one.inputs == other.inputs
    assert one.spec_hash == other.spec_hash


def _inputs(spec: ServiceSpec) -> list[dict[str, str]]:
    return [dict(replica.inputs) for replica in desired_replicas(spec)]


@pytest.mark.parametrize(
    ("change", "changed_input"),
    [
        ({"tag": "1.5"}, "image"),
        ({"image": "registry.example.com/other"}, "image"),
        ({"command": ["serve", "--verbose"]}, "command"),
        ({"command": None}, "command"),
        ({"env": {"A": "1", "B": "changed"}}, "env"),
        ({"env": {"A": "1", "B": "2", "C": "new"}}, "env"),
        ({"env": {"A": "1"}}, "env"),
        ({"ports": [{"container": 80, "host": 9090}]}, "ports"),
        ({"ports": [{"container": 81, "host": 8080}]}, "ports"),
        ({"ports": [{"container": 80, "host": 8080, "protocol": "udp"}]}, "ports"),
        ({"ports": [{"container": 80, "host": 8080, "host_ip": "0.0.0.0"}]}, "ports"),
        ({"ports": [{"container": 80}]}, "ports"),
        ({"labels": {"team": "other"}}, "labels"),
        ({"labels": {}}, "labels"),
        ({"environment": "staging"}, "labels"),
        ({"restart_policy": "always"}, "restart_policy"),
    ],
)
def test_each_input_changes_exactly_its_entry_and_the_hash(
    make_spec: MakeSpec, change: dict[str, Any], changed_input: str
) -> None:
    base = {
        "replicas": 2,
        "command": ["serve"],
        "env": {"A": "1", "B": "2"},
        "ports": [{"container": 80, "host": 8080}],
        "labels": {"team": "platform"},
        "restart_policy": "on-failure:5",
    }
    before = desired_replicas(make_spec(**base))
    after = desired_replicas(make_spec(**{**base, **change}))

    for old, new in zip(before, after, strict=True):
        old_inputs, new_inputs = dict(old.inputs), dict(new.inputs)
        assert old_inputs.keys() == new_inputs.keys()
        assert {key for key in old_inputs if old_inputs[key] != new_inputs[key]} == {changed_input}
        assert old.spec_hash != new.spec_hash


def test_replica_count_does_not_change_existing_replicas(make_spec: MakeSpec) -> None:
    fields = {"env": {"A": "1"}, "ports": [{"container": 80, "host": 8080}]}

    two = desired_replicas(make_spec(replicas=2, **fields))
    three = desired_replicas(make_spec(replicas=3, **fields))

    assert three[:2] == two
    assert [r.spec_hash for r in three[:2]] == [r.spec_hash for r in two]


def test_slots_differ_only_by_their_published_host_ports(make_spec: MakeSpec) -> None:
    # Slots are interchangeable: same inputs and hash, each its own host port.
    spec = make_spec(replicas=2, ports=[{"container": 80, "host": 8080}])
    first, second = desired_replicas(spec)
    assert first.inputs == second.inputs and first.spec_hash == second.spec_hash
    assert [p.host_port for p in first.ports] == [8080]
    assert [p.host_port for p in second.ports] == [8081]


def test_replicas_without_host_ports_share_one_hash(make_spec: MakeSpec) -> None:
    replicas = desired_replicas(make_spec(replicas=3, ports=[{"container": 80}]))

    assert len({replica.spec_hash for replica in replicas}) == 1


# --- labels ----------------------------------------------------------------------------------


def test_docker_labels_identify_the_replica(make_spec: MakeSpec) -> None:
    spec = make_spec(replicas=2, labels={"team": "platform"}, environment="staging")

    _, replica = desired_replicas(spec)
    labels = replica.docker_labels()

    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SERVICE] == "web"
    assert labels[LABEL_REPLICA] == "2"
    assert labels[LABEL_IMAGE] == "registry.example.com/web:1.4"
    assert labels[LABEL_ENVIRONMENT] == "staging"
    assert labels[LABEL_SPEC_HASH] == replica.spec_hash
    assert json.loads(labels[LABEL_INPUTS]) == dict(replica.inputs)
    assert labels["team"] == "platform"
    assert all(isinstance(value, str) for value in labels.values())


def test_user_labels_cannot_impersonate_dockerops_labels(make_spec: MakeSpec) -> None:
    spec = make_spec(
        labels={LABEL_SERVICE: "other", LABEL_REPLICA: "9", LABEL_ENVIRONMENT: "fake"},
        environment="production",
    )

    (replica,) = desired_replicas(spec)
    labels = replica.docker_labels()

    assert labels[LABEL_SERVICE] == "web"
    assert labels[LABEL_REPLICA] == "1"
    assert labels[LABEL_ENVIRONMENT] == "production"


def test_docker_labels_never_carry_env_values(make_spec: MakeSpec) -> None:
    secret = "s3cr3t-Pa55word"

    (replica,) = desired_replicas(make_spec(env={"DB_PASSWORD": secret}))

    assert secret not in json.dumps(replica.docker_labels())


# --- actual replicas from the list API -------------------------------------------------------


def test_list_entry_round_trips_the_desired_replica(
    make_spec: MakeSpec, list_entry: ListEntry
) -> None:
    _, desired = desired_replicas(make_spec(replicas=2, environment="staging"))
    entry = list_entry(desired, state="running", status="Up 2 hours", container_id="f00d" * 16)

    actual = actual_from_list_entry(entry)

    assert actual == ActualReplica(
        id="f00d" * 16,
        name="web-2",
        service="web",
        index=2,
        image="registry.example.com/web:1.4",
        spec_hash=desired.spec_hash,
        state="running",
        status="Up 2 hours",
        environment="staging",
    )
    assert actual.inputs == dict(desired.inputs)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["/web-1"], "web-1"),
        (["web-1"], "web-1"),
        (["/web-1", "/other/alias"], "web-1"),
        ([], ""),
        (None, ""),
    ],
)
def test_name_is_the_first_name_without_its_slash(names: Any, expected: str) -> None:
    assert actual_from_list_entry({"Names": names}).name == expected


def test_missing_fields_get_neutral_values() -> None:
    actual = actual_from_list_entry({})

    assert (actual.id, actual.name, actual.service, actual.index) == ("", "", "", None)
    assert (actual.image, actual.spec_hash, actual.inputs) == ("", "", {})
    assert (actual.state, actual.status, actual.environment) == ("unknown", "", "")
    assert actual.health is None


def test_image_falls_back_to_the_entry_image_without_our_label() -> None:
    entry = {"Image": "web:1.3", "Labels": {LABEL_SERVICE: "web", LABEL_REPLICA: "1"}}

    assert actual_from_list_entry(entry).image == "web:1.3"


@pytest.mark.parametrize(
    ("labels", "index", "inputs"),
    [
        ({LABEL_REPLICA: "abc"}, None, {}),
        ({LABEL_REPLICA: ""}, None, {}),
        ({}, None, {}),
        ({LABEL_REPLICA: "3", LABEL_INPUTS: "not json"}, 3, {}),
        ({LABEL_REPLICA: "3", LABEL_INPUTS: "[1, 2]"}, 3, {}),
        ({LABEL_REPLICA: "3", LABEL_INPUTS: "null"}, 3, {}),
        ({LABEL_REPLICA: "3", LABEL_INPUTS: ""}, 3, {}),
        ({LABEL_REPLICA: "3", LABEL_INPUTS: '{"env": "abc"}'}, 3, {"env": "abc"}),
    ],
)
def test_bad_labels_are_tolerated(
    labels: dict[str, str], index: int | None, inputs: dict[str, str]
) -> None:
    actual = actual_from_list_entry({"Names": ["/web-3"], "Labels": labels, "State": "running"})

    assert actual.index == index
    assert actual.inputs == inputs
    assert actual.name == "web-3"


def test_null_labels_are_tolerated() -> None:
    actual = actual_from_list_entry({"Names": ["/web-1"], "Labels": None})

    assert (actual.service, actual.index, actual.spec_hash) == ("", None, "")


@pytest.mark.parametrize(
    ("status", "health"),
    [
        ("Up 3 minutes (healthy)", "healthy"),
        ("Up 3 minutes (unhealthy)", "unhealthy"),
        ("Up 2 seconds (health: starting)", "starting"),
        ("Up 3 minutes", None),
        ("Up 3 minutes (Paused)", None),
        ("Exited (0) 5 seconds ago", None),
        ("Exited (137) 2 hours ago", None),
        ("Created", None),
        ("", None),
    ],
)
def test_health_is_parsed_from_the_status(status: str, health: str | None) -> None:
    assert actual_from_list_entry({"Status": status}).health == health


# --- config directories, secrets, data, logging, healthcheck ---------------------------------

CONFIG_ROOT = "/srv/dockerops/web/config"
V1, V2 = "0123456789abcdef", "fedcba9876543210"


def _config(on_change: str = "rolling", **fields: Any) -> dict[str, Any]:
    return {
        "path": "/etc/web",
        "files": {"web.conf": {"contents": "listen 80"}},
        "on_change": on_change,
        **fields,
    }


@pytest.mark.parametrize("on_change", ["rolling", "restart"])
def test_pinned_config_mounts_its_version_read_only(make_spec: MakeSpec, on_change: str) -> None:
    spec = make_spec(replicas=2, config=_config(on_change))

    replicas = desired_replicas(spec, V1)

    for replica in replicas:
        assert replica.mounts == (Mount(f"{CONFIG_ROOT}/..{V1}", "/etc/web", True),)
        assert replica.config_version == V1
        assert replica.config_live is False


@pytest.mark.parametrize("on_change", ["rolling", "restart"])
def test_pinned_config_version_changes_exactly_the_config_input(
    make_spec: MakeSpec, on_change: str
) -> None:
    spec = make_spec(
        replicas=2,
        config=_config(on_change),
        data=[{"host": "/srv/dockerops/web/data", "container": "/data"}],
    )

    before, after = desired_replicas(spec, V1), desired_replicas(spec, V2)

    for old, new in zip(before, after, strict=True):
        old_inputs, new_inputs = dict(old.inputs), dict(new.inputs)
        assert old_inputs.keys() == new_inputs.keys()
        assert {key for key in old_inputs if old_inputs[key] != new_inputs[key]} == {"config"}
        assert old.spec_hash != new.spec_hash


@pytest.mark.parametrize("on_change", ["signal:SIGHUP", "signal:usr1", "none"])
def test_live_config_mounts_the_root_and_its_version_changes_no_input(
    make_spec: MakeSpec, on_change: str
) -> None:
    spec = make_spec(replicas=2, config=_config(on_change))

    before, after = desired_replicas(spec, V1), desired_replicas(spec, V2)

    for old, new in zip(before, after, strict=True):
        assert new.mounts == (Mount(CONFIG_ROOT, "/etc/web", True),)
        assert (old.config_version, new.config_version) == (V1, V2)
        assert old.config_live and new.config_live
        assert old.inputs == new.inputs
        assert old.spec_hash == new.spec_hash


def test_live_config_without_a_version_is_fine(make_spec: MakeSpec) -> None:
    (replica,) = desired_replicas(make_spec(config=_config("signal:SIGHUP")))

    assert replica.config_version is None
    assert LABEL_CONFIG_VERSION not in replica.docker_labels()


def test_pinned_config_without_a_version_raises(make_spec: MakeSpec) -> None:
    with pytest.raises(ValueError, match="service web: the config version is not known"):
        desired_replicas(make_spec(config=_config("rolling")))


def test_a_config_version_without_a_config_is_ignored(make_spec: MakeSpec) -> None:
    (plain,) = desired_replicas(make_spec())
    (versioned,) = desired_replicas(make_spec(), V1)

    assert versioned == plain
    assert versioned.config_version is None
    assert "config" not in dict(versioned.inputs)


def test_config_root_is_mounted_from_an_explicit_root(make_spec: MakeSpec) -> None:
    spec = make_spec(config=_config("rolling", root="/srv/dockerops/shared/web"))

    (replica,) = desired_replicas(spec, V1)

    assert replica.mounts == (Mount(f"/srv/dockerops/shared/web/..{V1}", "/etc/web", True),)


def test_docker_labels_carry_the_config_version(make_spec: MakeSpec) -> None:
    (pinned,) = desired_replicas(make_spec(config=_config("rolling")), V1)
    (live,) = desired_replicas(make_spec(config=_config("signal:SIGHUP")), V2)
    (plain,) = desired_replicas(make_spec())

    assert pinned.docker_labels()[LABEL_CONFIG_VERSION] == V1
    assert live.docker_labels()[LABEL_CONFIG_VERSION] == V2
    assert LABEL_CONFIG_VERSION not in plain.docker_labels()


def test_config_version_round_trips_through_the_list_api(
    make_spec: MakeSpec, list_entry: ListEntry
) -> None:
    (replica,) = desired_replicas(make_spec(config=_config("rolling")), V1)

    assert actual_from_list_entry(list_entry(replica)).config_version == V1
    assert actual_from_list_entry({"Labels": {}}).config_version == ""


def test_secrets_go_into_the_container_env(make_spec: MakeSpec) -> None:
    (replica,) = desired_replicas(make_spec(env={"A": "1"}, secrets={"DB_PASSWORD": "pw"}))

    assert replica.env == (("A", "1"), ("DB_PASSWORD", "pw"))
    assert "secrets" in dict(replica.inputs)


def test_data_mounts_come_before_the_config_mount(make_spec: MakeSpec) -> None:
    spec = make_spec(
        config=_config("rolling"),
        data=[
            {"host": "/srv/dockerops/web/data", "container": "/data"},
            {"host": "/var/log/dockerops/web", "container": "/var/log/web", "read_only": True},
        ],
    )

    (replica,) = desired_replicas(spec, V1)

    assert replica.mounts == (
        Mount("/srv/dockerops/web/data", "/data", False),
        Mount("/var/log/dockerops/web", "/var/log/web", True),
        Mount(f"{CONFIG_ROOT}/..{V1}", "/etc/web", True),
    )


def test_logging_and_healthcheck_of_the_replica(make_spec: MakeSpec) -> None:
    spec = make_spec(
        logging={"options": {"max-size": "50m"}},
        healthcheck={"test": ["curl", "-f", "http://localhost/"], "interval": "500ms"},
    )

    (replica,) = desired_replicas(spec)

    assert replica.log_driver == "json-file"
    assert replica.log_options == (("max-file", "3"), ("max-size", "50m"))
    assert replica.docker_healthcheck() == {
        "test": ["CMD", "curl", "-f", "http://localhost/"],
        "interval": 500_000_000,
        "timeout": 3_000_000_000,
        "retries": 3,
        "start_period": 0,
    }


def test_no_healthcheck(make_spec: MakeSpec) -> None:
    (replica,) = desired_replicas(make_spec())

    assert replica.healthcheck is None
    assert replica.docker_healthcheck() is None
    assert "healthcheck" not in dict(replica.inputs)


DATA = {"host": "/srv/dockerops/web/data", "container": "/data"}
FULL = {
    "replicas": 2,
    "env": {"A": "1"},
    "secrets": {"DB_PASSWORD": "old-pw"},
    "config": _config("rolling"),
    "data": [DATA],
    "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
    "healthcheck": {"test": "true", "interval": "2s"},
}


@pytest.mark.parametrize(
    ("change", "changed_input"),
    [
        ({"secrets": {"DB_PASSWORD": "new-pw"}}, "secrets"),
        ({"secrets": {"DB_PASSWORD": "old-pw", "OTHER": "x"}}, "secrets"),
        ({"env": {"A": "2"}}, "env"),
        ({"data": [{"host": "/srv/dockerops/web/other", "container": "/data"}]}, "mounts"),
        ({"data": [{"host": "/srv/dockerops/web/data", "container": "/var/data"}]}, "mounts"),
        ({"data": [{**DATA, "read_only": True}]}, "mounts"),
        ({"config": _config("rolling", path="/etc/web2")}, "config"),
        ({"config": _config("rolling", root="/srv/dockerops/elsewhere")}, "config"),
        ({"config": _config("signal:SIGHUP")}, "config"),
        ({"logging": {"driver": "json-file", "options": {"max-size": "20m"}}}, "logging"),
        ({"logging": {"driver": "local"}}, "logging"),
        ({"healthcheck": {"test": "true", "interval": "3s"}}, "healthcheck"),
        ({"healthcheck": {"test": "false", "interval": "2s"}}, "healthcheck"),
        ({"healthcheck": {"test": "true", "interval": "2s", "retries": 5}}, "healthcheck"),
    ],
)
def test_each_new_input_changes_exactly_its_entry(
    make_spec: MakeSpec, change: dict[str, Any], changed_input: str
) -> None:
    before = desired_replicas(make_spec(**FULL), V1)
    after = desired_replicas(make_spec(**{**FULL, **change}), V1)

    for old, new in zip(before, after, strict=True):
        old_inputs, new_inputs = dict(old.inputs), dict(new.inputs)
        assert old_inputs.keys() == new_inputs.keys()
        assert {key for key in old_inputs if old_inputs[key] != new_inputs[key]} == {changed_input}
        assert old.spec_hash != new.spec_hash


@pytest.mark.parametrize(
    "change",
    [
        {"config": _config("restart")},
        {"config": _config("rolling", keep=10)},
        {"config": {**_config("rolling"), "files": {"other": {"contents": "changed"}}}},
        {"update": {"health_timeout": "5m", "min_healthy_time": "10s", "rollback": False}},
    ],
    ids=["rolling-to-restart", "keep", "files-without-new-version", "update-policy"],
)
def test_changes_that_recreate_nothing(make_spec: MakeSpec, change: dict[str, Any]) -> None:
    # The files reach a container through the config version only; how
    # replicas are replaced is not part of any container.
    before = desired_replicas(make_spec(**FULL), V1)
    after = desired_replicas(make_spec(**{**FULL, **change}), V1)

    assert [r.inputs for r in after] == [r.inputs for r in before]
    assert [r.spec_hash for r in after] == [r.spec_hash for r in before]


@pytest.mark.parametrize(
    ("change", "added"),
    [
        ({"secrets": {"PW": "x"}}, {"secrets"}),
        ({"data": [{"host": "/srv/dockerops/web/data", "container": "/data"}]}, {"mounts"}),
        ({"healthcheck": {"test": "true"}}, {"healthcheck"}),
        ({"config": _config("rolling")}, {"config"}),
        ({"config": _config("none")}, {"config"}),
    ],
)
def test_optional_inputs_appear_only_when_set(
    make_spec: MakeSpec, change: dict[str, Any], added: set[str]
) -> None:
    (plain,) = desired_replicas(make_spec())
    (more,) = desired_replicas(make_spec(**change), V1)

    assert dict(more.inputs).keys() - dict(plain.inputs).keys() == added


def test_repr_never_contains_env_or_secret_values(make_spec: MakeSpec) -> None:
    env_value, secret = "env-v4lue-Pa55", "s3cr3t-Pa55word"
    spec = make_spec(env={"API_KEY": env_value}, secrets={"DB_PASSWORD": secret})

    (replica,) = desired_replicas(spec)

    assert dict(replica.env) == {"API_KEY": env_value, "DB_PASSWORD": secret}
    for text in (repr(replica), str(replica), json.dumps(replica.docker_labels())):
        assert env_value not in text
        assert secret not in text
