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

    .venv/bin/python bench/rollout.py [--rounds 3] [--no-swarm] [--json build/bench/rollout.json]

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
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "rollout.json"))
    parser.add_argument("--no-swarm", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="1.0->1.1->1.0 + failures, each")
    args = parser.parse_args()
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
