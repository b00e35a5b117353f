"""Functional tier: a real dockerd; Salt's loader in-process, or salt-call --local."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from saltfactories.utils.functional import Loaders

from dockerops.volumes import LABEL_ASIDE_OF
from tests.functional.helpers import containers
from tests.support.salt import Masterless

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def minion_opts(tmp_path_factory: pytest.TempPathFactory, docker_url: str) -> dict[str, Any]:
    import salt.config

    root = tmp_path_factory.mktemp("minion")
    (root / "pillar").mkdir()
    (root / "states").mkdir()
    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "int-functional",
            "root_dir": str(root),
            "cachedir": str(root / "cache"),
            "pki_dir": str(root / "pki"),
            "sock_dir": str(root / "sock"),
            "extension_modules": str(root / "extmods"),
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "salt"), str(root / "states")]},
            "pillar_roots": {"base": [str(root / "pillar")]},
            "module_dirs": [str(REPO / "_modules")],
            "states_dirs": [str(REPO / "_states")],
            "grains_dirs": [str(REPO / "_grains")],
            "dockerops.docker_url": docker_url,
            "dockerops.state_dir": str(root / "state"),
            # A directory that does not exist: no metrics, unless a test makes it.
            "dockerops.metrics_file": str(root / "metrics" / "dockerops.prom"),
        }
    )
    return opts


@pytest.fixture(scope="session")
def session_loaders(minion_opts: dict[str, Any]) -> Loaders:
    return Loaders(minion_opts)


@pytest.fixture
def salt(session_loaders: Loaders) -> Iterator[Any]:
    """Salt's loaders with a ``set_pillar(data)`` that reloads them with new pillar."""

    def set_pillar(data: dict[str, Any]) -> None:
        pillar_dir = Path(session_loaders.opts["pillar_roots"]["base"][0])
        (pillar_dir / "top.sls").write_text("base:\n  '*':\n    - test\n")
        # Plain YAML: values may hold Jinja meant for config templates.
        (pillar_dir / "test.sls").write_text("#!yaml\n" + yaml.safe_dump(data))
        session_loaders.reload_all()

    session_loaders.set_pillar = set_pillar
    yield session_loaders
    session_loaders.reset_state()


@pytest.fixture
def state_tree(minion_opts: dict[str, Any]) -> Path:
    """A file_roots directory for test SLS files (state.sls honours test=True)."""
    return Path(minion_opts["file_roots"]["base"][1])


@pytest.fixture
def host_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory to allow in ``dockerops:allowed_host_paths`` for one test."""
    return tmp_path_factory.mktemp("hostroot")


@pytest.fixture(scope="session")
def masterless(tmp_path_factory: pytest.TempPathFactory, docker_url: str) -> Masterless:
    return Masterless(tmp_path_factory.mktemp("masterless"), "int-masterless", docker_url)


@pytest.fixture
def extra_service(
    service_name: str, docker_client: docker.DockerClient, minion_opts: dict[str, Any]
) -> Iterator[Callable[[str], str]]:
    """``extra_service("-b")``: another service for this test, ``service_name`` + suffix.

    Its containers and its files in the minion's state dir (record, history,
    lock) are removed afterwards, whether the test passed or not.
    """
    names: list[str] = []

    def extra(suffix: str) -> str:
        names.append(service_name + suffix)
        return names[-1]

    yield extra
    state_dir = Path(minion_opts["dockerops.state_dir"])
    for name in names:
        for container in containers(docker_client, name).values():
            container.remove(force=True)
        # <state_dir>/{services,history,locks}/<name>.{json,jsonl,lock}
        for path in state_dir.glob(f"*/{name}.*"):
            path.unlink()


@pytest.fixture
def volume_name(
    service_name: str, docker_client: docker.DockerClient
) -> Iterator[Callable[[str], str]]:
    """``volume_name("-data")``: a volume name for this test; it and its aside
    volumes are removed afterwards (dockerops itself never removes one)."""
    names: list[str] = []

    def name(suffix: str) -> str:
        names.append(service_name + suffix)
        return names[-1]

    yield name
    for container in containers(docker_client, service_name).values():
        container.remove(force=True)
    for volume in names:
        found = docker_client.api.volumes(filters={"label": f"{LABEL_ASIDE_OF}={volume}"})
        for aside in (found or {}).get("Volumes") or []:
            docker_client.api.remove_volume(aside["Name"], force=True)
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_volume(volume, force=True)
