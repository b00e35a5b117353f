"""dockerops.restic: what restic 0.14 says, read; what it is told, checked.

The stderr texts below were collected from restic 0.14.0 (Debian bookworm's)
run against real repositories: closed ports, a wrong password, a 3 MiB tmpfs,
a repository locked by a running backup, a pack file with flipped bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from dockerops.restic import (
    INCOMPLETE_EXIT,
    Restic,
    ResticError,
    ResticRun,
    Snapshot,
    classify,
    fatal_lines,
    host_executor,
    show_location,
    tag_args,
)

UNREACHABLE_REST = (
    'Fatal: unable to open config file: client.Head: Head "http://127.0.0.1:1/config": '
    "dial tcp 127.0.0.1:1: connect: connection refused\n"
    "Is there a repository at the following location?\n"
    "rest:http://127.0.0.1:1/\n"
)
UNREACHABLE_SFTP = (
    "Fatal: unable to open repository at sftp:nobody@127.0.0.1:1/x: unable to start the "
    "sftp session, error: read |0: file already closed\n"
)
WRONG_PASSWORD = "Fatal: wrong password or no key found\n"
NO_SPACE = (
    "Fatal: unable to save snapshot: write /srv/small/repo/data/90/906e5160dc0044079ba2ec2e2fc"
    "2093a2686874394abbb5b8bfd61b6bab97d72-tmp-3165278997: no space left on device\n"
)
LOCKED = (
    "unable to create lock in backend: repository is already locked by PID 19686 on vm by "
    "root (UID 0, GID 0)\n"
    "lock was created at 2026-12-02 07:58:19 (1.574237089s ago)\n"
    "storage ID 20aa6e31\n"
    "the `unlock` command can be used to remove stale locks\n"
)
NOT_FOUND = 'invalid id "deadbeef": no matching ID found for prefix "deadbeef"\n'
DAMAGED_RESTORE = (
    "restoring <Snapshot 1420e21c of [/srv/data] at 2026-12-02 07:56:15 +0000 UTC by "
    "root@vm> to t\n"
    "ignoring error for /data/a: ciphertext verification failed\n"
    "ignoring error for /data/a: UtimesNano: no such file or directory\n"
    "Fatal: There were 2 errors\n"
)
DAMAGED_CHECK = (
    "using temporary cache in /tmp/restic-check-cache-1680916746\n"
    "create exclusive lock for repository\nload indexes\ncheck all packs\n"
    "check snapshots, trees and blobs\n"
    "[0:00] 100.00%  1 / 1 snapshots\n\nread all data\n"
    "Pack ID does not match, want 92a15e535e622f3219fcf83b25b65319fd8834aed0b3449c233a8f94e"
    "e61946f, got d646197f709dd16c6b19fc5c0f5c9e81465c86799ee9a5aff4cb9385f9db3acb\n"
    "[0:00] 100.00%  2 / 2 packs\n\n"
    "Fatal: repository contains errors\n"
)
UNINITIALIZED = (
    "Fatal: unable to open config file: stat /srv/none/config: no such file or directory\n"
    "Is there a repository at the following location?\n/srv/none\n"
)
NO_TARGETS = (
    "/srv/nope does not exist, skipping\nFatal: all target directories/files do not exist\n"
)


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (UNREACHABLE_REST, "unreachable"),
        (UNREACHABLE_SFTP, "unreachable"),
        (WRONG_PASSWORD, "password"),
        (NO_SPACE, "no_space"),
        (LOCKED, "locked"),
        (NOT_FOUND, "not_found"),
        (DAMAGED_RESTORE, "damaged"),
        (DAMAGED_CHECK, "damaged"),
        (UNINITIALIZED, "uninitialized"),
        (NO_TARGETS, "failed"),
        ("", "failed"),
    ],
)
def test_classify_real_restic_errors(stderr, kind):
    found, meaning = classify(stderr)
    assert found == kind
    assert meaning and meaning == classify(stderr.upper())[1]  # case does not matter


def test_fatal_lines_quote_the_errors_not_the_progress():
    quoted = fatal_lines(DAMAGED_CHECK)
    assert "Pack ID does not match" in quoted and "Fatal: repository contains errors" in quoted
    assert "load indexes" not in quoted and "100.00%" not in quoted
    assert fatal_lines("just progress\n") == "just progress"
    assert len(fatal_lines("error " + "x" * 1000)) == 300


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        (
            "rest:https://user:s3cret@backup.example:8000/repo",
            "rest:https://***@backup.example:8000/repo",
        ),
        ("rest:https://backup.example:8000/repo", "rest:https://backup.example:8000/repo"),
        ("sftp:backup@host:/srv/restic", "sftp:backup@host:/srv/restic"),
        ("/srv/backups/restic", "/srv/backups/restic"),
    ],
)
def test_show_location_hides_url_credentials(location, shown):
    assert show_location(location) == shown


def test_tag_args_one_flag_per_tag():
    assert tag_args({"service": "web", "image": "reg:5000/web:1.0"}) == [
        "--tag",
        "service=web",
        "--tag",
        "image=reg:5000/web:1.0",
    ]


@pytest.mark.parametrize(
    "tags",
    [
        {"service": "web,minion=other"},  # a comma would make two tags (or an OR list)
        {"a,b": "c"},
        {"config": "v1\nminion=x"},
        {"config": "v1\x00"},
        {"config": "v1\x7f"},
    ],
)
def test_tag_args_refuse_commas_and_control_characters(tags):
    with pytest.raises(ValueError, match="comma or control character"):
        tag_args(tags)


def test_snapshot_from_json():
    raw = {
        "time": "2024-01-03T10:00:00Z",
        "parent": "37e79082" + "0" * 56,
        "tree": "36398fe8" + "0" * 56,
        "paths": ["/srv/data"],
        "hostname": "h1",
        "username": "root",
        "tags": ["service=a", "minion=h1", "image=reg:5000/a:1=2", "bare"],
        "id": "e162a8d71924df521c5d08c24dda8bda8c6fba6e846fef91e0db872e33a13fa5",
        "short_id": "e162a8d7",
    }
    snap = Snapshot.from_json(raw)
    assert snap.id == raw["id"] and snap.short_id == "e162a8d7"
    assert snap.tags == {"service": "a", "minion": "h1", "image": "reg:5000/a:1=2", "bare": ""}
    assert snap.paths == ["/srv/data"] and snap.hostname == "h1"
    assert snap.parent == raw["parent"]
    # forget's "reasons" and older restics leave fields out or null.
    bare = Snapshot.from_json({"id": "abcdef0123456789", "tags": None, "paths": None})
    assert bare.short_id == "abcdef01" and bare.tags == {} and bare.paths == [] and bare.time == ""


class Recorder:
    """An executor that answers from a script and records what it was asked."""

    def __init__(self, *answers: ResticRun) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[str], dict[str, str], str]] = []

    def __call__(
        self, args: list[str], env: Mapping[str, str], password: str, timeout: float | None
    ) -> ResticRun:
        self.calls.append((list(args), dict(env), password))
        return self.answers.pop(0)


def snap_json(short: str, when: str, host: str = "m1") -> dict[str, object]:
    return {
        "time": when,
        "paths": ["/srv/data"],
        "hostname": host,
        "tags": ["service=web", f"minion={host}"],
        "id": short + "0" * 56,
        "short_id": short,
    }


# restic 0.14's forget --json --prune: the JSON, then prune's text report on stdout.
FORGET_GROUPS = [
    {
        "tags": None,
        "host": "m1",
        "paths": None,
        "keep": [snap_json("e162a8d7", "2024-01-03T10:00:00Z")],
        "remove": [
            snap_json("37e79082", "2024-01-02T10:00:00Z"),
            snap_json("e2440302", "2024-01-01T10:00:00Z"),
        ],
        "reasons": [{"snapshot": {"time": "2024-01-03T10:00:00Z"}, "matches": ["last snapshot"]}],
    }
]
PRUNE_REPORT = (
    "loading indexes...\nloading all snapshots...\n"
    "finding data that is still in use for 2 snapshots\n[0:00] 100.00%  2 / 2 snapshots\n\n"
    "searching used packs...\ncollecting packs for deletion and repacking\n"
    "[0:00] 100.00%  2 / 2 packs processed\n\n\nto repack:             0 blobs / 0 B\n"
    "this removes:          0 blobs / 0 B\nremaining:             3 blobs / 98.188 KiB\n\ndone\n"
)


def test_forget_reads_its_json_when_prune_output_follows():
    out = (json.dumps(FORGET_GROUPS) + "\n" + PRUNE_REPORT).encode()
    executor = Recorder(ResticRun(0, out, b""))
    kept, removed = Restic("/srv/r", "pw", executor).forget(
        ["--keep-last=1"], {"service": "web"}, "m1"
    )
    assert [s.short_id for s in kept] == ["e162a8d7"]
    assert [s.short_id for s in removed] == ["37e79082", "e2440302"]
    args = executor.calls[0][0]
    # Scoped to the service's tag and this host, as one group; pruned.
    assert args[:5] == ["forget", "--json", "--host", "m1", "--group-by"]
    assert args[args.index("--tag") + 1] == "service=web"
    assert "--keep-last=1" in args and "--prune" in args and "--dry-run" not in args


def test_forget_dry_run_and_nothing_matched():
    executor = Recorder(ResticRun(0, b"", b""))  # restic prints nothing when no snapshot matched
    kept, removed = Restic("/srv/r", "pw", executor).forget(
        ["--keep-daily=2"], {"service": "web"}, "m1", dry_run=True
    )
    assert (kept, removed) == ([], [])
    assert "--dry-run" in executor.calls[0][0] and "--prune" not in executor.calls[0][0]
    with pytest.raises(ValueError, match="at least one --keep"):
        Restic("/srv/r", "pw", executor).forget([], {"service": "web"}, "m1")


def test_forget_unreadable_output_is_an_error():
    executor = Recorder(ResticRun(0, b'[{"keep": [', b""))
    with pytest.raises(ResticError, match="unreadable output"):
        Restic("/srv/r", "pw", executor).forget(["--keep-last=1"], {"service": "web"}, "m1")


def test_run_errors_say_the_kind_and_hide_url_credentials():
    location = "rest:https://user:hunter2-secret@backup.example/repo"
    executor = Recorder(
        ResticRun(1, b"", UNREACHABLE_REST.replace("http://127.0.0.1:1", location[5:]).encode())
    )
    with pytest.raises(ResticError) as caught:
        Restic(location, "the password", executor).snapshots({"service": "web"})
    assert caught.value.kind == "unreachable"
    message = str(caught.value)
    assert "the repository cannot be reached" in message
    assert "https://***@backup.example/repo" in message
    # The URL goes to restic through the environment, never its command line.
    args, env, password = executor.calls[0]
    assert env == {"RESTIC_REPOSITORY": location} and password == "the password"
    assert not any("backup.example" in arg or "password" in arg for arg in args)


def test_a_lock_is_unlocked_once_stale_ones_only_then_retried():
    snapshots = json.dumps([snap_json("e162a8d7", "2024-01-03T10:00:00Z")]).encode()
    executor = Recorder(
        ResticRun(1, b"", LOCKED.encode()), ResticRun(0, b"", b""), ResticRun(0, snapshots, b"")
    )
    found = Restic("/srv/r", "pw", executor).snapshots({"service": "web"}, "m1")
    assert [s.short_id for s in found] == ["e162a8d7"]
    assert [call[0][0] for call in executor.calls] == ["snapshots", "unlock", "snapshots"]
    assert executor.calls[1][0] == ["unlock"]  # never --remove-all
    # Still locked after the unlock (a live holder): the error says so.
    executor = Recorder(
        ResticRun(1, b"", LOCKED.encode()),
        ResticRun(0, b"", b""),
        ResticRun(1, b"", LOCKED.encode()),
    )
    with pytest.raises(ResticError) as caught:
        Restic("/srv/r", "pw", executor).snapshots({"service": "web"})
    assert caught.value.kind == "locked"


def test_backup_reads_the_summary_and_marks_an_incomplete_snapshot():
    summary = {
        "message_type": "summary",
        "files_new": 1,
        "files_changed": 0,
        "files_unmodified": 2,
        "data_added": 100708,
        "total_files_processed": 3,
        "total_bytes_processed": 100000,
        "total_duration": 0.22,
        "snapshot_id": "1420e21c",
    }
    error = {"message_type": "error", "error": {}, "during": "archival", "item": "/srv/data/x"}
    lines = [json.dumps({"message_type": "status", "percent_done": 1}), json.dumps(error)]
    out = "\n".join([*lines, json.dumps(summary)]).encode()
    executor = Recorder(
        ResticRun(INCOMPLETE_EXIT, out, b"Warning: at least one source file could not be read\n")
    )
    done = Restic("/srv/r", "pw", executor).backup(
        ["/srv/data"], {"service": "web"}, "m1", when="2024-01-01 10:00:00"
    )
    assert done.snapshot_id == "1420e21c" and done.incomplete and done.total_files == 3
    assert done.errors and done.errors[0].startswith("/srv/data/x")
    args = executor.calls[0][0]
    assert args[args.index("--time") + 1] == "2024-01-01 10:00:00"
    assert args[args.index("--") + 1 :] == ["/srv/data"]  # paths after "--"
    # Exit 0 without a summary (nothing saved): an error, not a snapshot.
    executor = Recorder(ResticRun(0, b"", NO_TARGETS.encode()))
    with pytest.raises(ResticError, match="no snapshot"):
        Restic("/srv/r", "pw", executor).backup(["/srv/nope"], {"service": "web"}, "m1")


def test_host_executor_hands_the_password_over_a_pipe(tmp_path):
    """Run a shell in restic's place: the password arrives on the fd named by
    RESTIC_PASSWORD_FILE, and is neither in its arguments nor its environment."""
    secret = "pipe-only password 61f2"
    script = tmp_path / "fake-restic"
    script.write_text(
        '#!/bin/sh\ncat "$RESTIC_PASSWORD_FILE"\necho "ARGS $*"\nenv\n'
        "cat /proc/$$/cmdline | tr '\\0' ' '\n"
    )
    script.chmod(0o755)
    done = host_executor(str(script))(
        ["snapshots", "--json"], {"RESTIC_REPOSITORY": "/r"}, secret, 10
    )
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert lines[0] == secret
    rest = "\n".join(lines[1:])
    assert secret not in rest
    assert "RESTIC_PASSWORD_FILE=/dev/fd/" in rest and "RESTIC_REPOSITORY=/r" in rest
    assert "ARGS snapshots --json" in rest


def test_host_executor_without_restic_says_how_to_install():
    with pytest.raises(ResticError, match="apt-get install restic"):
        host_executor("/nonexistent/restic")(["version"], {}, "pw", 5)
