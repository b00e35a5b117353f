"""dockerops.spec: pillar in, validated ServiceSpec out, every problem named by pillar path."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.spec import deep_merge, load_service, load_services, service_names
from tests.support.builders import WEB, pillar, port, problems_of, web_pillar

# The problem must not echo the value (lists, mappings, env, missing fields).
HIDDEN = "<hidden>"


# --- valid pillar ----------------------------------------------------------------------------


def test_minimal_service_gets_model_defaults() -> None:
    spec = load_service(web_pillar(), "web")

    assert spec.name == "web"
    assert spec.image == "web"
    assert spec.tag == "latest"
    assert spec.image_ref == "web:latest"
    assert spec.replicas == 1
    assert spec.command is None
    assert spec.env == {}
    assert spec.ports == []
    assert spec.labels == {}
    assert spec.restart_policy == "on-failure:5"
    assert spec.environment == "default"


def test_port_defaults_to_loopback_tcp_without_host_port() -> None:
    (published,) = load_service(web_pillar(ports=[{"container": 8080}]), "web").ports

    assert published.container == 8080
    assert published.host is None
    assert published.host_ip == "127.0.0.1"
    assert published.protocol == "tcp"


@pytest.mark.parametrize(
    ("host_ip", "expected"),
    [
        ("0.0.0.0", IPv4Address("0.0.0.0")),
        ("10.1.2.3", IPv4Address("10.1.2.3")),
        ("::1", IPv6Address("::1")),
    ],
)
def test_port_host_ip_accepts_v4_and_v6(host_ip: str, expected: object) -> None:
    (published,) = load_service(
        web_pillar(ports=[{"container": 80, "host_ip": host_ip}]), "web"
    ).ports

    assert published.host_ip == str(expected)


def test_defaults_are_deep_merged_under_the_service() -> None:
    data = pillar(
        {"web": {"image": "web", "env": {"B": "service"}, "ports": [{"container": 80}]}},
        defaults={
            "restart_policy": "always",
            "env": {"A": "default", "B": "default"},
            "labels": {"team": "platform"},
            "ports": [{"container": 9000}],
        },
    )

    spec = load_service(data, "web")

    assert spec.restart_policy == "always"
    assert spec.env == {"A": "default", "B": "service"}
    assert spec.labels == {"team": "platform"}
    # Lists are replaced, not concatenated.
    assert [port.container for port in spec.ports] == [80]


def test_defaults_do_not_leak_between_services() -> None:
    data = pillar(
        {"api": {"image": "api", "env": {"ONLY_API": "1"}}, "web": {"image": "web"}},
        defaults={"env": {"SHARED": "1"}},
    )

    api, web_spec = load_services(data)

    assert api.env == {"ONLY_API": "1", "SHARED": "1"}
    assert web_spec.env == {"SHARED": "1"}


def test_environment_comes_from_dockerops_environment() -> None:
    data = pillar({"web": {"image": "web"}}, environment="production")

    assert load_service(data, "web").environment == "production"


def test_service_environment_beats_the_pillar_environment() -> None:
    data = pillar({"web": {"image": "web", "environment": "canary"}}, environment="production")

    assert load_service(data, "web").environment == "canary"


def test_overrides_go_on_top_of_service_and_defaults() -> None:
    data = pillar(
        {"web": {"image": "web", "tag": "1.4", "env": {"A": "service"}}},
        defaults={"replicas": 3, "env": {"B": "default"}},
    )

    spec = load_service(data, "web", {"tag": "1.5", "env": {"A": "override"}})

    assert spec.tag == "1.5"
    assert spec.replicas == 3
    assert spec.env == {"A": "override", "B": "default"}


def test_overrides_can_describe_a_service_absent_from_pillar() -> None:
    spec = load_service(pillar(environment="staging"), "adhoc", {"image": "busybox"})

    assert (spec.name, spec.image_ref, spec.environment) == ("adhoc", "busybox:latest", "staging")


def test_deep_merge_does_not_modify_its_inputs() -> None:
    base = {"env": {"A": "1"}, "ports": [1]}
    over = {"env": {"B": "2"}, "ports": [2]}

    merged = deep_merge(base, over)

    assert merged == {"env": {"A": "1", "B": "2"}, "ports": [2]}
    assert base == {"env": {"A": "1"}, "ports": [1]}
    assert over == {"env": {"B": "2"}, "ports": [2]}


@pytest.mark.parametrize(
    "image",
    [
        "web",
        "library/web",
        "registry.example.com/team/web",
        "localhost:5000/web",
        "registry.example.com:5000/a/b/c",
        "Registry.Example.com/web",  # the domain may have capitals, the path may not
        "a.b_c__d-e--f",
        "10.0.0.1:5000/web",
    ],
)
def test_valid_image_repositories(image: str) -> None:
    assert load_service(pillar({"web": {"image": image}}), "web").image == image


@pytest.mark.parametrize("tag", ["1.4", "latest", "v1.2.3-rc_1", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert load_service(web_pillar(tag=tag), "web").image_ref == f"web:{tag}"


@pytest.mark.parametrize(
    "policy", ["no", "always", "unless-stopped", "on-failure", "on-failure:1", "on-failure:10"]
)
def test_valid_restart_policies(policy: str) -> None:
    assert load_service(web_pillar(restart_policy=policy), "web").restart_policy == policy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (0, "0"),
        (1.5, "1.5"),
        ("text", "text"),
        ("", ""),
    ],
)
def test_env_values_become_strings(value: object, expected: str) -> None:
    assert load_service(web_pillar(env={"VALUE": value}), "web").env == {"VALUE": expected}


@pytest.mark.parametrize("env_name", ["A", "_private", "DB_URL_2", "lower_case"])
def test_valid_env_names(env_name: str) -> None:
    assert load_service(web_pillar(env={env_name: "x"}), "web").env == {env_name: "x"}


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo hi && sleep 5", ["/bin/sh", "-c", "echo hi && sleep 5"]),
        (["sleep", "5"], ["sleep", "5"]),
        (None, None),
    ],
)
def test_command(command: object, expected: list[str] | None) -> None:
    assert load_service(web_pillar(command=command), "web").command == expected


@pytest.mark.parametrize("name", ["web", "web-1", "a_b", "0web", "a" * 50])
def test_valid_service_names(name: str) -> None:
    assert load_service(pillar({name: {"image": "web"}}), name).name == name


@pytest.mark.parametrize("replicas", [0, 1, 100])
def test_replicas_bounds_are_inclusive(replicas: int) -> None:
    assert load_service(web_pillar(replicas=replicas), "web").replicas == replicas


def test_same_container_port_on_two_protocols_is_allowed() -> None:
    ports = [{"container": 53, "protocol": "tcp"}, {"container": 53, "protocol": "udp"}]

    spec = load_service(web_pillar(ports=ports), "web")

    assert [(p.container, p.protocol) for p in spec.ports] == [(53, "tcp"), (53, "udp")]


# --- invalid values: path, message and the offending value -----------------------------------

_TAG_IN_IMAGE = "image is the repository only; put the version in 'tag'"
_BAD_IMAGE = "not a valid image repository reference"
_BAD_TAG = "not a valid image tag"
_BAD_RESTART = "expected no, always, unless-stopped, on-failure or on-failure:N"


@pytest.mark.parametrize(
    ("fields", "path", "message", "shown"),
    [
        # replicas
        ({"replicas": "x"}, "replicas", "valid integer", "'x'"),
        ({"replicas": 101}, "replicas", "less than or equal to 100", "101"),
        ({"replicas": -1}, "replicas", "greater than or equal to 0", "-1"),
        ({"replicas": 2.5}, "replicas", "fractional part", "2.5"),
        # image: tag or digest inside the image
        ({"image": "web:1.4"}, "image", _TAG_IN_IMAGE, "'web:1.4'"),
        ({"image": "web@sha256:abcd"}, "image", _TAG_IN_IMAGE, "'web@sha256:abcd'"),
        (
            {"image": "registry.example.com:5000/web:1.4"},
            "image",
            _TAG_IN_IMAGE,
            "'registry.example.com:5000/web:1.4'",
        ),
        # image: not a repository reference
        ({"image": "Web"}, "image", _BAD_IMAGE, "'Web'"),
        ({"image": "registry.example.com/Team/web"}, "image", _BAD_IMAGE, None),
        ({"image": "web app"}, "image", _BAD_IMAGE, "'web app'"),
        ({"image": "web!"}, "image", _BAD_IMAGE, "'web!'"),
        ({"image": "-web"}, "image", _BAD_IMAGE, "'-web'"),
        ({"image": "web/"}, "image", _BAD_IMAGE, "'web/'"),
        ({"image": ""}, "image", _BAD_IMAGE, "''"),
        # tag
        ({"tag": ".x"}, "tag", _BAD_TAG, "'.x'"),
        ({"tag": "-x"}, "tag", _BAD_TAG, "'-x'"),
        ({"tag": "has space"}, "tag", _BAD_TAG, "'has space'"),
        ({"tag": "1.4/2"}, "tag", _BAD_TAG, "'1.4/2'"),
        ({"tag": ""}, "tag", _BAD_TAG, "''"),
        ({"tag": "a" * 129}, "tag", _BAD_TAG, None),
        ({"tag": 1.4}, "tag", "valid string", "1.4"),  # unquoted YAML number
        # restart policy
        ({"restart_policy": "sometimes"}, "restart_policy", _BAD_RESTART, "'sometimes'"),
        ({"restart_policy": "on-failure:0"}, "restart_policy", _BAD_RESTART, "'on-failure:0'"),
        ({"restart_policy": "on-failure:"}, "restart_policy", _BAD_RESTART, "'on-failure:'"),
        ({"restart_policy": "Always"}, "restart_policy", _BAD_RESTART, "'Always'"),
        ({"restart_policy": "on_failure"}, "restart_policy", _BAD_RESTART, "'on_failure'"),
        # env
        (
            {"env": {"bad-name": "x"}},
            "env",
            "'bad-name' is not a valid environment variable name",
            None,
        ),
        ({"env": {"1ABC": "x"}}, "env", "'1ABC' is not a valid environment variable name", None),
        ({"env": {"": "x"}}, "env", "'' is not a valid environment variable name", None),
        ({"env": {1: "x"}}, "env", "1 is not a valid environment variable name", None),
        ({"env": {"A": None}}, "env", "A: values must be strings or numbers", None),
        ({"env": {"A": {"b": 1}}}, "env", "A: values must be strings or numbers", None),
        ({"env": {"A": ["x"]}}, "env", "A: values must be strings or numbers", None),
        ({"env": "A=1"}, "env", "valid dictionary", HIDDEN),
        # labels
        ({"labels": {"version": 2}}, "labels:version", "valid string", "2"),
        # command
        ({"command": ["sleep", 5]}, "command:1", "valid string", "5"),
        ({"command": 5}, "command", "valid list", "5"),
        # ports
        (
            {"ports": [{"container": 80}, {"container": 80}]},
            "ports",
            "container port 80/tcp listed twice",
            HIDDEN,
        ),
        (
            {"ports": [{"container": 53, "protocol": "udp"}, {"container": 53, "protocol": "udp"}]},
            "ports",
            "container port 53/udp listed twice",
            HIDDEN,
        ),
        ({"ports": [{"container": 0}]}, "ports:0:container", "greater than or equal to 1", "0"),
        (
            {"ports": [{"container": 70000}]},
            "ports:0:container",
            "less than or equal to 65535",
            "70000",
        ),
        (
            {"ports": [{"container": 80}, {"container": 81, "host": 0}]},
            "ports:1:host",
            "greater than or equal to 1",
            "0",
        ),
        ({"ports": [{"container": 80, "host": "abc"}]}, "ports:0:host", "valid integer", "'abc'"),
        (
            {"ports": [{"container": 80, "protocol": "sctp"}]},
            "ports:0:protocol",
            "'tcp' or 'udp'",
            "'sctp'",
        ),
        ({"ports": [{}]}, "ports:0:container", "Field required", HIDDEN),
        ({"ports": [80]}, "ports:0", "valid dictionary", "80"),
        ({"ports": "80"}, "ports", "valid list", "'80'"),
    ],
)
def test_invalid_value_names_path_and_value(
    fields: dict[str, Any], path: str, message: str, shown: str | None
) -> None:
    problems = problems_of(web_pillar(**fields))

    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.startswith(f"{WEB}:{path}: "), problem
    assert message in problem
    if shown == HIDDEN or path.startswith("env"):
        # env values may be credentials, and mappings or lists may hold them:
        # only scalar values are echoed back.
        assert " (got " not in problem, problem
    elif shown is not None:
        assert problem.endswith(f" (got {shown})"), problem
    else:
        assert " (got " in problem


def test_missing_image_is_reported() -> None:
    (problem,) = problems_of(pillar({"web": {"tag": "1.4"}}))

    assert problem.startswith(f"{WEB}:image: Field required")


def test_every_problem_of_a_service_is_reported_at_once() -> None:
    problems = problems_of(
        web_pillar(replicas="x", tag=".x", restart_policy="sometimes", replica=2)
    )

    assert sorted(problem.split(": ", 1)[0] for problem in problems) == [
        f"{WEB}:replica",
        f"{WEB}:replicas",
        f"{WEB}:restart_policy",
        f"{WEB}:tag",
    ]


def test_long_bad_values_are_shortened() -> None:
    (problem,) = problems_of(web_pillar(tag="!" * 500))

    shown = problem.split(" (got ", 1)[1]
    assert shown.endswith("...)")
    assert len(shown) <= 81


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Web", "'Web'"),
        ("-web", "'-web'"),
        ("_web", "'_web'"),
        ("web.app", "'web.app'"),
        ("web app", "'web app'"),
        ("a" * 51, None),
    ],
)
def test_invalid_service_names(name: str, shown: str | None) -> None:
    (problem,) = problems_of(pillar({name: {"image": "web"}}), name)

    assert problem.startswith(f"dockerops:services:{name}:name: service names are lowercase")
    if shown is not None:
        assert problem.endswith(f"(got {shown})")


# --- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"replica": 2}, f"{WEB}:replica: unknown key; did you mean 'replicas'?"),
        ({"imgae": "web"}, f"{WEB}:imgae: unknown key; did you mean 'image'?"),
        ({"restart": "always"}, f"{WEB}:restart: unknown key; did you mean 'restart_policy'?"),
        ({"label": {}}, f"{WEB}:label: unknown key; did you mean 'labels'?"),
        ({"xyzzy": 1}, f"{WEB}:xyzzy: unknown key"),
        (
            {"ports": [{"container": 80, "hots": 8080}]},
            f"{WEB}:ports:0:hots: unknown key; did you mean 'host'?",
        ),
        (
            {"ports": [{"container": 80}, {"container": 81, "protocl": "udp"}]},
            f"{WEB}:ports:1:protocl: unknown key; did you mean 'protocol'?",
        ),
        (
            {"ports": [{"container": 80, "hostip": "0.0.0.0"}]},
            f"{WEB}:ports:0:hostip: unknown key; did you mean 'host_ip'?",
        ),
        ({"ports": [{"container": 80, "zzz": 1}]}, f"{WEB}:ports:0:zzz: unknown key"),
    ],
)
def test_unknown_service_keys_suggest_the_closest_field(
    fields: dict[str, Any], expected: str
) -> None:
    assert problems_of(web_pillar(**fields)) == [expected]


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"service": {}}, "dockerops:service: unknown key; did you mean 'services'?"),
        ({"default": {}}, "dockerops:default: unknown key; did you mean 'defaults'?"),
        ({"enviroment": "prod"}, "dockerops:enviroment: unknown key; did you mean 'environment'?"),
    ],
)
def test_unknown_top_level_keys_suggest_the_closest_field(
    top: dict[str, Any], expected: str
) -> None:
    data = {"dockerops": {"services": {"web": {"image": "web"}}, **top}}

    assert problems_of(data) == [expected]


# --- where the bad value came from: defaults, arguments --------------------------------------


@pytest.mark.parametrize(
    ("defaults", "expected"),
    [
        (
            {"replicas": "x"},
            "dockerops:defaults:replicas: Input should be a valid integer, "
            "unable to parse string as an integer (got 'x')",
        ),
        (
            {"restart_policy": "sometimes"},
            f"dockerops:defaults:restart_policy: {_BAD_RESTART} (got 'sometimes')",
        ),
        ({"tag": ".x"}, f"dockerops:defaults:tag: {_BAD_TAG} (got '.x')"),
        ({"replica": 2}, "dockerops:defaults:replica: unknown key; did you mean 'replicas'?"),
        (
            {"ports": [{"container": 80, "hots": 1}]},
            "dockerops:defaults:ports:0:hots: unknown key; did you mean 'host'?",
        ),
    ],
)
def test_errors_in_defaults_name_the_defaults_path(defaults: dict[str, Any], expected: str) -> None:
    data = pillar({"web": {"image": "web"}}, defaults=defaults)

    assert problems_of(data) == [expected]


def test_a_bad_default_overridden_by_the_service_is_no_error() -> None:
    data = pillar({"web": {"image": "web", "replicas": 2}}, defaults={"replicas": "x"})

    assert load_service(data, "web").replicas == 2


def test_a_bad_service_value_over_a_default_names_the_service() -> None:
    data = pillar({"web": {"image": "web", "replicas": "x"}}, defaults={"replicas": 2})

    (problem,) = problems_of(data)
    assert problem.startswith(f"{WEB}:replicas: ")


def test_bad_nested_default_under_a_merged_key_names_the_defaults_path() -> None:
    # defaults:labels and services:web:labels are deep-merged; the bad value
    # (team: 5) is only in defaults, so that is where the error must point.
    data = pillar(
        {"web": {"image": "web", "labels": {"tier": "frontend"}}},
        defaults={"labels": {"team": 5}},
    )

    assert problems_of(data) == [
        "dockerops:defaults:labels:team: Input should be a valid string (got 5)"
    ]


def test_errors_in_overrides_name_the_argument() -> None:
    data = web_pillar(replicas="x")

    problems = problems_of(data, overrides={"tag": "bad tag"})

    assert sorted(problems) == [
        f"argument:tag: {_BAD_TAG} (got 'bad tag')",
        f"{WEB}:replicas: Input should be a valid integer, "
        "unable to parse string as an integer (got 'x')",
    ]


def test_port_host_ip_error_is_one_problem_at_the_pillar_path() -> None:
    # host_ip accepts IPv4 and IPv6: the problem must still be one line
    # naming the pillar key, not pydantic's internal union branches.
    problems = problems_of(web_pillar(ports=[{"container": 80, "host_ip": "localhost"}]))

    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{WEB}:ports:0:host_ip: ")
    assert problems[0].endswith("(got 'localhost')")


def test_env_problems_do_not_reveal_other_env_values() -> None:
    # Env holds secrets; an error about one variable's *name* must not print
    # every other variable's value into Salt's job return and logs.
    secret = "s3cr3t-Pa55word"
    data = web_pillar(env={"DB_PASSWORD": secret, "bad-name": "x"})

    problems = problems_of(data)

    assert problems[0].startswith(f"{WEB}:env: 'bad-name' is not a valid")
    assert secret not in "\n".join(problems)


# --- host ports that can never be published --------------------------------------------------


def test_host_port_range_of_all_replicas_must_fit() -> None:
    # Slot i publishes on host + i - 1: with 2 replicas and their 2 start-first
    # spares, host 65535 means slot 2 asks for port 65536. Validation promises
    # to catch such pillar before anything is touched.
    problems = problems_of(web_pillar(replicas=2, ports=[{"container": 80, "host": 65535}]))

    assert problems == [
        f"{WEB}:ports: host port 65535 with 4 slots (replicas and start-first spares) "
        "runs past 65535"
    ]


@pytest.mark.parametrize(
    ("replicas", "ports", "twice"),
    [
        (1, [{"container": 80, "host": 8080}, {"container": 81, "host": 8080}], 8080),
        # replica 2 of port 80 gets 8081, which replica 1 of port 81 already has
        (2, [{"container": 80, "host": 8080}, {"container": 81, "host": 8081}], 8081),
    ],
    ids=["same-host-port", "overlapping-replica-ranges"],
)
def test_host_ports_published_twice_are_rejected(
    replicas: int, ports: list[Any], twice: int
) -> None:
    problems = problems_of(web_pillar(replicas=replicas, ports=ports))

    assert problems == [
        f"{WEB}:ports: host port 127.0.0.1:{twice}/tcp is published twice "
        "(container ports 80 and 81)"
    ]


# --- ports: every slot, spares included, needs its own host port -----------------------------


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
    data = pillar(
        {"web": {"image": "web", "replicas": 2, "ports": [port(80, 65533)]}},
        defaults={"update": START_FIRST_2},
    )

    with pytest.raises(SpecError) as caught:
        load_service(data, "web")

    assert "host port 65533 with 4 slots" in str(caught.value)


def test_port_ranges_of_two_services_on_one_host_are_compared() -> None:
    # Both run on every minion that gets this pillar: overlapping slot ranges
    # would make every rolling update of one fail on "port is already allocated".
    services = {
        "web": {"image": "web", "replicas": 2, "ports": [port(80, 8080)]},
        "api": {"image": "api", "replicas": 2, "ports": [port(80, 8081)]},
    }

    with pytest.raises(SpecError) as caught:
        load_services(pillar(services))

    assert "api" in str(caught.value) and "web" in str(caught.value)


# --- the pillar as a whole -------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda p: load_service(p, "web"),
        load_services,
        service_names,
    ],
    ids=["load_service", "load_services", "service_names"],
)
def test_pillar_that_failed_to_render_raises(call: Any) -> None:
    data = {"_errors": ["Rendering SLS 'dockerops' failed"], **web_pillar()}

    with pytest.raises(SpecError) as caught:
        call(data)

    assert caught.value.problems == [
        "pillar failed to render: [\"Rendering SLS 'dockerops' failed\"]"
    ]


@pytest.mark.parametrize("data", [{}, {"dockerops": None}, {"dockerops": {}}])
def test_no_dockerops_pillar_means_no_services(data: dict[str, Any]) -> None:
    assert service_names(data) == []
    assert load_services(data) == []


def test_dockerops_pillar_must_be_a_mapping() -> None:
    with pytest.raises(SpecError) as caught:
        service_names({"dockerops": "web"})

    assert caught.value.problems == ["dockerops: expected a mapping, got 'web'"]


def test_service_must_be_a_mapping() -> None:
    assert problems_of(pillar({"web": None})) == [
        "dockerops:services:web: Input should be a valid dictionary (got None)"
    ]


def test_pillar_environment_must_be_a_string() -> None:
    data = {"dockerops": {"environment": 5, "services": {"web": {"image": "web"}}}}

    assert problems_of(data) == ["dockerops:environment: Input should be a valid string (got 5)"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("wbe", "dockerops:services:wbe: no such service in pillar; did you mean 'web'?"),
        ("api-gw", "dockerops:services:api-gw: no such service in pillar; did you mean 'api'?"),
        ("zzz", "dockerops:services:zzz: no such service in pillar"),
    ],
)
def test_service_not_in_pillar(name: str, expected: str) -> None:
    data = pillar({"web": {"image": "web"}, "api": {"image": "api"}})

    assert problems_of(data, name) == [expected]


def test_service_names_are_sorted() -> None:
    data = pillar({"web": {"image": "web"}, "api": {"image": "api"}, "db": {"image": "db"}})

    assert service_names(data) == ["api", "db", "web"]


def test_load_services_returns_every_service_sorted() -> None:
    data = pillar({"web": {"image": "web"}, "api": {"image": "api", "replicas": 2}})

    specs = load_services(data)

    assert [(spec.name, spec.replicas) for spec in specs] == [("api", 2), ("web", 1)]


def test_load_services_reports_problems_of_all_services_at_once() -> None:
    data = pillar(
        {
            "web": {"image": "web:1.4"},
            "api": {"image": "api", "replicas": "x"},
            "ok": {"image": "ok"},
            "db": {"image": "db", "tga": "1"},
        }
    )

    with pytest.raises(SpecError) as caught:
        load_services(data)

    assert [problem.split(": ", 1)[0] for problem in caught.value.problems] == [
        "dockerops:services:api:replicas",
        "dockerops:services:db:tga",
        "dockerops:services:web:image",
    ]
