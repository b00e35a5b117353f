"""The Docker list call dockerops makes per service, against the host's container count.

``dockerops.running`` asks the daemon once per service for the containers with
label ``io.dockerops.service=<name>``. The daemon has no label index: it walks
every container on the host to answer, so the call's latency grows with the
host's containers even when the answer is empty. This measures that call (the
same docker-py ``containers(all=True, filters=...)``) with 0..K extra containers
on the host (created, never started: they cost no CPU while measuring).

    .venv/bin/python bench/list_call.py [--counts 0,20,100,200] [--calls 100]

Run it after bench/noop_highstate.py has built the bench image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import docker

IMAGE = "dockerops/demo-http-bench:1.0"
OWNER_LABEL = "dockerops-bench"
OWNER = "list-call"
FILTER = {"label": "io.dockerops.service=bench-list-call-absent"}


def remove_all(api: docker.APIClient) -> None:
    for entry in api.containers(all=True, filters={"label": f"{OWNER_LABEL}={OWNER}"}):
        api.remove_container(entry["Id"], force=True)


def timed_calls(api: docker.APIClient, calls: int) -> list[float]:
    api.containers(all=True, filters=FILTER)  # warm the connection
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        api.containers(all=True, filters=FILTER)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="0,20,100,200", help="extra containers on the host")
    parser.add_argument("--calls", type=int, default=100, help="list calls timed per count")
    args = parser.parse_args(argv)
    counts = sorted(int(c) for c in args.counts.split(","))
    api = docker.APIClient(version="auto")
    api.inspect_image(IMAGE)
    remove_all(api)
    created = 0
    print("| containers on the host | list call median ms | p10 ms | p90 ms |")
    print("|---:|---:|---:|---:|")
    try:
        for count in counts:
            while created < count:
                api.create_container(
                    IMAGE,
                    name=f"bench-list-call-{created + 1:04d}",
                    labels={OWNER_LABEL: OWNER},
                )
                created += 1
            on_host = len(api.containers(all=True))
            samples = sorted(timed_calls(api, args.calls))
            deciles = statistics.quantiles(samples, n=10)
            print(
                f"| {on_host} | {statistics.median(samples):.2f} "
                f"| {deciles[0]:.2f} | {deciles[-1]:.2f} |",
                flush=True,
            )
    finally:
        remove_all(api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
