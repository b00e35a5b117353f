"""Backups of a 1 GiB data dir: dockerops against tar | zstd and plain restic.

One run, on one service deployed by the dockerops formula (``salt-call
--local state.apply``, image ``dockerops/demo-http:1.0``, one replica, its
data dir a bind mount), with ``backup: {consistency: pause}``:

1. **First backup** of the 1 GiB data dir, by
   - ``tar -cf - . | zstd -T0`` (all cores, level 3) into an archive;
   - plain ``restic backup`` into its own repository (``restic init`` timed apart);
   - dockerops' library (``dockerops.backup.backup_service``, in this process:
     no Salt) into its own repository, which it creates;
   - ``salt-call --local dockerops.backup`` as an operator runs it, into the
     pillar's repository, which it creates.
2. **Second backup** after 1 % of the files changed (small files rewritten, a
   64 KiB block overwritten in larger ones): the same four; its time over the
   first is the ratio issue 11 asks to stay <= 15 %. Repeated ``--rounds``
   times (3), another 1 % changed before each; the median is reported.
3. **Restore** of the second backup: ``zstd -d | tar -x`` and ``restic
   restore`` (with and without ``--verify``) into empty directories,
   ``dockerops.restore_service`` and ``salt-call --local dockerops.restore``
   over the service's data dir (the service stopped, the data swapped, started
   and waited on until healthy). Every restored tree is compared with the data
   by checksum.

The data (a fixed mix: many small random files, some large random ones,
compressible log text) is generated deterministically once and cached in
``build/bench/backup-data``; each run copies it into a fresh workspace
(``build/bench/backup``). Page cache is warm for every tool (the data is read
once first; the machine has far more memory than 1 GiB), and ``sync`` runs
before each timed step, so what is measured is CPU and writes, not the disk's
cold reads. Salt's own start-up is measured apart (``salt-call --local
test.true``), and the library runs pass restic through a timing executor, so
the table splits dockerops' time into restic's calls and the rest.

    .venv/bin/python bench/backup.py [--consistency pause] [--rounds 3] [--plot PATH] [--keep]

Results: a table, ``build/bench/backup.json`` and a PNG plot
(``build/bench/backup.png`` unless ``--plot``). matplotlib is a bench-only
dependency (``bench/requirements-plot.txt``), installed on first use into
``build/bench/plot-lib``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dockerops.backup import BackupRecord, backup_service, restore_service  # noqa: E402
from dockerops.host import DockerHost  # noqa: E402
from dockerops.restic import Executor, Restic, ResticRun, host_executor  # noqa: E402
from dockerops.spec import load_root, load_service  # noqa: E402

BENCH_DIR = REPO / "bench"
BUILD = REPO / "build" / "bench"
DATA_CACHE = BUILD / "backup-data"
WORK = BUILD / "backup"
SALT_CALL = str(Path(sys.executable).parent / "salt-call")

IMAGE = "dockerops/demo-http"
TAG = "1.0"
SERVICE = "bench-backup"
MINION = "bench-backup"
OWNER_LABEL = "dockerops-bench"
PASSWORD = "bench password, not a secret"
SALT_TIMEOUT = 3600

GIB = 1 << 30
DATA_VERSION = 1
# The mix (count, min size, max size) before the large files fill up to 1 GiB.
SMALL = (20_000, 512, 16 << 10)  # random content, 200 directories
TEXT = (1_000, 32 << 10, 160 << 10)  # compressible log text
MEDIUM = (400, 256 << 10, 2 << 20)  # random content
LARGE_FILES = 3  # random content: what is left of 1 GiB
CHANGED_SHARE = 0.01
CHANGE_BLOCK = 64 << 10  # overwritten in place in files larger than this
BLOCK = 8 << 20


def log(message: str) -> None:
    print(message, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def must(cmd: list[str] | str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(cmd, capture_output=True, check=False, **kwargs)
    if done.returncode != 0:
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        raise SystemExit(f"{shown} failed (exit {done.returncode}): {done.stderr[-3000:]!r}")
    return done


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# -- the data ----------------------------------------------------------------


def random_bytes(seed: str, size: int) -> bytes:
    return hashlib.shake_128(seed.encode()).digest(size)


WORDS = (
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "/api/v1/items",
    "/api/v1/users",
    "/healthz",
    "/static/app.js",
    "user",
    "order",
    "cache",
    "miss",
    "hit",
    "upstream",
    "timeout",
    "retry",
    "ok",
    "accepted",
    "created",
    "queued",
    "worker-1",
    "worker-2",
    "db=primary",
    "db=replica",
    "status=200",
    "status=201",
    "status=404",
    "status=500",
    "latency_ms",
)


def log_text(rng: random.Random, size: int) -> bytes:
    """Log lines (timestamps, levels, a small vocabulary, numbers): compressible."""
    lines = []
    total = 0
    stamp = 1_700_000_000 + rng.randrange(10**6)
    while total < size:
        stamp += rng.randrange(3)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        line = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(stamp))}Z "
            f"{rng.choice(('INFO', 'INFO', 'INFO', 'WARN', 'DEBUG', 'ERROR'))} "
            f"req={rng.randrange(16**8):08x} {words} n={rng.randrange(100000)}\n"
        )
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def layout() -> list[tuple[str, str, int]]:
    """(relative path, kind, size) of every file, deterministic, summing to 1 GiB."""
    rng = random.Random(f"dockerops-bench-backup-v{DATA_VERSION}")
    files: list[tuple[str, str, int]] = []
    count, low, high = SMALL
    for n in range(count):
        files.append((f"small/d{n // 100:03d}/f{n:05d}.bin", "random", rng.randint(low, high)))
    count, low, high = TEXT
    for n in range(count):
        files.append((f"text/logs/app-{n:04d}.log", "text", rng.randint(low, high)))
    count, low, high = MEDIUM
    for n in range(count):
        files.append((f"medium/m{n:03d}.bin", "random", rng.randint(low, high)))
    left = GIB - sum(size for _, _, size in files)
    assert left > LARGE_FILES * BLOCK, left
    for n in range(LARGE_FILES):
        size = left // (LARGE_FILES - n)
        files.append((f"large/blob-{n}.bin", "random", size))
        left -= size
    return files


def write_file(path: Path, kind: str, size: int, seed: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        if kind == "text":
            out.write(log_text(random.Random(seed), size))
            return
        for start in range(0, size, BLOCK):
            out.write(random_bytes(f"{seed}:{start}", min(BLOCK, size - start)))


def ensure_data() -> tuple[Path, list[tuple[str, str, int]]]:
    """The cached data set (generated once, ~1 min); its files."""
    files = layout()
    source = DATA_CACHE / f"v{DATA_VERSION}"
    stamp = DATA_CACHE / f"v{DATA_VERSION}.complete"
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return source, files
    log(f"generating the data set ({len(files)} files, 1 GiB) into {source.relative_to(REPO)}")
    started = time.monotonic()
    shutil.rmtree(source, ignore_errors=True)
    for rel, kind, size in files:
        write_file(source / rel, kind, size, f"v{DATA_VERSION}:{rel}")
    must(["sync"])
    stamp.write_text(digest + "\n")
    log(f"generated in {time.monotonic() - started:.0f}s")
    return source, files


def change_files(data: Path, files: list[tuple[str, str, int]], round_: int) -> dict[str, int]:
    """Change 1 % of the files, deterministically per round: small ones rewritten
    with new content, larger ones a 64 KiB block overwritten in place."""
    rng = random.Random(f"dockerops-bench-backup-change-v{DATA_VERSION}-{round_}")
    chosen = rng.sample(files, round(len(files) * CHANGED_SHARE))
    written = 0
    for rel, kind, size in chosen:
        path = data / rel
        if size <= CHANGE_BLOCK:
            body = (
                log_text(random.Random(f"changed:{round_}:{rel}"), size)
                if kind == "text"
                else random_bytes(f"changed:{round_}:{rel}", size)
            )
            path.write_bytes(body)
            written += size
        else:
            offset = rng.randrange(size - CHANGE_BLOCK)
            with open(path, "r+b") as out:
                out.seek(offset)
                out.write(random_bytes(f"changed:{round_}:{rel}:{offset}", CHANGE_BLOCK))
            written += CHANGE_BLOCK
    return {
        "files": len(chosen),
        "bytes_in_changed_files": sum(size for _, _, size in chosen),
        "bytes_written": written,
    }


def tree_digest(top: Path) -> tuple[str, int, int]:
    """(sha256 over every file's path and content, files, bytes) below ``top``."""
    total = hashlib.sha256()
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            content = path.read_bytes()
            total.update(str(path.relative_to(top)).encode() + b"\0")
            total.update(hashlib.sha256(content).digest())
            count += 1
            size += len(content)
    return total.hexdigest(), count, size


def du(path: Path) -> int:
    return sum(
        (Path(dirpath) / name).stat().st_size
        for dirpath, _, names in os.walk(path)
        for name in names
    )


# -- Salt ------------------------------------------------------------------------


def pillar(data_dir: Path, repository: Path, consistency: str) -> dict[str, Any]:
    return {
        "dockerops": {
            "environment": "bench",
            "allowed_host_paths": [str(WORK / "host")],
            "backup": {"repository": str(repository), "password": PASSWORD},
            "services": {
                SERVICE: {
                    "image": IMAGE,
                    "tag": TAG,
                    "replicas": 1,
                    "labels": {OWNER_LABEL: "backup"},
                    "data": [{"host": str(data_dir), "container": "/data"}],
                    "backup": {"consistency": consistency, "keep": {"last": 7, "daily": 7}},
                }
            },
        }
    }


@dataclass
class Minion:
    """A masterless minion under build/bench/backup/salt."""

    root: Path
    state_dir: Path

    def write(self, pillar_data: dict[str, Any]) -> None:
        states, pillars = self.root / "states", self.root / "pillar"
        states.mkdir(parents=True, exist_ok=True)
        pillars.mkdir(parents=True, exist_ok=True)
        config = {
            "id": MINION,
            "file_client": "local",
            "root_dir": str(self.root / "root"),
            # salt/ holds the formula and links to _modules, _states and _utils.
            "file_roots": {"base": [str(states), str(REPO / "salt")]},
            "pillar_roots": {"base": [str(pillars)]},
            "log_level_logfile": "warning",
            "dockerops.state_dir": str(self.state_dir),
        }
        (self.root / "minion").write_text(yaml.safe_dump(config))
        (states / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["dockerops"]}}))
        (pillars / "top.sls").write_text(yaml.safe_dump({"base": {"*": ["bench"]}}))
        (pillars / "bench.sls").write_text(yaml.safe_dump(pillar_data, sort_keys=False))

    def call(self, *args: str) -> tuple[Any, float]:
        """salt-call's ``local`` data and its wall seconds."""
        started = time.monotonic()
        proc = run(
            [SALT_CALL, "-c", str(self.root), "--local", "--out=json", "--log-level=error", *args],
            timeout=SALT_TIMEOUT,
        )
        wall = time.monotonic() - started
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(
                f"salt-call {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
            ) from None
        return data, wall


# -- timing ---------------------------------------------------------------------


@dataclass
class Step:
    """One timed operation of one tool."""

    phase: str  # first, second, restore
    tool: str
    seconds: float
    restic: dict[str, float] = field(default_factory=dict)  # restic command -> seconds
    detail: dict[str, Any] = field(default_factory=dict)
    load: str = ""
    round: int = 0  # the second backup's round (0: not one)

    @property
    def label(self) -> str:
        return f"{self.phase} #{self.round}" if self.round else self.phase

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "round": self.round,
            "tool": self.tool,
            "seconds": round(self.seconds, 3),
            "restic_seconds": {k: round(v, 3) for k, v in self.restic.items()},
            "detail": self.detail,
            "load_average_after": self.load,
        }


@dataclass
class Timeline:
    """What a library call did when: restic's calls (from the executor) and
    dockerops' own steps (its ``log`` callback), in seconds from ``start``."""

    start: float = field(default_factory=time.monotonic)
    restic: dict[str, float] = field(default_factory=dict)  # restic command -> seconds
    events: list[tuple[float, str]] = field(default_factory=list)

    def mark(self, text: str) -> None:
        self.events.append((time.monotonic() - self.start, text))

    def executor(self, inner: Executor) -> Executor:
        def execute(
            args: list[str], env: Mapping[str, str], password: str, timeout: float | None
        ) -> ResticRun:
            words = list(args)
            if words[:1] == ["--cache-dir"]:
                words = words[2:]
            command = words[0] if words else "?"
            self.mark(f"restic {command} starts")
            started = time.monotonic()
            try:
                return inner(args, env, password, timeout)
            finally:
                took = time.monotonic() - started
                self.restic[command] = self.restic.get(command, 0.0) + took
                self.mark(f"restic {command} ends ({took:.2f}s)")

        return execute

    def shown(self) -> list[str]:
        return [f"{at:7.2f}s {text}" for at, text in self.events]


def timed(func: Callable[[], Any]) -> tuple[Any, float]:
    must(["sync"])
    started = time.monotonic()
    out = func()
    return out, time.monotonic() - started


def restic_env(repository: Path, password_file: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RESTIC_REPOSITORY": str(repository),
        "RESTIC_PASSWORD_FILE": str(password_file),
        "RESTIC_CACHE_DIR": str(cache),
    }


def restic_summary(stdout: bytes) -> dict[str, Any]:
    for line in reversed(stdout.decode().splitlines()):
        if line.startswith("{") and '"summary"' in line:
            item = json.loads(line)
            keys = ("files_new", "files_changed", "files_unmodified", "data_added")
            return {key: item.get(key) for key in keys}
    return {}


# -- the bench -----------------------------------------------------------------


@dataclass
class Bench:
    consistency: str
    rounds: int
    steps: list[Step] = field(default_factory=list)
    round: int = 0
    client: docker.DockerClient = field(init=False)

    def __post_init__(self) -> None:
        self.data = WORK / "host" / SERVICE / "data"
        self.repos = WORK / "repos"
        self.repo_salt = self.repos / "dockerops-salt"
        self.repo_lib = self.repos / "dockerops-library"
        self.repo_plain = self.repos / "restic"
        self.password_file = WORK / "password"
        self.state_dir = WORK / "state"
        self.minion = Minion(WORK / "salt", self.state_dir)
        self.pillar = pillar(self.data, self.repo_salt, self.consistency)
        self.client = docker.DockerClient(version="auto", timeout=120)
        self.host = DockerHost(self.client)

    def add(self, step: Step) -> Step:
        step.load = load()
        step.round = self.round if step.phase == "second" else 0
        self.steps.append(step)
        shown = {k: v for k, v in step.detail.items() if k != "timeline"}
        extra = f" ({shown})" if shown else ""
        log(f"[{step.label}] {step.tool}: {step.seconds:.2f}s{extra}")
        for line in step.detail.get("timeline", []):
            log(f"    {line}")
        return step

    # set-up

    def remove_service(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}=backup"}
        ):
            container.remove(force=True)

    def prepare(self, source: Path) -> None:
        self.remove_service()
        if WORK.exists():
            log(f"removing the workspace of an earlier run ({WORK.relative_to(REPO)})")
            shutil.rmtree(WORK)
        (WORK / "host" / SERVICE).mkdir(parents=True)
        self.repos.mkdir()
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)
        log("copying the data set into the service's data dir")
        must(["cp", "-a", str(source), str(self.data)])
        self.minion.write(self.pillar)
        log("salt-call saltutil.sync_all, then state.apply (deploys the service)")
        self.minion.call("saltutil.sync_all")
        data, _ = self.minion.call("state.apply")
        failed = {k: v.get("comment") for k, v in data.items() if v.get("result") is not True}
        if failed:
            raise SystemExit(f"state.apply failed: {failed}")
        self.wait_healthy()
        log("reading the data once (page cache warm for every tool)")
        must(f"tar -cf - -C {self.data} . | cat > /dev/null", shell=True)

    def wait_healthy(self, limit: float = 60) -> None:
        deadline = time.monotonic() + limit
        while True:
            found = self.client.containers.list(filters={"label": f"{OWNER_LABEL}=backup"})
            health = [c.attrs["State"].get("Health", {}).get("Status") for c in found]
            if health == ["healthy"]:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{SERVICE} not healthy after {limit:g}s: {health}")
            time.sleep(0.3)

    # the tools

    def tar_zstd(self, phase: str) -> Path:
        # A new file each time (the previous one removed first, untimed):
        # overwriting a 1 GiB file would time its truncation too.
        for old in WORK.glob("archive-*.tar.zst"):
            old.unlink()
        archive = WORK / f"archive-{phase}{self.round or ''}.tar.zst"
        command = f"tar -cf - -C {self.data} . | zstd -q -T0 -o {archive}"
        _, seconds = timed(lambda: must(command, shell=True))
        self.add(
            Step(phase, "tar | zstd", seconds, detail={"archive_bytes": archive.stat().st_size})
        )
        return archive

    def restic_plain(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        env = restic_env(self.repo_plain, self.password_file, WORK / "cache-restic")
        return must(["restic", *args], env=env)

    def plain_backup(self, phase: str) -> None:
        if phase == "first":
            _, seconds = timed(lambda: self.restic_plain("init"))
            self.add(Step(phase, "restic init", seconds))
        done, seconds = timed(
            lambda: self.restic_plain("backup", "--json", "--host", MINION, str(self.data))
        )
        self.add(Step(phase, "restic", seconds, {"backup": seconds}, restic_summary(done.stdout)))

    def library_restic(self, timeline: Timeline) -> Restic:
        return Restic(
            str(self.repo_lib),
            PASSWORD,
            timeline.executor(host_executor()),
            str(self.state_dir / "restic-cache"),
        )

    def library_spec(self) -> Any:
        lib_pillar = pillar(self.data, self.repo_lib, self.consistency)
        return load_service(lib_pillar, SERVICE), load_root(lib_pillar).backup

    def library_backup(self, phase: str) -> None:
        spec, settings = self.library_spec()
        must(["sync"])
        timeline = Timeline()
        outcome = backup_service(
            self.host,
            spec,
            settings,
            str(self.state_dir),
            MINION,
            restic=self.library_restic(timeline),
            log=timeline.mark,
        )
        timeline.mark("returned")
        seconds = timeline.events[-1][0]
        if outcome.result is not True:
            raise SystemExit(f"library backup failed: {outcome.comment}")
        snap = outcome.changes["snapshot"]
        detail = {key: snap[key] for key in ("new", "changed", "data_added")}
        detail["timeline"] = timeline.shown()
        self.add(Step(phase, "dockerops library", seconds, timeline.restic, detail))

    def salt_backup(self, phase: str) -> None:
        must(["sync"])
        called = time.time()
        data, seconds = self.minion.call("dockerops.backup", SERVICE)
        if not isinstance(data, dict) or data.get("result") is not True:
            raise SystemExit(f"salt-call dockerops.backup failed: {data}")
        snap = data["changes"]["snapshot"]
        detail = {key: snap[key] for key in ("new", "changed", "data_added")}
        # The record dates the backup's start and times it up to its snapshot
        # (retention after it): what salt-call spent before, inside and after.
        record = BackupRecord(str(self.state_dir), SERVICE).last_success() or {}
        if record.get("snapshot") == snap["id"]:
            before = float(record["time"]) - called
            inside = float(record["duration"])
            detail["salt_call_split_s"] = {
                "start-up, pillar, spec, checks": round(before, 2),
                "lock to snapshot recorded": round(inside, 2),
                "retention, return, exit": round(seconds - before - inside, 2),
            }
        self.add(Step(phase, "dockerops salt-call", seconds, detail=detail))

    def salt_startup(self, runs: int = 3) -> None:
        walls = sorted(self.minion.call("test.true")[1] for _ in range(runs))
        self.add(Step("baseline", "salt-call test.true", walls[len(walls) // 2]))

    # restores

    def check_tree(self, top: Path, expected: tuple[str, int, int], tool: str) -> None:
        got = tree_digest(top)
        if got != expected:
            raise SystemExit(f"{tool} restored {got[1:]} files/bytes, not the data {expected[1:]}")

    def restores(self, expected: tuple[str, int, int], archive: Path) -> None:
        target = WORK / "restore-tar"
        target.mkdir()
        command = f"zstd -q -d -c {archive} | tar -xf - -C {target}"
        _, seconds = timed(lambda: must(command, shell=True))
        self.add(Step("restore", "zstd -d | tar -x", seconds))
        self.check_tree(target, expected, "untar")
        shutil.rmtree(target)

        for tool, extra in (("restic", []), ("restic --verify", ["--verify"])):
            target = WORK / "restore-restic"
            _, seconds = timed(
                lambda extra=extra, target=target: self.restic_plain(
                    "restore", "latest", "--target", str(target), *extra
                )
            )
            self.add(Step("restore", tool, seconds, {"restore": seconds}))
            self.check_tree(target / str(self.data).lstrip("/"), expected, tool)
            shutil.rmtree(target)

        spec, _ = self.library_spec()
        must(["sync"])
        timeline = Timeline()
        outcome = restore_service(
            self.host,
            spec,
            self.library_restic(timeline),
            str(self.state_dir),
            MINION,
            log=timeline.mark,
        )
        timeline.mark("returned")
        if outcome.result is not True:
            raise SystemExit(f"library restore failed: {outcome.comment}")
        detail = {"timeline": timeline.shown()}
        self.add(
            Step("restore", "dockerops library", timeline.events[-1][0], timeline.restic, detail)
        )
        self.after_restore(outcome.changes["restored"], expected, "library restore")

        (data, _), seconds = timed(lambda: self.minion.call("dockerops.restore", SERVICE))
        if not isinstance(data, dict) or data.get("result") is not True:
            raise SystemExit(f"salt-call dockerops.restore failed: {data}")
        self.add(Step("restore", "dockerops salt-call", seconds))
        self.after_restore(data["changes"]["restored"], expected, "salt-call restore")

    def after_restore(
        self, restored: dict[str, Any], expected: tuple[str, int, int], tool: str
    ) -> None:
        self.wait_healthy()
        self.check_tree(self.data, expected, tool)
        # The data kept aside (dockerops never deletes it) is the bench's to drop.
        shutil.rmtree(restored[str(self.data)]["previous"])

    def run(self, source: Path, files: list[tuple[str, str, int]]) -> dict[str, Any]:
        self.prepare(source)
        self.salt_startup()
        self.tar_zstd("first")
        self.plain_backup("first")
        self.library_backup("first")
        self.salt_backup("first")
        changed = []
        for number in range(1, self.rounds + 1):
            self.round = number
            changed.append(change_files(self.data, files, self.round))
            log(f"round {self.round}: changed {changed[-1]}")
            archive = self.tar_zstd("second")
            self.plain_backup("second")
            self.library_backup("second")
            self.salt_backup("second")
        self.round = 0
        expected = tree_digest(self.data)
        self.restores(expected, archive)
        repos = {path.name: du(path) for path in sorted(self.repos.iterdir())}
        return {"changed": changed, "repository_bytes": repos}


# -- report ---------------------------------------------------------------------


def by(steps: list[Step], phase: str, tool: str) -> Step | None:
    return next((s for s in steps if s.phase == phase and s.tool == tool), None)


def times(steps: list[Step], phase: str, tool: str) -> list[float]:
    return [s.seconds for s in steps if s.phase == phase and s.tool == tool]


def median(steps: list[Step], phase: str, tool: str) -> float | None:
    found = times(steps, phase, tool)
    return statistics.median(found) if found else None


def cell(text: str) -> str:
    """A Markdown table cell: a pipe escaped."""
    return text.replace("|", "\\|")


def restic_part(step: Step) -> str:
    if not step.restic:
        return "-"
    total = sum(step.restic.values())
    parts = ", ".join(f"{k} {v:.2f}" for k, v in step.restic.items())
    return f"{total:.2f} ({parts})"


def report(steps: list[Step], startup: float) -> str:
    rows = [
        "| step | tool | seconds | restic's calls s | rest s |",
        "|---|---|---:|---|---:|",
    ]
    for step in steps:
        if step.phase == "baseline":
            continue
        rest = f"{step.seconds - sum(step.restic.values()):.2f}" if step.restic else "-"
        split = step.detail.get("salt_call_split_s")
        if split:
            before, inside, after = split.values()
            rest = f"before {before:.2f}, backup {inside:.2f}, after {after:.2f}"
        elif step.tool == "dockerops salt-call":
            rest = f"(Salt start-up ~{startup:.2f})"
        rows.append(
            f"| {step.label} | {cell(step.tool)} | {step.seconds:.2f} | {restic_part(step)} "
            f"| {rest} |"
        )
    rows += [
        "",
        "| tool | first s | second s (median; rounds) | second / first (median; rounds) |",
        "|---|---:|---:|---:|",
    ]
    for tool in ("tar | zstd", "restic", "dockerops library", "dockerops salt-call"):
        first, seconds = by(steps, "first", tool), times(steps, "second", tool)
        if first and seconds:
            ratios = [value / first.seconds for value in seconds]
            ratio = statistics.median(ratios)
            verdict = "" if tool == "tar | zstd" else (" ok" if ratio <= 0.15 else " MISSED")
            rows.append(
                f"| {cell(tool)} | {first.seconds:.2f} | {statistics.median(seconds):.2f} "
                f"({', '.join(f'{v:.2f}' for v in seconds)}) | **{ratio:.1%}**{verdict} "
                f"({', '.join(f'{v:.1%}' for v in ratios)}) |"
            )
    shares = []
    for phase in ("first", "second", "restore"):
        a, b = (
            median(steps, phase, "dockerops salt-call"),
            median(steps, phase, "dockerops library"),
        )
        shares.append(f"{a - b:.2f}" if a is not None and b is not None else "-")
    rows += [
        "",
        "| salt-call - library (Salt's share) | first | second | restore |",
        "|---|---:|---:|---:|",
        f"| seconds | {' | '.join(shares)} |",
    ]
    rows += ["", "| against | first backup | second backup | restore |", "|---|---:|---:|---:|"]
    for ours in ("dockerops library", "dockerops salt-call"):
        for base in ("tar | zstd", "restic"):
            cells = []
            for phase, base_tool in (
                ("first", base),
                ("second", base),
                ("restore", "zstd -d | tar -x" if base == "tar | zstd" else base),
            ):
                a, b = median(steps, phase, ours), median(steps, phase, base_tool)
                cells.append(f"{a / b:.2f}x" if a is not None and b else "-")
            rows.append(f"| {ours} / {cell(base)} | {' | '.join(cells)} |")
    return "\n".join(rows)


def ensure_matplotlib() -> Any:
    """matplotlib, installed on first use into build/bench/plot-lib (bench/salt_bench.py)."""
    from salt_bench import ensure_matplotlib as ensure

    return ensure()


def plot(steps: list[Step], path: Path, title: str) -> None:
    plt = ensure_matplotlib()
    phases = [
        ("first", "first backup (1 GiB)"),
        ("second", "second backup (1 % of files changed)"),
        ("restore", "restore (1 GiB)"),
    ]
    colors = {
        "tar | zstd": "#999999",
        "zstd -d | tar -x": "#999999",
        "restic": "#4c72b0",
        "restic --verify": "#4c72b0",
        "restic init": "#a6bddb",
        "dockerops library": "#dd8452",
        "dockerops salt-call": "#c44e52",
    }
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    for ax, (phase, label) in zip(axes, phases, strict=True):
        names = list(dict.fromkeys(s.tool for s in steps if s.phase == phase))
        names = [name for name in names if name != "restic init"]
        found = {name: [s for s in steps if s.phase == phase and s.tool == name] for name in names}
        values = [statistics.median(s.seconds for s in found[name]) for name in names]
        spread = [
            [v - min(s.seconds for s in found[n]) for v, n in zip(values, names, strict=True)],
            [max(s.seconds for s in found[n]) - v for v, n in zip(values, names, strict=True)],
        ]
        several = any(len(found[name]) > 1 for name in names)
        limits = [value + high for value, high in zip(values, spread[1], strict=True)]
        bars = ax.barh(
            names,
            values,
            color=[colors.get(n, "#55a868") for n in names],
            xerr=spread if several else None,
            capsize=3,
        )
        for bar, name, value, high in zip(bars, names, values, spread[1], strict=True):
            y = bar.get_y() + bar.get_height() / 2
            if name.startswith("dockerops") and found[name][0].restic:
                inner = statistics.median(sum(s.restic.values()) for s in found[name])
                ax.barh(
                    y,
                    inner,
                    height=bar.get_height(),
                    color="none",
                    edgecolor="black",
                    hatch="//",
                    linewidth=0.5,
                )
            init = by(steps, phase, "restic init") if name == "restic" else None
            if init is not None:
                # dockerops' first backup creates its repository: restic's init shown beside.
                ax.barh(y, init.seconds, left=value, height=bar.get_height(), color="#a6bddb")
                ax.text(value + init.seconds / 2, y, "init", ha="center", va="center", fontsize=7)
                limits.append(value + init.seconds)
                value += init.seconds
            ax.text(value + high, y, f" {value:.1f}s", va="center", fontsize=8)
            if phase == "second" and not name.startswith("tar"):
                # Issue 11's bar: the second backup within 15 % of the same tool's first.
                first = by(steps, "first", name)
                if first is not None:
                    budget = 0.15 * first.seconds
                    top = bar.get_y()
                    ax.plot(
                        [budget, budget], [top, top + bar.get_height()], color="black", linewidth=2
                    )
                    limits.append(budget)
        if phase == "second":
            rounds = max(len(found[name]) for name in names)
            label += f"\nmedian of {rounds} rounds (range); black: 15 % of the tool's first"
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("seconds (wall)")
        ax.set_xlim(0, max(limits) * 1.3 if limits else 1)
    fig.suptitle(title + "   (hatched: restic's own calls inside dockerops)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


def check_tools() -> None:
    missing = [tool for tool in ("restic", "zstd", "tar") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (scripts/host-packages.sh installs them)")
    if run(["docker", "info"]).returncode != 0:
        raise SystemExit("no Docker daemon answers (scripts/dockerd-up.sh starts one)")
    if run(["docker", "image", "inspect", f"{IMAGE}:{TAG}"]).returncode != 0:
        log(f"building {IMAGE}:{TAG} (images/build.sh)")
        subprocess.run([str(REPO / "images" / "build.sh")], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--consistency",
        default="pause",
        choices=("stop", "pause", "none"),
        help="the service's backup:consistency (default pause)",
    )
    parser.add_argument(
        "--plot", default=str(BUILD / "backup.png"), help="where the PNG goes (build/bench/)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="second backups, each after another 1 %% of the files changed (default 3)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the workspace (repositories, archives)"
    )
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="measure nothing: the table and plot of an earlier run's JSON results",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        return show(json.loads(Path(args.from_json).read_text()), Path(args.plot))

    check_tools()
    BUILD.mkdir(parents=True, exist_ok=True)
    ensure_matplotlib()  # before anything is timed: a first run installs it
    source, files = ensure_data()
    started = time.monotonic()
    load_before = load()
    log(f"load average before: {load_before} ({os.cpu_count()} CPUs)")
    bench = Bench(args.consistency, max(1, args.rounds))
    try:
        extra = bench.run(source, files)
    finally:
        bench.remove_service()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)
    load_after = load()
    startup = by(bench.steps, "baseline", "salt-call test.true")
    startup_s = startup.seconds if startup else 0.0
    versions = {
        "restic": run(["restic", "version"]).stdout.strip(),
        "zstd": run(["zstd", "--version"]).stdout.strip(),
        "tar": run(["tar", "--version"]).stdout.splitlines()[0],
    }
    results = {
        "consistency": args.consistency,
        "files": len(files),
        "bytes": sum(size for _, _, size in files),
        **extra,
        "salt_startup_seconds": round(startup_s, 3),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpus": os.cpu_count(),
        "versions": versions,
        "steps": [s.as_dict() for s in bench.steps],
    }
    (BUILD / "backup.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"total {time.monotonic() - started:.0f}s; details in build/bench/backup.json")
    return show(results, Path(args.plot))


def show(results: dict[str, Any], plot_path: Path) -> int:
    """Print the tables of a run's results and draw its plot."""
    steps = [
        Step(
            item["phase"],
            item["tool"],
            item["seconds"],
            item.get("restic_seconds") or {},
            item.get("detail") or {},
            item.get("load_average_after", ""),
            item.get("round", 0),
        )
        for item in results["steps"]
    ]
    log("")
    log(report(steps, results["salt_startup_seconds"]))
    log(f"\nchanged: {results['changed']}; repositories: {results['repository_bytes']}")
    log(f"salt-call test.true (Salt start-up): {results['salt_startup_seconds']:.2f}s")
    log(
        f"load average before {results['load_average_before']}, after "
        f"{results['load_average_after']} ({results['cpus']} CPUs)"
    )
    plot(
        steps,
        plot_path,
        f"1 GiB, {results['files']} files, consistency {results['consistency']}, "
        f"{results['cpus']} CPUs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
