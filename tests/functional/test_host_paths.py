"""Host paths and ports against a real dockerd: config roots dockerops owns, no
symlink followed below the allow-list root, no clash between services, and no
empty service name that means "every service"."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from salt.exceptions import SaltInvocationError

from tests.functional.helpers import containers, state_return

pytestmark = pytest.mark.docker

OUTSIDE_SECRET = "OUTSIDE-SECRET-never-read-or-written"


def snapshot(top: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for path in sorted(top.rglob("*")):
        rel = str(path.relative_to(top))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = ("file", path.read_bytes())
    return out


def pillar_of(root: Path, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "dockerops": {
            "environment": "integration",
            "allowed_host_paths": [str(root)],
            "services": services,
        }
    }


def svc(repository: str, **fields: Any) -> dict[str, Any]:
    return {
        "image": repository,
        "tag": "1.0",
        "replicas": 1,
        "update": {"health_timeout": "15s"},
        **fields,
    }


def config(root: Path | None = None, text: str = "one\n") -> dict[str, Any]:
    out: dict[str, Any] = {"path": "/etc/app", "files": {"app.conf": {"contents": text}}}
    if root is not None:
        out["root"] = str(root)
    return out


def running(salt: Any, name: str) -> dict[str, Any]:
    return state_return(salt.states.dockerops.running(name=name))


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A host directory outside the allow-list that planted links point at."""
    out = tmp_path_factory.mktemp("outside")
    (out / "shadow").write_text(OUTSIDE_SECRET + "\n")
    (out / "etc").mkdir()
    (out / "etc" / "passwd").write_text(OUTSIDE_SECRET + "\n")
    return out


@pytest.fixture
def other_service(extra_service: Callable[[str], str]) -> str:
    return extra_service("-b")


def plant_from_a_container(
    client: docker.DockerClient, image: str, host_root: Path, script: str
) -> None:
    """Run ``script`` in a container that can write ``host_root`` (mounted at the
    same path): what a container with a writable mount there can do."""
    client.containers.run(
        image,
        ["/bin/sh", "-ec", script],
        volumes={str(host_root): {"bind": str(host_root), "mode": "rw"}},
        remove=True,
        network_mode="none",
        entrypoint=[],
    )


# --- items 2, 3, 4: where a config root may be ------------------------------------------------


LAYOUTS = {
    "allow-list-root": (
        lambda root, a, b: {a: {"config": config(root)}},
        "config:root: {root} is the allow-list root",
        None,
    ),
    "inside-own-writable-data": (
        lambda root, a, b: {
            a: {
                "config": config(root / a / "data" / "config"),
                "data": [{"host": str(root / a / "data"), "container": "/data"}],
            }
        },
        "config:root: {root}/{a}/data/config lies inside {root}/{a}/data, the writable "
        "data mount of service {a}",
        None,
    ),
    "another-services-data": (
        lambda root, a, b: {
            a: {"config": config(root / b / "data")},
            b: {"data": [{"host": str(root / b / "data"), "container": "/data"}]},
        },
        "config:root: {root}/{b}/data is also the writable data mount of service {b}",
        "data:0:host: {root}/{b}/data is also the config root of service {a}",
    ),
    "shared-config-root": (
        lambda root, a, b: {
            a: {"config": config(root / "shared")},
            b: {"config": config(root / "shared")},
        },
        "config:root: {root}/shared is also the config root of service {b}",
        "config:root: {root}/shared is also the config root of service {a}",
    ),
    "nested-writable-data": (
        lambda root, a, b: {
            a: {"data": [{"host": str(root / b / "inner"), "container": "/data"}]},
            b: {"data": [{"host": str(root / b), "container": "/data"}]},
        },
        "data:0:host: {root}/{b}/inner lies inside {root}/{b}, the writable data mount "
        "of service {b}",
        "data:0:host: {root}/{b} contains {root}/{b}/inner",
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_dangerous_layout_is_refused_before_anything_is_touched(
    salt, docker_client, demo_images, service_name, other_service, host_root, layout
):
    build, message_a, message_b = LAYOUTS[layout]
    a, b = service_name, other_service
    services = {
        name: svc(demo_images["repository"], **fields)
        for name, fields in build(host_root, a, b).items()
    }
    salt.set_pillar(pillar_of(host_root, services))
    before = snapshot(host_root)

    for name, message in ((a, message_a), (b, message_b)):
        if name not in services:
            continue
        expected = f"dockerops:services:{name}:" + (message or "").format(root=host_root, a=a, b=b)
        for ret in (
            running(salt, name),
            state_return(salt.states.dockerops.config_managed(name=name)),
            state_return(salt.states.dockerops.absent(name=name, remove_config=True)),
        ):
            assert ret["result"] is False, ret
            assert expected in ret["comment"], (expected, ret["comment"])
        with pytest.raises(SaltInvocationError, match="dockerops:services:"):
            salt.modules.dockerops.apply(name)

    assert containers(docker_client, a) == {} and containers(docker_client, b) == {}
    assert snapshot(host_root) == before


def test_absent_removes_only_what_dockerops_wrote(
    salt, docker_client, demo_images, service_name, host_root
):
    root = host_root / service_name / "config"
    salt.set_pillar(
        pillar_of(host_root, {service_name: svc(demo_images["repository"], config=config(root))})
    )
    assert running(salt, service_name)["result"] is True
    # An admin's file dropped into the config root after dockerops made it.
    (root / "README.admin").write_text("keep me")

    ret = state_return(salt.states.dockerops.absent(name=service_name, remove_config=True))

    assert ret["result"] is True, ret
    assert ret["changes"]["config"]["kept"] == ["README.admin"]
    assert "..data" in ret["changes"]["config"]["removed"]
    assert sorted(p.name for p in root.iterdir()) == ["..dockerops", "README.admin"]
    assert (root / "README.admin").read_text() == "keep me"
    assert containers(docker_client, service_name) == {}


def test_a_directory_dockerops_did_not_write_is_never_taken_or_removed(
    salt, docker_client, demo_images, service_name, host_root
):
    # config:root pointed at a directory that holds data (the original report),
    # as a release before the ownership marker would have accepted.
    root = host_root / "srv-data"
    (root / "db").mkdir(parents=True)
    (root / "db" / "rows").write_text("precious")
    salt.set_pillar(
        pillar_of(host_root, {service_name: svc(demo_images["repository"], config=config(root))})
    )
    before = snapshot(host_root)

    ret = running(salt, service_name)
    assert ret["result"] is False
    assert f"{root} is not a dockerops config root: it holds db" in ret["comment"]
    assert containers(docker_client, service_name) == {}

    # Containers of the service (started without config) stay while removal is refused.
    salt.set_pillar(pillar_of(host_root, {service_name: svc(demo_images["repository"])}))
    assert running(salt, service_name)["result"] is True
    salt.set_pillar(
        pillar_of(host_root, {service_name: svc(demo_images["repository"], config=config(root))})
    )
    for test in (True, False):
        gone = state_return(
            salt.states.dockerops.absent(name=service_name, remove_config=True, test=test)
        )
        assert gone["result"] is False
        assert "is not a dockerops config root" in gone["comment"]

    assert snapshot(host_root) == before
    assert list(containers(docker_client, service_name)) == [f"{service_name}-1"]


def test_a_config_root_written_by_the_previous_release_is_adopted(
    salt, docker_client, demo_images, service_name, host_root
):
    root = host_root / service_name / "config"
    salt.set_pillar(
        pillar_of(host_root, {service_name: svc(demo_images["repository"], config=config(root))})
    )
    assert running(salt, service_name)["result"] is True
    (root / "..dockerops").unlink()  # as the previous release left it

    salt.set_pillar(
        pillar_of(
            host_root,
            {service_name: svc(demo_images["repository"], config=config(root, text="two\n"))},
        )
    )
    assert running(salt, service_name)["result"] is True
    assert (root / "..dockerops").is_file()

    gone = state_return(salt.states.dockerops.absent(name=service_name, remove_config=True))
    assert gone["result"] is True and gone["changes"]["config"] == {"removed": str(root)}
    assert not root.exists() and root.parent.is_dir()


# --- item 3: planted symlinks ----------------------------------------------------------------


@pytest.mark.parametrize("level", ["root-parent", "root", "..data", "version", "file"])
def test_a_link_planted_in_a_config_root_is_never_followed(
    salt, docker_client, demo_images, service_name, host_root, outside, level
):
    base = host_root / service_name
    root = base / "config"
    pillar = pillar_of(
        host_root,
        {service_name: svc(demo_images["repository"], config=config(root, text="one\n"))},
    )
    salt.set_pillar(pillar)
    assert running(salt, service_name)["result"] is True
    (version,) = [p.name for p in root.iterdir() if re.fullmatch(r"\.\.[0-9a-f]{16}", p.name)]
    # mv the real entry away, link it to a copy outside: a write through the
    # link would land outside, a read would show what is outside.
    moved, planted = {
        "root-parent": (base, base),
        "root": (root, root),
        "..data": (None, root / "..data"),
        "version": (root / version, root / version),
        "file": (root / version / "app.conf", root / version / "app.conf"),
    }[level]
    if moved is None:
        # ..data through the version directory and up, out to a directory
        # holding an app.conf: whatever reads "the current version" reads it.
        (outside / "etc" / "app.conf").write_text(OUTSIDE_SECRET + "\n")
        target = f"{version}/{os.path.relpath(outside / 'etc', root / version)}"
    elif moved.is_dir():
        shutil.copytree(moved, outside / "copy", symlinks=True)
        target = str(outside / "copy")
    else:
        target = str(outside / "shadow")
    script = f"rm -f '{planted}'" if moved is None else f"mv '{moved}' '{moved}.moved'"
    plant_from_a_container(
        docker_client,
        demo_images["1.0"],
        host_root,
        f"{script}; ln -s '{target}' '{planted}'",
    )
    assert planted.is_symlink()
    before = snapshot(outside)

    pillar["dockerops"]["services"][service_name]["config"] = config(root, text="two\n")
    salt.set_pillar(pillar)
    outputs = [
        state_return(salt.states.dockerops.config_managed(name=service_name, test=True)),
        running(salt, service_name),
        state_return(salt.states.dockerops.absent(name=service_name, remove_config=True)),
    ]

    assert snapshot(outside) == before
    text = repr(outputs)
    assert OUTSIDE_SECRET not in text
    if level in ("root-parent", "root", "version", "file"):
        assert outputs[1]["result"] is False
        assert f"{planted} is " in outputs[1]["comment"]


def test_a_data_path_with_a_planted_link_is_refused_when_a_container_is_created(
    salt, docker_client, demo_images, service_name, host_root, outside
):
    base = host_root / service_name
    pillar = pillar_of(
        host_root,
        {
            service_name: svc(
                demo_images["repository"],
                data=[{"host": str(base / "data"), "container": "/data"}],
            )
        },
    )
    salt.set_pillar(pillar)
    assert running(salt, service_name)["result"] is True
    assert (base / "data").is_dir()
    first = containers(docker_client, service_name)[f"{service_name}-1"].id
    # Planted between runs: the service's directory swapped for a link outside.
    plant_from_a_container(
        docker_client,
        demo_images["1.0"],
        host_root,
        f"mv '{base}' '{base}.moved'; ln -s '{outside}' '{base}'",
    )
    (outside / "data").mkdir()
    before = snapshot(outside)

    pillar["dockerops"]["services"][service_name]["env"] = {"CHANGED": "1"}
    salt.set_pillar(pillar)
    ret = running(salt, service_name)

    assert ret["result"] is False
    assert f"{base} is a symlink" in ret["comment"]
    assert snapshot(outside) == before
    now = containers(docker_client, service_name)
    assert [c.id for c in now.values()] == [first]  # the old replica still serves
    for container in now.values():
        sources = [m["Source"] for m in container.attrs["Mounts"]]
        assert not any(s.startswith(str(outside)) for s in sources), sources


# --- item 5: host ports across services --------------------------------------------------------


def test_host_ports_of_two_services_never_overlap(
    salt, docker_client, demo_images, service_name, other_service, free_ports
):
    port = free_ports(3)
    services = {
        # 1 replica + 1 start-first spare: port and port + 1.
        service_name: svc(demo_images["repository"], ports=[{"container": 8080, "host": port}]),
        other_service: svc(
            demo_images["repository"], ports=[{"container": 8080, "host": port + 1}]
        ),
    }
    salt.set_pillar({"dockerops": {"environment": "integration", "services": services}})

    first, second = running(salt, service_name), running(salt, other_service)

    assert first["result"] is False and second["result"] is False
    assert (
        f"dockerops:services:{service_name}:ports:0:host: host port 127.0.0.1:{port + 1}/tcp"
        in (first["comment"])
    )
    assert f"taken by service {other_service}" in first["comment"]
    assert f"taken by service {service_name}" in second["comment"]
    assert containers(docker_client, service_name) == {}
    assert containers(docker_client, other_service) == {}

    services[other_service]["ports"][0]["host"] = port + 2
    salt.set_pillar({"dockerops": {"environment": "integration", "services": services}})
    assert running(salt, service_name)["result"] is True
    assert running(salt, other_service)["result"] is True


# --- item 6: an empty name ---------------------------------------------------------------------


def test_an_empty_service_name_never_means_every_service(
    salt, docker_client, demo_images, service_name
):
    salt.set_pillar(
        {
            "dockerops": {
                "environment": "integration",
                "services": {service_name: svc(demo_images["repository"])},
            }
        }
    )
    assert running(salt, service_name)["result"] is True
    before = {c.id for c in containers(docker_client, service_name).values()}
    module = salt.modules.dockerops

    states = salt.states.dockerops
    for name in ("", "../x", "Web"):
        for function, kwargs in (
            (module.remove, {}),
            (module.remove, {"test": True}),
            (module.status, {}),
            (module.history, {}),
            (module.restart, {}),
            (module.rolling_update, {}),
            (module.rollback, {}),
            (module.apply, {}),
            (module.apply, {"test": True}),
        ):
            with pytest.raises(SaltInvocationError, match="is not a service name"):
                function(name, **kwargs)
        for state, kwargs in (
            (states.absent, {}),
            (states.absent, {"remove_config": True}),
            (states.running, {}),
            (states.running, {"image": demo_images["repository"]}),
            (states.config_managed, {}),
            (states.mod_watch, {"sfun": "running"}),
        ):
            ret = state_return(state(name=name, **kwargs))
            assert ret["result"] is False, ret
            assert "is not a service name" in ret["comment"]

    assert {c.id for c in containers(docker_client, service_name).values()} == before
    assert service_name in module.status()  # None still means every service
