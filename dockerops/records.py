"""What dockerops remembers on a host, beyond container labels.

One small JSON file per service under ``/var/lib/dockerops/services`` (minion
option ``dockerops.state_dir``), written atomically. Today it records which
config version each live-mounted replica has loaded (labels cannot change after
a container is created, but a ``signal`` reload moves a replica to a new
version).

Everything dockerops writes under the state dir (records, rollout locks and
history) fails with a :class:`StateDirError` that says what could not be
written and where (a full disk, a read-only mount), never a bare OSError.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from salt.exceptions import SaltInvocationError

from .errors import DockerError
from .spec import check_service_name

DEFAULT_STATE_DIR = "/var/lib/dockerops"
# Rollouts kept in each service's history (minion option dockerops.history_keep).
DEFAULT_HISTORY_KEEP = 100


class StateDirError(DockerError):
    """dockerops could not write its own state (a lock, the history, a record)."""


def state_dir(opts: Any) -> str:
    return str(opts.get("dockerops.state_dir") or DEFAULT_STATE_DIR)


def history_keep(opts: Any) -> int:
    """Rollouts kept per service in its history: minion option ``dockerops.history_keep``."""
    value = opts.get("dockerops.history_keep")
    if value is None:
        return DEFAULT_HISTORY_KEEP
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SaltInvocationError(
            f"minion option dockerops.history_keep must be a whole number of at least 1, "
            f"not {value!r}"
        )
    return value


@contextlib.contextmanager
def writing(what: str, path: str | Path) -> Iterator[None]:
    """Turn an OSError while writing state (a full disk, a read-only mount) into a
    :class:`StateDirError` that says what could not be written, and where."""
    try:
        yield
    except OSError as err:
        reason = err.strerror or str(err)
        raise StateDirError(f"could not write {what} {path}: {reason}") from err


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a private temporary file beside ``path``, fsync it and
    rename it over ``path``: a reader sees the old content or the new, never a
    part. The temporary file is removed if anything fails (a full disk)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_mapping(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing, torn, not UTF-8 or
    not an object (state files are rewritten whole, so {} starts afresh)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_json(what: str, path: Path, data: Any, indent: int | None = None) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically, making its directory;
    StateDirError (naming ``what``) if it cannot be written."""
    separators = None if indent else (",", ":")
    content = json.dumps(data, indent=indent, separators=separators, sort_keys=True).encode()
    with writing(what, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, content)


class ServiceRecord:
    def __init__(self, base: str | Path, service: str) -> None:
        # The name becomes a file name: never a path (``..``, ``/``) or empty.
        self.path = Path(base) / "services" / f"{check_service_name(service)}.json"
        self.service = service

    def load(self) -> dict[str, Any]:
        return read_mapping(self.path)

    def save(self, data: dict[str, Any]) -> None:
        """Replace the record atomically (mode 0600); StateDirError if it cannot be written."""
        save_json(f"the record of service {self.service}", self.path, data, indent=1)

    def config_seen(self) -> dict[str, str]:
        seen = self.load().get("config_seen")
        if not isinstance(seen, dict):
            return {}
        return {str(k): str(v) for k, v in seen.items()}

    def set_config_seen(self, seen: dict[str, str]) -> None:
        data = self.load()
        if data.get("config_seen") == seen:
            return
        data["config_seen"] = seen
        self.save(data)
