"""Rollout locks and history on one host, under ``dockerops.state_dir``.

The lock makes sure one rollout per service runs at a time on a host. It is an
``flock`` on ``locks/<service>.lock``, held for the rollout's life: the kernel
drops it when its holder dies, however it dies, so whoever gets it next knows
that nobody else holds it. There is no read-check-unlink step to race on. The
file holds its holder's JSON (pid, host, jid, what, since) for the "already
running" message; a record found in a lock that nobody holds was left by a
holder that died without releasing it (:attr:`RolloutLock.previous`).

The history is a JSON-lines audit of every rollout: when, from what to what,
the result, how long it took and the Salt job id. It keeps the newest ``keep``
entries of each service, and is read from its end, as far as a caller needs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Collection, Generator, Iterator
from pathlib import Path
from typing import Any

from .errors import DockerError
from .records import DEFAULT_HISTORY_KEEP, replace_atomically, write_all, writing
from .spec import check_service_name

# Marks a lock record written by a holder that keeps the flock (see _abandoned).
LOCK_KIND = "flock"
# Bytes read at a time when reading the history from its end.
READ_BLOCK = 8192


class LockHeld(DockerError):
    """Another live process holds the rollout lock."""


def _pid(holder: dict[str, Any] | None) -> int | None:
    """The holder's pid, or None when the record is unusable (it is then taken over)."""
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


def _open_locked(path: Path, flags: int, blocking: bool) -> int | None:
    """An fd of ``path`` holding its flock, or None when another holds it (non-blocking).

    Whoever releases a lock file unlinks it while holding the flock, so an fd
    opened just before may end up locking a file no longer in place: it is
    then dropped and ``path`` opened again.
    """
    while True:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    return None
                raise
            if _is_in_place(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _is_in_place(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file at ``path`` now (not one unlinked or replaced since)."""
    opened = os.fstat(fd)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


def _read_record(fd: int) -> tuple[bytes, dict[str, Any] | None]:
    """The lock file's raw content and its JSON object (None if unreadable)."""
    raw = os.pread(fd, 64 * 1024, 0)
    try:
        data = json.loads(raw)
    except ValueError:
        return raw, None
    return raw, data if isinstance(data, dict) else None


class RolloutLock:
    """``state_dir/locks/<service>.lock``: an flock held for a rollout's life.

    One object holds the lock at most once; threads of one process exclude
    each other like processes do (each acquire opens the file anew, and
    flocks belong to an open file).
    """

    def __init__(self, state_dir: str | Path, service: str) -> None:
        self.path = Path(state_dir) / "locks" / f"{check_service_name(service)}.lock"
        self.service = service
        # After acquire: the record of a holder that died without releasing
        # the lock (an interrupted rollout), {} if its record was unreadable,
        # None if the lock was free.
        self.previous: dict[str, Any] | None = None
        self._fd: int | None = None
        self._guard = threading.Lock()

    def holder(self) -> dict[str, Any] | None:
        """The record in the lock file (the holder's, if it is held), or None."""
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self, jid: str | None = None, what: str = "rollout") -> dict[str, Any]:
        """Take the lock and record this process in it; return that record.

        Raises :class:`LockHeld` naming the holder if another process or
        thread holds it, or if the record names a holder on another host
        (a shared state dir: the flock may not reach it), and
        :class:`~dockerops.records.StateDirError` if the lock cannot be written.
        Sets :attr:`previous`.
        """
        host = socket.gethostname()
        me = {
            "pid": os.getpid(),
            "host": host,
            "jid": jid,
            "what": what,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lock": LOCK_KIND,
        }
        with writing("the rollout lock", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_locked(self.path, os.O_RDWR, blocking=False)
        if fd is None:
            raise self._held(self.holder())
        try:
            raw, record = _read_record(fd)
            if record is not None and not _abandoned(record, host):
                raise self._held(record)
            self._write(fd, me, created=not raw.strip())
        except BaseException:
            os.close(fd)
            raise
        self.previous = record if record is not None else ({} if raw.strip() else None)
        self._fd = fd
        return me

    def _write(self, fd: int, me: dict[str, Any], created: bool) -> None:
        data = json.dumps(me).encode()
        try:
            with writing("the rollout lock", self.path):
                written = 0
                while written < len(data):
                    written += os.pwrite(fd, data[written:], written)
                os.ftruncate(fd, len(data))
                os.fsync(fd)
        except BaseException:
            if created:
                # Nothing of an earlier holder to keep: leave no empty lock behind.
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            raise

    def _held(self, record: dict[str, Any] | None) -> LockHeld:
        if record is None:
            # Its holder is between taking the lock and writing its record.
            return LockHeld(
                f"a rollout of {self.service} is already running (its holder has not "
                f"recorded itself yet); lock: {self.path}"
            )
        return LockHeld(
            f"a {record.get('what', 'rollout')} of {self.service} is already running "
            f"(pid {record.get('pid')} on {record.get('host')}, job {record.get('jid')}, "
            f"since {record.get('since')}); lock: {self.path}"
        )

    def release(self) -> None:
        """Give the lock up, if this object holds it (safe to call twice, or from
        another thread: the file is unlinked and closed once)."""
        with self._guard:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Unlinked while still locked: a waiter that opened it sees it is
            # no longer in place and opens the path again.
            if _is_in_place(fd, self.path):
                try:
                    os.unlink(self.path)
                except OSError:
                    # Do not let the next holder take this record for a crash.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def held(self, jid: str | None = None, what: str = "rollout") -> Iterator[dict[str, Any]]:
        me = self.acquire(jid, what)
        try:
            yield me
        finally:
            self.release()


def _abandoned(record: dict[str, Any], host: str) -> bool:
    """Whether the record in a lock file whose flock was free is a dead holder's.

    A record of another host is never taken over: on a shared state dir the
    flock may not reach that host. A record without the flock mark comes from
    a dockerops that only wrote the file (before an upgrade): its holder counts
    as long as its pid runs. A usable pid is needed either way, or nothing could
    ever show the holder alive.
    """
    pid = _pid(record)
    if pid is None:
        return True
    if record.get("host") != host:
        return False
    if record.get("lock") == LOCK_KIND:
        return True
    return pid == os.getpid() or not _alive(pid)


class History:
    """``state_dir/history/<service>.jsonl``: one JSON object per rollout, oldest first.

    Appends hold the file's flock, and trim it to its newest ``keep`` lines by
    writing a new file and renaming it over the old one, so neither a
    concurrent append nor a reader ever sees it torn or loses an entry.
    """

    def __init__(
        self, state_dir: str | Path, service: str, keep: int = DEFAULT_HISTORY_KEEP
    ) -> None:
        self.path = Path(state_dir) / "history" / f"{check_service_name(service)}.jsonl"
        self.service = service
        self.keep = max(1, int(keep))

    def append(self, entry: dict[str, Any]) -> None:
        """Add ``entry``; StateDirError if it cannot be written (a full disk)."""
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with writing(f"the rollout history of {self.service}", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_locked(self.path, os.O_RDWR | os.O_APPEND, blocking=True)
            assert fd is not None
            try:
                size = os.fstat(fd).st_size
                # After a crash mid-write the last line may be torn: start a new line.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                write_all(fd, line)
                os.fsync(fd)
                self._trim(fd)
            finally:
                os.close(fd)

    def _trim(self, fd: int) -> None:
        """Keep the newest ``keep`` lines (the caller holds the file's flock).

        The entry is already written: a trim that fails (a full disk) is left
        for the next append.
        """
        start = None
        for count, (offset, _line) in enumerate(_lines_from_end(fd), 1):
            if count == self.keep:
                start = offset
                break
        if not start:
            return
        kept = os.pread(fd, os.fstat(fd).st_size - start, start)
        with contextlib.suppress(OSError):
            replace_atomically(self.path, kept)

    def _newest_first(self) -> Generator[dict[str, Any], None, None]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            for _offset, line in _lines_from_end(fd):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a crash
                if isinstance(item, dict):
                    yield item
        finally:
            os.close(fd)

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` entries (None: all), oldest first; read from the end."""
        if limit is not None and limit <= 0:
            return []
        out: list[dict[str, Any]] = []
        with contextlib.closing(self._newest_first()) as newest_first:
            for item in newest_first:
                out.append(item)
                if limit is not None and len(out) >= limit:
                    break
        out.reverse()
        return out

    def last_good(self, other_than: Collection[str] = ()) -> dict[str, Any] | None:
        """The newest successful rollout to an image not in ``other_than``.

        ``dockerops.rollback`` passes the images running now: the last good
        version is then the one to go back to.
        """
        with contextlib.closing(self._newest_first()) as newest_first:
            for entry in newest_first:
                if entry.get("result") is True and entry.get("to") not in other_than:
                    return dict(entry)
        return None


def _lines_from_end(fd: int, block: int = READ_BLOCK) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of an open file, last first, each with its offset.

    Read backwards ``block`` bytes at a time, so a caller that stops early
    reads only the end of the file.
    """
    end = os.fstat(fd).st_size
    position = end
    head = b""  # the start of the file's part not yet yielded: up to its first newline
    while position > 0:
        size = min(block, position)
        position -= size
        chunk = os.pread(fd, size, position) + head
        parts = chunk.split(b"\n")
        stop = position + len(chunk)
        for part in reversed(parts[1:]):
            start = stop - len(part)
            if part.strip():
                yield start, part
            stop = start - 1
        head = parts[0]
    if head.strip():
        yield 0, head
