"""A run killed at any moment, then run again, ends proven-healthy or failed.

Real salt-call processes against the real dockerd, killed with SIGKILL (a power
cut, an OOM kill, a minion restart) once the replacement exists; then the same
call again. Before dockerops.ledger the second run counted the never-healthy
replacement as good, removed the old replica and reported success.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dockerops.history import History
from dockerops.ledger import Ledger
from tests.functional.helpers import containers, http_get, service_pillar
from tests.support.dockerd import ExtraDaemon
from tests.support.salt import SALT_CALL, Masterless

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def minion(tmp_path_factory: pytest.TempPathFactory, docker_url: str) -> Masterless:
    root = tmp_path_factory.mktemp("interrupted")
    masterless = Masterless(
        root, "int-interrupted", docker_url, **{"dockerops.state_dir": str(root / "state")}
    )
    synced = masterless.run("saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    return masterless


def state_dir(minion: Masterless) -> str:
    return str(minion.root / "state")


def kill_once_replacement_exists(minion: Masterless, client, service, image, *args) -> None:
    """Run salt-call ``args`` and SIGKILL it (and its children) once a container
    of ``service`` on ``image`` exists."""
    proc = subprocess.Popen(
        [SALT_CALL, "-c", str(minion.root), "--local", "--out=json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            found = [
                c
                for c in containers(client, service).values()
                if c.labels.get("io.dockerops.image") == image
            ]
            if found:
                break
            assert proc.poll() is None, "the run ended before the replacement existed"
            time.sleep(0.05)
        else:
            raise AssertionError("no replacement appeared within 60 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def cut_after_stopping_in_place(minion: Masterless, client, service: str):
    """A power cut right after the engine stopped the only replica in place
    (dockerops.rollout, an in-place replacement): its inspect journaled, the container gone,
    no replacement yet. Returns the removed container."""
    (old,) = containers(client, service).values()
    Ledger(state_dir(minion), service).stop_in_place(1, old.attrs)
    old.remove(force=True)
    return old


def running_images(client, service) -> dict[str, str]:
    return {
        name: c.labels["io.dockerops.image"]
        for name, c in containers(client, service).items()
        if c.status == "running"
    }


@pytest.mark.parametrize("how", ["rolling_update", "highstate"])
def test_a_killed_rollout_to_a_broken_version_does_not_complete_on_the_next_run(
    minion, docker_client, demo_images, service_name, free_ports, how
):
    port = free_ports(2)
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        ports=[{"container": 8080, "host": port}],
        update={"health_timeout": "20s"},
    )
    minion.set_pillar(pillar)
    first = minion.run("dockerops.apply", service_name)
    assert first.returncode == 0, first.stdout + first.stderr
    assert running_images(docker_client, service_name) == {f"{service_name}-1": demo_images["1.0"]}

    if how == "rolling_update":
        call = ("dockerops.rolling_update", service_name, "tag=broken")
    else:
        pillar["dockerops"]["services"][service_name]["tag"] = "broken"
        minion.set_pillar(pillar)
        call = ("state.apply", "dockerops")
    kill_once_replacement_exists(minion, docker_client, service_name, demo_images["broken"], *call)
    assert demo_images["broken"] in running_images(docker_client, service_name).values()

    again = minion.run(*call)
    assert again.returncode != 0, again.stdout
    text = again.stdout
    assert "interrupted run" in text, text
    # The old replica never stopped; the unproven one is gone.
    assert running_images(docker_client, service_name) == {f"{service_name}-1": demo_images["1.0"]}
    assert http_get(port) == "1.0\n"
    history = minion.run("dockerops.history", service_name)
    newest = history.data[0]
    assert newest["result"] is False
    assert any("left unproven by an interrupted run" in r for r in newest["recovered"])
    assert any("lock left by pid" in r for r in newest["recovered"])
    # Highstates record their job id too (Salt gives states no __pub_jid).
    assert str(newest["jid"]).isdigit(), newest


def test_a_killed_rollout_to_a_good_version_is_proven_then_completed(
    minion, docker_client, demo_images, service_name, free_ports
):
    port = free_ports(2)
    minion.set_pillar(
        service_pillar(
            service_name, demo_images["repository"], ports=[{"container": 8080, "host": port}]
        )
    )
    assert minion.run("dockerops.apply", service_name).returncode == 0
    call = ("dockerops.rolling_update", service_name, "tag=1.1")
    kill_once_replacement_exists(minion, docker_client, service_name, demo_images["1.1"], *call)
    # Status tells the unproven replica apart.
    status = minion.run("dockerops.status", service_name).data[service_name]
    assert sorted((r["image"], r["proven"]) for r in status) == [
        (demo_images["1.0"], True),
        (demo_images["1.1"], False),
    ]

    again = minion.run(*call)
    assert again.returncode == 0, again.stdout + again.stderr
    assert list(running_images(docker_client, service_name).values()) == [demo_images["1.1"]]
    newest = minion.run("dockerops.history", service_name).data[0]
    assert newest["result"] is True
    assert any("proved healthy now" in r for r in newest["recovered"]), newest
    # Proven now: the next run has nothing to do.
    third = minion.run(*call)
    assert third.returncode == 0
    assert third.data["changes"] == {}, third.data


def test_a_killed_stop_first_rollout_puts_the_stopped_replica_back(
    minion, docker_client, demo_images, service_name, free_ports
):
    """Stop-first removes the old replica before its replacement exists: it is
    journaled first, so the next run can put it back when the replacement fails."""
    port = free_ports(1)
    minion.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            ports=[{"container": 8080, "host": port}],
            update={"order": "stop-first", "health_timeout": "20s"},
        )
    )
    assert minion.run("dockerops.apply", service_name).returncode == 0
    call = ("dockerops.rolling_update", service_name, "tag=broken")
    kill_once_replacement_exists(minion, docker_client, service_name, demo_images["broken"], *call)
    assert running_images(docker_client, service_name) == {
        f"{service_name}-1": demo_images["broken"]
    }

    again = minion.run(*call)
    assert again.returncode != 0
    assert running_images(docker_client, service_name) == {f"{service_name}-1": demo_images["1.0"]}
    assert http_get(port) == "1.0\n"
    newest = minion.run("dockerops.history", service_name).data[0]
    assert any("put back" in r for r in newest["recovered"]), newest
    assert Ledger(state_dir(minion), service_name).stopped_in_place() == {}


def test_killed_between_stopping_in_place_and_creating_the_replacement(
    minion, docker_client, demo_images, service_name, free_ports
):
    """The narrowest window: the old replica is journaled and removed, no
    replacement exists yet. The next run puts it back before anything else."""
    port = free_ports(1)
    minion.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            ports=[{"container": 8080, "host": port}],
            update={"order": "stop-first"},
        )
    )
    assert minion.run("dockerops.apply", service_name).returncode == 0
    old = cut_after_stopping_in_place(minion, docker_client, service_name)

    again = minion.run("dockerops.apply", service_name)
    assert again.returncode == 0, again.stdout + again.stderr
    (back,) = containers(docker_client, service_name).values()
    assert back.id != old.id and back.labels == old.labels
    assert http_get(port) == "1.0\n"
    assert Ledger(state_dir(minion), service_name).stopped_in_place() == {}
    assert Path(state_dir(minion), "services", f"{service_name}.json").stat().st_mode & 0o077 == 0


@pytest.fixture
def own_daemon(tmp_path_factory: pytest.TempPathFactory):
    """A Docker host of its own, so this test can crash its daemon."""
    daemon = ExtraDaemon("crash", 9, tmp_path_factory.mktemp("crashhost")).start()
    yield daemon
    daemon.stop()


def test_a_dockerd_crash_mid_rollout_fails_the_run_then_the_next_run_proves_or_fails(
    own_daemon, tmp_path, demo_images, service_name, free_ports
):
    port = free_ports(2)
    minion = Masterless(
        tmp_path, "int-crash", own_daemon.url, **{"dockerops.state_dir": str(tmp_path / "state")}
    )
    assert minion.run("saltutil.sync_all").returncode == 0
    minion.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            ports=[{"container": 8080, "host": port}],
            update={"health_timeout": "30s"},
        )
    )
    assert minion.run("dockerops.apply", service_name).returncode == 0
    client = own_daemon.client()
    call = [SALT_CALL, "-c", str(tmp_path), "--local", "--out=json", "--retcode-passthrough"]
    call += ["dockerops.rolling_update", service_name, "tag=1.1"]
    proc = subprocess.Popen(call, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(
        c.labels.get("io.dockerops.image") == demo_images["1.1"]
        for c in containers(client, service_name).values()
    ):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    client.close()
    own_daemon.crash()
    out, err = proc.communicate(timeout=120)

    # The interrupted run says it failed, and at which step, and records it.
    assert proc.returncode != 0, out
    assert "unreachable" in out, out + err
    entries = History(str(tmp_path / "state"), service_name).entries()
    assert entries[-1]["result"] is False
    assert "unreachable" in entries[-1]["error"]

    own_daemon.start()
    again = minion.run("dockerops.rolling_update", service_name, "tag=1.1")
    client = own_daemon.client()
    try:
        live = {
            c.name: c.labels["io.dockerops.image"]
            for c in containers(client, service_name).values()
            if c.status == "running"
        }
    finally:
        client.close()
    # Proven healthy now (then complete), or failed: never "success" on an unproven replica.
    assert again.returncode == 0, again.stdout + again.stderr
    assert list(live.values()) == [demo_images["1.1"]]
    assert http_get(port + int(next(iter(live)).rsplit("-", 1)[1]) - 1) == "1.1\n"
    newest = minion.run("dockerops.history", service_name).data[0]
    assert any("proved healthy now" in r for r in newest["recovered"]), newest


def test_putting_back_a_journaled_replica_refuses_a_data_path_turned_symlink(
    minion, docker_client, demo_images, service_name, tmp_path
):
    """Between the inspect and the restore a container may swap its data directory
    for a symlink; dockerd would follow it. The restore checks every bind."""
    allowed = tmp_path / "allowed"
    data = allowed / service_name / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        data=[{"host": str(data), "container": "/data"}],
        update={"order": "stop-first"},
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(allowed)]
    minion.set_pillar(pillar)
    assert minion.run("dockerops.apply", service_name).returncode == 0
    cut_after_stopping_in_place(minion, docker_client, service_name)
    data.rmdir()
    data.symlink_to(outside)

    again = minion.run("dockerops.apply", service_name)
    assert again.returncode != 0
    assert "symlink" in again.stdout, again.stdout
    assert containers(docker_client, service_name) == {}
    assert list(outside.iterdir()) == []


def test_removing_a_service_forgets_what_an_interrupted_run_stopped(
    minion, docker_client, demo_images, service_name, free_ports
):
    """After dockerops.remove, a later apply creates the service afresh instead
    of bringing back a replica an old interrupted run had stopped in place."""
    minion.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            ports=[{"container": 8080, "host": free_ports(1)}],
            update={"order": "stop-first"},
        )
    )
    assert minion.run("dockerops.apply", service_name).returncode == 0
    cut_after_stopping_in_place(minion, docker_client, service_name)

    assert minion.run("dockerops.remove", service_name).returncode == 0
    assert Ledger(state_dir(minion), service_name).stopped_in_place() == {}
    again = minion.run("dockerops.apply", service_name)
    assert again.returncode == 0
    assert "recovered" not in again.data[service_name]["changes"], again.data


def test_a_pruned_config_version_is_never_mounted_empty(
    minion, docker_client, demo_images, service_name, tmp_path
):
    """dockerd makes a missing bind source as an empty directory: putting back a
    replica whose config version is gone must fail, not serve an empty config."""
    allowed = tmp_path / "allowed"
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        config={
            "path": "/etc/app",
            "root": str(allowed / "config"),
            "files": {"app.conf": {"contents": "one\n"}},
        },
        update={"order": "stop-first"},
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(allowed)]
    minion.set_pillar(pillar)
    assert minion.run("state.apply", "dockerops").returncode == 0
    old = cut_after_stopping_in_place(minion, docker_client, service_name)
    version = old.labels["io.dockerops.config-version"]
    # The version it mounted is gone (pruned by an older release, or by hand).
    for entry in (allowed / "config" / f"..{version}").iterdir():
        entry.unlink()
    (allowed / "config" / f"..{version}").rmdir()

    again = minion.run("dockerops.apply", service_name)
    assert again.returncode != 0
    assert "does not exist" in again.stdout, again.stdout
    assert not (allowed / "config" / f"..{version}").exists()
