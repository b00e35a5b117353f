"""The formula with malformed ``dockerops`` pillar: one failing state that names the
pillar path, never a Jinja traceback; random pillar never breaks its rendering."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import docker
import pytest
import yaml
from hypothesis import given, seed
from hypothesis import strategies as st
from salt.exceptions import SaltInvocationError

from tests.support.fuzz import SEED, fuzz_settings, pillars

pytestmark = pytest.mark.docker

INVALID = "dockerops-pillar-invalid"


@pytest.fixture(autouse=True)
def no_pillar_from_other_tests(salt: Any) -> None:
    """show_sls lays ``pillar=`` over the compiled pillar, which other tests set."""
    salt.set_pillar({})


def rendered(salt: Any, sls: str, pillar: dict[str, Any]) -> Any:
    return salt.modules.state.show_sls(sls, pillar=pillar)


@pytest.mark.parametrize("sls", ["dockerops.services", "dockerops.clean", "dockerops"])
@pytest.mark.parametrize(
    ("pillar", "problem"),
    [
        ({"dockerops": "oops"}, "dockerops: expected a mapping, got a string"),
        ({"dockerops": ["a"]}, "dockerops: expected a mapping, got a list"),
        ({"dockerops": {"services": {"x": None}}}, "dockerops:services:x: expected a mapping"),
        ({"dockerops": {"services": {"x": "web"}}}, "dockerops:services:x: expected a mapping"),
        ({"dockerops": {"services": ["web"]}}, "dockerops:services: expected a mapping"),
        ({"dockerops": {"services": "web"}}, "dockerops:services: expected a mapping"),
        ({"dockerops": {"services": {1: {"image": "x"}}}}, "service names are strings"),
        # A character YAML refuses raw (DEL), quoted into the comment.
        ({"dockerops": {"services": {"\x7f": []}}}, "dockerops:services:\x7f: expected a mapping"),
    ],
)
def test_malformed_pillar_renders_one_failing_state(
    salt: Any, sls: str, pillar: dict[str, Any], problem: str
) -> None:
    states = rendered(salt, sls, pillar)

    assert isinstance(states, dict), states  # a list is Salt's render errors
    assert list(states) == [INVALID], states
    args = {
        k: v for item in states[INVALID]["test"] if isinstance(item, dict) for k, v in item.items()
    }
    assert problem in args["comment"], args
    assert args["result"] is False and args["allow_test_mode_failure"] is True


@pytest.mark.parametrize("test", [False, True])
def test_state_apply_with_malformed_pillar_fails_with_the_pillar_path(
    salt: Any, test: bool
) -> None:
    ret = salt.modules.state.sls(
        "dockerops.services", pillar={"dockerops": {"services": {"x": None}}}, test=test
    )

    assert not ret.errors, ret.errors
    (only,) = list(ret)
    assert only.result is False
    assert "invalid dockerops pillar:\n  dockerops:services:x: expected a mapping" in only.comment


def test_service_names_never_change_the_shape_of_the_sls(salt: Any) -> None:
    injected = "x:\n  cmd.run:\n    - name: touch /tmp/pwned\ny"
    states = rendered(
        salt, "dockerops.services", {"dockerops": {"services": {injected: {"image": "x"}}}}
    )

    assert list(states) == [f"dockerops-service-{injected}-running"], states
    assert all("cmd" not in body for body in states.values())
    # Nor do characters YAML refuses raw: they are escaped, the name kept whole.
    for name in ("w\x7feb", "w\x85eb", "w\u2028eb"):
        states = rendered(salt, "dockerops.services", {"dockerops": {"services": {name: {}}}})
        assert list(states) == [f"dockerops-service-{name}-running"], states


def test_no_services_render_nothing(salt: Any) -> None:
    for pillar in ({}, {"dockerops": None}, {"dockerops": {"services": None}}):
        assert rendered(salt, "dockerops.services", pillar) == {}


def containers_of(client: docker.DockerClient, pillar: dict[str, Any]) -> list[str]:
    """Containers of any service the pillar names (other tests run services too)."""
    raw = pillar.get("dockerops")
    services = raw.get("services") if isinstance(raw, dict) else None
    names = {"web", *(n for n in services or {} if isinstance(n, str) and n)}
    if not isinstance(services, dict):
        names = {"web"}
    found = []
    for name in sorted(names):
        label = f"io.dockerops.service={name}"
        with contextlib.suppress(docker.errors.APIError):
            found += [
                c.id
                for c in client.containers.list(
                    ignore_removed=True, all=True, filters={"label": label}
                )
            ]
    return sorted(found)


@seed(SEED)
@fuzz_settings(60)
@given(pillar=pillars, sls=st.sampled_from(["dockerops.services", "dockerops.clean"]))
def test_the_formula_renders_any_pillar(salt: Any, pillar: dict[str, Any], sls: str) -> None:
    states = rendered(salt, sls, pillar)

    assert isinstance(states, dict), states
    for state_id, body in states.items():
        modules = [key for key in body if not key.startswith("__")]
        if state_id == INVALID:
            assert modules == ["test"]
            continue
        assert modules == ["dockerops"], (state_id, body)


@seed(SEED)
@fuzz_settings(int(os.environ.get("DOCKEROPS_FUZZ_APPLY_EXAMPLES", 4)))
@given(pillar=pillars)
def test_invalid_random_pillar_touches_no_container(
    salt: Any, docker_client: docker.DockerClient, pillar: dict[str, Any]
) -> None:
    from dockerops.errors import SpecError
    from dockerops.spec import load_services

    try:
        load_services(pillar)
    except SpecError:
        pass
    else:
        return  # a valid random pillar would pull its (unreachable) images
    try:
        yaml.safe_dump(pillar)
    except ValueError:  # an int too long to print cannot come from a pillar file
        return
    before = containers_of(docker_client, pillar)
    salt.set_pillar(pillar)
    with pytest.raises(SaltInvocationError):
        salt.modules.dockerops.apply()

    assert containers_of(docker_client, pillar) == before
