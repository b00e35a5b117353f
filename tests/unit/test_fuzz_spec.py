"""Random pillar shapes and values at the spec loader: a SpecError or a spec, never a traceback.

Bounded and seeded for ``make test``; ``DOCKEROPS_FUZZ_EXAMPLES=20000`` runs longer.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, seed

from dockerops.configimage import config_tag
from dockerops.configmode import image_spec, uses_image
from dockerops.errors import SpecError
from dockerops.replicas import desired_replicas
from dockerops.spec import PILLAR_KEY, ServiceSpec, load_service, load_services
from tests.support.fuzz import SEED, fuzz_settings, pillars

SECRET = "s3cr3t-t0ken-value"
# The base pillar's registry and etcd passwords (tests/support/fuzz.py).
PASSWORDS = ("r3g-s3cret-pw", "3tcd-s3cret-pw")


def check_spec(spec: ServiceSpec) -> None:
    """What is built from a valid spec builds (a spec that loads is usable)."""
    version = "0123456789abcdef" if spec.config is not None else None
    for replica in desired_replicas(spec, version, spec.slots):
        replica.docker_labels()
        replica.docker_healthcheck()
        replica.create_call()
    assert spec.slots >= spec.replicas
    if uses_image(spec):
        # The config image's tag is valid, or refused naming the pillar path.
        try:
            image_spec(spec, config_tag(spec.tag, spec.env_short, "0123456789abcdef"))
        except SpecError as err:
            check_error(err)


def check_error(err: SpecError) -> None:
    assert err.problems
    for problem in err.problems:
        assert problem.startswith((f"{PILLAR_KEY}:", f"{PILLAR_KEY} ", "argument:", "name:")), (
            problem
        )
        assert SECRET not in problem, problem
        assert not any(password in problem for password in PASSWORDS), problem


@seed(SEED)
@fuzz_settings(400)
@given(pillars)
def test_the_spec_loader_takes_any_pillar(pillar: dict[str, Any]) -> None:
    try:
        specs = load_services(pillar)
    except SpecError as err:
        check_error(err)
        specs = []
    for spec in specs:
        check_spec(spec)
    raw = pillar.get(PILLAR_KEY)
    services = raw.get("services") if isinstance(raw, dict) else None
    names = list(services) if isinstance(services, dict) else []
    for name in [*names, "web", ""]:
        if not isinstance(name, str):
            continue
        try:
            check_spec(load_service(pillar, name))
        except SpecError as err:
            check_error(err)
