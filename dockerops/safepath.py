"""Host paths below an allow-list root, reached without following symlinks.

dockerops runs as root next to containers that may be hostile. A directory a
container can write to can hold a symlink planted where dockerops expects a
directory or a file; a path-based ``open``/``mkdir``/``rmtree`` would follow it
and write, read or delete wherever it points. Everything here therefore works
like runc's filepath-securejoin and libpathrs: the *trusted root* (an entry of
``dockerops:allowed_host_paths``, the admin's, resolved normally) is opened
once, and every component below it is opened relative to its parent's file
descriptor with ``O_NOFOLLOW | O_DIRECTORY``. A symlink anywhere below the
trusted root is refused, never followed. Files are opened with ``O_NOFOLLOW``
(and created with ``O_EXCL``), links are read with ``readlink``, and trees are
removed with the fd-based ``shutil.rmtree(name, dir_fd=...)``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from types import TracebackType

from .errors import DockerError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone planted must not hang the minion.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# The fd-based rmtree is what makes removal safe; refuse to run without it.
assert shutil.rmtree.avoids_symlink_attacks


class UnsafePath(DockerError):
    """A path dockerops manages holds something it must not follow or touch."""


def components(path: str, trusted_root: str) -> list[str]:
    """The components of ``path`` below ``trusted_root`` (both absolute).

    Raises ValueError when ``path`` is not below ``trusted_root`` or has a
    component that is empty, ``.`` or ``..``.
    """
    root = trusted_root.rstrip("/") or "/"
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        raise ValueError(f"{path} is not below {trusted_root}")
    rest = path[len(root) :].strip("/")
    parts = rest.split("/") if rest else []
    for part in parts:
        _check_name(part)
    return parts


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"{name!r} is not a single path component")


class Dir:
    """An open directory, reached from a trusted root without following symlinks.

    ``path`` is for messages only: every operation is relative to the fd.
    Names passed to the methods are single components.
    """

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open_trusted(cls, trusted_root: str) -> Dir:
        """Open the trusted root itself (the admin's path: symlinks allowed)."""
        return cls(os.open(trusted_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), trusted_root)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _sub(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def _refuse(self, name: str) -> UnsafePath:
        info = self.lstat(name)
        what = "a symlink" if info is not None and stat.S_ISLNK(info.st_mode) else "not a directory"
        return UnsafePath(
            f"{self._sub(name)} is {what}: dockerops does not follow or replace it "
            "(something other than dockerops put it there)"
        )

    def child(self, name: str, create: bool = False, mode: int = 0o755) -> Dir:
        """Open the directory ``name`` (made with ``mode`` if missing and ``create``).

        A symlink or a non-directory is refused (UnsafePath); a missing one
        without ``create`` raises FileNotFoundError.
        """
        _check_name(name)
        for _attempt in range(2):
            try:
                return Dir(os.open(name, _DIR_FLAGS, dir_fd=self.fd), self._sub(name))
            except FileNotFoundError:
                if not create:
                    raise
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refuse(name) from None
                raise
            # Made meanwhile by someone else: opened, without following, on the next round.
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=self.fd)
        raise FileNotFoundError(errno.ENOENT, "vanished while being created", self._sub(name))

    def walk(self, parts: list[str], create: bool = False, mode: int = 0o755) -> Dir:
        """Open ``parts`` below this directory, one component at a time.

        The returned Dir is new (close it); this one stays open.
        """
        current = Dir(os.dup(self.fd), self.path)
        try:
            for part in parts:
                following = current.child(part, create, mode)
                current.close()
                current = following
        except BaseException:
            current.close()
            raise
        return current

    def lstat(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name``, or None when there is none."""
        _check_name(name)
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def listdir(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry with its ``lstat`` (entries that vanish meanwhile are skipped)."""
        for name in self.listdir():
            info = self.lstat(name)
            if info is not None:
                yield name, info

    def read_file(self, name: str) -> bytes:
        """The content of the regular file ``name``; anything else is refused."""
        _check_name(name)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self._refuse(name) from None
            raise
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafePath(f"{self._sub(name)} is not a regular file")
            return handle.read()

    def write_file(
        self, name: str, content: bytes, mode: int, uid: int = -1, gid: int = -1
    ) -> None:
        """Create the new file ``name`` (never an existing one), fsynced."""
        _check_name(name)
        fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)

    def readlink(self, name: str) -> str | None:
        """The target of the symlink ``name``; None when it is missing or not a link."""
        _check_name(name)
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.EINVAL):
                return None
            raise

    def symlink(self, target: str, name: str) -> None:
        _check_name(name)
        os.symlink(target, name, dir_fd=self.fd)

    def rename(self, src: str, dst: str) -> None:
        """Rename within this directory (atomic, replaces ``dst``)."""
        _check_name(src)
        _check_name(dst)
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name: str) -> None:
        _check_name(name)
        os.unlink(name, dir_fd=self.fd)

    def mkdir(self, name: str, mode: int = 0o755) -> None:
        """Make the directory ``name``; an existing entry is an error (FileExistsError)."""
        _check_name(name)
        os.mkdir(name, mode, dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        _check_name(name)
        os.rmdir(name, dir_fd=self.fd)

    def rmtree(self, name: str) -> None:
        """Remove the directory tree ``name`` without following any symlink in it."""
        info = self.lstat(name)
        if info is None:
            return
        if not stat.S_ISDIR(info.st_mode):
            raise self._refuse(name)
        shutil.rmtree(name, dir_fd=self.fd)

    def chmod(self, mode: int) -> None:
        os.fchmod(self.fd, mode)

    def fsync(self) -> None:
        os.fsync(self.fd)


def open_below(trusted_root: str, path: str, create: bool = False, mode: int = 0o755) -> Dir:
    """Open the directory ``path`` below ``trusted_root`` without following symlinks.

    ``trusted_root`` is resolved normally; every component below it must be a
    real directory (missing ones are made with ``mode`` when ``create``).
    Raises UnsafePath for a symlink, FileNotFoundError for a missing one.
    """
    parts = components(path, trusted_root)
    if create:
        # The allow-list root is the admin's: made (through any symlink) if missing.
        os.makedirs(trusted_root, mode, exist_ok=True)
    with Dir.open_trusted(trusted_root) as base:
        return base.walk(parts, create, mode)


def ensure_dir(trusted_root: str, path: str, mode: int = 0o755) -> None:
    """Make the directory ``path`` (and its parents below ``trusted_root``) exist,
    refusing a symlink at any component below ``trusted_root``."""
    open_below(trusted_root, path, create=True, mode=mode).close()
