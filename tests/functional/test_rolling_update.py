"""dockerops.rolling_update / rollback / history on one host (real dockerd)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request

import pytest
from salt.exceptions import SaltInvocationError

from dockerops.lock import RolloutLock
from tests.functional.helpers import containers, service_pillar

pytestmark = pytest.mark.docker

REPLICAS = 3


class HealthSampler:
    """Counts healthy replicas every 100 ms while a rollout runs."""

    def __init__(self, client, service, ports=None):
        self.client, self.service, self.ports = client, service, ports or []
        self.healthy_counts: list[int] = []
        self.answering_counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            listed = self.client.api.containers(
                filters={"label": f"io.dockerops.service={self.service}", "health": "healthy"}
            )
            self.healthy_counts.append(len(listed))
            if self.ports:
                self.answering_counts.append(sum(_answers(p) for p in self.ports))
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def web(salt, demo_images, service_name, free_ports):
    """A 3-replica service on 1.0 with published ports (slots 1-3, spares 4-6)."""
    port = free_ports(REPLICAS + 4)  # parallelism 2 uses spares 4-7
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        replicas=REPLICAS,
        ports=[{"container": 8080, "host": port}],
        update={"health_timeout": "8s"},
    )
    salt.set_pillar(pillar)
    first = salt.states.dockerops.running(name=service_name)
    assert first.result is True, first.comment
    return {"name": service_name, "pillar": pillar, "ports": [port + i for i in range(6)]}


def images(client, service):
    return sorted(c.labels["io.dockerops.image"] for c in containers(client, service).values())


def test_v1_to_v2_keeps_full_healthy_capacity(salt, docker_client, demo_images, web):
    with HealthSampler(docker_client, web["name"], web["ports"]) as sampler:
        out = salt.modules.dockerops.rolling_update(web["name"], tag="1.1")
    assert out["result"] is True, out["comment"]
    assert out["from"] == demo_images["1.0"] and out["to"] == demo_images["1.1"]
    assert "next highstate will converge back" in out["note"]
    # For the fleet runner's floor: the replicas healthy when it returned.
    assert out["healthy"] == REPLICAS
    running = containers(docker_client, web["name"])
    assert len(running) == REPLICAS
    for container in running.values():
        assert container.labels["io.dockerops.image"] == demo_images["1.1"]
        container.reload()
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
    # start-first: never fewer healthy replicas (or answering ports) than replicas.
    assert sampler.healthy_counts and min(sampler.healthy_counts) >= REPLICAS
    assert min(sampler.answering_counts) >= REPLICAS
    (entry,) = salt.modules.dockerops.history(web["name"])[:1]
    assert entry["from"] == demo_images["1.0"] and entry["to"] == demo_images["1.1"]
    assert entry["result"] is True and entry["duration"] > 0


# Why each bad version fails: the first of the first batch's replacements
# (slots 4 and 5) that gives a verdict names it. A crash loop is caught either
# exited or already restarted, whichever an inspect sees first.
FAILURES = {
    "broken": r"became unhealthy",
    "crashloop": r"(exited with code 1|restarted \(crash loop\))",
}


@pytest.mark.parametrize("bad_tag", sorted(FAILURES))
def test_a_bad_version_is_rolled_back_automatically(salt, docker_client, demo_images, web, bad_tag):
    before = {c.id for c in containers(docker_client, web["name"]).values()}
    started = time.monotonic()
    with HealthSampler(docker_client, web["name"]) as sampler:
        out = salt.modules.dockerops.rolling_update(web["name"], tag=bad_tag, parallelism=2)
    took = time.monotonic() - started
    assert out["result"] is False
    assert salt.context.get("retcode") == 1
    name = re.escape(web["name"])
    # Then the replacement's last log lines, then the steps: "\n..." or " (...)".
    failed = rf"Service {name} failed: {name}-[45] {FAILURES[bad_tag]}(\n| \(|$)"
    assert re.match(failed, out["comment"]), out["comment"]
    assert images(docker_client, web["name"]) == [demo_images["1.0"]] * REPLICAS
    for container in containers(docker_client, web["name"]).values():
        container.reload()
        assert container.attrs["State"]["Health"]["Status"] in ("healthy", "starting")
    # start-first: the first batch never became healthy, so nothing was stopped.
    assert {c.id for c in containers(docker_client, web["name"]).values()} == before
    assert min(sampler.healthy_counts) >= REPLICAS
    if bad_tag == "crashloop":
        assert took < 8, ("a crash loop is noticed without waiting for the timeout", out)
    (entry,) = salt.modules.dockerops.history(web["name"], limit=1)
    assert entry["result"] is False and entry["to"].endswith(f":{bad_tag}")


def test_a_failure_after_good_batches_rolls_them_back_rolling(
    salt, docker_client, demo_images, web, host_root
):
    """Replacements succeed, then one fails: every replaced replica goes back to
    exactly what it was, health-gated, newest first; the others were never touched."""
    data = host_root / "data"
    pillar = web["pillar"]
    service = pillar["dockerops"]["services"][web["name"]]
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    # A new container is healthy only while /data/stop-<its hostname> does not exist.
    service.update(
        tag="1.1",
        data=[{"host": str(host_root / "data"), "container": "/data"}],
        healthcheck={
            "test": "wget -q -O /dev/null http://127.0.0.1:8080/health"
            " && test ! -e /data/stop-$(cat /etc/hostname)",
            "interval": "500ms",
            "retries": 2,
        },
    )
    salt.set_pillar(pillar)
    before = {c.name: c.id for c in containers(docker_client, web["name"]).values()}

    def break_the_third_replacement():
        # Start-first: each replacement starts once those before it are
        # healthy. The third is made unhealthy as soon as it exists; by the
        # time that shows (two failed probes, 1 s) the first has counted and
        # replaced its replica (and the second may have, too).
        seen: list[str] = []  # new containers in the order they appeared
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for container in containers(docker_client, web["name"]).values():
                new = container.labels["io.dockerops.image"] == demo_images["1.1"]
                if new and container.id not in seen:
                    seen.append(container.id)
            if len(seen) >= 3:
                (data / f"stop-{seen[2][:12]}").write_text("stop")
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=break_the_third_replacement, daemon=True)
    watcher.start()
    out = salt.modules.dockerops.rolling_update(web["name"])
    watcher.join(timeout=5)
    assert list(data.glob("stop-*"))
    assert out["result"] is False
    first, second, third = sorted(before)
    assert out["rolled_back"] in ([first], [first, second]), out
    after = containers(docker_client, web["name"])
    assert sorted(after) == sorted(before)
    assert images(docker_client, web["name"]) == [demo_images["1.0"]] * REPLICAS
    # Replicas not rolled back never stopped; rolled back ones are new
    # containers built from their old inspect (same image, env, ports, labels).
    for name in sorted(before):
        if name in out["rolled_back"]:
            assert after[name].id != before[name]
            after[name].reload()
            assert after[name].attrs["State"]["Health"]["Status"] in ("healthy", "starting")
            assert "/data" not in {m["Destination"] for m in after[name].attrs["Mounts"]}
        else:
            assert after[name].id == before[name]
    assert after[third].id == before[third]


def test_test_mode_returns_the_plan_and_touches_nothing(salt, docker_client, demo_images, web):
    before = {c.id for c in containers(docker_client, web["name"]).values()}
    history_before = salt.modules.dockerops.history(web["name"])
    out = salt.modules.dockerops.rolling_update(web["name"], tag="1.1", test=True)
    # True, not None: Salt gives a whole return's falsy result exit code 1.
    assert (out["result"], out["test"]) == (True, True)
    # The runner's capacity math reads these (stop-first loses parallelism).
    assert out["update"] == {"order": "start-first", "parallelism": 1}
    assert "healthy" not in out  # a plan says nothing of what runs after it
    names = sorted(containers(docker_client, web["name"]))
    assert out["plan"] == [
        f"batch {i} (start-first): {name} ({demo_images['1.0']} -> {demo_images['1.1']})"
        for i, name in enumerate(names, 1)
    ]
    assert {c.id for c in containers(docker_client, web["name"]).values()} == before
    # A test run writes no history: only the fixture's deployment of 1.0 is there.
    history = salt.modules.dockerops.history(web["name"])
    assert history == history_before
    assert [(e["from"], e["to"], e["result"]) for e in history] == [
        (None, demo_images["1.0"], True)
    ]


def test_the_job_id_is_recorded_and_unknown_keywords_refused(salt, web):
    with pytest.raises(SaltInvocationError, match="bogus"):
        salt.modules.dockerops.rolling_update(web["name"], tag="1.1", bogus=1)
    # Salt passes a job's id as __pub_jid to functions that take **kwargs.
    out = salt.modules.dockerops.rolling_update(
        web["name"], tag="1.1", __pub_jid="20261127120000123456"
    )
    assert out["result"] is True, out["comment"]
    assert 0 < out["duration"] < 120
    (entry,) = salt.modules.dockerops.history(web["name"], limit=1)
    assert entry["jid"] == "20261127120000123456"


def test_a_failed_pull_changes_nothing(salt, docker_client, web):
    before = {c.id for c in containers(docker_client, web["name"]).values()}
    out = salt.modules.dockerops.rolling_update(web["name"], tag="no-such-tag")
    assert out["result"] is False
    assert "pulling image" in out["comment"]
    assert {c.id for c in containers(docker_client, web["name"]).values()} == before


def test_min_healthy_time_shorter_than_detection_is_refused(salt, docker_client, web):
    before = {c.id for c in containers(docker_client, web["name"]).values()}
    # demo-http's HEALTHCHECK: interval 1s x retries 2 = 2s to notice a failure.
    out = salt.modules.dockerops.rolling_update(web["name"], tag="1.1", min_healthy_time="1s")
    assert out["result"] is False
    assert "min_healthy_time: 1s is shorter than the healthcheck needs" in out["comment"]
    assert {c.id for c in containers(docker_client, web["name"]).values()} == before


def test_one_rollout_at_a_time_and_stale_locks(salt, minion_opts, web):
    lock = RolloutLock(minion_opts["dockerops.state_dir"], web["name"])
    with lock.held(jid="20261127000000000000"):
        out = salt.modules.dockerops.rolling_update(web["name"], tag="1.1")
        assert out["result"] is False
        assert f"pid {os.getpid()}" in out["comment"]
        assert "20261127000000000000" in out["comment"]
    # A lock left by a process that died is taken over.
    dead = {"pid": 999999999, "host": os.uname().nodename, "jid": "dead"}
    lock.path.write_text(json.dumps(dead))
    out = salt.modules.dockerops.rolling_update(web["name"], tag="1.1")
    assert out["result"] is True, out["comment"]
    assert not lock.path.exists()


def test_rollback_goes_to_the_last_good_version(salt, docker_client, demo_images, web):
    assert salt.modules.dockerops.rolling_update(web["name"], tag="1.1")["result"] is True
    out = salt.modules.dockerops.rollback(web["name"])
    assert out["result"] is True, out["comment"]
    assert images(docker_client, web["name"]) == [demo_images["1.0"]] * REPLICAS
