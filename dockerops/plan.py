"""Desired vs actual replicas -> the actions that converge them (pure).

The same plan serves ``test=True``, the state's ``changes`` and the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .replicas import ActualReplica, DesiredReplica

ActionKind = Literal["create", "recreate", "start", "remove", "signal"]

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
) -> list[Action]:
    """Actions that make ``actual`` (one service's containers) match ``desired``.

    Removals come first (they free names and ports), then replicas in order.
    ``seen`` maps container ids to the config version each last loaded (for
    services whose config is live-mounted); with ``signal``, replicas that have
    not seen the desired version are sent it.
    """
    wanted = {replica.index: replica for replica in desired}
    by_index: dict[int, ActualReplica] = {}
    actions: list[Action] = []
    for container in sorted(actual, key=lambda c: (c.index is None, c.index or 0, c.name)):
        keep = (
            container.index in wanted
            and container.index not in by_index
            and container.name == wanted[container.index].name
        )
        if keep and container.index is not None:
            by_index[container.index] = container
        else:
            actions.append(Action("remove", container.name, container.index, actual=container))
    for index, replica in sorted(wanted.items()):
        current = by_index.get(index)
        if current is None:
            actions.append(Action("create", replica.name, index, desired=replica))
        elif current.spec_hash != replica.spec_hash:
            changed = tuple(
                key for key, digest in replica.inputs if current.inputs.get(key) != digest
            ) or ("spec",)
            actions.append(
                Action("recreate", replica.name, index, replica, current, changed=changed)
            )
        elif current.state not in _LIVE_STATES:
            actions.append(Action("start", replica.name, index, replica, current))
        elif signal and replica.config_live and current.state == "running":
            loaded = (seen or {}).get(current.id) or current.config_version
            if loaded != replica.config_version:
                actions.append(
                    Action(
                        "signal",
                        replica.name,
                        index,
                        replica,
                        current,
                        signal=signal,
                        seen_version=loaded or None,
                    )
                )
    return actions
