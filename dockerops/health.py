"""When a container counts as healthy, and how long it must prove itself.

Pure apart from the one image inspect :func:`detection_time` makes: the
:class:`HealthWatch` state machine judges successive inspects, and the time it
is given comes from a :class:`Clock` the caller keeps (a simulated one in
tests), so the rollout engine's timing can be asserted over simulated time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SpecError
from .spec import PILLAR_KEY, ServiceSpec

if TYPE_CHECKING:
    from .host import DockerHost

# Seconds between inspects while waiting on a container's health.
POLL = 0.1
# Docker's defaults for a HEALTHCHECK that leaves them unset.
_DEFAULT_INTERVAL = 30.0
_DEFAULT_RETRIES = 3
# Without a healthcheck, a replacement must at least keep running this long,
# so an instant crash is not taken for success.
NO_HEALTHCHECK_SETTLE = 1.0


@dataclass
class Clock:
    """Time for the health waits and the rollout loop (a fake one in tests)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    reason: str
    seconds: float


@dataclass
class HealthWatch:
    """Judges one container's successive inspects: does it count as healthy yet?

    It counts once Docker reports it ``healthy`` (the image's HEALTHCHECK or the
    spec's), or, without a healthcheck, running, and it then stays so, without
    a restart, for ``min_healthy_time`` (at least :data:`NO_HEALTHCHECK_SETTLE`
    without a healthcheck). It fails on a restart, an exit, ``unhealthy``,
    losing health, or ``timeout`` seconds after ``started`` without being
    healthy. Pure: the caller inspects and keeps the time.
    """

    name: str
    timeout: float
    min_healthy_time: float
    started: float
    restarts: int | None = None
    healthy_since: float | None = None

    @property
    def healthy(self) -> bool:
        """Whether Docker reports it healthy (it may still be proving itself)."""
        return self.healthy_since is not None

    def observe(self, details: dict[str, Any], now: float) -> HealthReport | None:
        """The verdict from one inspect taken at ``now``; None: undecided yet."""
        state = details.get("State") or {}
        took = now - self.started
        count = int(details.get("RestartCount") or 0)
        if self.restarts is None:
            self.restarts = count
        if count > self.restarts or state.get("Restarting"):
            return HealthReport(False, f"{self.name} restarted (crash loop)", took)
        if state.get("Status") in ("exited", "dead"):
            return HealthReport(
                False, f"{self.name} exited with code {state.get('ExitCode')}", took
            )
        has_check = has_healthcheck(details)
        health = (state.get("Health") or {}).get("Status") if has_check else None
        if health == "unhealthy":
            return HealthReport(False, f"{self.name} became unhealthy", took)
        if state.get("Status") == "running" and (not has_check or health == "healthy"):
            if self.healthy_since is None:
                self.healthy_since = now
            settle = (
                self.min_healthy_time
                if has_check
                else max(self.min_healthy_time, NO_HEALTHCHECK_SETTLE)
            )
            if now - self.healthy_since >= settle:
                return HealthReport(True, f"{self.name} healthy", took)
            return None
        if self.healthy_since is not None:
            return HealthReport(False, f"{self.name} stopped being healthy", took)
        if took > self.timeout:
            what = f"health: {health}" if has_check else f"state: {state.get('Status')}"
            return HealthReport(
                False, f"{self.name} not healthy within {self.timeout:g}s ({what})", took
            )
        return None


def has_healthcheck(details: dict[str, Any]) -> bool:
    """Whether a container's inspect shows a healthcheck (not ``NONE``)."""
    test = ((details.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def detection_time(host: DockerHost, spec: ServiceSpec) -> float | None:
    """Seconds the effective healthcheck needs to notice a failure, or None without one."""
    if spec.healthcheck is not None:
        return spec.healthcheck.interval * spec.healthcheck.retries
    details = host.inspect_image(spec.image_ref)
    check = (details.get("Config") or {}).get("Healthcheck") or {}
    test = check.get("Test") or []
    if not test or test[0] == "NONE":
        return None
    interval = (check.get("Interval") or 0) / 1e9 or _DEFAULT_INTERVAL
    retries = check.get("Retries") or _DEFAULT_RETRIES
    return float(interval * retries)


def min_healthy_time(host: DockerHost, spec: ServiceSpec) -> float:
    """``update.min_healthy_time``, defaulted and checked against the healthcheck."""
    detect = detection_time(host, spec)
    wanted = spec.update.min_healthy_time
    if wanted is None:
        return detect if detect is not None else NO_HEALTHCHECK_SETTLE
    if detect is not None and wanted < detect:
        raise SpecError(
            [
                f"{PILLAR_KEY}:services:{spec.name}:update:min_healthy_time: {wanted:g}s is "
                f"shorter than the healthcheck needs to notice a failure ({detect:g}s = "
                "interval x retries): a broken version would be reported healthy"
            ]
        )
    return wanted
