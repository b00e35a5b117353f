"""Rolling updates killed at random moments, then run again: each must end
proven-healthy (every replica on the new version, healthy) or failed (every
replica back on the old one), never "success" on an unproven replica.

Per round: a 2-replica service on dockerops/demo-http:1.0 (``make demo`` or
``images/build.sh`` builds the images), order start-first or stop-first, target
1.1 (good) or broken (never healthy), both drawn at random; ``salt-call
dockerops.rolling_update`` is SIGKILLed after a random 0.2-7 s (or ends first),
then the same call runs again and its result and the containers are judged.
Uses the main Docker daemon, host ports 24100-24103 on 127.0.0.1, and a
masterless minion under build/kill-rollouts; removes its containers at the end.

    .venv/bin/python bench/kill_rollouts.py [--seed 7] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.salt import SALT_CALL, Masterless  # noqa: E402

SERVICE = "killrollouts"
PORT = 24100


def pillar(order: str) -> dict[str, Any]:
    service = {
        "image": "dockerops/demo-http",
        "tag": "1.0",
        "replicas": 2,
        "ports": [{"container": 8080, "host": PORT}],
        "update": {"order": order, "health_timeout": "15s"},
    }
    return {"dockerops": {"environment": "integration", "services": {SERVICE: service}}}


def containers(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"io.dockerops.service={SERVICE}"})


def live(client: docker.DockerClient) -> list[tuple[str, str, str, str | None]]:
    return sorted(
        (
            c.name,
            c.labels["io.dockerops.image"].rpartition(":")[2],
            c.status,
            (c.attrs["State"].get("Health") or {}).get("Status"),
        )
        for c in containers(client)
    )


def judge(result: Any, target: str, after: list[tuple[str, str, str, str | None]]) -> bool:
    running = [c for c in after if c[2] == "running"]
    if result is True:
        return (
            target != "broken"
            and len(running) == 2
            and all(c[1] == target and c[3] == "healthy" for c in running)
        )
    if result is False:
        return target == "broken" and len(running) == 2 and all(c[1] == "1.0" for c in running)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = REPO / "build" / "kill-rollouts"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    minion = Masterless(
        root,
        "int-kill-rollouts",
        "unix:///var/run/docker.sock",
        **{"dockerops.state_dir": str(root / "state")},
    )
    if minion.run("saltutil.sync_all").returncode != 0:
        raise SystemExit("saltutil.sync_all failed")
    client = docker.from_env()
    bad = 0
    try:
        for number in range(1, args.rounds + 1):
            order = rng.choice(["start-first", "stop-first"])
            target = rng.choice(["1.1", "broken"])
            delay = rng.uniform(0.2, 7)
            for container in containers(client):
                container.remove(force=True)
            minion.set_pillar(pillar(order))
            first = minion.run("dockerops.apply", SERVICE)
            if first.returncode != 0:
                raise SystemExit(f"the service did not start on 1.0: {first.stdout}")
            call = [SALT_CALL, "-c", str(root), "--local", "--out=json"]
            call += ["dockerops.rolling_update", SERVICE, f"tag={target}"]
            proc = subprocess.Popen(
                call, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            time.sleep(delay)
            killed = proc.poll() is None
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            left = live(client)
            again = minion.run("dockerops.rolling_update", SERVICE, f"tag={target}")
            result = again.data.get("result") if isinstance(again.data, dict) else None
            after = live(client)
            ok = judge(result, target, after)
            bad += not ok
            when = f"killed at {delay:.1f}s" if killed else f"ended before {delay:.1f}s"
            print(
                f"{number}: {order} 1.0 -> {target}, {when}; left {left}; "
                f"next run result={result}, then {after}: {'OK' if ok else 'BAD'}",
                flush=True,
            )
    finally:
        for container in containers(client):
            container.remove(force=True)
        client.close()
    print(f"{args.rounds - bad} of {args.rounds} rounds ended proven-healthy or failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
