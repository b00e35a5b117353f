"""dockerops.history: the per-service rollout lock and the JSON-lines rollout history."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockerops.errors import DockerError
from dockerops.history import History, LockHeld, RolloutLock

HOST = socket.gethostname()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of another process that runs for the whole test."""
    child = subprocess.Popen(["sleep", "600"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def lock_path(state_dir: Path, service: str = "web") -> Path:
    return state_dir / "locks" / f"{service}.lock"


def write_lock(state_dir: Path, holder: Any, service: str = "web") -> Path:
    """A lock file as another process left it (``holder``: JSON data, or raw text)."""
    path = lock_path(state_dir, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(holder if isinstance(holder, str) else json.dumps(holder))
    return path


def read_lock(state_dir: Path, service: str = "web") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(lock_path(state_dir, service).read_text())
    return data


# --- RolloutLock: acquire --------------------------------------------------------------------


def test_acquire_creates_the_lock_file_with_its_holder(tmp_path: Path) -> None:
    before = time.gmtime(time.time() - 1)

    me = RolloutLock(tmp_path, "web").acquire("20240101123456789012", "rollback")

    assert read_lock(tmp_path) == me
    assert set(me) == {"pid", "host", "jid", "what", "since"}
    assert (me["pid"], me["host"], me["jid"], me["what"]) == (
        os.getpid(),
        HOST,
        "20240101123456789012",
        "rollback",
    )
    since = time.strptime(me["since"], "%Y-%m-%dT%H:%M:%SZ")
    assert before[:6] <= since[:6] <= time.gmtime(time.time() + 1)[:6]


def test_acquire_defaults(tmp_path: Path) -> None:
    me = RolloutLock(tmp_path, "web").acquire()

    assert (me["jid"], me["what"]) == (None, "rollout")


def test_locks_are_per_service(tmp_path: Path) -> None:
    RolloutLock(tmp_path, "web").acquire("1")

    RolloutLock(tmp_path, "api").acquire("2")

    assert read_lock(tmp_path, "web")["jid"] == "1"
    assert read_lock(tmp_path, "api")["jid"] == "2"


def test_second_acquire_while_held_raises(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")
    lock.acquire("111", "rollout")

    with pytest.raises(LockHeld) as caught:
        RolloutLock(tmp_path, "web").acquire("222", "restart")

    message = str(caught.value)
    assert f"pid {os.getpid()}" in message
    assert "job 111" in message
    assert str(lock_path(tmp_path)) in message
    assert "a rollout of web is already running" in message
    assert read_lock(tmp_path)["jid"] == "111"  # the holder keeps it


def test_lock_held_by_another_live_process_on_this_host(tmp_path: Path, live_pid: int) -> None:
    holder = {"pid": live_pid, "host": HOST, "jid": "777", "what": "restart", "since": "x"}
    path = write_lock(tmp_path, holder)

    with pytest.raises(LockHeld) as caught:
        RolloutLock(tmp_path, "web").acquire("888")

    message = str(caught.value)
    assert f"pid {live_pid}" in message
    assert "job 777" in message
    assert f"lock: {path}" in message
    assert "a restart of web" in message
    assert json.loads(path.read_text()) == holder


def test_lock_held_is_a_docker_error(tmp_path: Path) -> None:
    # Salt states turn DockerError (CommandExecutionError) into result False.
    RolloutLock(tmp_path, "web").acquire()

    with pytest.raises(DockerError):
        RolloutLock(tmp_path, "web").acquire()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path, dead_pid: int) -> None:
    write_lock(tmp_path, {"pid": dead_pid, "host": HOST, "jid": "1", "what": "rollout"})

    me = RolloutLock(tmp_path, "web").acquire("2")

    assert read_lock(tmp_path) == me
    assert (me["pid"], me["jid"]) == (os.getpid(), "2")


@pytest.mark.parametrize("alive", [False, True], ids=["dead-pid", "live-pid"])
def test_lock_of_another_host_is_never_taken_over(
    tmp_path: Path, dead_pid: int, live_pid: int, alive: bool
) -> None:
    # The state dir may be shared: the pid means nothing on this host.
    pid = live_pid if alive else dead_pid
    holder = {"pid": pid, "host": f"not-{HOST}", "jid": "9", "what": "rollout"}
    path = write_lock(tmp_path, holder)

    with pytest.raises(LockHeld) as caught:
        RolloutLock(tmp_path, "web").acquire("10")

    assert f"pid {pid}" in str(caught.value)
    assert "job 9" in str(caught.value)
    assert json.loads(path.read_text()) == holder


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param("", id="empty"),
        pytest.param("not json at all", id="garbage"),
        pytest.param('{"pid": 12', id="truncated"),
        pytest.param("[1, 2]", id="a-list"),
        pytest.param('"web"', id="a-string"),
        pytest.param("null", id="null"),
        pytest.param("\x00\xff\x00", id="binary"),
    ],
)
def test_unreadable_lock_is_taken_over(tmp_path: Path, contents: str) -> None:
    write_lock(tmp_path, contents)

    me = RolloutLock(tmp_path, "web").acquire("2")

    assert read_lock(tmp_path) == me


@pytest.mark.parametrize(
    "holder",
    [
        pytest.param({"pid": "not-a-pid", "host": HOST}, id="pid-not-a-number"),
        pytest.param({"pid": None, "host": HOST}, id="pid-null"),
        pytest.param({"host": HOST, "jid": "1"}, id="no-pid"),
        pytest.param({}, id="empty-object"),
    ],
)
def test_corrupt_lock_holder_is_taken_over(tmp_path: Path, holder: dict[str, Any]) -> None:
    # A lock this code wrote always names a pid and a host. Without a usable
    # pid nothing can ever show its holder alive, so it must not block every
    # rollout of the service forever (nor crash the state with a ValueError).
    write_lock(tmp_path, holder)

    me = RolloutLock(tmp_path, "web").acquire("2")

    assert read_lock(tmp_path) == me


def test_lock_directory_is_created(tmp_path: Path) -> None:
    state_dir = tmp_path / "does" / "not" / "exist"

    RolloutLock(state_dir, "web").acquire()

    assert lock_path(state_dir).is_file()


def test_holder(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")
    assert lock.holder() is None

    me = lock.acquire("5")

    assert lock.holder() == me
    write_lock(tmp_path, "garbage")
    assert lock.holder() is None


# --- RolloutLock: release --------------------------------------------------------------------


def test_release_removes_the_lock_this_process_holds(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")
    lock.acquire()

    lock.release()

    assert not lock_path(tmp_path).exists()
    RolloutLock(tmp_path, "web").acquire()  # free again


def test_release_without_a_lock_does_nothing(tmp_path: Path) -> None:
    RolloutLock(tmp_path, "web").release()

    assert not lock_path(tmp_path).exists()


@pytest.mark.parametrize("host", [HOST, f"not-{HOST}"])
def test_release_leaves_another_process_lock(tmp_path: Path, live_pid: int, host: str) -> None:
    holder = {"pid": live_pid, "host": host, "jid": "1", "what": "rollout"}
    path = write_lock(tmp_path, holder)

    RolloutLock(tmp_path, "web").release()

    assert json.loads(path.read_text()) == holder


def test_release_leaves_a_lock_of_another_host_with_the_same_pid(tmp_path: Path) -> None:
    # Pid numbers are per host: on a shared state dir, another machine's
    # rollout may run under the very pid this process has.
    holder = {"pid": os.getpid(), "host": f"not-{HOST}", "jid": "1", "what": "rollout"}
    path = write_lock(tmp_path, holder)

    RolloutLock(tmp_path, "web").release()

    assert path.exists()
    assert json.loads(path.read_text()) == holder


def test_release_leaves_an_unreadable_lock(tmp_path: Path) -> None:
    path = write_lock(tmp_path, "garbage")

    RolloutLock(tmp_path, "web").release()

    assert path.read_text() == "garbage"


# --- RolloutLock: held() ---------------------------------------------------------------------


def test_held_holds_inside_and_releases_after(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")

    with lock.held("42", "restart") as me:
        assert read_lock(tmp_path) == me
        assert (me["jid"], me["what"]) == ("42", "restart")
        with pytest.raises(LockHeld):
            RolloutLock(tmp_path, "web").acquire()

    assert not lock_path(tmp_path).exists()


def test_held_releases_on_exception(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")

    with pytest.raises(RuntimeError, match="boom"), lock.held("42"):
        raise RuntimeError("boom")

    assert not lock_path(tmp_path).exists()


def test_held_that_cannot_acquire_leaves_the_holder_alone(tmp_path: Path, live_pid: int) -> None:
    holder = {"pid": live_pid, "host": HOST, "jid": "1", "what": "rollout"}
    path = write_lock(tmp_path, holder)

    with pytest.raises(LockHeld), RolloutLock(tmp_path, "web").held("2"):
        pytest.fail("entered the block without the lock")

    assert json.loads(path.read_text()) == holder


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
