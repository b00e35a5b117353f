"""No-op highstate: Salt state time per container, dockerops vs saltext-dockermod.

For each size N (containers on the host), both tools get the same containers to
keep running (image, environment, restart policy, an owner label; no ports):

- dockerops: N/2 services x 2 replicas in pillar, applied by the ``dockerops``
  formula (one ``dockerops.running`` state per service);
- saltext-dockermod: N ``docker_container.running`` states, one per container,
  with the arguments a Salt user would write (all other options at defaults).

Each tool runs masterless (``salt-call --local``) from its own config dir under
``build/bench/`` (for dockerops, ``file_roots`` is the formula's ``salt/`` and a
top file, never the repository root): one highstate converges (creates the
containers), then ``--runs`` highstates change nothing (fewer if they outlast
``--budget`` seconds), and the ``duration`` Salt reports for each state is
summed over the tool's container states and divided by N. The median over the
no-op runs is reported, for both tools and their ratio, with dockerops' target
(at most 1.5 ms per container at every size) and its flatness (ms per container
at 400 over ms per container at 100, ``--flatness-sizes``; target at most 1.25).

Before each no-op highstate, ``salt-call --local test.ping`` runs in the same
config dir: the salt-call wall time of the highstate is split into

- Salt's start-up: the median wall time of test.ping (interpreter, Salt's
  imports, grains, pillar render, loader, exit: what every salt-call pays on
  this config dir, whatever it does);
- container states: the median sum of the tool's container states' durations
  (dockerops' own work, or saltext-dockermod's);
- other states: the median sum of every other state's duration;
- compile: the rest (median highstate wall minus the three above): the top
  file and the SLS render (Jinja, and the module calls the formula makes),
  the compile into a state list, Salt's work between states, the JSON output.

The tools run one after the other (never both sets of containers at once), and
everything created is removed at the end. An odd N gives the last service one
replica. Results: a table, ``build/bench/results.json`` and a PNG plot
(``bench/noop_highstate.png`` unless ``--plot``); ``--from-json`` redraws both
from an earlier run's JSON.

    .venv/bin/python bench/noop_highstate.py [--sizes 1,20,100,200,400]
        [--dockermod-sizes 1,20] [--runs 5] [--budget 300] [--profile]
        [--flatness-sizes 100,400] [--plot PATH] [--from-json PATH]

saltext-dockermod needs about 10 minutes per no-op highstate at 100 containers,
so it is measured at 1 and 20 by default; ``--dockermod-sizes 100`` adds that
size (one no-op run within the default budget).

saltext-dockermod is a bench-only dependency (``bench/requirements.txt``): it is
installed with ``--no-deps`` into ``build/bench/dockermod-lib`` (its runtime
dependencies, salt and docker, are those of .venv) and put on ``PYTHONPATH`` only
for its own salt-call runs. matplotlib (``bench/requirements-plot.txt``) goes
into ``build/bench/plot-lib``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salt_bench import (
    BUILD,
    DEMO_IMAGE,
    DOCKERMOD,
    OURS,
    REPO,
    MinionDir,
    check_docker,
    count_containers,
    dockermod_sls,
    dockerops_pillar,
    ensure_dockermod,
    ensure_matplotlib,
    ensure_variant,
    load_average,
    log,
    remove_containers,
    salt_timeout,
    state_times,
)

# The demo image without its HEALTHCHECK: at 100 containers a 1 s probe is 100
# `docker exec`s a second on a 2-core machine, load that would swamp what is
# measured here (for both tools alike).
BENCH_REPOSITORY = "dockerops/demo-http-bench"
BENCH_TAG = "1.0"
BENCH_IMAGE = f"{BENCH_REPOSITORY}:{BENCH_TAG}"

OWNER_LABEL = "dockerops-bench"
REPLICAS = 2

# dockerops' targets (issue 13).
TARGET_MS = 1.5
FLATNESS_TARGET = 1.25

RESULTS = BUILD / "results.json"
PLOT = REPO / "bench" / "noop_highstate.png"


# -- the two tools' Salt trees --------------------------------------------------


def layout(containers: int) -> dict[str, int]:
    """Services and their replica counts: ``REPLICAS`` each, the last one fewer if odd."""
    services = {}
    for first in range(0, containers, REPLICAS):
        services[f"bench-svc{first // REPLICAS + 1:03d}"] = min(REPLICAS, containers - first)
    return services


def dockermod_name(service: str, index: int) -> str:
    # Named apart from dockerops' <service>-<replica>, so the two never collide.
    return f"bench-dm-{service.removeprefix('bench-')}-{index}"


class Minion(MinionDir):
    """The config dir under build/bench/<tool>-<containers>, for N containers."""

    def __init__(self, tool: str, containers: int) -> None:
        super().__init__(tool, BUILD / f"{tool}-{containers}", salt_timeout(containers))
        self.containers = containers

    def write_bench(self) -> None:
        services = layout(self.containers)
        labels = {OWNER_LABEL: self.tool}
        if self.tool == OURS:
            self.write(dockerops_pillar(services, BENCH_REPOSITORY, BENCH_TAG, labels))
        else:
            self.write({}, dockermod_sls(services, dockermod_name, BENCH_IMAGE, labels))


# -- measuring ------------------------------------------------------------------


@dataclass
class Measurement:
    tool: str
    containers: int
    states: int
    converge_seconds: float
    per_container_ms: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    ping_seconds: list[float] = field(default_factory=list)
    other_states_ms: list[float] = field(default_factory=list)
    changed_runs: int = 0
    state_median_ms: list[float] = field(default_factory=list)
    profile: list[str] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.per_container_ms)

    def split(self) -> dict[str, float]:
        """The median no-op highstate's salt-call wall time, in seconds, split
        (see the module's docstring); the parts add up to ``highstate``."""
        wall = statistics.median(self.wall_seconds)
        startup = statistics.median(self.ping_seconds)
        ours = statistics.median(self.per_container_ms) * self.containers / 1000
        others = statistics.median(self.other_states_ms) / 1000
        return {
            "highstate": wall,
            "startup": startup,
            "compile": wall - startup - ours - others,
            "container_states": ours,
            "other_states": others,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "containers": self.containers,
            "states": self.states,
            "converge_seconds": round(self.converge_seconds, 1),
            "per_container_ms": [round(v, 3) for v in self.per_container_ms],
            "median_per_container_ms": round(self.median_ms, 3),
            "salt_call_wall_seconds": [round(v, 3) for v in self.wall_seconds],
            "test_ping_wall_seconds": [round(v, 3) for v in self.ping_seconds],
            "other_states_ms": [round(v, 2) for v in self.other_states_ms],
            "wall_split_seconds": {k: round(v, 3) for k, v in self.split().items()},
            "median_state_ms_per_run": [round(v, 2) for v in self.state_median_ms],
            "noop_runs_with_changes": self.changed_runs,
            "profile": self.profile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            tool=data["tool"],
            containers=data["containers"],
            states=data["states"],
            converge_seconds=data["converge_seconds"],
            per_container_ms=data["per_container_ms"],
            wall_seconds=data["salt_call_wall_seconds"],
            ping_seconds=data["test_ping_wall_seconds"],
            other_states_ms=data["other_states_ms"],
            changed_runs=data["noop_runs_with_changes"],
            state_median_ms=data["median_state_ms_per_run"],
            profile=data.get("profile", []),
        )


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
    minion.write_bench()
    remove_containers(OWNER_LABEL, tool)
    if tool == OURS:
        log(f"[{label}] saltutil.sync_all")
        minion.salt_call("saltutil.sync_all")
    log(f"[{label}] converging (first highstate creates the containers)")
    _, converge = minion.highstate()
    up = count_containers(OWNER_LABEL, tool, "status=running")
    if up != containers:
        raise SystemExit(f"[{label}] {up} containers running after converge, not {containers}")
    log(f"[{label}] converged in {converge:.1f}s; {runs} no-op highstates (each after a test.ping)")
    result = Measurement(tool, containers, 0, converge)
    started = time.monotonic()
    for number in range(1, runs + 1):
        if number > 1 and time.monotonic() - started > budget:
            log(f"[{label}] time budget ({budget:.0f}s) spent: {number - 1} no-op runs")
            break
        ping = minion.test_ping()
        data, wall = minion.highstate()
        times = state_times(data, tool)
        total = sum(times.containers)
        result.states = len(times.containers)
        result.changed_runs += times.changed
        result.per_container_ms.append(total / containers)
        result.state_median_ms.append(statistics.median(times.containers))
        result.wall_seconds.append(wall)
        result.ping_seconds.append(ping)
        result.other_states_ms.append(sum(times.others))
        log(
            f"[{label}] run {number}/{runs}: {total:.1f} ms in {len(times.containers)} states "
            f"(median {statistics.median(times.containers):.1f} ms), "
            f"{total / containers:.2f} ms/container, salt-call {wall:.2f}s "
            f"(test.ping {ping:.2f}s)" + (" (CHANGES REPORTED)" if times.changed else "")
        )
    if profile and tool == OURS:
        path = BUILD / f"profile-{tool}-{containers}.prof"
        log(f"[{label}] one more no-op highstate under cProfile ({path.relative_to(REPO)})")
        minion.highstate(profile=path)
        result.profile = profile_breakdown(path)
        log("\n".join(result.profile))
    removed = remove_containers(OWNER_LABEL, tool)
    log(f"[{label}] removed {removed} containers")
    return result


# -- reporting ------------------------------------------------------------------


def flatness(results: list[Measurement], sizes: tuple[int, int]) -> float | None:
    """dockerops' ms per container at the larger size over that at the smaller."""
    by = {m.containers: m for m in results if m.tool == OURS}
    small, large = by.get(sizes[0]), by.get(sizes[1])
    return large.median_ms / small.median_ms if small and large else None


def report(results: list[Measurement], flatness_sizes: tuple[int, int]) -> str:
    by = {(m.tool, m.containers): m for m in results}

    def cell(tool: str, size: int) -> str:
        m = by.get((tool, size))
        return f"{m.median_ms:.2f} ({len(m.per_container_ms)})" if m else "-"

    rows = [
        f"| containers | dockerops ms/container (runs) | <= {TARGET_MS} ms "
        "| saltext-dockermod ms/container (runs) | ratio |",
        "|---:|---:|:---:|---:|---:|",
    ]
    for size in sorted({m.containers for m in results}):
        ours, theirs = by.get((OURS, size)), by.get((DOCKERMOD, size))
        ratio = f"{theirs.median_ms / ours.median_ms:.0f}x" if ours and theirs else "-"
        target = ("yes" if ours.median_ms <= TARGET_MS else "NO") if ours else "-"
        rows.append(
            f"| {size} | {cell(OURS, size)} | {target} | {cell(DOCKERMOD, size)} | {ratio} |"
        )
    rows += [
        "",
        "State time of a no-op highstate: the `duration` Salt reports for each container "
        "state, summed and divided by the containers; median over the no-op runs.",
        "",
    ]
    ours_all = [m for m in results if m.tool == OURS]
    if ours_all:
        over = [m.containers for m in ours_all if m.median_ms > TARGET_MS]
        rows.append(
            f"target (dockerops <= {TARGET_MS} ms per container at each size): "
            + (f"MISSED at {', '.join(map(str, over))}" if over else "met")
        )
    small, large = flatness_sizes
    flat = flatness(results, flatness_sizes)
    rows.append(
        f"flatness (dockerops ms/container at {large} / at {small}, target <= "
        f"{FLATNESS_TARGET}): "
        + (
            f"{flat:.2f} ({'met' if flat <= FLATNESS_TARGET else 'MISSED'})"
            if flat is not None
            else f"n/a (needs dockerops at {small} and {large})"
        )
    )
    rows += [
        "",
        "salt-call wall time of the median no-op highstate, split (seconds):",
        "",
        "| tool | containers | highstate wall | Salt start-up (test.ping) | compile (rest) "
        "| container states | other states |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in sorted(results, key=lambda m: (m.tool != OURS, m.containers)):
        s = m.split()
        rows.append(
            f"| {m.tool} | {m.containers} | {s['highstate']:.2f} | {s['startup']:.2f} "
            f"| {s['compile']:.2f} | {s['container_states']:.2f} | {s['other_states']:.2f} |"
        )
    rows += [
        "",
        "Salt start-up: median wall of `salt-call --local test.ping` in the same config dir "
        "(one before each no-op highstate). Container states: median sum of their `duration`. "
        "Compile: the rest (top file, SLS render, state compile, Salt between states, output).",
    ]
    for m in results:
        if m.changed_runs:
            rows.append(f"WARNING: {m.tool} x {m.containers}: {m.changed_runs} runs had changes")
    return "\n".join(rows)


def plot(results: list[Measurement], path: Path, title: str) -> None:
    """Left: ms per container against the host's size, both tools (log-log), the
    target; right: dockerops' salt-call wall time split, per size."""
    plt = ensure_matplotlib()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6))
    colors = {OURS: "#dd8452", DOCKERMOD: "#4c72b0"}
    names = {OURS: "dockerops (formula)", DOCKERMOD: "saltext-dockermod"}
    for tool in (OURS, DOCKERMOD):
        found = sorted((m for m in results if m.tool == tool), key=lambda m: m.containers)
        if not found:
            continue
        sizes = [m.containers for m in found]
        medians = [m.median_ms for m in found]
        spread = [
            [v - min(m.per_container_ms) for v, m in zip(medians, found, strict=True)],
            [max(m.per_container_ms) - v for v, m in zip(medians, found, strict=True)],
        ]
        left.errorbar(
            sizes,
            medians,
            yerr=spread,
            marker="o",
            capsize=3,
            color=colors[tool],
            label=names[tool],
        )
        for size, value in zip(sizes, medians, strict=True):
            left.annotate(
                f"{value:.2f}", (size, value), textcoords="offset points", xytext=(4, 4), fontsize=7
            )
    left.axhline(
        TARGET_MS, color="black", linestyle="--", linewidth=1, label=f"{TARGET_MS} ms target"
    )
    left.set_xscale("log")
    left.set_yscale("log")
    sizes_all = sorted({m.containers for m in results})
    left.set_xticks(sizes_all, [str(size) for size in sizes_all])
    left.minorticks_off()
    # Room below the target line, so that it never sits on the axis.
    lowest = min([TARGET_MS, *(v for m in results for v in m.per_container_ms)])
    left.set_ylim(bottom=lowest / 2)
    left.set_xlabel("containers on the host")
    left.set_ylabel("ms per container (median of runs; range)")
    left.set_title("no-op highstate: state time per container", fontsize=10)
    left.legend(fontsize=8)

    ours = sorted((m for m in results if m.tool == OURS), key=lambda m: m.containers)
    parts = [
        ("startup", "Salt start-up (test.ping)", "#bbbbbb"),
        ("compile", "compile/render (rest)", "#8172b3"),
        ("other_states", "other states", "#55a868"),
        ("container_states", "dockerops.running states", "#dd8452"),
    ]
    labels = [str(m.containers) for m in ours]
    bottom = [0.0] * len(ours)
    for key, label, color in parts:
        values = [max(m.split()[key], 0.0) for m in ours]
        right.bar(labels, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, m in enumerate(ours):
        right.text(
            x, bottom[x], f"{m.split()['highstate']:.2f}s", ha="center", va="bottom", fontsize=8
        )
    right.set_xlabel("containers on the host (dockerops)")
    right.set_ylabel("seconds (salt-call wall, median no-op highstate)")
    right.set_title("dockerops: salt-call wall time split", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


def parse_sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def show(saved: dict[str, Any], flatness_sizes: tuple[int, int], plot_path: Path) -> None:
    """Print the tables of a run's results and draw its plot."""
    results = [Measurement.from_dict(item) for item in saved["results"]]
    log("")
    log(report(results, flatness_sizes))
    log(
        f"\nload average before {saved['load_average_before']}, "
        f"after {saved['load_average_after']} ({saved['cpus']} CPUs)"
    )
    plot(
        results,
        plot_path,
        f"no-op highstate, {saved['cpus']} CPUs, load {saved['load_average_before']} "
        f"-> {saved['load_average_after']}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1,20,100,200,400",
        help="container counts for dockerops (empty: skip; default 1,20,100,200,400)",
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
    parser.add_argument(
        "--flatness-sizes",
        default="100,400",
        help="the two dockerops sizes whose ms/container ratio is the flatness (default 100,400)",
    )
    parser.add_argument("--plot", default=str(PLOT), help="where the PNG goes")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: the tables and plot of an earlier run's JSON results",
    )
    args = parser.parse_args(argv)
    flat_sizes = parse_sizes(args.flatness_sizes)
    if len(flat_sizes) != 2:
        parser.error("--flatness-sizes takes two sizes, e.g. 100,400")
    flatness_sizes = (flat_sizes[0], flat_sizes[1])
    if args.from_json:
        show(json.loads(Path(args.from_json).read_text()), flatness_sizes, Path(args.plot))
        return 0
    sizes = parse_sizes(args.sizes)
    dm_sizes = parse_sizes(args.dockermod_sizes)

    check_docker()
    BUILD.mkdir(parents=True, exist_ok=True)
    ensure_variant(BENCH_IMAGE, "HEALTHCHECK NONE\n")
    if dm_sizes:
        ensure_dockermod()
    ensure_matplotlib()  # before anything is timed: a first run installs it
    leftovers = remove_containers(OWNER_LABEL)
    if leftovers:
        log(f"removed {leftovers} containers left by an earlier bench run")

    started = time.monotonic()
    load_before = load_average()
    log(f"load average before: {load_before} ({os.cpu_count()} CPUs); image {BENCH_IMAGE}")
    log(f"(the demo image {DEMO_IMAGE} with HEALTHCHECK NONE)")
    results: list[Measurement] = []
    try:
        for size in sorted(set(sizes) | set(dm_sizes)):
            if size in sizes:
                results.append(measure(OURS, size, args.runs, args.budget, args.profile))
            if size in dm_sizes:
                results.append(measure(DOCKERMOD, size, args.runs, args.budget))
    finally:
        remove_containers(OWNER_LABEL)
    saved = {
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "cpus": os.cpu_count(),
        "flatness": flatness(results, flatness_sizes),
        "flatness_sizes": list(flatness_sizes),
        "results": [m.as_dict() for m in results],
    }
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    show(saved, flatness_sizes, Path(args.plot))
    log(f"total {time.monotonic() - started:.0f}s; details in {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
