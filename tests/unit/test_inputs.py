"""dockerops.inputs: every container input's hash, create arguments and read-back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dockerops import inputs as inputs_module
from dockerops.errors import SpecError
from dockerops.inputs import INPUT_NAMES, INPUTS, Input, read_back, service_inputs
from dockerops.replicas import desired_replicas
from dockerops.spec import ServiceSpec, load_service

MakeSpec = Callable[..., ServiceSpec]

# What the previous release hashed for two specs (computed with its code):
# inputs left unset keep every existing container's hash, so nothing churns
# on upgrade.
PREVIOUS_RELEASE = {
    "minimal": (
        {},
        "681172ebbf2d200e",
        {
            "command": "74234e98afe7498f",
            "env": "4f53cda18c2baa0c",
            "image": "cec1431782695609",
            "labels": "61417ac2fd623e25",
            "logging": "06b6c779b8543a96",
            "ports": "4f53cda18c2baa0c",
            "restart_policy": "34d57b673672cf71",
        },
    ),
    "full": (
        {
            "replicas": 2,
            "command": ["serve"],
            "env": {"A": "1"},
            "secrets": {"PW": "s"},
            "ports": [{"container": 80, "host": 8080}],
            "labels": {"team": "x"},
            "data": [{"host": "/srv/dockerops/web/data", "container": "/data"}],
            "config": {"path": "/etc/web", "files": {"a.conf": {"contents": "x"}}},
            "logging": {"options": {"max-size": "50m"}},
            "healthcheck": {"test": "true", "interval": "2s"},
            "restart_policy": "always",
        },
        "05d721288a3c460d",
        {
            "command": "4669c1abecb92cbb",
            "config": "c1798f50f778dcca",
            "env": "7663e8dee7c9d442",
            "healthcheck": "84019180ebb092a3",
            "image": "cec1431782695609",
            "labels": "a972e1145741f8f4",
            "logging": "d06352121c656eb3",
            "mounts": "6422627aff391355",
            "ports": "f5ac252c339b5441",
            "restart_policy": "17ce2e5ae2b098e1",
            "secrets": "936b8e049198965a",
        },
    ),
}


def _spec(environment: str = "production", **fields: Any) -> ServiceSpec:
    service = {"image": "registry.example.com/web", "tag": "1.4", **fields}
    return load_service(
        {"dockerops": {"environment": environment, "services": {"web": service}}}, "web"
    )


@pytest.mark.parametrize("case", sorted(PREVIOUS_RELEASE))
def test_unset_inputs_keep_the_previous_release_hashes(case: str) -> None:
    fields, spec_hash, inputs = PREVIOUS_RELEASE[case]
    spec = _spec(**fields)

    made = service_inputs(spec, "0123456789abcdef" if spec.config else None)

    assert (made.spec_hash, dict(made.digests)) == (spec_hash, inputs)


# Each new input: a pillar value, and the create-call arguments it must give.
NEW_INPUTS: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "resources",
        {
            "resources": {
                "memory": "512m",
                "memory_reservation": "256m",
                "cpus": 1.5,
                "pids_limit": 100,
            }
        },
        {},
        {
            "mem_limit": 512 * 2**20,
            "mem_reservation": 256 * 2**20,
            "nano_cpus": 1_500_000_000,
            "pids_limit": 100,
        },
    ),
    (
        "ulimits",
        {"ulimits": {"nofile": {"soft": 1024, "hard": 4096}, "core": 0}},
        {},
        {
            "ulimits": [
                {"Name": "core", "Soft": 0, "Hard": 0},
                {"Name": "nofile", "Soft": 1024, "Hard": 4096},
            ]
        },
    ),
    ("user", {"user": "app:app"}, {"user": "app:app"}, {}),
    ("working_dir", {"working_dir": "/srv/app/"}, {"working_dir": "/srv/app"}, {}),
    ("entrypoint", {"entrypoint": "tini -- run"}, {"entrypoint": ["tini", "--", "run"]}, {}),
    ("read_only", {"read_only": True}, {}, {"read_only": True}),
    ("tmpfs", {"tmpfs": {"/run": "size=8m"}}, {}, {"tmpfs": {"/run": "size=8m"}}),
    ("cap_add", {"cap_add": ["net_admin"]}, {}, {"cap_add": ["CAP_NET_ADMIN"]}),
    ("cap_drop", {"cap_drop": ["ALL"]}, {}, {"cap_drop": ["ALL"]}),
    (
        "security_opt",
        {"security_opt": ["apparmor=docker-default"]},
        {},
        {"security_opt": ["apparmor=docker-default", "no-new-privileges:true"]},
    ),
    ("privileged", {"privileged": True}, {}, {"privileged": True}),
    ("init", {"init": True}, {}, {"init": True}),
    ("stop_signal", {"stop_signal": "quit"}, {"stop_signal": "SIGQUIT"}, {}),
    ("stop_grace_period", {"stop_grace_period": "30s"}, {"stop_timeout": 30}, {}),
    ("networks", {"networks": ["backend"]}, {}, {"network_mode": "backend"}),
    ("extra_hosts", {"extra_hosts": {"db": "10.0.0.5"}}, {}, {"extra_hosts": ["db:10.0.0.5"]}),
    ("dns", {"dns": ["10.0.0.2"]}, {}, {"dns": ["10.0.0.2"]}),
]


def _privileged_spec(**fields: Any) -> ServiceSpec:
    service = {"image": "registry.example.com/web", "tag": "1.4", **fields}
    pillar = {"dockerops": {"environment": "production", "services": {"web": service}}}
    return load_service(pillar, "web", allow_privileged=True)


@pytest.mark.parametrize(
    ("name", "fields", "container", "host"), NEW_INPUTS, ids=[case[0] for case in NEW_INPUTS]
)
def test_a_new_input_changes_only_its_own_hash_and_create_arguments(
    name: str, fields: dict[str, Any], container: dict[str, Any], host: dict[str, Any]
) -> None:
    plain = _privileged_spec()
    changed = _privileged_spec(**fields)

    before, after = service_inputs(plain), service_inputs(changed)
    (replica,) = desired_replicas(changed)
    call = replica.create_call()
    (base,) = desired_replicas(plain)
    base_call = base.create_call()

    assert set(dict(after.digests)) - set(dict(before.digests)) == {name}
    assert dict(after.digests).items() >= dict(before.digests).items()
    assert after.spec_hash != before.spec_hash
    assert {k: v for k, v in call.container.items() if base_call.container.get(k) != v} == container
    assert {k: v for k, v in call.host.items() if base_call.host.get(k) != v} == host


def test_inputs_are_hashed_once_per_service_and_shared_by_every_slot() -> None:
    spec = _spec(replicas=3, resources={"memory": "64m"}, ports=[{"container": 80, "host": 8080}])

    replicas = desired_replicas(spec, slots=5)

    assert len({id(r.values) for r in replicas}) == 1
    assert len({r.inputs for r in replicas}) == 1
    calls = [r.create_call() for r in replicas]
    assert [c.host["port_bindings"] for c in calls] == [
        {"80/tcp": [("127.0.0.1", 8080 + slot)]} for slot in range(5)
    ]
    assert {c.host["mem_limit"] for c in calls} == {64 * 2**20}


def test_no_new_privileges_is_on_unless_turned_off_and_only_off_is_hashed() -> None:
    default, off = _spec(), _spec(no_new_privileges=False)

    assert desired_replicas(default)[0].create_call().host["security_opt"] == [
        "no-new-privileges:true"
    ]
    assert desired_replicas(off)[0].create_call().host["security_opt"] is None
    assert "security_opt" not in dict(service_inputs(default).digests)
    assert "security_opt" in dict(service_inputs(off).digests)


def test_networks_join_in_order_with_the_service_name_as_an_alias() -> None:
    spec = _spec(networks={"front": {"aliases": ["www"]}, "back": None})

    call = desired_replicas(spec)[0].create_call()

    assert [(n.name, n.aliases) for n in call.networks] == [
        ("front", ("web", "www")),
        ("back", ("web",)),
    ]
    assert call.host["network_mode"] == "front"


def test_every_input_is_declared_once() -> None:
    assert len(INPUT_NAMES) == len(set(INPUT_NAMES)) == len(INPUTS)


def test_read_back_shows_what_an_inspect_has_set() -> None:
    details = {
        "Config": {"User": "app", "StopSignal": "SIGQUIT", "StopTimeout": 30, "Cmd": None},
        "HostConfig": {
            "Memory": 64 * 2**20,
            "NanoCpus": 500_000_000,
            "PidsLimit": 0,
            "ReadonlyRootfs": True,
            "Init": None,
            "NetworkMode": "back",
            "RestartPolicy": {"Name": "on-failure"},
            "LogConfig": {"Type": "json-file"},
        },
        "NetworkSettings": {"Networks": {"back": {}, "front": {}}},
    }

    assert read_back(details) == {
        "restart_policy": "on-failure",
        "logging": "json-file",
        "resources": {"memory": 64 * 2**20, "cpus": 0.5},
        "user": "app",
        "read_only": True,
        "stop_signal": "SIGQUIT",
        "stop_grace_period": 30,
        "networks": ["back", "front"],
    }


BAD: list[tuple[dict[str, Any], str]] = [
    ({"resources": {"memory": "1m"}}, "resources:memory: "),
    ({"resources": {"memory": "lots"}}, "resources:memory: "),
    ({"resources": {"memory": "64m", "memory_reservation": "128m"}}, "resources: "),
    ({"resources": {"cpus": 0}}, "resources:cpus: "),
    ({"resources": {"pids_limit": 0}}, "resources:pids_limit: "),
    ({"ulimits": {"nofiles": 10}}, "ulimits: "),
    ({"ulimits": {"nofile": {"soft": 10, "hard": 5}}}, "ulimits:nofile: "),
    ({"user": "a b"}, "user: "),
    ({"working_dir": "relative"}, "working_dir: "),
    ({"entrypoint": []}, "entrypoint: "),
    ({"entrypoint": "'unclosed"}, "entrypoint: "),
    ({"tmpfs": {"/run": "size=8m;rm -rf"}}, "tmpfs: "),
    ({"tmpfs": ["relative"]}, "tmpfs: "),
    ({"tmpfs": [[]]}, "tmpfs: "),  # found by the fuzz: an unhashable path
    ({"networks": [["back"]]}, "networks: "),
    ({"cap_add": ["net admin"]}, "cap_add: "),
    ({"security_opt": ["bad opt"]}, "security_opt: "),
    ({"privileged": True}, "privileged: "),
    ({"stop_signal": "SIGNOPE"}, "stop_signal: "),
    ({"stop_grace_period": "2h"}, "stop_grace_period: "),
    ({"networks": ["host"]}, "networks: "),
    ({"networks": {"back": {"aliases": ["bad alias"]}}}, "networks:back:aliases:0: "),
    ({"extra_hosts": {"db": "not-an-ip"}}, "extra_hosts:db: "),
    ({"dns": ["8.8.8"]}, "dns:0: "),
]


@pytest.mark.parametrize(("fields", "where"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_inputs_are_refused_with_their_pillar_path(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(SpecError) as caught:
        _spec(**fields)

    assert any(p.startswith(f"dockerops:services:web:{where}") for p in caught.value.problems), (
        caught.value.problems
    )


def test_an_input_added_to_the_table_alone_is_hashed_created_and_read_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Adding an input is local: one table entry (here Docker's ``hostname``,
    taken from a label so no spec field is needed) reaches the hash, the
    create call and the read-back with nothing else changed."""
    hostname = Input(
        "hostname",
        lambda spec, _version: spec.labels.get("hostname"),
        lambda value, call: call.container.__setitem__("hostname", value) if value else None,
        read=lambda details: (details.get("Config") or {}).get("Hostname") or None,
    )
    plain = _spec(labels={"team": "x"})
    before = service_inputs(plain)
    monkeypatch.setattr(inputs_module, "INPUTS", (*INPUTS, hostname))

    after_unset = service_inputs(plain)
    named = _spec(labels={"team": "x", "hostname": "web.internal"})
    (replica,) = desired_replicas(named)

    # Unset: no container's hash moves. Set: its own hash, and the create call.
    assert (after_unset.digests, after_unset.spec_hash) == (before.digests, before.spec_hash)
    assert "hostname" in dict(replica.inputs)
    assert replica.create_call().container["hostname"] == "web.internal"
    assert read_back({"Config": {"Hostname": "web.internal"}})["hostname"] == "web.internal"
