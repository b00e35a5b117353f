"""dockerops.config: rendering config directories and the versioned store on the host."""

from __future__ import annotations

import os
import re
import stat
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
    redact,
    render,
    version_of,
)
from dockerops.spec import ConfigSpec

SECRET = "s3cr3t-Pa55word"


def rendered(files: dict[str, Any]) -> RenderedConfig:
    """``{"name": "text"}`` or ``{"name": ("text", mode)}`` -> a RenderedConfig."""
    items = []
    for name, value in files.items():
        text, mode = value if isinstance(value, tuple) else (value, 0o644)
        content = text if isinstance(text, bytes) else text.encode()
        items.append(RenderedFile(name=name, content=content, mode=mode))
    return RenderedConfig(tuple(items), version_of(items))


def spec(files: dict[str, Any], **fields: Any) -> ConfigSpec:
    return ConfigSpec.model_validate({"path": "/etc/web", "files": files, **fields})


class Fakes:
    """A fetch and a template renderer that record their calls."""

    def __init__(self, sources: dict[str, str] | None = None) -> None:
        self.sources = sources or {}
        self.fetched: list[str] = []
        self.rendered: list[tuple[str, str, str]] = []

    def fetch(self, url: str) -> str:
        self.fetched.append(url)
        return self.sources[url]

    def render(self, text: str, template: str, name: str) -> str:
        self.rendered.append((text, template, name))
        return f"<{template}:{name}>{text}"


def listing(root: Path) -> dict[str, str]:
    """Every entry of ``root``: symlinks as their target, directories as 'dir'.

    Leaves out the ownership marker (tests/unit/test_config_root.py covers it).
    """
    out = {}
    for path in sorted(root.iterdir()):
        if path.name == MARKER:
            continue
        if path.is_symlink():
            out[path.name] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[path.name] = "dir"
        else:
            out[path.name] = "file"
    return out


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(tmp_path / "web" / "config")


def installed(store: ConfigStore, files: dict[str, Any]) -> RenderedConfig:
    """Write and activate ``files``."""
    config = rendered(files)
    store.write(config)
    store.activate(config.version)
    return config


# --- render ----------------------------------------------------------------------------------


def test_render_inline_contents_without_fetching() -> None:
    fakes = Fakes()

    config = render(spec({"motd": {"contents": "hello"}}), fakes.fetch, fakes.render)

    (item,) = config.files
    assert (item.name, item.content, item.mode) == ("motd", b"hello", 0o644)
    assert fakes.fetched == []
    assert fakes.rendered == []


def test_render_fetches_sources() -> None:
    fakes = Fakes({"salt://web/web.conf": "listen 80\n"})

    config = render(
        spec({"web.conf": {"source": "salt://web/web.conf"}}), fakes.fetch, fakes.render
    )

    assert config.by_name()["web.conf"].content == b"listen 80\n"
    assert fakes.fetched == ["salt://web/web.conf"]
    assert fakes.rendered == []


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"source": "salt://t.jinja", "template": "jinja"}, b"<jinja:conf.d/t>{{ x }}"),
        ({"contents": "{{ y }}", "template": "jinja"}, b"<jinja:conf.d/t>{{ y }}"),
    ],
)
def test_render_applies_the_template_with_the_file_name(
    item: dict[str, Any], expected: bytes
) -> None:
    fakes = Fakes({"salt://t.jinja": "{{ x }}"})

    config = render(spec({"conf.d/t": item}), fakes.fetch, fakes.render)

    assert config.by_name()["conf.d/t"].content == expected
    assert [(template, name) for _, template, name in fakes.rendered] == [("jinja", "conf.d/t")]


@pytest.mark.parametrize(("mode", "expected"), [("0644", 0o644), (600, 0o600), ("0755", 0o755)])
def test_render_parses_the_mode(mode: object, expected: int) -> None:
    fakes = Fakes()

    config = render(spec({"f": {"contents": "x", "mode": mode}}), fakes.fetch, fakes.render)

    assert config.files[0].mode == expected


def test_render_carries_owner_group_and_show_diff_sorted_by_name() -> None:
    files = {
        "b": {"contents": "2", "owner": "www-data", "group": 33, "show_diff": False},
        "a": {"contents": "1"},
    }

    config = render(spec(files), Fakes().fetch, Fakes().render)

    assert [f.name for f in config.files] == ["a", "b"]
    b = config.by_name()["b"]
    assert (b.owner, b.group, b.show_diff) == ("www-data", 33, False)
    assert config.version == version_of(config.files)


def test_rendered_file_repr_hides_the_content() -> None:
    config = rendered({"key": SECRET})

    assert SECRET not in repr(config)
    assert SECRET not in repr(config.files[0])


# --- version_of ------------------------------------------------------------------------------

BASE = RenderedFile("web.conf", b"listen 80\n", 0o644, owner="www-data", group="www-data")
OTHER = RenderedFile("motd", b"hello", 0o600)


def test_version_is_stable_and_short_hex() -> None:
    version = version_of([BASE, OTHER])

    assert version == version_of([BASE, OTHER])
    assert version == version_of([OTHER, BASE])
    assert len(version) == 16
    assert int(version, 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        RenderedFile("web.conf", b"listen 81\n", 0o644, owner="www-data", group="www-data"),
        RenderedFile("web.conf", b"listen 80\n", 0o600, owner="www-data", group="www-data"),
        RenderedFile("web2.conf", b"listen 80\n", 0o644, owner="www-data", group="www-data"),
        RenderedFile("web.conf", b"listen 80\n", 0o644, owner="root", group="www-data"),
        RenderedFile("web.conf", b"listen 80\n", 0o644, owner=None, group="www-data"),
        RenderedFile("web.conf", b"listen 80\n", 0o644, owner="www-data", group="root"),
        RenderedFile("web.conf", b"", 0o644, owner="www-data", group="www-data"),
    ],
    ids=["content", "mode", "name", "owner", "no-owner", "group", "empty"],
)
def test_version_changes_with_every_file_attribute(changed: RenderedFile) -> None:
    assert version_of([changed, OTHER]) != version_of([BASE, OTHER])


def test_version_changes_when_a_file_is_added_or_removed() -> None:
    assert len({version_of([BASE]), version_of([BASE, OTHER]), version_of([])}) == 3


def test_version_ignores_show_diff() -> None:
    hidden = RenderedFile(BASE.name, BASE.content, BASE.mode, BASE.owner, BASE.group, False)

    assert version_of([hidden]) == version_of([BASE])


def test_version_does_not_confuse_name_and_content_boundaries() -> None:
    one = [RenderedFile("a", b"bc", 0o644)]
    other = [RenderedFile("ab", b"c", 0o644)]

    assert version_of(one) != version_of(other)


# --- redact ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("password=hunter2", ["hunter2"], "password=**********"),
        ("a hunter2 b hunter2", ["hunter2"], "a ********** b **********"),
        ("token=abcdef", ["abc", "abcdef"], "token=**********"),
        ("token=abcdef", ["abcdef", "abc"], "token=**********"),
        ("nothing here", ["hunter2"], "nothing here"),
        ("keep me", ["", ""], "keep me"),
        ("keep me", [], "keep me"),
        ("x=1 y=2", ["1", "2"], "x=********** y=**********"),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    assert redact(text, secrets) == expected


# --- write -----------------------------------------------------------------------------------


def test_write_creates_the_version_directory(store: ConfigStore) -> None:
    config = rendered({"web.conf": "listen 80\n", "conf.d/x.conf": "x", "conf.d/y/z": b"\x00\xff"})

    assert store.write(config) is True

    base = store.root / f"..{config.version}"
    assert (base / "web.conf").read_bytes() == b"listen 80\n"
    assert (base / "conf.d" / "x.conf").read_bytes() == b"x"
    assert (base / "conf.d" / "y" / "z").read_bytes() == b"\x00\xff"
    assert store.versions() == [config.version]
    assert store.has(config.version)
    # Written, not activated.
    assert store.current() is None
    assert CURRENT not in listing(store.root)


def test_write_leaves_no_temporary_directory(store: ConfigStore) -> None:
    config = rendered({"a": "1", "b/c": "2"})

    store.write(config)

    assert listing(store.root) == {f"..{config.version}": "dir"}


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o755, 0o400])
def test_write_applies_modes(store: ConfigStore, mode: int) -> None:
    config = rendered({"f": ("x", mode), "d/g": ("y", mode)})

    store.write(config)

    base = store.version_dir(config.version)
    assert stat.S_IMODE((base / "f").stat().st_mode) == mode
    assert stat.S_IMODE((base / "d" / "g").stat().st_mode) == mode
    # The directory itself is readable by the container's user, whatever it is.
    assert stat.S_IMODE(base.stat().st_mode) == 0o755


def test_write_applies_numeric_owner_and_group(store: ConfigStore) -> None:
    uid, gid = os.getuid(), os.getgid()
    items = [RenderedFile("f", b"x", 0o640, owner=uid, group=str(gid))]
    config = RenderedConfig(tuple(items), version_of(items))

    store.write(config)

    info = (store.version_dir(config.version) / "f").stat()
    assert (info.st_uid, info.st_gid) == (uid, gid)


@pytest.mark.parametrize(
    ("owner", "group", "message"),
    [
        ("no-such-user-dockerops", None, "no such user 'no-such-user-dockerops'"),
        (None, "no-such-group-dockerops", "no such group 'no-such-group-dockerops'"),
    ],
)
def test_write_with_an_unknown_owner_leaves_nothing(
    store: ConfigStore, owner: str | None, group: str | None, message: str
) -> None:
    items = [RenderedFile("f", b"x", 0o640, owner=owner, group=group)]
    config = RenderedConfig(tuple(items), version_of(items))

    with pytest.raises(ConfigError, match=message):
        store.write(config)

    assert listing(store.root) == {}
    assert store.versions() == []


def test_write_failure_leaves_nothing(store: ConfigStore) -> None:
    # 'a' as a file and as a directory: the host write fails half-way.
    config = rendered({"a": "1", "a/b": "2"})

    with pytest.raises(ConfigError, match=f"writing config version {config.version}"):
        store.write(config)

    assert listing(store.root) == {}


def test_write_of_an_existing_version_changes_nothing(store: ConfigStore) -> None:
    config = rendered({"f": "x"})
    store.write(config)
    path = store.version_dir(config.version) / "f"
    before = path.stat()

    assert store.write(config) is False

    assert path.stat().st_ino == before.st_ino
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert store.versions() == [config.version]


def test_write_keeps_other_versions(store: ConfigStore) -> None:
    one, two = rendered({"f": "1"}), rendered({"f": "2"})

    store.write(one)
    store.write(two)

    assert store.versions() == sorted([one.version, two.version])
    assert store.read(one.version) == {"f": b"1"}
    assert store.read(two.version) == {"f": b"2"}


# --- activate --------------------------------------------------------------------------------


def test_activate_points_data_and_stable_names_at_the_version(store: ConfigStore) -> None:
    config = rendered({"web.conf": "listen 80\n", "conf.d/x.conf": "x"})
    store.write(config)

    assert store.activate(config.version) is True

    assert listing(store.root) == {
        f"..{config.version}": "dir",
        "..data": f"-> ..{config.version}",
        "conf.d": "-> ..data/conf.d",
        "web.conf": "-> ..data/web.conf",
    }
    assert store.current() == config.version
    # Readable through the stable names, as a live-mounted container reads them.
    assert (store.root / "web.conf").read_text() == "listen 80\n"
    assert (store.root / "conf.d" / "x.conf").read_text() == "x"


def test_activate_the_current_version_again_is_a_no_op(store: ConfigStore) -> None:
    config = installed(store, {"f": "x"})
    before = listing(store.root)

    assert store.activate(config.version) is False

    assert listing(store.root) == before


def test_activate_swaps_versions_and_removes_stale_names(store: ConfigStore) -> None:
    one = installed(store, {"web.conf": "1", "old.conf": "gone soon", "conf.d/x": "x"})
    two = rendered({"web.conf": "2", "new.conf": "new", "conf.d/y": "y"})
    store.write(two)

    assert store.activate(two.version) is True

    assert listing(store.root) == {
        f"..{one.version}": "dir",
        f"..{two.version}": "dir",
        "..data": f"-> ..{two.version}",
        "conf.d": "-> ..data/conf.d",
        "new.conf": "-> ..data/new.conf",
        "web.conf": "-> ..data/web.conf",
    }
    assert (store.root / "web.conf").read_text() == "2"
    assert sorted(p.name for p in (store.root / "conf.d").iterdir()) == ["y"]
    assert store.current() == two.version


def test_activate_back_to_an_older_version(store: ConfigStore) -> None:
    one = installed(store, {"a": "1"})
    installed(store, {"b": "2"})

    assert store.activate(one.version) is True

    assert store.current() == one.version
    assert (store.root / "a").read_text() == "1"
    assert not (store.root / "b").is_symlink()


def test_activate_leaves_no_temporary_link(store: ConfigStore) -> None:
    installed(store, {"a": "1"})
    installed(store, {"a": "2"})

    assert not [p for p in store.root.iterdir() if p.name.startswith("..tmp")]


@pytest.mark.parametrize("in_the_way", ["file", "dir"])
def test_activate_refuses_a_real_entry_in_the_way(store: ConfigStore, in_the_way: str) -> None:
    one = installed(store, {"a": "1"})
    two = rendered({"a": "2", "web.conf": "x"})
    store.write(two)
    blocker = store.root / "web.conf"
    if in_the_way == "file":
        blocker.write_text("hand-made")
    else:
        blocker.mkdir()

    with pytest.raises(
        ConfigError, match=re.escape("is in the way of the config directory's web.conf")
    ):
        store.activate(two.version)

    assert store.current() == one.version
    assert not blocker.is_symlink()
    if in_the_way == "file":
        assert blocker.read_text() == "hand-made"


def test_activate_unknown_version_raises(store: ConfigStore) -> None:
    config = installed(store, {"a": "1"})

    with pytest.raises(ConfigError, match="config version 0123456789abcdef is not in"):
        store.activate("0123456789abcdef")

    assert store.current() == config.version


def test_activate_in_a_missing_root_raises(store: ConfigStore) -> None:
    with pytest.raises(ConfigError):
        store.activate("0123456789abcdef")


# --- current, versions, read -----------------------------------------------------------------


def test_empty_store(store: ConfigStore) -> None:
    assert store.current() is None
    assert store.versions() == []
    assert store.read("0123456789abcdef") == {}
    assert store.has("0123456789abcdef") is False


def test_versions_ignore_everything_but_version_directories(store: ConfigStore) -> None:
    config = installed(store, {"a": "1"})
    (store.root / "..tmp-abc").mkdir()
    (store.root / "..stray-file").write_text("x")
    (store.root / "..tmp-data-1-2").symlink_to(f"..{config.version}")
    (store.root / "plain").mkdir()

    assert store.versions() == [config.version]


def test_read_returns_every_file_by_relative_name(store: ConfigStore) -> None:
    config = rendered({"a": "1", "d/e/f": b"\x00", "d/g": ""})
    store.write(config)

    assert store.read(config.version) == {"a": b"1", "d/e/f": b"\x00", "d/g": b""}


# --- diff ------------------------------------------------------------------------------------


def test_diff_against_nothing_adds_every_file(store: ConfigStore) -> None:
    config = rendered({"a": "one\n", "d/b": "two\n"})

    assert store.diff(config) == {"a": {"added": "one\n"}, "d/b": {"added": "two\n"}}


def test_diff_of_the_current_version_is_empty(store: ConfigStore) -> None:
    config = installed(store, {"a": "one\n", "b": "two\n"})

    assert store.diff(config) == {}


def test_diff_added_removed_changed(store: ConfigStore) -> None:
    old = installed(store, {"same": "x\n", "gone": "bye\n", "web.conf": "a\nb\nc\n"})
    new = rendered({"same": "x\n", "web.conf": "a\nB\nc\n", "conf.d/new": "hi\n"})

    changes = store.diff(new)

    assert changes == {
        "conf.d/new": {"added": "hi\n"},
        "gone": "removed",
        "web.conf": {
            "diff": (
                f"--- web.conf ({old.version})\n"
                f"+++ web.conf ({new.version})\n"
                "@@ -1,3 +1,3 @@\n"
                " a\n"
                "-b\n"
                "+B\n"
                " c\n"
            )
        },
    }


def test_diff_does_not_write(store: ConfigStore) -> None:
    installed(store, {"a": "1"})
    before = listing(store.root)

    store.diff(rendered({"a": "2", "b": "3"}))

    assert listing(store.root) == before


def test_diff_of_binary_content_does_not_fail(store: ConfigStore) -> None:
    installed(store, {"blob": b"\xff\xfe\x00"})

    changes = store.diff(rendered({"blob": b"\xff\x00\x01"}))

    assert set(changes) == {"blob"}
    assert "diff" in changes["blob"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {"key": "private\n"}, "added"),
        (
            {"key": "one\n"},
            {"key": "two\n"},
            {"mode": {"old": "0644", "new": "0600"}, "diff": "(hidden: show_diff is false)"},
        ),
        ({"key": "one\n"}, {}, "removed"),
    ],
)
def test_show_diff_false_withholds_the_content(
    store: ConfigStore, old: dict[str, str], new: dict[str, str], expected: object
) -> None:
    if old:
        installed(store, old)
    items = [RenderedFile(n, t.encode(), 0o600, show_diff=False) for n, t in new.items()]
    config = RenderedConfig(tuple(items), version_of(items))

    changes = store.diff(config)

    assert changes == {"key": expected}
    for text in ("private", "one", "two"):
        assert text not in str(changes)


def test_secrets_are_masked_in_added_contents(store: ConfigStore) -> None:
    config = rendered({"db.conf": f"user=web\npassword={SECRET}\n"})

    changes = store.diff(config, [SECRET])

    assert changes == {"db.conf": {"added": "user=web\npassword=**********\n"}}


def test_secrets_are_masked_in_diffs(store: ConfigStore) -> None:
    installed(store, {"db.conf": "user=web\npassword=old\n"})
    config = rendered({"db.conf": f"user=web\npassword={SECRET}\n"})

    changes = store.diff(config, ["", SECRET])

    diff = changes["db.conf"]["diff"]  # type: ignore[index]
    assert SECRET not in diff
    assert "+password=**********\n" in diff
    assert "-password=old\n" in diff


def test_multi_line_secrets_are_masked_in_diffs(store: ConfigStore) -> None:
    # A PEM key is a typical secret that spans lines; a unified diff prefixes
    # each of its lines with '+', so the whole value never appears verbatim.
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    installed(store, {"tls.key": "placeholder\n"})
    config = rendered({"tls.key": key + "\n"})

    changes = store.diff(config, [key])

    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in str(changes)


def test_multi_line_secrets_are_masked_in_added_contents(store: ConfigStore) -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"

    changes = store.diff(rendered({"tls.key": key + "\n"}), [key])

    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in str(changes)


# --- prune -----------------------------------------------------------------------------------


def aged(store: ConfigStore, count: int) -> list[str]:
    """Write ``count`` versions, oldest first (by mtime, a minute apart)."""
    versions = []
    for age in range(count):
        config = rendered({"f": f"version {age}"})
        store.write(config)
        stamp = 1_700_000_000 + 60 * age
        os.utime(store.version_dir(config.version), (stamp, stamp))
        versions.append(config.version)
    return versions


@pytest.mark.parametrize(
    ("keep", "current", "in_use", "kept"),
    [
        # v0 oldest ... v5 newest; keep counts the current version.
        pytest.param(3, 5, [], [5, 4, 3], id="current-newest"),
        pytest.param(3, 0, [], [0, 5, 4], id="current-oldest"),
        pytest.param(3, 2, [0], [0, 2, 5, 4], id="in-use-kept-on-top"),
        pytest.param(1, 5, [], [5], id="keep-only-current"),
        pytest.param(1, 3, [1, 4], [1, 3, 4], id="keep-one-with-in-use"),
        pytest.param(6, 0, [], [0, 1, 2, 3, 4, 5], id="keep-all"),
        pytest.param(10, 0, [], [0, 1, 2, 3, 4, 5], id="keep-more-than-there-are"),
        pytest.param(2, None, [], [5], id="nothing-active-keeps-keep-minus-one"),
    ],
)
def test_prune(
    store: ConfigStore, keep: int, current: int | None, in_use: list[int], kept: list[int]
) -> None:
    versions = aged(store, 6)
    if current is not None:
        store.activate(versions[current])

    removed = store.prune(keep, in_use=[versions[i] for i in in_use])

    assert sorted(store.versions()) == sorted(versions[i] for i in kept)
    assert sorted(removed) == sorted(v for i, v in enumerate(versions) if i not in kept)
    if current is not None:
        assert store.current() == versions[current]
        assert (store.root / "f").read_text() == f"version {current}"


def test_prune_removes_temporary_leftovers(store: ConfigStore) -> None:
    (version,) = aged(store, 1)
    store.activate(version)
    (store.root / "..tmp-abc").mkdir()
    (store.root / "..tmp-abc" / "half-written").write_text("x")
    (store.root / "..tmp-data-1-2").symlink_to(f"..{version}")

    assert store.prune(3) == []

    assert listing(store.root) == {
        f"..{version}": "dir",
        "..data": f"-> ..{version}",
        "f": "-> ..data/f",
    }


def test_prune_of_a_missing_root_does_nothing(store: ConfigStore) -> None:
    assert store.prune(3) == []
    assert not store.root.exists()
