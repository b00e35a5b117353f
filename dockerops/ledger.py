"""What a host remembers about a service's replicas that their labels cannot say.

A container's labels say which inputs it was created with, not whether it ever
*proved* itself (healthy, then held for ``min_healthy_time``). A run killed
between creating a replacement and counting it leaves a container whose labels
match pillar but which nobody has seen healthy; counting it as good would let
the next run "complete" onto a broken version (and remove the replicas it was
to replace). So every container that counts is recorded here, *before* the
replica it replaces is removed, and only recorded containers count.

A stop-first (in-place) replacement removes the old container before its
replacement exists. Its ``inspect`` is journaled here first, so a run killed
in between can put it back; the journal is cleared when the run that wrote it
ends, so what is found in it was left by an interrupted run.

The last stop of one of its replicas is kept too (how long it took, whether
it had to be killed after its grace period), for ``dockerops.status``: the
container is gone by then, and a kill is what tells the operator to set
``init`` or ``stop_signal``.

All live in the service's record (``<state_dir>/services/<service>.json``,
written atomically, mode 0600: an inspect holds the container's env).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .host import StopReport
from .records import ServiceRecord

PROVEN = "proven"
STOPPED_IN_PLACE = "stopped_in_place"
LAST_STOP = "last_stop"


class Ledger:
    """Proven containers and in-place stops of one service.

    ``state_dir=None`` keeps them in memory only (the simulated host in tests).
    """

    def __init__(self, state_dir: str | None, service: str) -> None:
        self._record = ServiceRecord(state_dir, service) if state_dir else None
        self._memory: dict[str, Any] = {}

    def _load(self) -> dict[str, Any]:
        return self._record.load() if self._record is not None else dict(self._memory)

    def _update(self, key: str, value: Any) -> None:
        if self._record is None:
            self._memory[key] = value
            return
        data = self._record.load()
        if data.get(key) == value:
            return
        data[key] = value
        self._record.save(data)

    def proven(self) -> set[str] | None:
        """Ids of the containers that proved themselves.

        None when this host has no such record for the service: its containers
        were created by a release that did not keep one (they were health-gated
        then), and are trusted until the next run that acts records them.
        """
        value = self._load().get(PROVEN)
        if not isinstance(value, list):
            return None
        return {str(item) for item in value}

    def adopt(self, container_ids: Iterable[str]) -> None:
        """Start the record (see :meth:`proven`) from the containers there now."""
        if self.proven() is None:
            self._update(PROVEN, sorted(set(container_ids)))

    def prove(self, container_id: str) -> None:
        """Record that ``container_id`` counted. Durable before it returns."""
        proven = self.proven() or set()
        if container_id not in proven:
            self._update(PROVEN, sorted(proven | {container_id}))

    def keep_only(self, container_ids: Iterable[str]) -> None:
        """Forget containers that no longer exist."""
        proven = self.proven()
        if proven is not None:
            self._update(PROVEN, sorted(proven & set(container_ids)))

    def stopped_in_place(self) -> dict[int, dict[str, Any]]:
        """Slot -> the inspect of the container an in-place replacement stopped."""
        value = self._load().get(STOPPED_IN_PLACE)
        if not isinstance(value, dict):
            return {}
        out = {}
        for slot, before in value.items():
            if str(slot).isdigit() and isinstance(before, dict):
                out[int(slot)] = before
        return out

    def stop_in_place(self, slot: int, before: dict[str, Any]) -> None:
        """Journal ``before`` (an inspect) ahead of removing it for an in-place replacement."""
        journal = {str(k): v for k, v in self.stopped_in_place().items()}
        journal[str(slot)] = before
        self._update(STOPPED_IN_PLACE, journal)

    def settle(self, slot: int | None = None) -> None:
        """Drop the journal entry of ``slot`` (None: all of them)."""
        journal = self.stopped_in_place()
        if not journal or (slot is not None and slot not in journal):
            return
        if slot is None:
            journal = {}
        else:
            journal.pop(slot, None)
        self._update(STOPPED_IN_PLACE, {str(k): v for k, v in journal.items()})

    def record_stop(self, stop: StopReport) -> None:
        """Remember ``stop`` as the service's last replica stop."""
        self._update(
            LAST_STOP,
            {
                "container": stop.container,
                "seconds": stop.seconds,
                "grace": stop.grace,
                "killed": stop.killed,
            },
        )

    def last_stop(self) -> dict[str, Any] | None:
        """The last stop :meth:`record_stop` remembered (with its hint), or None."""
        value = self._load().get(LAST_STOP)
        if not isinstance(value, dict):
            return None
        try:
            stop = StopReport(
                str(value["container"]),
                float(value["seconds"]),
                int(value["grace"]),
                bool(value["killed"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        out: dict[str, Any] = {
            "container": stop.container,
            "seconds": stop.seconds,
            "grace": stop.grace,
            "killed": stop.killed,
        }
        if stop.hint:
            out["hint"] = stop.hint
        return out
