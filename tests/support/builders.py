"""Pillar builders and result readers shared by the unit tests of spec and plan.

Plain functions, not fixtures: parametrize tables and helpers call them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.plan import Action
from dockerops.replicas import ActualReplica
from dockerops.spec import ServiceSpec, load_service

# The pillar path of the service ``web_pillar`` describes.
WEB = "dockerops:services:web"

# The types of tests/unit/conftest.py's ``make_spec`` and ``actual`` fixtures.
MakeSpec = Callable[..., ServiceSpec]
MakeActual = Callable[..., ActualReplica]


def pillar(services: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """``{"dockerops": {...top, "services": services}}``."""
    return {"dockerops": {**top, "services": services or {}}}


def web_pillar(**fields: Any) -> dict[str, Any]:
    """A pillar with one service ``web`` (image ``web``) plus ``fields``."""
    return pillar({"web": {"image": "web", **fields}})


def config_dir(**fields: Any) -> dict[str, Any]:
    """A valid config directory (``/etc/web``, one inline file) with ``fields`` on top."""
    return {"path": "/etc/web", "files": {"web.conf": {"contents": "x"}}, **fields}


def port(container: int, host: int, **fields: Any) -> dict[str, Any]:
    """A published port: ``container`` on host port ``host`` (the first slot's)."""
    return {"container": container, "host": host, **fields}


def problems_of(pillar_data: dict[str, Any], name: str = "web", **kwargs: Any) -> list[str]:
    """The problems ``load_service`` reports; each must be in the exception's text too."""
    with pytest.raises(SpecError) as caught:
        load_service(pillar_data, name, **kwargs)
    # The exception text (what Salt shows) carries every problem.
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def one_problem(pillar_data: dict[str, Any], name: str = "web") -> str:
    """The single problem ``load_service`` reports."""
    problems = problems_of(pillar_data, name)
    assert len(problems) == 1, problems
    return problems[0]


def kinds_and_names(actions: list[Action]) -> list[tuple[str, str]]:
    """A plan as ``[(kind, container name), ...]``, in order."""
    return [(action.kind, action.name) for action in actions]
