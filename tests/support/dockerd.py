"""Real Docker daemons for tests: the main one, and extra isolated "hosts".

An extra host is a second dockerd with its own data root, exec root, pidfile,
socket, managed containerd and bridge, so containers on one are invisible to
the others, like separate machines. Ports are only ever published on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[2]
DEFAULT_URL = "unix:///var/run/docker.sock"


def answers(url: str, timeout: float = 5) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def ensure_main_daemon() -> str:
    """The machine's own daemon; started (scripts/dockerd-up.sh) if none answers."""
    if not answers(DEFAULT_URL):
        subprocess.run([str(REPO / "scripts" / "dockerd-up.sh")], check=True)
    return DEFAULT_URL


@dataclass
class ExtraDaemon:
    """One isolated dockerd (see module docstring)."""

    name: str
    number: int
    base: Path
    process: subprocess.Popen[bytes] | None = None
    bridge: str = field(init=False)

    def __post_init__(self) -> None:
        self.bridge = f"dopbr{self.number}"

    @property
    def run_dir(self) -> Path:
        # Unix socket paths are limited to ~108 bytes: keep this one short.
        return Path(f"/run/dops-{os.getpid()}-{self.number}")

    @property
    def url(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    def start(self, timeout: float = 60) -> ExtraDaemon:
        data_root = self.base / "data"
        data_root.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._bridge_up()
        log = open(self.base / "dockerd.log", "wb")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(data_root),
                "--exec-root",
                str(self.run_dir / "exec"),
                "--pidfile",
                str(self.run_dir / "docker.pid"),
                "-H",
                self.url,
                "--bridge",
                self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not answers(self.url, timeout=2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.base / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"extra dockerd {self.name} did not start:\n{tail}")
            time.sleep(0.3)
        return self

    def crash(self) -> None:
        """Kill dockerd as a crash would (its managed containerd dies with it;
        the containers' shims live on), and make it startable again."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)
        # The containerd that died with it may linger as a zombie here (no init
        # reaps it), which a new dockerd would take for a running containerd.
        pidfile = self.run_dir / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            pidfile.unlink()

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                client = self.client()
                for container in client.containers.list(ignore_removed=True, all=True):
                    container.remove(force=True)
                client.close()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._unmount_under(self.base)
        self._unmount_under(self.run_dir)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def _bridge_up(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
        # The bridge's subnet is only for the daemon's own use; tests never send
        # traffic to it (ports are published on 127.0.0.1).
        for cmd in (
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.231.{self.number}.1/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True)

    @staticmethod
    def _unmount_under(path: Path) -> None:
        prefix = str(path)
        with open("/proc/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def start_extra_daemons(count: int, base: Path, first: int = 1) -> list[ExtraDaemon]:
    """Start ``count`` isolated daemons; on any failure, stop those started."""
    started: list[ExtraDaemon] = []
    try:
        for number in range(first, first + count):
            daemon = ExtraDaemon(f"host{number}", number, base / f"host{number}")
            started.append(daemon.start())
    except Exception:
        for daemon in started:
            daemon.stop()
        raise
    return started
