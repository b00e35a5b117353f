"""Backups and restores of a service's data mounts, with restic as the engine.

What restic does not know and this module adds:

- **Consistency**: ``stop`` stops the replicas that write to the backed-up
  mounts (all at once: every replica of a service mounts the same
  directories), ``pause`` freezes them (``docker pause``), ``exec`` runs a
  command in one replica first (a database dump into a data dir), ``none``
  neither. The replicas are started or unpaused again whatever happens, and
  the call waits until each is healthy again (it fails, saying so, if one is
  not). A run killed inside that window leaves a note
  (``<state_dir>/backups/<service>.window.json``): the next backup or
  restore starts or unpauses what it stopped first.
- **Scope**: snapshots carry the tags ``service``, ``environment``,
  ``minion``, ``image`` and ``config`` and the minion id as restic's host;
  retention (``restic forget --prune``) is scoped to this service on this
  minion, so a shared repository's other snapshots are never touched.
- **Exclusion**: one backup or restore of a service at a time (the second
  fails fast, naming the first); while containers are stopped, paused or
  swapped, the service's rollout lock is held too, so no state run starts
  them meanwhile.
- **Restore with a way back**: the snapshot is restored next to each data
  directory first (verified by restic against its content hashes) while the
  service keeps running, so a damaged snapshot is refused before anything is
  touched. Only then are the replicas stopped, each current directory renamed
  aside (kept, never deleted), the restored one renamed into place, and the
  replicas started and waited on. If they do not come up healthy, the previous
  data is put back and the service started on it. Every step is journalled
  (``<state_dir>/backups/<service>.restore.json``): a restore killed
  midway is reported by the next call, and ``undo=True`` puts the previous
  data back.
- **Record**: the last success and failure per service
  (``<state_dir>/backups/<service>.json``), for status, grains and metrics.

Host paths are opened below their allow-list root without following symlinks
(:mod:`dockerops.safepath`); only dockerops' own staging copies are ever
removed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import fcntl
import hashlib
import os
import posixpath
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safepath, volumes
from .client import translate_errors
from .errors import DockerError, SpecError
from .health import min_healthy_time
from .host import DockerHost, bounded_tail
from .lock import LockHeld, RolloutLock
from .masking import redact
from .records import read_mapping, save_json
from .replicas import ActualReplica
from .restic import BackupSummary, Restic, ResticError, Snapshot
from .spec import PILLAR_KEY, BackupSettings, DataMount, ServiceSpec, check_service_name

# Snapshots whose sizes the record remembers (restic 0.14 does not list them).
SNAPSHOTS_KEPT = 500
VERIFIED_KEPT = 50
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# A backup applies the keep policy at most this often (see _retention_due).
RETENTION_EVERY = 3600.0

Send = Callable[[str, dict[str, Any]], Any]


class BackupError(DockerError):
    """A backup, verify or restore could not be done; nothing was deleted."""


@dataclass
class Outcome:
    """What a backup call did, shaped like a converge result for the Salt faces."""

    result: bool | None = True
    comment: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


def _backups_dir(state_dir: str) -> Path:
    return Path(state_dir) / "backups"


class BackupRecord:
    """``<state_dir>/backups/<service>.json``: the last success and failure,
    the sizes of recent snapshots, and the digests verify found."""

    def __init__(self, state_dir: str, service: str) -> None:
        check_service_name(service)
        self.path = _backups_dir(state_dir) / f"{service}.json"

    def load(self) -> dict[str, Any]:
        return read_mapping(self.path)

    def last_success(self) -> dict[str, Any] | None:
        entry = self.load().get("last_success")
        return entry if isinstance(entry, dict) else None

    def last_failure(self) -> dict[str, Any] | None:
        entry = self.load().get("last_failure")
        return entry if isinstance(entry, dict) else None

    def update(self, **changes: Any) -> None:
        data = self.load()
        for key, value in changes.items():
            if (
                isinstance(value, dict)
                and isinstance(data.get(key), dict)
                and key
                in (
                    "snapshots",
                    "verified",
                )
            ):
                merged = {**data[key], **value}
                keep = SNAPSHOTS_KEPT if key == "snapshots" else VERIFIED_KEPT
                data[key] = dict(list(merged.items())[-keep:])
            else:
                data[key] = value
        save_json("the backup record", self.path, data)


class Journal:
    """A small JSON note of work in progress that a killed run leaves behind."""

    def __init__(self, state_dir: str, service: str, kind: str) -> None:
        check_service_name(service)
        self.path = _backups_dir(state_dir) / f"{service}.{kind}.json"

    def load(self) -> dict[str, Any]:
        return read_mapping(self.path)

    def save(self, data: dict[str, Any]) -> None:
        save_json("the backup journal", self.path, data, indent=1)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _restore_running(state_dir: str, service: str) -> bool:
    """Whether a restore of ``service`` runs now: its backup lock's flock is
    held (not its recorded pid, which a reboot may have given to another
    process)."""
    path = RolloutLock(state_dir, service, scope="backup").path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def interrupted_restore(state_dir: str, service: str, holding: bool = False) -> str | None:
    """What an interrupted restore of ``service`` left, and how to recover;
    None when none was interrupted. State runs refuse to start the service
    meanwhile: its data directory may be missing or half swapped.

    A restore running now (its backup lock held) was not interrupted; a caller
    ``holding`` that lock itself knows none runs."""
    journal = Journal(state_dir, service, "restore").load()
    if not journal:
        return None
    if not holding and _restore_running(state_dir, service):
        return None  # running now: its lock answers for it
    places = []
    for entry in journal.get("paths") or []:
        if entry.get("phase") in ("aside", "swapped"):
            if entry.get("volume"):
                where = f"volume {entry['volume']}'s data is kept in volume {entry.get('aside')}"
            else:
                where = f"{entry.get('path')} is kept at {entry.get('aside_path')}"
            places.append(where)
    where = "; ".join(places) or "the data directories were not touched yet"
    return (
        f"a restore of {service} (snapshot {str(journal.get('snapshot', '?'))[:8]}, started "
        f"{journal.get('started')}) was interrupted: {where}. Run `dockerops.restore "
        f"{service} undo=True` to put the previous data back and start the service, "
        "then restore again if wanted"
    )


# -- what a backup covers ---------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One data mount a backup covers: its host path and allow-list root (None
    for a volume), and the path restic sees (the host path, or the container
    path when restic runs in the helper container)."""

    mount: DataMount
    path: str | None
    root: str | None
    snap_path: str


def uses_helper(spec: ServiceSpec) -> bool:
    """Whether the backup reaches a Docker volume: then restic runs in a helper
    container that mounts every covered mount at its container path."""
    return any(mount.volume is not None for mount in spec.backup_mounts())


def targets(spec: ServiceSpec) -> list[Target]:
    """What ``spec``'s backup covers, checked: host directories are real
    directories below their allow-list root, no symlink on the way."""
    helper = uses_helper(spec)
    out = []
    for mount in spec.backup_mounts():
        host_path = mount.host
        if host_path is None:
            out.append(Target(mount, None, None, mount.container))
            continue
        root = spec.trusted_root(host_path)
        if host_path == root:
            raise BackupError(
                f"{host_path} is an allowed host path itself: back up a directory below it"
            )
        try:
            safepath.open_below(root, host_path).close()
        except FileNotFoundError:
            raise BackupError(
                f"{spec.name}: {host_path} does not exist (the service has not run yet?)"
            ) from None
        out.append(Target(mount, host_path, root, mount.container if helper else host_path))
    return out


def _writers(host: DockerHost, spec: ServiceSpec, covered: list[Target]) -> list[ActualReplica]:
    """The running replicas that can write to the covered mounts."""
    if all(target.mount.read_only for target in covered):
        return []
    return sorted(
        (c for c in host.managed(spec.name) if c.state in ("running", "paused")),
        key=lambda c: c.index or 0,
    )


def snapshot_tags(spec: ServiceSpec, minion: str, replicas: list[ActualReplica]) -> dict[str, str]:
    """The tags a snapshot of ``spec`` carries: what ran when it was taken
    (and ``via: helper`` when its paths are container paths)."""
    first = replicas[0] if replicas else None
    extra = {"via": "helper"} if uses_helper(spec) else {}
    return {
        **extra,
        "service": spec.name,
        "environment": spec.environment,
        "minion": minion,
        "image": first.image if first and first.image else spec.image_ref,
        "config": (first.config_version if first else "") or "none",
    }


def scope_tags(service: str) -> dict[str, str]:
    return {"service": service}


# -- consistency window -----------------------------------------------------


def _parallel(work: Callable[[ActualReplica], Any], replicas: list[ActualReplica]) -> list[Any]:
    """Run ``work`` on every replica at once (stops wait out grace periods):
    results or exceptions, in order."""
    if not replicas:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(replicas))) as pool:
        futures = [pool.submit(work, replica) for replica in replicas]
        out = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as err:
                out.append(err)
        return out


class Window:
    """Stops or pauses replicas and always brings them back, healthy."""

    def __init__(
        self, host: DockerHost, spec: ServiceSpec, state_dir: str, log: Callable[[str], None]
    ) -> None:
        self.host = host
        self.spec = spec
        self.journal = Journal(state_dir, spec.name, "window")
        self.log = log
        self.touched: list[tuple[str, str, str]] = []  # (id, name, "stopped"|"paused")

    def _note(self) -> None:
        if self.touched:
            self.journal.save({"containers": [list(item) for item in self.touched]})
        else:
            self.journal.clear()

    def stop(self, replicas: list[ActualReplica]) -> None:
        running = [c for c in replicas if c.state == "running"]
        self.touched = [(c.id, c.name, "stopped") for c in running]
        self._note()
        failures = [err for err in _parallel(self._stop_one, running) if err is not None]
        if failures:
            raise BackupError(f"stopping {self.spec.name}: {failures[0]}")

    def _stop_one(self, replica: ActualReplica) -> Exception | None:
        return stop_replica(self.host, replica, self.log)

    def pause(self, replicas: list[ActualReplica]) -> None:
        running = [c for c in replicas if c.state == "running"]
        self.touched = [(c.id, c.name, "paused") for c in running]
        self._note()
        for replica in running:
            with translate_errors(f"pausing {replica.name}"):
                self.host.api.pause(replica.id)
            self.log(f"paused {replica.name}")

    def restore(self) -> list[str]:
        """Start or unpause every replica touched, then wait until each is
        healthy; the problems (empty: all healthy again)."""
        problems = bring_back(self.host, self.spec, self.touched, self.log)
        self.touched = []
        self._note()
        return problems


def stop_replica(
    host: DockerHost, replica: ActualReplica, log: Callable[[str], None]
) -> Exception | None:
    """Stop one replica within its grace period; the error, if it failed."""
    try:
        report = host.stop(replica.id, replica.name)
    except DockerError as err:
        return err
    killed = " (killed after its grace period)" if report.killed else ""
    log(f"stopped {replica.name} in {report.seconds:g}s{killed}")
    return None


def bring_back(
    host: DockerHost,
    spec: ServiceSpec,
    touched: list[tuple[str, str, str]],
    log: Callable[[str], None],
) -> list[str]:
    """Start (``stopped``) or unpause (``paused``) containers, then wait for
    each to be healthy; the problems, one per container that is not."""
    problems = []
    started = []
    for container_id, name, how in touched:
        try:
            details = host.inspect(container_id)
        except DockerError as err:
            problems.append(f"{name}: {err}")
            continue
        state = details.get("State") or {}
        try:
            if how == "paused" and state.get("Paused"):
                with translate_errors(f"unpausing {name}"):
                    host.api.unpause(container_id)
                log(f"unpaused {name}")
            elif how == "stopped" and not state.get("Running"):
                host.start(container_id, name)
                log(f"started {name}")
        except DockerError as err:
            problems.append(f"{name}: {err}")
            continue
        started.append((container_id, name, how))
    if not started:
        return problems
    try:
        settle = min_healthy_time(host, spec)
    except (DockerError, SpecError):
        settle = 0.0
    timeout = spec.update.health_timeout

    def wait(item: tuple[str, str, str]) -> str | None:
        container_id, name, how = item
        if how == "paused":
            return _wait_unpaused(host, container_id, name, timeout)
        report = host.wait_healthy(container_id, name, timeout, settle)
        return None if report.healthy else f"{name} is not healthy again: {report.reason}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(started))) as pool:
        for verdict in pool.map(_guarded(wait), started):
            if verdict:
                problems.append(verdict)
    return problems


def _wait_unpaused(
    host: DockerHost, container_id: str, name: str, timeout: float, poll: float = 0.2
) -> str | None:
    """Wait until an unpaused replica is healthy again. Docker keeps probing a
    paused container and its probes fail, so it may read ``unhealthy`` until
    its next probe passes: only a stop or exit, or no ``healthy`` within
    ``timeout``, is a failure."""
    deadline = time.monotonic() + timeout
    while True:
        state = host.inspect(container_id).get("State") or {}
        if not state.get("Running") or state.get("Restarting"):
            return f"{name} is not running after its unpause ({state.get('Status')})"
        health = (state.get("Health") or {}).get("Status")
        if health in (None, "healthy") and not state.get("Paused"):
            return None
        if time.monotonic() >= deadline:
            return f"{name} is not healthy {timeout:g}s after its unpause ({health})"
        time.sleep(poll)


def _guarded(func: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def call(item: Any) -> str | None:
        try:
            return func(item)
        except DockerError as err:
            return str(err)

    return call


def finish_window(
    host: DockerHost, spec: ServiceSpec, state_dir: str, log: Callable[[str], None]
) -> list[str]:
    """Bring back what a killed backup stopped or paused; what was done."""
    journal = Journal(state_dir, spec.name, "window")
    note = journal.load()
    touched = [
        (str(item[0]), str(item[1]), str(item[2]))
        for item in note.get("containers") or []
        if isinstance(item, list) and len(item) == 3
    ]
    if not touched:
        journal.clear()
        return []
    done: list[str] = []
    problems = bring_back(host, spec, touched, done.append)
    journal.clear()
    if problems:
        raise BackupError(
            f"an interrupted backup of {spec.name} left replicas stopped or paused; "
            f"bringing them back: {'; '.join(problems)}"
        )
    return [
        f"an interrupted backup had left {name} {how}: brought back" for _, name, how in touched
    ]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (a timed-out backup command's
    children, such as a running pg_dump, must not keep writing)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    doomed, queue = [], [pid]
    while queue:
        current = queue.pop()
        doomed.append(current)
        queue.extend(children.get(current, []))
    for victim in doomed:
        with contextlib.suppress(OSError):
            os.kill(victim, 9)


def recover_window(
    host: DockerHost, spec: ServiceSpec, state_dir: str, log: Callable[[str], None]
) -> list[str]:
    """For a state run: bring back replicas a killed backup left stopped or
    paused (a paused replica counts as live to the plan, and would stay
    frozen until the next backup). Nothing when no backup was interrupted, or
    one runs now (its window is its own); costs one stat otherwise."""
    journal = Journal(state_dir, spec.name, "window")
    if not journal.path.exists():
        return []
    lock = RolloutLock(state_dir, spec.name, scope="backup")
    try:
        lock.acquire(None, "recovery of an interrupted backup")
    except LockHeld:
        return []
    try:
        return finish_window(host, spec, state_dir, log)
    finally:
        lock.release()


def run_exec(
    host: DockerHost, replica: ActualReplica, command: list[str], timeout: float
) -> tuple[int | None, str]:
    """Run ``command`` inside ``replica``: its exit code (None: timed out and
    killed) and the tail of its output."""
    with translate_errors(f"running the backup command in {replica.name}"):
        created = host.api.exec_create(replica.id, command, stdout=True, stderr=True)
    exec_id = created["Id"]
    output: list[bytes] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            output.append(host.api.exec_start(exec_id, stream=False) or b"")
        except BaseException as err:  # reported below
            failure.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        with contextlib.suppress(Exception):
            pid = int(host.api.exec_inspect(exec_id).get("Pid") or 0)
            if pid > 1:
                _kill_tree(pid)
        worker.join(5)
        return None, bounded_tail(b"".join(output))
    if failure:
        raise BackupError(f"running the backup command in {replica.name}: {failure[0]}")
    with translate_errors(f"reading the backup command's exit in {replica.name}"):
        code = host.api.exec_inspect(exec_id).get("ExitCode")
    return (int(code) if code is not None else None), bounded_tail(b"".join(output))


# -- backup -------------------------------------------------------------------


def _settings_problems(settings: BackupSettings) -> list[str]:
    problems = []
    if not settings.repository:
        problems.append(f"{PILLAR_KEY}:backup:repository: not set (where snapshots go)")
    if not settings.password:
        problems.append(f"{PILLAR_KEY}:backup:password: not set (the repository's key)")
    return problems


def repository(
    settings: BackupSettings, cache_dir: str | None = None, executor: Any = None
) -> Restic:
    """The restic repository pillar names; a SpecError when it is not set."""
    problems = _settings_problems(settings)
    if problems:
        raise SpecError(problems)
    assert settings.repository is not None and settings.password is not None
    return Restic(settings.repository, settings.password, executor, cache_dir)


def _check_declared(spec: ServiceSpec) -> None:
    if spec.backup is None:
        raise SpecError(
            [
                f"{PILLAR_KEY}:services:{spec.name}:backup: not set (declare at least "
                "consistency: stop, pause, exec or none)"
            ]
        )


def _now_text(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def _locks(
    state_dir: str, service: str, what: str, jid: str | None, rollout: bool
) -> Iterator[RolloutLock | None]:
    """The service's backup lock (one backup or restore at a time) and, when
    containers are touched, its rollout lock (no state run meanwhile)."""
    backup_lock = RolloutLock(state_dir, service, scope="backup")
    with backup_lock.held(jid, what):
        if not rollout:
            yield None
            return
        rollout_lock = RolloutLock(state_dir, service)
        with rollout_lock.held(jid, what):
            yield rollout_lock


def backup_service(
    host: DockerHost,
    spec: ServiceSpec,
    settings: BackupSettings,
    state_dir: str,
    minion: str,
    test: bool = False,
    send: Send | None = None,
    jid: str | None = None,
    restic: Restic | None = None,
    when: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Snapshot the service's data mounts, then apply its retention policy.

    ``when`` (``YYYY-MM-DD HH:MM:SS``) dates the snapshot (restic's ``--time``).
    Fires ``dockerops/backup/<service>/success`` or ``.../failure`` through
    ``send``.
    """
    _check_declared(spec)
    assert spec.backup is not None
    steps: list[str] = []
    say = _logger(steps, log)
    restic = restic or repository(settings)
    secrets = [*spec.secret_values, restic.password]
    covered = targets(spec)
    if uses_helper(spec):
        helper = volumes.container_executor(host, spec, spec.backup_mounts())
        restic = Restic(restic.location, restic.password, helper, restic.cache_dir)
    mode = spec.backup.consistency
    writers = _writers(host, spec, covered)
    policy = spec.backup.keep.flags() if spec.backup.keep else []
    paths = [t.snap_path for t in covered]
    plan = {
        "paths": paths,
        "consistency": mode,
        "replicas": [c.name for c in writers],
        "repository": restic.shown,
        "retention": policy or "keep every snapshot",
    }
    if mode == "stop" and writers:
        plan["stops"] = (
            f"all {len(writers)} at once: they share {', '.join(paths)}"
            if len(writers) > 1
            else "one replica"
        )
    if test:
        restic.initialized()  # reachable, and the password opens it
        return Outcome(
            None,
            f"would back up {', '.join(paths)} of {spec.name} ({mode}) to {restic.shown}",
            {"backup": plan},
            {"plan": plan},
        )
    started = time.time()
    outcome = Outcome(True, "", {}, {"plan": plan})
    try:
        with _locks(state_dir, spec.name, "backup", jid, rollout=mode != "none"):
            recovered = finish_window(host, spec, state_dir, say)
            if recovered:
                outcome.data["recovered"] = recovered
            journal = interrupted_restore(state_dir, spec.name, holding=True)
            if journal:
                raise BackupError(journal)
            writers = _writers(host, spec, covered)
            tags = snapshot_tags(spec, minion, writers)
            # Before replicas are stopped, paused or asked to dump: an unreachable
            # repository or a wrong password must not cost them anything. Under
            # none, the backup itself finds out (each restic process spends most
            # of a second deriving the key: one fewer per backup).
            if mode != "none" and not restic.initialized():
                _create(restic, say)
            try:
                summary = _snapshot(
                    host, spec, restic, covered, writers, tags, minion, when, state_dir, say
                )
            except ResticError as err:
                if mode != "none" or err.kind != "uninitialized":
                    raise
                _create(restic, say)
                summary = _snapshot(
                    host, spec, restic, covered, writers, tags, minion, when, state_dir, say
                )
        outcome.data["snapshot"] = summary.snapshot_id
        entry = {
            "time": started,
            "at": _now_text(started),
            "snapshot": summary.snapshot_id,
            "duration": round(time.time() - started, 3),
            "data_added": summary.data_added,
            "files": summary.total_files,
            "bytes": summary.total_bytes,
            "paths": paths,
        }
        BackupRecord(state_dir, spec.name).update(
            last_success=entry,
            snapshots={
                summary.snapshot_id: {
                    "data_added": summary.data_added,
                    "files": summary.total_files,
                    "bytes": summary.total_bytes,
                }
            },
        )
        outcome.changes["snapshot"] = {
            "id": summary.snapshot_id,
            "files": summary.total_files,
            "new": summary.files_new,
            "changed": summary.files_changed,
            "data_added": summary.data_added,
        }
        outcome.comment = (
            f"backed up {spec.name}: snapshot {summary.snapshot_id} "
            f"({summary.total_files} files, {summary.data_added} bytes added)"
        )
        _fire(send, spec, "success", {**entry, "environment": spec.environment})
    except (DockerError, SpecError, OSError) as err:
        message = redact(str(err), secrets)
        outcome.result = False
        outcome.comment = f"backup of {spec.name} failed: {message}"
        failure = {"time": started, "at": _now_text(started), "error": message[:2000]}
        with contextlib.suppress(DockerError):
            BackupRecord(state_dir, spec.name).update(last_failure=failure)
        _fire(send, spec, "failure", {**failure, "environment": spec.environment})
        outcome.data["steps"] = steps
        return outcome
    if policy and _retention_due(state_dir, spec.name, started):
        try:
            kept, removed = restic.forget(policy, scope_tags(spec.name), minion)
            BackupRecord(state_dir, spec.name).update(last_retention=started)
            outcome.changes["forgotten"] = [snap.short_id for snap in removed]
            outcome.data["kept"] = [snap.short_id for snap in kept]
            say(f"retention kept {len(kept)}, forgot {len(removed)}")
        except DockerError as err:
            outcome.result = False
            outcome.comment += f"; retention failed: {redact(str(err), secrets)}"
    outcome.data["steps"] = steps
    return outcome


def _create(restic: Restic, say: Callable[[str], None]) -> None:
    restic.init()
    say(f"created the restic repository {restic.shown}")


def _retention_due(state_dir: str, service: str, now: float) -> bool:
    """Whether a backup at ``now`` applies the keep policy: when the last
    time it was applied is :data:`RETENTION_EVERY` ago or more. Backups more
    frequent than that keep a few snapshots longer (never fewer) and skip
    a ``forget --prune`` each; ``dockerops.prune_backups`` applies it at once."""
    last = BackupRecord(state_dir, service).load().get("last_retention")
    return not isinstance(last, (int, float)) or now - last >= RETENTION_EVERY


def _logger(steps: list[str], log: Callable[[str], None] | None) -> Callable[[str], None]:
    def say(text: str) -> None:
        steps.append(text)
        if log:
            log(text)

    return say


def _fire(send: Send | None, spec: ServiceSpec, outcome: str, data: dict[str, Any]) -> None:
    if send is None:
        return
    with contextlib.suppress(Exception):
        send(f"dockerops/backup/{spec.name}/{outcome}", {"service": spec.name, **data})


def _snapshot(
    host: DockerHost,
    spec: ServiceSpec,
    restic: Restic,
    covered: list[Target],
    writers: list[ActualReplica],
    tags: dict[str, str],
    minion: str,
    when: str | None,
    state_dir: str,
    say: Callable[[str], None],
) -> BackupSummary:
    """Take the snapshot inside the consistency window the spec asks for."""
    assert spec.backup is not None
    mode = spec.backup.consistency
    paths = [t.snap_path for t in covered]
    if mode == "exec":
        runners = [c for c in writers if c.state == "running"]
        if not runners:
            raise BackupError(f"no running replica of {spec.name} to run the backup command in")
        assert spec.backup.exec is not None
        code, output = run_exec(host, runners[0], spec.backup.exec, spec.backup.exec_timeout)
        if code != 0:
            why = (
                f"timed out after {spec.backup.exec_timeout:g}s (killed)"
                if code is None
                else f"exited {code}"
            )
            raise BackupError(
                f"the backup command in {runners[0].name} {why}; no snapshot taken. "
                f"Its output: {redact(output, spec.secret_values)[-1500:]}"
            )
        say(f"ran the backup command in {runners[0].name}")
        return _checked(restic.backup(paths, tags, minion, when))
    if mode not in ("stop", "pause") or not writers:
        return _checked(restic.backup(paths, tags, minion, when))
    window = Window(host, spec, state_dir, say)
    summary: BackupSummary | None = None
    failure: BaseException | None = None
    try:
        if mode == "stop":
            window.stop(writers)
        else:
            window.pause(writers)
        summary = restic.backup(paths, tags, minion, when)
    except BaseException as err:
        failure = err
    # Always brought back, also when the snapshot failed.
    problems = window.restore()
    if failure is not None:
        if problems:
            raise BackupError(f"{failure}; and after it: {'; '.join(problems)}") from failure
        raise failure
    if problems:
        raise BackupError(
            f"snapshot {summary.snapshot_id if summary else '?'} taken, but " + "; ".join(problems)
        )
    assert summary is not None
    return _checked(summary)


def _checked(summary: BackupSummary) -> BackupSummary:
    if summary.incomplete:
        raise BackupError(
            f"snapshot {summary.snapshot_id} is incomplete (restic could not read some "
            f"files): {'; '.join(summary.errors)[:1500]}"
        )
    return summary


# -- listing, retention --------------------------------------------------------


def list_backups(
    spec_name: str, restic: Restic, state_dir: str, host: str | None = None
) -> list[dict[str, Any]]:
    """The service's snapshots, newest first: id, time, host, paths, tags and
    the bytes each added (when this minion took it: restic 0.14 does not list sizes)."""
    check_service_name(spec_name)
    sizes = BackupRecord(state_dir, spec_name).load().get("snapshots") or {}
    out = []
    for snap in reversed(restic.snapshots(scope_tags(spec_name), host)):
        known = sizes.get(snap.short_id) or sizes.get(snap.id) or {}
        out.append(
            {
                "id": snap.short_id,
                "full_id": snap.id,
                "time": snap.time,
                "host": snap.hostname,
                "paths": snap.paths,
                "tags": snap.tags,
                "size_added": known.get("data_added"),
                "files": known.get("files"),
                "bytes": known.get("bytes"),
            }
        )
    return out


def prune_backups(spec: ServiceSpec, restic: Restic, minion: str, test: bool = False) -> Outcome:
    """Apply the service's ``keep`` policy to its snapshots on this minion."""
    _check_declared(spec)
    assert spec.backup is not None
    if spec.backup.keep is None:
        return Outcome(True, f"{spec.name} keeps every snapshot (no backup:keep)", {}, {})
    kept, removed = restic.forget(
        spec.backup.keep.flags(), scope_tags(spec.name), minion, dry_run=test
    )
    gone = [snap.short_id for snap in removed]
    verb = "would forget" if test else "forgot"
    return Outcome(
        None if test and gone else True,
        f"{verb} {len(gone)} snapshot(s) of {spec.name}, kept {len(kept)}",
        {"forgotten": gone} if gone else {},
        {"kept": [snap.short_id for snap in kept], "forgotten": gone},
    )


def find_snapshot(restic: Restic, service: str, minion: str, wanted: str | None) -> Snapshot:
    """The snapshot ``wanted`` (an id or its prefix) of ``service``; ``None``
    or ``latest``: this minion's newest."""
    if wanted in (None, "", "latest"):
        mine = restic.snapshots(scope_tags(service), minion)
        if not mine:
            raise BackupError(f"no snapshot of {service} from {minion} in {restic.shown}")
        return mine[-1]
    text = str(wanted).lower()
    if not all(char in "0123456789abcdef" for char in text) or len(text) < 4:
        raise BackupError(f"{wanted!r} is not a snapshot id (hexadecimal, at least 4 digits)")
    matches = [snap for snap in restic.snapshots(scope_tags(service)) if snap.id.startswith(text)]
    if not matches:
        raise BackupError(f"no snapshot {wanted} of {service} in {restic.shown}")
    if len(matches) > 1:
        raise BackupError(f"snapshot id {wanted} is ambiguous: give more digits")
    return matches[0]


# -- checksums ---------------------------------------------------------------------


@dataclass(frozen=True)
class TreeSum:
    """A directory tree's content: every entry's type, size and sha256."""

    digest: str
    files: int
    bytes: int
    entries: dict[str, tuple[str, int]]


def tree_sum(top: str) -> TreeSum:
    """Hash every entry below ``top`` (symlinks by their target, never followed)."""
    whole = hashlib.sha256()
    entries: dict[str, tuple[str, int]] = {}
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, top)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                kind, part = "symlink", hashlib.sha256(os.readlink(full).encode()).hexdigest()
            elif stat.S_ISREG(info.st_mode):
                kind, part = "file", _file_sha256(full)
                files += 1
                size += info.st_size
            elif stat.S_ISDIR(info.st_mode):
                kind, part = "dir", ""
            else:
                kind, part = "other", ""
            entries[rel] = (kind, info.st_size if kind == "file" else 0)
            whole.update(f"{rel}\0{kind}\0{part}\n".encode("utf-8", "surrogateescape"))
    return TreeSum(whole.hexdigest(), files, size, entries)


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(restic: Restic, snap: Snapshot, path: str) -> dict[str, tuple[str, int]]:
    """What the snapshot holds below ``path``: relative path -> (type, size)."""
    out = {}
    for node in restic.ls(snap.id, path):
        full = str(node.get("path", ""))
        if full == path or not full.startswith(path.rstrip("/") + "/"):
            continue
        kind = str(node.get("type", "other"))
        kind = kind if kind in ("file", "dir", "symlink") else "other"
        out[full[len(path.rstrip("/")) + 1 :]] = (kind, int(node.get("size") or 0))
    return out


def _compare(listed: dict[str, tuple[str, int]], found: dict[str, tuple[str, int]]) -> list[str]:
    problems = []
    for rel, (kind, size) in listed.items():
        have = found.get(rel)
        if have is None:
            problems.append(f"{rel} is missing")
        elif have[0] != kind or (kind == "file" and have[1] != size):
            problems.append(f"{rel} differs ({have[0]} of {have[1]} bytes, not {kind} of {size})")
    problems += [f"{rel} is not in the snapshot" for rel in found if rel not in listed]
    return problems


# -- verify ------------------------------------------------------------------------


def verify_backup(
    spec: ServiceSpec, restic: Restic, state_dir: str, minion: str, wanted: str | None = None
) -> Outcome:
    """``restic check`` of the repository, then a test restore of the snapshot
    into a private temporary directory: restic reads every blob the snapshot
    uses and compares each restored file with the snapshot's content hashes
    (``--verify``), and the restored tree is compared entry by entry with the
    snapshot's listing. The restored tree's sha256 digest is recorded, so a
    later restore of the snapshot is checked against it."""
    check_service_name(spec.name)
    snap = find_snapshot(restic, spec.name, minion, wanted)
    restic.check()
    work = _backups_dir(state_dir) / "verify"
    with _private_dir(work, f"{spec.name}-{snap.short_id}-") as temp:
        restic.restore(snap.id, temp)
        sums: dict[str, dict[str, Any]] = {}
        problems = []
        for path in snap.paths:
            restored = os.path.join(temp, path.lstrip("/"))
            if not os.path.isdir(restored):
                problems.append(f"{path}: nothing restored")
                continue
            found = tree_sum(restored)
            problems += [
                f"{path}: {p}" for p in _compare(_listing(restic, snap, path), found.entries)
            ]
            sums[path] = {"digest": found.digest, "files": found.files, "bytes": found.bytes}
    if problems:
        raise BackupError(
            f"snapshot {snap.short_id} of {spec.name} does not restore as listed: "
            + "; ".join(problems[:10])
        )
    now = time.time()
    BackupRecord(state_dir, spec.name).update(
        verified={snap.short_id: {"time": now, "at": _now_text(now), "paths": sums}}
    )
    files = sum(int(item["files"]) for item in sums.values())
    return Outcome(
        True,
        f"snapshot {snap.short_id} of {spec.name} verified: repository checked, "
        f"{files} files restored and compared by checksum",
        {},
        {"snapshot": snap.short_id, "time": snap.time, "paths": sums},
    )


@contextlib.contextmanager
def _private_dir(parent: Path, prefix: str) -> Iterator[str]:
    """A fresh 0700 directory below ``parent``, removed afterwards (ours alone)."""
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    try:
        yield temp
    finally:
        with safepath.Dir.open_trusted(str(parent)) as base:
            base.rmtree(os.path.basename(temp))


# -- restore -----------------------------------------------------------------------


@dataclass(frozen=True)
class HostTarget:
    """A host data directory a restore swaps: its path and allow-list root."""

    mount: DataMount
    path: str
    root: str


def _stamp(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).strftime(TIME_FORMAT)


def _parent(target: HostTarget) -> tuple[safepath.Dir, str]:
    """The data directory's parent (made if missing, as a state run would),
    opened without following symlinks, and the directory's name."""
    parent_path, name = posixpath.split(target.path)
    if parent_path == target.root:
        return safepath.Dir.open_trusted(target.root), name
    return safepath.open_below(target.root, parent_path, create=True), name


def _restore_targets(spec: ServiceSpec, snap: Snapshot) -> list[HostTarget]:
    """The service's data directories the snapshot holds; all of them must be
    data mounts of the service now."""
    by_path = {}
    for mount in spec.data:
        host_path = getattr(mount, "host", None)
        if host_path:
            by_path[host_path] = mount
    unknown = [path for path in snap.paths if path not in by_path]
    if unknown:
        raise BackupError(
            f"snapshot {snap.short_id} holds {', '.join(unknown)}, which is not a data "
            f"mount of {spec.name} now: nothing restored"
        )
    out = []
    for path in snap.paths:
        root = spec.trusted_root(path)
        if path == root:
            raise BackupError(f"{path} is an allowed host path itself: it is not swapped")
        out.append(HostTarget(by_path[path], path, root))
    return out


def _differences(restic: Restic, snap: Snapshot, target: HostTarget) -> dict[str, Any]:
    """How the current directory differs from the snapshot (by type and size)."""
    listed = _listing(restic, snap, target.path)
    current: dict[str, tuple[str, int]] = {}
    try:
        with safepath.open_below(target.root, target.path) as _checked_dir:
            pass
        for dirpath, dirnames, filenames in os.walk(target.path, followlinks=False):
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                info = os.lstat(full)
                kind = (
                    "symlink"
                    if stat.S_ISLNK(info.st_mode)
                    else "file"
                    if stat.S_ISREG(info.st_mode)
                    else "dir"
                    if stat.S_ISDIR(info.st_mode)
                    else "other"
                )
                current[os.path.relpath(full, target.path)] = (
                    kind,
                    info.st_size if kind == "file" else 0,
                )
    except FileNotFoundError:
        pass
    added = [rel for rel in listed if rel not in current]
    removed = [rel for rel in current if rel not in listed]
    changed = [rel for rel in listed if rel in current and current[rel] != listed[rel]]
    return {
        "files_in_snapshot": sum(1 for kind, _ in listed.values() if kind == "file"),
        "bytes_in_snapshot": sum(size for _, size in listed.values()),
        "missing_now": len(added),
        "not_in_snapshot": len(removed),
        "differ_in_size_or_type": len(changed),
        "bytes_differing": sum(listed[rel][1] for rel in added + changed),
    }


def restore_service(
    host: DockerHost,
    spec: ServiceSpec,
    restic: Restic,
    state_dir: str,
    minion: str,
    wanted: str | None = None,
    test: bool = False,
    jid: str | None = None,
    log: Callable[[str], None] | None = None,
    now: Callable[[], float] = time.time,
) -> Outcome:
    """Restore the service's data from a snapshot and start it again, healthy;
    on failure, put the previous data back and start the service on it."""
    steps: list[str] = []
    say = _logger(steps, log)
    secrets = [*spec.secret_values, restic.password]
    journal_text = interrupted_restore(state_dir, spec.name)
    if journal_text:
        raise BackupError(journal_text)
    snap = find_snapshot(restic, spec.name, minion, wanted)
    if snap.tags.get("via") == "helper":
        return _restore_via_helper(host, spec, restic, state_dir, snap, test, jid, say, steps, now)
    chosen = _restore_targets(spec, snap)
    stamp = _stamp(now())
    if test:
        plan = {
            target.path: {
                "aside": f"{target.path}.before-restore-{stamp}",
                **_differences(restic, snap, target),
            }
            for target in chosen
        }
        return Outcome(
            None,
            f"would restore snapshot {snap.short_id} ({snap.time}) of {spec.name} over "
            + ", ".join(target.path for target in chosen),
            {"restore": plan},
            {"snapshot": snap.short_id, "plan": plan},
        )
    journal = Journal(state_dir, spec.name, "restore")
    outcome = Outcome(True, "", {}, {"snapshot": snap.short_id})
    try:
        with _locks(state_dir, spec.name, "restore", jid, rollout=True):
            outcome.data["recovered"] = finish_window(host, spec, state_dir, say)
            meanwhile = interrupted_restore(state_dir, spec.name, holding=True)
            if meanwhile:
                raise BackupError(meanwhile)
            record = {
                "service": spec.name,
                "host": socket.gethostname(),
                "snapshot": snap.id,
                "started": _now_text(now()),
                "pid": os.getpid(),
                "containers": [],
                "paths": [
                    {
                        "path": t.path,
                        "root": t.root,
                        "staging": f".{posixpath.basename(t.path)}.restore-{stamp}",
                        "aside": f"{posixpath.basename(t.path)}.before-restore-{stamp}",
                        "aside_path": f"{t.path}.before-restore-{stamp}",
                        "phase": "staging",
                    }
                    for t in chosen
                ],
            }
            journal.save(record)
            try:
                _stage(restic, snap, chosen, record, state_dir, say)
            except BaseException:
                _drop_staging(record)
                journal.clear()
                raise
            _swap_and_start(host, spec, record, journal, outcome, say)
            _after_restore(host, spec, outcome, say)
    except (DockerError, SpecError, OSError) as err:
        outcome.result = False
        outcome.comment = f"restore of {spec.name} failed: {redact(str(err), secrets)}"
    outcome.data["steps"] = steps
    return outcome


def _stage(
    restic: Restic,
    snap: Snapshot,
    chosen: list[HostTarget],
    record: dict[str, Any],
    state_dir: str,
    say: Callable[[str], None],
) -> None:
    """Restore the snapshot next to each data directory while the service runs,
    verified against the snapshot; checked against verify's digest if known."""
    verified = BackupRecord(state_dir, _service_of(record)).load()
    digests = ((verified.get("verified") or {}).get(snap.short_id) or {}).get("paths") or {}
    for target, entry in zip(chosen, record["paths"], strict=True):
        parent, _name = _parent(target)
        with parent:
            parent.mkdir(entry["staging"], 0o700)
        staging = posixpath.join(posixpath.dirname(target.path), entry["staging"])
        restic.restore(snap.id, staging, include=target.path)
        restored = posixpath.join(staging, target.path.lstrip("/"))
        info = os.lstat(restored) if os.path.lexists(restored) else None
        if info is None or not stat.S_ISDIR(info.st_mode):
            raise BackupError(f"snapshot {snap.short_id} restored nothing for {target.path}")
        known = (digests.get(target.path) or {}).get("digest")
        if known and tree_sum(restored).digest != known:
            raise BackupError(
                f"snapshot {snap.short_id} restores {target.path} differently from when "
                "verify_backup checked it: refused"
            )
        say(f"restored {target.path} of snapshot {snap.short_id} beside it (verified by restic)")


def _service_of(record: dict[str, Any]) -> str:
    return str(record["service"])


def _drop_staging(record: dict[str, Any]) -> None:
    """Remove the staging copies (dockerops' own, never seen by a container)."""
    for entry in record["paths"]:
        if entry.get("phase") != "staging":
            continue
        target_parent = posixpath.dirname(entry["path"])
        with contextlib.suppress(OSError, DockerError):
            parent = (
                safepath.Dir.open_trusted(entry["root"])
                if target_parent == entry["root"]
                else safepath.open_below(entry["root"], target_parent)
            )
            with parent:
                parent.rmtree(entry["staging"])


def _swap_and_start(
    host: DockerHost,
    spec: ServiceSpec,
    record: dict[str, Any],
    journal: Journal,
    outcome: Outcome,
    say: Callable[[str], None],
) -> None:
    """Stop the replicas, swap each restored directory in (the current one
    kept aside), start and wait; on failure, swap back and start again."""
    running, touched = _stop_for_restore(
        host, spec, record, journal, say, lambda: _drop_staging(record)
    )
    problems: list[str] = []
    try:
        for entry in record["paths"]:
            _swap_in(entry, record, journal)
            say(f"{entry['path']}: previous data kept at {entry['aside_path']}")
    except (DockerError, OSError) as err:
        problems.append(f"swapping the restored data in: {err}")
    if not problems:
        problems = bring_back(host, spec, touched, say)
    if not problems:
        _drop_staging_dirs(record)
        journal.clear()
        kept = [entry["aside_path"] for entry in record["paths"] if entry["aside_path"]]
        outcome.comment = f"restored snapshot {str(record['snapshot'])[:8]} of {spec.name}" + (
            "; previous data kept at " + ", ".join(kept) if kept else ""
        )
        outcome.changes["restored"] = {
            entry["path"]: {
                "snapshot": str(record["snapshot"])[:8],
                "previous": entry["aside_path"],
            }
            for entry in record["paths"]
        }
        return
    # Not healthy on the restored data (or not swapped in): the previous data goes back.
    say("the restore failed or is not healthy: putting the previous data back")
    _stop_all(host, running)
    for entry in reversed(record["paths"]):
        _swap_back(entry, record, journal)
    again = bring_back(host, spec, touched, say)
    _drop_staging_dirs(record)
    journal.clear()
    health = (
        "the service is healthy on it again"
        if not again
        else "and it is not healthy on it either: " + "; ".join(again)
    )
    raise BackupError(
        f"restoring snapshot {str(record['snapshot'])[:8]}: "
        f"{'; '.join(problems)}. The previous data is back in place; {health}"
    )


def _stop_for_restore(
    host: DockerHost,
    spec: ServiceSpec,
    record: dict[str, Any],
    journal: Journal,
    say: Callable[[str], None],
    drop_staging: Callable[[], None],
) -> tuple[list[ActualReplica], list[tuple[str, str, str]]]:
    """Stop every live replica (journalled first; paused ones unpaused, as a
    stop needs); if one will not stop, start them again, drop the staging copy
    and fail with nothing swapped. The replicas, and what bring_back restarts."""
    running = sorted(
        (c for c in host.managed(spec.name) if c.state in ("running", "paused")),
        key=lambda c: c.index or 0,
    )
    record["containers"] = [[c.id, c.name, "stopped"] for c in running]
    journal.save(record)
    touched = [(c.id, c.name, "stopped") for c in running]
    for replica in running:
        if replica.state == "paused":
            with translate_errors(f"unpausing {replica.name}"):
                host.api.unpause(replica.id)
    failures = [
        err
        for err in _parallel(lambda replica: stop_replica(host, replica, say), running)
        if err is not None
    ]
    if failures:
        back = bring_back(host, spec, touched, say)
        drop_staging()
        journal.clear()
        raise BackupError(f"stopping {spec.name}: {failures[0]}; {'; '.join(back)}".rstrip("; "))
    return running, touched


def _stop_all(host: DockerHost, replicas: list[ActualReplica]) -> None:
    def stop(replica: ActualReplica) -> None:
        with contextlib.suppress(DockerError):
            host.stop(replica.id, replica.name)

    _parallel(stop, replicas)


def _open_parent(entry: dict[str, Any]) -> tuple[safepath.Dir, str]:
    parent_path, name = posixpath.split(entry["path"])
    if parent_path == entry["root"]:
        return safepath.Dir.open_trusted(entry["root"]), name
    return safepath.open_below(entry["root"], parent_path), name


def _swap_in(entry: dict[str, Any], record: dict[str, Any], journal: Journal) -> None:
    """current -> aside, then staged -> current, journalled before each step."""
    parent, name = _open_parent(entry)
    with parent:
        entry["phase"] = "aside"
        journal.save(record)
        if parent.lstat(name) is not None:
            parent.rename(name, entry["aside"])
            parent.fsync()
        else:  # nothing there yet (a new host): nothing to keep
            entry["aside_path"] = None
        inner = entry["path"].lstrip("/").split("/")
        with parent.walk([entry["staging"], *inner[:-1]]) as holder:
            os.rename(inner[-1], name, src_dir_fd=holder.fd, dst_dir_fd=parent.fd)
        entry["phase"] = "swapped"
        journal.save(record)
        parent.fsync()
        # A restored top that is not a real directory is never started on.
        with parent.child(name):
            pass


def _swap_back(entry: dict[str, Any], record: dict[str, Any], journal: Journal) -> None:
    """Put the previous data back (the restored copy is dockerops' own: removed)."""
    parent, name = _open_parent(entry)
    with parent:
        if entry.get("phase") == "swapped" and parent.lstat(name) is not None:
            failed = f".{name}.failed-restore-{entry['aside'].rsplit('-', 1)[-1]}"
            parent.rename(name, failed)
            parent.rmtree(failed)
        if parent.lstat(entry["aside"]) is not None:
            parent.rename(entry["aside"], name)
            parent.fsync()
        entry["phase"] = "staging"
        journal.save(record)


def _drop_staging_dirs(record: dict[str, Any]) -> None:
    for entry in record["paths"]:
        entry = {**entry, "phase": "staging"}
        _drop_staging({"paths": [entry]})


def undo_restore(
    host: DockerHost,
    spec: ServiceSpec,
    state_dir: str,
    jid: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Outcome:
    """Finish an interrupted restore the safe way: the previous data back in
    place, staging copies removed, the replicas it stopped started again."""
    steps: list[str] = []
    say = _logger(steps, log)
    journal = Journal(state_dir, spec.name, "restore")
    record = journal.load()
    if not record:
        return Outcome(True, f"no interrupted restore of {spec.name}", {}, {})
    kept = []
    with _locks(state_dir, spec.name, "restore undo", jid, rollout=True):
        for entry in reversed(record.get("paths") or []):
            if entry.get("volume"):
                _undo_volume(host, spec, entry, say)
                continue
            parent, name = _open_parent(entry)
            with parent:
                if (
                    entry.get("phase") in ("aside", "swapped")
                    and parent.lstat(entry["aside"]) is not None
                ):
                    if parent.lstat(name) is not None:
                        # Restored data something may have written to since: kept too.
                        moved = f"{name}.interrupted-restore-{entry['aside'].rsplit('-', 1)[-1]}"
                        parent.rename(name, moved)
                        kept.append(f"{posixpath.dirname(entry['path'])}/{moved}")
                    parent.rename(entry["aside"], name)
                    parent.fsync()
                    say(f"{entry['path']}: previous data back in place")
            entry["phase"] = "staging"
        _drop_staging_dirs({"paths": [e for e in record.get("paths") or [] if "root" in e]})
        if record.get("staging_volume"):
            with contextlib.suppress(DockerError, ValueError):
                volumes.drop_staging(host, str(record["staging_volume"]))
        touched = [
            (str(item[0]), str(item[1]), str(item[2]))
            for item in record.get("containers") or []
            if isinstance(item, list) and len(item) == 3
        ]
        problems = bring_back(host, spec, touched, say)
        journal.clear()
    comment = f"undid the interrupted restore of {spec.name}: previous data back in place"
    if kept:
        comment += "; the partly restored data is kept at " + ", ".join(kept)
    if problems:
        return Outcome(False, comment + "; but " + "; ".join(problems), {"undone": True}, {})
    return Outcome(True, comment, {"undone": True, "kept": kept}, {"steps": steps})


# -- restore through the helper container (snapshots holding volumes) -------------


def _restore_via_helper(
    host: DockerHost,
    spec: ServiceSpec,
    restic: Restic,
    state_dir: str,
    snap: Snapshot,
    test: bool,
    jid: str | None,
    say: Callable[[str], None],
    steps: list[str],
    now: Callable[[], float],
) -> Outcome:
    """Restore a snapshot the helper container took (its paths are container
    paths): into a staging volume first (a damaged snapshot is refused there,
    nothing touched), then, with the replicas stopped, each volume's data is
    copied into a new aside volume and each host directory renamed aside, and
    the staged data copied in; on failure the previous data goes back."""
    by_container = {mount.container: mount for mount in spec.data}
    unknown = [path for path in snap.paths if path not in by_container]
    if unknown:
        raise BackupError(
            f"snapshot {snap.short_id} holds {', '.join(unknown)}, which is not a data "
            f"mount of {spec.name} now: nothing restored"
        )
    mounts = [by_container[path] for path in snap.paths]
    stamp = _stamp(now())
    if test:
        plan = {
            mount.container: {
                "volume" if mount.volume else "host": mount.volume or mount.host,
                "aside": (
                    volumes.aside_name(mount.volume)
                    if mount.volume
                    else f"{mount.host}.before-restore-{stamp}"
                ),
                "files_in_snapshot": sum(
                    1
                    for kind, _ in _listing(restic, snap, mount.container).values()
                    if kind == "file"
                ),
            }
            for mount in mounts
        }
        return Outcome(
            None,
            f"would restore snapshot {snap.short_id} ({snap.time}) of {spec.name} into "
            + ", ".join(mount.volume or str(mount.host) for mount in mounts),
            {"restore": plan},
            {"snapshot": snap.short_id, "plan": plan},
        )
    journal = Journal(state_dir, spec.name, "restore")
    outcome = Outcome(True, "", {}, {"snapshot": snap.short_id})
    secrets = [*spec.secret_values, restic.password]
    try:
        with _locks(state_dir, spec.name, "restore", jid, rollout=True):
            meanwhile = interrupted_restore(state_dir, spec.name, holding=True)
            if meanwhile:
                raise BackupError(meanwhile)
            outcome.data["recovered"] = finish_window(host, spec, state_dir, say)
            staging = volumes.make_staging(host, spec.name, now())
            record: dict[str, Any] = {
                "service": spec.name,
                "host": socket.gethostname(),
                "snapshot": snap.id,
                "via": "helper",
                "staging_volume": staging,
                "started": _now_text(now()),
                "pid": os.getpid(),
                "containers": [],
                "paths": [],
            }
            for mount in mounts:
                entry: dict[str, Any] = {"path": mount.container, "phase": "staging"}
                if mount.volume:
                    entry["volume"] = mount.volume
                else:
                    assert mount.host is not None
                    entry.update(
                        path=mount.host,
                        container=mount.container,
                        root=spec.trusted_root(mount.host),
                        aside=f"{posixpath.basename(mount.host)}.before-restore-{stamp}",
                        aside_path=f"{mount.host}.before-restore-{stamp}",
                        staging=f".{posixpath.basename(mount.host)}.restore-{stamp}",
                    )
                record["paths"].append(entry)
            journal.save(record)
            try:
                staged = DataMount.model_validate(
                    {"volume": staging, "container": "/dockerops-staging"}
                )
                into = Restic(
                    restic.location,
                    restic.password,
                    volumes.container_executor(host, spec, [staged], writable=True),
                    restic.cache_dir,
                )
                into.restore(snap.id, "/dockerops-staging")
                say(f"restored snapshot {snap.short_id} into volume {staging} (verified by restic)")
            except BaseException:
                with contextlib.suppress(DockerError):
                    volumes.drop_staging(host, staging)
                journal.clear()
                raise
            _helper_swap_and_start(host, spec, record, journal, outcome, mounts, say)
            _after_restore(host, spec, outcome, say)
    except (DockerError, SpecError, OSError) as err:
        outcome.result = False
        outcome.comment = f"restore of {spec.name} failed: {redact(str(err), secrets)}"
    outcome.data["steps"] = steps
    return outcome


def _helper_swap_and_start(
    host: DockerHost,
    spec: ServiceSpec,
    record: dict[str, Any],
    journal: Journal,
    outcome: Outcome,
    mounts: list[DataMount],
    say: Callable[[str], None],
) -> None:
    staging = record["staging_volume"]
    running, touched = _stop_for_restore(
        host, spec, record, journal, say, lambda: volumes.drop_staging(host, staging)
    )
    problems: list[str] = []
    try:
        for entry, mount in zip(record["paths"], mounts, strict=True):
            _helper_swap_in(host, spec, entry, mount, record, journal, staging)
            say(f"{entry.get('volume') or entry['path']}: previous data kept in {entry['aside']}")
    except (DockerError, OSError) as err:
        problems.append(f"restoring: {err}")
    if not problems:
        problems = bring_back(host, spec, touched, say)
    if not problems:
        volumes.drop_staging(host, staging)
        journal.clear()
        outcome.comment = (
            f"restored snapshot {str(record['snapshot'])[:8]} of {spec.name}; previous data "
            "kept in " + ", ".join(str(entry.get("aside")) for entry in record["paths"])
        )
        outcome.changes["restored"] = {
            str(entry.get("volume") or entry["path"]): {
                "snapshot": str(record["snapshot"])[:8],
                "previous": entry.get("aside_path") or entry.get("aside"),
            }
            for entry in record["paths"]
        }
        return
    say("the restore failed or the service is not healthy on it: putting the previous data back")
    _stop_all(host, running)
    for entry, mount in reversed(list(zip(record["paths"], mounts, strict=True))):
        _helper_swap_back(host, spec, entry, mount, record, journal)
    again = bring_back(host, spec, touched, say)
    volumes.drop_staging(host, staging)
    journal.clear()
    health = (
        "the service is healthy on it again"
        if not again
        else "and it is not healthy on it either: " + "; ".join(again)
    )
    raise BackupError(
        f"restoring snapshot {str(record['snapshot'])[:8]}: {'; '.join(problems)}. "
        f"The previous data is back in place; {health}"
    )


def _helper_swap_in(
    host: DockerHost,
    spec: ServiceSpec,
    entry: dict[str, Any],
    mount: DataMount,
    record: dict[str, Any],
    journal: Journal,
    staging: str,
) -> None:
    subpath = mount.container
    if mount.volume:
        # Copied and compared first, recorded, and only then is fill() to empty
        # the volume: an interrupted run never leaves it emptied without a
        # recorded, verified copy.
        entry["phase"] = "copying"
        journal.save(record)
        entry["aside"] = volumes.set_aside(host, spec.name, mount, empty=False)
        entry["phase"] = "aside"
        journal.save(record)
        target = volumes.HelperMount(mount.volume, "/volume", True)
    else:
        parent, name = _open_parent(entry)
        with parent:
            info = parent.lstat(name)
            entry["phase"] = "aside"
            journal.save(record)
            parent.rename(name, entry["aside"])
            parent.mkdir(name, 0o700)
            with parent.child(name) as fresh:
                if info is not None:
                    os.fchown(fresh.fd, info.st_uid, info.st_gid)
                    fresh.chmod(stat.S_IMODE(info.st_mode))
            parent.fsync()
        target = volumes.HelperMount(entry["path"], "/volume", True)
    volumes.fill(host, spec.name, staging, subpath, target)
    entry["phase"] = "swapped"
    journal.save(record)


def _helper_swap_back(
    host: DockerHost,
    spec: ServiceSpec,
    entry: dict[str, Any],
    mount: DataMount,
    record: dict[str, Any],
    journal: Journal,
) -> None:
    if entry.get("phase") not in ("aside", "swapped"):
        return
    if mount.volume:
        aside = entry.get("aside")
        if aside and str(aside).startswith(mount.volume):
            volumes.put_back(host, spec.name, mount, str(aside))
    else:
        _swap_back(entry, record, journal)
        return
    entry["phase"] = "staging"
    journal.save(record)


def _undo_volume(
    host: DockerHost, spec: ServiceSpec, entry: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Put a volume's data back from its aside volume (the newest, when the
    run was killed before it recorded the name)."""
    if entry.get("phase") not in ("aside", "swapped"):
        return
    volume = str(entry["volume"])
    aside = entry.get("aside")
    if not aside:  # not recorded: the volume was never emptied
        return
    mount = next(m for m in spec.data if m.volume == volume)
    volumes.put_back(host, spec.name, mount, str(aside))
    entry["phase"] = "staging"
    say(f"volume {volume}: previous data back from {aside}")


def _after_restore(
    host: DockerHost, spec: ServiceSpec, outcome: Outcome, say: Callable[[str], None]
) -> None:
    """Run ``backup:restore_exec`` in one replica of the restored, healthy
    service (loading the dump an ``exec`` backup wrote). Its failure fails the
    call; the restored data stays (the previous data is kept aside)."""
    assert spec.backup is not None
    if not spec.backup.restore_exec:
        return
    running = sorted(
        (c for c in host.managed(spec.name) if c.state == "running"), key=lambda c: c.index or 0
    )
    if not running:
        raise BackupError(f"the data is restored, but no replica of {spec.name} runs to load it")
    code, output = run_exec(host, running[0], spec.backup.restore_exec, spec.backup.exec_timeout)
    if code != 0:
        why = "timed out (killed)" if code is None else f"exited {code}"
        raise BackupError(
            f"the data is restored and {spec.name} healthy, but the restore command in "
            f"{running[0].name} {why}: {redact(output, spec.secret_values)[-1500:]}. "
            + (outcome.comment or "")
        )
    say(f"ran the restore command in {running[0].name}")
