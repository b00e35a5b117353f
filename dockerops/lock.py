"""The rollout lock: one rollout of a service at a time, under a state dir.

It is an ``flock`` on ``locks/<service>.lock``, held for the rollout's life:
the kernel drops it when its holder dies, however it dies, so whoever gets it
next knows that nobody else holds it. There is no read-check-unlink step to
race on. The file holds its holder's JSON (pid, host, jid, what, since) for the
"already running" message; a record found in a lock that nobody holds was left
by a holder that died without releasing it (:attr:`RolloutLock.previous`).

A lock with a ``scope`` guards something else of the service than its rollout
on one host: the runner's ``RolloutLock(cachedir, "web", scope="fleet")`` keeps
one fleet rollout of web at a time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DockerError
from .records import writing
from .spec import check_service_name

# Marks a lock record written by a holder that keeps the flock (see _abandoned).
LOCK_KIND = "flock"
# A scope is one lowercase word: it becomes part of the lock file's name.
SCOPE_RE = re.compile(r"[a-z]{1,20}")


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


def open_locked(path: Path, flags: int, blocking: bool) -> int | None:
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

    ``scope`` says what of the service it locks when that is not its rollout
    on one host: with ``scope="fleet"`` it is ``locks/fleet-<service>.lock``
    (the name the fleet lock had before it had a scope, so a runner of an
    earlier release still meets it), and a second caller reads "a fleet
    rollout of web is already running".

    One object holds the lock at most once; threads of one process exclude
    each other like processes do (each acquire opens the file anew, and
    flocks belong to an open file).
    """

    def __init__(self, state_dir: str | Path, service: str, scope: str | None = None) -> None:
        check_service_name(service)
        if scope is not None and not SCOPE_RE.fullmatch(scope):
            raise ValueError(f"a lock scope is one lowercase word, not {scope!r}")
        key = service if scope is None else f"{scope}-{service}"
        self.path = Path(state_dir) / "locks" / f"{key}.lock"
        self.service = service
        self.scope = scope
        # What a holder is doing, unless it says (acquire's ``what``).
        self.what = "rollout" if scope is None else f"{scope} rollout"
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

    def acquire(self, jid: str | None = None, what: str | None = None) -> dict[str, Any]:
        """Take the lock and record this process in it; return that record.

        ``what`` the holder is doing ("rollback", "config change"), for the
        message others get; by default :attr:`what`.

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
            "what": what or self.what,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lock": LOCK_KIND,
        }
        with writing("the rollout lock", self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_locked(self.path, os.O_RDWR, blocking=False)
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
                f"a {self.what} of {self.service} is already running (its holder has not "
                f"recorded itself yet); lock: {self.path}"
            )
        return LockHeld(
            f"a {record.get('what') or self.what} of {self.service} is already running "
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
    def held(self, jid: str | None = None, what: str | None = None) -> Iterator[dict[str, Any]]:
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
