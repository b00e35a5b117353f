"""Fleet rollouts: time over minions and batch size, and Salt's dispatch overhead.

A real salt-master and up to 4 salt-minions (daemons started by this script
from generated configs under /var/tmp/dops-fleet), each minion managing its own
isolated dockerd (tests/support/dockerd.py, numbers 10-13, bridges
dopbr10..13; never the machine's main daemon). The master's file_roots is the
repository's ``salt/``; minions and master get dockerops by
``saltutil.sync_all``, as an operator would deploy it.

Service ``web``: 2 replicas per minion of ``dockerops/demo-http`` (built into
each daemon by images/build.sh: HEALTHCHECK every 1 s, 2 retries),
start-first, parallelism 1, ports on 127.0.0.1 only. For each fleet size
(1, 2, 4 minions) and batch size (1, 2, all) the fleet is rolled 1.0 -> 1.1 ->
1.0 with ``salt-run dockerops.rolling_update web tgt=<minions> tgt_type=list
batch=<b> canary=0 tag=<t>``, unchanged.

Per rollout: salt-run's wall time and the runner job's, and per batch, from the
master's event bus (``salt/job/<jid>/new`` and ``.../ret/<minion>`` stamps of
the jobs the runner publishes): the runner's progress lines, the status check
before the batch, the batch's ``dockerops.rolling_update`` job, and each
minion's own rollout duration from ``dockerops.history`` (by the job's jid, or,
for an entry without one, by time and version). Dispatch overhead
per batch = (the last return of the runner's previous step -> the batch's last
return) - the slowest minion's own rollout in that batch. A sampler counts
healthy replicas over the fleet every 200 ms (with a timeline of each
minion's counts), and the daemons' ``unhealthy``/``die`` events are counted.
Baselines: ``test.ping`` and ``dockerops.status`` round trips (LocalClient, as
the runner calls them), ``salt ... test.ping`` and ``salt-run test.arg`` wall
times, and the runner under ``test=True``.

    .venv/bin/python bench/fleet.py [--minions 1,2,4] [--batches 1,2,all] [--rounds 1]
                                    [--no-baseline] [--json build/bench/fleet.json]

Run from the repository root, as root. Everything it starts is stopped at the
end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dockerd import ExtraDaemon  # noqa: E402

BASE = Path("/var/tmp/dops-fleet")
FIRST_DAEMON = 10  # dopbr10..13: the test suite and the other benches use 1-8
MAX_MINIONS = 4
IMAGE = "dockerops/demo-http"
REPLICAS = 2
PORT_BASE = 17100  # minion i publishes PORT_BASE + 10 i .. + 2 (2 replicas, 1 spare slot)
LABEL = "io.dockerops.service=web"
SALT_BIN = Path(sys.executable).parent
WAIT_LIMIT = 180.0  # no single wait in this script runs longer
EVENT_LOG_LIMIT = 4 * 3600.0
BASELINE_CALLS = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def minion_id(index: int) -> str:
    return f"flt-m{index + 1}"


def wait_for(what: str, check: Callable[[], bool], limit: float = WAIT_LIMIT) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"{what}: not within {limit:g}s")
        time.sleep(0.2)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stamp(data: dict[str, Any], received: float) -> float:
    """An event's ``_stamp`` (UTC, set by the process that fired it) as epoch seconds."""
    try:
        when = datetime.datetime.fromisoformat(str(data["_stamp"]))
    except (KeyError, ValueError):
        return received
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


# -- the master's event bus --------------------------------------------------


class EventLog:
    """Every event on the master's bus, with its stamp, collected by a thread."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: str | None = None

    def _run(self) -> None:
        import salt.utils.event

        try:
            bus = salt.utils.event.get_master_event(self.opts, self.opts["sock_dir"], listen=True)
            bus.subscribe("")
        except Exception as err:  # reported by start()
            self.error = f"{type(err).__name__}: {err}"
            self._ready.set()
            return
        self._ready.set()
        deadline = time.monotonic() + EVENT_LOG_LIMIT
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                event = bus.get_event(wait=0.5, full=True)
                if not event or not isinstance(event.get("data"), dict):
                    continue
                received = time.time()
                with self._lock:
                    self.events.append(
                        (stamp(event["data"], received), event["tag"], event["data"])
                    )
        finally:
            bus.destroy()

    def start(self) -> EventLog:
        self._thread.start()
        self._ready.wait(30)
        if self.error:
            raise RuntimeError(f"master event bus: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def since(self, t0: float) -> list[tuple[float, str, dict[str, Any]]]:
        with self._lock:
            return sorted(e for e in self.events if e[0] >= t0)

    def first(self, t0: float, test: Callable[[str, dict[str, Any]], bool]) -> Any:
        return next(((w, t, d) for w, t, d in self.since(t0) if test(t, d)), None)


# -- capacity sampler --------------------------------------------------------


class Sampler:
    """Healthy running ``web`` replicas summed over the fleet's daemons, every 200 ms.

    ``timeline`` keeps each change of the per-minion (healthy, unhealthy,
    running) counts, with seconds since the start, to explain any dip.
    """

    def __init__(self, daemons: list[ExtraDaemon], interval: float = 0.2) -> None:
        self.apis = [docker.APIClient(base_url=d.url, version="auto", timeout=10) for d in daemons]
        self.interval = interval
        self.counts: list[int] = []
        self.timeline: list[tuple[float, list[tuple[int, int, int]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        deadline = started + WAIT_LIMIT * 3
        while not self._stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a lost sample is no capacity drop
                per_minion = [health_counts(api) for api in self.apis]
                self.counts.append(sum(h for h, _u, _r in per_minion))
                if not self.timeline or self.timeline[-1][1] != per_minion:
                    self.timeline.append((round(time.monotonic() - started, 2), per_minion))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for api in self.apis:
            api.close()

    @property
    def minimum(self) -> int | None:
        return min(self.counts) if self.counts else None


def health_counts(api: docker.APIClient) -> tuple[int, int, int]:
    """(healthy, unhealthy, running) ``web`` containers on one daemon."""
    found = api.containers(filters={"label": LABEL, "status": "running"})
    states = [str(c.get("Status", "")) for c in found]
    return (
        sum("(healthy)" in s for s in states),
        sum("(unhealthy)" in s for s in states),
        len(states),
    )


def health_events(daemons: list[ExtraDaemon], t0: float, t1: float) -> list[dict[str, int]]:
    """Per daemon, how many ``health_status: unhealthy`` and ``die`` events came in [t0, t1]."""
    out = []
    for daemon in daemons:
        api = docker.APIClient(base_url=daemon.url, version="auto", timeout=30)
        try:
            stream = api.events(
                since=int(t0) - 1, until=int(t1) + 2, filters={"type": "container"}, decode=True
            )
            actions = [e["Action"] for e in stream if t0 <= e["timeNano"] / 1e9 <= t1 + 1]
        finally:
            api.close()
        out.append(
            {
                "unhealthy": actions.count("health_status: unhealthy"),
                "die": actions.count("die"),
            }
        )
    return out


def healthy(api: docker.APIClient, image: str | None = None) -> int:
    found = api.containers(filters={"label": LABEL, "health": "healthy", "status": "running"})
    return sum(1 for c in found if image is None or c["Image"] == image)


# -- Salt master and minions ---------------------------------------------------


class Fleet:
    """A salt-master and its minions, as daemons with configs under ``BASE``."""

    def __init__(self, daemons: list[ExtraDaemon]) -> None:
        self.daemons = daemons
        self.minions = [minion_id(i) for i in range(len(daemons))]
        self.master_dir = BASE / "master"
        self.pillar_dir = BASE / "pillar"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ret_port = free_port()
        self.publish_port = next(p for p in (free_port() for _ in range(20)) if p != self.ret_port)
        self.opts: dict[str, Any] = {}
        self.client: Any = None

    # configs

    def write_configs(self) -> None:
        self.master_dir.mkdir(parents=True, exist_ok=True)
        master = {
            "root_dir": str(self.master_dir),
            "interface": "127.0.0.1",
            "publish_port": self.publish_port,
            "ret_port": self.ret_port,
            "user": "root",
            "auto_accept": True,
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": [str(self.pillar_dir)]},
            "log_file": str(self.master_dir / "master.log"),
            "log_level_logfile": "info",
        }
        (self.master_dir / "master").write_text(yaml.safe_dump(master))
        for index, (mid, daemon) in enumerate(zip(self.minions, self.daemons, strict=True)):
            root = BASE / mid
            root.mkdir(parents=True, exist_ok=True)
            minion = {
                "id": mid,
                "root_dir": str(root),
                "master": "127.0.0.1",
                "master_port": self.ret_port,
                "publish_port": self.publish_port,
                "user": "root",
                "log_file": str(root / "minion.log"),
                "log_level_logfile": "info",
                "dockerops.docker_url": daemon.url,
                # Minions share this machine's disk: each gets its own records.
                "dockerops.state_dir": str(root / "state"),
            }
            (root / "minion").write_text(yaml.safe_dump(minion))
            self.write_pillar(index, mid)
        top = {"base": {mid: [mid.replace("-", "_")] for mid in self.minions}}
        (self.pillar_dir / "top.sls").write_text(yaml.safe_dump(top))

    def write_pillar(self, index: int, mid: str) -> None:
        self.pillar_dir.mkdir(parents=True, exist_ok=True)
        port = PORT_BASE + 10 * index
        busy = [p for p in range(port, port + REPLICAS + 1) if not port_free(p)]
        if busy:
            raise RuntimeError(f"{mid}: host ports {busy} on 127.0.0.1 are taken")
        service = {
            "image": IMAGE,
            "tag": "1.0",
            "replicas": REPLICAS,
            "ports": [{"container": 8080, "host": port, "host_ip": "127.0.0.1"}],
            "update": {
                "parallelism": 1,
                "order": "start-first",
                "health_timeout": "20s",
                "rollback": True,
            },
        }
        data = {"dockerops": {"environment": "bench", "services": {"web": service}}}
        (self.pillar_dir / f"{mid.replace('-', '_')}.sls").write_text(
            "#!yaml\n" + yaml.safe_dump(data)
        )

    # processes

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(BASE / f"{name}.out", "wb")  # noqa: SIM115 - owned by the process
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=BASE, start_new_session=True
        )
        record = {n: p.pid for n, p in self.procs.items()}
        (BASE / "salt-pids.json").write_text(json.dumps(record))

    def start(self) -> None:
        import salt.client
        import salt.config
        import salt.exceptions

        self.write_configs()
        self._spawn("master", [str(SALT_BIN / "salt-master"), "-c", str(self.master_dir)])
        self.opts = salt.config.master_config(str(self.master_dir / "master"))
        pub = Path(self.opts["sock_dir"]) / "master_event_pub.ipc"
        wait_for("salt-master up", lambda: self._alive("master") and pub.exists(), 120)
        for mid in self.minions:
            self._spawn(mid, [str(SALT_BIN / "salt-minion"), "-c", str(BASE / mid)])
        self.client = salt.client.LocalClient(str(self.master_dir / "master"))

        def all_answer() -> bool:
            for name in self.procs:
                self._alive(name)
            try:
                found = self.client.cmd(self.minions, "test.ping", tgt_type="list", timeout=5)
            except salt.exceptions.SaltClientError:  # the master is still starting
                return False
            return set(found or {}) == set(self.minions)

        took = wait_for("minions answering test.ping", all_answer, 180)
        log(f"salt: master and {len(self.minions)} minions up ({took:.1f}s after the master)")
        synced = self.client.cmd(
            self.minions, "saltutil.sync_all", tgt_type="list", timeout=180, full_return=True
        )
        bad = {m: r for m, r in (synced or {}).items() if r.get("retcode")}
        if set(synced or {}) != set(self.minions) or bad:
            raise RuntimeError(f"saltutil.sync_all on the minions: {synced}")
        run = self.salt_run("saltutil.sync_all")
        if run.returncode:
            raise RuntimeError(f"salt-run saltutil.sync_all: {run.stdout}{run.stderr}")
        self.client.cmd(
            self.minions, "saltutil.refresh_pillar", ["wait=True"], tgt_type="list", timeout=60
        )

    def _alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (BASE / f"{name}.out").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
        return True

    def salt_run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SALT_BIN / "salt-run"), "-c", str(self.master_dir), "--out=json", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=BASE,
            check=False,
        )

    def salt(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SALT_BIN / "salt"), "-c", str(self.master_dir), "--out=json", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=BASE,
            check=False,
        )

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.destroy()
        # Minions first, then the master; each is the leader of its own process
        # group (start_new_session), which holds its workers and job processes.
        order = [n for n in self.procs if n != "master"] + (
            ["master"] if "master" in self.procs else []
        )
        for name in order:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.procs[name].pid, signal.SIGTERM)
        for name in order:
            proc = self.procs[name]
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Anything left in the group (a job process) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def clean_stale() -> None:
    """Stop what an interrupted earlier run of this script left under ``BASE``."""
    if not BASE.exists():
        return
    record = BASE / "salt-pids.json"
    pids = list(json.loads(record.read_text()).values()) if record.exists() else []
    for pid_file in BASE.glob("host*/dockerd.pid"):
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(pid_file.read_text()))
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(BASE) in cmdline:  # still ours: a salt daemon or dockerd of that run
            log(f"stopping pid {pid} left by an earlier run")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    time.sleep(1)
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(BASE))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(BASE, ignore_errors=True)


def build_images(url: str) -> None:
    env = {**os.environ, "DOCKER_HOST": url}
    subprocess.run([str(REPO / "images" / "build.sh")], env=env, check=True, timeout=300)


# -- baselines -----------------------------------------------------------------


def timed(times: int, call: Callable[[], Any], check: Callable[[Any], bool]) -> list[float]:
    """Wall times of ``times`` calls; each answer must pass ``check``."""
    walls = []
    for _ in range(times):
        t0 = time.monotonic()
        out = call()
        walls.append(round(time.monotonic() - t0, 4))
        if not check(out):
            raise RuntimeError(f"baseline call failed: {out}")
    return walls


def answered_by(members: list[str], ret: Any) -> bool:
    return set(ret or {}) == set(members)


def succeeded(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == 0


def baselines(fleet: Fleet, events: EventLog, sizes: list[int]) -> dict[str, Any]:
    """Salt's own round trips, to compare the per-batch overhead with."""
    out: dict[str, Any] = {}
    for size in sizes:
        members = fleet.minions[:size]
        row: dict[str, Any] = {}
        for fun, arg in (("test.ping", []), ("dockerops.status", ["web"])):
            call = partial(fleet.client.cmd, members, fun, arg, tgt_type="list", timeout=60)
            walls = timed(BASELINE_CALLS, call, partial(answered_by, members))
            row[f"localclient_{fun}"] = {"median": median(walls), "all": walls}
        ping = partial(fleet.salt, "-L", ",".join(members), "test.ping")
        walls = timed(3, ping, succeeded)
        row["salt_cli_test.ping"] = {"median": median(walls), "all": walls}
        plan = partial(
            fleet.salt_run,
            "dockerops.rolling_update",
            "web",
            f"tgt={','.join(members)}",
            "tgt_type=list",
            "test=True",
        )
        walls, jobs = [], []
        for _ in range(2):
            t0 = time.time()
            walls += timed(1, plan, succeeded)
            jobs.append(runner_job_time(events, t0, "runner.dockerops.rolling_update"))
        row["salt_run_rolling_update_test"] = {
            "median": median(walls),
            "all": walls,
            "runner_job": jobs,
        }
        out[str(size)] = row
        log(f"baseline, {size} minion(s): {json.dumps({k: v['median'] for k, v in row.items()})}")
    walls, jobs = [], []
    for _ in range(3):
        t0 = time.time()
        walls += timed(1, partial(fleet.salt_run, "test.arg", "x"), succeeded)
        jobs.append(runner_job_time(events, t0, "runner.test.arg"))
    out["salt_run_test.arg"] = {"median": median(walls), "all": walls, "runner_job": jobs}
    log(f"baseline: salt-run test.arg {out['salt_run_test.arg']['median']}s")
    return out


def runner_job_time(events: EventLog, t0: float, fun: str) -> float | None:
    """A runner job's own time on the bus: ``salt/run/<jid>/new`` -> ``.../ret``."""
    time.sleep(0.3)  # the ret event may trail the process' exit
    new = events.first(t0, lambda t, d: t.endswith("/new") and d.get("fun") == fun)
    if new is None:
        return None
    jid = new[2].get("jid")
    ret = events.first(t0, lambda t, d: t == f"salt/run/{jid}/ret")
    return round(ret[0] - new[0], 3) if ret else None


# -- one fleet rollout ---------------------------------------------------------


def history(fleet: Fleet, members: list[str]) -> dict[str, list[dict[str, Any]]]:
    ret = fleet.client.cmd(
        members, "dockerops.history", ["web", "limit=20"], tgt_type="list", timeout=60
    )
    return {m: r for m, r in (ret or {}).items() if isinstance(r, list)}


def history_entry(
    entries: list[dict[str, Any]], jid: str, image: str, t0: float
) -> dict[str, Any] | None:
    """This rollout's entry in a minion's ``dockerops.history`` (newest first).

    By the job's jid when the entry has one; else the newest entry to ``image``
    that started after ``t0`` (``when`` has one-second resolution): the bench
    runs one rollout at a time and each minion is in one batch of it.
    """
    for entry in entries:
        if entry.get("jid") == jid:
            return entry
    for entry in entries:
        try:
            when = datetime.datetime.strptime(entry["when"], "%Y-%m-%dT%H:%M:%SZ")
        except (KeyError, ValueError):
            continue
        started = when.replace(tzinfo=datetime.UTC).timestamp()
        if entry.get("to") == image and started >= int(t0) - 1:
            return entry
        break  # newest first: older entries belong to earlier rollouts
    return None


def rollout(
    fleet: Fleet, events: EventLog, members: list[str], batch: int, tag: str
) -> dict[str, Any]:
    daemons = fleet.daemons[: len(members)]
    args = [
        "dockerops.rolling_update",
        "web",
        f"tgt={','.join(members)}",
        "tgt_type=list",
        f"batch={batch}",
        "canary=0",
        f"tag={tag}",
    ]
    with Sampler(daemons) as sampler:
        t0 = time.time()
        proc = fleet.salt_run(*args)
        t1 = time.time()
    if proc.returncode:
        raise RuntimeError(f"salt-run {' '.join(args)}: rc {proc.returncode}\n{proc.stdout}")
    time.sleep(0.5)  # let trailing events (the runner's ret) arrive
    seen = events.since(t0 - 1)
    new = next(
        (e for e in seen if e[1].endswith("/new") and e[2].get("fun") == f"runner.{args[0]}"),
        None,
    )
    if new is None:
        raise RuntimeError("the runner's salt/run/<jid>/new event was not seen")
    run_jid = new[2]["jid"]
    ret = next((e for e in seen if e[1] == f"salt/run/{run_jid}/ret"), None)
    end = ret[0] if ret else t1
    summary = (ret[2].get("return") if ret else None) or {}
    progress = [d.get("message") for _w, t, d in seen if t == f"salt/run/{run_jid}/progress"]
    jobs = runner_jobs(seen, new[0], end)
    hist = history(fleet, members)
    image = f"{IMAGE}:{tag}"
    # jobs: the plan (dockerops.status, then each minion's own plan,
    # dockerops.rolling_update test=True), then per batch dockerops.status (the
    # check) and dockerops.rolling_update (the batch).
    rest = list(jobs)
    plan_status = rest.pop(0) if rest and rest[0]["fun"] == "dockerops.status" else None
    plan_preview = rest.pop(0) if rest and is_preview(rest[0]) else None
    plan_end = plan_preview or plan_status
    previous_end = plan_end["last"] if plan_end else new[0]
    check = None
    batches = []
    for job in rest:
        if job["fun"] == "dockerops.status":
            check = job
            continue
        batches.append(batch_row(job, check, previous_end, hist, image, t0, summary))
        previous_end = job["last"] or previous_end
        check = None
    runner_healthy = []
    for message in progress:
        text = str(message or "")
        if " healthy, floor " in text:
            with contextlib.suppress(ValueError, IndexError):
                runner_healthy.append(int(text.rsplit("(", 1)[1].split()[0]))
    row: dict[str, Any] = {
        "members": members,
        "batch": batch,
        "to": tag,
        "result": summary.get("result"),
        "salt_run_wall": round(t1 - t0, 3),
        "runner_job": round(end - new[0], 3) if ret else None,
        "sum_host": round(sum(sum(b["host_durations"].values()) for b in batches), 3),
        "sum_slowest": round(sum(b["slowest"] or 0 for b in batches), 3),
        "batches": batches,
        "min_healthy": sampler.minimum,
        "health_timeline": sampler.timeline,
        "health_events": health_events(fleet.daemons[: len(members)], t0, t1),
        "runner_healthy_before_batches": runner_healthy,
        "progress": progress,
        "summary_minions": summary.get("minions"),
        "history_jids": {m: [e.get("jid") for e in entries[:1]] for m, entries in hist.items()},
    }
    if plan_status and plan_status["last"]:
        row["before_plan_status"] = round(plan_status["published"] - new[0], 3)
        row["plan_status"] = round(plan_status["last"] - plan_status["published"], 3)
    if plan_preview and plan_preview["last"]:
        row["plan_preview"] = round(plan_preview["last"] - plan_preview["published"], 3)
    if ret and batches and previous_end:
        row["after_last_batch"] = round(end - previous_end, 3)
    return row


def is_preview(job: dict[str, Any]) -> bool:
    """The runner's planning call: ``dockerops.rolling_update ... test=True``."""
    if job["fun"] != "dockerops.rolling_update":
        return False
    text = str(job.get("arg"))
    return "test=True" in text or "'test': True" in text


def runner_jobs(
    seen: list[tuple[float, str, dict[str, Any]]], begin: float, end: float
) -> list[dict[str, Any]]:
    """The dockerops jobs published during the runner job, in order, with their returns."""
    jobs = []
    for when, tag, data in seen:
        if not (begin <= when <= end and tag.startswith("salt/job/") and tag.endswith("/new")):
            continue
        if data.get("fun") not in ("dockerops.status", "dockerops.rolling_update"):
            continue
        jid, minions = data["jid"], sorted(data.get("minions", []))
        returns = {
            t.rsplit("/", 1)[1]: w for w, t, _d in seen if t.startswith(f"salt/job/{jid}/ret/")
        }
        # dockerops/rollout/web/<stage> events, fired by the minions through the master
        done = {
            d["id"]: w
            for w, t, d in seen
            if t == "dockerops/rollout/web/done" and d.get("id") in minions and when <= w <= end
        }
        jobs.append(
            {
                "jid": jid,
                "fun": data["fun"],
                "arg": data.get("arg"),
                "minions": minions,
                "published": when,
                "returns": returns,
                "last": max(returns.values()) if returns else None,
                "done_events": done,
            }
        )
    return jobs


def batch_row(
    job: dict[str, Any],
    check: dict[str, Any] | None,
    begin: float,
    hist: dict[str, list[dict[str, Any]]],
    image: str,
    t0: float,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """One batch: from the end of the runner's previous step to the batch's last return.

    ``begin`` is the last return of the job before this batch's status check
    (the plan's status, or the previous batch), so the runner's progress lines,
    the check and the dispatch all count; ``overhead_s`` is that wall time
    minus the slowest minion's own rollout (its ``dockerops.history`` duration).
    """
    durations, to_start, back = {}, {}, {}
    for minion in job["minions"]:
        entry = history_entry(hist.get(minion, []), job["jid"], image, t0)
        if entry is not None:
            durations[minion] = entry["duration"]
        done = job["done_events"].get(minion)
        returned = job["returns"].get(minion)
        if done is not None and minion in durations:
            # The history's clock starts before the lock, and ``done`` is fired
            # right after the history entry is written.
            to_start[minion] = round(done - durations[minion] - job["published"], 3)
        if done is not None and returned is not None:
            back[minion] = round(returned - done, 3)
    last, slowest = job["last"], max(durations.values()) if durations else None
    row: dict[str, Any] = {
        "minions": job["minions"],
        "jid": job["jid"],
        "host_durations": durations,
        "slowest": slowest,
        "before_check_s": round(check["published"] - begin, 3) if check else None,
        "check_s": round(job["published"] - check["published"], 3) if check else None,
        "job_wall_s": round(last - job["published"], 3) if last else None,
        "batch_wall_s": round(last - begin, 3) if last else None,
        "publish_to_host_start_s": to_start,
        "host_done_to_return_s": back,
        "runner_duration": {
            m: (summary.get("minions", {}).get(m) or {}).get("duration") for m in job["minions"]
        },
    }
    if last is not None and slowest is not None:
        row["overhead_s"] = round(last - begin - slowest, 3)
        row["job_overhead_s"] = round(last - job["published"] - slowest, 3)
    return row


def check_fleet_on(fleet: Fleet, members: list[str], tag: str) -> None:
    image = f"{IMAGE}:{tag}"
    apis = [docker.APIClient(base_url=d.url, version="auto", timeout=10) for d in fleet.daemons]
    try:
        wait_for(
            f"{len(members)} minion(s) with {REPLICAS} healthy replicas on {image}",
            lambda: all(
                healthy(api, image) == REPLICAS and healthy(api) == REPLICAS
                for api in apis[: len(members)]
            ),
            60,
        )
    finally:
        for api in apis:
            api.close()


# -- report ------------------------------------------------------------------


def scenarios(sizes: list[int], batches: list[str]) -> list[tuple[int, int, str]]:
    """(minions, batch, label) once per distinct batch size ("all" = the fleet)."""
    out: list[tuple[int, int, str]] = []
    for size in sizes:
        seen = set()
        for asked in batches:
            batch = size if asked == "all" else min(int(asked), size)
            if batch not in seen:
                seen.add(batch)
                out.append((size, batch, f"{batch} (all)" if batch == size else str(batch)))
    return out


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    batches = [b for r in rows for b in r["batches"]]

    def each(key: str) -> list[float]:
        return [r[key] for r in rows if r.get(key) is not None]

    def per_batch(key: str) -> list[float]:
        return [b[key] for b in batches if b.get(key) is not None]

    def per_minion(key: str) -> list[float]:
        return [v for b in batches for v in b[key].values()]

    overheads = per_batch("overhead_s")
    mins = each("min_healthy")
    return {
        "rollouts": len(rows),
        "batches": len(rows[0]["batches"]) if rows else None,
        "wall": median(each("salt_run_wall")),
        "runner_job": median(each("runner_job")),
        "sum_host": median(each("sum_host")),
        "sum_slowest": median(each("sum_slowest")),
        "overhead_per_batch": median(overheads),
        "overhead_range": [min(overheads), max(overheads)] if overheads else None,
        "before_check_per_batch": median(per_batch("before_check_s")),
        "check_per_batch": median(per_batch("check_s")),
        "job_overhead_per_batch": median(per_batch("job_overhead_s")),
        "to_host_start": median(per_minion("publish_to_host_start_s")),
        "done_to_return": median(per_minion("host_done_to_return_s")),
        "host_duration": median(per_minion("host_durations")),
        "before_plan_status": median(each("before_plan_status")),
        "plan_status": median(each("plan_status")),
        "after_last_batch": median(each("after_last_batch")),
        "min_healthy": min(mins) if mins else None,
        "total_replicas": len(rows[0]["members"]) * REPLICAS if rows else None,
    }


def fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(results: dict[str, Any]) -> str:
    lines = [
        "| minions | batch | batches | wall s | sum of host rollouts s | "
        "dispatch overhead per batch s (median) | min healthy seen |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["scenarios"]:
        a = s["aggregate"]
        lines.append(
            f"| {s['minions']} | {s['label']} | {a['batches']} | {fmt(a['wall'])} | "
            f"{fmt(a['sum_host'])} | {fmt(a['overhead_per_batch'])} | "
            f"{a['min_healthy']}/{a['total_replicas']} |"
        )
    lines += [
        "",
        "| minions | batch | runner job s | sum of slowest host rollout per batch s | "
        "runner start + plan status + end s | per batch: progress lines s | status check s | "
        "publish -> host rollout start s | host done -> return s | "
        "overhead range s | host rollout s (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in results["scenarios"]:
        a = s["aggregate"]
        fixed = [a["before_plan_status"], a["plan_status"], a["after_last_batch"]]
        spread = a["overhead_range"] or [None, None]
        lines.append(
            f"| {s['minions']} | {s['label']} | {fmt(a['runner_job'])} | "
            f"{fmt(a['sum_slowest'])} | "
            f"{fmt(sum(fixed) if None not in fixed else None)} | "
            f"{fmt(a['before_check_per_batch'])} | {fmt(a['check_per_batch'])} | "
            f"{fmt(a['to_host_start'])} | "
            f"{fmt(a['done_to_return'])} | {fmt(spread[0])}-{fmt(spread[1])} | "
            f"{fmt(a['host_duration'])} |"
        )
    base = results.get("baseline") or {}
    sizes = [k for k in base if k.isdigit()]
    if sizes:
        lines += [
            "",
            "| minions | test.ping (LocalClient) s | dockerops.status (LocalClient) s | "
            "`salt -L ... test.ping` s | `salt-run dockerops.rolling_update ... test=True` s "
            "(runner job s) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for size in sizes:
            row = base[size]
            test_run = row["salt_run_rolling_update_test"]
            lines.append(
                f"| {size} | {fmt(row['localclient_test.ping']['median'], 3)} | "
                f"{fmt(row['localclient_dockerops.status']['median'], 3)} | "
                f"{fmt(row['salt_cli_test.ping']['median'])} | "
                f"{fmt(test_run['median'])} ({fmt(median(test_run['runner_job']))}) |"
            )
        arg = base.get("salt_run_test.arg") or {}
        lines.append(
            f"\n`salt-run test.arg`: {fmt(arg.get('median'))} s "
            f"(runner job {fmt(median(arg.get('runner_job') or []), 3)} s), median of 3"
        )
    return "\n".join(lines)


# -- main --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minions", default="1,2,4", help="fleet sizes, each <= 4")
    parser.add_argument("--batches", default="1,2,all", help="batch sizes: counts or 'all'")
    parser.add_argument("--rounds", type=int, default=1, help="1.0 -> 1.1 -> 1.0 per scenario")
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "fleet.json"))
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.minions.split(",")})
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_MINIONS:
        parser.error(f"--minions: sizes from 1 to {MAX_MINIONS}")
    batches = [b.strip() for b in args.batches.split(",")]
    if any(b != "all" and (not b.isdigit() or int(b) < 1) for b in batches):
        parser.error("--batches: positive counts or 'all'")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM end the run through the teardown below (SIGINT too when
    # the shell started this in the background with SIGINT ignored).
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # Salt's own log lines in this process (a master still starting, a bus
    # closing at the end) are noise here; failures raise.
    logging.getLogger("salt").setLevel(logging.CRITICAL)
    started = time.monotonic()
    results: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "args": vars(args),
        "replicas_per_minion": REPLICAS,
        "scenarios": [],
    }
    clean_stale()
    BASE.mkdir(parents=True)
    count = max(sizes)
    daemons = [
        ExtraDaemon(f"fleet{n}", n, BASE / f"host{n}")
        for n in range(FIRST_DAEMON, FIRST_DAEMON + count)
    ]
    fleet: Fleet | None = None
    events: EventLog | None = None
    try:
        for daemon in daemons:
            daemon.start()
            # For clean_stale after an interrupted run (dockerd's own pidfile is under /run).
            (daemon.base / "dockerd.pid").write_text(
                str(daemon.process.pid if daemon.process else "")
            )
            build_images(daemon.url)
            log(f"{daemon.name}: up at {daemon.url}, images built")
        fleet = Fleet(daemons)
        fleet.start()
        events = EventLog(fleet.opts).start()
        applied = fleet.client.cmd(
            fleet.minions, "dockerops.apply", ["web"], tgt_type="list", timeout=180
        )
        bad = {m: r for m, r in (applied or {}).items() if not (r.get("web") or {}).get("result")}
        if set(applied or {}) != set(fleet.minions) or bad:
            raise RuntimeError(f"deploying web 1.0: {applied}")
        check_fleet_on(fleet, fleet.minions, "1.0")
        log(f"web 1.0 on {count} minion(s), {REPLICAS} healthy replicas each")
        if not args.no_baseline:
            results["baseline"] = baselines(fleet, events, sizes)
        for size, batch, label in scenarios(sizes, batches):
            members = fleet.minions[:size]
            rows = []
            for _ in range(args.rounds):
                for tag in ("1.1", "1.0"):
                    row = rollout(fleet, events, members, batch, tag)
                    check_fleet_on(fleet, members, tag)
                    rows.append(row)
                    log(
                        f"{size} minion(s), batch {label}, -> {tag}: wall "
                        f"{row['salt_run_wall']}s, host {row['sum_host']}s, overhead/batch "
                        f"{[b.get('overhead_s') for b in row['batches']]}, "
                        f"min healthy {row['min_healthy']}, unhealthy events "
                        f"{[e['unhealthy'] for e in row['health_events']]}"
                    )
            results["scenarios"].append(
                {
                    "minions": size,
                    "batch": batch,
                    "label": label,
                    "rollouts": rows,
                    "aggregate": aggregate(rows),
                }
            )
    finally:
        # A second Ctrl-C must not cut the teardown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        results["load_after"] = os.getloadavg()
        results["total_s"] = round(time.monotonic() - started, 1)
        # Each step on its own: one failing must not leave the others running.
        steps: list[tuple[str, Callable[[], None]]] = []
        if events is not None:
            steps.append(("event listener", events.stop))
        if fleet is not None:
            steps.append(("salt daemons", fleet.stop))
        steps += [(f"dockerd {d.name}", d.stop) for d in daemons]
        for what, stop in steps:
            try:
                stop()
            except Exception as err:
                log(f"stopping {what}: {type(err).__name__}: {err}")
        log("salt daemons, dockerds and bridges stopped")
        shutil.rmtree(BASE, ignore_errors=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print()
    print(tables(results))
    print(
        f"\nload average before {results['load_before']}, after {results['load_after']}; "
        f"{results['total_s']}s in all"
    )
    print(f"raw: {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)
