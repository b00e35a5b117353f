"""File logs (``logs: {path:}``) against the real dockerd, Debian's rsyslog and
logrotate: each slot's host directory is mounted, made without following a
symlink, and outlives the container; the formula's rsyslog imfile input picks
up a line the app wrote, its Filebeat input keeps to Filebeat's documented
filestream schema, and logrotate takes its rule (and never follows a link a
container planted)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.functional.helpers import containers, service_pillar
from tests.support.rsyslog import Rsyslog

pytestmark = pytest.mark.docker

APP_LOGS = "/var/log/app"

# Filebeat's documented filestream input options (elastic/beats
# filebeat/docs/inputs/input-filestream*.asciidoc, input-common-options):
# name -> the YAML type it takes.
FILESTREAM_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "type": str,
    "id": str,
    "enabled": bool,
    "paths": list,
    "tags": list,
    "fields": dict,
    "fields_under_root": bool,
    "processors": list,
    "pipeline": str,
    "keep_null": bool,
    "index": str,
    "encoding": str,
    "exclude_lines": list,
    "include_lines": list,
    "buffer_size": int,
    "message_max_bytes": int,
    "parsers": list,
    "prospector.scanner.recursive_glob": bool,
    "prospector.scanner.exclude_files": list,
    "prospector.scanner.include_files": list,
    "prospector.scanner.symlinks": bool,
    "prospector.scanner.resend_on_touch": bool,
    "prospector.scanner.check_interval": str,
    "prospector.scanner.fingerprint": dict,
    "ignore_older": str,
    "ignore_inactive": str,
    "take_over": bool,
    "close.on_state_change.inactive": str,
    "close.on_state_change.renamed": bool,
    "close.on_state_change.removed": bool,
    "close.reader.on_eof": bool,
    "close.reader.after_interval": str,
    "clean_inactive": str,
    "clean_removed": bool,
    "harvester_limit": int,
    "file_identity": dict,
}


def file_log_pillar(name: str, repository: str, root: Path, **fields: Any) -> dict[str, Any]:
    pillar = service_pillar(name, repository, logs={"path": APP_LOGS}, **fields)
    pillar["dockerops"]["allowed_host_paths"] = [str(root)]
    pillar["dockerops"]["logs"] = {
        "root": str(root / "logs"),
        "filebeat_dir": str(root / "etc" / "filebeat" / "inputs.d"),
        "rsyslog_dir": str(root / "etc" / "rsyslog.d"),
        "logrotate_dir": str(root / "etc" / "logrotate.d"),
    }
    return pillar


def write_in(container: Any, line: str, name: str = "error.log") -> None:
    ran = container.exec_run(["sh", "-c", f'echo "{line}" >> {APP_LOGS}/{name}'])
    assert ran.exit_code == 0, ran.output


def test_each_slot_s_log_directory_is_mounted_and_outlives_the_container(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    host_root: Path,
) -> None:
    salt.set_pillar(file_log_pillar(service_name, demo_images["repository"], host_root, replicas=2))

    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    for name, container in containers(docker_client, service_name).items():
        write_in(container, f"error in {name}")
    slots = host_root / "logs" / service_name
    assert sorted(p.name for p in slots.iterdir()) == ["1", "2"]
    assert (slots / "1" / "error.log").read_text() == f"error in {service_name}-1\n"
    assert (slots / "2" / "error.log").read_text() == f"error in {service_name}-2\n"

    removed = salt.modules.dockerops.remove(service_name)
    assert removed["result"] is True, removed
    assert containers(docker_client, service_name) == {}
    assert (slots / "1" / "error.log").read_text() == f"error in {service_name}-1\n"


@pytest.mark.parametrize("where", ["service", "slot"])
def test_a_symlink_where_a_log_directory_goes_is_refused_not_followed(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    host_root: Path,
    tmp_path: Path,
    where: str,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    service_dir = host_root / "logs" / service_name
    if where == "service":
        service_dir.parent.mkdir(parents=True)
        service_dir.symlink_to(outside)
    else:
        service_dir.mkdir(parents=True)
        (service_dir / "1").symlink_to(outside)
    salt.set_pillar(file_log_pillar(service_name, demo_images["repository"], host_root))

    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is False
    assert "is a symlink: dockerops does not follow or replace it" in ret.comment, ret.comment
    assert list(outside.iterdir()) == []
    assert containers(docker_client, service_name) == {}


def test_declaring_file_logs_recreates_the_replica_and_status_shows_it_until_then(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    host_root: Path,
) -> None:
    without = file_log_pillar(service_name, demo_images["repository"], host_root)
    del without["dockerops"]["services"][service_name]["logs"]
    salt.set_pillar(without)
    assert salt.states.dockerops.running(name=service_name).result is True
    (before,) = containers(docker_client, service_name).values()
    assert '"logs"' not in before.labels["io.dockerops.inputs"]

    salt.set_pillar(file_log_pillar(service_name, demo_images["repository"], host_root))
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert replica["old_log_settings"] is True
    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    (after,) = containers(docker_client, service_name).values()
    assert after.id != before.id
    slot = after.labels["io.dockerops.slot"]
    bind = f"{host_root}/logs/{service_name}/{slot}:{APP_LOGS}:rw"
    assert bind in after.attrs["HostConfig"]["Binds"]
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert (replica["old_log_settings"], replica["health"]) == (False, "healthy")


@pytest.fixture
def rendered(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    host_root: Path,
) -> Iterator[dict[str, Path]]:
    """A running service with file logs and the formula's files for it, rendered by Salt."""
    salt.set_pillar(file_log_pillar(service_name, demo_images["repository"], host_root))
    ret = salt.modules.state.sls("dockerops")
    assert not ret.errors, ret.errors
    failed = {state.id: state.comment for state in ret if state.result is not True}
    assert failed == {}
    etc = host_root / "etc"
    yield {
        "filebeat": etc / "filebeat" / "inputs.d" / f"dockerops-{service_name}.yml",
        "rsyslog": etc / "rsyslog.d" / f"dockerops-{service_name}.conf",
        "rsyslog_module": etc / "rsyslog.d" / "00-dockerops-imfile.conf",
        "logrotate": etc / "logrotate.d" / f"dockerops-{service_name}",
    }


def test_the_formula_s_rsyslog_input_picks_up_a_line_the_app_wrote(
    rendered: dict[str, Path],
    docker_client: docker.DockerClient,
    service_name: str,
    tmp_path: Path,
) -> None:
    includes = "".join(
        f'include(file="{rendered[kind]}")\n' for kind in ("rsyslog_module", "rsyslog")
    )
    server = Rsyslog(tmp_path / "rsyslog", "udp", extra_config=includes).start()
    try:
        (container,) = containers(docker_client, service_name).values()
        write_in(container, "app error: disk on fire")

        line = server.wait_for("app error: disk on fire")
    finally:
        server.stop()

    assert f" dockerops-{service_name}-1:" in line, line


def test_the_formula_s_filebeat_input_keeps_to_the_filestream_schema(
    rendered: dict[str, Path], service_name: str, host_root: Path, minion_opts: dict[str, Any]
) -> None:
    inputs = yaml.safe_load(rendered["filebeat"].read_text())

    assert isinstance(inputs, list)
    slots = [1, 2]  # one replica and its start-first spare: it may run in either
    assert len(inputs) == len(slots)
    for slot, item in zip(slots, inputs, strict=True):
        unknown = sorted(set(item) - set(FILESTREAM_OPTIONS))
        assert unknown == []
        wrong = {k: v for k, v in item.items() if not isinstance(v, FILESTREAM_OPTIONS[k])}
        assert wrong == {}
        assert item["type"] == "filestream"
        assert item["paths"] == [f"{host_root}/logs/{service_name}/{slot}/*.log"]
        assert item["prospector.scanner.symlinks"] is False
        assert item["fields"] == {
            "service": service_name,
            "replica": slot,
            "container": f"{service_name}-{slot}",
            "environment": "integration",
            "minion": minion_opts["id"],
        }
    ids = [item["id"] for item in inputs]
    assert len(set(ids)) == len(ids)
    assert all(service_name in i for i in ids)


def test_logrotate_takes_the_formula_s_rule_and_never_follows_a_planted_link(
    rendered: dict[str, Path],
    docker_client: docker.DockerClient,
    service_name: str,
    host_root: Path,
    tmp_path: Path,
) -> None:
    state = tmp_path / "logrotate.state"
    checked = subprocess.run(
        ["logrotate", "-d", "-s", str(state), str(rendered["logrotate"])],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "error" not in checked.stderr.lower(), checked.stderr

    # A container links a host file into its log directory; a forced rotation
    # copies and truncates the real log, never the link's target.
    victim = tmp_path / "victim"
    victim.write_text("not the container's\n")
    (container,) = containers(docker_client, service_name).values()
    write_in(container, "before rotation")
    slot_dir = host_root / "logs" / service_name / "1"
    (slot_dir / "evil.log").symlink_to(victim)
    rotated = subprocess.run(
        ["logrotate", "-f", "-s", str(state), str(rendered["logrotate"])],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert rotated.returncode == 0, rotated.stderr
    assert victim.read_text() == "not the container's\n"
    assert (slot_dir / "error.log").read_text() == ""  # copytruncate: the app keeps its file
    assert (slot_dir / "error.log.1").read_text() == "before rotation\n"


def test_clean_removes_what_the_formula_wrote_and_keeps_the_logs(
    rendered: dict[str, Path],
    salt: Any,
    docker_client: docker.DockerClient,
    service_name: str,
    host_root: Path,
) -> None:
    (container,) = containers(docker_client, service_name).values()
    write_in(container, "kept")

    ret = salt.modules.state.sls("dockerops.clean")

    assert not ret.errors, ret.errors
    assert {state.id: state.comment for state in ret if state.result is not True} == {}
    for kind in ("filebeat", "rsyslog", "logrotate"):
        assert not rendered[kind].exists()
    assert containers(docker_client, service_name) == {}
    assert (host_root / "logs" / service_name / "1" / "error.log").read_text() == "kept\n"
