"""The dockerops runner: fleet rollouts over minions on separate Docker hosts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import MINIONS, write_pillar

pytestmark = pytest.mark.docker

ENVS = {"int-m1": "integration", "stg-m2": "staging", "prd-m3": "production"}


@pytest.fixture(scope="module")
def fleet(salt_master, salt_cli, salt_minions, pillar_dir, demo_images, tmp_path_factory):
    """Every minion runs web 1.0, two replicas, on its own host and ports."""
    import random

    repo = demo_images["repository"]
    per_env = {}
    for number, env in enumerate(ENVS.values()):
        base = random.randrange(20000, 32000) // 10 * 10 + number * 3
        per_env[env] = {
            "dockerops": {
                "environment": env,
                "services": {
                    "web": {
                        "image": repo,
                        "tag": "1.0",
                        "replicas": 2,
                        "ports": [{"container": 8080, "host": base}],
                        "update": {"health_timeout": "10s"},
                    }
                },
            }
        }
    write_pillar(pillar_dir, per_env)
    assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt="*").returncode == 0
    applied = salt_cli.run("state.apply", "dockerops", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    yield {"repo": repo, "run": salt_master.salt_run_cli(timeout=300)}
    salt_cli.run("state.apply", "dockerops.clean", minion_tgt="*")


@pytest.fixture
def at_pillar(fleet, salt_cli, docker_hosts):
    """Every minion back on pillar's web (1.0, two healthy replicas), whatever
    an earlier test left: a no-op highstate when it is there already."""
    applied = salt_cli.run("state.apply", "dockerops", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    states = wait_healthy(docker_hosts)
    assert all(rows == [(f"{fleet['repo']}:1.0", "healthy")] * 2 for rows in states.values())
    return states


def salt_run(salt_master, *args):
    """``salt-run`` as an operator types it (no --out): what they read."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "salt-run"), "-c", salt_master.config_dir, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def fleet_images(docker_hosts):
    out = {}
    for minion, daemon in docker_hosts.items():
        client = daemon.client()
        found = client.containers.list(
            ignore_removed=True, all=True, filters={"label": "io.dockerops.service=web"}
        )
        out[minion] = sorted(
            (c.labels["io.dockerops.image"], c.attrs["State"].get("Health", {}).get("Status"))
            for c in found
        )
        client.close()
    return out


def wait_healthy(docker_hosts, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = fleet_images(docker_hosts)
        if all(h == "healthy" for rows in states.values() for _i, h in rows):
            return states
        time.sleep(0.5)
    return fleet_images(docker_hosts)


def test_plan_only_under_test(fleet, at_pillar, docker_hosts):
    before = fleet_images(docker_hosts)
    out = fleet["run"].run(
        "dockerops.rolling_update", "web", "tgt=*", "batch=2", "canary=1", "tag=1.1", "test=True"
    )
    assert out.returncode == 0, out.stdout
    plan = out.data["plan"]
    assert plan[0].startswith("web: 3 minions, 6 replicas, healthy floor 5")
    assert plan[0].endswith("worst case during a batch 6, failure budget 0")
    assert plan[1:3] == ["canary: int-m1", "batch 2: prd-m3, stg-m2"]
    # Then each minion's own plan, from dockerops.rolling_update test=True there.
    assert [line.split(":")[0] for line in plan[3:]] == sorted(MINIONS)
    for line in plan[3:]:
        # Two replicas, one batch each, whichever slots they sit in now.
        assert "batch 1 (start-first): web-" in line and "; batch 2 (start-first): web-" in line
        assert line.count(":1.0 -> ") == 2 and line.endswith(":1.1)"), line
    assert fleet_images(docker_hosts) == before


def test_settings_that_cannot_make_progress_are_refused(fleet, docker_hosts):
    out = fleet["run"].run("dockerops.rolling_update", "web", "tgt=*", "min_healthy=7")
    assert out.returncode != 0
    assert "a floor of 7 is more than the 6 replicas" in out.stdout


def test_rolls_the_fleet_in_batches_after_a_canary(fleet, at_pillar, salt_cli, docker_hosts):
    out = fleet["run"].run(
        "dockerops.rolling_update", "web", "tgt=*", "batch=2", "canary=1", "tag=1.1"
    )
    assert out.returncode == 0, out.stdout
    assert out.data["result"] is True
    for minion in MINIONS:
        entry = out.data["minions"][minion]
        assert entry["result"] is True
        assert entry["from"] == f"{fleet['repo']}:1.0" and entry["to"] == f"{fleet['repo']}:1.1"
    states = wait_healthy(docker_hosts)
    assert all(rows == [(f"{fleet['repo']}:1.1", "healthy")] * 2 for rows in states.values())
    # The canary finished before the next batch started (per-host history).
    history = salt_cli.run("dockerops.history", "web", "limit=1", minion_tgt="*").data
    canary_end = _end(history["int-m1"][0])
    assert all(_start(history[m][0]) >= canary_end for m in ("prd-m3", "stg-m2"))
    # Each host's audit names the job that rolled it, and the summary its own time.
    jids = {m: history[m][0]["jid"] for m in MINIONS}
    assert all(jid and jid.isdigit() for jid in jids.values()), jids
    assert len(set(jids.values())) == 2  # the canary's job, then batch 2's
    for minion in MINIONS:
        assert 0 < out.data["minions"][minion]["duration"] <= history[minion][0]["duration"] + 1


def _start(entry):
    return time.mktime(time.strptime(entry["when"], "%Y-%m-%dT%H:%M:%SZ"))


def _end(entry):
    return _start(entry) + entry["duration"] - 1  # `when` has one-second resolution


def test_a_broken_version_stops_after_the_canary(fleet, docker_hosts):
    start = wait_healthy(docker_hosts)
    out = fleet["run"].run(
        "dockerops.rolling_update", "web", "tgt=*", "batch=2", "canary=1", "tag=broken"
    )
    assert out.returncode != 0
    assert "stopped after canary" in out.data["comment"]
    assert out.data["minions"]["int-m1"]["result"] is False
    # Only the canary was tried (and its own rollout put it back); the
    # summary lists the others as never started.
    assert {m: e["state"] for m, e in out.data["minions"].items()} == {
        "int-m1": "failed",
        "prd-m3": "not started",
        "stg-m2": "not started",
    }
    assert out.data["minions"]["int-m1"]["now"] == out.data["minions"]["int-m1"]["from"]
    assert wait_healthy(docker_hosts) == start


def test_failure_past_the_budget_stops_and_rolls_back_in_batches(
    fleet, salt_cli, docker_hosts, demo_images
):
    """1.2 is good on int-m1 and prd-m3 but broken on stg-m2: the rollout stops
    after stg-m2's batch and the minions already updated go back to 1.1."""
    start = wait_healthy(docker_hosts)
    repo = fleet["repo"]
    good = docker_hosts["int-m1"].client()
    good.images.pull(repo, tag="1.1")
    good.images.get(f"{repo}:1.1").tag(repo, "1.2")
    good.images.push(repo, tag="1.2")
    good.close()
    # On stg-m2's host only, "1.2" is the broken build (found locally, never pulled).
    bad = docker_hosts["stg-m2"].client()
    bad.images.pull(repo, tag="broken")
    bad.images.get(f"{repo}:broken").tag(repo, "1.2")
    bad.close()

    out = fleet["run"].run(
        "dockerops.rolling_update", "web", "tgt=*", "batch=2", "canary=1", "tag=1.2"
    )
    assert out.returncode != 0
    summary = out.data
    assert summary["result"] is False
    assert "over the failure budget of 0" in summary["comment"]
    assert summary["minions"]["stg-m2"]["result"] is False
    assert summary["minions"]["int-m1"]["rolled_back"] is True
    assert summary["minions"]["prd-m3"]["rolled_back"] is True
    # Each shows where it ended up: back where it started, not on 1.2.
    for minion in ("int-m1", "prd-m3"):
        entry = summary["minions"][minion]
        assert entry["state"] == "rolled back"
        assert (entry["to"], entry["now"]) == (f"{repo}:1.2", entry["from"])
        assert [(entry["now"], "healthy")] * 2 == start[minion]
    assert summary["minions"]["stg-m2"]["state"] == "failed"
    assert wait_healthy(docker_hosts) == start


def test_a_second_concurrent_call_is_refused(fleet, salt_master, docker_hosts):
    first = {}
    lock = Path(salt_master.config["cachedir"]) / "dockerops" / "locks" / "fleet-web.lock"

    def run_first():
        first["out"] = fleet["run"].run(
            "dockerops.rolling_update", "web", "tgt=*", "batch=1", "tag=1.1", "pause=5"
        )

    thread = threading.Thread(target=run_first)
    thread.start()
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lock.exists(), "the first rollout never took the lock"
    # A CLI factory of its own: one factory must not run two processes at once.
    second_cli = salt_master.salt_run_cli(timeout=300)
    second = second_cli.run("dockerops.rolling_update", "web", "tgt=*", "tag=1.1")
    thread.join(timeout=300)
    assert second.returncode != 0
    assert "a fleet rollout of web is already running" in second.stdout
    assert first["out"].returncode == 0, first["out"].stdout


def test_a_minion_killed_mid_rollout_halts_the_run(fleet, salt_cli, salt_minions, docker_hosts):
    """prd-m3's minion is stopped while the canary (int-m1) rolls (and started
    again, answering, before the test ends)."""
    canary_host = docker_hosts["int-m1"].client()
    running = {
        c.labels["io.dockerops.image"]
        for c in canary_host.containers.list(
            ignore_removed=True, filters={"label": "io.dockerops.service=web"}
        )
    }
    target = "1.0" if running == {f"{fleet['repo']}:1.1"} else "1.1"
    result = {}

    def run():
        result["out"] = fleet["run"].run(
            "dockerops.rolling_update",
            "web",
            "tgt=*",
            "canary=1",
            "batch=2",
            f"tag={target}",
            "timeout=20",
            # Time to stop prd-m3 before batch 2 starts, however fast the canary.
            "pause=10",
        )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        # Wait until the canary's first replacement exists: the rollout is under way.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            labels = {
                c.labels["io.dockerops.image"]
                for c in canary_host.containers.list(
                    ignore_removed=True, all=True, filters={"label": "io.dockerops.service=web"}
                )
            }
            if f"{fleet['repo']}:{target}" in labels:
                break
            time.sleep(0.1)
        salt_minions["prd-m3"].terminate()
        thread.join(timeout=300)
    finally:
        canary_host.close()
        salt_minions["prd-m3"].start(start_timeout=120)
        _wait_answering(salt_cli, "prd-m3")
    out = result["out"]
    assert out.returncode != 0, out.stdout
    assert "prd-m3" in out.data["minions"], out.stdout
    assert out.data["minions"]["prd-m3"]["result"] is False
    assert "no answer within 20s" in out.data["minions"]["prd-m3"]["comment"]
    assert "over the failure budget of 0: stopped" in out.data["comment"]
    # The canary, already updated, was rolled back.
    assert out.data["minions"]["int-m1"]["rolled_back"] is True


def _wait_answering(salt_cli, minion, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if salt_cli.run("test.ping", minion_tgt=minion).data is True:
            return
        time.sleep(1)
    raise AssertionError(f"{minion} does not answer")


def test_salt_run_prints_one_line_per_step_and_closes_what_it_opens(fleet, at_pillar, salt_master):
    out = salt_run(salt_master, "dockerops.rolling_update", "web", "tgt=*", "tag=1.1", "test=True")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("web: 3 minions, 6 replicas, healthy floor 5"), out.stdout
    assert lines[1:4] == ["batch 1: int-m1", "batch 2: prd-m3", "batch 3: stg-m2"]
    assert [line.split(":")[0] for line in lines[4:7]] == sorted(MINIONS)
    # Then the return, as nested output.
    assert lines[7:9] == ["comment:", "    test: nothing changed"], out.stdout
    assert "suffix:" not in out.stdout and "_stamp" not in out.stdout
    assert "unclosed" not in out.stderr, out.stderr

    bad = salt_run(salt_master, "dockerops.rolling_update", "web", "tgt=*", "batch=abc")
    assert bad.returncode != 0
    assert bad.stdout.splitlines()[0] == (
        "invalid argument: batch: expected a count or a percentage, got 'abc'"
    )
    assert "pillar" not in bad.stdout
    assert "unclosed" not in bad.stderr, bad.stderr
