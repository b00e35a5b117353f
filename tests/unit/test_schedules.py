"""dockerops.schedules: the scheduler entries the formula keeps for backups, and
the last backup as status, the grain and the metrics show it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockerops import metrics, schedules
from dockerops.backup import BackupRecord
from dockerops.errors import SpecError
from dockerops.metrics import ServiceState
from dockerops.replicas import desired_replicas
from dockerops.schedules import BackupOutcomes
from dockerops.spec import ServiceSpec
from dockerops.status import replica_status

REPOSITORY = {"repository": "/srv/backups/restic", "password": "s3cret-pass"}
DATA = [{"host": "/srv/dockerops/web/data", "container": "/data"}]


def service(**backup: Any) -> dict[str, Any]:
    return {"image": "reg/web", "tag": "1", "data": DATA, "backup": backup}


def pillar(services: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"dockerops": {"backup": REPOSITORY, "services": services, **top}}


NIGHTLY = {"consistency": "stop", "schedule": {"when": "03:00", "splay": 600}}


@pytest.mark.parametrize(
    ("services", "top", "scheduled", "expected"),
    [
        pytest.param({}, {}, [], ({}, {}, []), id="no services"),
        pytest.param(
            {"web": service(**NIGHTLY)}, {}, [],
            ({"web": {"when": ["03:00"], "splay": 600}}, {}, []),
            id="when, one time, with splay",
        ),
        pytest.param(
            {"web": service(consistency="none", schedule={"hours": 6, "minutes": 30})}, {}, [],
            ({"web": {"hours": 6, "minutes": 30}}, {}, []),
            id="an interval",
        ),
        pytest.param(
            {"web": service(consistency="none")}, {}, ["dockerops-backup-web"],
            ({}, {}, ["dockerops-backup-web"]),
            id="schedule taken out: the entry goes",
        ),
        pytest.param(
            {"web": {"image": "reg/web", "tag": "1"}}, {},
            ["dockerops-backup-web", "dockerops-backup-gone", "nightly-report", "__mine_interval"],
            ({}, {}, ["dockerops-backup-gone", "dockerops-backup-web"]),
            id="only dockerops-backup-* entries of services without a schedule go",
        ),
        pytest.param(
            {"web": {"image": "reg/web", "tag": "1", "data": DATA}},
            {"defaults": {"backup": {"consistency": "none", "schedule": {"days": 1}}}},
            ["dockerops-backup-web"],
            ({"web": {"days": 1}}, {}, []),
            id="a schedule from dockerops:defaults",
        ),
        pytest.param(
            {"web": service(consistency="none", schedule={"hours": 6})}, {},
            ["dockerops-backup-web"],
            ({"web": {"hours": 6}}, {}, []),
            id="an entry kept",
        ),
    ],
)  # fmt: skip
def test_each_service_with_a_schedule_gets_an_entry_and_stale_ones_go(
    services: dict[str, Any],
    top: dict[str, Any],
    scheduled: list[str],
    expected: tuple[dict[str, Any], dict[str, Any], list[str]],
) -> None:
    answer = schedules.backup_schedules(pillar(services, **top), scheduled)

    assert (answer["schedules"], answer["invalid"], answer["stale"]) == expected
    assert answer["problems"] == []


@pytest.mark.parametrize(
    ("web", "top", "problem"),
    [
        pytest.param(
            service(consistency="none", schedule={"hours": 6, "when": "03:00"}), {},
            "dockerops:services:web:backup:schedule: give either an interval",
            id="interval and when",
        ),
        pytest.param(
            service(consistency="sometimes", schedule={"hours": 6}), {},
            "dockerops:services:web:backup:consistency",
            id="an invalid backup",
        ),
        pytest.param(
            {**service(consistency="none", schedule={"hours": 6}), "replicas": "many"}, {},
            "dockerops:services:web:replicas",
            id="invalid elsewhere in the service",
        ),
        pytest.param(
            {"image": "reg/web", "tag": "1", "backup": "nightly"}, {},
            "dockerops:services:web:backup",
            id="backup not a mapping",
        ),
        pytest.param(
            service(consistency="none", schedule={"hours": 6}), {"backup": {}},
            "dockerops:backup: repository and password not set "
            "(dockerops:services:web:backup:schedule needs them)",
            id="no repository",
        ),
        pytest.param(
            service(consistency="none", schedule={"hours": 6}),
            {"backup": {"repository": "/srv/backups/restic"}},
            "dockerops:backup: password not set "
            "(dockerops:services:web:backup:schedule needs it)",
            id="no password",
        ),
    ],
)  # fmt: skip
def test_an_invalid_service_keeps_its_entry_and_fails_on_its_own(
    web: dict[str, Any], top: dict[str, Any], problem: str
) -> None:
    ok = service(consistency="none", schedule={"minutes": 15})
    data = pillar(
        {"web": web, "api": {**ok, "data": [{"host": "/srv/dockerops/api", "container": "/d"}]}}
    )
    data["dockerops"].update(top)
    if "backup" in top:
        data["dockerops"]["backup"] = top["backup"]

    answer = schedules.backup_schedules(data, ["dockerops-backup-web", "dockerops-backup-api"])

    assert any(problem in line for line in answer["invalid"]["web"]), answer["invalid"]
    assert answer["stale"] == []  # web's entry is left as it is
    if "backup" in top:  # no repository: none can run
        assert (list(answer["invalid"]), answer["schedules"]) == (["api", "web"], {})
    else:
        assert list(answer["invalid"]) == ["web"]
        assert answer["schedules"] == {"api": {"minutes": 15}}  # the others unaffected


def test_the_password_never_shows_in_problems() -> None:
    data = pillar({"web": service(consistency="none", schedule={"hours": "x"})})
    answer = schedules.backup_schedules(data)
    assert "s3cret-pass" not in json.dumps(answer)


@pytest.mark.parametrize(
    "data",
    [
        {"dockerops": {"services": [], "backup": REPOSITORY}},
        {"dockerops": {"backup": {"repository": "relative/path"}}},
        {"_errors": ["pillar render failed"]},
    ],
)
def test_an_invalid_top_of_pillar_adds_and_removes_nothing(data: dict[str, Any]) -> None:
    answer = schedules.backup_schedules(data, ["dockerops-backup-web"])

    assert answer["problems"]
    assert (answer["schedules"], answer["invalid"], answer["stale"]) == ({}, {}, [])


def test_declared_backups_reads_pillar_without_validating() -> None:
    data = {
        "dockerops": {
            "defaults": {"backup": {"consistency": "none"}},
            "services": {
                "web": {"image": "x"},
                "off": {"image": "x", "backup": None},
                "bad": {"image": "x", "backup": "nightly"},
                "odd": "not a mapping",
            },
        }
    }
    assert schedules.declared_backups(data) == {
        "web": {"consistency": "none"},
        "bad": "nightly",
    }
    assert schedules.declared_backups({"dockerops": {"services": ["web"]}}) == {}
    assert schedules.declared_backups({}) == {}


# --- the record of outcomes ------------------------------------------------------------


def write_record(state_dir: Path, service: str, record: Any) -> None:
    path = state_dir / "backups" / f"{service}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))


SUCCESS = {"time": 1700000000.5, "snapshot": "4bba301e", "duration": 12.0}
FAILURE = {"time": 1700003600.0, "error": "repository unreachable"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(None, BackupOutcomes(), id="no record"),
        pytest.param({"last_success": SUCCESS}, BackupOutcomes(SUCCESS), id="a success"),
        pytest.param(
            {"last_success": SUCCESS, "last_failure": FAILURE},
            BackupOutcomes(SUCCESS, FAILURE),
            id="both",
        ),
        pytest.param("{torn", BackupOutcomes(), id="torn"),
        pytest.param("[1, 2]", BackupOutcomes(), id="not an object"),
        pytest.param({"last_success": "yesterday"}, BackupOutcomes(), id="entry not a mapping"),
        pytest.param(
            {"last_success": {"time": "1700000000"}}, BackupOutcomes(), id="time a string"
        ),
        pytest.param({"last_success": {"time": True}}, BackupOutcomes(), id="time a boolean"),
        pytest.param({"last_success": {"time": -5}}, BackupOutcomes(), id="time negative"),
        pytest.param({"last_failure": {"time": 1e400}}, BackupOutcomes(), id="time infinite"),
    ],
)
def test_the_record_is_read_and_anything_unusable_reads_as_none(
    tmp_path: Path, record: Any, expected: BackupOutcomes
) -> None:
    if record is not None:
        write_record(tmp_path, "web", record)
    assert schedules.read_outcomes(str(tmp_path), "web") == expected


def test_a_name_that_is_no_service_name_reads_no_other_file(tmp_path: Path) -> None:
    write_record(tmp_path, "web", {"last_success": SUCCESS})
    with pytest.raises(SpecError):
        schedules.read_outcomes(str(tmp_path / "backups" / "x"), "../web")
    assert schedules.last_backup_time(str(tmp_path), "../backups/web") is None
    assert schedules.last_backup_time(str(tmp_path), "web") == 1700000000.5
    assert schedules.last_backup_time(str(tmp_path), "api") is None


def test_the_last_backup_shows_its_time_age_and_snapshot() -> None:
    outcomes = BackupOutcomes(SUCCESS, FAILURE)
    now = SUCCESS["time"] + 7200

    assert schedules.last_backup(outcomes, now) == {
        "time": 1700000000.5,
        "age": 7200.0,
        "snapshot": "4bba301e",
    }
    assert schedules.last_backup_failure(outcomes, now) == {
        "time": 1700003600.0,
        "age": 3600.5,
        "error": "repository unreachable",
    }
    # A clock set back: no negative age.
    assert schedules.last_backup(outcomes, 0.0)["age"] == 0.0  # type: ignore[index]
    assert schedules.last_backup(BackupOutcomes(), now) is None
    assert schedules.last_backup_failure(BackupOutcomes(SUCCESS), now) is None


# --- status and metrics ------------------------------------------------------------------


class InspectedHost:
    def __init__(self, containers: list[Any]) -> None:
        self.containers = containers
        self.details = {"State": {"Status": "running", "Running": True}, "Config": {}}

    def managed(self, service: str | None = None, kept: bool = False) -> list[Any]:
        return [c for c in self.containers if service is None or c.service == service]

    def inspect(self, container_id: str) -> dict[str, Any]:
        return self.details


def test_each_replica_row_shows_its_services_last_backup(
    make_spec: Callable[..., ServiceSpec],
    actual: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = desired_replicas(make_spec(replicas=2), None)
    host = InspectedHost([actual(first), actual(second)])
    write_record(tmp_path, "web", {"last_success": SUCCESS, "last_failure": FAILURE})
    reads: list[str] = []
    real_load = BackupRecord.load

    def counting(record: BackupRecord) -> dict[str, Any]:
        reads.append(str(record.path))
        return real_load(record)

    monkeypatch.setattr(BackupRecord, "load", counting)

    rows = replica_status(host, None, str(tmp_path), now=SUCCESS["time"] + 60)  # type: ignore[arg-type]

    shown = {"time": 1700000000.5, "age": 60.0, "snapshot": "4bba301e"}
    assert [row["last_backup"] for row in rows["web"]] == [shown, shown]
    assert rows["web"][0]["last_backup_failure"]["error"] == "repository unreachable"
    assert len(reads) == 1  # one small read per service, not per replica

    # Never backed up: None.
    os.unlink(tmp_path / "backups" / "web.json")
    rows = replica_status(host, None, str(tmp_path))  # type: ignore[arg-type]
    assert rows["web"][0]["last_backup"] is None
    assert rows["web"][0]["last_backup_failure"] is None


def test_the_backup_metrics_render() -> None:
    web = ServiceState(
        "web",
        desired=1,
        backup_configured=True,
        last_backup_success=1700000000.5,
        last_backup_failure=1700003600.0,
    )
    never = ServiceState("db", desired=1, backup_configured=True)
    plain = ServiceState("api", desired=1)

    text = metrics.render([web, never, plain])

    backup_lines = [line for line in text.splitlines() if "dockerops_backup" in line]
    assert backup_lines == [
        "# HELP dockerops_backup_configured 1 when pillar declares a backup for the service.",
        "# TYPE dockerops_backup_configured gauge",
        'dockerops_backup_configured{service="db"} 1',
        'dockerops_backup_configured{service="web"} 1',
        "# HELP dockerops_backup_last_success_timestamp_seconds When the service's last "
        "successful backup started (Unix time).",
        "# TYPE dockerops_backup_last_success_timestamp_seconds gauge",
        'dockerops_backup_last_success_timestamp_seconds{service="web"} 1700000000.5',
        "# HELP dockerops_backup_last_failure_timestamp_seconds When the service's last "
        "failed backup started (Unix time).",
        "# TYPE dockerops_backup_last_failure_timestamp_seconds gauge",
        'dockerops_backup_last_failure_timestamp_seconds{service="web"} 1700003600.0',
    ]  # fmt: skip


class NoDocker:
    def managed(self, service: str | None = None, kept: bool = False) -> Any:
        raise AssertionError("listed the containers again")


def test_the_metrics_file_shows_configured_and_last_backups(tmp_path: Path) -> None:
    write_record(tmp_path, "web", {"last_success": SUCCESS})
    write_record(tmp_path, "db", {"last_failure": FAILURE})
    write_record(tmp_path, "old", {"last_success": SUCCESS})  # no backup in pillar now
    data = pillar(
        {
            "web": service(consistency="none"),
            "db": {
                **service(consistency="bogus"),
                "data": [{"host": "/srv/dockerops/db", "container": "/d"}],
            },
            "api": {"image": "reg/api", "tag": "1"},
            "old": {"image": "reg/old", "tag": "1"},
        }
    )
    # Rows as status gives them carry the record already: it is not read again.
    rows = {
        "web": [
            {
                "slot": 1,
                "state": "running",
                "last_backup": {"time": 5.0},
                "last_backup_failure": None,
            }
        ]
    }
    path = tmp_path / "dockerops.prom"

    assert metrics.write_metrics(NoDocker(), str(path), str(tmp_path), data, rows=rows)  # type: ignore[arg-type]

    text = path.read_text()
    assert 'dockerops_backup_configured{service="web"} 1\n' in text
    # An invalid backup is still a configured one: it never succeeds.
    assert 'dockerops_backup_configured{service="db"} 1\n' in text
    assert 'dockerops_backup_configured{service="api"}' not in text
    assert 'dockerops_backup_last_success_timestamp_seconds{service="web"} 5.0\n' in text
    assert 'dockerops_backup_last_success_timestamp_seconds{service="db"}' not in text
    assert 'dockerops_backup_last_failure_timestamp_seconds{service="db"} 1700003600.0\n' in text
    assert "old" not in text.split("dockerops_backup", 1)[1]
