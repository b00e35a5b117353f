"""Fleet rollouts: planning batches over minions, and the capacity math (pure).

The runner (``_runners/dockerops.py``) does the I/O: it asks minions for their
replicas, runs the host-local rollout on one batch of minions at a time, and
checks fleet-wide healthy capacity between batches. Everything it decides
(batches, the healthy floor, whether the settings can make progress, the
failure budget) is computed here, so it can be tested with tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SpecError


def parse_amount(value: Any, total: int, what: str) -> int:
    """``3`` or ``"25%"`` (of ``total``, rounded up) -> a count."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            percent = float(text[:-1])
            if not 0 <= percent <= 100:
                raise ValueError
            return math.ceil(total * percent / 100)
        number = int(text)
        if number < 0:
            raise ValueError
        return number
    except ValueError:
        raise SpecError([f"{what}: expected a count or a percentage, got {value!r}"]) from None


@dataclass(frozen=True)
class FleetPlan:
    """Which minions roll in which batch, and the capacity the fleet must keep."""

    service: str
    batches: tuple[tuple[str, ...], ...]
    replicas: dict[str, int]
    floor: int
    max_failures: int
    canary: int
    worst_case_healthy: int
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(self.replicas.values())

    def describe(self) -> list[str]:
        lines = [
            f"{self.service}: {len(self.replicas)} minions, {self.total} replicas, healthy "
            f"floor {self.floor}, worst case during a batch {self.worst_case_healthy}, "
            f"failure budget {self.max_failures}"
        ]
        for number, batch in enumerate(self.batches, 1):
            label = "canary" if number == 1 and self.canary else f"batch {number}"
            lines.append(f"{label}: {', '.join(batch)}")
        lines.extend(self.notes)
        return lines


def plan_fleet(
    service: str,
    replicas: dict[str, int],
    batch: Any = 1,
    min_healthy: Any = "75%",
    canary: Any = 0,
    max_failures: Any = 0,
    loss_per_minion: dict[str, int] | None = None,
) -> FleetPlan:
    """Plan a rollout of ``service`` over ``replicas`` (minion -> replica count).

    ``loss_per_minion``: how many replicas a minion's own rollout may take down
    at once (0 for start-first, ``parallelism`` for stop-first). Refuses, with
    the reason, settings that cannot make progress: no minions, a floor above
    the fleet, or a batch whose worst case goes below the floor.
    """
    minions = sorted(replicas)
    if not minions:
        raise SpecError([f"{service}: no targeted minion runs it"])
    total = sum(replicas.values())
    size = parse_amount(batch, len(minions), "batch")
    if size < 1:
        raise SpecError(["batch: at least one minion per batch"])
    floor = parse_amount(min_healthy, total, "min_healthy")
    canaries = parse_amount(canary, len(minions), "canary")
    budget = parse_amount(max_failures, len(minions), "max_failures")
    if floor > total:
        raise SpecError([f"min_healthy: a floor of {floor} is more than the {total} replicas"])
    if canaries >= len(minions) and canaries:
        raise SpecError(
            [f"canary: {canaries} canaries leave no minion for the rest of the rollout"]
        )
    order = list(minions)
    batches: list[tuple[str, ...]] = []
    if canaries:
        batches.append(tuple(order[:canaries]))
        order = order[canaries:]
    batches.extend(tuple(order[i : i + size]) for i in range(0, len(order), size))
    losses = loss_per_minion or {}
    worst = total - max(sum(min(losses.get(m, 0), replicas[m]) for m in b) for b in batches)
    if worst < floor:
        raise SpecError(
            [
                f"capacity: a batch can take the fleet to {worst} healthy replicas, below "
                f"the floor of {floor} ({min_healthy} of {total}); use smaller batches, "
                "start-first updates or a lower min_healthy"
            ]
        )
    notes = []
    if budget >= len(minions):
        notes.append(f"note: a failure budget of {budget} never stops this rollout")
    return FleetPlan(
        service=service,
        batches=tuple(batches),
        replicas=dict(replicas),
        floor=floor,
        max_failures=budget,
        canary=canaries,
        worst_case_healthy=worst,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class RolloutOptions:
    """What ``salt-run dockerops.rolling_update`` was asked to do."""

    service: str
    tgt: Any
    tgt_type: str = "glob"
    batch: Any = 1
    min_healthy: Any = "75%"
    canary: Any = 0
    max_failures: Any = 0
    pause: float = 0.0
    rollback: bool = True
    tag: str | None = None
    test: bool = False
    timeout: int = 300

    def module_args(self, tag: str | None = None) -> list[str]:
        """Arguments of the minions' ``dockerops.rolling_update`` (``tag``: override)."""
        tag = tag if tag is not None else self.tag
        return [self.service] + ([f"tag={tag}"] if tag is not None else [])


def replicas_running(status: dict[str, Any], service: str) -> dict[str, int]:
    """Replicas per minion from ``dockerops.status <service>`` returns (minions running it)."""
    return {
        minion: len(ret[service])
        for minion, ret in status.items()
        if isinstance(ret, dict) and ret.get(service)
    }


def losses(previews: dict[str, Any], replicas: dict[str, int]) -> dict[str, int]:
    """Replicas each minion's own rollout may take down at once.

    ``previews`` are the minions' ``dockerops.rolling_update ... test=True``
    returns, which carry the service's ``update`` settings: start-first loses
    none, stop-first ``parallelism``. A minion whose preview is missing is
    assumed to lose all its replicas (the safe side of the capacity math).
    """
    out = {}
    for minion, count in replicas.items():
        preview = previews.get(minion)
        settings = preview.get("update") if isinstance(preview, dict) else None
        if not isinstance(settings, dict):
            out[minion] = count
        elif settings.get("order") == "stop-first":
            out[minion] = min(count, int(settings.get("parallelism") or 1))
        else:
            out[minion] = 0
    return out


def stop_reason(plan: FleetPlan, failures: int, fleet_healthy: int, before: str) -> str | None:
    """Why the rollout must stop before ``before`` (a batch), or None to go on."""
    if failures > plan.max_failures:
        return (
            f"{failures} failed minion(s), over the failure budget of {plan.max_failures}: "
            f"stopped before {before}"
        )
    if fleet_healthy < plan.floor:
        return (
            f"fleet has {fleet_healthy} healthy replicas, below the floor of {plan.floor}: "
            f"stopped before {before}"
        )
    return None


def judge_returns(
    returns: dict[str, Any], batch: Sequence[str], timeout: float, took: float
) -> dict[str, dict[str, Any]]:
    """Each batch minion's result from LocalClient's ``full_return`` returns.

    A minion that did not answer (missing, ``False`` or ``{"failed": True}``)
    has failed. A return passes when its retcode is 0 and: a dict with
    ``result`` is not ``result: False``; a state run (a dict of states) has no
    failed state (their comments are the reason); anything else (a render
    error's list of messages, an exception's string) is a failure.
    """
    out: dict[str, dict[str, Any]] = {}
    for minion in batch:
        ret = returns.get(minion)
        if not isinstance(ret, dict) or ret.get("failed") or "ret" not in ret:
            out[minion] = {
                "result": False,
                "comment": f"no answer within {timeout:g}s",
                "duration": took,
            }
            continue
        data = ret["ret"]
        ok = ret.get("retcode", 0) == 0
        comment = None
        if isinstance(data, dict) and "result" in data:
            ok = ok and data["result"] is not False
        elif isinstance(data, dict):
            failed = [
                s.get("comment") if isinstance(s, dict) else s
                for s in data.values()
                if not isinstance(s, dict) or s.get("result") is False
            ]
            ok = ok and not failed
            comment = "; ".join(str(c) for c in failed)[:500] or None
        else:
            errors = data if isinstance(data, list) else [data]
            out[minion] = {
                "result": False,
                "comment": "; ".join(str(e) for e in errors)[:500],
                "duration": took,
            }
            continue
        out[minion] = {"result": ok, "return": data, "duration": took}
        if comment:
            out[minion]["comment"] = comment
    return out


def healthy_replicas(status: dict[str, Any], service: str) -> dict[str, int]:
    """Healthy replicas per minion from ``dockerops.status <service>`` returns.

    A replica counts when running and healthy (or running without a healthcheck).
    Minions whose return is not a status (an error string) count 0.
    """
    out = {}
    for minion, ret in status.items():
        rows = ret.get(service, []) if isinstance(ret, dict) else []
        out[minion] = sum(
            1
            for row in rows
            if row.get("state") == "running" and row.get("health") in ("healthy", None)
        )
    return out
