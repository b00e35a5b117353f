"""restic, the storage engine of dockerops' backups, driven through its CLI.

restic gives deduplicated, encrypted, compressed snapshots, ``check`` and
``forget`` policies; this module only runs it and reads what it says. Results
are read from ``--json`` output. Failures are not (restic 0.14, Debian
bookworm's, exits 1 for every fatal error and prints it as text), so
:func:`classify` sorts its ``Fatal:`` line into a few kinds an operator acts
on differently: the repository cannot be reached, the password is wrong, the
disk is full, the repository is locked, an id is unknown, the data is damaged.

The password never appears on a command line or in the environment of
another process: an executor hands it over a pipe (``RESTIC_PASSWORD_FILE=
/dev/fd/N``) or, for a helper container, a private file. The repository
location goes through ``RESTIC_REPOSITORY`` (a URL may carry credentials) and
is shown with any user:password in it hidden.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DockerError

# Listing and checking calls get this long; backups and restores run as long
# as they need (a first backup of a large directory takes its time).
SHORT_TIMEOUT = 600.0
# restic exits 3 when it saved a snapshot but could not read some files.
INCOMPLETE_EXIT = 3


class ResticError(DockerError):
    """restic failed; ``kind`` says how (see :data:`KINDS`)."""

    def __init__(self, message: str, kind: str = "failed") -> None:
        super().__init__(message)
        self.kind = kind


# (kind, what it means to the operator, patterns in restic's stderr), first match wins.
KINDS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("password", "wrong password for the repository", ("wrong password or no key found",)),
    (
        "no_space",
        "no space left on the device",
        ("no space left on device", "disk quota exceeded"),
    ),
    (
        "unreachable",
        "the repository cannot be reached",
        (
            "connection refused",
            "dial tcp",
            "no such host",
            "i/o timeout",
            "network is unreachable",
            "unable to start the sftp session",
            "context deadline exceeded",
            "tls: ",
            "permission denied",
        ),
    ),
    (
        "locked",
        "the repository is locked by another restic process",
        ("repository is already locked", "unable to create lock"),
    ),
    ("not_found", "no such snapshot", ("no matching id found", "invalid id")),
    (
        "damaged",
        "the repository's data is damaged",
        (
            "ciphertext verification failed",
            "pack id does not match",
            "repository contains errors",
            "checksum mismatch",
            "error loading",
            "there were ",
        ),
    ),
    (
        "uninitialized",
        "there is no restic repository there",
        ("is there a repository at the following location",),
    ),
)


_KIND_PATTERNS = tuple(pattern for _, _, patterns in KINDS for pattern in patterns)


def classify(stderr: str) -> tuple[str, str]:
    """``(kind, meaning)`` of a failed restic run from what it printed."""
    text = stderr.lower()
    for kind, meaning, patterns in KINDS:
        if any(pattern in text for pattern in patterns):
            return kind, meaning
    return "failed", "restic failed"


def fatal_lines(stderr: str, limit: int = 5) -> str:
    """The lines of restic's stderr worth quoting (its errors, not its progress)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # Also the lines :func:`classify` reads: check's "Pack ID does not match"
    # names the damaged pack, its "Fatal:" line does not.
    wanted = [
        line
        for line in lines
        if line.startswith(("Fatal:", "error", "Error", "ignoring error", "unable", "Load("))
        or "error" in line.lower()
        or any(pattern in line.lower() for pattern in _KIND_PATTERNS)
    ]
    chosen = (wanted or lines)[-limit:]
    return "; ".join(line[:300] for line in chosen)


_CREDENTIALS_RE = re.compile(r"(//)[^/@\s]*@")


def show_location(location: str) -> str:
    """A repository location as it may be shown: ``user:password@`` hidden."""
    return _CREDENTIALS_RE.sub(r"\1***@", location)


@dataclass(frozen=True)
class ResticRun:
    returncode: int
    stdout: bytes
    stderr: bytes


# (restic's arguments without "restic", extra environment, password, timeout) -> its run.
Executor = Callable[[list[str], Mapping[str, str], str, "float | None"], ResticRun]


def _base_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Nothing of the minion's own RESTIC_* settings leaks into the run.
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LC_ALL": "C",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    env.update(extra)
    return env


def host_executor(binary: str = "restic") -> Executor:
    """Run restic on this host, the password handed over a pipe."""

    def run(
        args: list[str], env: Mapping[str, str], password: str, timeout: float | None
    ) -> ResticRun:
        read_end, write_end = os.pipe()
        try:
            # A password is one line of at most 4 KiB: it fits the pipe's buffer.
            os.write(write_end, password.encode() + b"\n")
            os.close(write_end)
            write_end = -1
            full_env = _base_env(env)
            full_env["RESTIC_PASSWORD_FILE"] = f"/dev/fd/{read_end}"
            try:
                done = subprocess.run(
                    [binary, *args],
                    env=full_env,
                    pass_fds=(read_end,),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
            except FileNotFoundError:
                raise ResticError(
                    f"{binary} is not installed (Debian: apt-get install restic)", "failed"
                ) from None
            except subprocess.TimeoutExpired:
                raise ResticError(f"restic {args[0]} took longer than {timeout:g}s") from None
            return ResticRun(done.returncode, done.stdout, done.stderr)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)

    return run


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str
    hostname: str
    paths: list[str]
    tags: dict[str, str]
    parent: str | None = None

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Snapshot:
        tags = {}
        for tag in raw.get("tags") or []:
            key, _, value = str(tag).partition("=")
            tags[key] = value
        return cls(
            id=str(raw["id"]),
            short_id=str(raw.get("short_id") or str(raw["id"])[:8]),
            time=str(raw.get("time", "")),
            hostname=str(raw.get("hostname", "")),
            paths=[str(p) for p in raw.get("paths") or []],
            tags=tags,
            parent=raw.get("parent"),
        )


@dataclass(frozen=True)
class BackupSummary:
    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    data_added: int
    total_files: int
    total_bytes: int
    duration: float
    # restic exit 3: a snapshot saved, but some files could not be read.
    incomplete: bool = False
    errors: list[str] = field(default_factory=list)


def tag_args(tags: Mapping[str, str]) -> list[str]:
    """``--tag key=value`` per tag (one per flag: a comma would split it)."""
    out = []
    for key, value in tags.items():
        text = f"{key}={value}"
        if "," in text or _CONTROL_RE.search(text):
            raise ValueError(f"a restic tag cannot hold a comma or control character: {text!r}")
        out += ["--tag", text]
    return out


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def json_lines(raw: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of restic's line-by-line output (anything else skipped)."""
    for line in raw.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item


class Restic:
    """One repository, reached through one executor."""

    def __init__(
        self,
        location: str,
        password: str,
        executor: Executor | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.location = location
        self.password = password
        self.executor = executor or host_executor()
        self.cache_dir = cache_dir

    @property
    def shown(self) -> str:
        return show_location(self.location)

    def _env(self) -> dict[str, str]:
        return {"RESTIC_REPOSITORY": self.location}

    def run(
        self,
        args: list[str],
        doing: str,
        timeout: float | None = SHORT_TIMEOUT,
        ok: tuple[int, ...] = (0,),
    ) -> ResticRun:
        """Run restic; a :class:`ResticError` saying what failed unless it exits in ``ok``."""
        # Global options first: a backup's paths follow "--".
        full = (["--cache-dir", self.cache_dir] if self.cache_dir else []) + list(args)
        done = self.executor(full, self._env(), self.password, timeout)
        if done.returncode in ok:
            return done
        stderr = done.stderr.decode("utf-8", "replace")
        kind, meaning = classify(stderr)
        detail = fatal_lines(stderr) or f"exit {done.returncode}"
        raise ResticError(f"{doing} in {self.shown}: {meaning}: {detail}", kind)

    def run_unlocking(
        self,
        args: list[str],
        doing: str,
        timeout: float | None = SHORT_TIMEOUT,
        ok: tuple[int, ...] = (0,),
    ) -> ResticRun:
        """:meth:`run`, and once more after ``restic unlock`` when a lock is in
        the way: unlock removes only stale locks (their holder's process is gone,
        or they are older than 30 minutes), never a live one (no ``--remove-all``)."""
        try:
            return self.run(args, doing, timeout, ok)
        except ResticError as err:
            if err.kind != "locked":
                raise
        self.unlock()
        return self.run(args, doing, timeout, ok)

    def unlock(self) -> None:
        """Remove stale locks only (restic's default ``unlock``)."""
        self.run(["unlock"], "removing stale locks")

    def initialized(self) -> bool:
        """Whether a repository is there (and the password opens it).

        False only when nothing is there; an unreachable repository or a
        wrong password raises.
        """
        try:
            self.run(["cat", "config"], "opening the repository")
        except ResticError as err:
            if err.kind == "uninitialized":
                return False
            raise
        return True

    def init(self) -> None:
        self.run(["init"], "creating the repository")

    def backup(
        self,
        paths: list[str],
        tags: Mapping[str, str],
        host: str,
        when: str | None = None,
    ) -> BackupSummary:
        """Snapshot ``paths``; ``when`` (``YYYY-MM-DD HH:MM:SS``) sets its time."""
        args = ["backup", "--json", "--host", host, *tag_args(tags)]
        if when:
            args += ["--time", when]
        args += ["--", *paths]
        done = self.run_unlocking(
            args, "backing up " + ", ".join(paths), timeout=None, ok=(0, INCOMPLETE_EXIT)
        )
        summary: dict[str, Any] | None = None
        errors = []
        for item in json_lines(done.stdout):
            if item.get("message_type") == "summary":
                summary = item
            elif item.get("message_type") == "error":
                errors.append(f"{item.get('item', '')}: {item.get('error', '')}"[:300])
        if summary is None or not summary.get("snapshot_id"):
            stderr = done.stderr.decode("utf-8", "replace")
            raise ResticError(f"backing up in {self.shown}: no snapshot: {fatal_lines(stderr)}")
        if not errors and done.returncode == INCOMPLETE_EXIT:
            errors = [fatal_lines(done.stderr.decode("utf-8", "replace"))]
        return BackupSummary(
            snapshot_id=str(summary["snapshot_id"]),
            files_new=int(summary.get("files_new", 0)),
            files_changed=int(summary.get("files_changed", 0)),
            files_unmodified=int(summary.get("files_unmodified", 0)),
            data_added=int(summary.get("data_added", 0)),
            total_files=int(summary.get("total_files_processed", 0)),
            total_bytes=int(summary.get("total_bytes_processed", 0)),
            duration=float(summary.get("total_duration", 0.0)),
            incomplete=done.returncode == INCOMPLETE_EXIT,
            errors=errors,
        )

    def snapshots(self, tags: Mapping[str, str], host: str | None = None) -> list[Snapshot]:
        """The snapshots carrying every tag in ``tags`` (of ``host``, if given), oldest first."""
        args = ["snapshots", "--json"]
        if tags:
            # One --tag with a comma-joined list: snapshots carrying all of them.
            args += ["--tag", ",".join(tag_args(tags)[1::2])]
        if host:
            args += ["--host", host]
        done = self.run_unlocking(args, "listing snapshots")
        try:
            raw = json.loads(done.stdout or b"[]")
        except ValueError:
            raise ResticError(f"listing snapshots in {self.shown}: unreadable output") from None
        out = [Snapshot.from_json(item) for item in raw or [] if isinstance(item, dict)]
        return sorted(out, key=lambda snap: snap.time)

    def forget(
        self,
        policy: list[str],
        tags: Mapping[str, str],
        host: str,
        prune: bool = True,
        dry_run: bool = False,
    ) -> tuple[list[Snapshot], list[Snapshot]]:
        """Apply ``policy`` (``--keep-*`` flags) to the snapshots with ``tags``
        of ``host`` only, as one group; ``(kept, removed)``."""
        if not policy:
            raise ValueError("a retention policy needs at least one --keep option")
        args = ["forget", "--json", "--host", host, "--group-by", "host"]
        args += ["--tag", ",".join(tag_args(tags)[1::2]), *policy]
        if dry_run:
            args.append("--dry-run")
        elif prune:
            args.append("--prune")
        done = self.run_unlocking(args, "applying the retention policy", timeout=None)
        kept: list[Snapshot] = []
        removed: list[Snapshot] = []
        text = done.stdout.decode("utf-8", "replace")
        # With --prune, restic prints prune's progress after forget's JSON.
        start = text.find("[")
        try:
            groups, _ = json.JSONDecoder().raw_decode(text[start:]) if start >= 0 else ([], 0)
        except ValueError:
            raise ResticError(f"applying retention in {self.shown}: unreadable output") from None
        for group in groups or []:
            kept += [Snapshot.from_json(item) for item in group.get("keep") or []]
            removed += [Snapshot.from_json(item) for item in group.get("remove") or []]
        return kept, removed

    def check(self, read_data_subset: str | None = None) -> None:
        """``restic check``: the repository's structure (and, with
        ``read_data_subset``, that part of its data) is sound."""
        args = ["check"]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        self.run_unlocking(args, "checking the repository", timeout=None)

    def restore(self, snapshot_id: str, target: str, include: str | None = None) -> None:
        """Restore a snapshot (or the ``include`` path of it) below ``target``,
        reading back every file restored and comparing it with the snapshot's
        content hashes (``--verify``)."""
        args = ["restore", snapshot_id, "--target", target, "--verify"]
        if include:
            args += ["--include", include]
        self.run_unlocking(args, f"restoring snapshot {snapshot_id[:8]}", timeout=None)

    def ls(self, snapshot_id: str, path: str | None = None) -> list[dict[str, Any]]:
        """The nodes of a snapshot (below ``path``, if given): name, type, path, size, mode."""
        args = ["ls", "--json", snapshot_id]
        if path:
            args += ["--recursive", path]
        done = self.run_unlocking(args, f"listing snapshot {snapshot_id[:8]}", timeout=None)
        return [item for item in json_lines(done.stdout) if item.get("struct_type") == "node"]
