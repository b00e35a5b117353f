"""The formula gives a service its config state wherever its ``config`` comes from:
the service, ``dockerops:defaults``, or an environment's pillar file only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

pytestmark = pytest.mark.docker


def write_pillar(salt: Any, files: dict[str, dict[str, Any]]) -> None:
    """Pillar from several files, merged in order as the pillar top lists them
    (the example's common file, then an environment's)."""
    pillar_dir = Path(salt.opts["pillar_roots"]["base"][0])
    top = {"base": {"*": list(files)}}
    (pillar_dir / "top.sls").write_text(yaml.safe_dump(top))
    for name, data in files.items():
        (pillar_dir / f"{name}.sls").write_text("#!yaml\n" + yaml.safe_dump(data))
    salt.reload_all()


def config_from(name: str, root: Path) -> dict[str, Any]:
    return {
        "path": "/etc/app",
        "root": str(root / name / "config"),
        "files": {"app.conf": {"contents": "set outside the service\n"}},
    }


def layouts(name: str, repository: str, root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    service = {"image": repository, "tag": "1.0", "replicas": 1}
    common = {
        "environment": "integration",
        "allowed_host_paths": [str(root)],
        "services": {name: service},
    }
    return {
        "defaults": {
            "common": {"dockerops": {**common, "defaults": {"config": config_from(name, root)}}}
        },
        "environment-overlay": {
            "common": {"dockerops": common},
            "integration": {"dockerops": {"defaults": {"config": config_from(name, root)}}},
        },
    }


@pytest.mark.parametrize("layout", ["defaults", "environment-overlay"])
def test_config_outside_the_service_gets_its_state_and_its_mount(
    salt: Any,
    docker_client: docker.DockerClient,
    demo_images: dict[str, str],
    service_name: str,
    host_root: Path,
    layout: str,
) -> None:
    write_pillar(salt, layouts(service_name, demo_images["repository"], host_root)[layout])

    ret = salt.modules.state.sls("dockerops.services")

    assert not ret.errors, ret.errors
    by_id = {state.id: state for state in ret}
    config_id = f"dockerops-service-{service_name}-config-managed"
    running_id = f"dockerops-service-{service_name}-running"
    assert list(by_id) == [config_id, running_id]  # config first: running requires it
    assert by_id[config_id].result is True, by_id[config_id].comment
    assert by_id[running_id].result is True, by_id[running_id].comment
    written = host_root / service_name / "config" / "app.conf"
    assert written.read_text() == "set outside the service\n"
    (container,) = docker_client.containers.list(
        ignore_removed=True, filters={"label": f"io.dockerops.service={service_name}"}
    )
    mounted = container.exec_run(["cat", "/etc/app/app.conf"])
    assert (mounted.exit_code, mounted.output.decode()) == (0, "set outside the service\n")


@pytest.mark.parametrize(
    ("raw", "with_config"),
    [
        ({"services": {"a": {"config": {"path": "/x"}}, "b": {}}}, ["a"]),
        ({"defaults": {"config": {"path": "/x"}}, "services": {"b": {}, "a": {}}}, ["a", "b"]),
        # A service's own null takes the defaults' config away, as validation does.
        ({"defaults": {"config": {"path": "/x"}}, "services": {"a": {"config": None}}}, []),
        ({"defaults": "oops", "services": {"a": {}}}, []),
        ({"services": {"a": "oops", 1: {"config": {"path": "/x"}}}}, []),
        ({"services": ["a"]}, []),
        ("oops", []),
        (None, []),
    ],
)
def test_services_with_config(salt: Any, raw: Any, with_config: list[str]) -> None:
    salt.set_pillar({"dockerops": raw})

    assert salt.modules.dockerops.services_with_config() == with_config
