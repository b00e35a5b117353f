"""Logging drivers against the real dockerd: the option tables agree with Docker,
a gelf replica's stdout reaches a GELF receiver, a syslog replica's reaches
Debian's rsyslog, blocking set-ups are warned of, and a logging change
recreates the replica while status shows who still runs the old settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from dockerops import logdrivers
from dockerops.errors import SpecError
from dockerops.spec import load_service
from tests.functional.helpers import containers, service_pillar
from tests.support.gelf import GelfReceiver
from tests.support.rsyslog import Rsyslog

pytestmark = pytest.mark.docker

START_LINE = "listening on :8080"

# A value Docker takes for each option, and the options each needs beside it.
SAMPLES = {
    "max-size": "10m",
    "max-file": "3",
    "compress": "true",
    "tag": "{{.Name}}",
    "labels": "team",
    "labels-regex": "^team$",
    "env": "APP_VERSION",
    "env-regex": "^APP_",
    "syslog-address": "udp://127.0.0.1:9",
    "syslog-facility": "daemon",
    "syslog-format": "rfc5424micro",
    "syslog-tls-ca-cert": "/etc/ssl/certs/ca-certificates.crt",
    "syslog-tls-cert": "/etc/ssl/certs/ca-certificates.crt",
    "syslog-tls-key": "/etc/ssl/certs/ca-certificates.crt",
    "syslog-tls-skip-verify": "true",
    "gelf-address": "udp://127.0.0.1:9",
    "gelf-compression-type": "zlib",
    "gelf-compression-level": "2",
    "gelf-tcp-max-reconnect": "3",
    "gelf-tcp-reconnect-delay": "1",
    "fluentd-address": "127.0.0.1:24224",
    "fluentd-async": "true",
    "fluentd-async-connect": "true",
    "fluentd-async-reconnect-interval": "100ms",
    "fluentd-buffer-limit": "1000",
    "fluentd-max-retries": "3",
    "fluentd-request-ack": "true",
    "fluentd-retry-wait": "1s",
    "fluentd-sub-second-precision": "true",
    "fluentd-write-timeout": "1s",
}
NEEDS = {
    "max-buffer-size": {"mode": "non-blocking"},
    "gelf-tcp-max-reconnect": {"gelf-address": "tcp://127.0.0.1:9"},
    "gelf-tcp-reconnect-delay": {"gelf-address": "tcp://127.0.0.1:9"},
    "syslog-tls-ca-cert": {"syslog-address": "tcp+tls://127.0.0.1:9"},
    "syslog-tls-cert": {"syslog-address": "tcp+tls://127.0.0.1:9"},
    "syslog-tls-key": {"syslog-address": "tcp+tls://127.0.0.1:9"},
    "syslog-tls-skip-verify": {"syslog-address": "tcp+tls://127.0.0.1:9"},
}
DRIVER_NEEDS = {"gelf": {"gelf-address": "udp://127.0.0.1:9"}}


def _created(client: docker.DockerClient, image: str, driver: str, options: dict[str, str]) -> str:
    """'' when Docker creates a container with this log config, else its refusal."""
    host_config = client.api.create_host_config(
        log_config=docker.types.LogConfig(type=driver, config=options)
    )
    try:
        created = client.api.create_container(image=image, host_config=host_config)
    except docker.errors.APIError as err:
        return str(err.explanation)
    client.api.remove_container(created["Id"], force=True)
    return ""


def test_every_option_of_the_tables_is_one_docker_takes(
    docker_client: docker.DockerClient, demo_images: dict[str, str]
) -> None:
    """Each driver's option, with a sample value, passes dockerops' check and
    Docker's own (at create); an option Docker refuses for the driver is
    refused by dockerops first."""
    samples = {**SAMPLES, "mode": "non-blocking", "max-buffer-size": "4m"}
    refused = {}
    for driver, known in logdrivers.DRIVER_OPTIONS.items():
        newer = logdrivers.NEWER_ENGINE_OPTIONS.get(driver, ())
        for option in (*known, *logdrivers.DELIVERY):
            options = {**DRIVER_NEEDS.get(driver, {}), **NEEDS.get(option, {})}
            options[option] = samples[option]
            spec = load_service(
                service_pillar("svc", "img", logging={"driver": driver, "options": options}), "svc"
            )
            assert spec.logging.options == options
            if option not in newer:
                refused[(driver, option)] = _created(
                    docker_client, demo_images["1.0"], driver, options
                )
    assert {key: why for key, why in refused.items() if why} == {}
    # The other way round: options Docker refuses for a driver, dockerops refuses too.
    for driver, option in [("local", "tag"), ("local", "labels"), ("journald", "max-size")]:
        options = {option: SAMPLES.get(option, "x")}
        assert "unknown log opt" in _created(docker_client, demo_images["1.0"], driver, options)
        with pytest.raises(SpecError, match=f"{option}: unknown option for logging driver"):
            load_service(
                service_pillar("svc", "img", logging={"driver": driver, "options": options}), "svc"
            )


# A line longer than Docker's GELF chunk (1420 bytes), to make it send chunks.
LONG_LINE = 'echo "long-$(yes 0123456789 | head -n 400 | tr -d "\\n")-end"; exec /bin/serve'


@pytest.mark.parametrize("compression", ["gzip", "zlib", "none"])
def test_a_gelf_replica_s_stdout_reaches_a_gelf_receiver_with_its_tag_and_fields(
    salt: Any, demo_images: dict[str, str], service_name: str, compression: str
) -> None:
    with GelfReceiver() as gelf:
        salt.set_pillar(
            service_pillar(
                service_name,
                demo_images["repository"],
                labels={"team": "web"},
                command=LONG_LINE,
                logging={
                    "driver": "gelf",
                    "options": {
                        "gelf-address": gelf.address,
                        "gelf-compression-type": compression,
                        "tag": f"{service_name}/{{{{.Name}}}}",
                        "labels": "team",
                        "env": "APP_VERSION",
                    },
                },
            )
        )

        ret = salt.states.dockerops.running(name=service_name)
        assert ret.result is True, ret.comment
        assert "warnings" not in ret.full_return  # UDP never blocks the container

        started = gelf.wait_for(START_LINE)
        long = gelf.wait_for("long-0123456789")

    assert started["short_message"].endswith(START_LINE)
    assert started["_tag"] == f"{service_name}/{service_name}-1"
    assert started["_container_name"] == f"{service_name}-1"
    assert (started["_team"], started["_APP_VERSION"]) == ("web", "1.0")
    assert started["_image_name"] == demo_images["1.0"]
    assert long["short_message"] == "long-" + "0123456789" * 400 + "-end"
    if compression == "none":
        assert gelf.chunked >= 1  # 4 KiB uncompressed: sent in chunks


@pytest.fixture
def rsyslog_tcp(tmp_path: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(tmp_path / "rsyslog", "tcp").start()
    yield server
    server.stop()


def test_syslog_over_tcp_reaches_rsyslog_is_warned_of_and_a_logging_change_recreates(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    rsyslog_tcp: Rsyslog,
) -> None:
    blocking = {"syslog-address": rsyslog_tcp.address, "tag": service_name}
    salt.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            logging={"driver": "syslog", "options": blocking},
        )
    )

    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    (warning,) = ret.full_return["warnings"]
    assert warning == (
        f"service {service_name}: logging driver syslog over tcp ({rsyslog_tcp.address}) "
        "blocks the container's writes while the receiver is slow or away; set mode: "
        "non-blocking (and max-buffer-size) so it drops lines instead"
    )
    line = rsyslog_tcp.wait_for(START_LINE)
    assert f" {service_name}[" in line or f" {service_name}:" in line, line
    (old,) = containers(docker_client, service_name).values()
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert replica["old_log_settings"] is False

    # Non-blocking: pillar changes, the running replica has the old settings...
    non_blocking = {**blocking, "mode": "non-blocking", "max-buffer-size": "4m"}
    salt.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            logging={"driver": "syslog", "options": non_blocking},
        )
    )
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert (replica["container"], replica["old_log_settings"]) == (old.name, True)
    assert salt.modules.dockerops.services()[service_name]["in_sync"] is False

    # ...until the state recreates it, health-gated, and no longer warns.
    ret = salt.states.dockerops.running(name=service_name)

    assert ret.result is True, ret.comment
    assert ret.changes, ret.comment
    assert "warnings" not in ret.full_return
    (new,) = containers(docker_client, service_name).values()
    assert new.id != old.id
    assert new.attrs["HostConfig"]["LogConfig"] == {"Type": "syslog", "Config": non_blocking}
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert (replica["old_log_settings"], replica["health"]) == (False, "healthy")
    # The new replica's start line arrives too (two in all).
    deadline = time.monotonic() + 20
    while rsyslog_tcp.text().count(START_LINE) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rsyslog_tcp.text().count(START_LINE) >= 2
