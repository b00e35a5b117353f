"""Config directories: rendered by Salt, stored as immutable content-addressed
versions, mounted read-only into containers.

On the host, a service's config root looks like this (the layout of Kubernetes'
atomic writer, for the same reasons)::

    /srv/dockerops/web/config/
      ..3f2a9c0d1e2b4a5c/web.conf     one directory per version, named by the
      ..3f2a9c0d1e2b4a5c/conf.d/x     hash of every file's name, mode, owner and
      ..77aa01c2b3d4e5f6/...          content; never modified once written
      ..data -> ..3f2a9c0d1e2b4a5c    the current version (swapped atomically)
      web.conf -> ..data/web.conf     stable names through ..data
      conf.d -> ..data/conf.d

Replicas of a service whose ``on_change`` restarts them (``rolling``,
``restart``) mount *their* version directory: a new version never leaks into a
running replica before its restart, and rolling back is mounting the previous
version again. Replicas of ``signal:*`` / ``none`` services mount the whole root
and read through ``..data``: a new version appears to them all at once, atomically,
and a signal tells them to reload.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import safepath
from .errors import DockerError
from .masking import Masker, masked_contents, masked_diff
from .masking import redact as redact  # re-exported: callers know it from here
from .spec import ConfigSpec, EtcdSource, ServiceSpec

CURRENT = "..data"
VERSION_PREFIX = ".."

# fetch(source_url) -> text ; render(text, template_name, name) -> text ;
# from_store(file_name, etcd_source) -> text
Fetch = Callable[[str], str]
Render = Callable[[str, str, str], str]
FromStore = Callable[[str, EtcdSource], str]


class ConfigError(DockerError):
    """A config directory could not be rendered or written."""


@dataclass(frozen=True)
class RenderedFile:
    name: str
    content: bytes = field(repr=False)
    mode: int
    owner: str | int | None = None
    group: str | int | None = None
    show_diff: bool = True


@dataclass(frozen=True)
class RenderedConfig:
    files: tuple[RenderedFile, ...]
    version: str

    def by_name(self) -> dict[str, RenderedFile]:
        return {f.name: f for f in self.files}


def render(
    spec: ConfigSpec, fetch: Fetch, render_template: Render, from_store: FromStore | None = None
) -> RenderedConfig:
    """Render every file of ``spec`` (no host writes) and compute its version.

    Any file that fails (a source missing, a template error, the store out of
    reach or a required key missing) fails the whole render: a version is
    made of every file or not at all, so nothing partial is ever written.
    """
    files = []
    for name, item in sorted(spec.files.items()):
        if item.etcd is not None:
            if from_store is None:
                raise ConfigError(f"config file {name} comes from etcd, which is not set up here")
            text = from_store(name, item.etcd)
        elif item.source is not None:
            text = fetch(item.source)
        else:
            text = item.contents or ""
        if item.template:
            text = render_template(text, item.template, name)
        files.append(
            RenderedFile(
                name=name,
                content=text.encode(),
                mode=int(item.mode, 8),
                owner=item.owner,
                group=item.group,
                show_diff=item.diff_shown,
            )
        )
    return RenderedConfig(tuple(files), version_of(files))


def version_of(files: Iterable[RenderedFile]) -> str:
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.name):
        header = json.dumps([item.name, item.mode, item.owner, item.group])
        digest.update(header.encode() + b"\0" + hashlib.sha256(item.content).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ConfigRemoval:
    """What removing a config root removed, and what it left (entries it did not write)."""

    removed: list[str]
    kept: list[str]
    root_removed: bool


class ConfigStore:
    """One service's config root on the host.

    The root is a directory dockerops owns: it is marked (``MARKER``) when
    dockerops first writes to it, and dockerops removes only what it wrote
    there. Every access goes through :mod:`dockerops.safepath`: the path below
    ``trusted_root`` (the allow-list root holding it) is opened component by
    component and never through a symlink, so a link planted at any level is
    refused rather than followed, for reads as for writes.
    """

    def __init__(self, root: str | Path, trusted_root: str | Path | None = None) -> None:
        self.root = Path(root)
        # Callers with a spec use ConfigStore.of(spec); the parent is the fallback.
        self.trusted_root = str(trusted_root if trusted_root is not None else self.root.parent)
        if not safepath.components(str(self.root), self.trusted_root):
            raise ConfigError(f"{self.root}: a config root is never an allow-list root itself")

    @classmethod
    def of(cls, spec: ServiceSpec) -> ConfigStore:
        """The store of ``spec``'s config root, trusted from its allow-list root."""
        root = spec.config_root
        if root is None:
            raise ValueError(f"service {spec.name} has no config directory")
        return cls(root, spec.trusted_root(root))

    def version_dir(self, version: str) -> Path:
        return self.root / _version_name(version)

    @contextlib.contextmanager
    def _opened(self, create: bool = False) -> Iterator[safepath.Dir | None]:
        """The root, opened without following symlinks; None when it does not exist."""
        try:
            root = safepath.open_below(self.trusted_root, str(self.root), create=create)
        except FileNotFoundError:
            yield None
            return
        with root:
            yield root

    def current(self) -> str | None:
        with self._opened() as root:
            target = root.readlink(CURRENT) if root is not None else None
        if target is None or not _VERSION_NAME_RE.match(target):
            return None
        return target.removeprefix(VERSION_PREFIX)

    def versions(self) -> list[str]:
        with self._opened() as root:
            if root is None:
                return []
            return sorted(
                name.removeprefix(VERSION_PREFIX)
                for name, info in root.entries()
                if _VERSION_NAME_RE.match(name) and stat.S_ISDIR(info.st_mode)
            )

    def has(self, version: str) -> bool:
        if not _VERSION_NAME_RE.match(_version_name(version)):
            return False
        with self._opened() as root:
            info = root.lstat(_version_name(version)) if root is not None else None
        return info is not None and stat.S_ISDIR(info.st_mode)

    def read(self, version: str) -> dict[str, bytes]:
        return {name: content for name, (_mode, content) in self._files(version, True).items()}

    def modes(self, version: str) -> dict[str, int]:
        return {name: mode for name, (mode, _content) in self._files(version, False).items()}

    def _files(self, version: str, content: bool) -> dict[str, tuple[int, bytes]]:
        """Every file of a version: its mode and (if asked) content, never through a link."""
        out: dict[str, tuple[int, bytes]] = {}
        if not _VERSION_NAME_RE.match(_version_name(version)):
            return out
        with self._opened() as root:
            if root is None:
                return out
            try:
                base = root.child(_version_name(version))
            except FileNotFoundError:
                return out
            with base:
                _collect(base, "", out, content)
        return dict(sorted(out.items()))

    def diff(self, rendered: RenderedConfig, secrets: Iterable[str] = ()) -> dict[str, object]:
        """Changes from the current version to ``rendered``, per file.

        Diffs of files with ``show_diff: False`` are withheld, and any secret
        value of the service is masked in the rest (see :mod:`dockerops.masking`).
        What is shown of each file is capped (``masking.DIFF_CAP``), saying so.
        """
        masker = Masker(secrets)
        current = self.current()
        old = self.read(current) if current else {}
        old_modes = self.modes(current) if current else {}
        new = rendered.by_name()
        changes: dict[str, object] = {}
        for name in sorted(set(old) | set(new)):
            if name not in new:
                changes[name] = "removed"
                continue
            item = new[name]
            if name not in old:
                if item.show_diff:
                    changes[name] = {"added": masked_contents(_text(item.content), masker)}
                else:
                    changes[name] = "added"
                continue
            change: dict[str, object] = {}
            if old_modes.get(name) != item.mode:
                old_mode = f"{old_modes.get(name, 0):04o}"
                change["mode"] = {"old": old_mode, "new": f"{item.mode:04o}"}
            if old[name] != item.content:
                if not item.show_diff:
                    change["diff"] = "(hidden: show_diff is false)"
                else:
                    shown = masked_diff(
                        _text(old[name]),
                        _text(item.content),
                        masker,
                        fromfile=f"{name} ({current})",
                        tofile=f"{name} ({rendered.version})",
                    )
                    change["diff"] = shown or "(only masked secrets changed)"
            if change:
                changes[name] = change
        return changes

    def write(self, rendered: RenderedConfig) -> bool:
        """Write ``rendered`` as its version directory unless it exists. Atomic."""
        name = _version_name(rendered.version)
        with self._opened(create=True) as root:
            assert root is not None
            self._claim(root)
            info = root.lstat(name)
            if info is not None:
                if stat.S_ISDIR(info.st_mode):
                    return False
                raise safepath.UnsafePath(f"{self.root}/{name} is not a directory")
            tmp = f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            try:
                root.mkdir(tmp, 0o700)
                with root.child(tmp) as staging:
                    for item in rendered.files:
                        *parents, filename = item.name.split("/")
                        with staging.walk(parents, create=True) as parent:
                            parent.write_file(
                                filename,
                                item.content,
                                item.mode,
                                _uid(item.owner),
                                _gid(item.group),
                            )
                    staging.chmod(0o755)
                root.rename(tmp, name)
            except (OSError, safepath.UnsafePath) as err:
                _discard(root, tmp)
                raise ConfigError(
                    f"writing config version {rendered.version} in {self.root}: {err}"
                ) from err
            except BaseException:
                _discard(root, tmp)
                raise
            root.fsync()
        return True

    def activate(self, version: str) -> bool:
        """Point ``..data`` (and the stable names) at ``version``. Atomic."""
        name = _version_name(version)
        with self._opened() as root:
            info = root.lstat(name) if root is not None and _VERSION_NAME_RE.match(name) else None
            if root is None or info is None or not stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"config version {version} is not in {self.root}")
            self._claim(root)
            if root.readlink(CURRENT) == name:
                return False
            try:
                self._point_at(root, name)
            except OSError as err:
                raise ConfigError(
                    f"activating config version {version} in {self.root}: {err}"
                ) from err
        return True

    def _point_at(self, root: safepath.Dir, name: str) -> None:
        with root.child(name) as version:
            names = [n for n in version.listdir() if not n.startswith(VERSION_PREFIX)]
        for entry in names:
            info = root.lstat(entry)
            if info is not None and not stat.S_ISLNK(info.st_mode):
                raise ConfigError(
                    f"{self.root}/{entry} is in the way of the config directory's {entry}"
                )
        for entry in names:
            link = f"{CURRENT}/{entry}"
            if root.readlink(entry) != link:
                _swap_link(root, link, entry)
        _swap_link(root, name, CURRENT)
        for entry, info in root.entries():
            if (
                stat.S_ISLNK(info.st_mode)
                and not entry.startswith(VERSION_PREFIX)
                and entry not in names
                and (root.readlink(entry) or "").startswith(f"{CURRENT}/")
            ):
                root.unlink(entry)
        root.fsync()

    def removal(self) -> ConfigRemoval:
        """What :meth:`remove` would remove (reads only); refuses a root dockerops does not own."""
        with self._opened() as root:
            if root is None:
                return ConfigRemoval([], [], False)
            ours, foreign = self._sorted_entries(root)
            return ConfigRemoval(ours, foreign, not foreign)

    def remove(self) -> ConfigRemoval:
        """Remove what dockerops wrote in the root (versions, ``..data``, the name
        links, temporaries, the marker), then the root itself if that left it empty.

        Never removes anything recursively on faith: a root without the marker
        is removed only if everything in it is something dockerops writes; else
        it is refused. Entries dockerops did not write are kept (and reported).
        """
        with self._opened() as root:
            if root is None:
                return ConfigRemoval([], [], False)
            ours, foreign = self._sorted_entries(root)
            removed = []
            for entry in ours:
                if entry == MARKER and foreign:
                    continue  # still ours: the entries left keep it from being adopted
                info = root.lstat(entry)
                if info is None:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    root.rmtree(entry)
                else:
                    root.unlink(entry)
                removed.append(entry)
            root.fsync()
        if foreign:
            return ConfigRemoval(removed, foreign, False)
        parent = str(self.root.parent)
        try:
            if parent == self.trusted_root.rstrip("/"):
                holder = safepath.Dir.open_trusted(self.trusted_root)
            else:
                holder = safepath.open_below(self.trusted_root, parent)
            with holder:
                holder.rmdir(self.root.name)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise ConfigError(f"removing {self.root}: {err}") from err
            return ConfigRemoval(removed, [], err.errno == errno.ENOENT)
        return ConfigRemoval(removed, [], True)

    def _sorted_entries(self, root: safepath.Dir) -> tuple[list[str], list[str]]:
        """(entries dockerops wrote, other entries); refuses a root it does not own."""
        ours: list[str] = []
        foreign: list[str] = []
        for entry, info in root.entries():
            (ours if _written_by_us(root, entry, info) else foreign).append(entry)
        marker = root.lstat(MARKER)
        if marker is None and foreign:
            raise ConfigError(_not_ours(self.root, foreign))
        # The marker last: an interrupted removal is still recognised as ours.
        ours.sort(key=lambda entry: entry == MARKER)
        return ours, foreign

    def _claim(self, root: safepath.Dir) -> None:
        """Mark ``root`` as dockerops' own, unless it is already.

        A root without the marker (new, or written by a release before the
        marker) is adopted only if everything in it is something dockerops writes.
        """
        info = root.lstat(MARKER)
        if info is not None:
            if not stat.S_ISREG(info.st_mode):
                raise safepath.UnsafePath(f"{self.root}/{MARKER} is not a regular file")
            return
        foreign = [e for e, i in root.entries() if not _written_by_us(root, e, i)]
        if foreign:
            raise ConfigError(_not_ours(self.root, foreign))
        with contextlib.suppress(FileExistsError):
            root.write_file(MARKER, MARKER_TEXT, 0o644)
        root.fsync()

    def prune(self, keep: int, in_use: Iterable[str] = ()) -> list[str]:
        """Remove old versions: keep the current one, those in use, and ``keep`` newest."""
        with self._opened() as root:
            if root is None:
                return []
            self._claim(root)
            current = (root.readlink(CURRENT) or "").removeprefix(VERSION_PREFIX)
            protected = set(in_use) | {current}
            versions = {
                entry.removeprefix(VERSION_PREFIX): info.st_mtime
                for entry, info in root.entries()
                if _VERSION_NAME_RE.match(entry) and stat.S_ISDIR(info.st_mode)
            }
            candidates = sorted(
                (v for v in versions if v not in protected), key=versions.__getitem__, reverse=True
            )
            removed = []
            for version in candidates[max(keep - 1, 0) :]:
                with contextlib.suppress(OSError):
                    root.rmtree(_version_name(version))
                removed.append(version)
            for entry, _info in root.entries():
                if entry.startswith(TMP_PREFIX):
                    _discard(root, entry)
        return removed


MARKER = "..dockerops"
MARKER_TEXT = b"dockerops config root: dockerops writes here and removes only what it wrote\n"
TMP_PREFIX = "..tmp-"
# Version directories are named by a 16-hex-digit hash (see version_of).
_VERSION_NAME_RE = re.compile(r"\.\.[0-9a-f]{16}\Z")


def _version_name(version: str) -> str:
    return f"{VERSION_PREFIX}{version}"


def _written_by_us(root: safepath.Dir, entry: str, info: os.stat_result) -> bool:
    """Whether ``entry`` of a config root is something dockerops writes there."""
    if entry == MARKER:
        return stat.S_ISREG(info.st_mode)
    if entry.startswith(TMP_PREFIX):
        return stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)
    if _VERSION_NAME_RE.match(entry):
        return stat.S_ISDIR(info.st_mode)
    if not stat.S_ISLNK(info.st_mode):
        return False
    target = root.readlink(entry) or ""
    if entry == CURRENT:
        return bool(_VERSION_NAME_RE.match(target))
    return target == f"{CURRENT}/{entry}"


def _not_ours(root: Path, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    return (
        f"{root} is not a dockerops config root: it holds {shown}, which dockerops "
        f"did not write (dockerops marks its config roots with {MARKER}); choose another "
        "config:root, or move those entries away"
    )


def _collect(
    directory: safepath.Dir, prefix: str, out: dict[str, tuple[int, bytes]], content: bool
) -> None:
    for entry, info in directory.entries():
        name = f"{prefix}{entry}"
        if stat.S_ISDIR(info.st_mode):
            with directory.child(entry) as sub:
                _collect(sub, f"{name}/", out, content)
        elif stat.S_ISREG(info.st_mode):
            data = directory.read_file(entry) if content else b""
            out[name] = (stat.S_IMODE(info.st_mode), data)
        else:
            raise safepath.UnsafePath(
                f"{directory.path}/{entry} is not a regular file: dockerops writes only "
                "files and directories in a config version, and does not follow links"
            )


def _swap_link(root: safepath.Dir, target: str, name: str) -> None:
    """Point the symlink ``name`` at ``target`` atomically (a new link renamed over it)."""
    tmp = f"{TMP_PREFIX}link-{os.getpid()}-{secrets.token_hex(6)}"
    root.symlink(target, tmp)
    try:
        root.rename(tmp, name)
    except BaseException:
        with contextlib.suppress(OSError):
            root.unlink(tmp)
        raise


def _discard(root: safepath.Dir, entry: str) -> None:
    """Remove a temporary entry (a directory tree or a link), ignoring failures."""
    with contextlib.suppress(OSError, safepath.UnsafePath):
        info = root.lstat(entry)
        if info is not None and stat.S_ISDIR(info.st_mode):
            root.rmtree(entry)
        elif info is not None:
            root.unlink(entry)


def _text(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")


def _uid(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(str(owner)).pw_uid
    except KeyError:
        raise ConfigError(f"no such user {owner!r}") from None


def _gid(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise ConfigError(f"no such group {group!r}") from None
