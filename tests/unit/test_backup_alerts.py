"""The backup alerts of ``salt/dockerops/files/prometheus-rules.yml``, by Debian's
``promtool test rules``, on series as :mod:`dockerops.metrics` renders them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from dockerops import metrics
from dockerops.metrics import ServiceState

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "salt" / "dockerops" / "files" / "prometheus-rules.yml"
HOUR = 3600


def series(name: str, service: str, values: str) -> dict[str, str]:
    return {"series": f'{name}{{service="{service}"}}', "values": values}


CONFIGURED = "dockerops_backup_configured"
SUCCESS = "dockerops_backup_last_success_timestamp_seconds"
FAILURE = "dockerops_backup_last_failure_timestamp_seconds"


def alert(service: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {
        "exp_labels": {"service": service, "severity": severity},
        "exp_annotations": {"summary": summary, "description": description},
    }


def too_old(service: str, age: str) -> dict[str, Any]:
    return alert(
        service,
        "critical",
        f"{service} on : no successful backup for {age}",
        f"The last backup of {service} that succeeded is older than 26 hours. "
        f"`dockerops.status {service}` shows its last failure (last_backup_failure), "
        f"`schedule.list` the minion's dockerops-backup-{service} entry.",
    )


def never(service: str) -> dict[str, Any]:
    return alert(
        service,
        "critical",
        f"{service} on  has never been backed up successfully",
        f"Pillar declares a backup for {service}, and none has succeeded for 26 hours. "
        f"Check its backup:schedule, or run `dockerops.backup {service}` and read its error.",
    )


def failed(service: str) -> dict[str, Any]:
    return alert(
        service,
        "warning",
        f"The last backup of {service} on  failed",
        f"`dockerops.status {service}` shows the error (last_backup_failure).",
    )


def test_the_backup_series_are_those_dockerops_renders() -> None:
    text = metrics.render(
        [
            ServiceState(
                "web", backup_configured=True, last_backup_success=1.0, last_backup_failure=2.0
            )
        ]
    )
    for name in (CONFIGURED, SUCCESS, FAILURE):
        assert f'{name}{{service="web"}} ' in text


def test_the_backup_alerts_fire_as_promised(tmp_path: Path) -> None:
    # promtool's clock starts at 0 (Unix time): a timestamp of 0 is "at the start".
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": [
                    # web: backed up at the start, never again; a failure at 30h.
                    series(CONFIGURED, "web", "1x40"),
                    series(SUCCESS, "web", "0x40"),
                    series(FAILURE, "web", f"_x29 {30 * HOUR}x11"),
                    # db: configured, nothing ever succeeded (nor ran).
                    series(CONFIGURED, "db", "1x40"),
                    # cache: failed at 1h, succeeded at 2h, and every hour after.
                    series(CONFIGURED, "cache", "1x40"),
                    series(FAILURE, "cache", f"_ {HOUR}x39"),
                    series(SUCCESS, "cache", f"_ _ {2 * HOUR}+{HOUR}x38"),
                    # old: its backup was taken out of pillar, its record stays.
                    series(SUCCESS, "old", "0x40"),
                    series(FAILURE, "old", "0x40"),
                ],
                "alert_rule_test": [
                    {"eval_time": "25h", "alertname": "DockeropsBackupTooOld", "exp_alerts": []},
                    {"eval_time": "27h", "alertname": "DockeropsBackupTooOld",
                     "exp_alerts": [too_old("web", "1d 3h 0m 0s")]},
                    {"eval_time": "25h", "alertname": "DockeropsBackupNeverSucceeded",
                     "exp_alerts": []},
                    {"eval_time": "27h", "alertname": "DockeropsBackupNeverSucceeded",
                     "exp_alerts": [never("db")]},
                    {"eval_time": "1h", "alertname": "DockeropsBackupFailed",
                     "exp_alerts": [failed("cache")]},
                    {"eval_time": "3h", "alertname": "DockeropsBackupFailed", "exp_alerts": []},
                    {"eval_time": "31h", "alertname": "DockeropsBackupFailed",
                     "exp_alerts": [failed("web")]},
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
