"""The rollout lock under races: one winner however the takeover of a stale lock
interleaves, between processes and between threads of one process (Salt's
``multiprocessing: False``), and a holder killed with SIGKILL loses it."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dockerops.lock
from dockerops.lock import LockHeld, RolloutLock

HOST = socket.gethostname()
REPO = Path(__file__).resolve().parents[2]
CONTENDERS = 4
# How long each contender stalls right after reading the lock's record: every
# contender reads the same stale record before any of them takes the lock over.
WINDOW = 0.5


def _slow_json() -> types.SimpleNamespace:
    """``json`` whose ``loads`` stalls after reading: the read-check-takeover window, widened."""

    def loads(data: Any) -> Any:
        value = json.loads(data)
        time.sleep(WINDOW)
        return value

    return types.SimpleNamespace(loads=loads, dumps=json.dumps, dump=json.dump)


def _contend(state_dir: str, number: int, start: Any, results: Any) -> None:
    dockerops.lock.json = _slow_json()  # type: ignore[assignment]
    lock = RolloutLock(state_dir, "web")
    start.wait()
    try:
        lock.acquire(f"job-{number}")
    except LockHeld:
        results.put(("lost", number))
        return
    results.put(("won", number))
    # Hold it while the others try, as a rollout would.
    time.sleep(CONTENDERS * WINDOW + 1)
    lock.release()


def test_processes_taking_over_the_same_stale_lock_give_one_winner(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = {"pid": dead.pid, "host": HOST, "jid": "dead", "what": "rollout", "since": "then"}
    path = tmp_path / "locks" / "web.lock"
    path.parent.mkdir()
    path.write_text(json.dumps(stale))
    context = multiprocessing.get_context("fork")
    start = context.Barrier(CONTENDERS)
    results = context.Queue()
    contenders = [
        context.Process(target=_contend, args=(str(tmp_path), n, start, results))
        for n in range(CONTENDERS)
    ]
    for process in contenders:
        process.start()
    outcomes = [results.get(timeout=60) for _ in contenders]
    for process in contenders:
        process.join(60)
        assert process.exitcode == 0

    winners = [number for outcome, number in outcomes if outcome == "won"]
    assert len(winners) == 1, f"{len(winners)} processes took the lock over: {outcomes}"
    assert not path.exists()  # the winner released it


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    # flock locks belong to an open file: each acquire opens the lock anew, so
    # two jobs run as threads of one minion exclude each other like processes.
    start = threading.Barrier(CONTENDERS)
    outcomes: list[str] = []
    locks = [RolloutLock(tmp_path, "web") for _ in range(CONTENDERS)]

    def contend(lock: RolloutLock) -> None:
        start.wait()
        try:
            lock.acquire()
        except LockHeld:
            outcomes.append("lost")
        else:
            outcomes.append("won")

    threads = [threading.Thread(target=contend, args=(lock,)) for lock in locks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["lost"] * (CONTENDERS - 1) + ["won"]
    for lock in locks:
        lock.release()  # only the winner holds anything
    assert not (tmp_path / "locks" / "web.lock").exists()
    RolloutLock(tmp_path, "web").acquire()  # free again


def test_acquire_racing_a_release_never_gives_two_holders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B opens the lock file, then stalls before locking it; meanwhile its holder
    # releases it (unlinks it) and C takes a new one. B then locks the unlinked
    # file: it must notice and not count itself a holder beside C.
    holder = RolloutLock(tmp_path, "web")
    holder.acquire("A")
    opened = threading.Event()
    go_on = threading.Event()
    real_flock = dockerops.lock.fcntl.flock

    def stalling_flock(fd: int, operation: int) -> None:
        if threading.current_thread().name == "B" and not go_on.is_set():
            opened.set()
            assert go_on.wait(10)
        real_flock(fd, operation)

    monkeypatch.setattr(dockerops.lock.fcntl, "flock", stalling_flock)
    outcome: list[str] = []

    def contender_b() -> None:
        try:
            RolloutLock(tmp_path, "web").acquire("B")
        except LockHeld as err:
            outcome.append(str(err))
        else:
            outcome.append("B holds it")

    b = threading.Thread(target=contender_b, name="B")
    b.start()
    assert opened.wait(10)
    holder.release()
    c = RolloutLock(tmp_path, "web")
    c.acquire("C")
    go_on.set()
    b.join(10)

    assert len(outcome) == 1 and "job C" in outcome[0], outcome
    assert json.loads((tmp_path / "locks" / "web.lock").read_text())["jid"] == "C"


HOLD = """
import json, sys, time
from dockerops.lock import RolloutLock
me = RolloutLock(sys.argv[1], "web").acquire("20240101000000000001", "rollout")
print(json.dumps(me), flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Another process holding the lock; yields it and its lock record."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        record = json.loads(child.stdout.readline())
        yield child, record
    finally:
        child.kill()
        child.wait()


def test_lock_of_a_live_holder_is_refused(
    tmp_path: Path, holder_process: tuple[subprocess.Popen[str], dict[str, Any]]
) -> None:
    child, record = holder_process

    with pytest.raises(LockHeld) as caught:
        RolloutLock(tmp_path, "web").acquire("2")

    assert f"pid {child.pid} on {HOST}" in str(caught.value)
    assert "job 20240101000000000001" in str(caught.value)
    assert json.loads((tmp_path / "locks" / "web.lock").read_text()) == record


def test_lock_of_a_holder_killed_with_sigkill_is_taken_over(
    tmp_path: Path, holder_process: tuple[subprocess.Popen[str], dict[str, Any]]
) -> None:
    child, record = holder_process
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    lock = RolloutLock(tmp_path, "web")

    me = lock.acquire("2")

    assert me["pid"] == os.getpid()
    # What the converge side records as an interrupted rollout.
    assert lock.previous == record
    assert lock.previous["pid"] == child.pid
    lock.release()
    again = RolloutLock(tmp_path, "web")
    again.acquire("3")
    assert again.previous is None  # released properly this time
