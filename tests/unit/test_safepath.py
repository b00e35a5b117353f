"""dockerops.safepath: directories below a trusted root, never through a symlink."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from dockerops.safepath import Dir, UnsafePath, components, ensure_dir, open_below


def snapshot(top: Path) -> dict[str, object]:
    """Every entry under ``top``: links as targets, files as (content, mode), dirs."""
    out: dict[str, object] = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", stat.S_IMODE(path.stat().st_mode))
        else:
            out[rel] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


@pytest.fixture
def trusted(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory a planted link points at: it must never change."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "shadow").write_text("root:SECRET-HASH\n")
    return out


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/srv/dockerops/web/data", "/srv/dockerops", ["web", "data"]),
        ("/srv/dockerops/web", "/srv/dockerops/", ["web"]),
        ("/srv/dockerops", "/srv/dockerops", []),
        ("/srv/x", "/", ["srv", "x"]),
    ],
)
def test_components_below_the_trusted_root(path: str, root: str, expected: list[str]) -> None:
    assert components(path, root) == expected


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("/srv/dockerops-other/web", "/srv/dockerops"),
        ("/srv", "/srv/dockerops"),
        ("/srv/dockerops/../etc", "/srv/dockerops"),
        ("/srv/dockerops/./web", "/srv/dockerops"),
        ("/srv/dockerops/a//b", "/srv/dockerops"),
    ],
)
def test_components_refuses_paths_not_plainly_below(path: str, root: str) -> None:
    with pytest.raises(ValueError):
        components(path, root)


def test_ensure_dir_makes_every_missing_component(trusted: Path) -> None:
    ensure_dir(str(trusted), str(trusted / "web" / "data"))

    assert (trusted / "web" / "data").is_dir()
    assert not (trusted / "web" / "data").is_symlink()


def test_ensure_dir_makes_a_missing_trusted_root(tmp_path: Path) -> None:
    ensure_dir(str(tmp_path / "new-root"), str(tmp_path / "new-root" / "web"))

    assert (tmp_path / "new-root" / "web").is_dir()


def test_the_trusted_root_itself_may_be_a_symlink(tmp_path: Path, trusted: Path) -> None:
    # The path down to the allow-list root is the admin's.
    alias = tmp_path / "alias"
    alias.symlink_to(trusted)

    ensure_dir(str(alias), str(alias / "web"))

    assert (trusted / "web").is_dir()


@pytest.mark.parametrize("level", ["first", "middle", "last"])
def test_a_symlink_at_any_level_is_refused_and_nothing_is_made_through_it(
    trusted: Path, outside: Path, level: str
) -> None:
    (trusted / "a" / "b").mkdir(parents=True)
    planted = {"first": trusted / "a", "middle": trusted / "a" / "b", "last": None}[level]
    if planted is None:
        planted = trusted / "a" / "b" / "c"
    else:
        planted.rename(planted.with_name(planted.name + ".moved"))
    planted.symlink_to(outside)
    before = snapshot(outside)

    with pytest.raises(UnsafePath, match="is a symlink"):
        ensure_dir(str(trusted), str(trusted / "a" / "b" / "c" / "d"))
    with pytest.raises(UnsafePath):
        open_below(str(trusted), str(trusted / "a" / "b" / "c"))

    assert snapshot(outside) == before


def test_a_file_in_the_way_is_refused(trusted: Path) -> None:
    (trusted / "a").write_text("x")

    with pytest.raises(UnsafePath, match="not a directory"):
        ensure_dir(str(trusted), str(trusted / "a" / "b"))


def test_a_missing_directory_is_not_made_without_create(trusted: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_below(str(trusted), str(trusted / "missing"))

    assert not (trusted / "missing").exists()


def test_read_file_refuses_a_symlink_and_a_fifo(trusted: Path, outside: Path) -> None:
    (trusted / "shadow").symlink_to(outside / "shadow")
    os.mkfifo(trusted / "fifo")
    (trusted / "plain").write_bytes(b"ok")

    with Dir.open_trusted(str(trusted)) as top:
        assert top.read_file("plain") == b"ok"
        with pytest.raises(UnsafePath, match="is a symlink"):
            top.read_file("shadow")
        # Must not block waiting for a writer.
        done = threading.Event()

        def read_fifo() -> None:
            with pytest.raises(UnsafePath, match="not a regular file"):
                top.read_file("fifo")
            done.set()

        thread = threading.Thread(target=read_fifo, daemon=True)
        thread.start()
        thread.join(5)
        assert done.is_set()


def test_write_file_never_writes_through_or_over_an_existing_entry(
    trusted: Path, outside: Path
) -> None:
    (trusted / "f").symlink_to(outside / "shadow")
    before = snapshot(outside)

    with Dir.open_trusted(str(trusted)) as top:
        with pytest.raises(FileExistsError):
            top.write_file("f", b"owned", 0o644)
        top.write_file("g", b"new", 0o600)

    assert snapshot(outside) == before
    assert (trusted / "g").read_bytes() == b"new"
    assert stat.S_IMODE((trusted / "g").stat().st_mode) == 0o600


def test_rmtree_removes_links_inside_without_following_them(trusted: Path, outside: Path) -> None:
    (trusted / "tree" / "deep").mkdir(parents=True)
    (trusted / "tree" / "deep" / "to-outside").symlink_to(outside)
    (trusted / "tree" / "shadow").symlink_to(outside / "shadow")
    before = snapshot(outside)

    with Dir.open_trusted(str(trusted)) as top:
        top.rmtree("tree")

    assert not (trusted / "tree").exists()
    assert snapshot(outside) == before


def test_rmtree_refuses_a_link_in_place_of_the_tree(trusted: Path, outside: Path) -> None:
    (trusted / "tree").symlink_to(outside)
    before = snapshot(outside)

    with Dir.open_trusted(str(trusted)) as top, pytest.raises(UnsafePath):
        top.rmtree("tree")

    assert snapshot(outside) == before
    assert (trusted / "tree").is_symlink()


def test_readlink_of_a_directory_or_nothing_is_none(trusted: Path) -> None:
    (trusted / "dir").mkdir()
    (trusted / "link").symlink_to("..data/x")

    with Dir.open_trusted(str(trusted)) as top:
        assert top.readlink("dir") is None
        assert top.readlink("missing") is None
        assert top.readlink("link") == "..data/x"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\0b"])
def test_names_are_single_components(trusted: Path, name: str) -> None:
    with Dir.open_trusted(str(trusted)) as top, pytest.raises(ValueError):
        top.child(name)
