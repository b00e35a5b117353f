"""The formula's backup schedules (``salt/dockerops/backups.sls``) as Salt renders
them: one ``schedule.present`` per service with ``backup:schedule``, the stale
``dockerops-backup-*`` entries removed, an invalid service failing on its own,
and names that never change the shape of the SLS."""

from __future__ import annotations

from typing import Any

import pytest

REPOSITORY = {"repository": "/srv/backups/restic", "password": "s3cret-pass"}


@pytest.fixture
def scheduled(salt: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``scheduled({...})``: the minion's scheduler entries (its ``schedule`` option)."""

    def set_schedule(entries: dict[str, Any]) -> None:
        monkeypatch.setitem(salt._original_opts, "schedule", entries)
        salt.set_pillar({})  # reloads the loaders; show_sls lays pillar= over it

    set_schedule({})
    return set_schedule


def rendered(salt: Any, sls: str, pillar: dict[str, Any]) -> dict[str, Any]:
    states = salt.modules.state.show_sls(sls, pillar=pillar)
    assert isinstance(states, dict), states  # a list is Salt's render errors
    return states


def args(body: dict[str, Any], module: str) -> dict[str, Any]:
    """A rendered state's function (``state``) and arguments (Salt's ``order`` left out)."""
    (function,) = [item for item in body[module] if isinstance(item, str)]
    out = {k: v for item in body[module] if isinstance(item, dict) for k, v in item.items()}
    out.pop("order", None)
    return {"state": function, **out}


def service(name: str, **backup: Any) -> dict[str, Any]:
    return {
        "image": "reg/app",
        "tag": "1",
        "data": [{"host": f"/srv/dockerops/{name}/data", "container": "/data"}],
        "backup": backup,
    }


def test_each_scheduled_service_gets_a_persisted_entry_and_stale_ones_go(
    salt: Any, scheduled: Any
) -> None:
    scheduled(
        {
            "dockerops-backup-web": {"function": "dockerops.backup", "args": ["web"]},
            "dockerops-backup-gone": {"function": "dockerops.backup", "args": ["gone"]},
            "nightly-report": {"function": "test.ping"},
        }
    )
    pillar = {
        "dockerops": {
            "backup": REPOSITORY,
            "services": {
                "web": service("web", consistency="stop", schedule={"when": "03:00", "splay": 60}),
                "db": service("db", consistency="none", schedule={"hours": 6}),
                "api": {"image": "reg/api", "tag": "1"},
            },
        }
    }

    states = rendered(salt, "dockerops.backups", pillar)

    assert sorted(states) == [
        "dockerops-backup-db-schedule-present",
        "dockerops-backup-gone-schedule-absent",
        "dockerops-backup-web-schedule-present",
    ]
    assert args(states["dockerops-backup-web-schedule-present"], "schedule") == {
        "state": "present",
        "name": "dockerops-backup-web",
        "function": "dockerops.backup",
        "job_args": ["web"],
        "when": ["03:00"],
        "splay": 60,
        "persist": True,
    }
    assert args(states["dockerops-backup-db-schedule-present"], "schedule")["hours"] == 6
    assert args(states["dockerops-backup-gone-schedule-absent"], "schedule") == {
        "state": "absent",
        "name": "dockerops-backup-gone",
        "persist": True,
    }
    # The whole formula includes it.
    assert "dockerops-backup-web-schedule-present" in rendered(salt, "dockerops", pillar)


def test_an_invalid_service_keeps_its_entry_and_its_state_fails(salt: Any, scheduled: Any) -> None:
    scheduled({"dockerops-backup-web": {"function": "dockerops.backup", "args": ["web"]}})
    pillar = {
        "dockerops": {
            "backup": REPOSITORY,
            "services": {
                "web": service("web", consistency="none", schedule={"hours": "often"}),
                "db": service("db", consistency="none", schedule={"hours": 6}),
            },
        }
    }

    states = rendered(salt, "dockerops.backups", pillar)

    assert sorted(states) == [
        "dockerops-backup-db-schedule-present",
        "dockerops-backup-web-schedule-invalid",
    ]
    failing = args(states["dockerops-backup-web-schedule-invalid"], "test")
    assert failing["result"] is False and failing["allow_test_mode_failure"] is True
    assert "backup schedule left as it is" in failing["comment"]
    assert "dockerops:services:web:backup:schedule:hours" in failing["comment"]
    assert "s3cret-pass" not in str(states)


def test_an_invalid_top_of_pillar_removes_nothing(salt: Any, scheduled: Any) -> None:
    scheduled({"dockerops-backup-web": {"function": "dockerops.backup", "args": ["web"]}})

    states = rendered(salt, "dockerops.backups", {"dockerops": {"backup": {"repository": "x"}}})

    assert list(states) == ["dockerops-backups-pillar-invalid"]
    assert "dockerops:backup" in args(states["dockerops-backups-pillar-invalid"], "test")["comment"]
    # A pillar the formula cannot read at all: services.sls says so, this adds nothing.
    assert rendered(salt, "dockerops.backups", {"dockerops": "oops"}) == {}


def test_entry_names_never_change_the_shape_of_the_sls(salt: Any, scheduled: Any) -> None:
    # Entry names come from the minion's schedule, which anything may have written.
    hostile = "dockerops-backup-x:\n  cmd.run:\n    - name: touch /tmp/pwned\ny"
    scheduled({hostile: {"function": "test.ping"}, 'dockerops-backup-"q"': {}})

    states = rendered(salt, "dockerops.backups", {"dockerops": {"services": {}}})

    assert sorted(states) == sorted(
        [f"{hostile}-schedule-absent", 'dockerops-backup-"q"-schedule-absent']
    )
    assert all(list(body) == ["schedule", "__sls__", "__env__"] for body in states.values()), states
    assert args(states[f"{hostile}-schedule-absent"], "schedule")["name"] == hostile
