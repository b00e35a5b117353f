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
import difflib
import grp
import hashlib
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DockerError
from .spec import ConfigSpec

CURRENT = "..data"
VERSION_PREFIX = ".."
_HIDDEN = "**********"

# fetch(source_url) -> text ; render(text, template_name, name) -> text
Fetch = Callable[[str], str]
Render = Callable[[str, str, str], str]


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


def render(spec: ConfigSpec, fetch: Fetch, render_template: Render) -> RenderedConfig:
    """Render every file of ``spec`` (no host writes) and compute its version."""
    files = []
    for name, item in sorted(spec.files.items()):
        text = fetch(item.source) if item.source is not None else item.contents or ""
        if item.template:
            text = render_template(text, item.template, name)
        files.append(
            RenderedFile(
                name=name,
                content=text.encode(),
                mode=int(item.mode, 8),
                owner=item.owner,
                group=item.group,
                show_diff=item.show_diff,
            )
        )
    return RenderedConfig(tuple(files), version_of(files))


def version_of(files: Iterable[RenderedFile]) -> str:
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.name):
        header = json.dumps([item.name, item.mode, item.owner, item.group])
        digest.update(header.encode() + b"\0" + hashlib.sha256(item.content).digest())
    return digest.hexdigest()[:16]


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` (longest first)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text


class ConfigStore:
    """One service's config root on the host."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def version_dir(self, version: str) -> Path:
        return self.root / f"{VERSION_PREFIX}{version}"

    def current(self) -> str | None:
        try:
            target = os.readlink(self.root / CURRENT)
        except OSError:
            return None
        return target.removeprefix(VERSION_PREFIX)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name.removeprefix(VERSION_PREFIX)
            for p in self.root.iterdir()
            if p.name.startswith(VERSION_PREFIX)
            and p.name != CURRENT
            and not p.name.startswith("..tmp")
            and p.is_dir()
            and not p.is_symlink()
        )

    def has(self, version: str) -> bool:
        return self.version_dir(version).is_dir()

    def read(self, version: str) -> dict[str, bytes]:
        base = self.version_dir(version)
        out = {}
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    out[str(path.relative_to(base))] = path.read_bytes()
        return out

    def modes(self, version: str) -> dict[str, int]:
        base = self.version_dir(version)
        return {name: (base / name).stat().st_mode & 0o7777 for name in self.read(version)}

    def diff(self, rendered: RenderedConfig, secrets: Iterable[str] = ()) -> dict[str, object]:
        """Changes from the current version to ``rendered``, per file.

        Diffs of files with ``show_diff: False`` are withheld, and any secret
        value of the service is masked in the rest (before diffing, so a
        multi-line secret is masked whole).
        """
        secrets = list(secrets)
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
                    changes[name] = {"added": redact(_text(item.content), secrets)}
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
                    lines = difflib.unified_diff(
                        redact(_text(old[name]), secrets).splitlines(keepends=True),
                        redact(_text(item.content), secrets).splitlines(keepends=True),
                        fromfile=f"{name} ({current})",
                        tofile=f"{name} ({rendered.version})",
                    )
                    change["diff"] = "".join(lines) or "(only masked secrets changed)"
            if change:
                changes[name] = change
        return changes

    def write(self, rendered: RenderedConfig) -> bool:
        """Write ``rendered`` as its version directory unless it exists. Atomic."""
        target = self.version_dir(rendered.version)
        if target.is_dir():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="..tmp-", dir=self.root))
        try:
            for item in rendered.files:
                path = tmp / item.name
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                with open(path, "wb") as handle:
                    handle.write(item.content)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(path, item.mode)
                if item.owner is not None or item.group is not None:
                    os.chown(path, _uid(item.owner), _gid(item.group))
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ConfigError(
                f"writing config version {rendered.version} in {self.root}: {err}"
            ) from err
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        return True

    def activate(self, version: str) -> bool:
        """Point ``..data`` (and the stable names) at ``version``. Atomic."""
        if not self.has(version):
            raise ConfigError(f"config version {version} is not in {self.root}")
        if self.current() == version:
            return False
        names = {p.split("/", 1)[0] for p in self.read(version)}
        for name in names:
            link = self.root / name
            if not link.is_symlink() and link.exists():
                raise ConfigError(f"{link} is in the way of the config directory's {name}")
        for name in names:
            link = self.root / name
            if not link.is_symlink():
                os.symlink(f"{CURRENT}/{name}", link)
        tmp_link = self.root / f"..tmp-data-{os.getpid()}-{time.monotonic_ns()}"
        os.symlink(f"{VERSION_PREFIX}{version}", tmp_link)
        os.replace(tmp_link, self.root / CURRENT)
        for path in self.root.iterdir():
            if (
                path.is_symlink()
                and not path.name.startswith(VERSION_PREFIX)
                and path.name not in names
            ):
                path.unlink()
        _fsync_dir(self.root)
        return True

    def remove(self) -> None:
        """Delete the whole config root (every version)."""
        shutil.rmtree(self.root)

    def prune(self, keep: int, in_use: Iterable[str] = ()) -> list[str]:
        """Remove old versions: keep the current one, those in use, and ``keep`` newest."""
        protected = set(in_use) | {self.current() or ""}
        candidates = sorted(
            (v for v in self.versions() if v not in protected),
            key=lambda v: self.version_dir(v).stat().st_mtime,
            reverse=True,
        )
        removed = []
        for version in candidates[max(keep - 1, 0) :]:
            shutil.rmtree(self.version_dir(version), ignore_errors=True)
            removed.append(version)
        for leftover in self.root.glob("..tmp-*") if self.root.is_dir() else []:
            with contextlib.suppress(OSError):
                if leftover.is_symlink():
                    leftover.unlink()
                else:
                    shutil.rmtree(leftover)
        return removed


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
