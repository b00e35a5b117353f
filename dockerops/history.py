"""The rollout history of each service on one host, under ``dockerops.state_dir``.

A JSON-lines audit of every rollout: when, from what to what, the result, how
long it took and the Salt job id. It keeps the newest ``keep`` entries of each
service, and is read from its end, as far as a caller needs. The lock that
keeps one rollout of a service at a time is :mod:`dockerops.lock`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Collection, Generator, Iterator
from pathlib import Path
from typing import Any

from .lock import open_locked
from .records import DEFAULT_HISTORY_KEEP, replace_atomically, write_all, writing
from .spec import check_service_name

# Bytes read at a time when reading the history from its end.
READ_BLOCK = 8192


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
            fd = open_locked(self.path, os.O_RDWR | os.O_APPEND, blocking=True)
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
