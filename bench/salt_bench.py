"""What the Salt benchmarks share (``noop_highstate.py``, ``first_deploy.py``).

A masterless minion config dir per tool (dockerops' formula or
saltext-dockermod's states), salt-call runs in it, the bench-only installs
(saltext-dockermod, matplotlib), the demo images, the clean-up of the
containers a bench created (by an owner label), and the times at which
containers report healthy (``docker events``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
BUILD = REPO / "build" / "bench"
DOCKERMOD_LIB = BUILD / "dockermod-lib"
PLOT_LIB = BUILD / "plot-lib"
SALT_CALL = str(Path(sys.executable).parent / "salt-call")

DEMO_REPOSITORY = "dockerops/demo-http"
DEMO_TAG = "1.0"
DEMO_IMAGE = f"{DEMO_REPOSITORY}:{DEMO_TAG}"
RESTART_POLICY = "on-failure:5"

OURS = "dockerops"
DOCKERMOD = "dockermod"
# How each tool's container states' keys start in salt-call's return.
STATE_FUNCTION = {OURS: "dockerops_|-", DOCKERMOD: "docker_container_|-"}


def log(message: str) -> None:
    print(message, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def check_docker() -> None:
    if run(["docker", "info"]).returncode != 0:
        raise SystemExit("no Docker daemon answers (scripts/dockerd-up.sh starts one)")


def salt_timeout(containers: int) -> float:
    """Seconds one salt-call may take on a host of ``containers`` (a bound, not a budget).

    Generous: a first converge of 400 containers without parallel states
    takes minutes, a saltext-dockermod no-op run about 6 s per container at 100.
    """
    return max(3600.0, 60.0 * containers)


# -- set-up ---------------------------------------------------------------------


def ensure_demo_image() -> None:
    """Build the demo images (images/build.sh) if ``dockerops/demo-http:1.0`` is missing."""
    if run(["docker", "image", "inspect", DEMO_IMAGE]).returncode != 0:
        log(f"building {DEMO_IMAGE} (images/build.sh)")
        subprocess.run([str(REPO / "images" / "build.sh")], check=True, stdout=subprocess.DEVNULL)


def ensure_variant(image: str, dockerfile_tail: str) -> None:
    """Build ``image`` FROM the demo image plus ``dockerfile_tail``, if missing."""
    if run(["docker", "image", "inspect", image]).returncode == 0:
        return
    ensure_demo_image()
    log(f"building {image} ({DEMO_IMAGE} + {dockerfile_tail.strip()})")
    subprocess.run(
        ["docker", "build", "-q", "-t", image, "-"],
        input=f"FROM {DEMO_IMAGE}\n{dockerfile_tail}",
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def _requirements(name: str) -> list[str]:
    return [
        line.split("#")[0].strip()
        for line in (BENCH_DIR / name).read_text().splitlines()
        if line.split("#")[0].strip()
    ]


def _pip_install(target: Path, wanted: list[str], *extra: str) -> None:
    """Install ``wanted`` into ``target`` once (a stamp file records the requirements)."""
    stamp = target / ".installed"
    if stamp.exists() and stamp.read_text().split() == wanted:
        return
    log(f"installing {' '.join(wanted)} into {target.relative_to(REPO)}")
    shutil.rmtree(target, ignore_errors=True)
    proc = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *extra,
            "--target",
            str(target),
            *wanted,
        ]
    )
    if proc.returncode != 0:
        raise SystemExit(f"installing {' '.join(wanted)} failed:\n{proc.stderr[-4000:]}")
    stamp.write_text("\n".join(wanted) + "\n")


def ensure_dockermod() -> None:
    """bench/requirements.txt into build/bench/dockermod-lib, without dependencies
    (salt and docker are .venv's); put on PYTHONPATH only for dockermod's salt-calls."""
    _pip_install(DOCKERMOD_LIB, _requirements("requirements.txt"), "--no-deps")


def ensure_matplotlib() -> Any:
    """matplotlib (bench/requirements-plot.txt) from build/bench/plot-lib, installed once;
    the same directory and stamp as bench/backup.py's."""
    _pip_install(PLOT_LIB, _requirements("requirements-plot.txt"))
    # Appended: .venv's own packages win where both have one.
    if str(PLOT_LIB) not in sys.path:
        sys.path.append(str(PLOT_LIB))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- containers -----------------------------------------------------------------


def remove_containers(label_key: str, value: str | None = None) -> int:
    """Remove the containers carrying ``label_key`` (with ``value``, if given)."""
    label = f"{label_key}={value}" if value else label_key
    ids = run(["docker", "ps", "-aq", "--filter", f"label={label}"]).stdout.split()
    for start in range(0, len(ids), 50):
        run(["docker", "rm", "-f", *ids[start : start + 50]])
    return len(ids)


def count_containers(label_key: str, value: str, *filters: str) -> int:
    """Containers labelled ``label_key=value`` that match docker ps ``filters``
    (e.g. ``status=running``, ``health=healthy``)."""
    cmd = ["docker", "ps", "-aq", "--filter", f"label={label_key}={value}"]
    for extra in filters:
        cmd += ["--filter", extra]
    return len(run(cmd).stdout.split())


def service_env(service: str) -> dict[str, str]:
    return {"GREETING": "hello", "SERVICE": service}


def dockerops_pillar(
    services: dict[str, int], repository: str, tag: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The ``dockerops`` pillar of ``services`` (name: replicas), all from one image."""
    return {
        "dockerops": {
            "environment": "bench",
            "defaults": {"restart_policy": RESTART_POLICY},
            "services": {
                name: {
                    "image": repository,
                    "tag": tag,
                    "replicas": replicas,
                    "env": service_env(name),
                    "labels": dict(labels),
                }
                for name, replicas in services.items()
            },
        }
    }


def dockermod_sls(
    services: dict[str, int],
    container_name: Callable[[str, int], str],
    image: str,
    labels: dict[str, str],
) -> dict[str, Any]:
    """One ``docker_container.running`` state per container of ``services``, with the
    arguments a Salt user would write (everything else at its default)."""
    sls: dict[str, Any] = {}
    for service, replicas in services.items():
        for index in range(1, replicas + 1):
            name = container_name(service, index)
            sls[name] = {
                "docker_container.running": [
                    {"name": name},
                    {"image": image},
                    {"environment": service_env(service)},
                    {"restart_policy": RESTART_POLICY},
                    {"labels": dict(labels)},
                ]
            }
    return sls


# -- masterless minions ---------------------------------------------------------


@dataclass
class MinionDir:
    """A masterless minion config dir (``salt-call -c root --local``) for one tool.

    dockerops: ``file_roots`` is a ``states/`` dir (the top file) and the
    repository's ``salt/`` (the formula, and links to ``_modules``, ``_states``
    and ``_utils`` that ``saltutil.sync_all`` brings), never the repository root
    (a file list of ``.venv`` would slow every salt-call). saltext-dockermod:
    ``states/`` only, with a ``bench.sls``.
    """

    tool: str
    root: Path
    timeout: float = 3600.0
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = self.root / "state"

    def write(self, pillar: dict[str, Any], sls: dict[str, Any] | None = None) -> None:
        states = self.root / "states"
        pillar_dir = self.root / "pillar"
        states.mkdir(parents=True, exist_ok=True)
        pillar_dir.mkdir(parents=True, exist_ok=True)
        file_roots = [str(states)]
        config: dict[str, Any] = {
            "id": f"bench-{self.tool}",
            "file_client": "local",
            "root_dir": str(self.root / "root"),
            "pillar_roots": {"base": [str(pillar_dir)]},
            "log_level_logfile": "warning",
        }
        if self.tool == OURS:
            file_roots.append(str(REPO / "salt"))
            config["dockerops.state_dir"] = str(self.state_dir)
            top = "dockerops"
        else:
            top = "bench"
            (states / "bench.sls").write_text(yaml.safe_dump(sls or {}, sort_keys=False))
        config["file_roots"] = {"base": file_roots}
        (self.root / "minion").write_text(yaml.safe_dump(config))
        (states / "top.sls").write_text(yaml.safe_dump({"base": {"*": [top]}}))
        (pillar_dir / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["bench"]}}))
        (pillar_dir / "bench.sls").write_text(yaml.safe_dump(pillar, sort_keys=False))

    def salt_call(self, *args: str, profile: Path | None = None) -> tuple[Any, float]:
        """Run salt-call in this dir; return its ``local`` data and wall seconds.

        With ``profile``, salt-call runs under cProfile, its stats written there.
        """
        env = dict(os.environ)
        if self.tool == DOCKERMOD:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(DOCKERMOD_LIB), env.get("PYTHONPATH")) if p
            )
        profiler = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else []
        cmd = [
            *profiler,
            SALT_CALL,
            "-c",
            str(self.root),
            "--local",
            "--out=json",
            "--log-level=error",
            *args,
        ]
        started = time.monotonic()
        try:
            proc = run(cmd, env=env, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(
                f"salt-call {' '.join(args)} in {self.root} outlasted {self.timeout:.0f}s"
            ) from None
        wall = time.monotonic() - started
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(
                f"salt-call {' '.join(args)} in {self.root} failed "
                f"(exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            ) from None
        return data, wall

    def highstate(self, profile: Path | None = None) -> tuple[dict[str, Any], float]:
        """``state.apply`` (the top file); every state must succeed."""
        data, wall = self.salt_call("state.apply", profile=profile)
        if not isinstance(data, dict):
            raise SystemExit(f"{self.root.name}: highstate failed: {data}")
        failed = {k: v.get("comment") for k, v in data.items() if v.get("result") is not True}
        if failed:
            raise SystemExit(f"{self.root.name}: states failed: {failed}")
        return data, wall

    def test_ping(self) -> float:
        """Wall seconds of ``salt-call --local test.ping`` here: Salt's own start-up
        (interpreter, imports, grains, pillar, loader) and exit, doing nothing."""
        data, wall = self.salt_call("test.ping")
        if data is not True:
            raise SystemExit(f"{self.root.name}: test.ping returned {data!r}")
        return wall


@dataclass(frozen=True)
class StateTimes:
    """The ``duration`` (ms) Salt reports for each state of one highstate."""

    containers: list[
        float
    ]  # the tool's container states (dockerops.running / docker_container.running)
    others: list[float]  # every other state of the highstate
    changed: bool  # whether any state reported changes


def state_times(data: dict[str, Any], tool: str) -> StateTimes:
    prefix = STATE_FUNCTION[tool]
    ours, others = [], []
    for key, value in data.items():
        duration = float(value.get("duration") or 0.0)
        if key.startswith(prefix) and key.endswith("_|-running"):
            ours.append(duration)
        else:
            others.append(duration)
    return StateTimes(ours, others, any(v.get("changes") for v in data.values()))


# -- health ---------------------------------------------------------------------


class HealthEvents:
    """When each container labelled ``label_key=value`` first reported healthy.

    Reads ``docker events`` (``health_status`` events) from ``since`` (a
    ``time.time()``) in a thread; the subscription replays from ``since``, so no
    event between the start and the subscription is lost. Times are the
    daemon's (same host clock), in seconds since the epoch.
    """

    def __init__(self, label_key: str, value: str, since: float) -> None:
        self.healthy: dict[str, float] = {}
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [
                "docker",
                "events",
                "--since",
                f"{since:.6f}",
                "--filter",
                "type=container",
                "--filter",
                "event=health_status",
                "--filter",
                f"label={label_key}={value}",
                "--format",
                "{{json .}}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("Action", event.get("status", "")).strip() != "health_status: healthy":
                continue
            name = (event.get("Actor") or {}).get("Attributes", {}).get("name", event.get("id"))
            with self._lock:
                self.healthy.setdefault(name, int(event["timeNano"]) / 1e9)

    def count(self) -> int:
        with self._lock:
            return len(self.healthy)

    def wait(self, expected: int, timeout: float, poll: float = 0.1) -> bool:
        """Wait (at most ``timeout`` seconds) until ``expected`` containers were healthy."""
        deadline = time.monotonic() + timeout
        while self.count() < expected:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def last(self) -> float | None:
        """When the last of them became healthy (epoch seconds)."""
        with self._lock:
            return max(self.healthy.values()) if self.healthy else None

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._reader.join(timeout=5)
