"""The fleet runner's own work over simulated fleets of 10 to 10,000 minions.

``salt-run dockerops.rolling_update web tgt=* batch=<batch>``, as the runner
runs it (``_plan_rollout``, then ``_drive``: every batch's health check, its
``rolling_update`` call, the summary), against a fake ``LocalClient``
(``SimulatedFleet`` from ``tests/unit/test_fleet_scale.py``: each minion runs
web with 2 replicas and answers ``dockerops.status`` and
``dockerops.rolling_update`` (previews and real) at once). So the times are
the master's own work per rollout (the engine's and the runner's, the fake's
answers included), without Salt's transport or any minion's rollout.

Each fleet size is rolled twice: with minions whose ``rolling_update`` return
says how many replicas are healthy after it (``healthy``), and with minions of
today's release, whose return does not (each batch is then asked again at the
next check). Each is run ``--rounds`` times after a warm-up; the run of
median CPU time is kept. Per run: the plan's time, the batches' time (CPU
and wall), the calls made, and the minions each pre-batch
``dockerops.status`` call targeted.

    .venv/bin/python bench/fleet_sim.py [--minions 10,100,1000,10000] [--batch 10%]
                                        [--rounds 3] [--json build/bench/fleet_sim.json]
                                        [--plot build/bench/fleet_sim.png]

Nothing is started; it runs in a few seconds (most of it the 10,000-minion
plan). The plot (time against fleet size, log-log) needs matplotlib, installed
on first use into build/bench/plot-lib (bench/salt_bench.py's loader).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dockerops import fleet  # noqa: E402
from tests.unit.test_fleet_scale import SERVICE, SimulatedFleet, load_runner  # noqa: E402

BUILD = REPO / "build" / "bench"


def measure(runner: Any, minions: int, batch: str, says_healthy: bool) -> dict[str, Any]:
    """One rollout of ``minions`` in batches of ``batch``: times and calls."""
    sim = SimulatedFleet(minions, says_healthy=says_healthy)
    options = fleet.RolloutOptions.from_args(SERVICE, "*", batch=batch, tag="1.1")
    # CPU time too: on a busy machine it says more than the wall clock.
    started, cpu_started = time.perf_counter(), time.process_time()
    engine = runner._plan_rollout(sim, options)
    runner._say(*engine.describe())
    planned, cpu_planned = time.perf_counter(), time.process_time()
    summary = runner._drive(sim, engine)
    done, cpu_done = time.perf_counter(), time.process_time()
    if summary["result"] is not True:
        raise SystemExit(f"{minions} minions: the rollout failed: {summary['comment']}")
    checks = [len(asked) for asked in sim.checks()]
    batches = len(engine.plan.batches)
    return {
        "minions": minions,
        "batch": batch,
        "batch_size": max(len(b) for b in engine.plan.batches),
        "says_healthy": says_healthy,
        "batches": batches,
        "plan_s": round(planned - started, 4),
        "batches_s": round(done - planned, 4),
        "total_s": round(done - started, 4),
        "per_batch_ms": round((done - planned) / batches * 1e3, 3),
        "plan_cpu_s": round(cpu_planned - cpu_started, 4),
        "batches_cpu_s": round(cpu_done - cpu_planned, 4),
        "total_cpu_s": round(cpu_done - cpu_started, 4),
        "per_batch_cpu_ms": round((cpu_done - cpu_planned) / batches * 1e3, 3),
        "calls": len(sim.calls),
        "calls_per_batch": round((len(sim.calls) - 2) / batches, 2),
        "status_targets_per_check": checks,
        "status_targets_max": max(checks),
        "status_targets_mean": round(statistics.fmean(checks), 1),
        "status_targets_total": sum(checks),
        "rollout_targets_per_batch": [len(t) for t in sim.rollouts()],
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| minions | batch | returns say healthy | batches | plan, CPU s | batches, CPU s "
        "| total, CPU s | total, wall s | CPU ms per batch | calls "
        "| status targets per check (mean / max) | status targets, whole rollout |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        rows.append(
            f"| {r['minions']:,} | {r['batch_size']} ({r['batch']}) "
            f"| {'yes' if r['says_healthy'] else 'no'} | {r['batches']} "
            f"| {r['plan_cpu_s']:.3f} | {r['batches_cpu_s']:.3f} | {r['total_cpu_s']:.3f} "
            f"| {r['total_s']:.3f} | {r['per_batch_cpu_ms']:.2f} "
            f"| {r['calls']} | {r['status_targets_mean']:g} / {r['status_targets_max']} "
            f"| {r['status_targets_total']:,} |"
        )
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], path: Path, batch: str) -> None:
    """The runner's time (plan, batches, total) against the fleet's size, log-log."""
    sys.path.insert(0, str(REPO / "bench"))
    from salt_bench import ensure_matplotlib

    plt = ensure_matplotlib()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for says, style in ((True, "-"), (False, "--")):
        runs = sorted((r for r in results if r["says_healthy"] is says), key=lambda r: r["minions"])
        if not runs:
            continue
        sizes = [r["minions"] for r in runs]
        tag = "returns say healthy" if says else "returns do not"
        for key, color in (
            ("total_cpu_s", "#4c72b0"),
            ("plan_cpu_s", "#55a868"),
            ("batches_cpu_s", "#dd8452"),
        ):
            label = f"{key.removesuffix('_cpu_s')} ({tag})"
            left.plot(sizes, [r[key] for r in runs], style, marker="o", color=color, label=label)
        right.plot(
            sizes,
            [r["status_targets_mean"] for r in runs],
            style,
            marker="o",
            color="#c44e52",
            label=f"minions asked per check ({tag})",
        )
        if says:
            right.plot(sizes, sizes, "-.", color="black", label="the whole fleet (asked before)")
        right.plot(
            sizes,
            [r["batch_size"] for r in runs],
            ":",
            color="gray",
            label="batch size" if says else None,
        )
    for axis in (left, right):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("minions")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    left.set_ylabel("runner's own CPU time, s")
    left.set_title(f"plan + all batches (batch {batch}), fake LocalClient", fontsize=9)
    right.set_ylabel("minions")
    right.set_title("dockerops.status targets per pre-batch check", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minions", default="10,100,1000,10000", help="fleet sizes")
    parser.add_argument("--batch", default="10%", help="the runner's batch (count or %%)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per size (median kept)")
    parser.add_argument("--json", default=str(BUILD / "fleet_sim.json"))
    parser.add_argument("--plot", default=str(BUILD / "fleet_sim.png"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.minions.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--minions: fleet sizes of at least 1")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")

    runner = load_runner(Path(tempfile.mkdtemp(prefix="fleet-sim-")))
    runner.time.sleep = lambda seconds: None  # no pause is asked for; never wait
    results = []
    for size in sizes:
        for says in (True, False):
            measure(runner, size, args.batch, says)  # warm-up, not kept
            runs = [measure(runner, size, args.batch, says) for _ in range(args.rounds)]
            # The run of median CPU time (the machine may be busy with other work).
            r = sorted(runs, key=lambda run: run["total_cpu_s"])[len(runs) // 2]
            r["total_s_all"] = [run["total_s"] for run in runs]
            results.append(r)
            print(
                f"{size:>6} minions, returns {'say' if says else 'lack'} healthy: "
                f"{r['total_cpu_s']:.3f}s CPU, {r['total_s']:.3f}s wall "
                f"({r['per_batch_cpu_ms']:.2f} ms CPU per batch), "
                f"{r['status_targets_mean']:g} asked per check",
                flush=True,
            )
    print()
    print(table(results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "results": results}, indent=1) + "\n")
    plot(results, Path(args.plot), args.batch)
    print(f"\nresults: {out}\nplot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
