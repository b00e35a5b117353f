"""dockerops.lock: the per-service rollout lock (an flock with its holder's record)."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockerops.errors import DockerError, SpecError
from dockerops.lock import LockHeld, RolloutLock
from dockerops.records import StateDirError

HOST = socket.gethostname()
RUNNER = Path(__file__).resolve().parents[2] / "_runners" / "dockerops.py"


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
    assert set(me) == {"pid", "host", "jid", "what", "since", "lock"}
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


# --- RolloutLock: previous (a holder that died without releasing) ------------------------------


def test_previous_is_none_when_the_lock_was_free(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")
    lock.acquire("1")
    lock.release()

    again = RolloutLock(tmp_path, "web")
    again.acquire("2")

    assert again.previous is None


def test_previous_is_the_record_of_a_dead_holder(tmp_path: Path, dead_pid: int) -> None:
    record = {"pid": dead_pid, "host": HOST, "jid": "1", "what": "rollout", "since": "then"}
    write_lock(tmp_path, record)
    lock = RolloutLock(tmp_path, "web")

    lock.acquire("2")

    assert lock.previous == record


def test_previous_of_an_unreadable_record_is_empty(tmp_path: Path) -> None:
    write_lock(tmp_path, '{"pid": 12')
    lock = RolloutLock(tmp_path, "web")

    lock.acquire("2")

    assert lock.previous == {}


def test_previous_of_an_empty_lock_file_is_none(tmp_path: Path) -> None:
    # Created by a process that died before it wrote anything: nothing ran.
    write_lock(tmp_path, "")
    lock = RolloutLock(tmp_path, "web")

    lock.acquire("2")

    assert lock.previous is None


def test_record_of_a_flock_holder_is_taken_over_when_its_flock_is_free(
    tmp_path: Path, live_pid: int
) -> None:
    # A record written under the flock whose flock nobody holds: its holder
    # died, even if its pid now runs something else.
    record = {"pid": live_pid, "host": HOST, "jid": "1", "what": "rollout", "lock": "flock"}
    write_lock(tmp_path, record)
    lock = RolloutLock(tmp_path, "web")

    lock.acquire("2")

    assert lock.previous == record
    assert read_lock(tmp_path)["jid"] == "2"


def test_a_second_object_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = RolloutLock(tmp_path, "web")
    first.acquire("1")

    second = RolloutLock(tmp_path, "web")
    with pytest.raises(LockHeld, match="job 1"):
        second.acquire("2")
    second.release()  # holds nothing: must not free the first's lock

    assert read_lock(tmp_path)["jid"] == "1"
    with pytest.raises(LockHeld):
        RolloutLock(tmp_path, "web").acquire("3")


def test_release_twice_is_harmless(tmp_path: Path) -> None:
    lock = RolloutLock(tmp_path, "web")
    lock.acquire("1")
    lock.release()
    other = RolloutLock(tmp_path, "web")
    other.acquire("2")

    lock.release()  # must not touch the lock the other holds now

    assert read_lock(tmp_path)["jid"] == "2"
    with pytest.raises(LockHeld):
        RolloutLock(tmp_path, "web").acquire("3")


def test_symlink_planted_at_the_lock_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    lock_path(tmp_path).parent.mkdir(parents=True)
    lock_path(tmp_path).symlink_to(target)

    with pytest.raises(StateDirError, match="could not write the rollout lock"):
        RolloutLock(tmp_path, "web").acquire()

    assert target.read_text() == "untouched"


# --- A scope: what of the service is locked ------------------------------------------------------


def test_a_scoped_lock_names_the_service_and_its_scope(tmp_path: Path) -> None:
    fleet = RolloutLock(tmp_path, "web", scope="fleet")
    me = fleet.acquire("1")

    with pytest.raises(LockHeld) as caught:
        RolloutLock(tmp_path, "web", scope="fleet").acquire("2")

    assert fleet.path == tmp_path / "locks" / "fleet-web.lock"
    assert me["what"] == "fleet rollout"
    assert str(caught.value) == (
        f"a fleet rollout of web is already running (pid {os.getpid()} on {HOST}, job 1, "
        f"since {me['since']}); lock: {fleet.path}"
    )


def test_a_scoped_lock_whose_holder_has_not_recorded_itself_names_its_scope(
    tmp_path: Path,
) -> None:
    write_lock(tmp_path, "", service="fleet-web")
    holder = RolloutLock(tmp_path, "web", scope="fleet")
    fd = os.open(holder.path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # taken, its record not written yet
        with pytest.raises(LockHeld) as caught:
            RolloutLock(tmp_path, "web", scope="fleet").acquire()
    finally:
        os.close(fd)

    assert str(caught.value) == (
        "a fleet rollout of web is already running (its holder has not recorded itself "
        f"yet); lock: {holder.path}"
    )


def test_what_the_holder_says_it_does_is_shown(tmp_path: Path) -> None:
    RolloutLock(tmp_path, "web", scope="fleet").acquire("1", "fleet rollback")

    with pytest.raises(LockHeld, match=r"^a fleet rollback of web is already running"):
        RolloutLock(tmp_path, "web", scope="fleet").acquire("2")


def test_a_scoped_lock_and_the_service_lock_are_apart(tmp_path: Path) -> None:
    fleet = RolloutLock(tmp_path, "web", scope="fleet")
    fleet.acquire("1")
    host = RolloutLock(tmp_path, "web")

    host.acquire("2")  # not held by the fleet lock

    assert host.path == tmp_path / "locks" / "web.lock"
    assert read_lock(tmp_path, "fleet-web")["jid"] == "1"
    assert read_lock(tmp_path)["jid"] == "2"


@pytest.mark.parametrize("scope", ["", "Fleet", "fleet-web", "../x", "a/b", "fleet rollout"])
def test_a_scope_is_one_lowercase_word(tmp_path: Path, scope: str) -> None:
    with pytest.raises(ValueError, match="a lock scope is one lowercase word"):
        RolloutLock(tmp_path, "web", scope=scope)


@pytest.mark.parametrize("service", ["", "../web", "Web"])
def test_a_scoped_lock_checks_the_service_name(tmp_path: Path, service: str) -> None:
    with pytest.raises(SpecError):
        RolloutLock(tmp_path, service, scope="fleet")


def _runner() -> Any:
    """``_runners/dockerops.py`` as a plain module (its dunders set by the test)."""
    spec = importlib.util.spec_from_file_location("dockerops_runner_lock", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fleet_runner_says_which_service_rolls(tmp_path: Path) -> None:
    runner = _runner()
    runner.__opts__ = {"cachedir": str(tmp_path)}
    runner._lock("web").acquire("1", "fleet rollout")

    with pytest.raises(LockHeld) as caught:
        runner._lock("web").acquire("2", "fleet rollout")

    assert str(caught.value).startswith("a fleet rollout of web is already running (pid ")
    # Where a runner of an earlier release locks it too.
    assert (tmp_path / "dockerops" / "locks" / "fleet-web.lock").exists()
