"""Through salt-call: a full disk under ``dockerops.state_dir`` and bad arguments
give clean Salt errors (never a traceback), and ``test=True`` exits 0 for a
valid plan."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.helpers import containers, service_pillar
from tests.support.salt import CallResult, Masterless

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small tmpfs as the minion's state dir (a test fills it up)."""
    mount = tmp_path_factory.mktemp("state-tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture(scope="module")
def minion(
    tmp_path_factory: pytest.TempPathFactory, docker_url: str, state_dir: Path
) -> Masterless:
    minion = Masterless(
        tmp_path_factory.mktemp("state-dir-minion"),
        "state-dir-masterless",
        docker_url,
        **{"dockerops.state_dir": str(state_dir)},
    )
    synced = minion.run("saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    return minion


@pytest.fixture
def full(state_dir: Path) -> Iterator[Path]:
    """The state dir with no space left (its subdirectories exist)."""
    for sub in ("locks", "history", "services"):
        (state_dir / sub).mkdir(exist_ok=True)
    filler = state_dir / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
    try:
        yield state_dir
    finally:
        filler.unlink()


def no_traceback(result: CallResult) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert "un-handled exception" not in output, output


def test_a_full_state_dir_is_a_clean_error(minion, full, docker_client, demo_images, service_name):
    minion.set_pillar(service_pillar(service_name, demo_images["repository"]))
    lock = full / "locks" / f"{service_name}.lock"
    message = f"could not write the rollout lock {lock}: No space left on device"

    applied = minion.run("dockerops.apply", service_name)
    no_traceback(applied)
    assert applied.returncode == 1
    assert applied.data[service_name]["result"] is False
    assert message in applied.data[service_name]["comment"]

    rolled = minion.run("dockerops.rolling_update", service_name)
    no_traceback(rolled)
    assert rolled.returncode == 1
    assert message in rolled.stdout + rolled.stderr

    highstate = minion.run("state.apply", "dockerops")
    no_traceback(highstate)
    assert highstate.returncode != 0
    (running,) = [s for s in highstate.data.values() if s["name"] == service_name]
    assert running["result"] is False
    assert message in running["comment"]

    assert containers(docker_client, service_name) == {}  # nothing was touched
    assert not lock.exists()


def test_history_limit_that_is_not_a_number_is_a_clean_error(minion, service_name):
    for limit in ("abc", "-1", "1.5"):
        result = minion.run("dockerops.history", service_name, f"limit={limit}")
        no_traceback(result)
        assert result.returncode == 1
        assert "limit must be a whole number, 0 or more" in result.stdout + result.stderr
    assert minion.run("dockerops.history", service_name, "limit=2").returncode == 0


def test_test_mode_exits_zero_when_the_plan_is_valid(minion, demo_images, service_name):
    minion.set_pillar(service_pillar(service_name, demo_images["repository"], replicas=2))
    assert minion.run("dockerops.apply", service_name).returncode == 0

    rolling = minion.run("dockerops.rolling_update", service_name, "tag=1.1", "test=True")
    assert rolling.returncode == 0, rolling.stdout + rolling.stderr
    assert (rolling.data["result"], rolling.data["test"]) == (True, True)
    assert len(rolling.data["plan"]) == 2
    assert "would change" in rolling.data["comment"]

    for call in ("dockerops.restart", "dockerops.remove"):
        dry = minion.run(call, service_name, "test=True")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert (dry.data["result"], dry.data["test"]) == (True, True)
        assert dry.data["changes"]

    # An invalid plan still fails.
    bad = minion.run("dockerops.rolling_update", service_name, "order=sideways", "test=True")
    no_traceback(bad)
    assert bad.returncode == 1
