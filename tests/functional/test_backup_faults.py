"""Backups under bad input and faults, against the real dockerd and real restic.

Every fault gets a clear error in operator words (the meaning of
:func:`dockerops.restic.classify`'s kind), never the password; nothing is
deleted; and the containers run as before: same ids, same StartedAt, healthy.
A snapshot that fails inside a stop or pause window still brings every
replica back, healthy. Retention keeps exactly what restic's documented
policy promises (computed here independently) and nothing of other services
or hosts. A restore or a backup killed midway (SIGKILL of its salt-call)
leaves what the next call needs to recover, and it does.

The module shares one deployed service (2 replicas, static data, a 2 s
healthcheck so health waits last long enough to kill a run inside one).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from dockerops import restic as restic_lib
from tests.functional.helpers import containers
from tests.functional.test_backup import PASSWORD, backup_pillar, healthy, restic_env, tree
from tests.support.salt import SALT_CALL, Masterless

pytestmark = pytest.mark.docker

MINION = "int-functional"  # the id of the in-process loaders (tests/functional/conftest.py)
WRONG_PASSWORD = "Zq7-xK2p-Wm9v-Lt4r"  # shares no 8 characters with any message


# -- the shared service ---------------------------------------------------------


class Shared:
    """The module's deployed service, its data, repository and pillar."""

    def __init__(
        self, loaders: Any, name: str, root: Path, host_root: Path, image: str, state_dir: Path
    ) -> None:
        self.salt = loaders
        self.name = name
        self.root = root
        self.host_root = host_root
        self.image = image
        self.state_dir = state_dir
        self.repo = {
            "path": root / "restic",
            "password_file": root / "password",
            "tmp": root,
        }
        self.repo["password_file"].write_text(PASSWORD + "\n")
        self.data = host_root / name / "data"

    def pillar(
        self, repository: str | None = None, password: str = PASSWORD, **backup: Any
    ) -> dict[str, Any]:
        """The service's pillar (the test_backup one, static data, slower healthcheck)."""
        backup = backup or {"consistency": "stop"}
        pillar = backup_pillar(self.name, self.image, self.host_root, self.repo, **backup)
        service = pillar["dockerops"]["services"][self.name]
        del service["command"]  # static data: the demo app only serves
        service["healthcheck"] = {
            "test": "wget -q -O /dev/null http://127.0.0.1:8080/health",
            "interval": "2s",
            "timeout": "1s",
            "retries": 1,
        }
        settings = pillar["dockerops"]["backup"]
        settings["password"] = password
        if repository is not None:
            settings["repository"] = repository
        return pillar

    def use(self, pillar: dict[str, Any]) -> None:
        pillar_dir = Path(self.salt.opts["pillar_roots"]["base"][0])
        (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - test\n")
        (pillar_dir / "test.sls").write_text("#!yaml\n" + json.dumps(pillar))
        self.salt.reload_all()

    def restic(self, *args: str, repository: Path | None = None) -> subprocess.CompletedProcess:
        env = restic_env(repository or self.repo["path"], self.repo["password_file"])
        return subprocess.run(
            ["restic", *args], env=env, capture_output=True, text=True, check=False, timeout=120
        )

    def snapshot_ids(self, repository: Path | None = None) -> set[str]:
        done = self.restic("snapshots", "--json", repository=repository)
        assert done.returncode == 0, done.stderr
        return {item["id"] for item in json.loads(done.stdout or "[]")}


@pytest.fixture(scope="module")
def shared(
    session_loaders: Any,
    minion_opts: dict[str, Any],
    docker_client: Any,
    demo_images: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shared]:
    import random

    name = f"t{random.randrange(16**6):06x}"
    svc = Shared(
        session_loaders,
        name,
        tmp_path_factory.mktemp("faults"),
        tmp_path_factory.mktemp("hostroot"),
        demo_images["repository"],
        Path(minion_opts["dockerops.state_dir"]),
    )
    seed(svc.data)
    svc.use(svc.pillar())
    try:
        ret = session_loaders.states.dockerops.running(name=name)
        assert ret.result is True, ret.comment
        healthy(docker_client, name, 2)
        out = session_loaders.modules.dockerops.backup(name)
        assert out["result"] is True, out["comment"]
        yield svc
    finally:
        for container in containers(docker_client, name).values():
            container.remove(force=True)
        for path in svc.state_dir.glob(f"*/{name}.*"):
            path.unlink()
        session_loaders.reset_state()


def seed(data: Path) -> None:
    """Static data: small files, a subdirectory, and 4 MiB that do not compress."""
    (data / "sub").mkdir(parents=True, exist_ok=True)
    for index in range(8):
        (data / f"file-{index}.txt").write_text(f"record {index}\n" * (index + 1) * 50)
    (data / "sub" / "nested.bin").write_bytes(os.urandom(20000))
    (data / "blob.bin").write_bytes(os.urandom(4 << 20))


def replicas_now(docker_client: Any, name: str) -> dict[str, tuple[str, bool, str | None]]:
    """container id -> (StartedAt, running, health)."""
    out = {}
    for container in containers(docker_client, name).values():
        state = container.attrs["State"]
        out[container.id] = (
            state["StartedAt"],
            bool(state["Running"]),
            (state.get("Health") or {}).get("Status"),
        )
    return out


def assert_untouched(before: dict[str, Any], docker_client: Any, name: str) -> None:
    """The same containers, never restarted, running and healthy."""
    now = replicas_now(docker_client, name)
    assert now == before, (before, now)
    assert len(now) == 2 and all(run and health == "healthy" for _, run, health in now.values())


def error_text(call: Callable[[], Any]) -> str:
    """A failed call's whole answer: its return (result False) or the error it raised."""
    try:
        out = call()
    except (CommandExecutionError, SaltInvocationError) as err:
        return f"{type(err).__name__}: {err}"
    assert isinstance(out, dict) and out.get("result") is False, out
    return json.dumps(out, default=str)


def meaning(kind: str) -> str:
    return next(text for name, text, _ in restic_lib.KINDS if name == kind)


def no_secret(text: str, *secrets: str) -> None:
    for secret in (PASSWORD, *secrets):
        assert secret not in text


# -- 1. clear errors, nothing deleted, containers as before ---------------------------


def test_unreachable_repository_stops_nothing(shared, docker_client, free_ports):
    before, data, snapshots = (
        replicas_now(docker_client, shared.name),
        tree(shared.data),
        shared.snapshot_ids(),
    )
    closed = free_ports(1)  # nothing listens there
    shared.use(
        shared.pillar(
            repository=f"rest:http://127.0.0.1:{closed}/", consistency="stop", keep={"last": 1}
        )
    )
    mod = shared.salt.modules.dockerops
    for call in (
        lambda: mod.backup(shared.name),
        lambda: mod.restore(shared.name),
        lambda: mod.verify_backup(shared.name),
        lambda: mod.prune_backups(shared.name),
    ):
        text = error_text(call)
        assert meaning("unreachable") in text, text
        assert f"127.0.0.1:{closed}" in text
        no_secret(text)
    # The repository is checked before any replica is stopped (consistency stop).
    assert_untouched(before, docker_client, shared.name)
    assert tree(shared.data) == data
    assert shared.snapshot_ids() == snapshots


def test_wrong_password_is_said_and_never_shown(shared, docker_client):
    before, data, snapshots = (
        replicas_now(docker_client, shared.name),
        tree(shared.data),
        shared.snapshot_ids(),
    )
    shared.use(shared.pillar(password=WRONG_PASSWORD, consistency="stop"))
    mod = shared.salt.modules.dockerops
    for call in (
        lambda: mod.backup(shared.name),
        lambda: mod.restore(shared.name),
        lambda: mod.backups(shared.name),
        lambda: mod.verify_backup(shared.name),
    ):
        text = error_text(call)
        assert meaning("password") in text, text
        no_secret(text, WRONG_PASSWORD)
    assert_untouched(before, docker_client, shared.name)
    assert tree(shared.data) == data
    assert shared.snapshot_ids() == snapshots
    record = (shared.state_dir / "backups" / f"{shared.name}.json").read_text()
    assert meaning("password") in record
    no_secret(record, WRONG_PASSWORD)


def test_data_path_outside_the_allowlist_is_a_pillar_error(shared, docker_client, tmp_path):
    before, snapshots = replicas_now(docker_client, shared.name), shared.snapshot_ids()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_text("not for the repository")
    pillar = shared.pillar(consistency="none")
    pillar["dockerops"]["services"][shared.name]["data"] = [
        {"host": str(outside), "container": "/data"}
    ]
    shared.use(pillar)
    for call in (
        lambda: shared.salt.modules.dockerops.backup(shared.name),
        lambda: shared.salt.modules.dockerops.restore(shared.name),
    ):
        text = error_text(call)
        assert str(outside) in text and "allowed_host_paths" in text, text
    # Inside the allowlist but a symlink leading out of it: refused the same way.
    link = shared.host_root / "link-out"
    link.symlink_to(outside)
    pillar["dockerops"]["services"][shared.name]["data"] = [
        {"host": str(link), "container": "/data"}
    ]
    shared.use(pillar)
    text = error_text(lambda: shared.salt.modules.dockerops.backup(shared.name))
    assert str(link) in text and "symlink" in text.lower(), text
    assert shared.snapshot_ids() == snapshots  # nothing of it reached the repository
    assert (outside / "secret").read_text() == "not for the repository"
    assert_untouched(before, docker_client, shared.name)


def test_restore_of_an_unknown_id_touches_nothing(shared, docker_client):
    before, data = replicas_now(docker_client, shared.name), tree(shared.data)
    listing = sorted(os.listdir(shared.data.parent))
    shared.use(shared.pillar(consistency="stop"))
    mod = shared.salt.modules.dockerops
    for wanted, says in (
        ("deadbeef", "no snapshot deadbeef"),
        ("0123456789abcdef", "no snapshot 0123456789abcdef"),
        ("latest; rm -rf /", "is not a snapshot id"),
    ):
        text = error_text(lambda wanted=wanted: mod.restore(shared.name, id=wanted))
        assert says in text, text
        no_secret(text)
        text = error_text(lambda wanted=wanted: mod.verify_backup(shared.name, id=wanted))
        assert says in text, text
    assert_untouched(before, docker_client, shared.name)
    assert tree(shared.data) == data
    assert sorted(os.listdir(shared.data.parent)) == listing


def test_damaged_pack_caught_by_verify_refused_by_restore(shared, docker_client):
    repository = shared.root / "damaged-restic"
    shared.use(shared.pillar(repository=str(repository), consistency="none"))
    mod = shared.salt.modules.dockerops
    out = mod.backup(shared.name)
    assert out["result"] is True, out["comment"]
    assert mod.verify_backup(shared.name)["result"] is True
    # Damage the pack holding the 4 MiB file's data (the largest): flip bytes mid-way.
    pack = max((p for p in (repository / "data").rglob("*") if p.is_file()), key=os.path.getsize)
    pack.chmod(0o600)
    content = bytearray(pack.read_bytes())
    for offset in range(len(content) // 2, len(content) // 2 + 64):
        content[offset] ^= 0xFF
    pack.write_bytes(bytes(content))
    # The data changed since the snapshot: a restore would replace it.
    (shared.data / "file-0.txt").write_text("changed after the snapshot\n")
    (shared.data / "new.txt").write_text("new after the snapshot\n")
    before, data = replicas_now(docker_client, shared.name), tree(shared.data)
    listing = sorted(os.listdir(shared.data.parent))

    text = error_text(lambda: mod.verify_backup(shared.name))
    assert meaning("damaged") in text, text
    assert "ciphertext verification failed" in text or "does not match" in text, text
    no_secret(text)

    text = error_text(lambda: mod.restore(shared.name, id=out["snapshot"]))
    assert meaning("damaged") in text, text
    no_secret(text)
    assert tree(shared.data) == data  # not a byte changed
    assert sorted(os.listdir(shared.data.parent)) == listing  # no staging copy left
    assert not (shared.state_dir / "backups" / f"{shared.name}.restore.json").exists()
    assert_untouched(before, docker_client, shared.name)


# -- 1 + 2. a full disk inside a stop or pause window ------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a repository there runs out of space on a 4 MiB backup."""
    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


@pytest.mark.parametrize("mode", ["stop", "pause"])
def test_full_disk_fails_the_snapshot_and_brings_every_replica_back_healthy(
    shared, docker_client, small_disk, mode
):
    repository = small_disk / "restic"
    shared.use(shared.pillar(repository=str(repository), consistency=mode))
    before, data = replicas_now(docker_client, shared.name), tree(shared.data)

    out = shared.salt.modules.dockerops.backup(shared.name)

    # The return came only once every replica was back and healthy: no wait here.
    now = replicas_now(docker_client, shared.name)
    assert set(now) == set(before)  # the same containers
    assert all(run and health == "healthy" for _, run, health in now.values()), now
    assert out["result"] is False
    assert "backup of" in out["comment"] and "failed" in out["comment"]
    assert meaning("no_space") in out["comment"], out["comment"]
    no_secret(json.dumps(out, default=str))
    verb = "stopped" if mode == "stop" else "paused"
    back = "started" if mode == "stop" else "unpaused"
    for container in containers(docker_client, shared.name).values():
        assert any(step == f"{verb} {container.name}" for step in out["steps"]) or any(
            step.startswith(f"{verb} {container.name} ") for step in out["steps"]
        ), out["steps"]
        assert f"{back} {container.name}" in out["steps"], out["steps"]
    if mode == "stop":
        assert all(now[cid][0] != before[cid][0] for cid in before)  # really restarted
    else:
        assert now == before  # paused, never restarted
    assert tree(shared.data) == data
    # The repository is still sound and holds no (partial) snapshot.
    assert shared.snapshot_ids(repository) == set()
    checked = shared.restic("check", repository=repository)
    assert checked.returncode == 0, checked.stderr
    assert not (shared.state_dir / "backups" / f"{shared.name}.window.json").exists()


# -- 3. retention across simulated days -------------------------------------------


KEEP = {"last": 2, "daily": 5, "weekly": 3, "monthly": 2}
START = datetime.datetime(2024, 2, 10, 9, 0, 0)


def simulated_times() -> list[datetime.datetime]:
    """40 days from 10 February 2024 (across a month and several ISO weeks):
    a snapshot every fifth day, then every day of the last week, 1-3 a day
    (few: each restic run costs its key derivation, about half a second)."""
    out = []
    for day in range(40):
        if day < 33 and day % 5:
            continue
        count = 1 if day < 33 else 1 + (day % 2 == 0) + (day >= 38)
        for slot in range(count):
            out.append(START + datetime.timedelta(days=day, hours=5 * slot, minutes=day))
    return out


def expected_kept(times: list[datetime.datetime], keep: dict[str, int]) -> set[datetime.datetime]:
    """restic's documented policy: newest first, each rule keeps a snapshot
    when it opens a new bucket (last: every snapshot; daily: a day; weekly: an
    ISO week; monthly: a month) until it has kept its count; a snapshot is kept
    when any rule keeps it."""
    buckets: dict[str, Callable[[datetime.datetime], Any]] = {
        "last": lambda when: when,
        "daily": lambda when: when.date(),
        "weekly": lambda when: when.isocalendar()[:2],
        "monthly": lambda when: (when.year, when.month),
    }
    left = dict(keep)
    seen: dict[str, Any] = {}
    kept = set()
    for when in sorted(times, reverse=True):
        for rule, bucket in buckets.items():
            if left.get(rule, 0) > 0 and bucket(when) != seen.get(rule):
                seen[rule] = bucket(when)
                left[rule] -= 1
                kept.add(when)
    return kept


def test_retention_keeps_what_the_policy_promises(shared, tmp_path):
    repository = tmp_path / "retention-restic"
    lib = restic_lib.Restic(str(repository), PASSWORD)
    lib.init()
    data = shared.host_root / "retention" / "data"
    data.mkdir(parents=True)
    (data / "a").write_text("a")
    tags = {
        "service": shared.name,
        "environment": "integration",
        "minion": MINION,
        "image": "demo:1.0",
        "config": "none",
    }
    times = simulated_times()
    # Three restic runs at once: each spends most of its time deriving the key.
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        ids = pool.map(
            lambda when: (
                lib.backup(
                    [str(data)], tags, MINION, when=when.strftime("%Y-%m-%d %H:%M:%S")
                ).snapshot_id
            ),
            times,
        )
        by_time = dict(zip(times, ids, strict=True))
    # Another service's snapshot, and the same service's from another host.
    others = {
        lib.backup([str(data)], {**tags, "service": shared.name + "x"}, MINION).snapshot_id,
        lib.backup(
            [str(data)],
            {**tags, "minion": "other-minion"},
            "other-minion",
            when="2024-01-01 00:00:00",
        ).snapshot_id,
        lib.backup([str(data)], {**tags, "minion": "other-minion"}, "other-minion").snapshot_id,
    }
    all_ids = {snap.short_id for snap in lib.snapshots({})}
    kept = {by_time[when] for when in expected_kept(list(by_time), KEEP)}
    # The policy exercises every rule: fewer kept than taken, more than any one rule keeps.
    assert len(by_time) > len(kept) > max(KEEP.values())

    shared.use(shared.pillar(repository=str(repository), consistency="none", keep=KEEP))
    mod = shared.salt.modules.dockerops
    plan = mod.prune_backups(shared.name, test=True)
    assert plan["result"] is True and plan["test"] is True, plan
    assert set(plan["kept"]) == kept
    assert set(plan["forgotten"]) == set(by_time.values()) - kept
    assert {snap.short_id for snap in lib.snapshots({})} == all_ids  # nothing forgotten

    out = mod.prune_backups(shared.name)
    assert out["result"] is True, out
    assert set(out["kept"]) == kept
    assert set(out["changes"]["forgotten"]) == set(by_time.values()) - kept
    assert {snap.short_id for snap in lib.snapshots({})} == kept | others
    no_secret(json.dumps([plan, out], default=str))


# -- 4, 5. a restore or a backup killed midway ------------------------------------------


@pytest.fixture(scope="module")
def salt_call(
    shared: Shared, tmp_path_factory: pytest.TempPathFactory, docker_url: str
) -> Masterless:
    """salt-call --local as the in-process loaders' minion: same id, same state dir."""
    call = Masterless(
        tmp_path_factory.mktemp("faults-call"),
        MINION,
        docker_url,
        **{"dockerops.state_dir": str(shared.state_dir)},
    )
    synced = call.run("saltutil.sync_all")
    assert synced.returncode == 0, synced.stderr
    return call


def start_call(call: Masterless, *args: str, env: dict[str, str] | None = None) -> Any:
    """salt-call in its own process group, to be killed mid-way."""
    return subprocess.Popen(
        [SALT_CALL, "-c", str(call.root), "--local", "--out=json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def kill_when(proc: Any, ready: Callable[[], bool], timeout: float = 90) -> None:
    """SIGKILL ``proc``'s process group as soon as ``ready()``."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(
                    f"salt-call ended before the kill: {out.decode()[-2000:]}"
                    f" {err.decode()[-2000:]}"
                )
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_restore_killed_after_the_swap_is_undone(shared, docker_client, salt_call):
    # consistency none: the backups here need not stop anything (a restore always does).
    pillar = shared.pillar(consistency="none")
    shared.use(pillar)
    mod = shared.salt.modules.dockerops
    out = mod.backup(shared.name)
    assert out["result"] is True, out["comment"]
    snapshot = out["snapshot"]
    # The data moves on after the snapshot: this is what a restore replaces.
    (shared.data / "file-1.txt").write_text("newer than the snapshot\n")
    (shared.data / "sub" / "after.txt").write_text("written after the snapshot\n")
    (shared.data / "file-2.txt").unlink()
    previous = tree(shared.data)
    ids = set(replicas_now(docker_client, shared.name))

    salt_call.set_pillar(pillar)
    journal = shared.state_dir / "backups" / f"{shared.name}.restore.json"
    proc = start_call(salt_call, "dockerops.restore", shared.name, f"id={snapshot}")

    def swapped() -> bool:
        paths = read_json(journal).get("paths") or []
        return bool(paths) and all(entry.get("phase") == "swapped" for entry in paths)

    def waiting_for_health() -> bool:
        if not swapped():
            return False
        now = replicas_now(docker_client, shared.name).values()
        return len(now) == 2 and all(run for _, run, _ in now)

    # Killed in the health wait (2 s healthcheck): started on the restored data.
    kill_when(proc, waiting_for_health)
    assert swapped()

    text = error_text(lambda: mod.restore(shared.name))
    assert "interrupted" in text and "undo=True" in text, text
    out = mod.backup(shared.name)
    assert out["result"] is False and "undo=True" in out["comment"], out
    ret = shared.salt.states.dockerops.running(name=shared.name)
    assert ret.result is False and "undo=True" in str(ret.comment), ret.comment

    out = mod.restore(shared.name, undo=True)
    assert out["result"] is True, out
    now = replicas_now(docker_client, shared.name)
    assert set(now) == ids
    assert all(run and health == "healthy" for _, run, health in now.values()), now
    assert tree(shared.data) == previous  # byte-identical previous data
    assert not journal.exists()
    for kept in out["changes"]["kept"]:  # the partly restored copy, kept aside
        assert Path(kept).is_dir()
    assert mod.backup(shared.name)["result"] is True  # nothing refused any more


def slow_restic(tmp_path: Path) -> Path:
    """A directory whose ``restic`` is the real one, 30 s late for ``backup``
    (a slow disk): put first on PATH, it holds a backup's window open."""
    slow = tmp_path / "slow-bin"
    slow.mkdir()
    (slow / "restic").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do [ "$arg" = backup ] && sleep 30; done\n'
        f'exec {shutil.which("restic")} "$@"\n'
    )
    (slow / "restic").chmod(0o755)
    return slow


def test_backup_killed_while_replicas_are_stopped_starts_them_next_time(
    shared, docker_client, salt_call, tmp_path
):
    shared.use(shared.pillar(consistency="stop"))
    salt_call.set_pillar(shared.pillar(consistency="stop"))
    ids = set(replicas_now(docker_client, shared.name))
    slow = slow_restic(tmp_path)
    window = shared.state_dir / "backups" / f"{shared.name}.window.json"
    proc = start_call(
        salt_call,
        "dockerops.backup",
        shared.name,
        env={"PATH": f"{slow}:{os.environ['PATH']}"},
    )

    def stopped() -> bool:
        if not window.exists():
            return False
        now = replicas_now(docker_client, shared.name)
        return len(now) == 2 and not any(run for _, run, _ in now.values())

    kill_when(proc, stopped)
    time.sleep(1)
    assert window.exists()
    assert not any(run for _, run, _ in replicas_now(docker_client, shared.name).values())

    out = shared.salt.modules.dockerops.backup(shared.name)
    assert out["result"] is True, out
    assert len(out["recovered"]) == 2 and all(
        "interrupted backup" in line and "stopped" in line for line in out["recovered"]
    ), out["recovered"]
    now = replicas_now(docker_client, shared.name)
    assert set(now) == ids
    assert all(run and health == "healthy" for _, run, health in now.values()), now
    assert not window.exists()


def test_backup_killed_while_replicas_are_paused_a_state_run_unpauses_them(
    shared, docker_client, salt_call, tmp_path
):
    shared.use(shared.pillar(consistency="pause"))
    salt_call.set_pillar(shared.pillar(consistency="pause"))
    ids = set(replicas_now(docker_client, shared.name))
    slow = slow_restic(tmp_path)
    window = shared.state_dir / "backups" / f"{shared.name}.window.json"
    proc = start_call(
        salt_call,
        "dockerops.backup",
        shared.name,
        env={"PATH": f"{slow}:{os.environ['PATH']}"},
    )

    def paused() -> bool:
        if not window.exists():
            return False
        found = containers(docker_client, shared.name).values()
        return len(found) == 2 and all(c.attrs["State"]["Paused"] for c in found)

    kill_when(proc, paused)
    time.sleep(1)
    assert window.exists()

    # A paused replica counts as live to the plan: the state run unpauses it.
    ret = shared.salt.states.dockerops.running(name=shared.name)
    assert ret.result is True, ret.comment
    recovered = ret.changes["recovered"]
    assert len(recovered) == 2 and all("paused: brought back" in line for line in recovered)
    now = replicas_now(docker_client, shared.name)
    assert set(now) == ids
    assert all(run and health == "healthy" for _, run, health in now.values()), now
    assert not window.exists()
    assert not any(
        c.attrs["State"]["Paused"] for c in containers(docker_client, shared.name).values()
    )
