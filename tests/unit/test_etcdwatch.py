"""The etcd beacon's judgement (dockerops.etcdwatch): a baseline first, one
event per changed service per pass, every service after a compaction, and
unreachable/reachable once per transition, with the revision kept."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from dockerops.etcd import EtcdError, WatchResult, _WatchStream
from dockerops.etcdwatch import (
    MAX_KEYS,
    EtcdBeaconMemory,
    Pass,
    etcd_services,
    look,
    on_baseline,
    on_error,
    on_problems,
    on_watch,
    pass_budget,
    start_revision,
)
from tests.support.builders import pillar

STORE = "http://127.0.0.1:2379"
SERVICES = {
    "web": {"app.json": "/web/prod/", "flags.env": "/flags/"},
    "api": {"api.yaml": "/api/prod/"},
    "worker": {"flags.env": "/flags/"},
}


def roundtrip(found: Pass) -> dict[str, Any]:
    """What is remembered survives the state file (JSON)."""
    return dict(json.loads(json.dumps(found.memory)))


def changes(revision: int, **keys: list[str]) -> WatchResult:
    by_prefix = {f"/{name.replace('_', '/')}/": tuple(found) for name, found in keys.items()}
    return WatchResult(revision, frozenset(by_prefix), by_prefix)


def tags(found: Pass) -> list[str]:
    return [e["tag"] for e in found.events]


def test_the_first_pass_takes_a_baseline_and_fires_nothing() -> None:
    assert start_revision({}, STORE) is None
    found = on_baseline({}, SERVICES, STORE, 41)
    assert (found.events, found.warnings) == ([], [])
    assert start_revision(roundtrip(found), STORE) == 42


@pytest.mark.parametrize(
    "memory",
    [
        {"store": "http://other:2379", "revision": 7},  # another store, another history
        {"store": STORE, "revision": 0},
        {"store": STORE, "revision": True},
        {"store": STORE, "revision": "7"},
        {"store": STORE},
    ],
)
def test_a_revision_of_another_store_or_not_a_revision_means_a_new_baseline(
    memory: dict[str, Any],
) -> None:
    assert start_revision(memory, STORE) is None


def test_one_event_per_changed_service_however_many_keys_changed() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10))
    found = on_watch(
        memory,
        SERVICES,
        STORE,
        changes(14, web_prod=["/web/prod/db/host", "/web/prod/port"], flags=["/flags/x"]),
    )
    assert tags(found) == ["web/changed", "worker/changed"]  # api's prefix did not change
    web, worker = found.events
    assert web == {
        "tag": "web/changed",
        "event": "changed",
        "service": "web",
        "files": ["app.json", "flags.env"],
        "keys": ["/flags/x", "/web/prod/db/host", "/web/prod/port"],
        "keys_total": 3,
        "revision": 14,
        "compacted": False,
    }
    assert (worker["files"], worker["keys"]) == (["flags.env"], ["/flags/x"])
    assert start_revision(roundtrip(found), STORE) == 15


def test_nothing_changed_nothing_fires_and_the_revision_moves_on() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10))
    found = on_watch(memory, SERVICES, STORE, WatchResult(12, frozenset()))
    assert found.events == []
    assert start_revision(roundtrip(found), STORE) == 13


def test_changed_keys_are_capped() -> None:
    keys = [f"/api/prod/k{n:03d}" for n in range(MAX_KEYS + 7)]
    found = on_watch({"store": STORE, "revision": 1}, SERVICES, STORE, changes(99, api_prod=keys))
    (event,) = found.events
    assert event["keys"] == keys[:MAX_KEYS]
    assert event["keys_total"] == MAX_KEYS + 7


def test_a_compacted_history_reports_every_watched_service_once() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10))
    compacted = WatchResult(500, frozenset(["/web/prod/", "/flags/", "/api/prod/"]), {}, True)
    found = on_watch(memory, SERVICES, STORE, compacted)
    assert tags(found) == ["api/changed", "web/changed", "worker/changed"]
    assert all(e["compacted"] and e["keys"] == [] and e["revision"] == 500 for e in found.events)
    assert found.events[1]["files"] == ["app.json", "flags.env"]
    assert "compacted" in found.infos[0]
    # Then it goes on from the store's revision: the next pass is an ordinary one.
    again = on_watch(roundtrip(found), SERVICES, STORE, WatchResult(500, frozenset()))
    assert again.events == [] and start_revision(roundtrip(again), STORE) == 501


def test_unreachable_once_per_transition_and_the_revision_is_kept() -> None:
    down = EtcdError("unreachable", "etcd unreachable (http://127.0.0.1:2379: connection refused)")
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10))

    first = on_error(memory, SERVICES, down)
    assert tags(first) == ["api/unreachable", "web/unreachable", "worker/unreachable"]
    assert first.events[0]["reason"] == str(down) and first.events[0]["kind"] == "unreachable"
    assert len(first.warnings) == 1 and "connection refused" in first.warnings[0]

    second = on_error(roundtrip(first), SERVICES, down)
    assert (second.events, second.warnings) == ([], [])
    assert start_revision(roundtrip(second), STORE) == 11  # kept: nothing is missed

    # Back: reachable once, and what changed meanwhile is reported.
    back = on_watch(roundtrip(second), SERVICES, STORE, changes(20, api_prod=["/api/prod/a"]))
    assert tags(back) == ["api/reachable", "web/reachable", "worker/reachable", "api/changed"]
    assert back.infos == ["dockerops_etcd beacon: etcd answers again"]
    later = on_watch(roundtrip(back), SERVICES, STORE, WatchResult(20, frozenset()))
    assert later.events == [] and later.infos == []

    # Down again: said again.
    assert tags(on_error(roundtrip(later), {"api": {}}, down)) == ["api/unreachable"]


def test_unreachable_on_the_first_pass_then_a_baseline() -> None:
    auth = EtcdError("auth", "etcd at http://127.0.0.1:2379 refused /v3/kv/range for user app")
    first = on_error({}, SERVICES, auth)
    assert first.events[0]["kind"] == "auth"
    memory = roundtrip(first)
    assert start_revision(memory, STORE) is None
    found = on_baseline(memory, SERVICES, STORE, 5)
    assert tags(found) == ["api/reachable", "web/reachable", "worker/reachable"]
    assert start_revision(roundtrip(found), STORE) == 6


def test_skipped_services_are_warned_of_when_the_list_changes() -> None:
    first = on_problems({}, ["service a is not watched: bad"])
    assert first.warnings == ["dockerops_etcd beacon: service a is not watched: bad"]
    assert on_problems(roundtrip(first), ["service a is not watched: bad"]).warnings == []
    both = on_problems(roundtrip(first), ["service a is not watched: bad", "service b: bad"])
    assert both.warnings == ["dockerops_etcd beacon: service b: bad"]


ETCD_FILE = {"etcd": {"prefix": "/web/prod/"}}


def config(**files: Any) -> dict[str, Any]:
    return {"path": "/etc/app", "files": files}


def test_the_services_watched_are_those_with_files_from_etcd() -> None:
    data = pillar(
        {
            "web": {"image": "web", "config": config(**{"app.json": ETCD_FILE})},
            "plain": {"image": "plain", "config": config(**{"a.conf": {"contents": "x"}})},
            "none": {"image": "none"},
            # Invalid, but not about etcd: not validated, not reported.
            "other": {"image": "other", "replicas": "many"},
            "broken": {
                "image": "broken",
                "replicas": "many",
                "config": config(**{"b.json": {"etcd": {"prefix": "/b/"}}}),
            },
        },
        etcd={"endpoints": [STORE]},
    )
    services, problems = etcd_services(data)
    assert services == {"web": {"app.json": "/web/prod/"}}
    (problem,) = problems
    assert problem.startswith("service broken is not watched: dockerops:services:broken:replicas")
    assert etcd_services(data, only=["plain", "web"]) == (services, [])
    assert etcd_services(data, only=["plain"]) == ({}, [])


def test_files_from_etcd_may_come_from_the_defaults() -> None:
    data = pillar(
        {"a": {"image": "a", "config": {"path": "/etc/a"}}, "b": {"image": "b"}},
        defaults={"config": config(**{"app.env": {"etcd": {"prefix": "/d/", "format": "env"}}})},
    )
    assert etcd_services(data)[0] == {"a": {"app.env": "/d/"}, "b": {"app.env": "/d/"}}


@pytest.mark.parametrize("data", [{}, {"dockerops": None}, {"dockerops": {"services": []}}])
def test_no_services_no_look(data: dict[str, Any]) -> None:
    assert look(data, {}).events == []


def test_without_endpoints_the_beacon_says_so_once_and_fires_nothing() -> None:
    data = pillar({"web": {"image": "web", "config": config(**{"app.json": ETCD_FILE})}})
    first = look(data, {})
    assert first.events == []
    assert first.warnings == [
        "dockerops_etcd beacon: dockerops:etcd:endpoints: needed to read config from etcd"
    ]
    assert look(data, roundtrip(first)).warnings == []


def test_the_memory_survives_a_restart_and_a_torn_file_starts_afresh(tmp_path: Any) -> None:
    memory = EtcdBeaconMemory(tmp_path)
    assert memory.load() == {}
    found = on_baseline({}, SERVICES, STORE, 9)
    memory.save(found.memory)
    assert start_revision(EtcdBeaconMemory(tmp_path).load(), STORE) == 10
    memory.path.write_text('{"store": ')
    assert memory.load() == {}


# The watch stream's judgement (dockerops.etcd._WatchStream): etcd's answers
# as the gateway sends them, reduced to what changed up to when the watch began.


def answer(watch_id: int, revision: int | None, *events: tuple[str, int], **flags: Any) -> Any:
    header = {"revision": str(revision)} if revision is not None else {}
    kvs = [{"kv": {"key": b64(key), "mod_revision": str(rev)}} for key, rev in events]
    return {"watch_id": str(watch_id), "header": header, "events": kvs, **flags}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_changes_after_the_watch_began_are_left_to_the_next_watch() -> None:
    stream = _WatchStream({1: "/a/", 2: "/b/"}, start=5)
    stream.take(answer(1, 10, created=True))
    # Past changes of watcher 1 arrive before watcher 2 is created (at 12):
    # the watch began at 10, the oldest.
    stream.take(answer(1, 12, ("/a/x", 6), ("/a/y", 11)))
    assert not stream.all_created()
    stream.take(answer(2, 12, created=True))
    assert stream.all_created() and not stream.caught_up()  # watcher 2 may still send
    stream.take(answer(2, 12, ("/b/z", 9), ("/b/late", 12)))
    assert stream.caught_up()
    result = stream.result()
    assert (result.revision, result.compacted) == (10, False)
    assert result.keys == {"/a/": ("/a/x",), "/b/": ("/b/z",)}


def test_watchers_with_nothing_to_catch_up_on_are_caught_up_at_once() -> None:
    stream = _WatchStream({1: "/a/", 2: "/b/"}, start=11)
    stream.take(answer(1, 10, created=True))
    stream.take(answer(2, 10, created=True))
    assert stream.caught_up()
    assert stream.result() == WatchResult(10, frozenset())
    # A watcher that is behind stays unknown until it answers.
    behind = _WatchStream({1: "/a/"}, start=10)
    behind.take(answer(1, 10, created=True))
    assert not behind.caught_up()


def test_a_compacted_watcher_or_a_store_behind_means_every_prefix() -> None:
    stream = _WatchStream({1: "/a/", 2: "/b/"}, start=3)
    stream.take(answer(1, 20, created=True))
    stream.take(answer(2, 20, created=True))
    stream.take(answer(2, None, canceled=True, compact_revision="15"))
    assert stream.caught_up()
    assert stream.result() == WatchResult(20, frozenset({"/a/", "/b/"}), {}, compacted=True)

    behind = _WatchStream({1: "/a/"}, start=30)
    behind.take(answer(1, 20, created=True))
    assert behind.result().compacted


def test_an_answer_for_a_watcher_never_asked_for_is_refused() -> None:
    with pytest.raises(EtcdError) as err:
        _WatchStream({1: "/a/"}, start=3).take(answer(7, 20, created=True))
    assert err.value.kind == "bad_answer"


CLUSTER_A = {"cluster_id": "1111", "member_id": "21"}


def test_another_cluster_at_the_same_endpoints_reports_every_service() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10, CLUSTER_A))
    assert memory["cluster_id"] == "1111"
    # A new cluster whose revision is past the remembered one: its changes
    # say nothing of what changed since revision 10 in the old one.
    other = {"cluster_id": "3333", "member_id": "41"}
    found = on_watch(memory, SERVICES, STORE, changes(40, api_prod=["/api/prod/a"]), other)
    assert tags(found) == ["api/changed", "web/changed", "worker/changed"]
    assert all(e["compacted"] and e["keys"] == [] and e["revision"] == 40 for e in found.events)
    assert found.warnings == [
        "dockerops_etcd beacon: another etcd cluster answers at the endpoints (cluster id "
        "3333, was 1111): every watched service is reported changed; watching from revision "
        "40 on"
    ]
    after = roundtrip(found)
    assert (after["cluster_id"], start_revision(after, STORE)) == ("3333", 41)
    assert on_watch(after, SERVICES, STORE, WatchResult(40, frozenset()), other).events == []


def test_another_member_of_the_same_cluster_is_the_same_store() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10, CLUSTER_A))
    failover = {"cluster_id": "1111", "member_id": "22"}
    found = on_watch(memory, SERVICES, STORE, changes(12, api_prod=["/api/prod/a"]), failover)
    assert tags(found) == ["api/changed"] and not found.events[0]["compacted"]
    # A memory from before clusters were remembered matches any, and learns it.
    old = {"store": STORE, "revision": 10}
    found = on_watch(old, SERVICES, STORE, WatchResult(12, frozenset()), CLUSTER_A)
    assert found.events == [] and found.memory["cluster_id"] == "1111"


def test_a_failed_watch_reports_every_service_with_its_reason() -> None:
    memory = roundtrip(on_baseline({}, SERVICES, STORE, 10, CLUSTER_A))
    every = frozenset(p for files in SERVICES.values() for p in files.values())
    why = "the watch failed (etcd at x sent a watch answer larger than 67108864 bytes)"
    found = on_watch(memory, SERVICES, STORE, WatchResult(90, every, {}, True), CLUSTER_A, why)
    assert tags(found) == ["api/changed", "web/changed", "worker/changed"]
    assert found.warnings[0].startswith(f"dockerops_etcd beacon: {why}: every watched")
    assert start_revision(roundtrip(found), STORE) == 91


@pytest.mark.parametrize(
    ("interval", "wait", "budget"), [(10, 0.3, 5.0), (1, 0.3, 2.3), (2, 5, 7.0), (60, 5, 30.0)]
)
def test_a_pass_is_bounded_by_half_the_interval_or_its_wait_and_two_seconds(
    interval: float, wait: float, budget: float
) -> None:
    assert pass_budget(interval, wait) == pytest.approx(budget)


def test_the_docs_promise_at_most_once_per_revision_not_exactly_once() -> None:
    import dockerops.etcdwatch

    beacon = (Path(__file__).resolve().parents[2] / "_beacons" / "dockerops_etcd.py").read_text()
    for text in (dockerops.etcdwatch.__doc__ or "", beacon):
        flat = " ".join(text.split())
        assert "neither misses" not in flat and "nor fires one twice" not in flat
        assert "at most once per revision" in flat
        assert "power cut between the save and the fire can drop one pass's events" in flat
    assert "max(interval / 2, wait + 2)" in " ".join(beacon.split())
