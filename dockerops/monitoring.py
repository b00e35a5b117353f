"""What one replica's ``docker inspect`` says about how it runs (pure).

Docker emits no event when an ``on-failure:N`` container uses up its retries
and stays exited, and a health check's output is only in the inspect. This
module reads them out for ``dockerops.status``: the last exit (code, OOM kill,
when), the last health-check output, whether the replica *gave up*, and a
warning for restart policies that would hide a persistently failing replica.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# The health check's output is kept short: the last lines, trimmed.
HEALTH_OUTPUT_LINES = 5
HEALTH_OUTPUT_CHARS = 500
# Docker's zero time, for a container that never finished.
_NEVER = "0001-01-01T00:00:00Z"

RESTARTS_FOREVER = (
    "restart_policy {policy} restarts a persistently failing container forever, "
    "unnoticed; on-failure:N stops after N tries and status reports it (gave_up)"
)


def last_health_output(details: dict[str, Any]) -> str | None:
    """The last health check's output: its last lines, trimmed (None: no check ran)."""
    log = ((details.get("State") or {}).get("Health") or {}).get("Log") or []
    if not log:
        return None
    text = str((log[-1] or {}).get("Output") or "").strip()
    lines = text.splitlines()[-HEALTH_OUTPUT_LINES:]
    text = "\n".join(line.rstrip() for line in lines)
    if len(text) > HEALTH_OUTPUT_CHARS:
        text = "..." + text[-HEALTH_OUTPUT_CHARS:]
    return text


def gave_up(details: dict[str, Any]) -> str | None:
    """Why the replica will not run again on its own, or None when it may.

    An ``on-failure:N`` container that exited non-zero after N restarts stays
    exited: Docker tries no more and says nothing. One that exited with 0
    (``on-failure`` never restarts those) or under ``no`` stays exited too.
    A stopped container (``docker stop``) is not one that gave up.
    """
    state = details.get("State") or {}
    if state.get("Status") not in ("exited", "dead") or state.get("Restarting"):
        return None
    policy = ((details.get("HostConfig") or {}).get("RestartPolicy")) or {}
    name = policy.get("Name") or "no"
    code = state.get("ExitCode")
    restarts = int(details.get("RestartCount") or 0)
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        if code == 0:
            return "exited with code 0: on-failure restarts only failures"
        if limit and restarts >= limit:
            return (
                f"exited with code {code} after {restarts} restarts: on-failure:{limit} "
                "has used up its retries, Docker will not restart it"
            )
        return None
    if name == "no":
        return f"exited with code {code}: restart_policy no never restarts it"
    return None  # always / unless-stopped: Docker restarts it (or it was stopped)


def exit_status(details: dict[str, Any]) -> dict[str, Any]:
    """The replica's last exit: code, OOM kill, when it started and finished."""
    state = details.get("State") or {}
    finished = state.get("FinishedAt")
    ever = bool(finished) and finished != _NEVER
    return {
        "exit_code": state.get("ExitCode") if ever else None,
        "oom_killed": bool(state.get("OOMKilled")),
        "started_at": state.get("StartedAt"),
        "finished_at": finished if ever else None,
    }


def restart_warning(policy: str) -> str | None:
    """A warning for a restart policy that hides a failing replica (None: fine)."""
    name = policy.split(":", 1)[0]
    if name in ("always", "unless-stopped"):
        return RESTARTS_FOREVER.format(policy=name)
    return None


@dataclass(frozen=True)
class CrashLoopPolicy:
    """``dockerops:monitoring:crash_loop``: ``restarts`` within ``window`` seconds."""

    restarts: int = 3
    window: float = 300.0


# One observation of a container: (unix time, Docker's RestartCount then).
Sample = tuple[float, int]

_FRACTION = re.compile(r"\.(\d+)")


def docker_time(value: Any) -> float | None:
    """Seconds since the epoch for Docker's RFC 3339 time (nanoseconds, ``Z``);
    None for Docker's zero time or anything unreadable."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    text = text[:-1] + "+00:00" if text.endswith("Z") else text
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def restarts_within(
    samples: Sequence[Sample], details: dict[str, Any], now: float, window: float
) -> int:
    """How many times Docker restarted the container in the last ``window``
    seconds, at least: never more than really happened.

    Docker keeps only a running count (``RestartCount``) and the last start
    time; its event ring is too short to count from. So the count is read
    against ``samples``, earlier observations of the same container (see
    :func:`record_sample`): the restarts since the oldest one inside the
    window. The container's creation inside the window counts as a sample
    of 0. Without any, a last start inside the window is one restart. Samples
    above today's count are from before Docker reset it (a start by hand).
    """
    count = int(details.get("RestartCount") or 0)
    start = now - window
    inside = [seen for taken, seen in samples if taken >= start and seen <= count]
    created = docker_time(details.get("Created"))
    if created is not None and created >= start:
        inside.append(0)
    if inside:
        return count - min(inside)
    started = docker_time((details.get("State") or {}).get("StartedAt"))
    return 1 if count and started is not None and started >= start else 0


# Samples kept per container: runs of one count are kept as their first and
# last, so this bounds the restarts a window can show, not the time.
MAX_SAMPLES = 256


def record_sample(samples: Sequence[Sample], now: float, count: int, window: float) -> list[Sample]:
    """``samples`` with ``(now, count)`` added, those older than ``window``
    dropped, and each run of one count kept as its first and last sample (the
    ones :func:`restarts_within` may need)."""
    out: list[Sample] = []
    for sample in [*(s for s in samples if s[0] >= now - window), (now, count)]:
        if len(out) >= 2 and out[-1][1] == sample[1] == out[-2][1]:
            out[-1] = sample
        else:
            out.append(sample)
    return out[-MAX_SAMPLES:]


def crash_loop(
    samples: Sequence[Sample], details: dict[str, Any], now: float, policy: CrashLoopPolicy
) -> str | None:
    """Why the replica is crash-looping, or None: Docker restarted it
    ``policy.restarts`` times or more within ``policy.window``, and will again.

    One that gave up (Docker restarts it no more) is reported by
    :func:`gave_up`, not as a loop.
    """
    state = details.get("State") or {}
    if state.get("Status") in ("created", "paused") or gave_up(details) is not None:
        return None
    # Between two runs (exited, or restarting in Docker's back-off) the loop
    # goes on: Docker will start it again. Only giving up ends it.
    restarts = restarts_within(samples, details, now, policy.window)
    if restarts < policy.restarts:
        return None
    return (
        f"restarted {restarts} times in the last {_span(policy.window)} "
        f"(crash_loop: {policy.restarts} restarts within {_span(policy.window)})"
    )


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def replica_monitoring(
    details: dict[str, Any],
    samples: Sequence[Sample] = (),
    now: float | None = None,
    policy: CrashLoopPolicy | None = None,
) -> dict[str, Any]:
    """Everything above for one replica, as ``dockerops.status`` shows it.

    ``samples`` are the earlier observations of this container (see
    :func:`restarts_within`); ``now`` and ``policy`` default to the clock and
    the default crash-loop policy.
    """
    out = exit_status(details)
    out["health_output"] = last_health_output(details)
    reason = gave_up(details)
    out["gave_up"] = reason is not None
    if reason is not None:
        out["gave_up_reason"] = reason
    looping = crash_loop(
        samples, details, time.time() if now is None else now, policy or CrashLoopPolicy()
    )
    out["crash_loop"] = looping is not None
    if looping is not None:
        out["crash_loop_reason"] = looping
    restart = ((details.get("HostConfig") or {}).get("RestartPolicy")) or {}
    warning = restart_warning(str(restart.get("Name") or "no"))
    if warning is not None:
        out["warning"] = warning
    return out
