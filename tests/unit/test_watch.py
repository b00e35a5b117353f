"""The beacon's judgement (dockerops.watch): one event per change of a
replica's condition, never one per look, and its memory across restarts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dockerops.records import StateDirError
from dockerops.watch import BeaconMemory, replica_events


def row(**fields: Any) -> dict[str, Any]:
    base = {
        "slot": 1,
        "container": "web-1",
        "id": "aaaaaaaaaaaa",
        "image": "registry.example.com/web:1.4",
        "environment": "production",
        "state": "running",
        "health": "healthy",
        "crash_loop": False,
        "gave_up": False,
        "oom_killed": False,
        "finished_at": None,
        "exit_code": None,
    }
    return {**base, **fields}


def looks(*steps: dict[str, Any], listening: list[Any] | None = None) -> list[list[str]]:
    """The events each look fires (as ``tag``), carrying memory from look to look."""
    memory: dict[str, Any] = {}
    fired = []
    for number, step in enumerate(steps):
        ports = (listening or [None] * len(steps))[number]
        events, memory = replica_events(memory, {"web": [step]} if step else {}, ports)
        # What is remembered survives a round trip through JSON (the state file).
        memory = json.loads(json.dumps(memory))
        fired.append([e["tag"] for e in events])
    return fired


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # Unhealthy once, not on every look; recovered once.
        (
            [row(), row(health="unhealthy"), row(health="unhealthy"), row(), row()],
            [[], ["web/unhealthy"], [], ["web/recovered"], []],
        ),
        # Restarted while unhealthy ("starting"): recovered only once healthy.
        (
            [row(health="unhealthy"), row(health="starting"), row(health="healthy")],
            [["web/unhealthy"], [], ["web/recovered"]],
        ),
        # A crash loop, then it gives up: one event each.
        (
            [
                row(crash_loop=True, crash_loop_reason="r"),
                row(crash_loop=True, crash_loop_reason="r"),
                row(state="exited", gave_up=True, gave_up_reason="g"),
                row(state="exited", gave_up=True, gave_up_reason="g"),
            ],
            [["web/crash_loop"], [], ["web/gave_up"], []],
        ),
        # An OOM kill: once per exit, again for a later one.
        (
            [
                row(oom_killed=True, finished_at="T1", exit_code=137),
                row(oom_killed=True, finished_at="T1", exit_code=137),
                row(oom_killed=False, finished_at="T1"),
                row(oom_killed=True, finished_at="T2", exit_code=137),
            ],
            [["web/oom_killed"], [], [], ["web/oom_killed"]],
        ),
        # A new container in the slot (a rollout) that loops is a new loop.
        (
            [row(crash_loop=True), row(crash_loop=True, id="bbbbbbbbbbbb")],
            [["web/crash_loop"], ["web/crash_loop"]],
        ),
        # A replacement that is healthy: the slot recovered.
        (
            [row(health="unhealthy"), row(id="bbbbbbbbbbbb")],
            [["web/unhealthy"], ["web/recovered"]],
        ),
        # While it crash-loops, its health flips with each crash: not reported.
        (
            [
                row(crash_loop=True),
                row(crash_loop=True, health="unhealthy"),
                row(crash_loop=True, health="starting"),
                row(crash_loop=True, health="healthy"),
                row(state="exited", gave_up=True, health="unhealthy"),
            ],
            [["web/crash_loop"], [], [], [], ["web/gave_up"]],
        ),
        # Unhealthy before the loop: recovered only once healthy after it.
        (
            [row(health="unhealthy"), row(crash_loop=True, health="healthy"), row()],
            [["web/unhealthy"], ["web/crash_loop"], ["web/recovered"]],
        ),
        # A replica gone is forgotten: no event for it.
        ([row(health="unhealthy"), {}], [["web/unhealthy"], []]),
    ],
)
def test_each_change_fires_once(steps: list[dict[str, Any]], expected: list[list[str]]) -> None:
    assert looks(*steps) == expected


def test_an_expected_port_that_stops_listening_fires_once() -> None:
    listening = [
        {"web-1": ([], ["8080/tcp"])},  # starting: never listened yet, no event
        {"web-1": (["8080/tcp"], [])},
        {"web-1": ([], ["8080/tcp"])},  # gone
        {"web-1": ([], ["8080/tcp"])},
        {},  # not read this time (not running): still remembered as gone
        {"web-1": (["8080/tcp"], [])},
        {"web-1": ([], ["8080/tcp"])},  # gone again
    ]
    assert looks(*[row()] * len(listening), listening=listening) == [
        [],
        [],
        ["web/port_missing"],
        [],
        [],
        [],
        ["web/port_missing"],
    ]


def test_an_event_names_the_service_replica_environment_and_image() -> None:
    events, _ = replica_events(
        {}, {"web": [row(slot=2, crash_loop=True, crash_loop_reason="restarted 3 times")]}
    )
    assert events == [
        {
            "tag": "web/crash_loop",
            "event": "crash_loop",
            "service": "web",
            "slot": 2,
            "replica": 2,
            "container": "web-1",
            "container_id": "aaaaaaaaaaaa",
            "environment": "production",
            "image": "registry.example.com/web:1.4",
            "reason": "restarted 3 times",
        }
    ]


def test_an_event_leaves_the_minion_id_to_salt() -> None:
    # Salt adds the minion's id as "id" unless the beacon set one: never set it.
    events, _ = replica_events({}, {"web": [row(gave_up=True)]})
    assert "id" not in events[0]


def test_the_memory_survives_a_restart_and_is_written_atomically(tmp_path: Path) -> None:
    memory = BeaconMemory(tmp_path)
    assert memory.load() == {}
    events, seen = replica_events({}, {"web": [row(gave_up=True, state="exited")]})
    assert [e["tag"] for e in events] == ["web/gave_up"]
    memory.save(seen)
    # A new process: the same look fires nothing.
    again, _ = replica_events(BeaconMemory(tmp_path).load(), {"web": [row(gave_up=True)]})
    assert again == []
    assert [p.name for p in (tmp_path / "beacon").iterdir()] == ["dockerops.json"]
    # A damaged file is read as nothing seen, never an error.
    memory.path.write_text("{torn")
    assert memory.load() == {}


def test_an_unwritable_memory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "beacon").write_text("a file where the directory goes")
    with pytest.raises(StateDirError, match="could not write the beacon's memory"):
        BeaconMemory(tmp_path).save({"web/1": {"container": "x"}})
    assert os.path.isfile(tmp_path / "beacon")


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"", b"[1, 2]", b"1e999999"])
def test_a_memory_file_that_is_not_utf8_empty_or_not_an_object_is_nothing_seen(
    tmp_path: Path, content: bytes
) -> None:
    memory = BeaconMemory(tmp_path)
    memory.path.parent.mkdir(parents=True)
    memory.path.write_bytes(content)
    assert memory.load() == {}
    # And the next save replaces it whole.
    memory.save({"web/1": {"container": "c"}})
    assert BeaconMemory(tmp_path).load() == {"web/1": {"container": "c"}}


def test_a_symlink_planted_at_the_memory_file_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    memory = BeaconMemory(tmp_path)
    memory.path.parent.mkdir(parents=True)
    memory.path.symlink_to(target)
    memory.save({"web/1": {"container": "c"}})
    assert target.read_text() == "keep"
    assert not memory.path.is_symlink()
