"""Restart counts noted between looks (dockerops.restarts): what is kept, when
the file is rewritten, and that a failure to write never fails a look."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockerops.errors import SpecError
from dockerops.restarts import RestartSamples

WINDOW = 300.0


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_looks_are_noted_and_a_steady_count_is_not_rewritten_at_every_look(
    tmp_path: Path,
) -> None:
    samples = RestartSamples(tmp_path, "web")
    assert samples.observe({"c1": 0}, 1000.0, WINDOW) == {"c1": [(1000.0, 0)]}
    assert samples.observe({"c1": 0}, 1010.0, WINDOW) == {"c1": [(1000.0, 0), (1010.0, 0)]}
    first = inode(samples.path)
    # Same count, a few seconds later: answered, not rewritten (no fsync per look).
    assert samples.observe({"c1": 0}, 1020.0, WINDOW)["c1"] == [(1000.0, 0), (1020.0, 0)]
    assert inode(samples.path) == first
    # A new count is written at once.
    samples.observe({"c1": 1}, 1030.0, WINDOW)
    assert inode(samples.path) != first
    # The look at 1020 was not saved: the file still had 1010 as the last 0.
    saved = json.loads(samples.path.read_text())
    assert saved == {"c1": [[1000.0, 0], [1010.0, 0], [1030.0, 1]]}
    # A steady count is refreshed after a quarter window.
    second = inode(samples.path)
    samples.observe({"c1": 1}, 1030.0 + WINDOW / 4, WINDOW)
    assert inode(samples.path) != second


def test_containers_no_longer_listed_are_forgotten(tmp_path: Path) -> None:
    samples = RestartSamples(tmp_path, "web")
    samples.observe({"c1": 2, "c2": 0}, 1000.0, WINDOW)
    samples.observe({"c2": 0}, 1001.0, WINDOW)
    assert set(RestartSamples(tmp_path, "web").load()) == {"c2"}


def test_a_damaged_file_or_entry_starts_afresh(tmp_path: Path) -> None:
    samples = RestartSamples(tmp_path, "web")
    samples.path.parent.mkdir(parents=True)
    samples.path.write_text('{"c1": [["x", 1]], "c2": [[5, 1]]}')
    assert samples.load() == {"c2": [(5.0, 1)]}
    samples.path.write_text("{torn")
    assert samples.load() == {}


def test_an_unwritable_state_dir_never_fails_a_look(tmp_path: Path) -> None:
    (tmp_path / "restarts").write_text("a file where the directory goes")
    assert RestartSamples(tmp_path, "web").observe({"c1": 3}, 1000.0, WINDOW) == {
        "c1": [(1000.0, 3)]
    }


@pytest.mark.parametrize("name", ["../etc", "", "a/b"])
def test_a_service_name_never_becomes_a_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError):
        RestartSamples(tmp_path, name)
