"""Fleet rollouts: the engine the runner drives (pure: no Salt, no I/O).

The runner (``_runners/dockerops.py``) only makes ``LocalClient`` calls and
prints the lines this engine gives it. A fleet run goes through these states:

1. **plan**: from the targeted minions' ``dockerops.status`` (and, for a
   rolling update, their ``rolling_update test=True`` previews), the batches,
   the healthy floor and the failure budget (:func:`plan_fleet`; bad settings
   raise :class:`~dockerops.errors.ArgumentError`). :meth:`FleetRollout.plan`,
   :meth:`FleetApply.plan`.
2. for each batch (:meth:`FleetRun.batches`):

   a. **which minions to ask** (:meth:`FleetRun.to_check`): the batch's
      own, those whose healthy count no return has told, and a refresh of as
      many others as the batch has, round the fleet (it grows with the batch,
      not the fleet);
   b. **may this batch start, given their status** (:meth:`FleetRun.may_start`):
      minions asked that stopped answering count as failed, then the failure
      budget and the fleet's healthy replicas (each minion as last known: the
      plan's status, a check, or its own last return; a running total, so no
      step walks the fleet) minus what this batch may take down, against the
      floor;
   c. **record these returns** (:meth:`FleetRun.record`): each minion's
      result (and its healthy replicas, when its return carries them), a
      minion that did not answer in time counting as failed, and the budget
      again.
3. after a stop, the **rollback groups** (:meth:`FleetRollout.rollback_groups`,
   recorded by :meth:`FleetRollout.record_rollback`): the minions already
   updated, in the rollout's batch size, one call per earlier version.
4. the **summary** (:meth:`FleetRun.summary`): every targeted minion, with
   where it ended up, or "not started".

What a minion's ``dockerops.rolling_update`` returns is one typed value,
:class:`HostRollout`, built by the minion and read back here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ArgumentError

# Entry states in the summary.
NOT_STARTED = "not started"
NO_ANSWER = "no answer"
UPDATED = "updated"
FAILED = "failed"
ROLLED_BACK = "rolled back"
ROLLBACK_FAILED = "rollback failed"
NOT_ROLLED_BACK = "not rolled back"
APPLIED = "applied"
TESTED = "tested"
NOT_RUNNING = "does not run the service"


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
        raise ArgumentError([f"{what}: expected a count or a percentage, got {value!r}"]) from None


def _seconds(value: Any, what: str, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        kind = "a positive" if positive else "a non-negative"
        raise ArgumentError([f"{what}: expected {kind} number of seconds, got {value!r}"])
    return number


def _flag(value: Any, what: str) -> bool:
    """A boolean argument as Salt's CLI parses it (``True``, ``false``, ``1``...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", "none"):
        return False
    raise ArgumentError([f"{what}: expected True or False, got {value!r}"])


def _amount_problems(kwargs: dict[str, Any], names: Sequence[str]) -> list[str]:
    """What is wrong with the counts and percentages among ``kwargs``, before
    anything is asked of a minion (the plan checks them against the fleet)."""
    problems = []
    for name in names:
        if kwargs.get(name) is not None:
            try:
                parse_amount(kwargs[name], 1, name)
            except ArgumentError as err:
                problems.extend(err.problems)
    return problems


# -- what a minion's dockerops.rolling_update returns ----------------------------


def _images(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{what}: expected an image or a list of images, got {value!r}")


def _count_or_none(value: Any) -> int | None:
    """A count a minion returned, or None when it is missing or not a count
    (then it is asked for again, never guessed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _one_or_many(images: tuple[str, ...]) -> str | list[str]:
    return images[0] if len(images) == 1 else list(images)


@dataclass(frozen=True)
class HostRollout:
    """The return of ``dockerops.rolling_update`` on one host.

    The minion builds it and returns :meth:`to_dict`; the runner reads it back
    with :meth:`from_dict`. ``before`` and ``now`` are the images the service
    ran when the call started and when it returned (one, or several mid-way).
    ``healthy``: the service's replicas running and healthy when the call
    returned, counted as :func:`healthy_replicas` counts a status (None: the
    minion did not say; the fleet run then asks its ``dockerops.status``).
    """

    result: bool
    comment: str
    changes: dict[str, Any]
    before: tuple[str, ...]
    to: str
    now: tuple[str, ...]
    duration: float
    order: str
    parallelism: int
    steps: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()
    test: bool = False
    plan: tuple[str, ...] | None = None
    note: str | None = None
    healthy: int | None = None

    @property
    def previous(self) -> str | None:
        """The one image the host ran before, or None when it ran several (or none)."""
        return self.before[0] if len(self.before) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "result": self.result,
            "comment": self.comment,
            "changes": self.changes,
        }
        if self.test:
            out["test"] = True
        out["from"] = _one_or_many(self.before)
        out["to"] = self.to
        out["now"] = _one_or_many(self.now)
        out["duration"] = self.duration
        out["update"] = {"order": self.order, "parallelism": self.parallelism}
        out["steps"] = list(self.steps)
        if self.rolled_back:
            out["rolled_back"] = list(self.rolled_back)
        if self.plan is not None:
            out["plan"] = list(self.plan)
        if self.note:
            out["note"] = self.note
        if self.healthy is not None:
            out["healthy"] = self.healthy
        return out

    @classmethod
    def from_dict(cls, data: Any) -> HostRollout:
        """Read a minion's return; ValueError says what is missing or wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a dict, got {type(data).__name__}")
        try:
            update = data["update"]
            result, to = data["result"], data["to"]
            if not isinstance(result, bool) or not isinstance(to, str):
                raise ValueError(f"result and to: got {result!r} and {to!r}")
            if not isinstance(update, dict) or not isinstance(update.get("parallelism"), int):
                raise ValueError(f"update: got {update!r}")
            plan = data.get("plan")
            return cls(
                result=result,
                comment=str(data.get("comment") or ""),
                changes=dict(data.get("changes") or {}),
                before=_images(data["from"], "from"),
                to=to,
                # A minion of an earlier release does not say.
                now=_images(data.get("now", []), "now"),
                duration=float(data.get("duration") or 0),
                order=str(update.get("order")),
                parallelism=update["parallelism"],
                steps=tuple(str(s) for s in data.get("steps") or ()),
                rolled_back=tuple(str(s) for s in data.get("rolled_back") or ()),
                test=data.get("test") is True,
                plan=None if plan is None else tuple(str(line) for line in plan),
                note=data.get("note"),
                healthy=_count_or_none(data.get("healthy")),
            )
        except KeyError as err:
            raise ValueError(f"{err.args[0]} is missing") from None
        except (TypeError, ValueError) as err:
            raise ValueError(str(err)) from None

    def loss(self, replicas: int) -> int:
        """Replicas this host's rollout may take down at once: start-first
        none, stop-first ``parallelism``."""
        return min(replicas, self.parallelism) if self.order == "stop-first" else 0


def read_host_rollout(data: Any) -> HostRollout | None:
    """A minion's return as a :class:`HostRollout` (one already read is
    returned as it is), or None if it is not one."""
    if isinstance(data, HostRollout):
        return data
    try:
        return HostRollout.from_dict(data)
    except ValueError:
        return None


# -- the plan --------------------------------------------------------------------


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
    # Replicas each minion's own rollout may take down at once.
    losses: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.replicas.values())

    def batch_name(self, number: int) -> str:
        return "canary" if number == 1 and self.canary else f"batch {number}"

    def describe(self) -> list[str]:
        lines = [
            f"{self.service}: {len(self.replicas)} minions, {self.total} replicas, healthy "
            f"floor {self.floor}, worst case during a batch {self.worst_case_healthy}, "
            f"failure budget {self.max_failures}"
        ]
        for number, batch in enumerate(self.batches, 1):
            lines.append(f"{self.batch_name(number)}: {', '.join(batch)}")
        lines.extend(self.notes)
        return lines


def plan_batches(minions: Sequence[str], batch: Any = 1, canary: Any = 0) -> list[tuple[str, ...]]:
    """``minions`` (sorted) in batches of ``batch``, the ``canary`` first minions alone first."""
    order = sorted(minions)
    size = parse_amount(batch, len(order), "batch")
    if size < 1:
        raise ArgumentError(["batch: at least one minion per batch"])
    canaries = parse_amount(canary, len(order), "canary")
    if canaries and canaries >= len(order):
        raise ArgumentError(
            [f"canary: {canaries} canaries leave no minion for the rest of the rollout"]
        )
    batches: list[tuple[str, ...]] = []
    if canaries:
        batches.append(tuple(order[:canaries]))
        order = order[canaries:]
    batches.extend(tuple(order[i : i + size]) for i in range(0, len(order), size))
    return batches


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
        raise ArgumentError([f"tgt: no targeted minion runs it (service {service})"])
    total = sum(replicas.values())
    batches = plan_batches(minions, batch, canary)
    floor = parse_amount(min_healthy, total, "min_healthy")
    budget = parse_amount(max_failures, len(minions), "max_failures")
    if floor > total:
        raise ArgumentError([f"min_healthy: a floor of {floor} is more than the {total} replicas"])
    losses = {m: min((loss_per_minion or {}).get(m, 0), replicas[m]) for m in minions}
    worst = total - max(sum(losses[m] for m in b) for b in batches)
    if worst < floor:
        raise ArgumentError(
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
        canary=parse_amount(canary, len(minions), "canary"),
        worst_case_healthy=worst,
        notes=tuple(notes),
        losses=losses,
    )


# How each runner argument that is not a count is read (see _checked).
_ARGUMENT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "pause": lambda v: _seconds(v, "pause"),
    "timeout": lambda v: math.ceil(_seconds(v, "timeout", positive=True)),
    "rollback": lambda v: _flag(v, "rollback"),
    "test": lambda v: _flag(v, "test"),
}


def _checked(kwargs: dict[str, Any], keys: Sequence[str], problems: list[str]) -> dict[str, Any]:
    """The given ``keys`` of ``kwargs``, read by their check; each bad one's
    problem is added to ``problems``."""
    checked: dict[str, Any] = {}
    for key in keys:
        if key in kwargs:
            try:
                checked[key] = _ARGUMENT_CHECKS[key](kwargs[key])
            except ArgumentError as err:
                problems.extend(err.problems)
    return checked


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

    @classmethod
    def from_args(cls, service: Any, tgt: Any, **kwargs: Any) -> RolloutOptions:
        """The runner's arguments, checked (the amounts are checked by the plan)."""
        problems = []
        if not isinstance(service, str) or not service:
            problems.append(f"name: expected a service name, got {service!r}")
        if tgt in (None, "", []):
            problems.append("tgt: expected a target")
        problems.extend(
            _amount_problems(kwargs, ("batch", "min_healthy", "canary", "max_failures"))
        )
        checked = _checked(kwargs, ("pause", "timeout", "rollback", "test"), problems)
        if kwargs.get("tag") is not None:
            checked["tag"] = str(kwargs["tag"])
        if problems:
            raise ArgumentError(problems)
        return cls(service=service, tgt=tgt, **{**kwargs, **checked})

    def module_args(self, tag: str | None = None) -> list[str]:
        """Arguments of the minions' ``dockerops.rolling_update`` (``tag``: override)."""
        tag = tag if tag is not None else self.tag
        return [self.service] + ([f"tag={tag}"] if tag is not None else [])

    def preview_args(self) -> list[str]:
        """Arguments of the minions' ``dockerops.rolling_update ... test=True``."""
        return [*self.module_args(), "test=True"]


@dataclass(frozen=True)
class ApplyOptions:
    """What ``salt-run dockerops.apply`` was asked to do."""

    tgt: Any
    tgt_type: str = "glob"
    batch: Any = 1
    min_healthy: Any = None
    service: str | None = None
    max_failures: Any = 0
    pause: float = 0.0
    test: bool = False
    timeout: int = 600

    @classmethod
    def from_args(cls, tgt: Any, **kwargs: Any) -> ApplyOptions:
        problems = []
        if tgt in (None, "", []):
            problems.append("tgt: expected a target")
        service = kwargs.get("service")
        if service is not None and (not isinstance(service, str) or not service):
            problems.append(f"service: expected a service name, got {service!r}")
        if kwargs.get("min_healthy") is not None and service is None:
            problems.append("min_healthy: needs service (whose replicas it counts)")
        problems.extend(_amount_problems(kwargs, ("batch", "min_healthy", "max_failures")))
        checked = _checked(kwargs, ("pause", "timeout", "test"), problems)
        if problems:
            raise ArgumentError(problems)
        return cls(tgt=tgt, **{**kwargs, **checked})

    def state_args(self) -> list[str]:
        return ["dockerops"] + (["test=True"] if self.test else [])


# -- reading minion returns ------------------------------------------------------


def replicas_running(status: dict[str, Any], service: str) -> dict[str, int]:
    """Replicas per minion from ``dockerops.status <service>`` returns (minions running it)."""
    return {
        minion: len(ret[service])
        for minion, ret in status.items()
        if isinstance(ret, dict) and ret.get(service)
    }


def images_running(status: dict[str, Any], service: str) -> dict[str, tuple[str, ...]]:
    """The images of ``service`` per minion, from ``dockerops.status`` returns."""
    out = {}
    for minion, ret in status.items():
        rows = ret.get(service) if isinstance(ret, dict) else None
        if isinstance(rows, list):
            out[minion] = tuple(sorted({str(r.get("image")) for r in rows if isinstance(r, dict)}))
    return out


def losses(previews: dict[str, Any], replicas: dict[str, int]) -> dict[str, int]:
    """Replicas each minion's own rollout may take down at once.

    ``previews`` are the minions' ``dockerops.rolling_update ... test=True``
    returns (:class:`HostRollout`, as returned or read already), which carry
    the service's ``update`` settings: start-first loses none, stop-first
    ``parallelism``. A minion whose preview is missing or unreadable is
    assumed to lose all its replicas (the safe side of the capacity math).
    """
    out = {}
    for minion, count in replicas.items():
        preview = read_host_rollout(previews.get(minion))
        out[minion] = count if preview is None else preview.loss(count)
    return out


def stop_reason(
    plan: FleetPlan, failures: int, fleet_healthy: int | None, before: str, loss: int = 0
) -> str | None:
    """Why the rollout must stop before ``before`` (a batch), or None to go on.

    ``fleet_healthy``: the fleet's healthy replicas now (None: not checked);
    ``loss``: how many of them the batch may take down at once.
    """
    if failures > plan.max_failures:
        return f"{over_budget(failures, plan.max_failures)}: stopped before {before}"
    if fleet_healthy is not None and fleet_healthy - loss < plan.floor:
        may_lose = f" and {before} may take down {loss}" if loss else ""
        return (
            f"fleet has {fleet_healthy} healthy replicas{may_lose}, below the floor of "
            f"{plan.floor}: stopped before {before}"
        )
    return None


def over_budget(failures: int, budget: int) -> str:
    return f"{failures} failed minion(s), over the failure budget of {budget}"


def judge_returns(
    returns: dict[str, Any], batch: Sequence[str], timeout: float, took: float
) -> dict[str, dict[str, Any]]:
    """Each batch minion's result from LocalClient's ``full_return`` returns.

    A minion that did not answer (missing, ``False`` or ``{"failed": True}``)
    has failed (and ``answered`` is False). A return passes when its retcode
    is 0 and: a dict with ``result`` is not ``result: False``; a state run (a
    dict of states) has no failed state (their comments are the reason);
    anything else (a render error's list of messages, an exception's string)
    is a failure.
    """
    out: dict[str, dict[str, Any]] = {}
    for minion in batch:
        ret = returns.get(minion)
        if not isinstance(ret, dict) or ret.get("failed") or "ret" not in ret:
            out[minion] = {
                "result": False,
                "comment": f"no answer within {timeout:g}s",
                "duration": took,
                "answered": False,
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
    return {minion: healthy_count(ret, service) for minion, ret in status.items()}


def healthy_count(ret: Any, service: str) -> int:
    """Healthy replicas of ``service`` in one minion's ``dockerops.status``
    return (0 when it is not a status)."""
    rows = ret.get(service) if isinstance(ret, dict) else None
    if not isinstance(rows, list):
        return 0
    return sum(
        1
        for row in rows
        if isinstance(row, dict)
        and row.get("state") == "running"
        and row.get("health") in ("healthy", None)
    )


# -- the engine ------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One batch of the run: ``name`` ("canary", "batch 2") and ``label`` ("batch 2/3")."""

    number: int
    name: str
    label: str
    minions: tuple[str, ...]


@dataclass(frozen=True)
class Gate:
    """Whether a batch may start: the minions to run (none when stopped) and what to print."""

    go: bool
    minions: tuple[str, ...]
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Call:
    """A call for the runner to make: ``client.cmd(minions, fun, args)``."""

    fun: str
    args: list[str]


@dataclass(frozen=True)
class RollbackGroup:
    """Minions to roll back together to ``image`` (``lines``: print first)."""

    image: str
    minions: tuple[str, ...]
    call: Call
    lines: tuple[str, ...] = ()


class FleetRun:
    """What both fleet runs share: batches, the health gate, the failure budget,
    and one summary entry per targeted minion.

    The runner calls, in order: :meth:`batches`; for each, when
    :attr:`checks_health`, :meth:`to_check` and ``dockerops.status`` on those
    minions, then :meth:`may_start` with the returns; then :meth:`call` on the
    gate's minions and :meth:`record` with their returns, then waits
    :meth:`pause_after`; then :meth:`rollback_groups` and
    :meth:`record_rollback`; then :meth:`finish` and :meth:`summary`.

    The health gate keeps each planned minion's last known healthy replicas
    (from the plan's status, a status check, or the minion's own return) and
    their running total, so a check asks only what it needs (see
    :meth:`to_check`) and no step walks the whole fleet.
    """

    def __init__(
        self,
        plan: FleetPlan,
        *,
        timeout: float,
        pause: float = 0.0,
        checks_health: bool = True,
        entries: dict[str, dict[str, Any]] | None = None,
        healthy: dict[str, int] | None = None,
    ) -> None:
        self.plan = plan
        self.timeout = timeout
        self.pause = pause
        self.checks_health = checks_health
        # Minions each check also re-reads besides its batch, round the fleet
        # (None: as many as the batch has; 0: none).
        self.refresh: int | None = None
        self.failures = 0
        self.stopped: str | None = None
        self.silent: set[str] = set()
        self._next = 0
        self._finished = False
        # Every targeted minion, in name order; those outside the plan come
        # with their own entry (a minion that does not run the service).
        self.entries: dict[str, dict[str, Any]] = {
            m: {"state": NOT_STARTED, "result": None} for m in plan.replicas
        }
        self.entries.update(entries or {})
        self.entries = dict(sorted(self.entries.items()))
        # Last known healthy replicas per planned minion, and their sum; a
        # minion whose count is not known (``_unknown``) counts 0 until asked.
        self._healthy: dict[str, int] = {}
        self._healthy_total = 0
        self._unknown: dict[str, None] = dict.fromkeys(sorted(plan.replicas))
        for minion, count in (healthy or {}).items():
            if minion in self._unknown:
                self._know(minion, count)
        # The refresh's round over the fleet: the last batches first (the
        # first ones are asked with their batch soon anyway).
        self._round: deque[str] = deque(m for b in reversed(plan.batches) for m in reversed(b))

    @property
    def service(self) -> str:
        return self.plan.service

    @property
    def watched(self) -> list[str]:
        """Every planned minion (what a fleet-wide check would ask)."""
        return sorted(self.plan.replicas)

    @property
    def healthy(self) -> int:
        """The fleet's healthy replicas as last known (unknown minions count 0)."""
        return self._healthy_total

    def known_healthy(self, minion: str) -> int | None:
        """``minion``'s last known healthy replicas (None: not known)."""
        return self._healthy.get(minion)

    def _know(self, minion: str, count: int) -> None:
        self._healthy_total += count - self._healthy.get(minion, 0)
        self._healthy[minion] = count
        self._unknown.pop(minion, None)

    def _forget(self, minion: str) -> None:
        """Its count is unknown: it counts 0 and the next check asks it."""
        self._healthy_total -= self._healthy.pop(minion, 0)
        if minion not in self.silent:
            self._unknown[minion] = None

    def batches(self) -> Iterator[Batch]:
        """The batches still to run; ends early once the run stopped."""
        total = len(self.plan.batches)
        while self.stopped is None and self._next < total:
            number = self._next + 1
            name = self.plan.batch_name(number)
            label = name if name == "canary" else f"{name}/{total}"
            yield Batch(number, name, label, self.plan.batches[self._next])
            self._next += 1

    def to_check(self, batch: Batch) -> list[str]:
        """The minions whose ``dockerops.status`` :meth:`may_start` needs before
        ``batch``, sorted: the batch's own (about to lose capacity: read now),
        those whose count no return has told since (a return without
        ``healthy``, no answer), and a refresh of as many others as the batch
        has, round the fleet, so a minion that decays outside its batch is seen
        within about ``fleet / batch`` batches. Silent minions are not asked.

        The work (and what is asked) grows with the batch, not the fleet.
        Each call moves the refresh on: call it once per batch.
        """
        if not self.checks_health:
            return []
        asked = dict.fromkeys(m for m in batch.minions if m not in self.silent)
        asked.update(self._unknown)
        want = len(batch.minions) if self.refresh is None else self.refresh
        taken = 0
        # Each minion is looked at most once per call; silent ones leave the round.
        for _ in range(len(self._round)):
            if taken >= want:
                break
            minion = self._round.popleft()
            if minion in self.silent:
                continue
            self._round.append(minion)
            if minion not in asked:
                asked[minion] = None
                taken += 1
        return sorted(asked)

    def may_start(
        self,
        batch: Batch,
        status: dict[str, Any] | None,
        asked: Sequence[str] | None = None,
    ) -> Gate:
        """Whether ``batch`` may start, given the ``dockerops.status`` returns
        of the minions ``asked`` (:meth:`to_check`; None: every planned minion
        was asked), or ``status`` None when the run does not check health.

        A minion asked that did not answer has stopped answering: it counts as
        failed once, counts no healthy replica, and is not run. Every other
        planned minion counts as last known (the plan's status, or its own
        last return).
        """
        lines = []
        healthy = None
        loss = 0
        if status is not None:
            for minion in self.watched if asked is None else asked:
                if minion not in self.plan.replicas:
                    continue
                ret = status.get(minion)
                if isinstance(ret, dict):
                    self._know(minion, healthy_count(ret, self.service))
                    continue
                # Silent: it counts nothing, and is not asked again.
                self._healthy_total -= self._healthy.pop(minion, 0)
                self._unknown.pop(minion, None)
                if minion in self.silent:
                    continue
                self.silent.add(minion)
                self.failures += 1
                comment = f"no answer within {self.timeout:g}s to dockerops.status"
                self.entries[minion].update(state=NO_ANSWER, result=False, comment=comment)
                lines.append(f"  {minion}: FAILED: {comment}")
            healthy = self._healthy_total
            loss = sum(self.plan.losses.get(m, 0) for m in batch.minions if m not in self.silent)
        reason = stop_reason(self.plan, self.failures, healthy, batch.name, loss)
        if reason:
            self.stopped = reason
            return Gate(False, (), (*lines, reason))
        run = tuple(m for m in batch.minions if m not in self.silent)
        capacity = "" if healthy is None else f" ({healthy} healthy, floor {self.plan.floor})"
        lines.append(f"{batch.label}: {', '.join(batch.minions)}{capacity}")
        return Gate(True, run, tuple(lines))

    def call(self, batch: Batch) -> Call:
        raise NotImplementedError

    def record(
        self, batch: Batch, returns: dict[str, Any], took: float, minions: Sequence[str]
    ) -> list[str]:
        """Record the ``full_return`` returns of the batch's call to ``minions``
        (which took ``took`` seconds); a minion missing from them did not
        answer in time. Stops the run past the failure budget."""
        lines = []
        for minion, judged in judge_returns(returns, minions, self.timeout, took).items():
            if "return" in judged:
                # Read once: the entry and the healthy count both come from it.
                judged["host"] = read_host_rollout(judged["return"])
            entry = self._entry(minion, judged)
            self.entries[minion] = entry
            self._learn(minion, judged.get("host"))
            if entry["result"] is False:
                self.failures += 1
            lines.append(self._line(minion, entry))
        if self.failures > self.plan.max_failures:
            self.stopped = (
                f"{over_budget(self.failures, self.plan.max_failures)}: stopped after {batch.name}"
            )
            lines.append(self.stopped)
        return lines

    def _entry(self, minion: str, judged: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _learn(self, minion: str, host: HostRollout | None) -> None:
        """What ``minion``'s return (read, or None when it is not a
        :class:`HostRollout`) says of its healthy replicas: the count it
        carries, else unknown (asked at the next check)."""
        if host is not None and host.healthy is not None and not host.test:
            self._know(minion, host.healthy)
        else:
            self._forget(minion)

    @staticmethod
    def _line(minion: str, entry: dict[str, Any]) -> str:
        raise NotImplementedError

    def pause_after(self, batch: Batch) -> float:
        """Seconds to wait before the next batch."""
        if self.stopped or batch.number >= len(self.plan.batches):
            return 0.0
        return self.pause

    def rollback_groups(self) -> list[RollbackGroup]:
        return []

    def finish(self) -> list[str]:
        """The run's last line (its comment)."""
        self._finished = True
        if self.stopped:
            for entry in self.entries.values():
                if entry["state"] == NOT_STARTED:
                    entry["comment"] = "the run stopped before this minion's batch"
            return []
        return [self._done()]

    def _done(self) -> str:
        raise NotImplementedError

    @property
    def ok(self) -> bool:
        """Whether the run went through (failures within the budget are allowed)."""
        return self.stopped is None

    def summary(self) -> dict[str, Any]:
        ok = self.ok
        return {
            "minions": self.entries,
            "comment": self.stopped or self._done(),
            "result": ok,
            "retcode": 0 if ok else 1,
        }


class FleetRollout(FleetRun):
    """``salt-run dockerops.rolling_update``: the engine of a fleet rollout."""

    def __init__(
        self,
        plan: FleetPlan,
        options: RolloutOptions,
        *,
        before: dict[str, tuple[str, ...]] | None = None,
        previews: Sequence[str] = (),
        entries: dict[str, dict[str, Any]] | None = None,
        healthy: dict[str, int] | None = None,
    ) -> None:
        super().__init__(
            plan, timeout=options.timeout, pause=options.pause, entries=entries, healthy=healthy
        )
        self.options = options
        # The images each minion ran when the rollout was planned.
        self.before = dict(before or {})
        self.previews = tuple(previews)
        for minion, entry in self.entries.items():
            if minion in self.before and entry["state"] == NOT_STARTED:
                entry["from"] = _one_or_many(self.before[minion])
                if options.test:
                    entry["state"] = TESTED
        # Minions whose rollout changed (or may have changed) them, in run order.
        self._to_undo: list[str] = []

    def describe(self) -> list[str]:
        """The plan, then each minion's own (the lines ``test=True`` prints)."""
        return [*self.plan.describe(), *self.previews]

    def batches(self) -> Iterator[Batch]:
        if self.options.test:
            return iter(())
        return super().batches()

    def finish(self) -> list[str]:
        # Under test the plan printed is the whole story.
        lines = super().finish()
        return [] if self.options.test else lines

    def summary(self) -> dict[str, Any]:
        return {"service": self.service, "plan": self.describe(), **super().summary()}

    def call(self, batch: Batch) -> Call:
        return Call("dockerops.rolling_update", self.options.module_args())

    def _entry(self, minion: str, judged: dict[str, Any]) -> dict[str, Any]:
        ok = bool(judged["result"])
        host = judged.get("host")
        comment = judged.get("comment")
        if "return" in judged and host is None:
            ok = False
            comment = f"not a dockerops.rolling_update return: {judged['return']!r:.300}"
        answered = judged.get("answered", True)
        if ok or not answered:
            # A minion that did not answer in time may still be rolling.
            self._to_undo.append(minion)
        before = host.before if host else self.before.get(minion, ())
        entry: dict[str, Any] = {
            "state": UPDATED if ok else (FAILED if answered else NO_ANSWER),
            "result": ok,
            "from": _one_or_many(before),
            "to": host.to if host else None,
            # The minion's own rollout; the batch's time when it did not say.
            "duration": host.duration if host and host.duration else judged["duration"],
            "comment": (host.comment if host else None) or comment,
        }
        if host and host.now:
            entry["now"] = _one_or_many(host.now)
        return entry

    @staticmethod
    def _line(minion: str, entry: dict[str, Any]) -> str:
        line = (
            f"  {minion}: {'ok' if entry['result'] else 'FAILED'} "
            f"{entry['from']} -> {entry['to']} ({entry['duration']}s)"
        )
        return line if entry["result"] else f"{line}: {entry['comment']}"

    def rollback_groups(self) -> list[RollbackGroup]:
        """After a stop: the minions this rollout changed, back to what each
        ran before, in the rollout's batch size (canaries aside), one call
        per earlier version in each batch. A minion that ran several versions
        before is not rolled back (no single version to go back to)."""
        if not self.stopped or not self.options.rollback or not self._to_undo:
            return []
        size = max(len(b) for b in self.plan.batches[1:] or self.plan.batches)
        groups: list[RollbackGroup] = []
        header = [f"rolling back {len(self._to_undo)} minion(s), {size} at a time"]
        for start in range(0, len(self._to_undo), size):
            by_image: dict[str, list[str]] = {}
            for minion in self._to_undo[start : start + size]:
                entry = self.entries[minion]
                previous = entry["from"]
                if not isinstance(previous, str):
                    entry.update(state=NOT_ROLLED_BACK, rolled_back=False)
                    header.append(
                        f"  {minion}: not rolled back: it ran several versions before ({previous})"
                    )
                    continue
                by_image.setdefault(previous, []).append(minion)
            for image, minions in sorted(by_image.items()):
                tag = image.rpartition(":")[2]
                call = Call("dockerops.rolling_update", self.options.module_args(tag=tag))
                groups.append(RollbackGroup(image, tuple(minions), call, tuple(header)))
                header = []
        if header:
            groups.append(RollbackGroup("", (), Call("", []), tuple(header)))
        return groups

    def record_rollback(
        self, group: RollbackGroup, returns: dict[str, Any], took: float
    ) -> list[str]:
        lines = []
        judged = judge_returns(returns, group.minions, self.timeout, took)
        for minion in group.minions:
            res = judged[minion]
            host = read_host_rollout(res.get("return"))
            self._learn(minion, host)
            ok = bool(res["result"]) and host is not None
            entry = self.entries[minion]
            entry.update(state=ROLLED_BACK if ok else ROLLBACK_FAILED, rolled_back=ok)
            if host is not None and host.now:
                entry["now"] = _one_or_many(host.now)
            elif ok:
                entry["now"] = group.image
            else:
                entry.pop("now", None)  # unknown: the rollback did not say
            why = ""
            if not ok:
                entry["rollback_comment"] = (host.comment if host else None) or res.get("comment")
                why = f": {entry['rollback_comment']}"
            lines.append(
                f"  {minion}: rolled back to {group.image}: {'ok' if ok else 'FAILED'}{why}"
            )
        return lines

    def _done(self) -> str:
        if self.options.test:
            return "test: nothing changed"
        updated = sum(1 for e in self.entries.values() if e["state"] == UPDATED)
        return f"{self.service} rolled on {updated} minion(s)"


class FleetApply(FleetRun):
    """``salt-run dockerops.apply``: highstate's dockerops in the same batches,
    with the same floor (when given a service) and failure budget."""

    def __init__(
        self, plan: FleetPlan, options: ApplyOptions, healthy: dict[str, int] | None = None
    ) -> None:
        super().__init__(
            plan,
            timeout=options.timeout,
            pause=options.pause,
            checks_health=options.service is not None and options.min_healthy is not None,
            healthy=healthy,
        )
        self.options = options

    def call(self, batch: Batch) -> Call:
        return Call("state.apply", self.options.state_args())

    def _entry(self, minion: str, judged: dict[str, Any]) -> dict[str, Any]:
        ok = bool(judged["result"])
        state = (TESTED if self.options.test else APPLIED) if ok else FAILED
        if not judged.get("answered", True):
            state = NO_ANSWER
        entry: dict[str, Any] = {"state": state, "result": ok, "duration": judged["duration"]}
        if not ok:
            entry["comment"] = judged.get("comment")
        return entry

    @staticmethod
    def _line(minion: str, entry: dict[str, Any]) -> str:
        line = f"  {minion}: {'ok' if entry['result'] else 'FAILED'} ({entry['duration']}s)"
        return line if entry["result"] else f"{line}: {entry.get('comment')}"

    def _done(self) -> str:
        return f"applied on {len(self.entries)} minion(s)"


def _outside(
    status: dict[str, Any], service: str, replicas: dict[str, int], timeout: float
) -> dict[str, dict[str, Any]]:
    """Summary entries of targeted minions the rollout leaves out."""
    out: dict[str, dict[str, Any]] = {}
    for minion, ret in status.items():
        if minion in replicas:
            continue
        if isinstance(ret, dict):
            out[minion] = {"state": NOT_RUNNING, "result": None, "comment": f"no {service} here"}
        else:
            out[minion] = {
                "state": NO_ANSWER,
                "result": None,
                "comment": f"no answer within {timeout:g}s to dockerops.status when planning: "
                "left out",
            }
    return out


def plan_rollout(
    options: RolloutOptions, status: dict[str, Any], previews: dict[str, Any]
) -> FleetRollout:
    """Plan from the targeted minions' ``dockerops.status`` returns and the
    ``rolling_update test=True`` previews of those running the service."""
    service = options.service
    replicas = replicas_running(status, service)
    # Each preview read once (the plan's work grows with the fleet only once).
    read = {minion: read_host_rollout(previews.get(minion)) for minion in sorted(replicas)}
    plan = plan_fleet(
        service,
        replicas,
        options.batch,
        options.min_healthy,
        options.canary,
        options.max_failures,
        loss_per_minion=losses(read, replicas),
    )
    lines = []
    for minion, preview in read.items():
        if preview is not None and preview.plan:
            lines.append(f"{minion}: " + "; ".join(preview.plan))
    return FleetRollout(
        plan,
        options,
        before=images_running(status, service),
        previews=lines,
        entries=_outside(status, service, replicas, options.timeout),
        # Untouched minions count as the plan saw them until asked again.
        healthy=_answered_healthy(status, service, replicas),
    )


def plan_apply(
    options: ApplyOptions, answered: Sequence[str], status: dict[str, Any] | None
) -> FleetApply:
    """Plan over the minions that ``answered`` (``test.ping``); with a
    service and ``min_healthy``, its floor counts the replicas ``status``
    (their ``dockerops.status <service>``) shows."""
    if not answered:
        raise ArgumentError(["tgt: no targeted minion answered"])
    replicas = dict.fromkeys(answered, 0)
    if options.service is not None:
        replicas.update(replicas_running(status or {}, options.service))
    plan = plan_fleet(
        options.service or "dockerops",
        replicas,
        options.batch,
        options.min_healthy or 0,
        0,
        options.max_failures,
        # A highstate may do anything: the floor is only checked between batches.
        loss_per_minion={},
    )
    healthy = None
    if options.service is not None and status is not None:
        healthy = _answered_healthy(status, options.service, replicas)
    return FleetApply(plan, options, healthy=healthy)


def _answered_healthy(
    status: dict[str, Any], service: str, planned: dict[str, int]
) -> dict[str, int]:
    """Healthy replicas of the planned minions that answered ``status`` (one
    that did not is unknown: the first check asks it)."""
    return {
        minion: healthy_count(ret, service)
        for minion, ret in status.items()
        if minion in planned and isinstance(ret, dict)
    }
