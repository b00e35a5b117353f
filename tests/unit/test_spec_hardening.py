"""dockerops.spec against odd input: anchors, non-finite durations, ids, paths, names."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.spec import load_service

WEB = "dockerops:services:web"
SECRET = "s3cr3t-Pa55word"


def web(**fields: Any) -> dict[str, Any]:
    return {"dockerops": {"services": {"web": {"image": "web", **fields}}}}


def problems(pillar: dict[str, Any], name: str = "web") -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_service(pillar, name)
    return caught.value.problems


def one_problem(pillar: dict[str, Any], name: str = "web") -> str:
    found = problems(pillar, name)
    assert len(found) == 1, found
    return found[0]


def config(**files: Any) -> dict[str, Any]:
    return {"path": "/etc/web", "files": files or {"web.conf": {"contents": "x"}}}


# --- a trailing newline never passes a pattern -----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"image": "web\n"}, "image"),
        ({"tag": "1.0\n"}, "tag"),
        ({"restart_policy": "always\n"}, "restart_policy"),
        ({"restart_policy": "on-failure:3\n"}, "restart_policy"),
        ({"env": {"NAME\n": "x"}}, "env"),
        ({"config": config(**{"a": {"contents": "x", "mode": "644\n"}})}, "config:files:a:mode"),
        ({"healthcheck": {"test": "true", "interval": "2s\n\n"}}, None),
        ({"logging": {"driver": "json-file\n"}}, "logging:driver"),
    ],
)
def test_trailing_newlines_are_refused(fields: dict[str, Any], path: str | None) -> None:
    if path is None:  # durations strip surrounding whitespace: "2s\n\n" is 2s
        assert load_service(web(**fields), "web").healthcheck is not None
        return
    assert one_problem(web(**fields)).startswith(f"{WEB}:{path}: ")


def test_a_service_name_with_a_trailing_newline_is_refused() -> None:
    pillar = {"dockerops": {"services": {"web\n": {"image": "web"}}}}

    assert "service names are" in one_problem(pillar, "web\n")


# --- durations: finite, not negative, bounded ------------------------------------------------


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), -1, "-1s", 10**400, "9" * 400, "1e9"]
)
@pytest.mark.parametrize(
    "field",
    [
        ("healthcheck", "interval"),
        ("healthcheck", "timeout"),
        ("healthcheck", "start_period"),
        ("update", "health_timeout"),
        ("update", "min_healthy_time"),
    ],
)
def test_durations_must_be_finite_and_not_negative(value: Any, field: tuple[str, str]) -> None:
    section, key = field
    body: dict[str, Any] = {key: value}
    if section == "healthcheck":
        body["test"] = "true"

    problem = one_problem(web(**{section: body}))

    assert problem.startswith(f"{WEB}:{section}:{key}: "), problem


@pytest.mark.parametrize(
    ("section", "key", "too_long"),
    [
        ("healthcheck", "interval", "61m"),
        ("healthcheck", "timeout", 3601),
        ("healthcheck", "start_period", "2h"),
        ("update", "health_timeout", "3601s"),
        ("update", "min_healthy_time", "1.5h"),
    ],
)
def test_durations_have_a_maximum(section: str, key: str, too_long: Any) -> None:
    body: dict[str, Any] = {key: too_long}
    if section == "healthcheck":
        body["test"] = "true"

    problem = one_problem(web(**{section: body}))

    assert problem.startswith(f"{WEB}:{section}:{key}: at most 3600s"), problem
    # The maximum itself is fine.
    body[key] = "1h"
    load_service(web(**{section: body}), "web")


def test_a_start_period_below_docker_s_minimum_is_refused() -> None:
    problem = one_problem(web(healthcheck={"test": "true", "start_period": "0.5ms"}))

    assert problem.startswith(f"{WEB}:healthcheck:start_period: must be 0 or at least 1ms")


# --- owner and group -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-5, "-5", -1, 2**32 - 1, 2**70, True, 1.5, "a b", "x\n", ""])
@pytest.mark.parametrize("field", ["owner", "group"])
def test_bad_owners_and_groups_are_refused(field: str, value: Any) -> None:
    pillar = web(config=config(**{"a": {"contents": "x", field: value}}))

    problem = one_problem(pillar)

    assert problem.startswith(f"{WEB}:config:files:a:{field}: "), problem


@pytest.mark.parametrize("value", [0, 101, "101", "www-data", "_apt", "nginx"])
def test_good_owners_pass(value: Any) -> None:
    spec = load_service(web(config=config(a={"contents": "x", "owner": value})), "web")

    assert spec.config is not None
    assert spec.config.files["a"].owner == value


# --- paths Docker's bind syntax cannot carry -------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"config": {**config(), "path": "/etc/a:b"}}, "config:path", "cannot contain ':'"),
        ({"config": {**config(), "path": "/etc/a\nb"}}, "config:path", "control characters"),
        (
            {"data": [{"host": "/srv/dockerops/a:b", "container": "/data"}]},
            "data:0:host",
            "cannot contain ':'",
        ),
        (
            {"data": [{"host": "/srv/dockerops/a", "container": "/data:ro"}]},
            "data:0:container",
            "cannot contain ':'",
        ),
        (
            {"data": [{"host": "/srv/dockerops/a\tb", "container": "/data"}]},
            "data:0:host",
            "control characters",
        ),
        (
            {"data": [{"host": "/srv/dockerops/" + "a" * 256, "container": "/data"}]},
            "data:0:host",
            "longer than 255 bytes",
        ),
        (
            {"data": [{"host": "/srv/dockerops/" + "a/" * 600, "container": "/data"}]},
            "data:0:host",
            "longer than 1024 bytes",
        ),
        (
            {"config": {**config(), "root": "/srv/dockerops/web:x"}},
            "config:root",
            "cannot contain ':'",
        ),
    ],
)
def test_paths_docker_cannot_bind_are_refused(
    fields: dict[str, Any], path: str, message: str
) -> None:
    problem = one_problem(web(**fields))

    assert problem.startswith(f"{WEB}:{path}: "), problem
    assert message in problem, problem


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a" * 300, "each component at most 255"),
        ("d/" + "é" * 128, "each component at most 255"),  # 256 bytes in UTF-8
        ("/".join(["d" * 200] * 6), "at most 1024 bytes"),
        ("a\nb", "control characters"),
        ("a\x7fb", "control characters"),
    ],
)
def test_config_file_names_are_bounded(name: str, message: str) -> None:
    problem = one_problem(web(config=config(**{name: {"contents": "x"}})))

    assert problem.startswith(f"{WEB}:config:files: "), problem
    assert message in problem, problem


def test_a_255_byte_file_name_passes() -> None:
    spec = load_service(web(config=config(**{"a" * 255: {"contents": "x"}})), "web")

    assert spec.config is not None
    assert list(spec.config.files) == ["a" * 255]


# --- env and secrets -------------------------------------------------------------------------


def test_every_bad_env_name_is_reported() -> None:
    problem = one_problem(web(env={"GOOD": "1", "bad-one": "x", "2BAD": "y", "AL\nSO": "z"}))

    assert problem.startswith(f"{WEB}:env: "), problem
    for name in ("'bad-one'", "'2BAD'", "'AL\\nSO'"):
        assert name in problem, problem
    assert "GOOD" not in problem


@pytest.mark.parametrize("field", ["env", "secrets"])
@pytest.mark.parametrize("char", ["\x00", "\x01", "\r", "\x1b", "\x7f", "\x0b"])
def test_control_characters_in_values_are_refused(field: str, char: str) -> None:
    problem = one_problem(web(**{field: {"TOKEN": SECRET + char + SECRET}}))

    assert problem.startswith(f"{WEB}:{field}: "), problem
    assert "TOKEN: values cannot contain control characters" in problem
    assert SECRET not in problem
    assert repr(char)[1:-1] not in problem


@pytest.mark.parametrize("field", ["env", "secrets"])
def test_newlines_and_tabs_in_values_pass(field: str) -> None:
    value = f"-----BEGIN KEY-----\n\t{SECRET}\n-----END KEY-----\n"

    spec = load_service(web(**{field: {"TOKEN": value}}), "web")

    assert spec.all_env["TOKEN"] == value


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), 10**5000], ids=["nan", "inf", "huge"]
)
def test_values_that_cannot_be_printed_sanely_are_refused(value: Any) -> None:
    problem = one_problem(web(env={"N": value}))

    assert problem.startswith(f"{WEB}:env: N: "), problem


@pytest.mark.parametrize(
    "fields",
    [
        {"command": "echo a\x00b"},
        {"command": ["echo", "a\x00b"]},
        {"healthcheck": {"test": "true\x00"}},
        {"healthcheck": {"test": ["CMD", "tr\x00ue"]}},
    ],
)
def test_nul_in_exec_arguments_is_refused(fields: dict[str, Any]) -> None:
    problem = one_problem(web(**fields))

    assert "cannot contain NUL" in problem, problem


def test_oversized_image_names_are_refused() -> None:
    problem = one_problem(web(image="a" * 256))

    assert problem.startswith(f"{WEB}:image: not a valid image repository reference")


def test_restart_counts_stay_in_range() -> None:
    problem = one_problem(web(restart_policy="on-failure:99999999999"))

    assert problem.startswith(f"{WEB}:restart_policy: ")
