"""dockerops.records: what a host remembers per service, in one JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockerops.records import DEFAULT_STATE_DIR, ServiceRecord, state_dir


@pytest.fixture
def record(tmp_path: Path) -> ServiceRecord:
    return ServiceRecord(tmp_path, "web")


def test_record_lives_under_services(tmp_path: Path) -> None:
    assert ServiceRecord(tmp_path, "web").path == tmp_path / "services" / "web.json"
    assert ServiceRecord(str(tmp_path), "api").path == tmp_path / "services" / "api.json"


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({}, DEFAULT_STATE_DIR),
        ({"dockerops.state_dir": None}, DEFAULT_STATE_DIR),
        ({"dockerops.state_dir": ""}, DEFAULT_STATE_DIR),
        ({"dockerops.state_dir": "/tmp/x"}, "/tmp/x"),
    ],
)
def test_state_dir(opts: dict[str, Any], expected: str) -> None:
    assert state_dir(opts) == expected


def test_missing_record_is_empty(record: ServiceRecord) -> None:
    assert record.load() == {}
    assert record.config_seen() == {}


@pytest.mark.parametrize(
    "content",
    ["", "{", "not json", "[1, 2]", '"text"', "null", "42", b"\xff\xfe"],
)
def test_corrupt_record_is_empty(record: ServiceRecord, content: str | bytes) -> None:
    record.path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        record.path.write_bytes(content)
    else:
        record.path.write_text(content)

    assert record.load() == {}
    assert record.config_seen() == {}


@pytest.mark.parametrize("seen", [["abc"], "abc"])
def test_a_corrupt_config_seen_entry_reads_as_empty(record: ServiceRecord, seen: Any) -> None:
    # load() tolerates any corruption of the file; one bad entry must not make
    # every later state run of the service crash either.
    record.save({"config_seen": seen})

    assert record.config_seen() == {}


def test_save_and_load_round_trip(record: ServiceRecord) -> None:
    data = {"config_seen": {"abc": "0123456789abcdef"}, "other": [1, 2]}

    record.save(data)

    assert record.load() == data
    assert json.loads(record.path.read_text()) == data


def test_save_replaces_the_file_and_leaves_no_temporary(record: ServiceRecord) -> None:
    record.save({"a": 1})
    record.save({"b": 2})

    assert record.load() == {"b": 2}
    assert sorted(p.name for p in record.path.parent.iterdir()) == ["web.json"]


def test_failed_save_keeps_the_old_record(record: ServiceRecord) -> None:
    record.save({"a": 1})

    with pytest.raises(TypeError):
        record.save({"a": object()})

    assert record.load() == {"a": 1}
    assert sorted(p.name for p in record.path.parent.iterdir()) == ["web.json"]


def test_config_seen_round_trip(record: ServiceRecord) -> None:
    seen = {"container-1": "0123456789abcdef", "container-2": "fedcba9876543210"}

    record.set_config_seen(seen)

    assert record.config_seen() == seen
    assert ServiceRecord(record.path.parent.parent, "web").config_seen() == seen


def test_set_config_seen_keeps_other_keys(record: ServiceRecord) -> None:
    record.save({"other": "kept", "config_seen": {"a": "1"}})

    record.set_config_seen({"b": "2"})

    assert record.load() == {"other": "kept", "config_seen": {"b": "2"}}


def test_config_seen_values_are_strings(record: ServiceRecord) -> None:
    record.save({"config_seen": {"a": 1}})

    assert record.config_seen() == {"a": "1"}


def test_set_config_seen_does_not_write_when_equal(
    record: ServiceRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    record.set_config_seen({"a": "1"})
    saves: list[dict[str, Any]] = []
    monkeypatch.setattr(record, "save", saves.append)

    record.set_config_seen({"a": "1"})

    assert saves == []


def test_set_config_seen_writes_when_different(
    record: ServiceRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    record.set_config_seen({"a": "1"})
    saves: list[dict[str, Any]] = []
    monkeypatch.setattr(record, "save", saves.append)

    record.set_config_seen({"a": "2"})

    assert saves == [{"config_seen": {"a": "2"}}]


def test_records_of_services_are_separate(tmp_path: Path) -> None:
    ServiceRecord(tmp_path, "web").set_config_seen({"a": "1"})

    assert ServiceRecord(tmp_path, "api").config_seen() == {}
