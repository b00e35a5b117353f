"""What the master does about a replica's crash loop or give-up: restart its
service once, then only report, for a window (the reactor's runner).

Every event is recorded on the master (``<cachedir>/dockerops/reactions.json``,
per minion and service, the last :data:`KEEP` reactions), whatever is
decided. A restart is decided at most once per minion and service within
the window: a service that crash-loops again after its restart, or gives up
again, is only reported, so the reactor can never loop.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import read_mapping, save_json, writing
from .spec import parse_duration

# Events that may restart a service (others are recorded only).
RESTARTING_EVENTS = ("crash_loop", "gave_up")
KEEP = 50


@dataclass(frozen=True)
class Reaction:
    action: str  # "restart" or "report"
    reason: str


def decide(
    past: Sequence[Mapping[str, Any]], event: str, now: float, window: float, restart: bool
) -> Reaction:
    """Restart, or only report ``event``, given the ``past`` reactions for the
    same minion and service (pure)."""
    if event not in RESTARTING_EVENTS:
        return Reaction(
            "report", f"{event}: recorded (only {' and '.join(RESTARTING_EVENTS)} restart)"
        )
    if not restart:
        return Reaction("report", f"{event}: recorded (restart: False)")
    for entry in reversed(past):
        taken = float(entry.get("time") or 0)
        if entry.get("action") == "restart" and now - taken < window:
            ago = int(now - taken)
            return Reaction(
                "report",
                f"{event}: recorded, not restarted: restarted {ago}s ago, within the "
                f"{window:g}s window (the reactor never loops)",
            )
    return Reaction("restart", f"{event}: restarting the service once")


class ReactionLog:
    """The master's record of reactions, per ``minion/service``."""

    def __init__(self, base: str | Path) -> None:
        self.path = Path(base) / "reactions.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Reactor runners run in parallel threads and processes: one at a time."""
        with writing("the reactions record", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> dict[str, list[dict[str, Any]]]:
        data = read_mapping(self.path)
        return {
            str(k): [e for e in v if isinstance(e, dict)]
            for k, v in data.items()
            if isinstance(v, list)
        }

    def react(
        self,
        minion: str,
        service: str,
        event: Mapping[str, Any],
        now: float,
        window: str | float = "1h",
        restart: bool = True,
    ) -> Reaction:
        """Decide (:func:`decide`) and record the decision, under the lock: two
        events at once cannot both restart."""
        seconds = parse_duration(window)
        key = f"{minion}/{service}"
        kind = str(event.get("event") or "")
        with self._locked():
            data = self.load()
            past = data.get(key, [])
            reaction = decide(past, kind, now, seconds, restart)
            entry = {
                "time": now,
                "event": kind,
                "slot": event.get("slot", event.get("replica")),
                "container": event.get("container"),
                "image": event.get("image"),
                "reason": event.get("reason"),
                "action": reaction.action,
                "why": reaction.reason,
            }
            data[key] = [*past, entry][-KEEP:]
            save_json("the reactions record", self.path, data, indent=1)
        return reaction
