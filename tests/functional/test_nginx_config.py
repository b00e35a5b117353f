"""A real nginx (Debian's, built here) behind config directories: config.check,
proven signal reloads, and failure reports that carry the replica's log."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.functional.helpers import containers, http_get, state_return
from tests.support import nginx

pytestmark = pytest.mark.docker

CONF_D = "/etc/nginx/conf.d"


def site(body: str = "v1", health: str = "return 200 'ok';") -> str:
    return (
        "server {\n"
        "    listen 80;\n"
        f"    location = /healthz {{ {health} }}\n"
        f"    location / {{ return 200 '{body}\\n'; }}\n"
        "}\n"
    )


BROKEN = "server {\n    listen 80;\n    no_such_directive on;\n}\n"
UNHEALTHY = site("v2", health="return 503;")


def nginx_pillar(
    name: str,
    image: str,
    root: Path,
    port: int,
    contents: str,
    on_change: str = "signal:SIGHUP",
    check: str | None = "nginx -t",
) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    config: dict[str, Any] = {
        "path": CONF_D,
        "root": str(root / name / "config"),
        "on_change": on_change,
        "files": {"default.conf": {"contents": contents}},
    }
    if check is not None:
        config["check"] = check
    service = {
        "image": repository,
        "tag": tag,
        "replicas": 1,
        "ports": [{"container": 80, "host": port}],
        "config": config,
        "healthcheck": nginx.HEALTHCHECK,
        # Docker needs up to one interval more than interval x retries (plus the
        # probes' own time) to call a replica unhealthy: hold long enough to see it.
        "update": {"health_timeout": "20s", "min_healthy_time": "2500ms"},
    }
    return {
        "dockerops": {
            "environment": "integration",
            "allowed_host_paths": [str(root)],
            "services": {name: service},
        }
    }


def set_site(salt, pillar, service, contents):
    pillar["dockerops"]["services"][service]["config"]["files"]["default.conf"] = {
        "contents": contents
    }
    salt.set_pillar(pillar)
    salt.context.clear()  # a new state run


def running(salt, name):
    return state_return(salt.states.dockerops.running(name=name))


def config_managed(salt, name):
    return state_return(salt.states.dockerops.config_managed(name=name))


def data_link(root: Path, service: str) -> str:
    return os.readlink(root / service / "config" / "..data")


def loaded_version(salt, service):
    (replica,) = salt.modules.dockerops.status(service)[service]
    return replica["config_version"]


def sighups(docker_client, container_name) -> int:
    logs = docker_client.containers.get(container_name).logs().decode(errors="replace")
    return logs.count("signal 1 (SIGHUP) received")


def check_containers(docker_client, since: float) -> list[str]:
    """Config check containers created since ``since`` (from the daemon's events)."""
    events = docker_client.events(
        since=int(since),
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": "io.dockerops.check"},
    )
    return [e["Actor"]["ID"] for e in events]


@pytest.fixture
def deployed(salt, docker_client, nginx_image, service_name, host_root, free_ports):
    """Service ``service_name``: one nginx replica serving "v1", healthy."""

    def deploy(**fields: Any) -> tuple[dict[str, Any], int, str]:
        port = free_ports(3)
        pillar = nginx_pillar(service_name, nginx_image, host_root, port, site("v1"), **fields)
        salt.set_pillar(pillar)
        ret = running(salt, service_name)
        assert ret["result"] is True, ret["comment"]
        assert http_get(port, "/") == "v1\n"
        return pillar, port, ret["changes"]["config"]["version"]["new"]

    return deploy


def test_a_version_nginx_rejects_is_refused_before_any_replica_sees_it(
    salt, docker_client, deployed, service_name, host_root
):
    pillar, port, good = deployed()
    name = f"{service_name}-1"
    before = containers(docker_client, service_name)[name].attrs["State"]["StartedAt"]
    hups = sighups(docker_client, name)
    since = time.time()

    set_site(salt, pillar, service_name, BROKEN)
    ret = running(salt, service_name)
    assert ret["result"] is False
    assert "failed its check (nginx -t in" in ret["comment"]
    assert "[emerg]" in ret["comment"] and "no_such_directive" in ret["comment"]
    assert "nothing was signalled or restarted" in ret["comment"]
    # Nothing signalled or restarted; ..data, the status and the service as they were.
    assert data_link(host_root, service_name) == f"..{good}"
    assert sighups(docker_client, name) == hups
    assert containers(docker_client, service_name)[name].attrs["State"]["StartedAt"] == before
    assert loaded_version(salt, service_name) == good
    assert http_get(port, "/") == "v1\n"
    # config_managed shares the check: fails the same way, claims no change.
    managed = config_managed(salt, service_name)
    assert managed["result"] is False
    assert "[emerg]" in managed["comment"]
    assert managed["changes"] == {}
    assert data_link(host_root, service_name) == f"..{good}"
    # Each check ran in its own throwaway container, none left behind.
    assert len(check_containers(docker_client, since)) == 2
    assert not docker_client.containers.list(
        ignore_removed=True, all=True, filters={"label": "io.dockerops.check"}
    )


def test_a_passing_check_runs_once_per_version_and_config_managed_leaves_the_reload_to_running(
    salt, docker_client, deployed, service_name, host_root
):
    pillar, port, good = deployed()
    since = time.time()
    set_site(salt, pillar, service_name, site("v2"))
    managed = config_managed(salt, service_name)
    assert managed["result"] is True, managed["comment"]
    new = managed["changes"]["version"]["new"]
    assert "passed its check" in managed["comment"]
    # A signal service: written and checked, not yet current (running proves it).
    assert "is now version" not in managed["comment"]
    assert data_link(host_root, service_name) == f"..{good}"

    ret = running(salt, service_name)
    assert ret["result"] is True, ret["comment"]
    assert "passed its check" not in ret["comment"]  # not checked twice
    assert f"sent SIGHUP to {service_name}-1 (healthy" in ret["comment"]
    assert data_link(host_root, service_name) == f"..{new}"
    assert http_get(port, "/") == "v2\n"
    assert loaded_version(salt, service_name) == new
    assert len(check_containers(docker_client, since)) == 1

    salt.context.clear()
    assert config_managed(salt, service_name)["changes"] == {}
    again = running(salt, service_name)
    assert again["result"] is True and again["changes"] == {}, again


def test_a_reload_that_turns_the_replica_unhealthy_is_undone(
    salt, docker_client, deployed, service_name, host_root
):
    pillar, port, good = deployed()
    name = f"{service_name}-1"
    before = containers(docker_client, service_name)[name].id
    hups = sighups(docker_client, name)

    # Valid for nginx -t; only the reload shows it is bad (/healthz answers 503).
    set_site(salt, pillar, service_name, UNHEALTHY)
    ret = running(salt, service_name)
    assert ret["result"] is False
    assert f"{name} became unhealthy" in ret["comment"]
    # The report quotes the replica's own log: nginx took the signal and reloaded.
    assert f"last log lines of {name}:" in ret["comment"]
    assert "reconfiguring" in ret["comment"]
    # ..data back, the replica signalled again and healthy on the old config.
    assert data_link(host_root, service_name) == f"..{good}"
    assert sighups(docker_client, name) == hups + 2
    assert f"sent SIGHUP to {name} again (healthy)" in ret["comment"]
    assert ret["changes"]["rolled_back"] == [name]
    assert name not in ret["changes"]  # no reload claimed
    assert containers(docker_client, service_name)[name].id == before
    assert http_get(port, "/") == "v1\n"
    assert http_get(port, "/healthz") == "ok"
    # Never recorded as loaded.
    assert loaded_version(salt, service_name) == good


def test_a_failed_rolling_config_change_reports_the_removed_replacements_log(
    salt, docker_client, deployed, service_name, host_root
):
    pillar, port, good = deployed(on_change="rolling", check=None)
    name = f"{service_name}-1"
    before = containers(docker_client, service_name)[name].id

    set_site(salt, pillar, service_name, BROKEN)
    ret = running(salt, service_name)
    assert ret["result"] is False
    # The replacement (in the spare slot) crashed on the bad file and was removed;
    # its last log lines, which hold the cause, are in the report.
    assert f"last log lines of {service_name}-2:" in ret["comment"]
    assert "[emerg]" in ret["comment"] and "no_such_directive" in ret["comment"]
    assert set(containers(docker_client, service_name)) == {name}
    assert containers(docker_client, service_name)[name].id == before
    assert http_get(port, "/") == "v1\n"
    assert data_link(host_root, service_name) == f"..{good}"
