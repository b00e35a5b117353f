"""Errors raised by the library.

They subclass Salt's own exceptions, so the Salt-facing modules can let them
through unchanged and states turn them into ``result: False`` with a single
``except (CommandExecutionError, SaltInvocationError)``. Docker errors are
translated into these in exactly one place: :mod:`dockerops.client`.
"""

from __future__ import annotations

from salt.exceptions import CommandExecutionError, SaltInvocationError


class SpecError(SaltInvocationError):  # type: ignore[misc]
    """Bad pillar or arguments. Every problem names its pillar path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid dockerops pillar:\n  " + "\n  ".join(self.problems))


class ArgumentError(SpecError):
    """Bad arguments to a function (a runner's ``batch=abc``), not bad pillar.
    Every problem names the argument."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        head = "invalid argument: " if len(self.problems) == 1 else "invalid arguments:\n  "
        SaltInvocationError.__init__(self, head + "\n  ".join(self.problems))


class StoreError(CommandExecutionError):  # type: ignore[misc]
    """A key-value store failed (etcd: :class:`dockerops.etcd.EtcdError`)."""


class DockerError(CommandExecutionError):  # type: ignore[misc]
    """The Docker daemon refused or failed an operation."""


class DockerUnavailable(DockerError):
    """The Docker daemon does not answer."""


class NotFound(DockerError):
    """A container or image that was expected is not there."""
