"""Rolling updates: our overhead, our capacity floor, and Docker Swarm side by side.

On isolated dockerds (tests/support/dockerd.py; never the machine's main
daemon), with the demo image (HEALTHCHECK every 1 s, 2 retries):

- **ours**: 4 replicas of ``dockerops/demo-http``, start-first, parallelism 1,
  rolled 1.0 -> 1.1 -> 1.0 by :func:`dockerops.converge.converge` (the library,
  no Salt). Overhead = converge's wall time / the inherent time, which is, for
  each replacement, start -> healthy (from the daemon's events API) plus
  ``min_healthy_time`` (interval x retries = 2 s). Then tag ``broken`` (never
  healthy) and ``crashloop`` (exits at once), health_timeout 10 s, rollback on:
  time until converge returns with 4 healthy replicas on 1.0.
- **Swarm** (a second isolated daemon, single-node swarm): the same image,
  replicas and parallelism 1, start-first, failure action rollback, monitor 2 s;
  ``docker service update --image`` 1.0 -> 1.1 -> 1.0 (blocking), then
  ``broken``: time until 4 healthy tasks run 1.0 again (rolled back).
- A sampler thread counts healthy replicas every 100 ms during every rollout.

``--scenario wide`` (issue 13) instead rolls 20 replicas 5 at a time, on an
image whose PID 1 ignores SIGTERM (``/bin/sh -c "/bin/serve; :"``, no init, a
10 s grace period), start-first, ``min_healthy_time`` 2 s, no published ports,
on both sides: ours (daemon 7, :func:`converge`) first, its containers removed,
then Swarm (daemon 8: ``--update-parallelism 5 --update-order start-first
--stop-grace-period 10s --update-monitor 2s``, the image's own HEALTHCHECK on
both). ``--rounds`` rollouts per side, alternating 1.0 -> 1.1 -> 1.0. The
daemon's container events (start, health, kill, die, destroy) are read live
(dockerd keeps only its last 256 events, and 40 health probes a second push a
rollout's first events out within seconds): per batch of 5 replacements (by
start order), when they started and were all healthy, and when the old
replicas they replace were sent SIGTERM and died. Swarm's wall time is its
``service update --detach=false``; it may return while old tasks are still
in their grace period, so the time until every old container has died is
shown too. Plot: ``bench/rollout_wide.png``.

    .venv/bin/python bench/rollout.py [--rounds 3] [--no-swarm] [--json build/bench/rollout.json]
    .venv/bin/python bench/rollout.py --scenario wide [--rounds 3] [--plot bench/rollout_wide.png]
    .venv/bin/python bench/rollout.py --scenario wide --from-json build/bench/rollout_wide.json

Run from the repository root (as root: it starts dockerds and bridges dopbr7/8).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dockerops.converge import converge  # noqa: E402
from dockerops.host import DockerHost  # noqa: E402
from dockerops.spec import load_service  # noqa: E402
from tests.support.dockerd import ExtraDaemon  # noqa: E402

IMAGE = "dockerops/demo-http"
REPLICAS = 4
HOST_PORT = 28080
MIN_HEALTHY = 2.0  # interval (1 s) x retries (2) of the demo image's HEALTHCHECK
STATE_DIR = "/var/tmp/dops-bench-state"
OURS_LABEL = "io.dockerops.service=web"
SWARM_LABEL = "com.docker.swarm.service.name=web"
WAIT_LIMIT = 240.0
ROLLS = (("1.0", "1.1"), ("1.1", "1.0"))  # no single wait in this script runs longer
# --scenario wide (issue 13): 20 replicas, 5 at a time, old replicas ignore SIGTERM.
WIDE_REPLICAS = 20
WIDE_PARALLELISM = 5
WIDE_GRACE = 10  # seconds, set on both sides (Docker's default too)
# sh as PID 1 ignores SIGTERM, and the trailing ":" keeps it from exec-ing serve.
IGNORES_SIGTERM = ["/bin/sh", "-c", "/bin/serve; :"]
WIDE_EVENTS = ["create", "start", "health_status", "kill", "die", "destroy"]
DEFAULT_JSON = str(REPO / "build" / "bench" / "rollout.json")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Sampler:
    """Counts running healthy replicas (by label) every 100 ms, in a thread."""

    def __init__(self, url: str, label: str, interval: float = 0.1) -> None:
        self.api = docker.APIClient(base_url=url, version="auto", timeout=10)
        self.label = label
        self.interval = interval
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + WAIT_LIMIT * 2
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a lost sample is no capacity drop
                self.counts.append(healthy(self.api, self.label))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.api.close()

    @property
    def minimum(self) -> int | None:
        return min(self.counts) if self.counts else None


def healthy(api: docker.APIClient, label: str, image: str | None = None) -> int:
    found = api.containers(filters={"label": label, "health": "healthy", "status": "running"})
    return sum(1 for c in found if image is None or c["Image"] == image)


def wait_for(what: str, check: Callable[[], bool], limit: float = WAIT_LIMIT) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"{what}: not within {limit:g}s")
        time.sleep(0.1)
    return time.monotonic() - started


def container_events(api: docker.APIClient, since: float, until: float) -> list[dict[str, Any]]:
    stream = api.events(
        since=int(since) - 1, until=int(until) + 2, filters={"type": "container"}, decode=True
    )
    return [e for e in stream if since <= e["timeNano"] / 1e9 <= until + 0.5]


def analyse(events: list[dict[str, Any]], image: str, t0: float, t1: float) -> dict[str, Any]:
    """Per replacement (a container of ``image`` started in [t0, t1]): start -> healthy.

    The inherent time is, summed over the replacements, start -> healthy plus
    ``min_healthy_time``: the time a rollout that holds each replacement
    before starting the next cannot avoid. Two latencies are measured from the
    events: ``launch``, from one replacement's ``healthy`` to the next one's
    ``start`` (noticing, then creating and starting it), and ``retire``, from
    a replacement's healthy + ``min_healthy_time`` ("ready") to the ``kill``
    of the old replica it replaces (noticing it counts).
    """
    starts: dict[str, float] = {}
    healthy_at: dict[str, float] = {}
    kills: list[float] = []
    for event in events:
        attrs = event.get("Actor", {}).get("Attributes", {})
        cid, when, action = event["id"], event["timeNano"] / 1e9, event["Action"]
        if action == "start" and attrs.get("image") == image:
            starts.setdefault(cid, when)
        elif action == "health_status: healthy" and cid in starts:
            healthy_at.setdefault(cid, when)
        elif action == "kill" and attrs.get("image") != image:
            kills.append(when)
    kills.sort()
    steps = sorted((starts[c], healthy_at[c]) for c in starts if c in healthy_at)
    to_healthy = [h - s for s, h in steps]
    inherent = sum(to_healthy) + MIN_HEALTHY * len(steps)
    launch = [round(s_next - h, 3) for (_s, h), (s_next, _h) in itertools.pairwise(steps)]
    retire = []
    for _start, healthy_i in steps:
        ready = healthy_i + MIN_HEALTHY
        kill = next((k for k in kills if k >= ready - 0.05), None)
        if kill is not None:
            retire.append(round(kill - ready, 3))
            kills.remove(kill)
    return {
        "replacements": len(steps),
        "start_to_healthy": [round(x, 2) for x in to_healthy],
        "inherent": round(inherent, 2),
        "before_first_start": round(steps[0][0] - t0, 2) if steps else None,
        "launch": launch,
        "retire": retire,
        "after_last": round(t1 - (steps[-1][1] + MIN_HEALTHY), 2) if steps else None,
    }


def build_images(url: str) -> None:
    env = {**os.environ, "DOCKER_HOST": url}
    subprocess.run([str(REPO / "images" / "build.sh")], env=env, check=True, timeout=300)


# -- ours ------------------------------------------------------------------


def pillar(tag: str, health_timeout: str) -> dict[str, Any]:
    service = {
        "image": IMAGE,
        "tag": tag,
        "replicas": REPLICAS,
        "ports": [{"container": 8080, "host": HOST_PORT}],
        "update": {"health_timeout": health_timeout, "rollback": True},
    }
    return {"dockerops": {"services": {"web": service}}}


def failure_seen(events: list[dict[str, Any]], image: str, t0: float) -> float | None:
    """Seconds from ``t0`` to the first replacement of ``image`` going unhealthy or dying."""
    ids = {
        e["id"]
        for e in events
        if e["Action"] == "start" and e.get("Actor", {}).get("Attributes", {}).get("image") == image
    }
    bad = ("health_status: unhealthy", "die")
    times = [e["timeNano"] / 1e9 for e in events if e["id"] in ids and e["Action"] in bad]
    return round(min(times) - t0, 2) if times else None


def ours(daemon: ExtraDaemon, rounds: int) -> dict[str, Any]:
    client = docker.DockerClient(base_url=daemon.url, version="auto", timeout=60)
    host = DockerHost(client)
    api = client.api
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    out: dict[str, Any] = {"updates": [], "failures": []}

    def run(tag: str, health_timeout: str) -> tuple[Any, float, float, float, int | None]:
        spec = load_service(pillar(tag, health_timeout), "web")
        with Sampler(daemon.url, OURS_LABEL) as sampler:
            t0 = time.time()
            result = converge(host, spec, None, state_dir=STATE_DIR)
            t1 = time.time()
        return result, t0, t1, t1 - t0, sampler.minimum

    result, *_ = run("1.0", "20s")
    assert result.result is not False, result.comment
    wait_for("ours: 4 healthy on 1.0", lambda: healthy(api, OURS_LABEL) == REPLICAS)
    log("ours: deployed 1.0")
    for old, new in ROLLS * rounds:
        result, t0, t1, wall, floor = run(new, "20s")
        assert result.result is not False, result.comment
        detail = analyse(container_events(api, t0, t1), f"{IMAGE}:{new}", t0, t1)
        row = {"from": old, "to": new, "wall": round(wall, 2), "min_healthy": floor, **detail}
        row["overhead"] = round(wall / detail["inherent"], 3) if detail["inherent"] else None
        row["steps"] = result.steps
        out["updates"].append(row)
        log(f"ours: {old} -> {new}: {json.dumps(row)}")
    for tag in ("broken", "crashloop") * rounds:
        result, t0, t1, wall, floor = run(tag, "10s")
        wait_for(
            f"ours: 4 healthy on 1.0 after {tag}",
            lambda: healthy(api, OURS_LABEL, f"{IMAGE}:1.0") == REPLICAS,
        )
        row = {
            "tag": tag,
            "result": result.result,
            "returned_after": round(wall, 2),
            "full_healthy_1_0_after": round(time.time() - t0, 2),
            "failure_seen_after": failure_seen(container_events(api, t0, t1), f"{IMAGE}:{tag}", t0),
            "min_healthy": floor,
            "steps": result.steps,
            "errors": result.errors,
        }
        out["failures"].append(row)
        log(f"ours: {tag}: {json.dumps(row)}")
    client.close()
    return out


# -- Docker Swarm ----------------------------------------------------------


def swarm(daemon: ExtraDaemon, rounds: int) -> dict[str, Any]:
    def dk(*args: str, timeout: float = WAIT_LIMIT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", daemon.url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    api = docker.APIClient(base_url=daemon.url, version="auto", timeout=60)
    out: dict[str, Any] = {"updates": [], "failures": []}
    init = dk(
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        "127.0.0.1:2478",
        "--data-path-port",
        "4799",
        timeout=120,
    )
    if init.returncode:
        raise RuntimeError(f"swarm init: {init.stderr.strip()}")
    try:
        create = dk(
            "service", "create", "--detach", "--name", "web", "--replicas", str(REPLICAS),
            "--update-parallelism", "1", "--update-order", "start-first",
            "--update-failure-action", "rollback", "--update-monitor", "2s",
            "--rollback-order", "start-first", "--no-resolve-image", f"{IMAGE}:1.0",
        )  # fmt: skip
        if create.returncode:
            raise RuntimeError(f"service create: {create.stderr.strip()}")
        wait_for(
            "swarm: 4 healthy on 1.0",
            lambda: healthy(api, SWARM_LABEL, f"{IMAGE}:1.0") == REPLICAS,
        )
        log("swarm: service at 4 healthy on 1.0")
        for old, new in ROLLS * rounds:
            with Sampler(daemon.url, SWARM_LABEL) as sampler:
                t0 = time.time()
                done = dk("service", "update", "--detach=false", "--no-resolve-image",
                          "--image", f"{IMAGE}:{new}", "web")  # fmt: skip
                t1 = time.time()
            if done.returncode:
                raise RuntimeError(f"service update to {new}: {done.stderr.strip()}")
            detail = analyse(container_events(api, t0, t1), f"{IMAGE}:{new}", t0, t1)
            row = {
                "from": old,
                "to": new,
                "wall": round(t1 - t0, 2),
                "min_healthy": sampler.minimum,
                **detail,
            }
            inherent = detail["inherent"]
            row["overhead"] = round(row["wall"] / inherent, 3) if inherent else None
            out["updates"].append(row)
            log(f"swarm: {old} -> {new}: {json.dumps(row)}")
            wait_for(
                f"swarm: old tasks gone after {new}",
                lambda new=new: (
                    healthy(api, SWARM_LABEL, f"{IMAGE}:{new}") == REPLICAS
                    and healthy(api, SWARM_LABEL) == REPLICAS
                ),
            )

        def update_status() -> dict[str, Any]:
            state = dk("service", "inspect", "web", "--format", "{{json .UpdateStatus}}").stdout
            return json.loads(state or "null") or {}

        def rolled_back(before: str | None) -> bool:
            status = update_status()
            if status.get("StartedAt") == before:  # still the previous update's status
                return False
            if status.get("State") in ("paused", "rollback_paused"):
                raise RuntimeError(f"swarm update stuck: {status}")
            return (
                status.get("State") == "rollback_completed"
                and healthy(api, SWARM_LABEL, f"{IMAGE}:1.0") == REPLICAS
            )

        for _ in range(rounds):
            before = update_status().get("StartedAt")
            with Sampler(daemon.url, SWARM_LABEL) as sampler:
                t0 = time.time()
                started = dk("service", "update", "--detach", "--no-resolve-image",
                             "--image", f"{IMAGE}:broken", "web")  # fmt: skip
                if started.returncode:
                    raise RuntimeError(f"service update to broken: {started.stderr.strip()}")
                wait_for("swarm: rolled back from broken", lambda b=before: rolled_back(b))
                t1 = time.time()
            events = container_events(api, t0, t1)
            row = {
                "tag": "broken",
                "failure_seen_after": failure_seen(events, f"{IMAGE}:broken", t0),
                "full_healthy_1_0_after": round(t1 - t0, 2),
                "min_healthy": sampler.minimum,
                "update_status": update_status(),
            }
            out["failures"].append(row)
            log(f"swarm: broken: {json.dumps(row)}")
    finally:
        dk("service", "rm", "web", timeout=60)
        dk("swarm", "leave", "--force", timeout=60)
        api.close()
    return out


# -- --scenario wide: 20 replicas, parallelism 5, old replicas ignore SIGTERM ----


class EventLog:
    """One service's container events, read live in a thread (see the module docstring)."""

    def __init__(self, url: str, label: str) -> None:
        self.api = docker.APIClient(base_url=url, version="auto", timeout=None)
        self.stream = self.api.events(
            decode=True, filters={"type": "container", "label": label, "event": WIDE_EVENTS}
        )
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed under us: done
            for event in self.stream:
                self.events.append(event)

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(0.5)  # the last events are still on their way
        self.stream.close()
        self.thread.join(timeout=5)
        self.api.close()
        return list(self.events)


def compact(event: dict[str, Any], t0: float) -> tuple[float, str, str, str]:
    attrs = event.get("Actor", {}).get("Attributes", {})
    action = event["Action"] + (f" {attrs.get('signal')}" if event["Action"] == "kill" else "")
    tag = str(attrs.get("image", "")).rpartition(":")[2]
    return (round(event["timeNano"] / 1e9 - t0, 3), action, attrs.get("name", ""), tag)


def wide_analyse(
    events: list[dict[str, Any]], image: str, t0: float, t1: float, gone: float
) -> dict[str, Any]:
    """Where one wide rollout's time went, from its events (seconds after ``t0``).

    Replacements (containers of ``image`` started after ``t0``) are taken in
    start order, 5 to a batch; old replicas in the order they were sent
    SIGTERM (their first ``kill``), 5 to a batch likewise (start-first stops
    an old replica once its replacement counts, in the same order on both
    sides). Per batch: first and last start, when all were healthy, first
    SIGTERM and last ``die`` of the old replicas; and ``launch_wait``, the
    previous batch's all-healthy -> this batch's first start. Only the first
    20 starts are replacements; later ones (a task restarted) are counted as
    ``extra_starts``. ``create_to_start``: a replacement's ``create`` -> its
    ``start``; ``create_gap``: between consecutive creates within a batch.
    """
    created: dict[str, float] = {}
    starts: dict[str, float] = {}
    healthy_at: dict[str, float] = {}
    sigterm: dict[str, float] = {}
    died: dict[str, float] = {}
    for event in events:
        attrs = event.get("Actor", {}).get("Attributes", {})
        cid, when, action = event["id"], event["timeNano"] / 1e9 - t0, event["Action"]
        if when < -0.5:
            continue
        if action == "create" and attrs.get("image") == image:
            created.setdefault(cid, when)
        elif action == "start" and attrs.get("image") == image:
            starts.setdefault(cid, when)
        elif action == "health_status: healthy" and cid in starts:
            healthy_at.setdefault(cid, when)
        elif action == "kill" and attrs.get("image") != image:
            sigterm.setdefault(cid, when)
        elif action == "die" and attrs.get("image") != image:
            died[cid] = when
    ordered = sorted(starts, key=starts.__getitem__)
    new, extra = ordered[:WIDE_REPLICAS], ordered[WIDE_REPLICAS:]
    old = sorted(sigterm, key=sigterm.__getitem__)
    size = WIDE_PARALLELISM
    batches = []
    create_to_start = [starts[c] - created[c] for c in new if c in created]
    create_gap: list[float] = []
    for number, first in enumerate(range(0, len(new), size), 1):
        members = new[first : first + size]
        retired = old[first : first + size]
        healthy_times = [healthy_at[c] for c in members if c in healthy_at]
        made = sorted(created[c] for c in members if c in created)
        create_gap += [b - a for a, b in itertools.pairwise(made)]
        batch = {
            "batch": number,
            "first_start": round(min(starts[c] for c in members), 2),
            "last_start": round(max(starts[c] for c in members), 2),
            "all_healthy": (
                round(max(healthy_times), 2) if len(healthy_times) == len(members) else None
            ),
            "old_sigterm": round(min(sigterm[c] for c in retired), 2) if retired else None,
            "old_died": (
                round(max(died[c] for c in retired), 2)
                if retired and all(c in died for c in retired)
                else None
            ),
        }
        if batches and batches[-1]["all_healthy"] is not None:
            batch["launch_wait"] = round(batch["first_start"] - batches[-1]["all_healthy"], 2)
        batches.append(batch)
    to_healthy = [healthy_at[c] - starts[c] for c in new if c in healthy_at]
    last_healthy = max((healthy_at[c] for c in new if c in healthy_at), default=None)

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 2) if values else None

    last_died = max(died.values(), default=None)
    return {
        "replacements": len(new),
        "extra_starts": len(extra),
        "healthy_replacements": sum(1 for c in new if c in healthy_at),
        "create_to_start_median": median(create_to_start),
        "create_gap_median": median(create_gap),
        "old_stopped": len(old),
        "start_to_healthy_median": median(to_healthy),
        "batches": batches,
        "last_healthy": round(last_healthy, 2) if last_healthy is not None else None,
        "last_old_died": round(last_died, 2) if last_died is not None else None,
        "returned": round(t1 - t0, 2),
        "old_gone": round(gone - t0, 2),
        # (seconds after the call, action, container, image tag): the raw material.
        "events": [compact(e, t0) for e in events],
    }


def wide_pillar(tag: str) -> dict[str, Any]:
    service = {
        "image": IMAGE,
        "tag": tag,
        "replicas": WIDE_REPLICAS,
        "command": IGNORES_SIGTERM,
        "stop_grace_period": f"{WIDE_GRACE}s",
        "update": {
            "parallelism": WIDE_PARALLELISM,
            "order": "start-first",
            "min_healthy_time": f"{MIN_HEALTHY:g}s",
            "health_timeout": "60s",
            "rollback": True,
        },
    }
    return {"dockerops": {"services": {"web": service}}}


class Attempts:
    """Rollouts to try, until ``rounds`` succeeded (two failures more at most).

    A failed rollout (a replacement unhealthy on a loaded machine, say) is
    rolled back by either side, so the next attempt goes to the same tag.
    """

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.current = "1.0"
        self.succeeded = 0
        self.attempt = 0

    def next(self, ok: bool | None = None) -> tuple[int, str, str] | None:
        """The next (attempt, from, to), told whether the last one succeeded; None: done."""
        other = "1.1" if self.current == "1.0" else "1.0"
        if ok:
            self.current, other = other, self.current
            self.succeeded += 1
        if self.succeeded >= self.rounds or self.attempt >= self.rounds + 2:
            return None
        self.attempt += 1
        return self.attempt, self.current, other


def running(api: docker.APIClient, label: str) -> list[dict[str, Any]]:
    return list(api.containers(filters={"label": label, "status": "running"}))


def wide_ours(daemon: ExtraDaemon, rounds: int, rows: list[dict[str, Any]]) -> None:
    """Deploy 20 replicas, then ``rounds`` rollouts; each appended to ``rows`` as it ends."""
    client = docker.DockerClient(base_url=daemon.url, version="auto", timeout=60)
    host = DockerHost(client)
    api = client.api
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    try:
        result = converge(host, load_service(wide_pillar("1.0"), "web"), None, state_dir=STATE_DIR)
        assert result.result is not False, result.comment
        wait_for(
            f"ours: {WIDE_REPLICAS} healthy on 1.0",
            lambda: healthy(api, OURS_LABEL) == WIDE_REPLICAS,
        )
        log(f"ours: deployed {WIDE_REPLICAS} replicas on 1.0")
        attempts = Attempts(rounds)
        step = attempts.next()
        while step is not None:
            number, old, new = step
            spec = load_service(wide_pillar(new), "web")
            recorder = EventLog(daemon.url, OURS_LABEL)
            with Sampler(daemon.url, OURS_LABEL) as sampler:
                t0 = time.time()
                result = converge(host, spec, None, state_dir=STATE_DIR)
                t1 = time.time()
            events = recorder.stop()
            if result.result is False:
                rows.append(failed_row("ours", number, old, new, t1 - t0, sampler, result.comment))
                wait_for(
                    f"ours: {WIDE_REPLICAS} healthy on {old} after a failed rollout",
                    lambda old=old: healthy(api, OURS_LABEL, f"{IMAGE}:{old}") == WIDE_REPLICAS,
                )
                step = attempts.next(False)
                continue
            left = running(api, OURS_LABEL)
            assert len(left) == WIDE_REPLICAS, f"{len(left)} running after the rollout"
            row = {
                "who": "ours",
                "rollout": number,
                "from": old,
                "to": new,
                "wall": round(t1 - t0, 2),
                "min_healthy": sampler.minimum,
                **wide_analyse(events, f"{IMAGE}:{new}", t0, t1, t1),
                "steps": result.steps,
            }
            rows.append(row)
            shown = {k: row[k] for k in row if k not in ("steps", "events")}
            log(f"ours: {old} -> {new}: {json.dumps(shown)}")
            step = attempts.next(True)
    finally:
        for container in api.containers(all=True, filters={"label": OURS_LABEL}):
            api.remove_container(container["Id"], force=True)
        client.close()
        shutil.rmtree(STATE_DIR, ignore_errors=True)


def wide_swarm(daemon: ExtraDaemon, rounds: int, rows: list[dict[str, Any]]) -> None:
    """The same on a single-node swarm; each rollout appended to ``rows`` as it ends."""

    def dk(*args: str, timeout: float = WAIT_LIMIT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", daemon.url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    api = docker.APIClient(base_url=daemon.url, version="auto", timeout=60)
    init = dk("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr",
              "127.0.0.1:2478", "--data-path-port", "4799", timeout=120)  # fmt: skip
    if init.returncode:
        raise RuntimeError(f"swarm init: {init.stderr.strip()}")
    try:
        create = dk(
            "service", "create", "--detach", "--name", "web",
            "--replicas", str(WIDE_REPLICAS),
            "--update-parallelism", str(WIDE_PARALLELISM), "--update-order", "start-first",
            "--update-failure-action", "rollback", "--update-monitor", f"{MIN_HEALTHY:g}s",
            "--rollback-order", "start-first", "--stop-grace-period", f"{WIDE_GRACE}s",
            "--no-resolve-image", f"{IMAGE}:1.0", *IGNORES_SIGTERM,
        )  # fmt: skip
        if create.returncode:
            raise RuntimeError(f"service create: {create.stderr.strip()}")
        wait_for(
            f"swarm: {WIDE_REPLICAS} healthy on 1.0",
            lambda: healthy(api, SWARM_LABEL, f"{IMAGE}:1.0") == WIDE_REPLICAS,
        )
        log(f"swarm: service at {WIDE_REPLICAS} healthy on 1.0")

        def update_state() -> str:
            state = dk("service", "inspect", "web", "--format", "{{json .UpdateStatus}}").stdout
            return str((json.loads(state or "null") or {}).get("State"))

        attempts = Attempts(rounds)
        step = attempts.next()
        while step is not None:
            number, old, new = step
            recorder = EventLog(daemon.url, SWARM_LABEL)

            def settled(new: str = new) -> bool:
                now = running(api, SWARM_LABEL)
                return len(now) == WIDE_REPLICAS and all(
                    c["Image"] == f"{IMAGE}:{new}" for c in now
                )

            with Sampler(daemon.url, SWARM_LABEL) as sampler:
                t0 = time.time()
                done = dk("service", "update", "--detach=false", "--no-resolve-image",
                          "--image", f"{IMAGE}:{new}", "web")  # fmt: skip
                t1 = time.time()
                state = update_state()
                if done.returncode or state != "completed":
                    events = recorder.stop()
                    why = f"{state}: {(done.stderr or done.stdout).strip()[-500:]}"
                    rows.append(failed_row("swarm", number, old, new, t1 - t0, sampler, why))
                    # Its rollback ends as "rollback_completed" or, seen here, "completed".
                    wait_for(
                        f"swarm: rolled back to {old}",
                        lambda old=old: update_state() in SETTLED and settled(old),
                    )
                    step = attempts.next(False)
                    continue
                # The update may end while old tasks are still in their grace period.
                wait_for(f"swarm: old tasks gone after {new}", settled)
                gone = time.time()
            events = recorder.stop()
            row = {
                "who": "swarm",
                "rollout": number,
                "from": old,
                "to": new,
                "wall": round(t1 - t0, 2),
                "min_healthy": sampler.minimum,
                **wide_analyse(events, f"{IMAGE}:{new}", t0, t1, gone),
            }
            rows.append(row)
            log(f"swarm: {old} -> {new}: {json.dumps({k: row[k] for k in row if k != 'events'})}")
            wait_for(
                f"swarm: {WIDE_REPLICAS} healthy on {new}",
                lambda new=new: healthy(api, SWARM_LABEL, f"{IMAGE}:{new}") == WIDE_REPLICAS,
            )
            step = attempts.next(True)
    finally:
        dk("service", "rm", "web", timeout=60)
        dk("swarm", "leave", "--force", timeout=60)
        api.close()


SETTLED = ("completed", "rollback_completed", "paused", "rollback_paused")


def failed_row(
    who: str, number: int, old: str, new: str, wall: float, sampler: Sampler, why: str
) -> dict[str, Any]:
    log(f"{who}: {old} -> {new} FAILED after {wall:.2f}s (rolled back): {why[:300]}")
    return {
        "who": who,
        "rollout": number,
        "from": old,
        "to": new,
        "wall": round(wall, 2),
        "min_healthy": sampler.minimum,
        "failed": why,
    }


def succeeded(results: dict[str, Any], who: str) -> list[dict[str, Any]]:
    return [r for r in results.get(who) or [] if not r.get("failed")]


def wide_table(results: dict[str, Any]) -> str:
    failed = [r for who in ("ours", "swarm") for r in results.get(who) or [] if r.get("failed")]
    rows = succeeded(results, "ours") + succeeded(results, "swarm")
    lines = [
        "| who | rollout | wall s | until every old replica died s | min healthy "
        "| start -> healthy s (median) | create -> start s (median) "
        "| between creates in a batch s (median) | first start s | last healthy s "
        "| last old died s | extra starts |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['who']} | {r['rollout']}: {r['from']} -> {r['to']} | {r['wall']:.2f} "
            f"| {r['old_gone']:.2f} | {r['min_healthy']} | {r['start_to_healthy_median']} "
            f"| {r.get('create_to_start_median')} | {r.get('create_gap_median')} "
            f"| {r['batches'][0]['first_start'] if r['batches'] else '-'} "
            f"| {r['last_healthy']} | {r['last_old_died']} | {r.get('extra_starts', 0)} |"
        )
    for who in ("ours", "swarm"):
        part = succeeded(results, who)
        if part:
            lines.append(
                f"| **{who}** | median of {len(part)} "
                f"| **{statistics.median(r['wall'] for r in part):.2f}** "
                f"| {statistics.median(r['old_gone'] for r in part):.2f} "
                f"| {min(r['min_healthy'] for r in part if r['min_healthy'] is not None)} "
                "||||||||"
            )
    lines += [
        "",
        "Per batch of 5 (seconds after the call; median over the rollouts): replacements' "
        "first -> last start, all healthy; the old replicas' first SIGTERM, last died; "
        "wait = previous batch all healthy -> this batch's first start.",
        "",
        "| who | batch | first start | last start | all healthy | old SIGTERM | old died | wait |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for who in ("ours", "swarm"):
        part = succeeded(results, who)
        count = max((len(r["batches"]) for r in part), default=0)
        for index in range(count):
            cells = []
            for key in ("first_start", "last_start", "all_healthy", "old_sigterm", "old_died",
                        "launch_wait"):  # fmt: skip
                values = [
                    r["batches"][index].get(key)
                    for r in part
                    if len(r["batches"]) > index and r["batches"][index].get(key) is not None
                ]
                cells.append(f"{statistics.median(values):.2f}" if values else "-")
            lines.append(f"| {who} | {index + 1} | " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "Failed rollouts (rolled back; not in the medians):", ""]
        lines += [
            f"- {r['who']} attempt {r['rollout']}, {r['from']} -> {r['to']}, after "
            f"{r['wall']:.2f} s (min healthy {r['min_healthy']}): {r['failed'][:200]}"
            for r in failed
        ]
    return "\n".join(lines)


def ensure_matplotlib() -> Any:
    """matplotlib, installed on first use into build/bench/plot-lib (bench/salt_bench.py)."""
    from salt_bench import ensure_matplotlib as ensure

    return ensure()


def wide_plot(results: dict[str, Any], path: Path) -> None:
    """Top: wall time per rollout, ours beside Swarm. Below: the last rollout of
    each, batch by batch (replacements start -> all healthy -> + hold; old
    replicas SIGTERM -> died)."""
    plt = ensure_matplotlib()
    from matplotlib.patches import Patch

    ours_rows, swarm_rows = succeeded(results, "ours"), succeeded(results, "swarm")
    fig = plt.figure(figsize=(11, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.1])
    bars = fig.add_subplot(grid[0, :])
    count = max(len(ours_rows), len(swarm_rows))
    xs = list(range(1, count + 1))
    series = [
        (ours_rows, "wall", -0.27, "dockerops converge (wall; every old replica gone)", "C0", ""),
        (swarm_rows, "wall", 0.0, "Swarm service update --detach=false (wall)", "C1", ""),
        (swarm_rows, "old_gone", 0.27, "Swarm: until every old replica died", "C1", "//"),
    ]
    for rows, key, shift, label, color, hatch in series:
        if not rows:
            continue
        values = [r[key] for r in rows]
        alpha = 0.45 if hatch else 1.0
        bars.bar([x + shift for x in xs[: len(values)]], values, 0.26, label=label,
                 color=color, hatch=hatch, alpha=alpha)  # fmt: skip
        for x, v in zip(xs, values, strict=False):
            bars.annotate(f"{v:.1f}", (x + shift, v), ha="center", va="bottom", fontsize=8)
    bars.set_xticks(xs)
    bars.set_xticklabels([f"{r['from']} -> {r['to']}" for r in (ours_rows or swarm_rows)][:count])
    bars.set_ylabel("seconds")
    bars.grid(axis="y", alpha=0.3)
    bars.set_ylim(0, bars.get_ylim()[1] * 1.3)
    bars.legend(fontsize=8, loc="upper right", ncol=3)
    load = [
        " ".join(f"{v:.1f}" for v in results.get(key) or ())
        for key in ("load_before", "load_after")
    ]
    bars.set_title(
        f"{WIDE_REPLICAS} replicas, parallelism {WIDE_PARALLELISM}, start-first, PID 1 ignores "
        f"SIGTERM (grace {WIDE_GRACE} s), monitor/min_healthy_time {MIN_HEALTHY:g} s\n"
        f"{results.get('when', '')}, {results.get('cpus')} CPUs, load average {load[0]} "
        f"before, {load[1]} after",
        fontsize=9,
    )
    handles = [
        Patch(color="C2", label="replacements: first start -> all healthy"),
        Patch(color="C2", alpha=0.35, label=f"+ hold ({MIN_HEALTHY:g} s)"),
        Patch(color="C3", alpha=0.7, label="old replicas: first SIGTERM -> last died"),
    ]
    longest = max([r["old_gone"] for r in ours_rows[-1:] + swarm_rows[-1:]] + [1.0])
    for column, (who, rows) in enumerate((("dockerops", ours_rows), ("Swarm", swarm_rows))):
        ax = fig.add_subplot(grid[1, column])
        if not rows:
            continue
        last = rows[-1]
        for b in last["batches"]:
            y = b["batch"]
            if b["all_healthy"] is not None:
                ax.barh(y + 0.18, b["all_healthy"] - b["first_start"], 0.3, b["first_start"],
                        color="C2")  # fmt: skip
                ax.barh(y + 0.18, MIN_HEALTHY, 0.3, b["all_healthy"], color="C2", alpha=0.35)
            if b["old_sigterm"] is not None and b["old_died"] is not None:
                ax.barh(y - 0.18, b["old_died"] - b["old_sigterm"], 0.3, b["old_sigterm"],
                        color="C3", alpha=0.7)  # fmt: skip
        ax.axvline(last["returned"], color="k", lw=1)
        ax.annotate("returned", (last["returned"], 0.45), fontsize=8, ha="right")
        ax.set_xlim(0, longest * 1.05)
        ax.set_ylim(0.3, len(last["batches"]) + 1.5)
        ax.set_yticks([b["batch"] for b in last["batches"]])
        ax.set_ylabel(f"batch of {WIDE_PARALLELISM}")
        ax.invert_yaxis()
        ax.set_xlabel("seconds after the call")
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(f"{who}, rollout {last['rollout']} ({last['from']} -> {last['to']})",
                     fontsize=9)  # fmt: skip
        ax.legend(handles=handles, fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"plot: {path}")


def wide_main(args: argparse.Namespace) -> int:
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = {
            "scenario": "wide",
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "load_before": os.getloadavg(),
            "cpus": os.cpu_count(),
        }
        daemons = [ExtraDaemon("bench7", 7, Path("/var/tmp/dops-bench7"))]
        if not args.no_swarm:
            daemons.append(ExtraDaemon("bench8", 8, Path("/var/tmp/dops-bench8")))
        try:
            for daemon in daemons:
                daemon.start()
                build_images(daemon.url)
                log(f"{daemon.name}: up at {daemon.url}, images built")
            parts = [("ours", wide_ours, daemons[0])]
            if not args.no_swarm:
                parts.append(("swarm", wide_swarm, daemons[1]))
            for who, measure, daemon in parts:
                results[f"load_before_{who}"] = os.getloadavg()
                try:  # what was measured before an error is kept
                    measure(daemon, args.rounds, results.setdefault(who, []))
                except Exception as err:
                    results[f"{who}_error"] = f"{type(err).__name__}: {err}"
                    log(f"{who} part failed: {results[f'{who}_error']}")
        finally:
            results["load_after"] = os.getloadavg()
            for daemon in daemons:
                daemon.stop()
            shutil.rmtree(STATE_DIR, ignore_errors=True)
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print()
    print(wide_table(results))
    for who in ("ours", "swarm"):
        if results.get(f"{who}_error"):
            print(f"\n{who}: stopped by {results[f'{who}_error']}")
    ours_rows, swarm_rows = succeeded(results, "ours"), succeeded(results, "swarm")
    if ours_rows and swarm_rows:
        ours_wall = statistics.median(r["wall"] for r in ours_rows)
        swarm_wall = statistics.median(r["wall"] for r in swarm_rows)
        verdict = "met" if ours_wall <= swarm_wall else "missed"
        print(
            f"\nours / Swarm (median wall): {ours_wall / swarm_wall:.3f} "
            f"(target: no slower than Swarm: {verdict})"
        )
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    if args.plot:
        wide_plot(results, Path(args.plot))
    print(f"raw: {args.from_json or args.json}")
    return 0


# -- report ----------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = [
        "| who | rollout | wall s | inherent s | overhead | failure seen s | min healthy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for who in ("ours", "swarm"):
        part = results.get(who) or {}
        for row in part.get("updates", []):
            lines.append(
                f"| {who} | {row['from']} -> {row['to']} | {row['wall']:.2f} | "
                f"{row['inherent']:.2f} | {row['overhead']:.3f} | | {row['min_healthy']} |"
            )
        for row in part.get("failures", []):
            lines.append(
                f"| {who} | 1.0 -> {row['tag']}, until 4 healthy on 1.0 | "
                f"{row['full_healthy_1_0_after']:.2f} | | | {row['failure_seen_after']} | "
                f"{row['min_healthy']} |"
            )
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for who in ("ours", "swarm"):
        part = results.get(who) or {}
        updates = part.get("updates", [])
        if updates:
            out[f"{who}_overhead_median"] = statistics.median(r["overhead"] for r in updates)
            out[f"{who}_update_wall_median"] = statistics.median(r["wall"] for r in updates)
            floors = [r["min_healthy"] for r in updates + part.get("failures", [])]
            out[f"{who}_min_healthy"] = min(f for f in floors if f is not None)
        for tag in ("broken", "crashloop"):
            walls = [
                r["full_healthy_1_0_after"] for r in part.get("failures", []) if r["tag"] == tag
            ]
            if walls:
                out[f"{who}_{tag}_median"] = statistics.median(walls)
    if "ours_broken_median" in out and "swarm_broken_median" in out:
        out["broken_ours_over_swarm"] = round(
            out["ours_broken_median"] / out["swarm_broken_median"], 3
        )
    for who in ("ours", "swarm"):
        updates = (results.get(who) or {}).get("updates", [])
        for key in ("launch", "retire"):
            values = [v for r in updates for v in r.get(key, [])]
            if values:
                out[f"{who}_{key}_median"] = statistics.median(values)
        for key in ("before_first_start", "after_last"):
            values = [r[key] for r in updates if r.get(key) is not None]
            if values:
                out[f"{who}_{key}_median"] = statistics.median(values)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=DEFAULT_JSON)
    parser.add_argument("--no-swarm", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="1.0->1.1->1.0 + failures, each (wide: rollouts per side, alternating tags)",
    )
    parser.add_argument(
        "--scenario",
        choices=("default", "wide"),
        default="default",
        help="wide: 20 replicas, parallelism 5, PID 1 ignoring SIGTERM (issue 13)",
    )
    parser.add_argument("--plot", help="wide: PNG path (bench/rollout_wide.png; '' for none)")
    parser.add_argument("--from-json", help="wide: tables and plot from an earlier run")
    args = parser.parse_args()
    if args.scenario == "wide":
        if args.json == DEFAULT_JSON:
            args.json = str(REPO / "build" / "bench" / "rollout_wide.json")
        if args.plot is None:
            args.plot = str(REPO / "bench" / "rollout_wide.png")
        return wide_main(args)
    results: dict[str, Any] = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    daemons = [ExtraDaemon("bench7", 7, Path("/var/tmp/dops-bench7"))]
    if not args.no_swarm:
        daemons.append(ExtraDaemon("bench8", 8, Path("/var/tmp/dops-bench8")))
    try:
        for daemon in daemons:
            daemon.start()
            build_images(daemon.url)
            log(f"{daemon.name}: up at {daemon.url}, images built")
        results["ours"] = ours(daemons[0], args.rounds)
        if not args.no_swarm:
            try:
                results["swarm"] = swarm(daemons[1], args.rounds)
            except Exception as err:
                results["swarm_error"] = f"{type(err).__name__}: {err}"
                log(f"swarm part failed: {results['swarm_error']}")
    finally:
        results["load_after"] = os.getloadavg()
        for daemon in daemons:
            daemon.stop()
        shutil.rmtree(STATE_DIR, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    results["summary"] = summary(results)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print()
    print(table(results))
    print()
    print(json.dumps(results["summary"], indent=2))
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    print(f"raw: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
