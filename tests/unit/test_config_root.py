"""Config roots: owned by dockerops (marked), removed entry by entry, never through a link."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockerops.config import (
    CURRENT,
    MARKER,
    ConfigError,
    ConfigStore,
    RenderedConfig,
    RenderedFile,
    version_of,
)
from dockerops.errors import DockerError
from dockerops.safepath import UnsafePath
from tests.unit.test_safepath import snapshot

OUTSIDE_SECRET = "root:OUTSIDE-SECRET-HASH"


def rendered(files: dict[str, str]) -> RenderedConfig:
    items = [RenderedFile(name, text.encode(), 0o644) for name, text in files.items()]
    return RenderedConfig(tuple(items), version_of(items))


V1 = rendered({"web.conf": "listen 80\n", "conf.d/x.conf": "x\n"})
V2 = rendered({"web.conf": "listen 81\n", "conf.d/y.conf": "y\n"})


@pytest.fixture
def trusted(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def store(trusted: Path) -> ConfigStore:
    return ConfigStore(trusted / "web" / "config", trusted)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where planted links point: a copy of a config root, a file and a directory."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "shadow").write_text(OUTSIDE_SECRET + "\n")
    (out / "dir").mkdir()
    (out / "dir" / "x.conf").write_text(OUTSIDE_SECRET + "\n")
    return out


def install(store: ConfigStore, config: RenderedConfig) -> None:
    store.write(config)
    store.activate(config.version)


# --- ownership --------------------------------------------------------------------------------


def test_a_new_root_is_marked_as_dockerops_own(store: ConfigStore) -> None:
    store.write(V1)

    assert (store.root / MARKER).is_file()
    assert not (store.root / MARKER).is_symlink()


def test_the_trusted_root_itself_is_never_a_config_root(trusted: Path) -> None:
    with pytest.raises(ConfigError, match="never an allow-list root itself"):
        ConfigStore(trusted, trusted)


def test_remove_deletes_what_dockerops_wrote_then_the_empty_root(store: ConfigStore) -> None:
    install(store, V1)
    install(store, V2)
    (store.root / "..tmp-leftover").mkdir()

    removal = store.remove()

    assert not store.root.exists()
    assert store.root.parent.is_dir()  # the parent is not dockerops' to remove
    assert removal.root_removed and removal.kept == []
    assert set(removal.removed) == {
        f"..{V1.version}",
        f"..{V2.version}",
        CURRENT,
        "conf.d",
        "web.conf",
        "..tmp-leftover",
        MARKER,
    }


def test_remove_keeps_what_dockerops_did_not_write(store: ConfigStore) -> None:
    install(store, V1)
    (store.root / "notes.txt").write_text("an admin's file")
    (store.root / "data").mkdir()
    (store.root / "data" / "db").write_text("precious")

    removal = store.remove()

    assert removal.kept == ["data", "notes.txt"] and not removal.root_removed
    assert sorted(p.name for p in store.root.iterdir()) == [MARKER, "data", "notes.txt"]
    assert (store.root / "data" / "db").read_text() == "precious"


def test_remove_of_a_missing_root_does_nothing(store: ConfigStore) -> None:
    removal = store.remove()

    assert (removal.removed, removal.kept, removal.root_removed) == ([], [], False)


def legacy_root(store: ConfigStore) -> None:
    """A root as the release before the marker left it."""
    install(store, V1)
    (store.root / MARKER).unlink()


def test_a_root_of_the_previous_release_is_adopted(store: ConfigStore) -> None:
    legacy_root(store)

    install(store, V2)

    assert (store.root / MARKER).is_file()
    assert store.current() == V2.version


def test_a_root_of_the_previous_release_is_removed(store: ConfigStore) -> None:
    legacy_root(store)
    (store.root / "..tmp-123").mkdir()

    assert store.remove().root_removed
    assert not store.root.exists()


@pytest.mark.parametrize(
    "foreign",
    [
        lambda root: (root / "db").mkdir(),
        lambda root: (root / "notes.txt").write_text("x"),
        lambda root: (root / "link").symlink_to("/etc"),
        lambda root: (root / "web.conf").unlink() or (root / "web.conf").symlink_to("/etc/shadow"),
        lambda root: (root / "..0123456789abcdef").write_text("not a version directory"),
    ],
    ids=["directory", "file", "link", "name-link-elsewhere", "file-named-like-a-version"],
)
def test_a_directory_dockerops_did_not_write_is_refused(
    store: ConfigStore, foreign: Callable[[Path], Any]
) -> None:
    legacy_root(store)
    foreign(store.root)
    before = snapshot(store.root)

    for action in (
        store.remove,
        store.removal,
        lambda: store.write(V2),
        lambda: store.activate(V1.version),
        lambda: store.prune(1),
    ):
        with pytest.raises(ConfigError, match="is not a dockerops config root"):
            action()

    assert snapshot(store.root) == before


def test_a_plain_directory_full_of_data_is_never_removed(trusted: Path) -> None:
    # The original report: config:root set to a directory holding data.
    data = trusted / "web"
    (data / "db").mkdir(parents=True)
    (data / "db" / "table").write_text("rows")
    store = ConfigStore(data, trusted)

    with pytest.raises(ConfigError, match="not a dockerops config root"):
        store.remove()

    assert (data / "db" / "table").read_text() == "rows"


def test_an_empty_existing_directory_is_adopted(store: ConfigStore) -> None:
    store.root.mkdir(parents=True)

    install(store, V1)

    assert store.current() == V1.version


# --- planted symlinks -------------------------------------------------------------------------


def _replace(path: Path, target: Path) -> None:
    """What a container with write access does: move the real entry away, plant a link."""
    moved = path.with_name(path.name + ".moved")
    path.rename(moved)
    if moved.is_dir():
        shutil.copytree(moved, target / "copy" / path.name, symlinks=True)
        path.symlink_to(target / "copy" / path.name)
    else:
        path.symlink_to(target / "shadow")


PLANTS: dict[str, Callable[[ConfigStore, Path], None]] = {
    "root-parent": lambda store, out: _replace(store.root.parent, out),
    "root": lambda store, out: _replace(store.root, out),
    "..data": lambda store, out: (
        (store.root / CURRENT).unlink() or (store.root / CURRENT).symlink_to(out / "dir")
    ),
    "version": lambda store, out: _replace(store.version_dir(V1.version), out),
    "file": lambda store, out: _replace(store.version_dir(V1.version) / "web.conf", out),
    "subdirectory": lambda store, out: _replace(store.version_dir(V1.version) / "conf.d", out),
    "marker": lambda store, out: (
        (store.root / MARKER).unlink() or (store.root / MARKER).symlink_to(out / "shadow")
    ),
    "tmp": lambda store, out: (store.root / "..tmp-planted").symlink_to(out / "dir"),
    "name-link": lambda store, out: (
        (store.root / "web.conf").unlink() or (store.root / "web.conf").symlink_to(out / "shadow")
    ),
}


@pytest.mark.parametrize("level", list(PLANTS))
def test_a_link_planted_at_any_level_changes_and_reveals_nothing_outside(
    store: ConfigStore, outside: Path, level: str
) -> None:
    install(store, V1)
    PLANTS[level](store, outside)
    before = snapshot(outside)
    seen: list[object] = []
    refused: list[str] = []

    operations: dict[str, Callable[[], object]] = {
        "current": store.current,
        "versions": store.versions,
        "has": lambda: store.has(V1.version),
        "read": lambda: store.read(V1.version),
        "modes": lambda: store.modes(V1.version),
        "diff": lambda: store.diff(V2),
        "write": lambda: store.write(V2),
        "activate": lambda: store.activate(V2.version),
        "activate-back": lambda: store.activate(V1.version),
        "prune": lambda: store.prune(1),
        "removal": store.removal,
        "remove": store.remove,
    }
    for name, operation in operations.items():
        try:
            seen.append(operation())
        except DockerError as err:
            refused.append(name)
            seen.append(str(err))

    assert snapshot(outside) == before
    assert OUTSIDE_SECRET not in json.dumps(seen, default=repr)
    if level in ("root-parent", "root"):
        # Everything goes through the planted link: everything is refused.
        assert set(refused) >= {"current", "read", "diff", "write", "remove"}
    if level in ("file", "subdirectory"):
        assert {"read", "diff"} <= set(refused)


@pytest.mark.parametrize("level", ["root-parent", "root"])
def test_a_refusal_names_the_planted_link(store: ConfigStore, outside: Path, level: str) -> None:
    install(store, V1)
    PLANTS[level](store, outside)
    planted = store.root.parent if level == "root-parent" else store.root

    with pytest.raises(UnsafePath, match=f"{planted} is a symlink"):
        store.write(V2)


def test_activate_replaces_a_planted_data_link_without_following_it(
    store: ConfigStore, outside: Path
) -> None:
    install(store, V1)
    store.write(V2)
    PLANTS["..data"](store, outside)
    before = snapshot(outside)

    assert store.activate(V2.version) is True

    assert os.readlink(store.root / CURRENT) == f"..{V2.version}"
    assert snapshot(outside) == before
