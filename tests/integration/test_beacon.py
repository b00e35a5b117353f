"""Monitoring through a real master and minion: the beacon fires one event per
change of a replica's condition, the reactor example restarts a crash-looping
service once and then only reports, and the grains target by service."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import write_pillar

pytestmark = pytest.mark.docker

MINION = "int-m1"
SERVICE = "crashy"


@pytest.fixture(scope="module")
def crashing(salt_cli, salt_minions, pillar_dir, demo_images):
    """``crashy`` on int-m1: healthy at once, exits 3 s after each start,
    restarted by Docker (on-failure:5) with its growing back-off."""
    pillar = {
        "dockerops": {
            "environment": "integration",
            "monitoring": {"crash_loop": {"restarts": 3, "window": "1m"}},
            "services": {
                SERVICE: {
                    "image": demo_images["repository"],
                    "tag": "1.0",
                    "replicas": 1,
                    "command": "sleep 3; exit 1",
                    "restart_policy": "on-failure:5",
                    "healthcheck": {"test": "echo ok", "interval": "1s", "retries": 1},
                    "update": {"min_healthy_time": "1s", "health_timeout": "10s"},
                }
            },
        }
    }
    write_pillar(pillar_dir, {"integration": pillar})
    assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=MINION).returncode == 0
    applied = salt_cli.run("dockerops.apply", SERVICE, minion_tgt=MINION)
    assert applied.returncode == 0, applied.stdout
    yield
    salt_cli.run("beacons.delete", "dockerops", minion_tgt=MINION)
    salt_cli.run("beacons.save", minion_tgt=MINION)
    salt_cli.run("dockerops.remove", SERVICE, minion_tgt=MINION)


def beacon_events(event_listener, master_id: str, after: float) -> list[Any]:
    pattern = f"salt/beacon/{MINION}/dockerops/{SERVICE}/*"
    return sorted(
        event_listener.get_events([(master_id, pattern)], after_time=after),
        key=lambda e: e.stamp,
    )


def reactions(salt_master) -> list[dict[str, Any]]:
    path = Path(salt_master.config["cachedir"]) / "dockerops" / "reactions.json"
    try:
        return json.loads(path.read_text()).get(f"{MINION}/{SERVICE}", [])
    except FileNotFoundError:
        return []


def test_the_beacon_fires_once_per_change_and_the_reactor_restarts_once(
    crashing, salt_cli, salt_master, salt_minions, event_listener, docker_hosts
):
    after = time.time()
    # No interval: every beacon pass (Salt counts an interval in loop_interval
    # steps, 0.05 s on these test minions, which would make 1 s last 20 passes).
    added = salt_cli.run(
        "beacons.add", "dockerops", f"[{{'services': ['{SERVICE}']}}]", minion_tgt=MINION
    )
    assert added.returncode == 0, added.stdout

    # Wait for a give-up that the reactor only reported (after its one restart).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [r for r in reactions(salt_master) if r["event"] == "gave_up"]
        if done:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"no give-up reacted to: {reactions(salt_master)}")
    time.sleep(4)  # more beacon passes: nothing fires twice

    events = beacon_events(event_listener, salt_master.id, after)
    seen = [(e.data["container_id"], e.data["event"]) for e in events]
    # One event per change of each container, never one per beacon pass: a
    # loop and a give-up once each; health events alternate (a health flip
    # before the loop was noticed is a change, after it is the loop's).
    # The reactor's restart (in place: Docker's count starts again) ends a
    # loop; one that starts again is a new change.
    restarts = [r for r in reactions(salt_master) if r["action"] == "restart"]
    for container in {c for c, _ in seen}:
        kinds = [kind for c, kind in seen if c == container]
        assert kinds.count("crash_loop") <= 1 + len(restarts), seen
        assert kinds.count("gave_up") <= 1, seen
        health = [k for k in kinds if k in ("unhealthy", "recovered")]
        assert health == ["unhealthy", "recovered"] * (len(health) // 2) + (
            ["unhealthy"] if len(health) % 2 else []
        ), seen
    kinds = [kind for _, kind in seen]
    assert "crash_loop" in kinds and "gave_up" in kinds, seen
    first = next(e.data for e in events if e.data["event"] == "crash_loop")
    assert first["service"] == SERVICE and first["slot"] == first["replica"] == 1
    assert first["environment"] == "integration"
    assert first["image"].endswith(":1.0")
    assert first["reason"].startswith("restarted 3 times in the last 1m")

    # The reactor restarted the service once; everything after was only reported.
    record = reactions(salt_master)
    assert [r["action"] for r in record] == ["restart"] + ["report"] * (len(record) - 1), record
    assert record[0]["event"] == "crash_loop"
    gave_up = next(r for r in record if r["event"] == "gave_up")
    assert "within the 3600s window (the reactor never loops)" in gave_up["why"]
    # Each crash loop and give-up the beacon fired reached the reactor.
    assert len(record) == len([k for k in kinds if k in ("crash_loop", "gave_up")]), (record, seen)

    # A minion restart fires nothing again: the beacon remembers in its state dir.
    memory = salt_cli.run("file.file_exists", _memory_path(salt_cli), minion_tgt=MINION)
    assert memory.data is True
    assert salt_cli.run("beacons.save", minion_tgt=MINION).returncode == 0
    # Each beacon pass writes the metrics file once its directory exists: the
    # proof that the beacon ran after the restart.
    metrics = Path(docker_hosts[MINION].base) / "no" / "m.prom"
    metrics.parent.mkdir()
    try:
        minion = salt_minions[MINION]
        minion.terminate()
        restarted = time.time()
        minion.start(start_timeout=120)
        deadline = time.monotonic() + 60
        while not metrics.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics.exists(), "the beacon did not run after the minion restart"
        time.sleep(3)  # more passes
        again = beacon_events(event_listener, salt_master.id, restarted)
        assert again == [], [(e.tag, e.data.get("reason")) for e in again]
        assert f'dockerops_replica_gave_up{{service="{SERVICE}"' in metrics.read_text()
    finally:
        shutil.rmtree(metrics.parent)


def _memory_path(salt_cli) -> str:
    state_dir = salt_cli.run("config.get", "dockerops.state_dir", minion_tgt=MINION).data
    return f"{state_dir}/beacon/dockerops.json"


def test_grains_name_the_storage_driver_and_target_by_service(crashing, salt_cli):
    assert salt_cli.run("saltutil.refresh_grains", minion_tgt="*").returncode == 0
    grain = salt_cli.run("grains.get", "dockerops", minion_tgt=MINION).data
    assert grain["docker"]["reachable"] is True
    assert grain["docker"]["storage_driver"] == "overlay2"
    assert grain["docker"]["cgroup_version"] in ("1", "2")
    assert SERVICE in grain["services"]
    # It gave up: no replica runs, the image is the one its container has.
    assert grain["services"][SERVICE]["image"].endswith(":1.0")
    assert grain["services"][SERVICE]["replicas"] in (0, 1)
    targeted = salt_cli.run("-G", "test.ping", minion_tgt=f"dockerops:services:{SERVICE}:*")
    assert targeted.returncode == 0, targeted.stdout
    assert sorted(targeted.data) == [MINION]


def test_a_minion_starts_with_docker_down_and_says_so_in_its_grains(salt_master, tmp_path):
    minion = salt_master.salt_minion_daemon(
        "int-down",
        overrides={
            "dockerops.docker_url": f"unix://{tmp_path}/no-docker.sock",
            "dockerops.state_dir": str(tmp_path / "state"),
            "dockerops.metrics_file": str(tmp_path / "no" / "m.prom"),
        },
    )
    cli = salt_master.salt_cli(timeout=120)
    try:
        # First start: get dockerops' modules; the second start loads its grain.
        with minion.started(start_timeout=120):
            assert cli.run("saltutil.sync_all", minion_tgt="int-down").returncode == 0
        started = time.monotonic()
        with minion.started(start_timeout=120):
            took = time.monotonic() - started
            grain = cli.run("grains.get", "dockerops", minion_tgt="int-down").data
            ping = cli.run("test.ping", minion_tgt="int-down")
    finally:
        # Its key would stay accepted: later tests target '*' and wait for it.
        deleted = salt_master.salt_key_cli().run("-d", "int-down", "-y")
        assert deleted.returncode == 0, deleted.stderr
    assert ping.returncode == 0 and ping.data is True
    assert grain["docker"]["reachable"] is False, grain
    assert grain["services"] == {}
    assert took < 60
