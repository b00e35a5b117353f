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

Each rollout is also set against its **inherent time** (issue 13's target:
wall <= 1.3 x inherent for ``sg-ignores``), from the same events, as
``bench/rollout.py`` computes it: per replacement, its ``start`` -> its first
``health_status: healthy``, summed (under parallelism 1 the engine starts the
next replacement only once every one in flight is healthy, so these intervals
cannot overlap; the script counts any overlap it sees), plus one
``min_healthy_time`` (the holds of earlier replacements overlap the next
starts; the last one's does not), plus, for the SIGTERM-ignoring case, one
grace period (10 s: the last old replica's stop starts only once the last
replacement counts, and the rollout ends when it is gone). The ratio
wall / inherent is printed per rollout with its median, and a plot of both per
rollout goes to ``--plot`` (``bench/stop_grace.png``).

    .venv/bin/python bench/stop_grace.py [--rounds 3] [--stop-runs 3] [--budget 240]
        [--cases sg-prompt,sg-ignores,sg-init] [--plot bench/stop_grace.png] [--via salt]
    .venv/bin/python bench/stop_grace.py --from-json build/bench/stop_grace.json  # tables, plot

``--via library`` drives :func:`dockerops.converge.converge` in-process
instead (no Salt; no ``dockerops.status`` read), as bench/rollout.py does.

Uses the main Docker daemon, host ports 24200-24217 on 127.0.0.1, and a minion
root under build/bench/stop-grace; removes every container it created at the end
(and at the start, if an earlier run was interrupted). Raw results:
build/bench/stop_grace.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
GRACE = 10.0  # Docker's default grace period (no stop_grace_period in pillar)
TARGET = 1.3  # issue 13: wall <= 1.3 x inherent for the SIGTERM-ignoring case
# sh as PID 1 ignores SIGTERM (the kernel drops default-action signals to a
# namespace's init), and the trailing ":" keeps it from exec-ing serve.
IGNORES_SIGTERM = ["/bin/sh", "-c", "/bin/serve; :"]
# Cases whose old replicas each take a whole grace period to stop.
KILLED = {"sg-ignores"}
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


def timeline(
    events: list[dict[str, Any]], started: float, ended: float, grace: float = 0.0
) -> dict[str, Any]:
    """From one rollout's events: when the last replacement counted, the old
    replicas' stops, and the rollout's inherent time (``grace``: the stop cost
    it includes, see the module docstring)."""
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
    # Each replacement's start -> first healthy, in start order.
    spans = sorted(
        (min(at[(cid, "start")]), min(at[(cid, "health_status: healthy")]))
        for cid in new
        if (cid, "start") in at and (cid, "health_status: healthy") in at
    )
    overlaps = sum(1 for (_s, h), (s_next, _h) in itertools.pairwise(spans) if s_next < h)
    to_healthy = [h - s for s, h in spans]
    inherent = sum(to_healthy) + MIN_HEALTHY + grace if len(spans) == REPLICAS else None
    return {
        "start_to_healthy": [round(x, 2) for x in to_healthy],
        "overlapping_starts": overlaps,
        "inherent": round(inherent, 2) if inherent else None,
        "replacements_healthy": len(healthy),
        "old_stopped": len(stops),
        "old_stop_seconds": sorted(round(s, 2) for s in stops),
        "retire_span": round(last_gone - first_kill, 2) if first_kill and last_gone else None,
        "last_counted_to_end": round(ended - counted, 2) if counted else None,
    }


class Library:
    """``--via library``: the same deploy and rolling update through
    :func:`dockerops.converge.converge` in this process, without Salt (as
    bench/rollout.py drives it): no pillar render, no loader, no Salt
    ``__context__``. Quacks like the two Salt calls this bench makes."""

    def __init__(self, client: docker.DockerClient, cases: list[str], state_dir: Path) -> None:
        from dockerops.host import DockerHost

        self.host = DockerHost(client)
        self.pillar = pillar(cases)
        self.state_dir = str(state_dir)

    def converge(self, service: str, tag: str | None = None) -> Any:
        from dockerops.converge import converge
        from dockerops.spec import load_service

        overrides = {"tag": tag} if tag else None
        spec = load_service(self.pillar, service, overrides)
        return converge(self.host, spec, None, state_dir=self.state_dir)

    def running(self, service: str) -> tuple[bool | None, str]:
        result = self.converge(service)
        return result.result, result.comment

    def rolling_update(self, service: str, tag: str) -> dict[str, Any]:
        started = time.monotonic()
        result = self.converge(service, tag)
        return {
            "result": result.result,
            "comment": result.comment,
            "steps": result.steps,
            "duration": round(time.monotonic() - started, 2),
        }


def rollout(salt: Any, client: docker.DockerClient, service: str) -> dict[str, Any]:
    grace = GRACE if service in KILLED else 0.0
    recorder = EventRecorder(client, service)
    started = time.time()
    try:
        if isinstance(salt, Library):
            out = salt.rolling_update(service, tag="1.1")
        else:
            out = salt.modules.dockerops.rolling_update(service, tag="1.1")
    finally:
        ended = time.time()
        events = recorder.stop()
    if out.get("result") is not True:
        # On a loaded machine the demo image's 1 s probe can time out: a
        # replacement goes unhealthy and the rollout is rolled back. Recorded, not timed.
        return {"wall": round(ended - started, 2), "failed": str(out.get("comment"))}
    steps = [str(s) for s in out.get("steps") or ()]
    wall = ended - started
    detail = timeline(events, started, ended, grace)
    return {
        "wall": round(wall, 2),
        "ratio": round(wall / detail["inherent"], 3) if detail["inherent"] else None,
        "duration": out.get("duration"),
        "kills_in_steps": sum("needed a kill" in s for s in steps),
        "steps": steps,
        **detail,
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
    lines += ["", *inherent_table(results)]
    if stops:
        lines += ["", "| `docker stop`, one container ignoring SIGTERM | runs | s (min / median) |"]
        lines += ["|---|---:|---:|"]
        for what, values in stops.items():
            if values:
                lines.append(f"| {what} | {len(values)} | {summary(values)} |")
    return "\n".join(lines)


def inherent_table(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Wall time against the inherent time, per rollout, with the ratios' median."""
    lines = [
        "| case | rollout | wall s | start -> healthy s (per replacement) | + hold s "
        "| + grace s | inherent s | wall / inherent |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for service, runs in results.items():
        grace = GRACE if service in KILLED else 0.0
        for number, r in enumerate(runs, 1):
            if r.get("inherent") is None:
                lines.append(
                    f"| {service} | {number} | {r['wall']:.2f} | (events incomplete) |||||"
                )
                continue
            parts = ", ".join(f"{x:.2f}" for x in r["start_to_healthy"])
            overlap = f" ({r['overlapping_starts']} overlapping)" if r["overlapping_starts"] else ""
            lines.append(
                f"| {service} | {number} | {r['wall']:.2f} | {parts}{overlap} "
                f"| {MIN_HEALTHY:.0f} | {grace:.0f} | {r['inherent']:.2f} | {r['ratio']:.3f} |"
            )
        ratios = [r["ratio"] for r in runs if r.get("ratio") is not None]
        if ratios:
            verdict = ""
            if service in KILLED:
                met = statistics.median(ratios) <= TARGET
                verdict = f" (target <= {TARGET}: {'met' if met else 'missed'})"
            lines.append(
                f"| {service} | **median** | {statistics.median(r['wall'] for r in runs):.2f} "
                f"| | | | | **{statistics.median(ratios):.3f}**{verdict} |"
            )
    return lines


def ensure_matplotlib() -> Any:
    """matplotlib, installed on first use into build/bench/plot-lib (bench/salt_bench.py)."""
    from salt_bench import ensure_matplotlib as ensure

    return ensure()


def plot(
    results: dict[str, list[dict[str, Any]]], path: Path, subtitle: str, via: str = "salt"
) -> None:
    """Per rollout: the wall time beside the inherent time, one group per case."""
    plt = ensure_matplotlib()
    cases = [c for c, runs in results.items() if runs]
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 4.6), sharey=True)
    axes = axes if len(cases) > 1 else [axes]
    for ax, case in zip(axes, cases, strict=True):
        runs = results[case]
        xs = range(1, len(runs) + 1)
        walls = [r["wall"] for r in runs]
        inherent = [r.get("inherent") or 0 for r in runs]
        ours = "dockerops.rolling_update" if via == "salt" else "dockerops converge (library)"
        ax.bar([x - 0.2 for x in xs], walls, 0.4, label=f"{ours}: wall")
        ax.bar([x + 0.2 for x in xs], inherent, 0.4, label="inherent time", color="#999999")
        for x, r in zip(xs, runs, strict=True):
            if r.get("ratio"):
                ax.annotate(f"{r['ratio']:.2f}x", (x - 0.2, r["wall"]), ha="center",
                            va="bottom", fontsize=8)  # fmt: skip
        if case in KILLED:
            for x, value in zip(xs, inherent, strict=True):
                ax.hlines(TARGET * value, x - 0.4, x + 0.4, colors="C3", linestyles="dashed",
                          label=f"{TARGET} x inherent (target)" if x == 1 else None)  # fmt: skip
        ax.set_title(case)
        ax.set_xticks(list(xs))
        ax.set_xlabel("rollout (round)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("seconds")
    for ax, case in zip(axes, cases, strict=True):
        if case in KILLED or ax is axes[-1]:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"3-replica rolling update 1.0 -> 1.1, start-first, parallelism 1\n{subtitle}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log(f"plot: {path}")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def subtitle(raw: dict[str, Any]) -> str:
    return (
        f"{raw.get('when', '')}, via {raw.get('via', 'salt')}, {raw.get('cpus')} CPUs, "
        f"load average {raw.get('load_average_before')} before, "
        f"{raw.get('load_average_after')} after"
    )


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
    parser.add_argument(
        "--plot", default=str(REPO / "bench" / "stop_grace.png"), help="PNG path ('' for none)"
    )
    parser.add_argument("--from-json", help="tables and plot from an earlier run's raw results")
    parser.add_argument(
        "--via",
        choices=("salt", "library"),
        default="salt",
        help="salt: dockerops.rolling_update through Salt's loader (default); library: "
        "dockerops.converge.converge in-process, no Salt",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        raw = json.loads(Path(args.from_json).read_text())
        print(report(raw["rollouts"], raw["docker_stop_seconds"]))
        if args.plot:
            plot(raw["rollouts"], Path(args.plot), subtitle(raw), raw.get("via", "salt"))
        return 0
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
    salt: Any
    if args.via == "library":
        salt = Library(client, cases, state_dir)
    else:
        salt = loaders(state_dir)
        set_pillar(salt, pillar(cases))

    results: dict[str, list[dict[str, Any]]] = {service: [] for service in cases}
    failures: list[dict[str, Any]] = []
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
                if isinstance(salt, Library):
                    result, comment = salt.running(service)
                else:
                    ret = salt.states.dockerops.running(name=service)
                    result, comment = ret.result, ret.comment
                if result is not True:
                    raise SystemExit(f"{service} did not deploy: {comment}")
            wait_all_healthy(client, cases)
            # Rotate the order, so no case always runs first on a quiet machine.
            shift = (number - 1) % len(cases)
            order = cases[shift:] + cases[:shift]
            for service in order:
                measured = rollout(salt, client, service)
                if measured.get("failed"):
                    failures.append({"round": number, "case": service, **measured})
                    log(f"round {number}: {service} FAILED after {measured['wall']:.2f}s "
                        f"(rolled back, not counted): {measured['failed'][:300]}")  # fmt: skip
                    continue
                results[service].append(measured)
                log(
                    f"round {number}: {service} 1.0 -> 1.1 in {measured['wall']:.2f}s "
                    f"(returned duration {measured['duration']}); old replica stops "
                    f"{measured['old_stop_seconds']}; last counted -> end "
                    f"{measured['last_counted_to_end']}s; kills in steps "
                    f"{measured['kills_in_steps']}; inherent {measured['inherent']}s "
                    f"(start -> healthy {measured['start_to_healthy']}), wall / inherent "
                    f"{measured['ratio']}"
                )
                if service == "sg-ignores" and not isinstance(salt, Library):
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
    raw = {
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "via": args.via,
        "rollouts": results,
        "ignores_last_stop": last_stop,
        "failed_rollouts": failures,
        "docker_stop_seconds": stops,
    }
    (BUILD / "stop_grace.json").write_text(json.dumps(raw, indent=1) + "\n")
    if args.plot:
        plot(results, Path(args.plot), subtitle(raw), args.via)
    print()
    print(table)
    for failure in failures:
        print(
            f"\nround {failure['round']}: {failure['case']} failed after {failure['wall']:.2f}s, "
            f"rolled back (not in the table): {failure['failed'][:300]}"
        )
    shown = last_stop[-1] if last_stop else None
    print(f"\ndockerops.status sg-ignores last_stop (last round): {shown}")
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    print(f"total {time.monotonic() - began:.0f}s; raw results in build/bench/stop_grace.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
