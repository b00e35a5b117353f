"""End to end through salt-call --local: the file_roots deployment, the
formula, sys.doc, exit codes, and the pip (wheel) deployment."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.functional.helpers import containers, http_get, service_pillar
from tests.support.salt import Masterless

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synced(masterless: Masterless) -> Masterless:
    """Modules, states, grains and the library synced from file_roots."""
    result = masterless.run("saltutil.sync_all")
    assert result.returncode == 0, result.stderr
    assert "modules.dockerops" in result.data["modules"]
    assert "states.dockerops" in result.data["states"]
    assert "grains.dockerops" in result.data["grains"]
    # The library travels with them, through salt://_utils.
    assert "utils.dockerops.spec" in result.data["utils"]
    return masterless


def test_sys_doc_documents_every_function_with_a_cli_example(synced):
    result = synced.run("sys.doc", "dockerops")
    assert result.returncode == 0, result.stderr
    docs = {name: doc for name, doc in result.data.items() if name.startswith("dockerops.")}
    assert {"dockerops.apply", "dockerops.status", "dockerops.services"} <= set(docs)
    for name, doc in docs.items():
        assert doc and "CLI Example:" in doc, f"{name} lacks a CLI Example"
        assert f"salt '*' {name}" in doc, f"{name}'s CLI example does not call it"
    states = synced.run("sys.state_doc", "dockerops")
    assert {"dockerops.running", "dockerops.absent"} <= set(states.data)


def test_formula_highstate_converges_then_is_a_noop(
    synced, docker_client, demo_images, service_name, free_ports
):
    port = free_ports(4)
    synced.set_pillar(
        service_pillar(
            service_name,
            demo_images["repository"],
            replicas=2,
            ports=[{"container": 8080, "host": port}],
        )
    )
    first = synced.run("state.apply", "dockerops")
    assert first.returncode == 0, first.stdout + first.stderr
    (state,) = [s for s in first.data.values() if s["name"] == service_name]
    assert state["result"] is True
    assert set(state["changes"]) == {f"{service_name}-1", f"{service_name}-2"}
    assert http_get(port + 1) == "1.0\n"

    second = synced.run("state.apply", "dockerops")
    assert second.returncode == 0
    (state,) = [s for s in second.data.values() if s["name"] == service_name]
    assert state["changes"] == {}

    status = synced.run("dockerops.status", service_name)
    replicas = status.data[service_name]
    assert [r["slot"] for r in replicas] == [1, 2]
    assert all(r["state"] == "running" and r["image"] == demo_images["1.0"] for r in replicas)

    clean = synced.run("state.apply", "dockerops.clean")
    assert clean.returncode == 0
    assert containers(docker_client, service_name) == {}


def test_failure_gives_a_nonzero_exit_code(synced, demo_images, service_name):
    synced.set_pillar(service_pillar(service_name, demo_images["repository"], tag="missing"))
    state = synced.run("state.apply", "dockerops")
    assert state.returncode != 0
    module = synced.run("dockerops.apply", service_name)
    assert module.returncode != 0
    assert module.data[service_name]["result"] is False


def test_grains_report_the_docker_host(synced, docker_client, demo_images, service_name):
    synced.set_pillar(service_pillar(service_name, demo_images["repository"]))
    assert synced.run("dockerops.apply", service_name).returncode == 0
    grains = synced.run("grains.get", "dockerops").data
    assert grains["docker"]["reachable"] is True
    assert grains["docker"]["version"] == docker_client.version()["Version"]
    assert service_name in grains["services"]


def test_pip_installed_wheel_registers_with_the_salt_loader(tmp_path, docker_url):
    """`pip install` of the wheel alone (no file_roots, no sync) gives Salt the modules."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("dockerops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "dockerops/saltext/modules/dockerops.py" in names
    assert "dockerops/saltext/states/dockerops.py" in names
    assert "dockerops/saltext/beacons/dockerops.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # An empty file_roots: nothing to sync from.
    minion = Masterless(
        tmp_path / "salt", "pip-minion", docker_url, file_roots={"base": [str(tmp_path / "empty")]}
    )
    (tmp_path / "empty").mkdir()
    env = {"PYTHONPATH": str(target)}
    funcs = minion.run("sys.list_functions", "dockerops", env=env)
    assert funcs.returncode == 0, funcs.stderr
    assert {"dockerops.apply", "dockerops.status", "dockerops.version"} <= set(funcs.data)
    states = minion.run("sys.list_state_functions", "dockerops", env=env)
    assert "dockerops.running" in states.data
    version = minion.run("dockerops.version", env=env)
    assert re.match(r"\d+\.\d+", version.data["docker"])
    # ... and they came from the installed wheel, not from this checkout.
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dockerops.loader, json; print(json.dumps(dockerops.loader.salt_dirs()))",
        ],
        env={"PYTHONPATH": str(target)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(target / "dockerops" / "saltext" / "modules") in where.stdout
