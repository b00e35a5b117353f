"""Backups and restores against the real dockerd and a real restic repository.

The test app writes a new file into its data dir every 0.1 s (each written
beside and renamed into place) while it is backed up under each consistency
mode, then its data is damaged and restored: every file of the snapshot comes
back byte-identical (sha256; checked against an independent ``restic
restore`` of the snapshot), what damaged it is kept aside, and the service is
healthy after.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.functional.helpers import containers, service_pillar

pytestmark = pytest.mark.docker

PASSWORD = "correct horse battery staple"
# Writes /data/seq/<n> every 0.1 s, continuing after what is there; serves HTTP.
# Each replica names its files by its hostname: the two never write the same file.
WRITER = (
    'mkdir -p /data/seq; n=$(ls /data/seq | grep -c "^$HOSTNAME-") ; '
    "(while :; do n=$((n+1)); head -c 3000 /dev/urandom > /data/seq/.tmp-$HOSTNAME "
    "&& mv /data/seq/.tmp-$HOSTNAME /data/seq/$HOSTNAME-$n; sleep 0.1; done) & exec /bin/serve"
)


def restic_env(repo: Path, password_file: Path) -> dict[str, str]:
    return {
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_PASSWORD_FILE": str(password_file),
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
    }


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Any]:
    """A restic repository location outside the allowed host paths (made on first backup)."""
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    return {"path": tmp_path / "restic", "password_file": password_file, "tmp": tmp_path}


def backup_pillar(
    name: str, repository: str, host_root: Path, repo: dict[str, Any], **backup: Any
) -> dict[str, Any]:
    pillar = service_pillar(
        name,
        repository,
        replicas=2,
        command=["/bin/sh", "-c", WRITER],
        data=[{"host": str(host_root / name / "data"), "container": "/data"}],
        update={"health_timeout": "30s"},
        backup=backup,
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    pillar["dockerops"]["backup"] = {"repository": str(repo["path"]), "password": PASSWORD}
    return pillar


def tree(top: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``top`` (the writer's .tmp left out)."""
    out = {}
    for path in sorted(top.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".tmp"):
            out[str(path.relative_to(top))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def snapshot_tree(repo: dict[str, Any], snapshot: str, data: Path, into: Path) -> dict[str, str]:
    """What restic itself restores of ``snapshot`` (independently of dockerops)."""
    subprocess.run(
        ["restic", "restore", snapshot, "--target", str(into)],
        env=restic_env(repo["path"], repo["password_file"]),
        check=True,
        capture_output=True,
    )
    return tree(into / str(data).lstrip("/"))


def healthy(docker_client: Any, name: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = containers(docker_client, name).values()
        states = [c.attrs["State"].get("Health", {}).get("Status") for c in found]
        for container in found:
            container.reload()
        states = [c.attrs["State"].get("Health", {}).get("Status") for c in found]
        if len(states) == count and all(s == "healthy" for s in states):
            return
        assert time.monotonic() < deadline, states
        time.sleep(0.3)


def deploy(salt: Any, pillar: dict[str, Any], name: str, docker_client: Any) -> Path:
    salt.set_pillar(pillar)
    ret = salt.states.dockerops.running(name=name)
    assert ret.result is True, ret.comment
    healthy(docker_client, name, 2)
    data = Path(pillar["dockerops"]["services"][name]["data"][0]["host"])
    deadline = time.monotonic() + 20
    while len(tree(data)) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return data


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("stop", {}),
        ("pause", {}),
        ("exec", {"exec": "mkdir -p /data/dump && cp -a /data/seq/. /data/dump/"}),
        ("none", {}),
    ],
)
def test_backup_damage_restore_under_each_consistency_mode(
    salt, docker_client, demo_images, service_name, host_root, repo, mode, extra
):
    pillar = backup_pillar(
        service_name, demo_images["repository"], host_root, repo, consistency=mode, **extra
    )
    data = deploy(salt, pillar, service_name, docker_client)
    before = {
        c.name: c.attrs["State"]["StartedAt"]
        for c in containers(docker_client, service_name).values()
    }

    out = salt.modules.dockerops.backup(service_name)
    assert out["result"] is True, out["comment"]
    snapshot = out["snapshot"]
    healthy(docker_client, service_name, 2)
    after = {
        c.name: c.attrs["State"]["StartedAt"]
        for c in containers(docker_client, service_name).values()
    }
    if mode == "stop":
        # Both replicas were stopped (all at once: they share the data) and started again.
        assert "all 2 at once" in out["plan"]["stops"]
        assert all(after[name] != before[name] for name in before), (before, after)
    else:
        assert after == before
    if mode == "exec":
        assert any("ran the backup command" in step for step in out["steps"])

    expected = snapshot_tree(repo, snapshot, data, repo["tmp"] / "independent")
    assert len(expected) >= 5
    if mode == "exec":
        assert any(path.startswith("dump/") for path in expected)

    # Damage: files deleted, one overwritten, garbage added.
    names = sorted(expected)
    (data / names[0]).unlink()
    (data / names[1]).write_bytes(b"garbage")
    (data / "garbage").write_bytes(b"x" * 100)

    plan = salt.modules.dockerops.restore(service_name, id=snapshot, test=True)
    assert plan["result"] is True and plan["test"] is True, plan
    differs = plan["plan"][str(data)]
    assert differs["missing_now"] >= 1 and differs["not_in_snapshot"] >= 1
    assert differs["differ_in_size_or_type"] >= 1

    out = salt.modules.dockerops.restore(service_name, id=snapshot)
    assert out["result"] is True, out
    healthy(docker_client, service_name, 2)
    now = tree(data)
    # Every file of the snapshot is back, byte for byte; the writer only adds new ones.
    assert {path: now.get(path) for path in expected} == expected
    assert "garbage" not in now
    # What was there before the restore is kept aside, untouched.
    aside = Path(out["changes"]["restored"][str(data)]["previous"])
    assert (aside / "garbage").read_bytes() == b"x" * 100
    assert (aside / names[1]).read_bytes() == b"garbage"


def test_two_backups_at_once_the_second_fails_fast(
    salt, docker_client, demo_images, service_name, host_root, repo
):
    pillar = backup_pillar(
        service_name,
        demo_images["repository"],
        host_root,
        repo,
        consistency="exec",
        exec="sleep 4",
    )
    deploy(salt, pillar, service_name, docker_client)
    import threading

    first: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: first.update(salt.modules.dockerops.backup(service_name))
    )
    worker.start()
    time.sleep(1.5)
    started = time.monotonic()
    second = salt.modules.dockerops.backup(service_name)
    assert time.monotonic() - started < 2
    assert second["result"] is False
    assert "a backup of" in second["comment"] and "already running" in second["comment"]
    worker.join(60)
    assert first["result"] is True, first


def test_a_backup_rewrites_the_metrics_file(
    salt, docker_client, demo_images, service_name, host_root, repo, minion_opts
):
    pillar = backup_pillar(
        service_name, demo_images["repository"], host_root, repo, consistency="none"
    )
    deploy(salt, pillar, service_name, docker_client)
    metrics = Path(minion_opts["dockerops.metrics_file"])
    metrics.parent.mkdir()
    try:
        out = salt.modules.dockerops.backup(service_name)
        assert out["result"] is True, out["comment"]
        text = metrics.read_text()
        stamp = next(
            line.split()[-1]
            for line in text.splitlines()
            if line.startswith(
                f'dockerops_backup_last_success_timestamp_seconds{{service="{service_name}"}}'
            )
        )
        assert abs(float(stamp) - time.time()) < 60
        row = salt.modules.dockerops.status(service_name)[service_name][0]
        assert row["last_backup"]["snapshot"] == out["snapshot"]
    finally:
        metrics.unlink(missing_ok=True)
        metrics.parent.rmdir()


def volume_tree(docker_client: Any, container: str) -> dict[str, str]:
    """relative path -> sha256 of every file below /data in a replica."""
    out = docker_client.containers.get(container).exec_run(
        ["/bin/sh", "-c", "cd /data && find . -type f ! -name '.tmp*' -exec sha256sum {} +"]
    )
    assert out.exit_code == 0, out.output
    found = {}
    for line in out.output.decode().splitlines():
        digest, path = line.split(None, 1)
        found[path.removeprefix("./")] = digest
    return found


def test_a_volume_is_backed_up_and_restored_through_the_helper_container(
    salt, docker_client, demo_images, service_name, host_root, repo, volume_name
):
    volume = volume_name("-data")
    pillar = backup_pillar(
        service_name, demo_images["repository"], host_root, repo, consistency="stop"
    )
    service = pillar["dockerops"]["services"][service_name]
    device = host_root / service_name / "volume"
    device.mkdir(parents=True)
    # A bind volume (a tmpfs one is refused: its data would not outlive a stop).
    bind = {"type": "none", "o": "bind", "device": str(device)}
    service["data"] = [{"volume": volume, "container": "/data", "driver_opts": bind}]
    salt.set_pillar(pillar)
    assert salt.states.dockerops.running(name=service_name).result is True
    healthy(docker_client, service_name, 2)
    first = sorted(containers(docker_client, service_name))[0]
    deadline = time.monotonic() + 20
    while len(volume_tree(docker_client, first)) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    out = salt.modules.dockerops.backup(service_name)
    assert out["result"] is True, out["comment"]
    assert out["plan"]["paths"] == ["/data"]
    healthy(docker_client, service_name, 2)
    listed = salt.modules.dockerops.backups(service_name)
    assert listed[0]["id"] == out["snapshot"] and listed[0]["tags"]["via"] == "helper"
    expected = snapshot_tree(repo, out["snapshot"], Path("/data"), repo["tmp"] / "independent")
    assert len(expected) >= 5

    # Damage inside the volume, then restore.
    names = sorted(expected)
    docker_client.containers.get(first).exec_run(
        ["/bin/sh", "-c", f"rm /data/{names[0]} && echo garbage > /data/{names[1]}"]
    )
    out = salt.modules.dockerops.restore(service_name, id=out["snapshot"])
    assert out["result"] is True, out["comment"]
    healthy(docker_client, service_name, 2)
    now = volume_tree(docker_client, first)
    assert {path: now.get(path) for path in expected} == expected
    # The damaged data is kept in an aside volume, never removed.
    aside = out["changes"]["restored"][volume]["previous"]
    assert aside.startswith(f"{volume}-before-restore-")
    docker_client.volumes.get(aside)
    # No staging volume is left behind.
    assert not [
        v.name
        for v in docker_client.volumes.list()
        if v.name.startswith(f"dockerops-restore-{service_name}")
    ]


def test_a_backup_command_past_its_timeout_is_killed_with_its_children(
    salt, docker_client, demo_images, service_name, host_root, repo
):
    pillar = backup_pillar(
        service_name,
        demo_images["repository"],
        host_root,
        repo,
        consistency="exec",
        exec="sleep 300 & sleep 301; echo never",
        exec_timeout="1s",
    )
    deploy(salt, pillar, service_name, docker_client)
    started = time.monotonic()
    out = salt.modules.dockerops.backup(service_name)
    assert time.monotonic() - started < 20
    assert out["result"] is False
    assert "timed out after 1s (killed); no snapshot taken" in out["comment"]
    for container in containers(docker_client, service_name).values():
        listed = container.exec_run(["ps", "-o", "args"]).output.decode()
        assert "sleep 30" not in listed, listed
    healthy(docker_client, service_name, 2)


def test_backups_within_the_hour_skip_retention_until_it_is_due(
    salt, docker_client, demo_images, service_name, host_root, repo, minion_opts
):
    pillar = backup_pillar(
        service_name,
        demo_images["repository"],
        host_root,
        repo,
        consistency="none",
        keep={"last": 1},
    )
    deploy(salt, pillar, service_name, docker_client)
    # The first backup creates the repository (under none, found by the backup
    # itself) and applies the policy; the next, minutes later, does not.
    first = salt.modules.dockerops.backup(service_name)
    assert first["result"] is True, first["comment"]
    assert any("created the restic repository" in step for step in first["steps"])
    assert first["kept"] == [first["snapshot"]]
    second = salt.modules.dockerops.backup(service_name)
    assert second["result"] is True, second["comment"]
    assert "kept" not in second and "forgotten" not in second["changes"]
    assert len(salt.modules.dockerops.backups(service_name)) == 2
    # On demand, or once the last retention is an hour old, the policy applies.
    pruned = salt.modules.dockerops.prune_backups(service_name)
    assert pruned["forgotten"] == [first["snapshot"]], pruned
    record = Path(minion_opts["dockerops.state_dir"]) / "backups" / f"{service_name}.json"
    data = json.loads(record.read_text())
    data["last_retention"] -= 3600
    record.write_text(json.dumps(data))
    third = salt.modules.dockerops.backup(service_name)
    assert third["changes"]["forgotten"] == [second["snapshot"]], third
    assert [b["id"] for b in salt.modules.dockerops.backups(service_name)] == [third["snapshot"]]
