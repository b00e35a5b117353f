"""Docker logging drivers: their options, checked before Docker sees them (pure).

Docker refuses an unknown ``--log-opt`` only when the container is created,
in the middle of a rollout; a typo'd option of a driver that accepts it
silently (``labels`` given to the wrong driver) is never reported at all. Here
each supported driver's documented options are known, values are made the
strings Docker requires (``true``/``false``, not Python's ``True``), and a
driver that can block the container's writes to stdout is named, so the
state can warn about it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

# Every driver takes these (Docker's log-opts for delivery, not the driver's).
DELIVERY = ("mode", "max-buffer-size")
# The metadata options of the drivers that ship log records elsewhere.
_METADATA = ("tag", "labels", "labels-regex", "env", "env-regex")

# Docker's documented options per driver (docs.docker.com, engine/logging/drivers).
DRIVER_OPTIONS: dict[str, tuple[str, ...]] = {
    "json-file": ("max-size", "max-file", "compress", *_METADATA),
    "local": ("max-size", "max-file", "compress"),
    "syslog": (
        "syslog-address",
        "syslog-facility",
        "syslog-format",
        "syslog-tls-ca-cert",
        "syslog-tls-cert",
        "syslog-tls-key",
        "syslog-tls-skip-verify",
        *_METADATA,
    ),
    "gelf": (
        "gelf-address",
        "gelf-compression-type",
        "gelf-compression-level",
        "gelf-tcp-max-reconnect",
        "gelf-tcp-reconnect-delay",
        *_METADATA,
    ),
    "fluentd": (
        "fluentd-address",
        "fluentd-async",
        # Deprecated for fluentd-async, still accepted by Docker.
        "fluentd-async-connect",
        "fluentd-async-reconnect-interval",
        "fluentd-buffer-limit",
        "fluentd-max-retries",
        "fluentd-request-ack",
        "fluentd-retry-wait",
        "fluentd-sub-second-precision",
        "fluentd-write-timeout",
        *_METADATA,
    ),
    "journald": _METADATA,
    # No logs at all: nothing to configure but delivery.
    "none": (),
}
SUPPORTED_DRIVERS = tuple(DRIVER_OPTIONS)
# Options documented for newer Docker Engines than Debian 12's 20.10 (which
# refuses them at create): Docker says so itself, naming the option.
NEWER_ENGINE_OPTIONS = {
    "fluentd": ("fluentd-async-reconnect-interval", "fluentd-write-timeout"),
}

# A size as Docker's units.RAMInBytes reads it: 4m, 512k, 1g, 1.5MiB.
_SIZE_RE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,9})?)\s*(?:[kmgtp]i?b?|b)?", re.IGNORECASE)
_BOOLEAN_OPTIONS = {
    "compress",
    "syslog-tls-skip-verify",
    "fluentd-async",
    "fluentd-async-connect",
    "fluentd-request-ack",
    "fluentd-sub-second-precision",
}
_ADDRESS_SCHEMES = {
    "syslog-address": ("udp", "tcp", "tcp+tls", "unix", "unixgram"),
    "gelf-address": ("udp", "tcp"),
}
# Anything below space, and DEL: Docker would pass them on into log records.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
TRUE = ("1", "t", "true", "yes")


def option_text(value: Any) -> str:
    """An option value as Docker takes it: a string; booleans ``true``/``false``.

    Raises ValueError for anything that is not a string, a number or a boolean.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("values are finite numbers")
    if isinstance(value, (int, float)):
        try:
            return str(value)
        except ValueError:  # an int too long to print
            raise ValueError("value too long") from None
    if isinstance(value, str):
        return value
    raise ValueError("values are strings, numbers or booleans")


def driver_problem(driver: str) -> str | None:
    """Why ``driver`` is not one dockerops runs (None when it is)."""
    if driver in DRIVER_OPTIONS:
        return None
    return f"unknown logging driver {driver!r} (one of {', '.join(SUPPORTED_DRIVERS)})"


def option_problems(driver: str, options: Mapping[str, str]) -> list[str]:
    """Every problem with ``options`` for ``driver`` (already strings), each naming its option."""
    known = DRIVER_OPTIONS.get(driver)
    if known is None:
        return []  # the driver's own problem is reported
    problems = []
    for name, value in options.items():
        if name not in known and name not in DELIVERY:
            where = f"one of {', '.join(known + DELIVERY)}"
            problems.append(f"{name}: unknown option for logging driver {driver} ({where})")
        elif _CONTROL_RE.search(value):
            problems.append(f"{name}: values cannot contain control characters")
        else:
            problem = _value_problem(name, value)
            if problem:
                problems.append(f"{name}: {problem} (got {value!r})")
    mode = options.get("mode", "blocking")
    if "max-buffer-size" in options and mode != "non-blocking":
        problems.append("max-buffer-size: only with mode: non-blocking")
    if driver == "gelf" and "gelf-address" not in options:
        problems.append("gelf-address: the gelf driver needs it (udp://host:port or tcp://...)")
    return problems


def _value_problem(name: str, value: str) -> str | None:
    if name == "mode" and value not in ("blocking", "non-blocking"):
        return "expected blocking or non-blocking"
    if name in ("max-buffer-size", "max-size") and not _size(value):
        return "expected a size such as 4m or 512k"
    if name in _BOOLEAN_OPTIONS and value.lower() not in (*TRUE, "0", "f", "false", "no"):
        return "expected true or false"
    schemes = _ADDRESS_SCHEMES.get(name)
    if schemes is not None:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme not in schemes or not rest:
            return f"expected {'|'.join(schemes)}://..."
    return None


def _size(value: str) -> bool:
    match = _SIZE_RE.fullmatch(value.strip())
    return match is not None and float(match.group(1)) > 0


def blocking_warning(driver: str, options: Mapping[str, str]) -> str | None:
    """Why this logging set-up can block the container (None when it cannot).

    In Docker's default ``blocking`` mode a container's write to stdout waits
    until the driver has taken the line. A driver writing to a stream socket
    (syslog over TCP or a unix stream socket, gelf over TCP, fluentd without
    ``fluentd-async``) then stalls the application as long as its collector
    is slow or away; fluentd without async even stops the container from
    starting. ``mode: non-blocking`` (with ``max-buffer-size``) drops lines
    instead.
    """
    if options.get("mode") == "non-blocking":
        return None
    fix = "set mode: non-blocking (and max-buffer-size) so it drops lines instead"
    if driver == "fluentd" and options.get("fluentd-async", "").lower() not in TRUE:
        return (
            "logging driver fluentd without fluentd-async: 'true' blocks the container "
            f"while fluentd is slow or away, and keeps it from starting; {fix}, or set "
            "fluentd-async: 'true'"
        )
    address = options.get(f"{driver}-address", "")
    scheme = address.partition("://")[0] if "://" in address else ""
    streams = {"syslog": ("tcp", "tcp+tls", "unix"), "gelf": ("tcp",)}.get(driver, ())
    if scheme in streams:
        return (
            f"logging driver {driver} over {scheme} ({address}) blocks the container's "
            f"writes while the receiver is slow or away; {fix}"
        )
    return None
