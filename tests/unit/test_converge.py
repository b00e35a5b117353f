"""converge() on the simulated Docker host: what a failed or a start-first rollout reports.

The engine's report is folded into the service's result in one place; these
tests read the result as the Salt faces do (``result``, ``errors``,
``changes``, the history entry).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from dockerops.converge import ServiceResult, converge
from dockerops.health import Clock
from dockerops.history import History
from dockerops.host import DockerHost
from dockerops.replicas import desired_replicas
from dockerops.spec import ServiceSpec
from tests.unit.test_rollout_engine import SimClock, SimHost

MakeSpec = Callable[..., ServiceSpec]
# Healthy after 1 s (the simulated images), held for interval x retries = 2 s.
HEALTHCHECK = {"test": "true", "interval": "1s", "retries": 2}


@pytest.fixture
def service(make_spec: MakeSpec, tmp_path: Path) -> Callable[..., tuple[SimHost, ServiceResult]]:
    """``service(tag, replicas=3, old="1.4", fail_create=...)``: converge ``old`` to ``tag``."""

    def run(
        tag: str, replicas: int = 3, old: str = "1.4", fail_create: tuple[str, ...] = ()
    ) -> tuple[SimHost, ServiceResult]:
        clock = SimClock()
        host = SimHost(clock)
        for replica in desired_replicas(
            make_spec(replicas=replicas, tag=old, healthcheck=HEALTHCHECK)
        ):
            host.add(replica)
        host.fail_create.update(fail_create)
        spec = make_spec(replicas=replicas, tag=tag, healthcheck=HEALTHCHECK)
        result = converge(
            cast(DockerHost, host),
            spec,
            state_dir=str(tmp_path),
            jid="20240101000000000000",
            clock=Clock(clock.now, clock.sleep),
        )
        return host, result

    return run


def history(tmp_path: Path) -> list[dict[str, Any]]:
    return History(str(tmp_path), "web").entries()


def test_a_version_never_healthy_fails_with_its_log_and_changes_nothing(
    service: Callable[..., tuple[SimHost, ServiceResult]], tmp_path: Path
) -> None:
    host, result = service("broken")

    assert result.result is False
    (error,) = result.errors
    assert error.startswith("web-4 became unhealthy\nlast log lines of web-4:\n")
    assert "web-4 broken: simulated log line" in error
    assert result.changes == {}
    assert result.rolled_back == []
    assert host.live_tags() == [(f"web-{i}", "1.4") for i in (1, 2, 3)]
    (entry,) = history(tmp_path)
    assert entry["result"] is False and entry["error"] == error


def test_a_failure_after_batches_counted_reports_only_the_rollback(
    service: Callable[..., tuple[SimHost, ServiceResult]], tmp_path: Path
) -> None:
    """Three replacements count in the spare slots; the fourth, in web-1's
    freed slot, cannot start: every replaced replica is put back."""
    host, result = service("1.5", replicas=4, old="stubborn", fail_create=("web-1",))

    assert result.result is False
    assert "starting web-1: port is already allocated" in result.errors[0]
    assert result.rolled_back == ["web-1", "web-2", "web-3"]
    # Nothing replaced is left: only the rollback is a change.
    assert result.changes == {"rolled_back": ["web-1", "web-2", "web-3"]}
    assert host.live_tags() == [(f"web-{i}", "stubborn") for i in (1, 2, 3, 4)]
    # The three old replicas needed a kill: the steps say so, once each.
    kills = [s for s in result.steps if "needed a kill after its 10s grace period" in s]
    assert sorted(k.split()[0] for k in kills) == ["web-1", "web-2", "web-3"]
    (entry,) = history(tmp_path)
    assert entry["rolled_back"] == ["web-1", "web-2", "web-3"]
    assert entry["result"] is False


def test_changes_are_keyed_by_the_containers_that_run_now(
    service: Callable[..., tuple[SimHost, ServiceResult]],
) -> None:
    host, result = service("1.5")

    assert result.result is True, result.errors
    assert host.live_tags() == [(f"web-{i}", "1.5") for i in (4, 5, 6)]
    image = {"old": "registry.example.com/web:1.4", "new": "registry.example.com/web:1.5"}
    assert result.changes == {
        f"web-{new}": {
            "recreated": {"changed": ["image"]},
            "image": image,
            "container": {"old": f"web-{old}", "new": f"web-{new}"},
        }
        for old, new in ((1, 4), (2, 5), (3, 6))
    }


def test_a_single_replica_is_keyed_by_the_spare_slot_it_runs_in_now(
    service: Callable[..., tuple[SimHost, ServiceResult]],
) -> None:
    host, result = service("1.5", replicas=1)

    assert list(result.changes) == ["web-2"]
    assert result.changes["web-2"]["container"] == {"old": "web-1", "new": "web-2"}
    assert host.live_tags() == [("web-2", "1.5")]


def test_new_replicas_are_watched_together_one_hold_for_all(
    make_spec: MakeSpec, tmp_path: Path
) -> None:
    """A first deploy of 4 replicas: created one after another (0.3 s each),
    healthy 1 s after each start, each held 2 s; watched together, the run
    ends about one health wait and one hold after the last create, not four."""
    clock = SimClock()
    host = SimHost(clock)
    spec = make_spec(replicas=4, tag="1.5", healthcheck=HEALTHCHECK)

    result = converge(
        cast(DockerHost, host),
        spec,
        state_dir=str(tmp_path),
        clock=Clock(clock.now, clock.sleep),
    )

    assert result.result is True, result.errors
    assert [s.split(" (")[0] for s in result.steps] == [f"started web-{i}" for i in (1, 2, 3, 4)]
    assert host.live_tags() == [(f"web-{i}", "1.5") for i in (1, 2, 3, 4)]
    # 4 creates (1.2 s) + healthy 1 s after the last + the 2 s hold, and polls.
    assert clock.now() < 4 * 0.3 + 1 + 2 + 1, clock.now()


def test_a_new_replica_that_never_counts_fails_the_run_and_the_others_are_proven(
    make_spec: MakeSpec, tmp_path: Path
) -> None:
    from dockerops.ledger import Ledger

    clock = SimClock()
    host = SimHost(clock)
    spec = make_spec(replicas=2, tag="broken", healthcheck=HEALTHCHECK)

    result = converge(
        cast(DockerHost, host), spec, state_dir=str(tmp_path), clock=Clock(clock.now, clock.sleep)
    )

    assert result.result is False
    assert result.errors[0].startswith("web-1 became unhealthy\nlast log lines of web-1:\n")
    assert Ledger(str(tmp_path), "web").proven() == set()
