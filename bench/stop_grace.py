"""Old replicas whose PID 1 ignores SIGTERM: what they cost a rolling update.

Three services of 3 replicas each, all on ``dockerops/demo-http:1.0`` with
Docker's default grace period (10 s: no ``stop_grace_period``), start-first,
ports on 127.0.0.1:

- **prompt**: the demo image as it is (its serve script traps SIGTERM);
- **ignores**: ``command: ["/bin/sh", "-c", "/bin/serve; :"]``: sh as PID 1
  ignores SIGTERM, so Docker kills each old replica after the grace period;
- **init**: the same command with ``init: true`` (Docker's init as PID 1 passes
  the signal on).

Each round deploys the three at 1.0 (fresh containers and state), then runs
``dockerops.rolling_update <service> tag=1.1`` for each, one after the other,
through Salt's loader in-process (the functional tests' set-up), timing the
call. From the daemon's events: when the last replacement counted (healthy +
``min_healthy_time``, 2 s for the demo image) and how long each old replica's
stop took. Then, for reference, ``docker stop`` alone on one container that
ignores SIGTERM, with and without ``--init``.

    .venv/bin/python bench/stop_grace.py [--rounds 3] [--stop-runs 3] [--budget 240]
        [--cases sg-prompt,sg-ignores,sg-init]

Uses the main Docker daemon, host ports 24200-24217 on 127.0.0.1, and a minion
root under build/bench/stop-grace; removes every container it created at the end
(and at the start, if an earlier run was interrupted). Raw results:
build/bench/stop_grace.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BUILD = REPO / "build" / "bench"
ROOT = BUILD / "stop-grace"
REPOSITORY = "dockerops/demo-http"
REPLICAS = 3
MIN_HEALTHY = 2.0  # the demo image's HEALTHCHECK: interval 1 s x 2 retries
# sh as PID 1 ignores SIGTERM (the kernel drops default-action signals to a
# namespace's init), and the trailing ":" keeps it from exec-ing serve.
IGNORES_SIGTERM = ["/bin/sh", "-c", "/bin/serve; :"]
# Each service gets 2 x REPLICAS ports: start-first replacements take spare ones.
CASES = {
    "sg-prompt": ({}, 24200),
    "sg-ignores": ({"command": IGNORES_SIGTERM}, 24206),
    "sg-init": ({"command": IGNORES_SIGTERM, "init": True}, 24212),
}
REFERENCE_LABEL = "dockerops-bench=stop-grace"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)


# -- set-up and clean-up --------------------------------------------------------


def ensure_images() -> None:
    for tag in ("1.0", "1.1"):
        if run(["docker", "image", "inspect", f"{REPOSITORY}:{tag}"]).returncode != 0:
            log(f"building {REPOSITORY} (images/build.sh)")
            subprocess.run([str(REPO / "images" / "build.sh")], check=True, capture_output=True)
            return


def check_ports(cases: list[str]) -> None:
    for first in (CASES[case][1] for case in cases):
        for port in range(first, first + 2 * REPLICAS):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    raise SystemExit(f"127.0.0.1:{port} is in use; this bench needs it") from None


def ours(client: docker.DockerClient) -> list[Any]:
    """Every container this bench creates: the services' and the reference ones."""
    found = client.containers.list(all=True, filters={"label": REFERENCE_LABEL})
    for service in CASES:
        found += client.containers.list(
            all=True, filters={"label": f"io.dockerops.service={service}"}
        )
    return found


def remove_ours(client: docker.DockerClient) -> int:
    found = ours(client)
    for container in found:
        container.remove(force=True)
    return len(found)


def loaders(state_dir: Path) -> Any:
    """Salt's loaders in-process, configured as in tests/functional/conftest.py."""
    import salt.config
    from saltfactories.utils.functional import Loaders

    for sub in ("pillar", "states"):
        (ROOT / sub).mkdir(parents=True, exist_ok=True)
    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "bench-stop-grace",
            "root_dir": str(ROOT),
            "cachedir": str(ROOT / "cache"),
            "pki_dir": str(ROOT / "pki"),
            "sock_dir": str(ROOT / "sock"),
            "extension_modules": str(ROOT / "extmods"),
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "salt"), str(ROOT / "states")]},
            "pillar_roots": {"base": [str(ROOT / "pillar")]},
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "grains_dirs": [str(REPO / "_grains")],
            "dockerops.docker_url": "unix:///var/run/docker.sock",
            "dockerops.state_dir": str(state_dir),
        }
    )
    return Loaders(opts)


def pillar(cases: list[str]) -> dict[str, Any]:
    services = {
        name: {
            "image": REPOSITORY,
            "tag": "1.0",
            "replicas": REPLICAS,
            "ports": [{"container": 8080, "host": port, "host_ip": "127.0.0.1"}],
            "update": {"order": "start-first", "health_timeout": "30s"},
            **fields,
        }
        for name, (fields, port) in CASES.items()
        if name in cases
    }
    return {"dockerops": {"environment": "bench", "services": services}}


def set_pillar(salt: Any, data: dict[str, Any]) -> None:
    (ROOT / "pillar" / "top.sls").write_text("base:\n  '*':\n    - bench\n")
    (ROOT / "pillar" / "bench.sls").write_text("#!yaml\n" + yaml.safe_dump(data))
    salt.reload_all()


def wait_all_healthy(client: docker.DockerClient, cases: list[str], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while True:
        states = [
            (c.status, (c.attrs["State"].get("Health") or {}).get("Status"))
            for service in cases
            for c in client.containers.list(
                all=True, filters={"label": f"io.dockerops.service={service}"}
            )
        ]
        if len(states) == REPLICAS * len(cases) and all(
            s == ("running", "healthy") for s in states
        ):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the services did not all run healthy on 1.0: {states}")
        time.sleep(0.2)


# -- measuring ------------------------------------------------------------------


class EventRecorder:
    """One service's container events, read live in a thread while a rollout runs.

    Not read back afterwards: dockerd keeps only its last 256 events, and the
    health probes of 9 containers (3 exec events each per second) push a
    rollout's first kills out of that buffer within seconds.
    """

    def __init__(self, client: docker.DockerClient, service: str) -> None:
        self.stream = client.events(
            decode=True,
            filters={"type": "container", "label": f"io.dockerops.service={service}"},
        )
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream closed under us: done
            for event in self.stream:
                self.events.append(event)

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(0.5)  # the rollout's last events are still on their way
        self.stream.close()
        self.thread.join(timeout=5)
        return list(self.events)


def timeline(events: list[dict[str, Any]], started: float, ended: float) -> dict[str, Any]:
    """From one rollout's events: when the last replacement counted, the old replicas' stops."""
    at: dict[tuple[str, str], list[float]] = {}
    for event in events:
        when = event.get("timeNano", 0) / 1e9
        if started <= when <= ended + 1:
            at.setdefault((event["Actor"]["ID"], event["Action"]), []).append(when)
    ids = {cid for cid, _ in at}
    new = {cid for cid in ids if (cid, "create") in at}
    old = ids - new
    healthy = [
        min(at[(cid, "health_status: healthy")])
        for cid in new
        if (cid, "health_status: healthy") in at
    ]
    stops = []
    for cid in old:
        kills = [
            t for (c, action), times in at.items() if c == cid and action == "kill" for t in times
        ]
        dies = at.get((cid, "die"))
        if kills and dies:
            stops.append(min(dies) - min(kills))
    first_kill = min(
        (t for (c, action), times in at.items() if c in old and action == "kill" for t in times),
        default=None,
    )
    last_gone = max(
        (t for (c, action), times in at.items() if c in old and action == "destroy" for t in times),
        default=None,
    )
    counted = max(healthy) + MIN_HEALTHY if len(healthy) == REPLICAS else None
    return {
        "replacements_healthy": len(healthy),
        "old_stopped": len(stops),
        "old_stop_seconds": sorted(round(s, 2) for s in stops),
        "retire_span": round(last_gone - first_kill, 2) if first_kill and last_gone else None,
        "last_counted_to_end": round(ended - counted, 2) if counted else None,
    }


def rollout(salt: Any, client: docker.DockerClient, service: str) -> dict[str, Any]:
    recorder = EventRecorder(client, service)
    started = time.time()
    try:
        out = salt.modules.dockerops.rolling_update(service, tag="1.1")
    finally:
        ended = time.time()
        events = recorder.stop()
    if out.get("result") is not True:
        raise SystemExit(f"{service}: the rolling update failed: {out.get('comment')}")
    steps = [str(s) for s in out.get("steps") or ()]
    return {
        "wall": round(ended - started, 2),
        "duration": out.get("duration"),
        "kills_in_steps": sum("needed a kill" in s for s in steps),
        "steps": steps,
        **timeline(events, started, ended),
        # (seconds after the call, action, container): the raw material of the above.
        "events": [
            (
                round(e.get("timeNano", 0) / 1e9 - started, 3),
                e["Action"],
                e["Actor"]["Attributes"].get("name", ""),
            )
            for e in events
        ],
    }


def docker_stop(init: bool) -> float:
    """``docker stop`` (Docker's 10 s default) on one container whose PID 1 ignores SIGTERM."""
    name = f"sg-stop-{'init' if init else 'plain'}"
    run(["docker", "rm", "-f", name])
    created = run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--label",
            REFERENCE_LABEL,
            *(["--init"] if init else []),
            f"{REPOSITORY}:1.0",
            *IGNORES_SIGTERM,
        ]
    )
    if created.returncode != 0:
        raise SystemExit(f"docker run failed: {created.stderr}")
    try:
        # serve is up (its httpd answers inside): the stop meets the same process tree.
        deadline = time.monotonic() + 20
        while run(
            ["docker", "exec", name, "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
        ).returncode:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} never answered")
            time.sleep(0.2)
        started = time.monotonic()
        stopped = run(["docker", "stop", name])
        took = time.monotonic() - started
        if stopped.returncode != 0:
            raise SystemExit(f"docker stop failed: {stopped.stderr}")
        return took
    finally:
        run(["docker", "rm", "-f", name])


def summary(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}"


def median_of(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def report(results: dict[str, list[dict[str, Any]]], stops: dict[str, list[float]]) -> str:
    lines = [
        "| case | runs | wall s (min / median) | returned duration s (median) "
        "| last replacement counted -> end s (median) | old replica stop s (median; range) "
        "| first old kill -> last old removed s (median) | kills in steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for service, runs in results.items():
        if not runs:
            continue
        each_stop = [s for r in runs for s in r["old_stop_seconds"]]
        stop_range = f" ({min(each_stop):.2f}-{max(each_stop):.2f})" if each_stop else ""
        tails = [r["last_counted_to_end"] for r in runs if r["last_counted_to_end"] is not None]
        spans = [r["retire_span"] for r in runs if r["retire_span"] is not None]
        durations = [r["duration"] for r in runs if isinstance(r["duration"], (int, float))]
        kills = ", ".join(str(r["kills_in_steps"]) for r in runs)
        lines.append(
            f"| {service} | {len(runs)} | {summary([r['wall'] for r in runs])} "
            f"| {median_of(durations)} | {median_of(tails)} "
            f"| {median_of(each_stop)}{stop_range} | {median_of(spans)} | {kills} |"
        )
    if stops:
        lines += ["", "| `docker stop`, one container ignoring SIGTERM | runs | s (min / median) |"]
        lines += ["|---|---:|---:|"]
        for what, values in stops.items():
            if values:
                lines.append(f"| {what} | {len(values)} | {summary(values)} |")
    return "\n".join(lines)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rollouts per case (3)")
    parser.add_argument("--stop-runs", type=int, default=3, help="docker stops per kind (3)")
    parser.add_argument(
        "--budget",
        type=float,
        default=240,
        help="seconds of rounds: no new round starts past it, at least one runs (240)",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="which services to roll (all three; sg-init needs the init field, which older "
        "versions of dockerops lack)",
    )
    args = parser.parse_args(argv)
    cases = [case for case in CASES if case in args.cases.split(",")]
    if not cases:
        raise SystemExit(f"--cases: none of {', '.join(CASES)}")

    client = docker.from_env()
    ensure_images()
    leftovers = remove_ours(client)
    if leftovers:
        log(f"removed {leftovers} containers left by an earlier run")
    check_ports(cases)
    shutil.rmtree(ROOT, ignore_errors=True)
    state_dir = ROOT / "state"
    salt = loaders(state_dir)
    set_pillar(salt, pillar(cases))

    results: dict[str, list[dict[str, Any]]] = {service: [] for service in cases}
    last_stop: list[Any] = []
    stops: dict[str, list[float]] = {}
    load_before = load()
    log(f"load average before: {load_before} ({os.cpu_count()} CPUs)")
    began = time.monotonic()
    try:
        for number in range(1, args.rounds + 1):
            if number > 1 and time.monotonic() - began > args.budget:
                log(f"time budget ({args.budget:.0f}s) spent after {number - 1} rounds")
                break
            # Every round from the same start: fresh containers on 1.0, no records.
            remove_ours(client)
            shutil.rmtree(state_dir, ignore_errors=True)
            for service in cases:
                ret = salt.states.dockerops.running(name=service)
                if ret.result is not True:
                    raise SystemExit(f"{service} did not deploy: {ret.comment}")
            wait_all_healthy(client, cases)
            # Rotate the order, so no case always runs first on a quiet machine.
            shift = (number - 1) % len(cases)
            order = cases[shift:] + cases[:shift]
            for service in order:
                measured = rollout(salt, client, service)
                results[service].append(measured)
                log(
                    f"round {number}: {service} 1.0 -> 1.1 in {measured['wall']:.2f}s "
                    f"(returned duration {measured['duration']}); old replica stops "
                    f"{measured['old_stop_seconds']}; last counted -> end "
                    f"{measured['last_counted_to_end']}s; kills in steps "
                    f"{measured['kills_in_steps']}"
                )
                if service == "sg-ignores":
                    replicas = salt.modules.dockerops.status(service).get(service) or []
                    last_stop.append(replicas[0].get("last_stop") if replicas else None)
                    log(f"round {number}: dockerops.status {service} last_stop: {last_stop[-1]}")
        remove_ours(client)
        for init in (False, True):
            what = "with `--init`" if init else "plain"
            stops[what] = []
            for _ in range(args.stop_runs):
                stops[what].append(docker_stop(init))
                log(f"docker stop ({what}): {stops[what][-1]:.2f}s")
    finally:
        removed = remove_ours(client)
        client.close()
        log(f"removed {removed} containers")
    load_after = load()

    table = report(results, stops)
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "stop_grace.json").write_text(
        json.dumps(
            {
                "load_average_before": load_before,
                "load_average_after": load_after,
                "cpus": os.cpu_count(),
                "rollouts": results,
                "ignores_last_stop": last_stop,
                "docker_stop_seconds": stops,
            },
            indent=1,
        )
        + "\n"
    )
    print()
    print(table)
    shown = last_stop[-1] if last_stop else None
    print(f"\ndockerops.status sg-ignores last_stop (last round): {shown}")
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    print(f"total {time.monotonic() - began:.0f}s; raw results in build/bench/stop_grace.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
