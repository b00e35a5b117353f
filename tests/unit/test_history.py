"""dockerops.history: the JSON-lines rollout history (the lock is in test_lock.py)."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from salt.exceptions import SaltInvocationError

import dockerops.history
from dockerops.errors import DockerError
from dockerops.history import READ_BLOCK, History, _lines_from_end
from dockerops.lock import RolloutLock
from dockerops.records import DEFAULT_HISTORY_KEEP, ServiceRecord, StateDirError, history_keep

# --- History ---------------------------------------------------------------------------------


def entry(number: int, result: bool = True) -> dict[str, Any]:
    return {"to": f"registry.example.com/web:{number}", "result": result, "jid": str(number)}


def test_history_path(tmp_path: Path) -> None:
    assert History(tmp_path, "web").path == tmp_path / "history" / "web.jsonl"


def test_append_and_entries_roundtrip_in_order(tmp_path: Path) -> None:
    written = [
        entry(1),
        entry(2, result=False),
        {"to": "x", "nested": {"a": [1, 2]}, "error": None, "duration": 1.25},
    ]
    history = History(tmp_path / "new", "web")
    for item in written:
        history.append(item)

    assert history.entries() == written
    assert History(tmp_path / "new", "web").entries() == written  # read back from disk
    lines = history.path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == written


def test_histories_are_per_service(tmp_path: Path) -> None:
    History(tmp_path, "web").append(entry(1))
    History(tmp_path, "api").append(entry(2))

    assert History(tmp_path, "web").entries() == [entry(1)]
    assert History(tmp_path, "api").entries() == [entry(2)]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (None, [1, 2, 3, 4, 5]),
        (1, [5]),
        (3, [3, 4, 5]),
        (5, [1, 2, 3, 4, 5]),
        (50, [1, 2, 3, 4, 5]),
    ],
)
def test_entries_limit_returns_the_newest(
    tmp_path: Path, limit: int | None, expected: list[int]
) -> None:
    history = History(tmp_path, "web")
    for number in range(1, 6):
        history.append(entry(number))

    assert history.entries(limit) == [entry(number) for number in expected]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param('{"to": "registry.example.com/web:9", "res', id="torn"),
        pytest.param("garbage", id="garbage"),
        pytest.param("", id="blank"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param("42", id="a-number"),
    ],
)
def test_corrupt_lines_are_skipped(tmp_path: Path, bad: str) -> None:
    history = History(tmp_path, "web")
    history.append(entry(1))
    with open(history.path, "a") as handle:
        handle.write(bad + "\n")
    history.append(entry(2))
    with open(history.path, "a") as handle:
        handle.write(bad)  # a torn last line, no newline

    assert history.entries() == [entry(1), entry(2)]
    assert history.entries(1) == [entry(2)]


def test_append_after_a_torn_last_line_is_still_read(tmp_path: Path) -> None:
    # A crash mid-write leaves a last line without its newline; the next append
    # must not be glued onto it and lost with it.
    history = History(tmp_path, "web")
    history.append(entry(1))
    with open(history.path, "a") as handle:
        handle.write('{"to": "registry.example.com/web:2", "res')

    history.append(entry(3))

    assert history.entries() == [entry(1), entry(3)]


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        pytest.param([True], 1, id="only"),
        pytest.param([True, True, True], 3, id="newest"),
        pytest.param([True, True, False], 2, id="skips-failed"),
        pytest.param([True, False, False, False], 1, id="skips-several"),
        pytest.param([False, False], None, id="none-good"),
        pytest.param([], None, id="empty"),
    ],
)
def test_last_good(tmp_path: Path, results: list[bool], expected: int | None) -> None:
    history = History(tmp_path, "web")
    for number, result in enumerate(results, 1):
        history.append(entry(number, result=result))

    assert history.last_good() == (None if expected is None else entry(expected))


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        pytest.param(set(), 3, id="nothing-running"),
        pytest.param({"registry.example.com/web:3"}, 2, id="skips-the-running-version"),
        pytest.param(
            {"registry.example.com/web:3", "registry.example.com/web:2"},
            1,
            id="skips-every-running-version",
        ),
        pytest.param({f"registry.example.com/web:{i}" for i in (1, 2, 3)}, None, id="all-running"),
    ],
)
def test_last_good_other_than_what_runs(
    tmp_path: Path, running: set[str], expected: int | None
) -> None:
    history = History(tmp_path, "web")
    for number in (1, 2, 3):
        history.append(entry(number))
    history.append(entry(4, result=False))

    assert history.last_good(other_than=running) == (None if expected is None else entry(expected))


@pytest.mark.parametrize("result", ["true", 1, "yes", None])
def test_last_good_needs_result_true_itself(tmp_path: Path, result: object) -> None:
    history = History(tmp_path, "web")
    history.append(entry(1))
    history.append({**entry(2), "result": result})

    assert history.last_good() == entry(1)


def test_last_good_returns_a_copy(tmp_path: Path) -> None:
    history = History(tmp_path, "web")
    history.append(entry(1))

    good = history.last_good()
    assert good is not None
    good["to"] = "changed"

    assert history.last_good() == entry(1)


def test_missing_history(tmp_path: Path) -> None:
    history = History(tmp_path / "nothing" / "here", "web")

    assert history.entries() == []
    assert history.entries(5) == []
    assert history.last_good() is None
    assert not history.path.exists()


# --- A full disk under state_dir ---------------------------------------------------------------


@pytest.fixture
def full_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir on a 64 KiB tmpfs, filled up (its directories made beforehand)."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        for sub in ("locks", "history", "services"):
            (mount / sub).mkdir()
        # An old record and history to keep intact (written before the disk filled up).
        (mount / "services" / "web.json").write_text('{"config_seen": {}}')
        # A history of exactly one page: the next append needs another.
        first = json.dumps(entry(1)) + "\n"
        padding = "x" * (4096 - len(first) - len('{"pad": ""}\n'))
        (mount / "history" / "web.jsonl").write_text(first + json.dumps({"pad": padding}) + "\n")
        with open(mount / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_lock_on_a_full_disk_says_what_it_could_not_write(full_state_dir: Path) -> None:
    lock = RolloutLock(full_state_dir, "web")

    with pytest.raises(StateDirError) as caught:
        lock.acquire("1")

    assert str(caught.value) == (
        f"could not write the rollout lock {lock.path}: No space left on device"
    )
    assert isinstance(caught.value, DockerError)  # a clean Salt error, not a traceback
    assert not lock.path.exists()  # no empty lock left behind


def test_history_on_a_full_disk_says_what_it_could_not_write(full_state_dir: Path) -> None:
    history = History(full_state_dir, "web")

    with pytest.raises(StateDirError) as caught:
        history.append(entry(2))

    assert str(caught.value) == (
        f"could not write the rollout history of web {history.path}: No space left on device"
    )
    assert history.entries()[0] == entry(1)
    assert history.path.stat().st_size == 4096


def test_record_on_a_full_disk_says_what_it_could_not_write(full_state_dir: Path) -> None:
    record = ServiceRecord(full_state_dir, "web")

    with pytest.raises(StateDirError) as caught:
        record.set_config_seen({"abc": "1" * 4096})

    assert str(caught.value) == (
        f"could not write the record of service web {record.path}: No space left on device"
    )
    assert record.load() == {"config_seen": {}}
    assert sorted(p.name for p in record.path.parent.iterdir()) == ["web.json"]


# --- History: bounded, trimmed atomically, read from the end -----------------------------------


def test_history_keeps_the_newest_entries(tmp_path: Path) -> None:
    history = History(tmp_path, "web", keep=5)

    for number in range(1, 13):
        history.append(entry(number))

    assert history.entries() == [entry(n) for n in range(8, 13)]
    assert len(history.path.read_text().splitlines()) == 5
    assert sorted(p.name for p in history.path.parent.iterdir()) == ["web.jsonl"]


def test_history_default_keep_is_bounded(tmp_path: Path) -> None:
    history = History(tmp_path, "web")
    for number in range(DEFAULT_HISTORY_KEEP + 20):
        history.append(entry(number))

    assert len(history.path.read_text().splitlines()) == DEFAULT_HISTORY_KEEP
    assert history.entries(1) == [entry(DEFAULT_HISTORY_KEEP + 19)]


def test_an_oversized_history_from_before_is_trimmed_at_the_next_append(tmp_path: Path) -> None:
    history = History(tmp_path, "web", keep=3)
    history.path.parent.mkdir(parents=True)
    history.path.write_text("".join(json.dumps(entry(n)) + "\n" for n in range(1000)))

    history.append(entry(1000))

    assert history.entries() == [entry(998), entry(999), entry(1000)]


def test_a_trim_never_loses_a_concurrent_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One append trims (writes the kept lines to a new file, renames it over
    # the old) while another appends: the second must land in the new file,
    # not in the old one the rename throws away.
    history = History(tmp_path, "web", keep=3)
    for number in range(1, 4):
        history.append(entry(number))
    trimming = threading.Event()
    real_replace = dockerops.history.replace_atomically

    def slow_replace(path: Path, data: bytes) -> None:
        trimming.set()
        time.sleep(0.5)
        real_replace(path, data)

    monkeypatch.setattr(dockerops.history, "replace_atomically", slow_replace)
    trimmer = threading.Thread(target=History(tmp_path, "web", keep=3).append, args=(entry(4),))
    trimmer.start()
    assert trimming.wait(5)
    History(tmp_path, "web", keep=1000).append(entry(5))
    trimmer.join()

    assert history.entries() == [entry(2), entry(3), entry(4), entry(5)]


def _append_many(state_dir: str, worker: int, count: int) -> None:
    history = History(state_dir, "web", keep=10_000)
    for number in range(count):
        history.append({"worker": worker, "number": number})


def test_concurrent_appends_from_processes_are_all_kept(tmp_path: Path) -> None:
    workers = [
        multiprocessing.get_context("fork").Process(
            target=_append_many, args=(str(tmp_path), w, 50)
        )
        for w in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0

    entries = History(tmp_path, "web").entries()
    assert sorted((e["worker"], e["number"]) for e in entries) == [
        (w, n) for w in range(4) for n in range(50)
    ]
    for w in range(4):  # each worker's entries in its own order
        assert [e["number"] for e in entries if e["worker"] == w] == list(range(50))


def test_entries_read_only_the_end_of_a_long_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = History(tmp_path, "web")
    history.path.parent.mkdir(parents=True)
    history.path.write_text("".join(json.dumps(entry(n)) + "\n" for n in range(20_000)))
    read: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, length: int, offset: int) -> bytes:
        data = real_pread(fd, length, offset)
        read.append(len(data))
        return data

    monkeypatch.setattr(dockerops.history.os, "pread", counting_pread)

    assert history.entries(3) == [entry(19_997), entry(19_998), entry(19_999)]
    assert 0 < sum(read) <= READ_BLOCK
    read.clear()
    assert history.last_good() == entry(19_999)
    assert 0 < sum(read) <= READ_BLOCK
    assert history.path.stat().st_size > 50 * READ_BLOCK


@pytest.mark.parametrize("block", [1, 2, 3, 5, 8, 64, 8192])
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"a",
        b"a\n",
        b"a\nbb\nccc\n",
        b"a\nbb\nccc",
        b"\n\na\n\n\nbb\n",
        b"first line is long\nx\n" * 7,
    ],
)
def test_lines_from_end(tmp_path: Path, block: int, content: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    expected = []
    offset = 0
    for line in content.split(b"\n"):
        if line.strip():
            expected.append((offset, line))
        offset += len(line) + 1
    fd = os.open(path, os.O_RDONLY)
    try:
        assert list(_lines_from_end(fd, block)) == expected[::-1]
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, DEFAULT_HISTORY_KEEP), (5, 5), ("7", 7), (1, 1)],
)
def test_history_keep_option(value: object, expected: int) -> None:
    opts = {} if value is None else {"dockerops.history_keep": value}

    assert history_keep(opts) == expected


@pytest.mark.parametrize("value", [0, -1, "abc", 1.5, True, [3]])
def test_history_keep_option_refuses_nonsense(value: object) -> None:
    with pytest.raises(
        SaltInvocationError, match=r"dockerops\.history_keep must be a whole number"
    ):
        history_keep({"dockerops.history_keep": value})
