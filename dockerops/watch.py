"""What the beacon reports: a replica's changes of condition, once each (pure).

The beacon looks at every replica each interval (``dockerops.status`` rows)
and compares with what it saw last time, which it keeps in the state dir so
that a minion restart fires nothing twice. A replica is known by its service
and slot; a new container in a slot (a rollout, a restart) starts afresh,
except that an unhealthy slot whose new container is healthy has recovered.

Events, tagged ``<service>/<what>`` (Salt prefixes
``salt/beacon/<minion>/dockerops/``):

- ``unhealthy`` / ``recovered``: the health check turned unhealthy / healthy
  again (not while it crash-loops or gave up: those say more);
- ``crash_loop``: Docker restarted it too often within the window;
- ``gave_up``: Docker will not restart it again;
- ``oom_killed``: it was killed for memory (once per exit);
- ``port_missing``: an ``expect_ports`` port it listened on is gone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .records import read_mapping, save_json

KINDS = ("unhealthy", "recovered", "crash_loop", "gave_up", "oom_killed", "port_missing")


def _key(row: Mapping[str, Any], service: str) -> str:
    return f"{service}/{row.get('slot')}"


def _fire(
    events: list[dict[str, Any]], service: str, row: Mapping[str, Any], kind: str, reason: str
) -> None:
    events.append(
        {
            "tag": f"{service}/{kind}",
            "event": kind,
            "service": service,
            "slot": row.get("slot"),
            # The slot, under the name earlier releases used (reactors may read it).
            "replica": row.get("slot"),
            "container": row.get("container"),
            "container_id": row.get("id"),
            "environment": row.get("environment"),
            "image": row.get("image"),
            "reason": reason,
        }
    )


def replica_events(
    previous: Mapping[str, Mapping[str, Any]],
    status: Mapping[str, Iterable[Mapping[str, Any]]],
    listening: Mapping[str, tuple[Iterable[str], Iterable[str]]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The events for what changed since ``previous``, and what to remember now.

    ``status``: ``dockerops.status`` rows per service. ``listening``: per
    container name, the ``expect_ports`` it listens on and those it does not
    (``dockerops.check_ports``); containers without an entry are not judged
    on ports.
    """
    events: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for service, rows in sorted(status.items()):
        for row in rows:
            key = _key(row, service)
            container = str(row.get("id") or row.get("container") or "")
            before = dict(previous.get(key) or {})
            same = before.get("container") == container
            now: dict[str, Any] = {
                "container": container,
                "unhealthy": row.get("health") == "unhealthy",
                "crash_loop": bool(row.get("crash_loop")),
                "gave_up": bool(row.get("gave_up")),
                # The exit an OOM kill was reported for: each exit once.
                "oom": row.get("finished_at") if row.get("oom_killed") else before.get("oom"),
                "ports_up": [],
            }

            fire = functools.partial(_fire, events, service, row)
            if now["crash_loop"] or now["gave_up"]:
                # Its health flips with every crash: that is the loop, reported
                # as such, not one unhealthy/recovered pair per restart.
                now["unhealthy"] = bool(same and before.get("unhealthy"))
            elif now["unhealthy"] and not (same and before.get("unhealthy")):
                output = row.get("health_output")
                fire("unhealthy", f"health check failing: {output}" if output else "unhealthy")
            elif before.get("unhealthy") and row.get("health") == "healthy":
                fire("recovered", "healthy again")
            elif before.get("unhealthy") and row.get("health") == "starting":
                now["unhealthy"] = True  # restarted: not recovered until healthy
            if now["crash_loop"] and not (same and before.get("crash_loop")):
                fire("crash_loop", str(row.get("crash_loop_reason") or "crash loop"))
            if now["gave_up"] and not (same and before.get("gave_up")):
                fire("gave_up", str(row.get("gave_up_reason") or "gave up"))
            if row.get("oom_killed") and not (same and before.get("oom") == now["oom"]):
                code = row.get("exit_code")
                fire("oom_killed", f"killed for memory (exit code {code})")
            up, missing = (listening or {}).get(str(row.get("container")), ((), ()))
            was_up = set(before.get("ports_up") or []) if same else set()
            for port in sorted(set(missing) & was_up):
                fire("port_missing", f"{port} no longer listening")
            now["ports_up"] = sorted(set(up) | (was_up - set(missing)))
            seen[key] = now
    return events, seen


class BeaconMemory:
    """What the beacon saw last, in ``<state dir>/beacon/dockerops.json``
    (replaced atomically), so that a minion restart fires nothing twice."""

    def __init__(self, base: str | Path) -> None:
        self.path = Path(base) / "beacon" / "dockerops.json"

    def load(self) -> dict[str, dict[str, Any]]:
        data = read_mapping(self.path)
        return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}

    def save(self, seen: Mapping[str, Mapping[str, Any]]) -> None:
        """StateDirError when it cannot be written (the beacon logs it)."""
        save_json("the beacon's memory", self.path, seen)
