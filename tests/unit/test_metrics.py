"""dockerops.metrics: rendering, escaping, the atomic write, and the alert rules
checked by Debian's promtool (``promtool check``/``test rules``)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from salt.exceptions import SaltInvocationError

from dockerops import metrics, safepath
from dockerops.metrics import LastRollout, ServiceState

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "salt" / "dockerops" / "files" / "prometheus-rules.yml"
# Hostile text a container's labels may carry: quotes, backslashes, newlines,
# a carriage return, a NUL, a lone surrogate (from JSON), non-ASCII.
HOSTILE = 'a"b\\c\nd\re\x00f \udc80 é} x="y'


def row(**fields: Any) -> dict[str, Any]:
    base = {
        "slot": 1,
        "container": "web-1",
        "image": "reg/web:1.0",
        "state": "running",
        "health": "healthy",
        "restart_count": 0,
        "gave_up": False,
        "crash_loop": False,
        "config_version": None,
        "environment": "prod",
    }
    return {**base, **fields}


def test_a_service_renders_as_the_text_format() -> None:
    web = ServiceState(
        "web",
        desired=3,
        replicas=(
            row(config_version="c1"),
            row(slot=2, container="web-2", health="unhealthy", restart_count=4, crash_loop=True),
            row(slot=3, container="web-3", state="exited", health=None, gave_up=True),
        ),
        last_rollout=LastRollout(False, 12.5, 1700000012.5),
    )

    text = metrics.render([web])

    replica = 'service="web",slot="{}",container="web-{}",environment="prod",image="reg/web:1.0"'
    r1, r2, r3 = (replica.format(i, i) for i in (1, 2, 3))
    assert text == (
        "# HELP dockerops_service_replicas_desired Replicas pillar declares for the service.\n"
        "# TYPE dockerops_service_replicas_desired gauge\n"
        'dockerops_service_replicas_desired{service="web"} 3\n'
        "# HELP dockerops_service_replicas_running Replicas of the service whose container "
        "is running.\n"
        "# TYPE dockerops_service_replicas_running gauge\n"
        'dockerops_service_replicas_running{service="web"} 2\n'
        "# HELP dockerops_service_replicas_healthy Running replicas of the service that pass "
        "their health check (or have none).\n"
        "# TYPE dockerops_service_replicas_healthy gauge\n"
        'dockerops_service_replicas_healthy{service="web"} 1\n'
        "# HELP dockerops_replica_restarts_total Times Docker restarted the replica's container.\n"
        "# TYPE dockerops_replica_restarts_total counter\n"
        f"dockerops_replica_restarts_total{{{r1}}} 0\n"
        f"dockerops_replica_restarts_total{{{r2}}} 4\n"
        f"dockerops_replica_restarts_total{{{r3}}} 0\n"
        "# HELP dockerops_replica_crash_loop 1 when the replica restarted too often within "
        "the crash-loop window.\n"
        "# TYPE dockerops_replica_crash_loop gauge\n"
        f"dockerops_replica_crash_loop{{{r1}}} 0\n"
        f"dockerops_replica_crash_loop{{{r2}}} 1\n"
        f"dockerops_replica_crash_loop{{{r3}}} 0\n"
        "# HELP dockerops_replica_gave_up 1 when Docker will not restart the exited replica "
        "again.\n"
        "# TYPE dockerops_replica_gave_up gauge\n"
        f"dockerops_replica_gave_up{{{r1}}} 0\n"
        f"dockerops_replica_gave_up{{{r2}}} 0\n"
        f"dockerops_replica_gave_up{{{r3}}} 1\n"
        "# HELP dockerops_service_last_rollout_success 1 when the service's last rollout "
        "succeeded, 0 when it failed.\n"
        "# TYPE dockerops_service_last_rollout_success gauge\n"
        'dockerops_service_last_rollout_success{service="web"} 0\n'
        "# HELP dockerops_service_last_rollout_duration_seconds How long the service's last "
        "rollout took.\n"
        "# TYPE dockerops_service_last_rollout_duration_seconds gauge\n"
        'dockerops_service_last_rollout_duration_seconds{service="web"} 12.5\n'
        "# HELP dockerops_service_last_rollout_timestamp_seconds When the service's last "
        "rollout ended (Unix time).\n"
        "# TYPE dockerops_service_last_rollout_timestamp_seconds gauge\n"
        'dockerops_service_last_rollout_timestamp_seconds{service="web"} 1700000012.5\n'
        "# HELP dockerops_service_config_info The config version the service's replicas run "
        "(always 1).\n"
        "# TYPE dockerops_service_config_info gauge\n"
        'dockerops_service_config_info{service="web",version="c1"} 1\n'
    )


def test_what_is_unknown_is_left_out_rather_than_invented() -> None:
    # Not in pillar (or invalid there), no replicas, no rollout yet, no crash_loop field.
    text = metrics.render([ServiceState("old", replicas=(), last_rollout=None)])
    assert text == (
        "# HELP dockerops_service_replicas_running Replicas of the service whose container "
        "is running.\n"
        "# TYPE dockerops_service_replicas_running gauge\n"
        'dockerops_service_replicas_running{service="old"} 0\n'
        "# HELP dockerops_service_replicas_healthy Running replicas of the service that pass "
        "their health check (or have none).\n"
        "# TYPE dockerops_service_replicas_healthy gauge\n"
        'dockerops_service_replicas_healthy{service="old"} 0\n'
    )
    assert metrics.render([]) == ""


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain", "plain"),
        ('say "hi"', 'say \\"hi\\"'),
        ("C:\\path", "C:\\\\path"),
        ("two\nlines", "two\\nlines"),
        ('\\"\n', '\\\\\\"\\n'),
        ("lone \udc80", "lone ?"),
        ("é ✓", "é ✓"),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert metrics.escape_label_value(value) == escaped


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "1"), (False, "0"), (3, "3"), (0.25, "0.25"), (float("nan"), "NaN"),
     (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (1700000000.5, "1700000000.5")],
)  # fmt: skip
def test_values_are_formatted_as_the_text_format_wants(value: float, text: str) -> None:
    assert metrics.format_value(value) == text


def test_hostile_label_values_give_a_file_promtool_accepts(tmp_path: Path) -> None:
    services = [
        ServiceState(
            "web",
            desired=1,
            replicas=(row(image=HOSTILE, environment=HOSTILE, container=HOSTILE, slot=None),),
            last_rollout=LastRollout(True, 1.0, 1.0),
        ),
        ServiceState(HOSTILE, replicas=(row(config_version=HOSTILE),)),
    ]
    text = metrics.render(services)

    # No raw newline inside a sample (Python's splitlines would split at \r too).
    assert all(line.startswith(("# ", "dockerops_")) for line in text.split("\n")[:-1])
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert metrics.write_textfile(str(tmp_path / "d.prom"), text)
    assert (tmp_path / "d.prom").read_bytes() == text.encode("utf-8")


def test_a_series_is_never_written_twice() -> None:
    # Two containers claiming one slot (hand-made labels): node_exporter would
    # refuse the whole file with both.
    twins = (row(container="x", image="i"), row(container="x", image="i", restart_count=9))
    text = metrics.render([ServiceState("web", replicas=twins)])
    restarts = [line for line in text.splitlines() if line.startswith("dockerops_replica_restarts")]
    assert restarts == [
        'dockerops_replica_restarts_total{service="web",slot="1",container="x",'
        'environment="prod",image="i"} 0'
    ]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (None, None),
        ({}, None),
        (
            {"when": "2023-11-14T22:13:20Z", "duration": 7.25, "result": True},
            LastRollout(True, 7.25, 1700000000 + 7.25),
        ),
        (
            {"when": "2023-11-14T22:13:20Z", "duration": 3, "result": False},
            LastRollout(False, 3.0, 1700000003.0),
        ),
        ({"when": "yesterday", "duration": 1, "result": True}, None),
        ({"when": "2023-11-14T22:13:20Z", "duration": "nan", "result": True}, None),
        ({"when": "2023-11-14T22:13:20Z", "duration": -1, "result": True}, None),
        ({"when": "2023-11-14T22:13:20Z", "duration": [1], "result": True}, None),
    ],
)
def test_the_last_rollout_is_read_from_a_history_entry(
    entry: dict[str, Any] | None, expected: LastRollout | None
) -> None:
    assert metrics.last_rollout(entry) == expected


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({}, metrics.DEFAULT_METRICS_FILE),
        ({"dockerops.metrics_file": "/tmp/x/d.prom"}, "/tmp/x/d.prom"),
        ({"dockerops.metrics_file": ""}, None),
        ({"dockerops.metrics_file": False}, None),
        ({"dockerops.metrics_file": None}, None),
    ],
)
def test_the_metrics_file_is_a_minion_option(opts: dict[str, Any], expected: str | None) -> None:
    assert metrics.metrics_file(opts) == expected


@pytest.mark.parametrize("value", ["relative.prom", "/tmp/dir/", "/tmp/..", 5, "/a\0b"])
def test_a_metrics_file_that_is_no_absolute_file_path_is_refused(value: Any) -> None:
    with pytest.raises(SaltInvocationError, match=r"dockerops\.metrics_file must be"):
        metrics.metrics_file({"dockerops.metrics_file": value})


def test_desired_counts_survive_services_that_fail_validation() -> None:
    pillar = {
        "dockerops": {
            "services": {
                "web": {"image": "reg/web", "tag": "1", "replicas": 3},
                "bad": {"image": "reg/bad", "tag": "1", "replicas": "many"},
                "ran": {"image": "reg/ran", "tag": "1", "replicas": 1},
            }
        }
    }
    # ``ran``: this state run's own count (an override) wins over pillar's.
    assert metrics.desired_counts(pillar, {"ran": 4}) == {"web": 3, "bad": None, "ran": 4}
    assert metrics.desired_counts({"dockerops": {"services": []}}, {"x": 1}) == {"x": 1}
    assert metrics.desired_counts({"_errors": ["render failed"]}) == {}


def test_an_invalid_crash_loop_pillar_falls_back_to_the_default() -> None:
    bad = {"dockerops": {"monitoring": {"crash_loop": {"restarts": "often"}}}}
    assert metrics.pillar_crash_loop(bad) is None
    good = {"dockerops": {"monitoring": {"crash_loop": {"restarts": 5, "window": "2m"}}}}
    policy = metrics.pillar_crash_loop(good)
    assert policy is not None and (policy.restarts, policy.window) == (5, 120.0)


# --- the atomic write ------------------------------------------------------------


def test_the_file_is_written_readable_and_replaced(tmp_path: Path) -> None:
    target = tmp_path / "dockerops.prom"
    assert metrics.write_textfile(str(target), "a 1\n") is True
    assert target.read_text() == "a 1\n"
    assert target.stat().st_mode & 0o777 == 0o644
    inode = target.stat().st_ino
    assert metrics.write_textfile(str(target), "a 2\n") is True
    assert target.read_text() == "a 2\n"
    assert target.stat().st_ino != inode  # a new file renamed over it, never rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["dockerops.prom"]


def test_a_missing_directory_is_skipped_not_created(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dockerops.prom"
    assert metrics.write_textfile(str(target), "a 1\n") is False
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "directory", "fifo"])
def test_anything_but_a_regular_file_at_the_target_is_refused(tmp_path: Path, kind: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "dockerops.prom"
    if kind == "symlink":
        target.symlink_to(victim)
    elif kind == "dangling symlink":
        target.symlink_to(tmp_path / "created-through-the-link")
    elif kind == "directory":
        target.mkdir()
    else:
        os.mkfifo(target)

    with pytest.raises(safepath.UnsafePath, match="does not follow or replace it"):
        metrics.write_textfile(str(target), "a 1\n")

    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "created-through-the-link").exists()
    assert os.path.lexists(target)
    assert sorted(os.listdir(tmp_path)) == ["dockerops.prom", "victim"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "dockerops.prom"
    metrics.write_textfile(str(target), "old 1\n")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safepath.os, "fsync", full_disk)
    with pytest.raises(metrics.MetricsError, match=r"could not write .*No space left"):
        metrics.write_textfile(str(target), "new 1\n")

    assert target.read_text() == "old 1\n"
    assert sorted(os.listdir(tmp_path)) == ["dockerops.prom"]


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "dockerops.prom"
    contents = [f"# {i}\n" + f'm{{i="{i}"}} {i}\n' * 2000 for i in range(2)]
    metrics.write_textfile(str(target), contents[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            metrics.write_textfile(str(target), contents[i % 2])
    finally:
        stop.set()
        reader.join(10)
    assert seen and seen <= set(contents)


# --- the alert rules -------------------------------------------------------------


def test_the_alert_rules_pass_promtool() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout


def test_the_alerts_fire_on_the_rendered_metrics(tmp_path: Path) -> None:
    """``promtool test rules``: series as dockerops renders them, alerts as expected."""
    replica = '{service="web",slot="1",container="web-1",environment="prod",image="reg/web:1.0"}'
    web = '{service="web"}'
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"dockerops_replica_crash_loop{replica}", "values": "0 1 1 1"},
                    {"series": f"dockerops_replica_gave_up{replica}", "values": "0 0 1 1"},
                    {"series": f"dockerops_service_replicas_desired{web}", "values": "2x20"},
                    {"series": f"dockerops_service_replicas_healthy{web}", "values": "2 1x19"},
                    {"series": f"dockerops_service_last_rollout_success{web}", "values": "1 0 0"},
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "DockeropsReplicaCrashLooping",
                     "exp_alerts": []},
                    {"eval_time": "2m", "alertname": "DockeropsReplicaCrashLooping",
                     "exp_alerts": [{"exp_labels": _labels(replica, severity="warning"),
                                     "exp_annotations": _annotations("crash")}]},
                    {"eval_time": "2m", "alertname": "DockeropsReplicaGaveUp",
                     "exp_alerts": [{"exp_labels": _labels(replica, severity="critical"),
                                     "exp_annotations": _annotations("gave_up")}]},
                    {"eval_time": "9m", "alertname": "DockeropsReplicasBelowDesired",
                     "exp_alerts": []},
                    {"eval_time": "12m", "alertname": "DockeropsReplicasBelowDesired",
                     "exp_alerts": [{"exp_labels": _labels(web, severity="warning"),
                                     "exp_annotations": _annotations("below")}]},
                    {"eval_time": "0m", "alertname": "DockeropsRolloutFailed", "exp_alerts": []},
                    {"eval_time": "1m", "alertname": "DockeropsRolloutFailed",
                     "exp_alerts": [{"exp_labels": _labels(web, severity="warning"),
                                     "exp_annotations": _annotations("rollout")}]},
                ],
            }
        ],
    }  # fmt: skip
    spec = tmp_path / "tests.yml"
    spec.write_text(yaml.safe_dump(tests))
    run = subprocess.run(
        ["promtool", "test", "rules", str(spec)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def _labels(series: str, **extra: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in series.strip("{}").split(","))
    return {**{k: v.strip('"') for k, v in pairs}, **extra}


def _annotations(alert: str) -> dict[str, str]:
    """The rules file's annotations, rendered for the series above (instance unset)."""
    crash = (
        "Container web-1 (reg/web:1.0, environment prod) keeps restarting. "
        "`salt <minion> dockerops.status web` shows its last exit and health-check output."
    )
    return {
        "crash": {"summary": "web replica 1 on  is crash-looping", "description": crash},
        "gave_up": {
            "summary": "web replica 1 on  gave up",
            "description": "Container web-1 (reg/web:1.0) exited and its restart policy will "
            "not restart it again. `dockerops.status web` gives the reason; "
            "`dockerops.restart web` starts it anew.",
        },
        "below": {
            "summary": "web on : 1 healthy replicas, fewer than declared",
            "description": "Fewer replicas of web are running and healthy than pillar "
            "declares. `dockerops.services` compares pillar with what runs.",
        },
        "rollout": {
            "summary": "The last rollout of web on  failed",
            "description": "`dockerops.history web` shows its error and what was put back.",
        },
    }[alert]


class NoDocker:
    """A host that must not be asked: the rows were read already."""

    def managed(self, service: str | None = None, kept: bool = False) -> Any:
        raise AssertionError("listed the containers again")

    def inspect(self, container_id: str) -> Any:
        raise AssertionError("inspected a container again")


def test_metrics_from_rows_already_read_ask_docker_nothing(tmp_path: Path) -> None:
    rows = {"web": [{"slot": 1, "container": "web-1", "state": "running", "health": "healthy"}]}
    services = metrics.collect(NoDocker(), str(tmp_path), {"web": 2}, None, rows)  # type: ignore[arg-type]
    assert [(s.name, s.desired, len(s.replicas)) for s in services] == [("web", 2, 1)]
    path = tmp_path / "dockerops.prom"
    assert metrics.write_metrics(NoDocker(), str(path), str(tmp_path), {}, {"web": 2}, rows=rows)  # type: ignore[arg-type]
    assert 'dockerops_service_replicas_healthy{service="web"} 1' in path.read_text()
