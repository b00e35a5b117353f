"""No-op highstate: Salt state time per container, dockerops vs saltext-dockermod.

For each size N (containers on the host), both tools get the same containers to
keep running (image, environment, restart policy, an owner label; no ports):

- dockerops: N/2 services x 2 replicas in pillar, applied by the ``dockerops``
  formula (one ``dockerops.running`` state per service);
- saltext-dockermod: N ``docker_container.running`` states, one per container,
  with the arguments a Salt user would write (all other options at defaults).

Each tool runs masterless (``salt-call --local``) from its own config dir under
``build/bench/``: one highstate converges (creates the containers), then
``--runs`` highstates change nothing (fewer if they outlast ``--budget``
seconds), and the ``duration`` Salt reports for each state is summed over the
tool's container states and divided by N. The median over the no-op runs is
reported, for both tools and their ratio. The tools run one after the other
(never both sets of containers at once), and everything created is removed at
the end. An odd N gives the last service one replica.

    .venv/bin/python bench/noop_highstate.py [--sizes 1,20,100]
        [--dockermod-sizes 1,20] [--runs 5] [--budget 300] [--profile]

saltext-dockermod needs about 10 minutes per no-op highstate at 100 containers,
so it is measured at 1 and 20 by default; ``--dockermod-sizes 100`` adds that
size (one no-op run within the default budget).

saltext-dockermod is a bench-only dependency (``bench/requirements.txt``): it is
installed with ``--no-deps`` into ``build/bench/dockermod-lib`` (its runtime
dependencies, salt and docker, are those of .venv) and put on ``PYTHONPATH`` only
for its own salt-call runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
BUILD = REPO / "build" / "bench"
DOCKERMOD_LIB = BUILD / "dockermod-lib"
SALT_CALL = str(Path(sys.executable).parent / "salt-call")

# The demo image without its HEALTHCHECK: at 100 containers a 1 s probe is 100
# `docker exec`s a second on a 2-core machine, load that would swamp what is
# measured here (for both tools alike).
DEMO_IMAGE = "dockerops/demo-http:1.0"
BENCH_REPOSITORY = "dockerops/demo-http-bench"
BENCH_TAG = "1.0"
BENCH_IMAGE = f"{BENCH_REPOSITORY}:{BENCH_TAG}"

OWNER_LABEL = "dockerops-bench"
REPLICAS = 2
RESTART_POLICY = "on-failure:5"
SALT_TIMEOUT = 3600

OURS = "dockerops"
DOCKERMOD = "dockermod"
STATE_FUNCTION = {OURS: "dockerops_|-", DOCKERMOD: "docker_container_|-"}


def log(message: str) -> None:
    print(message, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


# -- set-up ---------------------------------------------------------------------


def ensure_image() -> None:
    """Build the demo image (images/build.sh) and the bench variant if missing."""
    if run(["docker", "image", "inspect", BENCH_IMAGE]).returncode == 0:
        return
    if run(["docker", "image", "inspect", DEMO_IMAGE]).returncode != 0:
        log(f"building {DEMO_IMAGE} (images/build.sh)")
        subprocess.run([str(REPO / "images" / "build.sh")], check=True, stdout=subprocess.DEVNULL)
    log(f"building {BENCH_IMAGE} ({DEMO_IMAGE} without HEALTHCHECK)")
    subprocess.run(
        ["docker", "build", "-q", "-t", BENCH_IMAGE, "-"],
        input=f"FROM {DEMO_IMAGE}\nHEALTHCHECK NONE\n",
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def ensure_dockermod() -> None:
    """Install bench/requirements.txt into build/bench/dockermod-lib (once)."""
    wanted = [
        line.split("#")[0].strip()
        for line in (BENCH_DIR / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    stamp = DOCKERMOD_LIB / ".installed"
    if stamp.exists() and stamp.read_text().split() == wanted:
        return
    log(f"installing {' '.join(wanted)} into {DOCKERMOD_LIB.relative_to(REPO)}")
    proc = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--upgrade",
            "--target",
            str(DOCKERMOD_LIB),
            *wanted,
        ]
    )
    if proc.returncode != 0:
        raise SystemExit(f"installing {' '.join(wanted)} failed:\n{proc.stderr[-4000:]}")
    stamp.write_text("\n".join(wanted) + "\n")


def remove_containers(owner: str | None = None) -> int:
    """Remove the containers this bench created (all, or one tool's)."""
    label = f"{OWNER_LABEL}={owner}" if owner else OWNER_LABEL
    ids = run(["docker", "ps", "-aq", "--filter", f"label={label}"]).stdout.split()
    for start in range(0, len(ids), 50):
        run(["docker", "rm", "-f", *ids[start : start + 50]])
    return len(ids)


def running_count(owner: str) -> int:
    out = run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label={OWNER_LABEL}={owner}",
            "--filter",
            "status=running",
        ]
    ).stdout
    return len(out.split())


# -- the two tools' Salt trees --------------------------------------------------


def layout(containers: int) -> dict[str, int]:
    """Services and their replica counts: ``REPLICAS`` each, the last one fewer if odd."""
    services = {}
    for first in range(0, containers, REPLICAS):
        services[f"bench-svc{first // REPLICAS + 1:03d}"] = min(REPLICAS, containers - first)
    return services


def service_env(service: str) -> dict[str, str]:
    return {"GREETING": "hello", "SERVICE": service}


@dataclass
class Minion:
    """A masterless minion config dir under build/bench/<tool>-<containers>."""

    tool: str
    containers: int
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = BUILD / f"{self.tool}-{self.containers}"

    def write(self) -> None:
        states = self.root / "states"
        pillar = self.root / "pillar"
        states.mkdir(parents=True, exist_ok=True)
        pillar.mkdir(parents=True, exist_ok=True)
        file_roots = [str(states)]
        config: dict[str, Any] = {
            "id": f"bench-{self.tool}",
            "file_client": "local",
            "root_dir": str(self.root / "root"),
            "pillar_roots": {"base": [str(pillar)]},
            "log_level_logfile": "warning",
        }
        if self.tool == OURS:
            # salt/ holds the formula and links to _modules, _states and the
            # library (_utils), which saltutil.sync_all brings.
            file_roots += [str(REPO / "salt")]
            config["dockerops.state_dir"] = str(self.root / "state")
            top, sls = "dockerops", None
            pillar_data = self.dockerops_pillar()
        else:
            top, sls = "bench", self.dockermod_sls()
            pillar_data = {}
        config["file_roots"] = {"base": file_roots}
        (self.root / "minion").write_text(yaml.safe_dump(config))
        (states / "top.sls").write_text(yaml.safe_dump({"base": {"*": [top]}}))
        if sls is not None:
            (states / "bench.sls").write_text(yaml.safe_dump(sls, sort_keys=False))
        (pillar / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["bench"]}}))
        (pillar / "bench.sls").write_text(yaml.safe_dump(pillar_data, sort_keys=False))

    def dockerops_pillar(self) -> dict[str, Any]:
        services = {
            name: {
                "image": BENCH_REPOSITORY,
                "tag": BENCH_TAG,
                "replicas": replicas,
                "env": service_env(name),
                "labels": {OWNER_LABEL: OURS},
            }
            for name, replicas in layout(self.containers).items()
        }
        return {
            "dockerops": {
                "environment": "bench",
                "defaults": {"restart_policy": RESTART_POLICY},
                "services": services,
            }
        }

    def dockermod_sls(self) -> dict[str, Any]:
        sls: dict[str, Any] = {}
        containers = [
            (service, index)
            for service, replicas in layout(self.containers).items()
            for index in range(1, replicas + 1)
        ]
        for service, index in containers:
            # Named apart from dockerops' <service>-<replica>, so the two never collide.
            name = f"bench-dm-{service.removeprefix('bench-')}-{index}"
            sls[name] = {
                "docker_container.running": [
                    {"name": name},
                    {"image": BENCH_IMAGE},
                    {"environment": service_env(service)},
                    {"restart_policy": RESTART_POLICY},
                    {"labels": {OWNER_LABEL: DOCKERMOD}},
                ]
            }
        return sls

    def salt_call(self, *args: str, profile: Path | None = None) -> tuple[Any, float]:
        """Run salt-call for this minion; return its ``local`` data and wall seconds.

        With ``profile``, salt-call runs under cProfile, its stats written there.
        """
        env = dict(os.environ)
        if self.tool == DOCKERMOD:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(DOCKERMOD_LIB), env.get("PYTHONPATH")) if p
            )
        started = time.monotonic()
        profiler = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else []
        proc = run(
            [
                *profiler,
                SALT_CALL,
                "-c",
                str(self.root),
                "--local",
                "--out=json",
                "--log-level=error",
                *args,
            ],
            env=env,
            timeout=SALT_TIMEOUT,
        )
        wall = time.monotonic() - started
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(
                f"salt-call {' '.join(args)} for {self.tool}-{self.containers} failed "
                f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            ) from None
        return data, wall

    def highstate(self, profile: Path | None = None) -> tuple[dict[str, Any], float]:
        data, wall = self.salt_call("state.apply", profile=profile)
        if not isinstance(data, dict):
            raise SystemExit(f"{self.tool}-{self.containers}: highstate failed: {data}")
        failed = {k: v.get("comment") for k, v in data.items() if v.get("result") is not True}
        if failed:
            raise SystemExit(f"{self.tool}-{self.containers}: states failed: {failed}")
        return data, wall


# -- measuring ------------------------------------------------------------------


@dataclass
class Measurement:
    tool: str
    containers: int
    states: int
    converge_seconds: float
    per_container_ms: list[float]
    wall_seconds: list[float]
    changed_runs: int
    state_median_ms: list[float] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.per_container_ms)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "containers": self.containers,
            "states": self.states,
            "converge_seconds": round(self.converge_seconds, 1),
            "per_container_ms": [round(v, 2) for v in self.per_container_ms],
            "median_per_container_ms": round(self.median_ms, 2),
            "salt_call_wall_seconds": [round(v, 2) for v in self.wall_seconds],
            "median_state_ms_per_run": [round(v, 2) for v in self.state_median_ms],
            "noop_runs_with_changes": self.changed_runs,
            "profile": self.profile,
        }


def container_state_times(data: dict[str, Any], tool: str) -> tuple[list[float], bool]:
    """The ``duration`` (ms) of each of the tool's container states; whether any changed."""
    prefix = STATE_FUNCTION[tool]
    durations = [
        float(v.get("duration") or 0.0)
        for k, v in data.items()
        if k.startswith(prefix) and k.endswith("_|-running")
    ]
    return durations, any(v.get("changes") for v in data.values())


# Where a dockerops.running state spends its time: what, the function
# ("file:name"), and the caller that pins the calls made on the state's path.
PROFILE_ROWS = [
    ("dockerops.running (whole state)", "states/dockerops.py:running", None),
    ("  spec from pillar (load_service)", "dockerops/spec.py:load_service", None),
    (
        "  Docker client from __context__",
        "dockerops/host.py:minion_host",
        "states/dockerops.py:running",
    ),
    ("  converge", "dockerops/converge.py:converge", None),
    ("    desired replicas and hashes", "dockerops/replicas.py:desired_replicas", None),
    ("    Docker list call (host.managed)", "dockerops/host.py:managed", "converge.py:plan"),
    ("    plan (pure comparison)", "dockerops/plan.py:plan_service", None),
]


def profile_breakdown(path: Path) -> list[str]:
    """Per-call cumulative time of the state's parts, from a cProfile dump."""
    stats = pstats.Stats(str(path)).stats

    def find(where: str) -> Any:
        file, _, function = where.partition(":")
        for key in stats:
            if key[0].endswith(file) and key[2] == function:
                return key
        return None

    lines = ["| part (under cProfile) | calls | ms per call | ms total |", "|---|---:|---:|---:|"]
    for what, where, caller_where in PROFILE_ROWS:
        key = find(where)
        if key is None:
            continue
        _, calls, _, cumulative, callers = stats[key]
        if caller_where is not None:
            caller = find(caller_where)
            if caller not in callers:
                continue
            _, calls, _, cumulative = callers[caller]
        lines.append(
            f"| {what} | {calls} | {cumulative * 1000 / calls:.2f} | {cumulative * 1000:.1f} |"
        )
    return lines


def measure(
    tool: str, containers: int, runs: int, budget: float, profile: bool = False
) -> Measurement:
    label = f"{tool} x {containers} containers"
    minion = Minion(tool, containers)
    minion.write()
    remove_containers(tool)
    if tool == OURS:
        log(f"[{label}] saltutil.sync_all")
        minion.salt_call("saltutil.sync_all")
    log(f"[{label}] converging (first highstate creates the containers)")
    _, converge = minion.highstate()
    up = running_count(tool)
    if up != containers:
        raise SystemExit(f"[{label}] {up} containers running after converge, not {containers}")
    log(f"[{label}] converged in {converge:.1f}s; {runs} no-op highstates")
    result = Measurement(tool, containers, 0, converge, [], [], 0)
    started = time.monotonic()
    for number in range(1, runs + 1):
        if number > 1 and time.monotonic() - started > budget:
            log(f"[{label}] time budget ({budget:.0f}s) spent: {number - 1} no-op runs")
            break
        data, wall = minion.highstate()
        durations, changed = container_state_times(data, tool)
        total = sum(durations)
        result.states = len(durations)
        result.changed_runs += changed
        result.per_container_ms.append(total / containers)
        result.state_median_ms.append(statistics.median(durations))
        result.wall_seconds.append(wall)
        log(
            f"[{label}] run {number}/{runs}: {total:.1f} ms in {len(durations)} states "
            f"(median {statistics.median(durations):.1f} ms), "
            f"{total / containers:.2f} ms/container, salt-call {wall:.1f}s"
            + (" (CHANGES REPORTED)" if changed else "")
        )
    if profile and tool == OURS:
        path = BUILD / f"profile-{tool}-{containers}.prof"
        log(f"[{label}] one more no-op highstate under cProfile ({path.relative_to(REPO)})")
        minion.highstate(profile=path)
        result.profile = profile_breakdown(path)
        log("\n".join(result.profile))
    removed = remove_containers(tool)
    log(f"[{label}] removed {removed} containers")
    return result


def report(results: list[Measurement]) -> str:
    by = {(m.tool, m.containers): m for m in results}

    def cell(tool: str, size: int) -> str:
        m = by.get((tool, size))
        return f"{m.median_ms:.2f} ({len(m.per_container_ms)})" if m else "-"

    rows = [
        "| containers | dockerops ms/container (runs) | saltext-dockermod ms/container (runs) "
        "| ratio |",
        "|---:|---:|---:|---:|",
    ]
    for size in sorted({m.containers for m in results}):
        ours, theirs = by.get((OURS, size)), by.get((DOCKERMOD, size))
        ratio = f"{theirs.median_ms / ours.median_ms:.0f}x" if ours and theirs else "-"
        rows.append(f"| {size} | {cell(OURS, size)} | {cell(DOCKERMOD, size)} | {ratio} |")
    rows += [
        "",
        "State time of a no-op highstate: the `duration` Salt reports for each container "
        "state, summed and divided by the containers; median over the no-op runs.",
    ]
    for m in results:
        if m.changed_runs:
            rows.append(f"WARNING: {m.tool} x {m.containers}: {m.changed_runs} runs had changes")
    return "\n".join(rows)


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="1,20,100", help="container counts for dockerops (empty: skip)"
    )
    parser.add_argument(
        "--dockermod-sizes",
        default="1,20",
        help="container counts for saltext-dockermod (empty: skip); at 100 a run takes ~10 min",
    )
    parser.add_argument("--runs", type=int, default=5, help="no-op highstates per size")
    parser.add_argument(
        "--budget",
        type=float,
        default=300,
        help="seconds of no-op runs per tool and size; no new run starts past it (default 300)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile one dockerops no-op highstate per size (cProfile)",
    )
    args = parser.parse_args(argv)
    sizes = parse_sizes(args.sizes)
    dm_sizes = parse_sizes(args.dockermod_sizes)

    if run(["docker", "info"]).returncode != 0:
        raise SystemExit("no Docker daemon answers (scripts/dockerd-up.sh starts one)")
    BUILD.mkdir(parents=True, exist_ok=True)
    ensure_image()
    if dm_sizes:
        ensure_dockermod()
    leftovers = remove_containers()
    if leftovers:
        log(f"removed {leftovers} containers left by an earlier bench run")

    started = time.monotonic()
    load_before = load()
    log(f"load average before: {load_before} ({os.cpu_count()} CPUs)")
    results: list[Measurement] = []
    try:
        for size in sorted(set(sizes) | set(dm_sizes)):
            if size in sizes:
                results.append(measure(OURS, size, args.runs, args.budget, args.profile))
            if size in dm_sizes:
                results.append(measure(DOCKERMOD, size, args.runs, args.budget))
    finally:
        remove_containers()
    load_after = load()

    table = report(results)
    (BUILD / "results.json").write_text(
        json.dumps(
            {
                "load_average_before": load_before,
                "load_average_after": load_after,
                "cpus": os.cpu_count(),
                "results": [m.as_dict() for m in results],
            },
            indent=1,
        )
        + "\n"
    )
    log("")
    log(table)
    log(f"\nload average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    log(f"total {time.monotonic() - started:.0f}s; details in build/bench/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
