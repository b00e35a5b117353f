"""Metrics end to end: dockerops writes node_exporter's textfile, Debian's
real node_exporter serves it and Debian's real Prometheus scrapes it (all on
127.0.0.1), evaluating ``salt/dockerops/files/prometheus-rules.yml``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockerops import metrics
from tests.functional.helpers import service_pillar
from tests.support.prometheus import MonitoringBed, monitoring_bed, rules_without_for, wait_for

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "salt" / "dockerops" / "files" / "prometheus-rules.yml"
# Healthy at once (the image's own check needs its HTTP server).
QUICK_CHECK = {"test": "echo checked-ok", "interval": "1s", "retries": 1}


@pytest.fixture
def bed(tmp_path: Path, free_ports: Callable[[int], int]) -> Iterator[MonitoringBed]:
    # The rules as shipped, without their for: durations (a test waits seconds, not minutes).
    rules = rules_without_for(RULES, tmp_path / "rules.yml")
    with monitoring_bed(tmp_path, free_ports(2), rules) as running:
        yield running


@pytest.fixture
def metrics_file(salt: Any, bed: MonitoringBed, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The minion option ``dockerops.metrics_file`` pointed into node_exporter's
    textfile directory (taken up by the next ``salt.set_pillar``)."""
    path = bed.textfile_dir / "dockerops.prom"
    monkeypatch.setitem(salt._original_opts, "dockerops.metrics_file", str(path))
    return path


def sample(bed: MonitoringBed, expr: str) -> str | None:
    """The value of the one series ``expr`` selects, once Prometheus has it."""
    result = bed.query(expr)
    return result[0]["value"][1] if len(result) == 1 else None


def test_prometheus_shows_the_healthy_replicas_a_state_run_deployed(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    bed: MonitoringBed,
    metrics_file: Path,
) -> None:
    salt.set_pillar(
        service_pillar(service_name, demo_images["repository"], replicas=2, healthcheck=QUICK_CHECK)
    )

    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    assert metrics_file.is_file()  # written by the state run itself
    selector = f'{{service="{service_name}",job="node"}}'
    healthy = wait_for(
        "the healthy-replica count in Prometheus",
        lambda: sample(bed, f"dockerops_service_replicas_healthy{selector}"),
        30,
    )
    assert healthy == "2"
    assert sample(bed, f"dockerops_service_replicas_desired{selector}") == "2"
    assert sample(bed, f"dockerops_service_last_rollout_success{selector}") == "1"
    restarts = bed.query(f"dockerops_replica_restarts_total{selector}")
    assert sorted(r["metric"]["slot"] for r in restarts) == ["1", "2"]
    assert {r["metric"]["image"] for r in restarts} == {f"{demo_images['repository']}:1.0"}
    assert {r["metric"]["environment"] for r in restarts} == {"integration"}
    # node_exporter took the whole file (it drops a file it cannot parse).
    assert "node_textfile_scrape_error 0" in bed.exporter_text()


def test_a_crash_looping_service_fires_the_crash_loop_alert(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    bed: MonitoringBed,
    metrics_file: Path,
) -> None:
    # Healthy at first, then it exits every ~2 s; Docker restarts it, again and again.
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        command="sleep 2; exit 3",
        restart_policy="on-failure:100",
        healthcheck=QUICK_CHECK,
    )
    pillar["dockerops"]["monitoring"] = {"crash_loop": {"restarts": 2, "window": "5m"}}
    salt.set_pillar(pillar)
    # The rollout itself may see the first restart and fail; the replica stays, looping.
    salt.states.dockerops.running(name=service_name)

    def firing() -> dict[str, Any] | None:
        # What the beacon does every interval: write the file anew.
        assert salt.modules.dockerops.write_metrics() == {
            "path": str(metrics_file),
            "written": True,
        }
        for alert in bed.alerts():
            labels = alert["labels"]
            if (
                labels.get("alertname") == "DockeropsReplicaCrashLooping"
                and labels.get("service") == service_name
                and alert["state"] == "firing"
            ):
                return alert
        return None

    alert = wait_for("the crash-loop alert firing", firing, 90)

    assert alert["labels"]["slot"] == "1"
    assert alert["labels"]["image"] == f"{demo_images['repository']}:1.0"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["summary"].startswith(f"{service_name} replica 1 on 127.0.0.1:")


def test_hostile_label_values_reach_prometheus_intact(bed: MonitoringBed) -> None:
    # Label values come from container labels: quotes, backslashes, a newline,
    # a carriage return, a NUL, text that tries to close the label set.
    hostile = 'a"b\\c\nd\re\x00f é} x="y'
    replica = {"slot": 1, "container": hostile, "environment": hostile, "image": hostile}
    text = metrics.render([metrics.ServiceState("web", 1, ({**replica, "crash_loop": True},))])
    assert metrics.write_textfile(str(bed.textfile_dir / "dockerops.prom"), text)

    firing = wait_for(
        "the crash-loop alert of the hostile replica",
        lambda: (
            [
                a["labels"]
                for a in bed.alerts()
                if a["state"] == "firing"
                and a["labels"]["alertname"] == "DockeropsReplicaCrashLooping"
            ]
            or None
        ),
        30,
    )

    assert [(a["image"], a["environment"], a["container"]) for a in firing] == [
        (hostile, hostile, hostile)
    ]
    assert "node_textfile_scrape_error 0" in bed.exporter_text()


def test_a_state_run_writes_the_metrics_once_after_its_last_dockerops_state(
    salt: Any,
    demo_images: dict[str, str],
    service_name: str,
    extra_service: Callable[[str], str],
    state_tree: Path,
    metrics_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = extra_service("-b")
    pillar = service_pillar(service_name, demo_images["repository"], healthcheck=QUICK_CHECK)
    pillar["dockerops"]["services"][other] = {**pillar["dockerops"]["services"][service_name]}
    salt.set_pillar(pillar)
    (state_tree / f"{service_name}.sls").write_text(
        "".join(
            f"{name}-running:\n  dockerops.running:\n    - name: {name}\n"
            for name in (service_name, other)
        )
    )
    # Whichever copy of the library the loader imported (the repo's or the synced one).
    library = sys.modules["dockerops.metrics"]
    written: list[str] = []
    real_write = library.write_textfile

    def counting_write(path: str, text: str) -> bool:
        written.append(text)
        return bool(real_write(path, text))

    monkeypatch.setattr(library, "write_textfile", counting_write)

    salt.modules.state.sls(service_name, test=True)
    assert written == []  # test=True writes nothing

    ret = salt.modules.state.sls(service_name)

    assert all(r.result is True for r in ret), [(r.id, r.comment) for r in ret]
    assert len(written) == 1
    # Written after both: each shows its one running replica.
    for name in (service_name, other):
        assert f'dockerops_service_replicas_running{{service="{name}"}} 1\n' in written[0]
    assert metrics_file.read_text() == written[0]

    started = time.monotonic()
    assert all(r.result is True for r in salt.modules.state.sls(service_name))
    assert len(written) == 2 and time.monotonic() - started < 30  # the no-op run writes once too
