"""Data mounts that name a Docker volume: validation, container inputs, host layout,
and the pure parts of the restic helper (dockerops.volumes)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.host import DockerHost, show_volume_options
from dockerops.inputs import create_call, service_inputs, service_volumes
from dockerops.layout import footprint, problems
from dockerops.spec import ServiceSpec, load_service
from dockerops.volumes import _env_script, aside_name, shared_libraries

WEB = "dockerops:services:web"
ALLOWED = ["/srv/dockerops", "/var/log/dockerops"]
NFS = {"type": "nfs", "o": "addr=10.0.0.5,nfsvers=4", "device": ":/export/web"}


def pillar(*data: dict[str, Any], **more: Any) -> dict[str, Any]:
    service = {"image": "registry.example.com/web", "tag": "1.0", "data": list(data), **more}
    return {"dockerops": {"environment": "production", "services": {"web": service}}}


def load(*data: dict[str, Any]) -> ServiceSpec:
    return load_service(pillar(*data), "web")


def problems_of(*data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load(*data)
    return caught.value.problems


# --- the pillar ------------------------------------------------------------------------------


def test_a_volume_entry_with_driver_options() -> None:
    (mount,) = load({"volume": "web-data", "container": "/data", "driver_opts": NFS}).data

    assert (mount.volume, mount.host, mount.volume_driver) == ("web-data", None, "local")
    assert mount.driver_opts == NFS
    assert mount.names() == ("/data", "web-data")
    assert mount.bind_device is None


def test_a_bind_volume_device_is_normalised_and_named() -> None:
    opts = {"type": "none", "o": "bind", "device": "/srv/dockerops/web/../web/vol"}
    (mount,) = load({"volume": "web-vol", "container": "/data", "driver_opts": opts}).data

    assert mount.bind_device == "/srv/dockerops/web/vol"


def test_backup_paths_may_name_a_volume() -> None:
    spec = load_service(
        pillar(
            {"volume": "web-data", "container": "/data"},
            {"host": "/srv/dockerops/web/logs", "container": "/logs"},
            backup={"consistency": "none", "paths": ["web-data"]},
        ),
        "web",
    )

    assert [m.container for m in spec.backup_mounts()] == ["/data"]


SECRET_OPTS = {"type": "cifs", "o": "username=u,password=HUNTER2", "device": "//nas/share"}


@pytest.mark.parametrize(
    ("mount", "path", "message"),
    [
        ({"container": "/x"}, "data:0:host", "Field required"),
        (
            {"host": "/srv/dockerops/x", "volume": "v1", "container": "/x"},
            "data:0",
            "exactly one of host (a directory) or volume (a name)",
        ),
        (
            {"host": "/srv/dockerops/x", "container": "/x", "driver": "local"},
            "data:0",
            "driver and driver_opts belong to a volume",
        ),
        ({"volume": "-v", "container": "/x"}, "data:0:volume", "a volume name is"),
        ({"volume": "v", "container": "/x"}, "data:0:volume", "a volume name is"),
        ({"volume": "a/b", "container": "/x"}, "data:0:volume", "a volume name is"),
        ({"volume": "ok\n", "container": "/x"}, "data:0:volume", "a volume name is"),
        ({"volume": "v" * 256, "container": "/x"}, "data:0:volume", "a volume name is"),
        ({"volume": "v1", "container": "x"}, "data:0:container", "must be absolute"),
        ({"volume": "v1", "container": "/x", "driver": "Bad Driver"}, "data:0:driver", "not a"),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {"type": "nfs", "o": 5}},
            "data:0:driver_opts",
            "o: values are strings",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {**NFS, "o": "addr=1\nx"}},
            "data:0:driver_opts",
            "without control characters",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {**NFS, "a b": "x"}},
            "data:0:driver_opts",
            "not an option name",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {**NFS, "size": "1g"}},
            "data:0:driver_opts",
            "the local driver takes type, o and device, not size",
        ),
        (
            {
                "volume": "v1",
                "container": "/x",
                "driver_opts": {"type": "ext4", "device": "/dev/sda1"},
            },
            "data:0:driver_opts",
            "a disk or another filesystem is not mounted",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {"o": "bind", "device": "/srv/x"}},
            "data:0:driver_opts",
            "type: the local driver mounts",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {**NFS, "o": "bind"}},
            "data:0:driver_opts",
            "a bind is type: none with o: bind",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {"type": "none", "device": "/srv"}},
            "data:0:driver_opts",
            "a bind is type: none with o: bind",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {"type": "tmpfs"}},
            "data:0:driver_opts",
            "type tmpfs needs its device",
        ),
        (
            {
                "volume": "v1",
                "container": "/x",
                "driver_opts": {"type": "none", "o": "bind", "device": "/etc"},
            },
            "data:0:driver_opts",
            "device: /etc is outside dockerops:allowed_host_paths",
        ),
        (
            {
                "volume": "v1",
                "container": "/x",
                "driver_opts": {
                    "type": "none",
                    "o": "rbind,ro",
                    "device": "/srv/dockerops/../../etc",
                },
            },
            "data:0:driver_opts",
            "device: /etc is outside dockerops:allowed_host_paths",
        ),
        (
            {"volume": "v1", "container": "/x", "driver_opts": {**SECRET_OPTS, "type": "ext4"}},
            "data:0:driver_opts",
            "type: the local driver mounts",
        ),
    ],
)
def test_invalid_volume_entries(mount: dict[str, Any], path: str, message: str) -> None:
    found = problems_of(mount)

    assert len(found) == 1, found
    assert found[0].startswith(f"{WEB}:{path}: "), found
    assert message in found[0], found
    assert "HUNTER2" not in found[0]


def test_a_plugin_driver_takes_its_own_options() -> None:
    opts = {"share": "nas/web", "anything": "goes"}
    (mount,) = load(
        {"volume": "v1", "container": "/x", "driver": "vendor/nas:1.2", "driver_opts": opts}
    ).data

    assert (mount.volume_driver, mount.driver_opts) == ("vendor/nas:1.2", opts)


# --- container inputs ------------------------------------------------------------------------

HOST_MOUNTS = [
    {"host": "/srv/dockerops/web/data", "container": "/data"},
    {"host": "/srv/dockerops/web/ro", "container": "/ro", "read_only": True},
]


def test_host_path_mounts_hash_as_before_volumes() -> None:
    # Computed with the code before volumes: existing containers are not recreated.
    inputs = service_inputs(load(*HOST_MOUNTS))

    assert inputs.spec_hash == "04b91ecb395a633f"
    assert dict(inputs.digests)["mounts"] == "2145d3183efb4b83"


def test_a_volume_mount_goes_into_the_create_call_by_name() -> None:
    spec = load(HOST_MOUNTS[0], {"volume": "web-data", "container": "/vol", "read_only": True})
    call = create_call(service_inputs(spec).values, 1)

    assert call.host["binds"] == ["/srv/dockerops/web/data:/data:rw", "web-data:/vol:ro"]
    host_mount, volume_mount = call.mounts
    assert host_mount.volume is None and host_mount.trusted_root == "/srv/dockerops"
    assert volume_mount.volume is not None and volume_mount.host == ""
    assert (volume_mount.volume.name, volume_mount.volume.driver) == ("web-data", "local")


@pytest.mark.parametrize(
    "other",
    [
        {"volume": "web-data2", "container": "/vol"},
        {"volume": "web-data", "container": "/vol2"},
        {"volume": "web-data", "container": "/vol", "read_only": True},
        {"volume": "web-data", "container": "/vol", "driver_opts": NFS},
        {"volume": "web-data", "container": "/vol", "driver": "vendor/nas"},
    ],
)
def test_what_of_a_volume_mount_recreates(other: dict[str, Any]) -> None:
    base = service_inputs(load({"volume": "web-data", "container": "/vol"}))

    assert service_inputs(load(other)).spec_hash != base.spec_hash


def test_service_volumes_each_once_with_the_bind_device_and_its_root() -> None:
    bind = {"type": "none", "o": "bind", "device": "/srv/dockerops/web/vol"}
    spec = load(
        {"volume": "web-vol", "container": "/a", "driver_opts": bind},
        {"volume": "web-vol", "container": "/b", "driver_opts": bind, "read_only": True},
        {"volume": "web-nfs", "container": "/c", "driver_opts": NFS},
    )

    found = service_volumes(spec)
    assert [(v.name, v.device, v.device_root) for v in found] == [
        ("web-vol", "/srv/dockerops/web/vol", "/srv/dockerops"),
        ("web-nfs", None, None),
    ]
    assert dict(found[1].options) == NFS


# --- host layout ------------------------------------------------------------------------------


def service(name: str, *data: dict[str, Any], **fields: Any) -> ServiceSpec:
    return ServiceSpec.model_validate(
        {"name": name, "image": "web", "data": list(data), **fields},
        context={"allowed_host_paths": ALLOWED},
    )


def vol(name: str, read_only: bool = False, **opts: str) -> dict[str, Any]:
    return {"volume": name, "container": "/data", "read_only": read_only, "driver_opts": opts}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (vol("shared"), vol("shared", read_only=True), []),
        (vol("shared", True), vol("shared", True), []),
        (vol("one"), vol("two"), []),
        (
            vol("shared"),
            vol("shared"),
            [
                "dockerops:services:a:data:0:volume: volume shared is also mounted writable by "
                "service b (dockerops:services:b:data:0:volume); one service may write in a "
                "volume (mount it read_only in the others)",
                "dockerops:services:b:data:0:volume: volume shared is also mounted writable by "
                "service a (dockerops:services:a:data:0:volume); one service may write in a "
                "volume (mount it read_only in the others)",
            ],
        ),
        (
            vol("shared", True, type="tmpfs", device="tmpfs"),
            vol("shared", True),
            [
                "dockerops:services:a:data:0:volume: volume shared is made with another driver "
                "or driver_opts by dockerops:services:b:data:0:volume; a volume is made once, so "
                "both must say the same",
                "dockerops:services:b:data:0:volume: volume shared is made with another driver "
                "or driver_opts by dockerops:services:a:data:0:volume; a volume is made once, so "
                "both must say the same",
            ],
        ),
    ],
)
def test_volume_problems(a: dict[str, Any], b: dict[str, Any], expected: list[str]) -> None:
    prints = [footprint(service("a", a)), footprint(service("b", b))]

    assert problems(prints, ALLOWED) == expected


def test_a_bind_volumes_directory_is_a_host_path_of_the_layout() -> None:
    bind = vol("a-vol", type="none", o="bind", device="/srv/dockerops/b/config")
    a = service("a", bind)
    b = service(
        "b",
        config={
            "path": "/etc/app",
            "files": {"x": {"contents": "y"}},
            "root": "/srv/dockerops/b/config",
        },
    )

    found = problems([footprint(a), footprint(b)], ALLOWED, only="a")
    assert found == [
        "dockerops:services:a:data:0:driver_opts:device: /srv/dockerops/b/config is also the "
        "config root of service b (dockerops:services:b:config:root); dockerops writes and "
        "removes config roots as root and owns them alone"
    ]


def test_a_service_failing_validation_still_holds_its_writable_volume() -> None:
    bad = {"image": "web", "replicas": -1, "data": [{"volume": "shared", "container": "/d"}]}
    good = {"image": "web", "data": [{"volume": "shared", "container": "/d"}]}
    root = {"dockerops": {"services": {"bad": bad, "good": good}}}

    with pytest.raises(SpecError) as caught:
        load_service(root, "good")
    assert caught.value.problems == [
        "dockerops:services:good:data:0:volume: volume shared is also mounted writable by "
        "service bad (dockerops:services:bad:data:0:volume); one service may write in a "
        "volume (mount it read_only in the others)"
    ]


# --- the helper's pure parts --------------------------------------------------------------------


def test_options_shown_without_credentials() -> None:
    shown = show_volume_options(SECRET_OPTS)

    assert "HUNTER2" not in shown
    assert "username=u" in shown and "password=***" in shown and "//nas/share" in shown


def test_the_env_file_quotes_every_value() -> None:
    script = _env_script({"RESTIC_REPOSITORY": "rest:https://u:p w'$(x)@h/", "A": ""})

    assert script == "A=''\nRESTIC_REPOSITORY='rest:https://u:p w'\"'\"'$(x)@h/'\n"
    with pytest.raises(ValueError, match="not an environment variable name"):
        _env_script({"A;rm": "x"})


def test_aside_names_are_volume_names() -> None:
    assert aside_name("web-data", 0.0) == "web-data-before-restore-19700101T000000Z"
    long = aside_name("v" * 255, 0.0)
    assert len(long) <= 251 and long.endswith("-before-restore-19700101T000000Z")


def test_shared_libraries_of_a_static_and_a_dynamic_binary() -> None:
    assert shared_libraries("/bin/busybox") == []
    found = shared_libraries("/bin/ls")
    assert found and all(path.startswith("/") for path in found)
    assert any("libc.so" in path for path in found)


class _RecordingApi:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def create_container_from_config(self, body: dict[str, Any], name: str) -> dict[str, str]:
        self.bodies.append(body)
        return {"Id": "c0ffee"}

    def start(self, container_id: str) -> None:
        pass


def test_a_rollback_puts_back_a_replica_that_mounts_a_volume() -> None:
    # Its named volume is not a host path below the allow-list (nothing to check).
    api = _RecordingApi()
    host = DockerHost(SimpleNamespace(api=api))  # type: ignore[arg-type]
    spec = load({"volume": "web-data", "container": "/data"})
    details = {
        "Id": "old",
        "Name": "/web-1",
        "Config": {"Image": "web:1.0"},
        "HostConfig": {"Binds": ["web-data:/data:rw"]},
    }

    assert host.recreate_from(details, spec.trusted_root) == "c0ffee"
    assert api.bodies[0]["HostConfig"]["Binds"] == ["web-data:/data:rw"]


def test_a_rollback_puts_back_every_container_setting_but_a_derived_hostname() -> None:
    api = _RecordingApi()
    host = DockerHost(SimpleNamespace(api=api))  # type: ignore[arg-type]
    config = {
        "Image": "web:1.0",
        "Hostname": "0123456789ab",
        "Domainname": "example.com",
        "Env": ["A=1"],
        "StopSignal": "SIGQUIT",
        "MacAddress": None,
    }
    details = {"Id": "0123456789abcdef", "Name": "/web-1", "Config": config, "HostConfig": {}}
    host.recreate_from(details)
    assert api.bodies[0] == {
        "Image": "web:1.0",
        "Domainname": "example.com",
        "Env": ["A=1"],
        "StopSignal": "SIGQUIT",
        "HostConfig": {},
    }
    # A hostname pillar set (not the container id's prefix) is kept.
    host.recreate_from({**details, "Config": {**config, "Hostname": "web"}})
    assert api.bodies[1]["Hostname"] == "web"
