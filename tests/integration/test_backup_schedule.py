"""Scheduled backups through a real master and minion: the formula turns pillar's
``backup:schedule`` into an entry of the minion's own Salt scheduler, which runs
``dockerops.backup``; the master's event bus sees the success event, the restic
repository holds the snapshot, and status and the grain show it. Taking the
schedule out of pillar removes the entry."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import write_pillar

pytestmark = pytest.mark.docker

MINION = "int-m1"
SERVICE = "nightly"
JOB = f"dockerops-backup-{SERVICE}"
PASSWORD = "correct horse battery staple"
SUCCESS_TIMEOUT = 120


def backup_pillar(
    demo_images: dict[str, str], root: Path, schedule: dict[str, Any] | None
) -> dict[str, Any]:
    backup: dict[str, Any] = {"consistency": "none"}
    if schedule is not None:
        backup["schedule"] = schedule
    return {
        "dockerops": {
            "environment": "integration",
            # The data below its own allowed root; the repository apart from it.
            "allowed_host_paths": [str(root / "hostroot")],
            "backup": {"repository": str(root / "restic"), "password": PASSWORD},
            "services": {
                SERVICE: {
                    "image": demo_images["repository"],
                    "tag": "1.0",
                    "replicas": 1,
                    "healthcheck": {"test": "echo ok", "interval": "1s", "retries": 1},
                    "data": [{"host": str(root / "hostroot" / SERVICE), "container": "/data"}],
                    "backup": backup,
                }
            },
        }
    }


def apply_pillar(salt_cli: Any, pillar_dir: Path, pillar: dict[str, Any]) -> None:
    write_pillar(pillar_dir, {"integration": pillar})
    refreshed = salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=MINION)
    assert refreshed.returncode == 0, refreshed.stdout


def schedule_entries(salt_cli: Any) -> dict[str, Any]:
    listed = salt_cli.run("schedule.list", "return_yaml=False", minion_tgt=MINION)
    assert listed.returncode == 0, listed.stdout
    return listed.data or {}


def applied_backups_state(salt_cli: Any) -> dict[str, Any]:
    """``state.apply dockerops.backups`` on the minion: its states by id (all must succeed)."""
    ret = salt_cli.run("state.apply", "dockerops.backups", minion_tgt=MINION)
    assert ret.returncode == 0, ret.stdout
    return {key.split("_|-")[1]: value for key, value in ret.data.items()}


@pytest.fixture
def backed_up_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scheduled-backup")
    (root / "hostroot" / SERVICE).mkdir(parents=True)
    (root / "hostroot" / SERVICE / "kept.txt").write_text("worth keeping\n")
    return root


@pytest.fixture
def scheduled_service(salt_cli, salt_minions, pillar_dir, demo_images, backed_up_root):
    """``nightly`` on int-m1 with data, running; its schedule entry and containers
    removed afterwards, whatever happened."""
    pillar = backup_pillar(demo_images, backed_up_root, {"seconds": 5})
    apply_pillar(salt_cli, pillar_dir, pillar)
    applied = salt_cli.run("dockerops.apply", SERVICE, minion_tgt=MINION)
    assert applied.returncode == 0, applied.stdout
    yield pillar
    salt_cli.run("schedule.delete", JOB, minion_tgt=MINION)
    # A backup the scheduler started last may still hold the service's lock.
    deadline = time.monotonic() + 30
    while salt_cli.run("dockerops.remove", SERVICE, minion_tgt=MINION).returncode != 0:
        assert time.monotonic() < deadline, f"{SERVICE} could not be removed"
        time.sleep(1)
    write_pillar(pillar_dir, {})
    salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=MINION)


def restic_snapshots(root: Path, tag: str) -> list[dict[str, Any]]:
    """The repository's snapshots carrying ``tag``, read by restic itself."""
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    run = subprocess.run(
        ["restic", "snapshots", "--json", "--tag", tag],
        env={
            "RESTIC_REPOSITORY": str(root / "restic"),
            "RESTIC_PASSWORD_FILE": str(password_file),
            "RESTIC_CACHE_DIR": str(root / "cache"),
            "PATH": os.environ["PATH"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return list(json.loads(run.stdout) or [])


def test_the_minions_scheduler_backs_up_and_the_master_sees_the_success(
    scheduled_service,
    salt_cli,
    salt_master,
    pillar_dir,
    event_listener,
    backed_up_root,
    demo_images,
):
    after = time.time()

    states = applied_backups_state(salt_cli)

    assert list(states) == [f"dockerops-backup-{SERVICE}-schedule-present"], states
    (present,) = states.values()
    assert present["result"] is True and present["changes"], present
    entry = schedule_entries(salt_cli)[JOB]
    assert (entry["function"], entry["args"], entry["seconds"]) == (
        "dockerops.backup",
        [SERVICE],
        5,
    )

    # The scheduler runs it (every 5 s): the master's bus sees the minion's success.
    tag = f"dockerops/backup/{SERVICE}/success"
    deadline = time.monotonic() + SUCCESS_TIMEOUT
    events: list[Any] = []
    while not events and time.monotonic() < deadline:
        found = event_listener.get_events([(salt_master.id, tag)], after_time=after)
        events = sorted(found, key=lambda e: e.stamp)
        failures = event_listener.get_events(
            [(salt_master.id, f"dockerops/backup/{SERVICE}/failure")], after_time=after
        )
        assert not failures, [e.data for e in failures]
        time.sleep(0.5)
    assert events, f"no {tag} within {SUCCESS_TIMEOUT}s"
    data = events[0].data
    assert data["id"] == MINION, data  # fired by the minion (event.send)
    sent = data["data"]
    assert sent["service"] == SERVICE and sent["environment"] == "integration", data
    snapshot = sent["snapshot"]

    # restic itself sees the snapshot, tagged with the service and this minion.
    snapshots = restic_snapshots(backed_up_root, f"service={SERVICE}")
    assert snapshots, "no snapshot tagged with the service"
    found = [s for s in snapshots if s["id"].startswith(snapshot) or s["short_id"] == snapshot]
    assert found, (snapshot, [s["short_id"] for s in snapshots])
    assert f"minion={MINION}" in found[0]["tags"]
    assert found[0]["paths"] == [str(backed_up_root / "hostroot" / SERVICE)]

    # Status shows the last success and its age; the grain its time.
    status = salt_cli.run("dockerops.status", SERVICE, minion_tgt=MINION)
    assert status.returncode == 0, status.stdout
    (row,) = status.data[SERVICE]
    last = row["last_backup"]
    assert last is not None and last["time"] >= after - 1, row
    assert 0 <= last["age"] < SUCCESS_TIMEOUT + 60
    assert salt_cli.run("saltutil.refresh_grains", minion_tgt=MINION).returncode == 0
    grain = salt_cli.run("grains.get", f"dockerops:services:{SERVICE}", minion_tgt=MINION).data
    assert grain["last_backup"] >= after - 1, grain

    # A second apply changes nothing.
    (again,) = applied_backups_state(salt_cli).values()
    assert again["result"] is True and again["changes"] == {}, again

    # The schedule taken out of pillar: the formula removes the entry.
    apply_pillar(salt_cli, pillar_dir, backup_pillar(demo_images, backed_up_root, None))
    states = applied_backups_state(salt_cli)
    assert list(states) == [f"{JOB}-schedule-absent"], states
    (absent,) = states.values()
    assert absent["result"] is True and absent["changes"], absent
    assert JOB not in schedule_entries(salt_cli)
