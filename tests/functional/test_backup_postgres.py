"""Backups and restores of a real PostgreSQL (Debian's postgresql-15, built by
tests/support/postgres.py) against the real dockerd and a real restic repository.

- ``consistency: exec``: ``pg_dump`` into a second data mount (``/dump``) while
  a client keeps inserting rows; only the dump is backed up (a file-by-file
  copy of a running cluster's data directory is not a consistent backup: a
  dump is). The table is dropped, ``dockerops.restore`` brings the dump back
  and the service up healthy, and loading the dump gives back exactly the
  rows the dump holds (counted in an independent ``restic restore``).
- ``consistency: stop``: postgres stops with a fast shutdown (SIGINT: the
  smart shutdown SIGTERM asks for waits for connected clients, and one is
  connected), the raw data directory is snapshotted, and its restore starts
  without crash recovery, with exactly the rows it had.

The service runs with ``init: true``: Docker's init is PID 1 and reaps what
``docker exec`` leaves orphaned. With postgres as PID 1 such an orphan is
reaped by the postmaster, which takes one killed by a signal for a crashed
server process: it ends every session and runs crash recovery.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.functional.helpers import containers, service_pillar
from tests.functional.test_backup import (
    PASSWORD,
    healthy,
    repo,  # noqa: F401 (a fixture)
    restic_env,
)
from tests.support import postgres

pytestmark = pytest.mark.docker

DB = "app"
# Inserts one row every ~20 ms, each its own transaction, until /tmp/stop-client
# appears (at most 3000 rows).
CLIENT = (
    "i=0; while [ $i -lt 3000 ] && [ ! -e /tmp/stop-client ]; do i=$((i+1)); "
    'echo "INSERT INTO t (n) VALUES ($i);"; sleep 0.02; done '
    f"| runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d {DB}"
)
# The dump is written beside and renamed into place: a failed dump never
# replaces the last good one.
DUMP = (
    f"runuser -u postgres -- pg_dump --clean --if-exists -d {DB} > /dump/{DB}.sql.tmp "
    f"&& mv /dump/{DB}.sql.tmp /dump/{DB}.sql"
)
# Loads the restored dump once the restored service is healthy (one transaction).
LOAD = f"runuser -u postgres -- psql -X -q -1 -v ON_ERROR_STOP=1 -d {DB} -f /dump/{DB}.sql"
# What PostgreSQL logs when it starts on a data directory it was not shut
# down cleanly on, or when it takes a process for a crashed backend.
CRASH_SIGNS = (
    "not properly shut down",
    "automatic recovery in progress",
    "was interrupted",
    "terminating any other active server processes",
    "all server processes terminated",
)


@pytest.fixture(scope="module")
def postgres_image(docker_client: Any) -> str:
    return postgres.ensure_image(docker_client)


def pg_pillar(
    name: str, image: str, host_root: Path, restic_repo: dict[str, Any], **backup: Any
) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    pillar = service_pillar(
        name,
        repository,
        tag=tag,
        data=[
            {"host": str(host_root / "pg" / "data"), "container": postgres.PGDATA},
            {"host": str(host_root / "pg" / "dump"), "container": "/dump"},
        ],
        # Docker's init as PID 1 (see the module's docstring); SIGINT, postgres's
        # fast shutdown (the image's STOPSIGNAL too: said here, where it is relied on).
        init=True,
        stop_signal="SIGINT",
        update={"health_timeout": "60s"},
        backup=backup,
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    pillar["dockerops"]["backup"] = {
        "repository": str(restic_repo["path"]),
        "password": PASSWORD,
    }
    return pillar


def replica(docker_client: Any, name: str) -> Any:
    (found,) = containers(docker_client, name).values()
    return found


def run(container: Any, *command: str) -> str:
    result = container.exec_run(list(command))
    assert result.exit_code == 0, (command, result.output.decode(errors="replace"))
    return str(result.output.decode()).strip()


def sql(container: Any, statement: str) -> str:
    return run(
        container,
        *("runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-q"),
        *("-v", "ON_ERROR_STOP=1", "-d", DB, "-c", statement),
    )


def rows(container: Any) -> list[int]:
    return [int(n) for n in sql(container, "SELECT n FROM t ORDER BY n").split()]


def deploy(salt: Any, pillar: dict[str, Any], name: str, docker_client: Any) -> Any:
    salt.set_pillar(pillar)
    ret = salt.states.dockerops.running(name=name)
    assert ret.result is True, ret.comment
    healthy(docker_client, name, 1, timeout=60)
    container = replica(docker_client, name)
    run(container, "runuser", "-u", "postgres", "--", "createdb", DB)
    sql(container, "CREATE TABLE t (n integer PRIMARY KEY, at timestamptz DEFAULT now())")
    return container


def logs_since(container: Any, since: float) -> str:
    return str(container.logs(since=since).decode(errors="replace"))


def assert_no_crash_recovery(log: str) -> None:
    found = [sign for sign in CRASH_SIGNS if sign in log]
    assert not found, log[-4000:]


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def dump_rows(restic_repo: dict[str, Any], snapshot: str, dump_dir: Path, into: Path) -> list[int]:
    """The ``n`` of every row of table t in the snapshot's dump, restored by
    restic itself (independently of dockerops)."""
    subprocess.run(
        ["restic", "restore", snapshot, "--target", str(into)],
        env=restic_env(restic_repo["path"], restic_repo["password_file"]),
        check=True,
        capture_output=True,
    )
    lines = (into / str(dump_dir).lstrip("/") / f"{DB}.sql").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("COPY public.t (n, at)"))
    end = lines.index("\\.", start)
    return sorted(int(line.split("\t")[0]) for line in lines[start + 1 : end])


def test_exec_dump_while_a_client_inserts_then_drop_restore_and_load(
    salt,
    docker_client,
    postgres_image,
    service_name,
    host_root,
    repo,  # noqa: F811
):
    pillar = pg_pillar(
        service_name,
        postgres_image,
        host_root,
        repo,
        consistency="exec",
        exec=DUMP,
        restore_exec=LOAD,
        paths=["/dump"],
    )
    container = deploy(salt, pillar, service_name, docker_client)
    started = time.time()
    client = docker_client.api.exec_create(container.id, ["sh", "-c", CLIENT])
    docker_client.api.exec_start(client["Id"], detach=True)
    try:
        wait_for(lambda: len(rows(container)) >= 20, 20, "the client inserts rows")
        before = len(rows(container))

        out = salt.modules.dockerops.backup(service_name)
        assert out["result"] is True, out
        assert any("ran the backup command" in step for step in out["steps"]), out["steps"]
        snapshot = out["snapshot"]
        healthy(docker_client, service_name, 1)
        after_backup = len(rows(container))
        # More rows after the backup, then the client stops.
        wait_for(lambda: len(rows(container)) >= after_backup + 20, 20, "more rows")
    finally:
        container.exec_run(["touch", "/tmp/stop-client"])
    wait_for(lambda: not docker_client.api.exec_inspect(client["Id"])["Running"], 20, "client ends")
    assert docker_client.api.exec_inspect(client["Id"])["ExitCode"] == 0
    final = rows(container)

    dumped = dump_rows(repo, snapshot, host_root / "pg" / "dump", repo["tmp"] / "independent")
    # The dump was taken inside the backup, while the client kept inserting.
    assert before <= len(dumped) < after_backup < len(final), (before, after_backup)
    assert dumped == list(range(1, len(dumped) + 1))

    sql(container, "DROP TABLE t")  # the damage
    restore_at = time.time()
    out = salt.modules.dockerops.restore(service_name, id=snapshot)
    assert out["result"] is True, out
    assert list(out["changes"]["restored"]) == [str(host_root / "pg" / "dump")]
    healthy(docker_client, service_name, 1)
    container = replica(docker_client, service_name)
    run(container, *postgres.HEALTH_TEST[1:])  # pg_isready
    log = logs_since(container, restore_at)
    assert "database system was shut down at" in log, log[-4000:]
    assert_no_crash_recovery(log)
    # The dump back in place is the snapshot's, byte for byte.
    independent = repo["tmp"] / "independent" / str(host_root / "pg" / "dump").lstrip("/")
    assert (host_root / "pg" / "dump" / f"{DB}.sql").read_bytes() == (
        independent / f"{DB}.sql"
    ).read_bytes()
    # backup:restore_exec loaded the dump into the running cluster once healthy.
    assert any("ran the restore command" in step for step in out["steps"]), out["steps"]
    assert rows(container) == dumped
    assert_no_crash_recovery(logs_since(container, started))


def test_stop_shuts_postgres_down_fast_and_its_raw_data_restores_without_recovery(
    salt,
    docker_client,
    postgres_image,
    service_name,
    host_root,
    repo,  # noqa: F811
):
    pillar = pg_pillar(service_name, postgres_image, host_root, repo, consistency="stop")
    container = deploy(salt, pillar, service_name, docker_client)
    deployed_at = time.time()
    # A process `docker exec` leaves orphaned, then killed by a signal: reaped
    # by Docker's init, not by the postmaster (which would take it for a
    # crashed server process and run crash recovery).
    run(container, "sh", "-c", 'sh -c "sleep 0.5; kill -KILL \\$\\$" >/dev/null 2>&1 & exit 0')
    sql(container, "INSERT INTO t (n) SELECT generate_series(1, 500)")
    # A connected client: a smart shutdown (SIGTERM) would wait for it until
    # Docker's grace period ends in a SIGKILL.
    session = docker_client.api.exec_create(
        container.id,
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-d", DB, "-c", "SELECT pg_sleep(60)"],
    )
    docker_client.api.exec_start(session["Id"], detach=True)
    waiting = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
    )
    wait_for(lambda: sql(container, waiting) == "1", 10, "the client is connected")
    backup_at = time.time()
    assert_no_crash_recovery(logs_since(container, deployed_at))

    out = salt.modules.dockerops.backup(service_name)
    assert out["result"] is True, out
    assert out["plan"]["stops"] == "one replica"
    stopped = [step for step in out["steps"] if step.startswith("stopped ")]
    assert stopped and not any("killed" in step for step in stopped), out["steps"]
    healthy(docker_client, service_name, 1)
    log = logs_since(container, backup_at)
    assert "received fast shutdown request" in log, log[-4000:]
    assert "database system is shut down" in log
    assert "database system was shut down at" in log  # the next start: a clean one
    assert_no_crash_recovery(log)
    snapshot = out["snapshot"]

    sql(container, "INSERT INTO t (n) SELECT generate_series(501, 700)")
    sql(container, "DROP TABLE t")  # the damage
    restore_at = time.time()
    out = salt.modules.dockerops.restore(service_name, id=snapshot)
    assert out["result"] is True, out
    assert sorted(out["changes"]["restored"]) == sorted(
        str(host_root / "pg" / sub) for sub in ("data", "dump")
    )
    healthy(docker_client, service_name, 1)
    container = replica(docker_client, service_name)
    log = logs_since(container, restore_at)
    assert "database system was shut down at" in log, log[-4000:]
    assert_no_crash_recovery(log)
    assert rows(container) == list(range(1, 501))
