"""Debian's Prometheus and node_exporter for tests, on 127.0.0.1 only.

node_exporter serves only its textfile collector (every other collector off,
for speed) from a directory the test writes into; Prometheus scrapes it and
evaluates the rules every second. Both are the packages' own binaries
(``scripts/host-packages.sh`` installs them), started here and stopped at
the end, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
STARTUP_TIMEOUT = 30.0

T = TypeVar("T")


def rules_without_for(source: Path, target: Path) -> Path:
    """``source``'s alert rules with every ``for:`` removed: they fire on the
    first evaluation that matches, so a test need not wait minutes."""
    data = yaml.safe_load(source.read_text())
    for group in data["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    target.write_text(yaml.safe_dump(data))
    return target


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """``probe()``'s first value that is not None, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except OSError as err:  # not listening yet
            last_error = err
        else:
            if value is not None:
                return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} not seen within {timeout:g}s (last error: {last_error})")


@dataclass
class MonitoringBed:
    """A running node_exporter + Prometheus pair."""

    textfile_dir: Path
    exporter_port: int
    prometheus_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}/api/v1"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        url = f"{self.api}/query?" + urllib.parse.urlencode({"query": expr})
        answer = _get(url)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """``/api/v1/alerts``: every pending or firing alert."""
        answer = _get(f"{self.api}/alerts")
        assert answer["status"] == "success", answer
        alerts: list[dict[str, Any]] = answer["data"]["alerts"]
        return alerts

    def exporter_text(self) -> str:
        url = f"http://127.0.0.1:{self.exporter_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text


@contextlib.contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def monitoring_bed(base: Path, first_port: int, rules: Path) -> Iterator[MonitoringBed]:
    """node_exporter on ``first_port``, Prometheus on ``first_port + 1`` (both
    127.0.0.1), scraping and evaluating ``rules`` every second."""
    textfile_dir = base / "textfile"
    textfile_dir.mkdir()
    bed = MonitoringBed(textfile_dir, first_port, first_port + 1)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": [f"127.0.0.1:{first_port}"]}]}
        ],
    }
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    exporter_args = [
        NODE_EXPORTER,
        f"--web.listen-address=127.0.0.1:{bed.exporter_port}",
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfile_dir}",
    ]
    prometheus_args = [
        PROMETHEUS,
        f"--config.file={base / 'prometheus.yml'}",
        f"--storage.tsdb.path={base / 'data'}",
        f"--web.listen-address=127.0.0.1:{bed.prometheus_port}",
    ]
    with (
        _process(exporter_args, base / "node_exporter.log") as exporter,
        _process(prometheus_args, base / "prometheus.log") as prometheus,
    ):

        def ready() -> bool | None:
            for proc, log in ((exporter, "node_exporter.log"), (prometheus, "prometheus.log")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{log} exited: {(base / log).read_text()[-2000:]}")
            bed.exporter_text()
            with urllib.request.urlopen(
                f"http://127.0.0.1:{bed.prometheus_port}/-/ready", timeout=2
            ) as response:
                return True if response.status == 200 else None

        wait_for("node_exporter and Prometheus answering", ready, STARTUP_TIMEOUT)
        yield bed
