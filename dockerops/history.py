"""Rollout locks and history on one host, under ``dockerops.state_dir``.

The lock makes sure one rollout per service runs at a time on a host; a lock
left by a process that died is detected (its pid no longer runs) and taken over.
The history is an append-only JSON-lines audit of every rollout: when, from
what to what, the result, how long it took and the Salt job id.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from .errors import DockerError


class LockHeld(DockerError):
    """Another live process holds the rollout lock."""


def _pid(holder: dict[str, Any] | None) -> int | None:
    """The holder's pid, or None when the lock is unusable (it is then taken over)."""
    if holder is None or not holder.get("host"):
        return None
    try:
        pid = int(holder.get("pid"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return pid if pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RolloutLock:
    """``state_dir/locks/<service>.lock``, created exclusively."""

    def __init__(self, state_dir: str | Path, service: str) -> None:
        self.path = Path(state_dir) / "locks" / f"{service}.lock"
        self.service = service

    def holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self, jid: str | None = None, what: str = "rollout") -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "jid": jid,
            "what": what,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        for _ in range(3):
            try:
                self._create(me)
            except FileExistsError:
                holder = self.holder()
                pid = _pid(holder)
                same_host = holder is not None and holder.get("host") == me["host"]
                if pid is None or (same_host and not _alive(pid)):
                    # Unreadable, or left by a process that died: take it over.
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                assert holder is not None
                raise LockHeld(
                    f"a {holder.get('what', 'rollout')} of {self.service} is already running "
                    f"(pid {pid} on {holder.get('host')}, job {holder.get('jid')}, since "
                    f"{holder.get('since')}); lock: {self.path}"
                ) from None
            return me
        raise LockHeld(f"could not take the rollout lock {self.path}")

    def _create(self, me: dict[str, Any]) -> None:
        """Create the lock file with its content in one step (FileExistsError if held).

        The content is written to a private file first and then hard-linked into
        place, so nobody ever reads a half-written lock.
        """
        fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            os.link(tmp, self.path)
        finally:
            os.unlink(tmp)

    def release(self) -> None:
        holder = self.holder()
        if (
            holder is not None
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
        ):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    @contextlib.contextmanager
    def held(self, jid: str | None = None, what: str = "rollout") -> Iterator[dict[str, Any]]:
        me = self.acquire(jid, what)
        try:
            yield me
        finally:
            self.release()


class History:
    """``state_dir/history/<service>.jsonl``: one JSON object per rollout."""

    def __init__(self, state_dir: str | Path, service: str) -> None:
        self.path = Path(state_dir) / "history" / f"{service}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True) + "\n"
        # After a crash mid-write the last line may be torn: start a new line.
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
        with open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return []
        out: list[dict[str, Any]] = []
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a torn last line from a crash
            if isinstance(item, dict):
                out.append(item)
        if limit is None:
            return out
        return out[-limit:] if limit > 0 else []

    def last_good(self, other_than: Collection[str] = ()) -> dict[str, Any] | None:
        """The newest successful rollout to an image not in ``other_than``.

        ``dockerops.rollback`` passes the images running now: the last good
        version is then the one to go back to.
        """
        for entry in reversed(self.entries()):
            if entry.get("result") is True and entry.get("to") not in other_than:
                return dict(entry)
        return None
