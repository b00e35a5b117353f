"""Desired vs actual replicas -> the actions that converge them (pure).

The same plan serves ``test=True``, the state's ``changes`` and the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .replicas import ActualReplica, DesiredReplica

if TYPE_CHECKING:
    from .spec import ServiceSpec

ActionKind = Literal["prove", "create", "recreate", "start", "remove", "signal"]

# States in which a container needs no action from us. "restarting" is
# Docker's restart policy at work; a crash loop is for status to report, not for
# a state run to paper over by recreating the container.
_LIVE_STATES = {"running", "restarting", "paused"}


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    name: str
    index: int | None
    desired: DesiredReplica | None = None
    actual: ActualReplica | None = None
    changed: tuple[str, ...] = ()
    signal: str | None = None
    seen_version: str | None = None

    def describe(self) -> dict[str, object]:
        """The ``changes`` entry for this action (never any env value)."""
        if self.kind == "create":
            assert self.desired is not None
            return {"created": {"image": self.desired.image}}
        if self.kind == "remove":
            assert self.actual is not None
            return {"removed": {"image": self.actual.image, "container": self.actual.id[:12]}}
        if self.kind == "start":
            assert self.actual is not None
            return {"started": {"old": self.actual.state, "new": "running"}}
        if self.kind == "prove":
            assert self.actual is not None
            return {
                "proving": {
                    "image": self.actual.image,
                    "container": self.actual.id[:12],
                    "why": "left unproven by an interrupted run",
                }
            }
        assert self.desired is not None and self.actual is not None
        if self.kind == "signal":
            return {
                "signaled": self.signal,
                "config_version": {"old": self.seen_version, "new": self.desired.config_version},
            }
        out: dict[str, object] = {"recreated": {"changed": list(self.changed)}}
        if "image" in self.changed:
            out["image"] = {"old": self.actual.image, "new": self.desired.image}
        if "config" in self.changed and self.desired.config_version:
            out["config_version"] = {
                "old": self.actual.config_version or None,
                "new": self.desired.config_version,
            }
        return out


def plan_service(
    desired: list[DesiredReplica],
    actual: list[ActualReplica],
    seen: dict[str, str] | None = None,
    signal: str | None = None,
    count: int | None = None,
    proven: set[str] | None = None,
) -> list[Action]:
    """Actions that make ``actual`` (one service's containers) match ``desired``.

    ``desired`` holds the replica for every *slot* the service may use (slot i
    is container ``<service>-i`` on host port ``host + i - 1``): slots 1..count
    for its ``count`` replicas (default: all of ``desired``), then the spare
    slots start-first updates run replacements in. Any ``count`` up-to-date
    containers in valid slots satisfy the service, so a rollout that ended with a
    replica in a spare slot is not churned back.

    Removals come first (they free names and ports), then replacements of
    out-of-date containers (``recreate``), creations in the lowest free slots,
    starts, and config signals. ``seen`` maps container ids to the config
    version each last loaded (live-mounted config); with ``signal``, replicas
    that have not seen the desired version are sent it.

    ``proven`` holds the ids of containers that proved themselves (see
    :mod:`dockerops.ledger`; None: all did). An up-to-date container not in
    it was left by an interrupted run: it gets a ``prove`` action, which comes
    first; the rest of the plan assumes it passes, and the executor carries it
    out only then. Proven containers are kept in preference to unproven ones.
    """
    count = len(desired) if count is None else count
    slots = {replica.index: replica for replica in desired}
    actions: list[Action] = []
    good: list[ActualReplica] = []
    stale: list[ActualReplica] = []
    for container in sorted(actual, key=lambda c: (c.index is None, c.index or 0, c.name)):
        slot = slots.get(container.index) if container.index is not None else None
        if slot is None or container.name != slot.name:
            actions.append(Action("remove", container.name, container.index, actual=container))
        elif container.spec_hash == slot.spec_hash:
            good.append(container)
        else:
            stale.append(container)

    def unproven(container: ActualReplica) -> bool:
        return proven is not None and container.id not in proven

    good.sort(key=unproven)  # stable: proven first, each part by slot
    # More up-to-date replicas than wanted: unproven ones, then the highest slots go.
    for container in reversed(good[count:]):
        actions.append(Action("remove", container.name, container.index, actual=container))
    good = good[:count]
    replace = stale[: count - len(good)]
    for container in reversed(stale[len(replace) :]):
        actions.append(Action("remove", container.name, container.index, actual=container))
    for container in replace:
        assert container.index is not None
        replica = slots[container.index]
        changed = tuple(
            key for key, digest in replica.inputs if container.inputs.get(key) != digest
        ) or ("spec",)
        actions.append(
            Action("recreate", replica.name, container.index, replica, container, changed=changed)
        )
    occupied = {c.index for c in good + replace}
    free = [index for index in sorted(slots) if index not in occupied]
    for index in free[: count - len(good) - len(replace)]:
        actions.append(Action("create", slots[index].name, index, desired=slots[index]))
    proofs = [
        Action("prove", slots[c.index].name, c.index, slots[c.index], c)
        for c in good
        if c.index is not None and unproven(c)
    ]
    actions[:0] = proofs
    for container in good:
        assert container.index is not None
        replica = slots[container.index]
        if unproven(container):
            continue
        if container.state not in _LIVE_STATES:
            actions.append(Action("start", replica.name, container.index, replica, container))
        elif signal and replica.config_live and container.state == "running":
            loaded = (seen or {}).get(container.id) or container.config_version
            if loaded != replica.config_version:
                actions.append(
                    Action(
                        "signal",
                        replica.name,
                        container.index,
                        replica,
                        container,
                        signal=signal,
                        seen_version=loaded or None,
                    )
                )
    return actions


def describe_plan(spec: ServiceSpec, actions: list[Action]) -> list[str]:
    """The rollout plan in words: which replicas, in what order, from what to what."""
    lines = [f"{a.kind} {a.name}" for a in actions if a.kind not in ("recreate", "signal")]
    recreates = [a for a in actions if a.kind == "recreate"]
    size = spec.update.parallelism
    for number, start in enumerate(range(0, len(recreates), size), 1):
        batch = recreates[start : start + size]
        parts = []
        for action in batch:
            assert action.actual is not None and action.desired is not None
            others = [c for c in action.changed if c != "image"]
            change = ", ".join(others)
            if "image" in action.changed:
                image = f"{action.actual.image} -> {action.desired.image}"
                change = image + (f"; {change}" if change else "")
            parts.append(f"{action.name} ({change})")
        lines.append(f"batch {number} ({spec.update.order}): " + "; ".join(parts))
    lines.extend(f"{a.kind} {a.name}" for a in actions if a.kind == "signal")
    return lines
