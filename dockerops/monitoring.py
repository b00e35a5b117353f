"""What one replica's ``docker inspect`` says about how it runs (pure).

Docker emits no event when an ``on-failure:N`` container uses up its retries
and stays exited, and a health check's output is only in the inspect. This
module reads them out for ``dockerops.status``: the last exit (code, OOM kill,
when), the last health-check output, whether the replica *gave up*, and a
warning for restart policies that would hide a persistently failing replica.
"""

from __future__ import annotations

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


def replica_monitoring(details: dict[str, Any]) -> dict[str, Any]:
    """Everything above for one replica, as ``dockerops.status`` shows it."""
    out = exit_status(details)
    out["health_output"] = last_health_output(details)
    reason = gave_up(details)
    out["gave_up"] = reason is not None
    if reason is not None:
        out["gave_up_reason"] = reason
    policy = ((details.get("HostConfig") or {}).get("RestartPolicy")) or {}
    warning = restart_warning(str(policy.get("Name") or "no"))
    if warning is not None:
        out["warning"] = warning
    return out
