"""dockerops.backup's pure parts: tree checksums and the listing comparison
verify_backup and restore rely on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dockerops.backup import _compare, tree_sum


def make_tree(top: Path) -> Path:
    (top / "sub" / "deeper").mkdir(parents=True)
    (top / "a.txt").write_text("alpha\n")
    (top / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (top / "sub" / "deeper" / "empty").write_bytes(b"")
    (top / "link").symlink_to("sub/b.bin")
    return top


def test_tree_sum_counts_and_lists_every_entry(tmp_path):
    found = tree_sum(str(make_tree(tmp_path / "t")))
    assert found.files == 3 and found.bytes == 6 + 2560
    assert found.entries == {
        "a.txt": ("file", 6),
        "link": ("symlink", 0),
        "sub": ("dir", 0),
        "sub/b.bin": ("file", 2560),
        "sub/deeper": ("dir", 0),
        "sub/deeper/empty": ("file", 0),
    }


def test_tree_sum_is_the_same_for_a_byte_identical_copy(tmp_path):
    one = make_tree(tmp_path / "one")
    two = tmp_path / "two"
    shutil.copytree(one, two, symlinks=True)
    os.utime(two / "a.txt", (0, 0))  # times are not content
    assert tree_sum(str(one)).digest == tree_sum(str(two)).digest


@pytest.mark.parametrize(
    "change",
    [
        lambda t: (t / "a.txt").write_text("alphA\n"),  # same size, other bytes
        lambda t: (t / "sub" / "deeper" / "empty").unlink(),
        lambda t: (t / "sub" / "new").write_bytes(b""),
        lambda t: (t / "sub" / "deeper").rename(t / "sub" / "deeper2"),
        lambda t: ((t / "link").unlink(), (t / "link").symlink_to("a.txt")),
        lambda t: ((t / "a.txt").unlink(), (t / "a.txt").mkdir()),
    ],
)
def test_tree_sum_changes_with_any_content_change(tmp_path, change):
    top = make_tree(tmp_path / "t")
    before = tree_sum(str(top)).digest
    change(top)
    assert tree_sum(str(top)).digest != before


def test_tree_sum_never_follows_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("one")
    top = tmp_path / "t"
    top.mkdir()
    (top / "out").symlink_to(outside)
    (top / "file").symlink_to(outside / "secret")
    before = tree_sum(str(top))
    assert set(before.entries) == {"out", "file"} and before.files == 0
    (outside / "secret").write_text("two")
    (outside / "more").write_text("x")
    assert tree_sum(str(top)).digest == before.digest


LISTED = {"a": ("file", 3), "d": ("dir", 0), "d/b": ("file", 0), "l": ("symlink", 0)}


@pytest.mark.parametrize(
    ("found", "problems"),
    [
        (dict(LISTED), []),
        # A directory's or symlink's size is not compared (restic and lstat differ).
        ({**LISTED, "d": ("dir", 4096), "l": ("symlink", 7)}, []),
        ({k: v for k, v in LISTED.items() if k != "d/b"}, ["d/b is missing"]),
        ({**LISTED, "a": ("file", 4)}, ["a differs (file of 4 bytes, not file of 3)"]),
        ({**LISTED, "l": ("file", 0)}, ["l differs (file of 0 bytes, not symlink of 0)"]),
        ({**LISTED, "x": ("file", 1)}, ["x is not in the snapshot"]),
        (
            {"a": ("dir", 0), "z": ("file", 0)},
            [
                "a differs (dir of 0 bytes, not file of 3)",
                "d is missing",
                "d/b is missing",
                "l is missing",
                "z is not in the snapshot",
            ],
        ),
    ],
)
def test_compare_a_restored_tree_with_the_listing(found, problems):
    assert _compare(LISTED, found) == problems


def test_a_journal_left_by_a_dead_restore_is_reported_not_one_being_run(tmp_path) -> None:
    from dockerops.backup import Journal, interrupted_restore
    from dockerops.lock import RolloutLock

    state_dir = str(tmp_path)
    assert interrupted_restore(state_dir, "web") is None
    entry = {"path": "/srv/dockerops/web/data", "phase": "aside"}
    entry["aside_path"] = "/srv/dockerops/web/data.before-restore-20260101T000000Z"
    # The pid of the process that wrote it is alive (as after a reboot that
    # gave its pid to another process): only the lock says whether it runs.
    Journal(state_dir, "web", "restore").save(
        {"snapshot": "abcdef0123", "started": "then", "pid": 1, "paths": [entry]}
    )
    text = interrupted_restore(state_dir, "web")
    assert text is not None
    assert "is kept at /srv/dockerops/web/data.before-restore-20260101T000000Z" in text
    assert "dockerops.restore web undo=True" in text
    lock = RolloutLock(state_dir, "web", scope="backup")
    with lock.held(None, "restore"):
        assert interrupted_restore(state_dir, "web") is None
        assert interrupted_restore(state_dir, "web", holding=True) == text
    assert interrupted_restore(state_dir, "web") == text
