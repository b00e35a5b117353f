"""Pillar for backups: each bad input is refused with its pillar path, the
password and repository never echoed."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops import spec
from dockerops.errors import SpecError

DATA = [{"host": "/srv/dockerops/web/data", "container": "/data"}]


def pillar(backup: Any, data: Any = None, root: Any = None) -> dict[str, Any]:
    service = {"image": "web", "data": DATA if data is None else data, "backup": backup}
    top: dict[str, Any] = {"services": {"web": service}}
    if root is not None:
        top["backup"] = root
    return {"dockerops": top}


def problems(backup: Any, data: Any = None) -> str:
    with pytest.raises(SpecError) as err:
        spec.load_service(pillar(backup, data), "web")
    return str(err.value)


def test_a_full_backup_declaration_is_read() -> None:
    loaded = spec.load_service(
        pillar(
            {
                "consistency": "exec",
                "exec": "pg_dumpall > /data/all.sql",
                "exec_timeout": "5m",
                "keep": {"last": 7, "daily": 7, "weekly": 4, "monthly": 6},
                "schedule": {"hours": 24, "splay": 600},
                "paths": ["/data"],
            }
        ),
        "web",
    )
    assert loaded.backup is not None
    assert loaded.backup.exec == ["/bin/sh", "-c", "pg_dumpall > /data/all.sql"]
    assert loaded.backup.exec_timeout == 300
    assert loaded.backup.keep is not None
    assert loaded.backup.keep.flags() == [
        "--keep-last=7",
        "--keep-daily=7",
        "--keep-weekly=4",
        "--keep-monthly=6",
    ]
    assert loaded.backup.schedule is not None
    assert loaded.backup.schedule.scheduler_args() == {"hours": 24, "splay": 600}
    assert [m.container for m in loaded.backup_mounts()] == ["/data"]


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        ({}, "backup:consistency: Field required"),
        ({"consistency": "snapshot"}, "backup:consistency: Input should be"),
        ({"consistency": "exec"}, "consistency exec needs the command to run"),
        ({"consistency": "stop", "exec": "true"}, "exec is run only with consistency exec"),
        ({"consistency": "none", "keep": {}}, "keep at least one kind of snapshot"),
        ({"consistency": "none", "keep": {"daily": 0}}, "backup:keep:daily"),
        (
            {"consistency": "none", "schedule": {"hours": 1, "when": "03:00"}},
            "not both",
        ),
        ({"consistency": "none", "schedule": {}}, "not neither"),
        ({"consistency": "none", "paths": ["/etc"]}, "'/etc' is not one of the service's data"),
        ({"consistency": "none", "exec_timeout": "48h"}, "backup:exec_timeout: at most"),
    ],
)
def test_bad_backup_declarations_name_their_pillar_path(backup: Any, expected: str) -> None:
    text = problems(backup)
    assert "dockerops:services:web:backup" in text
    assert expected in text


def test_a_backup_needs_data_mounts() -> None:
    assert "the service has no data mounts to back up" in problems({"consistency": "none"}, [])


def test_a_tmpfs_volume_cannot_be_backed_up() -> None:
    data = [
        {
            "volume": "scratch",
            "container": "/s",
            "driver_opts": {"type": "tmpfs", "device": "tmpfs"},
        }
    ]
    text = problems({"consistency": "pause"}, data)
    assert "scratch is a tmpfs volume" in text


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ({"repository": "/srv/dockerops/backups"}, "inside dockerops:allowed_host_paths"),
        ({"repository": "/srv"}, "contains the allowed host path /srv/dockerops"),
        ({"repository": "ftp://host/x"}, "dockerops:backup:repository: an absolute path"),
        ({"repository": "/"}, "dockerops:backup:repository: not /"),
        ({"password": ""}, "dockerops:backup:password: a password is one non-empty line"),
        ({"password": "sec\nret"}, "dockerops:backup:password: a password is one non-empty line"),
        ({"password": "\udcff-half-a-surrogate"}, "dockerops:backup:password: a password is UTF-8"),
        ({"password": "x" * 5000}, "dockerops:backup:password: a password is at most 4096 bytes"),
    ],
)
def test_bad_repository_settings_are_refused(root: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as err:
        spec.load_root(pillar({"consistency": "none"}, root=root))
    assert expected in str(err.value)


def test_the_password_and_repository_are_never_echoed() -> None:
    secret = "hunter2-the-secret"
    for root in (
        {"repository": f"rest:https://u:{secret}@", "password": 5},
        {"repository": f"ftp://{secret}", "password": f"{secret}\n"},
    ):
        with pytest.raises(SpecError) as err:
            spec.load_root(pillar({"consistency": "none"}, root=root))
        assert secret not in str(err.value)


@pytest.mark.parametrize(
    "location",
    ["sftp:backup@host:/srv/restic", "rest:https://host:8000/", "s3:s3.amazonaws.com/bucket"],
)
def test_remote_repositories_are_accepted(location: str) -> None:
    root = spec.load_root(pillar({"consistency": "none"}, root={"repository": location}))
    assert root.backup.repository == location and root.backup.local_path is None
