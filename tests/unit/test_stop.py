"""Stopping a replica within its own grace period, and telling when it needed a kill.

``DockerHost.stop`` against a fake Docker API and a fake clock; the ledger's
record of the last stop; ``dockerops.status`` showing it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dockerops import host as host_module
from dockerops.host import DockerHost, StopReport, stop_grace
from dockerops.ledger import Ledger
from dockerops.status import replica_status


class FakeAPI:
    """The stop, inspect and remove calls, on a clock the stop advances."""

    def __init__(self, took: float, exit_code: int, stop_timeout: int | None = None) -> None:
        self.took = took
        self.exit_code = exit_code
        self.stop_timeout = stop_timeout
        self.now = 100.0
        self.calls: list[tuple[str, Any]] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.calls.append(("inspect", container_id))
        config: dict[str, Any] = {}
        if self.stop_timeout is not None:
            config["StopTimeout"] = self.stop_timeout
        state = {"Status": "exited", "ExitCode": self.exit_code}
        return {"Config": config, "State": state}

    def stop(self, container_id: str, timeout: int) -> None:
        self.calls.append(("stop", timeout))
        self.now += self.took

    def remove_container(self, container_id: str, force: bool) -> None:
        self.calls.append(("remove", container_id))


def host_on(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> DockerHost:
    monkeypatch.setattr(host_module, "time", SimpleNamespace(monotonic=lambda: api.now))
    return DockerHost(cast(Any, SimpleNamespace(api=api)))


@pytest.mark.parametrize(
    ("took", "exit_code", "stop_timeout", "killed"),
    [
        pytest.param(10.0, 137, None, True, id="sigterm-ignored-killed-after-10s"),
        pytest.param(3.0, 137, 3, True, id="own-grace-period"),
        pytest.param(0.2, 0, None, False, id="prompt"),
        pytest.param(0.2, 143, None, False, id="died-of-sigterm"),
        # stop_signal SIGKILL: 137 at once, no grace period was waited.
        pytest.param(0.1, 137, None, False, id="stop-signal-is-sigkill"),
        # Took the whole grace period but exited by itself just in time.
        pytest.param(10.0, 0, None, False, id="slow-but-clean"),
    ],
)
def test_a_stop_says_whether_it_needed_a_kill(
    monkeypatch: pytest.MonkeyPatch,
    took: float,
    exit_code: int,
    stop_timeout: int | None,
    killed: bool,
) -> None:
    api = FakeAPI(took, exit_code, stop_timeout)
    host = host_on(api, monkeypatch)

    stop = host.remove("c1", "web-1")

    grace = 10 if stop_timeout is None else stop_timeout
    assert stop == StopReport("web-1", took, grace, killed)
    # Stopped with the container's own grace period, inspected after the stop, then removed.
    assert api.calls == [("inspect", "c1"), ("stop", grace), ("inspect", "c1"), ("remove", "c1")]


def test_a_stop_uses_the_inspect_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI(0.1, 0, stop_timeout=99)
    host = host_on(api, monkeypatch)

    host.remove("c1", "web-1", details={"Config": {"StopTimeout": 4}})

    assert api.calls[0] == ("stop", 4)


def test_a_forced_removal_reports_no_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeAPI(0.1, 137)
    host = host_on(api, monkeypatch)

    assert host.remove("c1", "web-1", graceful=False) is None
    assert api.calls == [("remove", "c1")]


@pytest.mark.parametrize(
    ("config", "grace"),
    [({}, 10), ({"StopTimeout": 30}, 30), ({"StopTimeout": 0}, 0), ({"StopTimeout": None}, 10)],
)
def test_stop_grace(config: dict[str, Any], grace: int) -> None:
    assert stop_grace({"Config": config}) == grace


def test_the_last_stop_is_kept_in_the_service_record(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path), "web")
    assert ledger.last_stop() is None

    ledger.record_stop(StopReport("web-1", 10.02, 10, True))
    ledger.record_stop(StopReport("web-2", 10.01, 10, True))

    assert ledger.last_stop() == {
        "container": "web-2",
        "seconds": 10.01,
        "grace": 10,
        "killed": True,
        "hint": "needed a kill after its 10s grace period: its PID 1 ignores the stop signal; "
        "set init: true or stop_signal",
    }
    record = tmp_path / "services" / "web.json"
    assert record.stat().st_mode & 0o777 == 0o600
    assert json.loads(record.read_text())["last_stop"]["container"] == "web-2"
    # A prompt stop carries no hint.
    ledger.record_stop(StopReport("web-3", 0.3, 10, False))
    assert ledger.last_stop() == {
        "container": "web-3",
        "seconds": 0.3,
        "grace": 10,
        "killed": False,
    }


@pytest.mark.parametrize("garbage", [[1, 2], {"container": "web-1"}, {"seconds": "x"}, "kill"])
def test_a_damaged_last_stop_reads_as_none(tmp_path: Path, garbage: Any) -> None:
    record = tmp_path / "services" / "web.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"last_stop": garbage}))

    assert Ledger(str(tmp_path), "web").last_stop() is None


def test_status_shows_the_last_stop_with_each_replica(
    tmp_path: Path, make_spec: Any, list_entry: Any
) -> None:
    from dockerops.replicas import actual_from_list_entry, desired_replicas

    replicas = desired_replicas(make_spec(replicas=2))
    listed = [actual_from_list_entry(list_entry(r)) for r in replicas]

    class Host:
        def managed(self, service: str | None = None, kept: bool = False) -> list[Any]:
            return listed

        def inspect(self, container_id: str) -> dict[str, Any]:
            return {"State": {"Status": "running"}, "Config": {}, "HostConfig": {}}

    Ledger(str(tmp_path), "web").record_stop(StopReport("web-3", 10.0, 10, True))

    status = replica_status(cast(DockerHost, Host()), "web", str(tmp_path))

    assert [r["container"] for r in status["web"]] == ["web-1", "web-2"]
    for replica in status["web"]:
        assert replica["last_stop"]["container"] == "web-3"
        assert replica["last_stop"]["killed"] is True
        assert "set init: true or stop_signal" in replica["last_stop"]["hint"]
