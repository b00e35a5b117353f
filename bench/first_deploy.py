"""First deploy: services x replicas with healthchecks, from no containers, until all healthy.

The same containers (``dockerops/demo-http:1.0``, whose image HEALTHCHECK probes
every second; environment ``GREETING``/``SERVICE``, restart policy
``on-failure:5``, an owner label; no ports) are deployed, one way after the
other, in one run, each from nothing (its containers removed first):

- dockerops: ``--services`` services x ``--replicas`` in pillar, the
  ``dockerops`` formula by a masterless ``salt-call --local state.apply``, from a
  fresh state dir (no ledger, no history). Its states return once their
  replicas are healthy;
- saltext-dockermod: one ``docker_container.running`` state per container,
  masterless ``salt-call --local state.apply`` too. Its states return once the
  container is started, healthy or not;
- ``docker run -d`` of each container, serially (a shell loop), and with
  ``xargs -P 8``: the floor, no Salt.

Each is timed from its start to **returned** (the command exits) and to **all
healthy** (the last of its containers reports ``healthy``: ``docker events``
``health_status`` events, by the owner label; checked against ``docker ps
--filter health=healthy``), and **done** is the later of the two. For the two
Salt ways, also the sum and the maximum of the container states' ``duration``
(with Salt's ``parallel: True`` the sum exceeds the wall time), and Salt's
start-up (the median wall time of ``salt-call --local test.ping`` in the same
config dir, measured before the deploys). Target: dockerops' done at most half
of saltext-dockermod's.

    .venv/bin/python bench/first_deploy.py [--services 50] [--replicas 2] [--rounds 1]
        [--skip-dockermod] [--timeout 600] [--pause 10] [--plot PATH] [--from-json PATH]

Results: a table, ``build/bench/first_deploy.json`` (every round) and a PNG
plot (``bench/first_deploy.png`` unless ``--plot``); ``--from-json`` redraws
both from an earlier run's JSON. Containers are named apart
(``fd-svc001-1``: dockerops, ``fd-dm-``: saltext-dockermod, ``fd-sh-``: the
shell loop, ``fd-xp-``: xargs), carry ``dockerops-bench-first-deploy=<way>``,
and are removed at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from salt_bench import (
    BUILD,
    DEMO_IMAGE,
    DEMO_REPOSITORY,
    DEMO_TAG,
    DOCKERMOD,
    OURS,
    REPO,
    RESTART_POLICY,
    HealthEvents,
    MinionDir,
    check_docker,
    count_containers,
    dockermod_sls,
    dockerops_pillar,
    ensure_demo_image,
    ensure_dockermod,
    ensure_matplotlib,
    ensure_variant,
    load_average,
    log,
    remove_containers,
    salt_timeout,
    state_times,
)

OWNER_LABEL = "dockerops-bench-first-deploy"
SERIAL = "serial"
XARGS = "xargs"
PARALLEL = 8
WAYS = (OURS, DOCKERMOD, SERIAL, XARGS)
NAMES = {
    OURS: "dockerops (formula)",
    DOCKERMOD: "saltext-dockermod",
    SERIAL: "docker run, serial",
    XARGS: f"docker run, xargs -P {PARALLEL}",
}
PREFIX = {DOCKERMOD: "fd-dm-", SERIAL: "fd-sh-", XARGS: "fd-xp-"}
TARGET_RATIO = 0.5

RESULTS = BUILD / "first_deploy.json"
PLOT = REPO / "bench" / "first_deploy.png"

# The shell's ways. A serial loop over lines "<name> <service>" of $LIST, and
# xargs over lines "--name <name> -e SERVICE=<service> <image>" (appended to the
# common arguments: no shell per container).
SERIAL_SCRIPT = (
    'while read -r name service; do docker run -d --name "$name" -e GREETING=hello '
    '-e "SERVICE=$service" --restart "$RESTART" --label "$LABEL" "$IMAGE" >/dev/null '
    '|| exit 1; done < "$LIST"'
)
XARGS_SCRIPT = (
    f'xargs -P {PARALLEL} -L 1 docker run -d -e GREETING=hello --restart "$RESTART" '
    '--label "$LABEL" < "$LIST" >/dev/null'
)


def layout(services: int, replicas: int) -> dict[str, int]:
    return {f"fd-svc{number:03d}": replicas for number in range(1, services + 1)}


def container_name(way: str) -> Any:
    return lambda service, index: f"{PREFIX[way]}{service.removeprefix('fd-')}-{index}"


@dataclass
class Deploy:
    """One way's first deploy; seconds from its start."""

    way: str
    round: int
    containers: int
    returned: float
    all_healthy: float | None  # None: not all healthy within --timeout
    healthy: int
    state_sum: float | None = None
    state_max: float | None = None

    @property
    def done(self) -> float | None:
        return None if self.all_healthy is None else max(self.returned, self.all_healthy)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


# The image every way runs: the demo image, or its --probe-interval variant.
IMAGE = [DEMO_REPOSITORY]


def image() -> str:
    return f"{IMAGE[0]}:{DEMO_TAG}"


class Bench:
    def __init__(self, services: int, replicas: int, timeout: float) -> None:
        self.services = layout(services, replicas)
        self.containers = services * replicas
        self.timeout = timeout
        labels = {OWNER_LABEL: OURS}
        self.minions = {
            OURS: MinionDir(OURS, BUILD / "first-deploy-dockerops", salt_timeout(self.containers)),
            DOCKERMOD: MinionDir(
                DOCKERMOD, BUILD / "first-deploy-dockermod", salt_timeout(self.containers)
            ),
        }
        self.minions[OURS].write(dockerops_pillar(self.services, IMAGE[0], DEMO_TAG, labels))
        self.minions[DOCKERMOD].write(
            {},
            dockermod_sls(
                self.services, container_name(DOCKERMOD), image(), {OWNER_LABEL: DOCKERMOD}
            ),
        )

    def run_list(self, way: str) -> Path:
        path = BUILD / f"first-deploy-{way}.txt"
        name = container_name(way)
        line = (
            "--name {name} -e SERVICE={service} " + image() if way == XARGS else "{name} {service}"
        )
        path.write_text(
            "".join(
                line.format(name=name(service, index), service=service) + "\n"
                for service, replicas in self.services.items()
                for index in range(1, replicas + 1)
            )
        )
        return path

    def deploy(self, way: str, number: int) -> Deploy:
        label = f"[{NAMES[way]}, round {number}]"
        removed = remove_containers(OWNER_LABEL, way)
        if removed:
            log(f"{label} removed {removed} containers first")
        minion = self.minions.get(way)
        if way == OURS:
            # A first deploy: no ledger, no history, no locks of an earlier one.
            shutil.rmtree(self.minions[OURS].state_dir, ignore_errors=True)
        script = {SERIAL: SERIAL_SCRIPT, XARGS: XARGS_SCRIPT}.get(way)
        env = {
            **os.environ,
            "LIST": str(self.run_list(way)) if script else "",
            "LABEL": f"{OWNER_LABEL}={way}",
            "IMAGE": image(),
            "RESTART": RESTART_POLICY,
        }
        log(f"{label} deploying {self.containers} containers")
        start = time.time()
        events = HealthEvents(OWNER_LABEL, way, start)
        try:
            data: dict[str, Any] = {}
            if minion is not None:
                data, _ = minion.highstate()
            else:
                assert script is not None
                try:
                    proc = subprocess.run(
                        ["sh", "-c", script],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                        timeout=self.timeout,
                    )
                except subprocess.TimeoutExpired:
                    raise SystemExit(f"{label} outlasted {self.timeout:.0f}s") from None
                if proc.returncode != 0:
                    raise SystemExit(
                        f"{label} failed (exit {proc.returncode}): {proc.stderr[-2000:]}"
                    )
            returned = time.time() - start
            log(f"{label} returned after {returned:.1f}s; waiting for all healthy")
            all_in = events.wait(self.containers, self.timeout)
            last = events.last()
        finally:
            events.close()
        healthy = count_containers(OWNER_LABEL, way, "health=healthy")
        result = Deploy(
            way,
            number,
            self.containers,
            round(returned, 3),
            round(last - start, 3) if all_in and last is not None else None,
            events.count(),
        )
        if minion is not None:
            times = state_times(data, way)
            if len(times.containers) != (len(self.services) if way == OURS else self.containers):
                raise SystemExit(f"{label} {len(times.containers)} container states ran")
            result.state_sum = round(sum(times.containers) / 1000, 3)
            result.state_max = round(max(times.containers) / 1000, 3)
        log(
            f"{label} returned {returned:.1f}s, all healthy "
            + (f"{result.all_healthy:.1f}s" if result.all_healthy is not None else "NOT REACHED")
            + f" ({result.healthy} healthy events, docker ps: {healthy} healthy)"
            + (
                f"; states: sum {result.state_sum:.1f}s, max {result.state_max:.1f}s"
                if result.state_sum is not None
                else ""
            )
        )
        if healthy != self.containers:
            log(f"{label} WARNING: docker ps shows {healthy} healthy, not {self.containers}")
        log(f"{label} removed {remove_containers(OWNER_LABEL, way)} containers")
        return result


# -- reporting ------------------------------------------------------------------


def summary(deploys: list[Deploy]) -> dict[str, dict[str, float | None]]:
    """Per way, the median over rounds of each figure (None when a round missed it)."""
    out: dict[str, dict[str, float | None]] = {}
    for way in WAYS:
        found = [d for d in deploys if d.way == way]
        if not found:
            continue
        out[way] = {
            "returned": _median([d.returned for d in found]),
            "all_healthy": _median([d.all_healthy for d in found]),
            "done": _median([d.done for d in found]),
            "state_sum": _median([d.state_sum for d in found]),
            "state_max": _median([d.state_max for d in found]),
            "rounds": len(found),
        }
    return out


def report(saved: dict[str, Any]) -> str:
    medians = summary([Deploy(**item) for item in saved["deploys"]])
    startup = saved.get("salt_startup_seconds", {})

    def sec(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    base = (medians.get(DOCKERMOD) or {}).get("done")
    rows = [
        f"First deploy of {saved['services']} services x {saved['replicas']} replicas "
        f"({saved['services'] * saved['replicas']} containers, {saved.get('image', DEMO_IMAGE)}); "
        "seconds from the start, median over rounds:",
        "",
        "| way | returned | all healthy | done | states: sum | states: max "
        "| Salt start-up | done vs dockermod |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for way, m in medians.items():
        done = m["done"]
        ratio = f"{done / base:.2f}x" if done is not None and base else "-"
        rows.append(
            f"| {NAMES[way]} ({m['rounds']:.0f}) | {sec(m['returned'])} | {sec(m['all_healthy'])} "
            f"| {sec(done)} | {sec(m['state_sum'])} | {sec(m['state_max'])} "
            f"| {sec(startup.get(way))} | {ratio} |"
        )
    rows += [
        "",
        "returned: the command (salt-call state.apply, the shell loop, xargs) exits; all "
        "healthy: the last container's health_status: healthy event; done: the later of the "
        "two. states: the container states' `duration`. Salt start-up: median wall of "
        "`salt-call --local test.ping` in the same config dir (part of returned).",
        "",
    ]
    ours = (medians.get(OURS) or {}).get("done")
    if ours is not None and base:
        share = ours / base
        verdict = "met" if share <= TARGET_RATIO else "MISSED"
        rows.append(
            f"target (dockerops done <= {TARGET_RATIO} x saltext-dockermod done): "
            f"{share:.2f} ({verdict})"
        )
    else:
        rows.append(f"target (dockerops done <= {TARGET_RATIO} x saltext-dockermod done): n/a")
    for d in saved["deploys"]:
        if d["all_healthy"] is None:
            rows.append(
                f"WARNING: {NAMES[d['way']]}, round {d['round']}: only {d['healthy']} of "
                f"{d['containers']} healthy within the timeout"
            )
    return "\n".join(rows)


def plot(saved: dict[str, Any], path: Path) -> None:
    """Per way, two bars: returned and all healthy (median over rounds); dockerops'
    target (half of saltext-dockermod's done) as a dashed line."""
    plt = ensure_matplotlib()
    medians = summary([Deploy(**item) for item in saved["deploys"]])
    startup = saved.get("salt_startup_seconds", {})
    ways = list(medians)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 1.0 * len(ways)))
    height = 0.38
    colors = {OURS: "#dd8452", DOCKERMOD: "#4c72b0", SERIAL: "#999999", XARGS: "#777777"}
    limits = [1.0]
    for row, way in enumerate(ways):
        m = medians[way]
        for offset, key, alpha, what in (
            (-height / 2, "returned", 1.0, "returned"),
            (height / 2, "all_healthy", 0.55, "all healthy"),
        ):
            value = m[key]
            if value is None:
                continue
            ax.barh(row + offset, value, height=height, color=colors[way], alpha=alpha)
            ax.text(value, row + offset, f" {what} {value:.1f}s", va="center", fontsize=8)
            limits.append(value)
        if way in startup and m["returned"] is not None:
            # Salt's own start-up, inside the returned bar.
            ax.barh(
                row - height / 2,
                min(startup[way], m["returned"]),
                height=height,
                color="none",
                edgecolor="black",
                hatch="//",
                linewidth=0.5,
            )
    base = (medians.get(DOCKERMOD) or {}).get("done")
    if base:
        ax.axvline(TARGET_RATIO * base, color="black", linestyle="--", linewidth=1)
        ax.text(
            TARGET_RATIO * base,
            len(ways) - 0.3,
            f" dockerops' target: {TARGET_RATIO} x dockermod's done",
            fontsize=7,
            va="center",
        )
    ax.set_yticks(range(len(ways)), [NAMES[w] for w in ways])
    # Top to bottom, with a row of room below the last bars for the target's label.
    ax.set_ylim(len(ways) - 0.1, -0.6)
    ax.set_xlim(0, max(limits) * 1.3)
    ax.set_xlabel("seconds from the start (median over rounds)")
    ax.set_title(
        f"first deploy, {saved['services']} services x {saved['replicas']} replicas with a 1 s "
        f"healthcheck; solid: returned (hatched: Salt start-up), light: all healthy\n"
        f"{saved['cpus']} CPUs, load {saved['load_average_before']} -> "
        f"{saved['load_average_after']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


def show(saved: dict[str, Any], plot_path: Path) -> None:
    log("")
    log(report(saved))
    log(
        f"\nload average before {saved['load_average_before']}, "
        f"after {saved['load_average_after']} ({saved['cpus']} CPUs)"
    )
    plot(saved, plot_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=50, help="services (default 50)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas each (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="deploys of each way (default 1)")
    parser.add_argument("--skip-dockermod", action="store_true", help="leave saltext-dockermod out")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600,
        help="seconds a way may take to return, and then to be all healthy (default 600)",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=10,
        help="seconds between two deploys, for dockerd to settle (default 10)",
    )
    parser.add_argument(
        "--probe-interval",
        type=int,
        default=1,
        help="seconds between health probes (default 1: the demo image's own; "
        "otherwise a variant of it is built)",
    )
    parser.add_argument("--plot", default=str(PLOT), help="where the PNG goes")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: the table and plot of an earlier run's JSON results",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        show(json.loads(Path(args.from_json).read_text()), Path(args.plot))
        return 0
    if not (1 <= args.services <= 999 and 1 <= args.replicas <= 100 and args.rounds >= 1):
        parser.error("--services 1..999, --replicas 1..100, --rounds at least 1")
    ways = [w for w in WAYS if not (w == DOCKERMOD and args.skip_dockermod)]

    check_docker()
    BUILD.mkdir(parents=True, exist_ok=True)
    ensure_demo_image()
    if args.probe_interval != 1:
        # The demo image's probe, less often: 100 containers probed every second
        # (a docker exec each) are more than 2 cores answer in time.
        IMAGE[0] = f"{DEMO_REPOSITORY}-probe{args.probe_interval}s"
        ensure_variant(
            image(),
            f"HEALTHCHECK --interval={args.probe_interval}s --timeout=3s --retries=2 "
            'CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]\n',
        )
    if DOCKERMOD in ways:
        ensure_dockermod()
    ensure_matplotlib()  # before anything is timed: a first run installs it
    leftovers = remove_containers(OWNER_LABEL)
    if leftovers:
        log(f"removed {leftovers} containers left by an earlier run")
    bench = Bench(args.services, args.replicas, args.timeout)
    started = time.monotonic()
    log("saltutil.sync_all (dockerops)")
    bench.minions[OURS].salt_call("saltutil.sync_all")
    startup: dict[str, float] = {}
    for way in (w for w in ways if w in bench.minions):
        startup[way] = statistics.median(bench.minions[way].test_ping() for _ in range(3))
        log(f"Salt start-up ({NAMES[way]}): test.ping {startup[way]:.2f}s (median of 3)")
    load_before = load_average()
    log(f"load average before: {load_before} ({os.cpu_count()} CPUs)")
    deploys: list[Deploy] = []
    try:
        for number in range(1, args.rounds + 1):
            for way in ways:
                if deploys:
                    time.sleep(args.pause)
                deploys.append(bench.deploy(way, number))
    finally:
        remove_containers(OWNER_LABEL)
    saved = {
        "services": args.services,
        "replicas": args.replicas,
        "image": image(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "cpus": os.cpu_count(),
        "salt_startup_seconds": startup,
        "summary": summary(deploys),
        "deploys": [asdict(d) for d in deploys],
    }
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
    show(saved, Path(args.plot))
    log(f"total {time.monotonic() - started:.0f}s; details in {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
