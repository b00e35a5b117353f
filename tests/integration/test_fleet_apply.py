"""From the master: rollout progress on its event bus, ``salt-run dockerops.apply``
in batches, and the orchestration example, over minions on separate Docker hosts.

One fleet for the whole module (web on every minion, a config file from pillar);
each test first puts the fleet in the state it starts from (``converged``), so
no test depends on another having run before it.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import MINIONS, write_pillar

pytestmark = pytest.mark.docker

ENVS = {"int-m1": "integration", "stg-m2": "staging", "prd-m3": "production"}
# prd-m3 runs two replicas (the event test follows a two-batch rollout there);
# the others one each, which keeps the fleet-wide runs short.
REPLICAS = {"int-m1": 1, "stg-m2": 1, "prd-m3": 2}
# dockerops.apply batches the minions in sorted order.
APPLY_ORDER = sorted(MINIONS)
EVENTS = "dockerops/rollout/web/*"
ORCH = "orch.dockerops.rolling_update"


@pytest.fixture(scope="module")
def fleet(salt_master, salt_cli, salt_minions, pillar_dir, demo_images, tmp_path_factory):
    """Every minion runs web 1.0 with ``app.conf`` at revision 1."""
    repo = demo_images["repository"]
    root = tmp_path_factory.mktemp("fleet-apply")
    base = random.randrange(20000, 32000) // 10 * 10
    # Each minion's range holds its replicas plus the two start-first spare slots.
    ports = {minion: base + number * 4 for number, minion in enumerate(MINIONS)}
    written = {}

    def set_pillar(revision: int, tags: dict[str, str] | None = None) -> None:
        """app.conf at ``revision`` everywhere, tag 1.0 unless ``tags`` says otherwise."""
        if written.get("last") == (revision, tags):
            return  # the minions have this pillar already
        per_env = {}
        for minion, env in ENVS.items():
            web = {
                "image": repo,
                "tag": (tags or {}).get(minion, "1.0"),
                "replicas": REPLICAS[minion],
                "ports": [{"container": 8080, "host": ports[minion]}],
                "config": {
                    "path": "/etc/app",
                    "root": str(root / minion / "web" / "config"),
                    "files": {"app.conf": {"contents": f"revision = {revision}\n"}},
                },
                "update": {"health_timeout": "10s"},
            }
            per_env[env] = {
                "dockerops": {
                    "environment": env,
                    "allowed_host_paths": [str(root)],
                    "services": {"web": web},
                }
            }
        write_pillar(pillar_dir, per_env)
        refreshed = salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt="*")
        assert refreshed.returncode == 0, refreshed.stdout
        written["last"] = (revision, tags)

    set_pillar(1)
    applied = salt_cli.run("state.apply", "dockerops", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    yield {
        "repo": repo,
        "root": root,
        "pillar": set_pillar,
        "run": salt_master.salt_run_cli(timeout=300),
    }
    salt_cli.run("state.apply", "dockerops.clean", minion_tgt="*")


def converged(fleet, salt_cli, docker_hosts, revision: int, fresh=()) -> dict:
    """The fleet as pillar says (app.conf at ``revision``, web 1.0), whatever an
    earlier test left; the minions in ``fresh`` start over (their web
    containers and config versions removed first, so slots 1-2 again)."""
    for minion in fresh:
        cleaned = salt_cli.run("state.apply", "dockerops.clean", minion_tgt=minion)
        assert cleaned.returncode == 0, cleaned.stdout
    fleet["pillar"](revision)
    applied = salt_cli.run("state.apply", "dockerops", minion_tgt="*")
    assert applied.returncode == 0, applied.stdout
    return wait_settled(docker_hosts)


def _docker_time(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as a POSIX timestamp."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")


def web_containers(docker_hosts, conf: bool = False) -> dict[str, dict[str, dict]]:
    """Per minion, per container name: id, image, health, creation time and
    (with ``conf``, read with docker exec) the mounted app.conf."""
    out = {}
    for minion, daemon in docker_hosts.items():
        client = daemon.client()
        try:
            rows = {}
            for c in client.containers.list(
                ignore_removed=True, all=True, filters={"label": "io.dockerops.service=web"}
            ):
                rows[c.name] = {
                    "id": c.id,
                    "image": c.labels["io.dockerops.image"],
                    "health": c.attrs["State"].get("Health", {}).get("Status"),
                    "created": _docker_time(c.attrs["Created"]),
                }
                if conf:
                    rows[c.name]["conf"] = c.exec_run(["cat", "/etc/app/app.conf"]).output.decode()
            out[minion] = rows
        finally:
            client.close()
    return out


def wait_settled(docker_hosts, timeout: float = 30) -> dict[str, dict[str, dict]]:
    """The fleet once every web container is healthy (or as it is at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        fleet = web_containers(docker_hosts)
        settled = all(r["health"] == "healthy" for rows in fleet.values() for r in rows.values())
        if settled or time.monotonic() > deadline:
            return fleet
        time.sleep(0.5)


def _key(tag: str, payload: dict) -> tuple[str, str]:
    return tag, json.dumps(payload, sort_keys=True)


def rollout_events(event_listener, master_id, after: float, wait_for, timeout: float = 30):
    """Per minion, the ``dockerops/rollout/web/*`` events the master received from
    it since ``after``, once each minion of ``wait_for`` has its ``done`` event
    there (or at the timeout).

    They are in the order the minion fired them: a minion forwards events to its
    master concurrently, so the master's receipt stamps of two events fired a
    few milliseconds apart need not be in order. The firing order is the order
    of the ``fire_master`` events on the minion's own bus, stamped as the job
    fires them. A master event the minion did not fire comes last.
    """
    deadline = time.monotonic() + timeout
    while True:
        received: dict[str, dict] = {m: {} for m in MINIONS}
        for event in event_listener.get_events([(master_id, EVENTS)], after_time=after):
            sender = received.setdefault(event.data.get("id"), {})
            sender[_key(event.tag, event.data["data"])] = event
        fired = sorted(
            (
                e
                for e in event_listener.get_events(
                    [(m, "fire_master") for m in MINIONS], after_time=after
                )
                if fnmatch.fnmatch(e.data.get("tag", ""), EVENTS)
            ),
            key=lambda e: e.stamp,
        )
        found: dict[str, list] = {m: [] for m in received}
        for event in fired:
            key = _key(event.data["tag"], event.data["data"])
            if key in received.get(event.daemon_id, {}):
                found[event.daemon_id].append(received[event.daemon_id].pop(key))
        # Complete once each rollout's end is in, and matched on both buses.
        complete = all(
            any(e.tag.endswith("/done") for e in found[m]) and not received[m] for m in wait_for
        )
        if complete or time.monotonic() > deadline:
            for minion, rest in received.items():
                found[minion].extend(sorted(rest.values(), key=lambda e: e.stamp))
            return found
        time.sleep(0.5)


def _stage(event) -> tuple[str, dict]:
    data = dict(event.data["data"])
    assert data.pop("service") == "web", event
    data.pop("seq")
    if data.get("state") == "healthy":
        assert isinstance(data.pop("seconds"), (int, float)), event
    return event.tag.rpartition("/")[2], data


# -- rollout progress events ------------------------------------------------------


def test_rollout_progress_reaches_the_master_event_bus(
    fleet, salt_master, salt_cli, event_listener, docker_hosts
):
    repo = fleet["repo"]
    converged(fleet, salt_cli, docker_hosts, revision=1, fresh=["prd-m3"])
    assert sorted(web_containers(docker_hosts)["prd-m3"]) == ["web-1", "web-2"]
    after = time.time()
    out = salt_cli.run("dockerops.rolling_update", "web", "tag=1.1", minion_tgt="prd-m3")
    assert out.returncode == 0, out.stdout
    assert out.data["result"] is True, out.stdout

    # Fired by the minion's job with event.send; the master has them as sent.
    events = rollout_events(event_listener, salt_master.id, after, ["prd-m3"])
    assert [_stage(e) for e in events["prd-m3"]] == [
        ("start", {"to": f"{repo}:1.1", "actions": ["recreate web-1", "recreate web-2"]}),
        ("batch", {"batch": 1, "of": 2, "replicas": ["web-1"]}),
        # Start-first: the replacement runs in a spare slot beside web-1 ...
        ("replica", {"replica": "web-3", "state": "started", "replaces": "web-1"}),
        # ... and once it is healthy, the next batch starts in the other spare
        # while web-3 proves itself for min_healthy_time.
        ("batch", {"batch": 2, "of": 2, "replicas": ["web-2"]}),
        ("replica", {"replica": "web-4", "state": "started", "replaces": "web-2"}),
        ("replica", {"replica": "web-3", "state": "healthy"}),
        ("replica", {"replica": "web-4", "state": "healthy"}),
        ("done", {"result": True, "rolled_back": []}),
    ]
    # Numbered in firing order, whatever order they reached the master in.
    assert [e.data["data"]["seq"] for e in events["prd-m3"]] == list(range(1, 9))
    # Only the targeted minion rolled.
    assert events["int-m1"] == [] and events["stg-m2"] == []
    now = web_containers(docker_hosts)["prd-m3"]
    assert sorted(now) == ["web-3", "web-4"]
    assert {r["image"] for r in now.values()} == {f"{repo}:1.1"}


def test_a_failed_rollout_reports_its_end_on_the_master_event_bus(
    fleet, salt_master, salt_cli, event_listener, docker_hosts
):
    repo = fleet["repo"]
    # prd-m3 on 1.1 in slots 3-4 (a start-first rollout from a fresh 1-2).
    converged(fleet, salt_cli, docker_hosts, revision=1, fresh=["prd-m3"])
    rolled = salt_cli.run("dockerops.rolling_update", "web", "tag=1.1", minion_tgt="prd-m3")
    assert rolled.returncode == 0, rolled.stdout
    before = wait_settled(docker_hosts)
    assert sorted(before["prd-m3"]) == ["web-3", "web-4"]
    after = time.time()
    out = salt_cli.run("dockerops.rolling_update", "web", "tag=broken", minion_tgt="prd-m3")
    assert out.returncode != 0, out.stdout
    assert out.data["result"] is False

    events = rollout_events(event_listener, salt_master.id, after, ["prd-m3"])
    # The broken replacement never became healthy; the replica it was to
    # replace kept running, so there was nothing to roll back.
    assert [_stage(e) for e in events["prd-m3"]] == [
        ("start", {"to": f"{repo}:broken", "actions": ["recreate web-3", "recreate web-4"]}),
        ("batch", {"batch": 1, "of": 2, "replicas": ["web-3"]}),
        ("replica", {"replica": "web-1", "state": "started", "replaces": "web-3"}),
        ("done", {"result": False, "rolled_back": []}),
    ]
    assert wait_settled(docker_hosts) == before


# -- salt-run dockerops.apply -----------------------------------------------------


def test_apply_converges_the_fleet_one_batch_at_a_time(
    fleet, salt_master, salt_cli, event_listener, docker_hosts
):
    repo = fleet["repo"]
    converged(fleet, salt_cli, docker_hosts, revision=1)
    fleet["pillar"](revision=2)
    before = web_containers(docker_hosts)
    after = time.time()
    out = fleet["run"].run("dockerops.apply", "tgt=*", "batch=1")
    assert out.returncode == 0, out.stdout
    assert out.data["result"] is True
    assert out.data["comment"] == "applied on 3 minion(s)"
    assert sorted(out.data["minions"]) == APPLY_ORDER
    assert all(entry["result"] is True for entry in out.data["minions"].values())

    # Every replica of every minion was replaced and mounts revision 2.
    now = web_containers(docker_hosts, conf=True)
    for minion in MINIONS:
        rows = now[minion]
        assert len(rows) == REPLICAS[minion]
        assert not {r["id"] for r in rows.values()} & {r["id"] for r in before[minion].values()}
        for row in rows.values():
            assert (row["image"], row["health"]) == (f"{repo}:1.0", "healthy")
            assert row["conf"] == "revision = 2\n"

    # One minion per batch: each finished (its rollout's done event reached the
    # master) before the next created its first container.
    events = rollout_events(event_listener, salt_master.id, after, MINIONS)
    finished = {}
    for minion in MINIONS:
        tags = [e.tag for e in events[minion]]
        assert tags[0].endswith("/start") and tags[-1].endswith("/done"), (minion, tags)
        finished[minion] = events[minion][-1].stamp.timestamp()
    for done, following in itertools.pairwise(APPLY_ORDER):
        first_created = min(r["created"] for r in now[following].values())
        assert finished[done] < events[following][0].stamp.timestamp(), (done, following)
        assert finished[done] < first_created, (done, following)


def test_apply_under_test_changes_nothing(fleet, salt_cli, docker_hosts):
    """Revision 3, and prd-m3 on a broken version: it is only reported."""
    converged(fleet, salt_cli, docker_hosts, revision=2, fresh=MINIONS)
    fleet["pillar"](revision=3, tags={"prd-m3": "broken"})
    before = web_containers(docker_hosts)
    out = fleet["run"].run("dockerops.apply", "tgt=*", "batch=1", "test=True")
    assert out.returncode == 0, out.stdout
    assert out.data["result"] is True
    assert sorted(out.data["minions"]) == APPLY_ORDER
    assert web_containers(docker_hosts) == before
    # Not even the new config version was written.
    written = [p.read_text() for p in Path(fleet["root"]).rglob("app.conf")]
    assert written and "revision = 3\n" not in written


def test_a_failing_batch_stops_apply_and_leaves_later_batches_untouched(
    fleet, salt_cli, docker_hosts
):
    """From revision 2, revision 3 everywhere, and prd-m3 (batch 2 of 3) pointed
    at a version that never becomes healthy: int-m1 converges, prd-m3 fails,
    stg-m2 is not run."""
    repo = fleet["repo"]
    converged(fleet, salt_cli, docker_hosts, revision=2)
    fleet["pillar"](revision=3, tags={"prd-m3": "broken"})
    before = web_containers(docker_hosts)
    out = fleet["run"].run("dockerops.apply", "tgt=*", "batch=1")
    assert out.returncode != 0, out.stdout
    assert out.data["result"] is False
    assert out.data["comment"] == (
        "1 failed minion(s), over the failure budget of 0: stopped after batch 2"
    )
    # Every targeted minion, stg-m2 never started.
    assert {m: e["state"] for m, e in out.data["minions"].items()} == {
        "int-m1": "applied",
        "prd-m3": "failed",
        "stg-m2": "not started",
    }
    assert out.data["minions"]["int-m1"]["result"] is True
    assert out.data["minions"]["prd-m3"]["result"] is False

    now = wait_settled(docker_hosts)
    assert now["stg-m2"] == before["stg-m2"]
    # prd-m3's replicas were never stopped: the broken replacement started
    # beside the first and was removed.
    assert now["prd-m3"] == before["prd-m3"]
    now = web_containers(docker_hosts, conf=True)
    assert {r["conf"] for r in now["prd-m3"].values()} == {"revision = 2\n"}
    assert [(r["image"], r["conf"]) for r in now["int-m1"].values()] == [
        (f"{repo}:1.0", "revision = 3\n")
    ]


# -- salt-run state.orchestrate orch.dockerops.rolling_update ---------------------


def _orchestrate(fleet, **rollout):
    """Run the orchestration example: the CLI result and its one state's return."""
    pillar = json.dumps({"dockerops_rollout": {"service": "web", "tgt": "*", **rollout}})
    out = fleet["run"].run("state.orchestrate", ORCH, f"pillar={pillar}")
    assert isinstance(out.data, dict), out.stdout
    (states,) = out.data["data"].values()  # the master's own "minion" id
    (state,) = states.values()
    return out, state


def test_the_orchestration_example_rolls_the_fleet(fleet, docker_hosts):
    repo = fleet["repo"]
    fleet["pillar"](revision=3)
    out, state = _orchestrate(fleet, tag="1.1", batch=2, canary=1)
    assert out.returncode == 0, out.stdout
    assert state["result"] is True, out.stdout
    summary = state["changes"]["return"]
    assert summary["result"] is True
    # The pillar's batch and canary reached the runner.
    assert summary["plan"][1:3] == ["canary: int-m1", "batch 2: prd-m3, stg-m2"]
    for minion in MINIONS:
        assert summary["minions"][minion]["result"] is True
        assert summary["minions"][minion]["to"] == f"{repo}:1.1"
    now = web_containers(docker_hosts, conf=True)
    for minion in MINIONS:
        assert len(now[minion]) == REPLICAS[minion]
        assert {(r["image"], r["health"], r["conf"]) for r in now[minion].values()} == {
            (f"{repo}:1.1", "healthy", "revision = 3\n")
        }


def test_a_failed_orchestration_stops_after_the_canary(fleet, docker_hosts):
    before = wait_settled(docker_hosts)
    out, state = _orchestrate(fleet, tag="broken", batch=1, canary=1)
    assert out.returncode != 0, out.stdout
    assert state["result"] is False
    summary = state["changes"]["return"]
    assert summary["result"] is False
    assert "stopped after canary" in summary["comment"]
    assert {m: e["state"] for m, e in summary["minions"].items()} == {
        "int-m1": "failed",
        "prd-m3": "not started",
        "stg-m2": "not started",
    }
    # The canary's broken replacement started beside its replica and was
    # removed; the other minions were never run.
    assert wait_settled(docker_hosts) == before
