"""Converge one host's containers to the specs: plan, then act, then verify."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DockerError
from .host import DockerHost
from .plan import Action, plan_service
from .replicas import desired_replicas
from .spec import ServiceSpec


@dataclass
class ServiceResult:
    """What converging one service did (or, under test, would do)."""

    service: str
    replicas: int
    actions: list[Action]
    result: bool | None = True
    errors: list[str] = field(default_factory=list)

    @property
    def changes(self) -> dict[str, Any]:
        return {action.name: action.describe() for action in self.actions}

    @property
    def comment(self) -> str:
        if self.errors:
            return f"Service {self.service} failed: " + "; ".join(self.errors)
        if not self.actions:
            return f"Service {self.service} is in the desired state ({self.replicas} replicas)"
        verbs = ", ".join(f"{a.kind} {a.name}" for a in self.actions)
        if self.result is None:
            return f"Service {self.service} would change: {verbs}"
        return f"Service {self.service} converged: {verbs}"


def plan(host: DockerHost, spec: ServiceSpec) -> list[Action]:
    """The actions that would converge ``spec`` on ``host`` (reads only)."""
    return plan_service(desired_replicas(spec), host.managed(spec.name))


def converge(host: DockerHost, spec: ServiceSpec, test: bool = False) -> ServiceResult:
    """Make ``host`` run ``spec``. Under ``test`` nothing is touched.

    Actions run one at a time; on the first failure the rest are skipped and the
    result says what was done and what failed.
    """
    actions = plan(host, spec)
    outcome = ServiceResult(spec.name, spec.replicas, actions)
    if not actions:
        return outcome
    if test:
        outcome.result = None
        return outcome
    done: list[Action] = []
    for action in actions:
        try:
            _execute(host, action)
        except DockerError as err:
            outcome.errors.append(str(err))
            outcome.result = False
            break
        done.append(action)
    outcome.actions = done if outcome.errors else actions
    if not outcome.errors:
        left = plan(host, spec)
        if left:
            outcome.result = False
            outcome.errors.append(
                "still differs after converging: " + ", ".join(f"{a.kind} {a.name}" for a in left)
            )
    return outcome


def remove_service(host: DockerHost, service: str, test: bool = False) -> ServiceResult:
    """Remove every container of ``service`` from ``host``."""
    actions = plan_service([], host.managed(service))
    outcome = ServiceResult(service, 0, actions, result=None if test and actions else True)
    if test:
        return outcome
    for action in actions:
        try:
            _execute(host, action)
        except DockerError as err:
            outcome.errors.append(str(err))
            outcome.result = False
    return outcome


def _execute(host: DockerHost, action: Action) -> None:
    if action.kind == "remove":
        assert action.actual is not None
        host.remove(action.actual.id, action.name)
    elif action.kind == "create":
        assert action.desired is not None
        host.create(action.desired)
    elif action.kind == "recreate":
        assert action.desired is not None and action.actual is not None
        host.remove(action.actual.id, action.name)
        host.create(action.desired)
    elif action.kind == "start":
        assert action.actual is not None
        host.start(action.actual.id, action.name)
