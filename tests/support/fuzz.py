"""Hypothesis strategies for random ``dockerops`` pillar (spec loader and formula fuzz).

``make test`` runs a bounded number of examples with a fixed seed; set
``DOCKEROPS_FUZZ_EXAMPLES`` (and optionally ``DOCKEROPS_FUZZ_SEED``) for a
longer run by hand.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SEED = int(os.environ.get("DOCKEROPS_FUZZ_SEED", "20260808"))


def fuzz_settings(default_examples: int) -> settings:
    return settings(
        max_examples=int(os.environ.get("DOCKEROPS_FUZZ_EXAMPLES", default_examples)),
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# Values that broke, or nearly broke, something once.
ODD = [
    None,
    True,
    False,
    0,
    -1,
    -5,
    2**31,
    2**64,
    10**400,
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.0,
    1e-9,
    1e300,
    "",
    " ",
    "\n",
    "1.0\n",
    "x\n",
    "-5",
    ".inf",
    ".nan",
    "1e400",
    "9" * 400,
    "1h",
    "61m",
    "0.5ms",
    "500ms",
    "/srv/dockerops/a:b",
    "/srv/dockerops/x",
    "/etc/app",
    "/",
    "//",
    "/srv/dockerops/../../etc",
    "salt://",
    "salt://x",
    "on-failure:0",
    "on-failure:99999999999",
    "signal:HUP",
    "signal:NOPE",
    "0644",
    "0o644",
    "\x00",
    "a\x00b",
    "é" * 200,
    "a" * 300,
    "{{ x }",
    "{% if %}",
    "json-file",
    "start-first",
    [],
    {},
    ["a"],
    {"a": None},
]


def huge_int() -> int:
    """An int too long for str() (Python refuses to print over 4300 digits)."""
    return 10**5000


scalars = st.one_of(
    st.sampled_from(ODD),
    st.builds(huge_int),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=20),
)
keys = st.one_of(
    st.sampled_from(["a", "web", "A_B", "bad-name", "", "x\n", "..", "a/b", "/abs", "1", "-"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(keys, children, max_size=3),
    ),
    max_leaves=8,
)


def base_service(image: str = "registry.example.com/web") -> dict[str, Any]:
    """A valid service touching every field (mutations start from it)."""
    return {
        "image": image,
        "tag": "1.0",
        "replicas": 2,
        "command": ["httpd", "-f"],
        "env": {"MODE": "prod", "PORT": 8080},
        "secrets": {"API_TOKEN": "s3cr3t-t0ken-value"},
        "ports": [{"container": 8080, "host": 19500, "host_ip": "127.0.0.1", "protocol": "tcp"}],
        "config": {
            "path": "/etc/app",
            "on_change": "rolling",
            "keep": 3,
            "files": {
                "app.conf": {"contents": "x = {{ service }}", "template": "jinja", "mode": "0640"},
                "conf.d/extra": {"contents": "y", "owner": 0, "group": "root"},
                "store.json": {
                    "etcd": {"prefix": "/web/prod/", "format": "json", "required": ["db/host"]}
                },
            },
            "mode": "mount",
            "build": True,
        },
        "etcd_env": True,
        "environment_short": "prd",
        "data": [
            {"host": "/srv/dockerops/web/data", "container": "/data", "read_only": False},
            {
                "volume": "web-cache",
                "container": "/cache",
                "driver": "local",
                "driver_opts": {"type": "tmpfs", "device": "tmpfs", "o": "size=16m"},
            },
        ],
        "labels": {"team": "platform"},
        "restart_policy": "on-failure:5",
        "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
        "healthcheck": {
            "test": "true",
            "interval": "2s",
            "timeout": "1s",
            "retries": 3,
            "start_period": 0,
        },
        "update": {
            "parallelism": 1,
            "order": "start-first",
            "health_timeout": "60s",
            "min_healthy_time": "6s",
            "rollback": True,
        },
        "environment": "test",
        "resources": {"memory": "64m", "memory_reservation": "32m", "cpus": 0.5, "pids_limit": 50},
        "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 64},
        "user": "1000:1000",
        "working_dir": "/srv/app",
        "entrypoint": ["/bin/serve"],
        "read_only": True,
        "tmpfs": {"/tmp": "size=8m"},
        "cap_drop": ["ALL"],
        "cap_add": ["NET_BIND_SERVICE"],
        "security_opt": ["label=disable"],
        "no_new_privileges": True,
        "init": True,
        "stop_signal": "SIGQUIT",
        "stop_grace_period": "5s",
        "networks": {"backend": {"aliases": ["api"]}},
        "extra_hosts": {"db.internal": "127.0.0.1"},
        "dns": ["127.0.0.1"],
    }


# Every field of a service, as a path from the service (list items by index).
FIELD_PATHS: list[tuple[Any, ...]] = [
    ("image",),
    ("tag",),
    ("replicas",),
    ("command",),
    ("command", 0),
    ("env",),
    ("env", "MODE"),
    ("secrets",),
    ("secrets", "API_TOKEN"),
    ("ports",),
    ("ports", 0),
    ("ports", 0, "container"),
    ("ports", 0, "host"),
    ("ports", 0, "host_ip"),
    ("ports", 0, "protocol"),
    ("config",),
    ("config", "path"),
    ("config", "on_change"),
    ("config", "keep"),
    ("config", "root"),
    ("config", "files"),
    ("config", "files", "app.conf"),
    ("config", "files", "app.conf", "contents"),
    ("config", "files", "app.conf", "source"),
    ("config", "files", "app.conf", "template"),
    ("config", "files", "app.conf", "mode"),
    ("config", "files", "app.conf", "owner"),
    ("config", "files", "app.conf", "group"),
    ("config", "files", "app.conf", "show_diff"),
    ("config", "files", "store.json", "etcd"),
    ("config", "files", "store.json", "etcd", "prefix"),
    ("config", "files", "store.json", "etcd", "format"),
    ("config", "files", "store.json", "etcd", "template"),
    ("config", "files", "store.json", "etcd", "required"),
    ("config", "files", "store.json", "etcd", "required", 0),
    ("config", "mode"),
    ("config", "build"),
    ("etcd_env",),
    ("environment_short",),
    ("data",),
    ("data", 0),
    ("data", 0, "host"),
    ("data", 0, "container"),
    ("data", 0, "read_only"),
    ("data", 1),
    ("data", 1, "volume"),
    ("data", 1, "driver"),
    ("data", 1, "driver_opts"),
    ("data", 1, "driver_opts", "type"),
    ("data", 1, "driver_opts", "o"),
    ("data", 1, "driver_opts", "device"),
    ("labels",),
    ("labels", "team"),
    ("resources",),
    ("resources", "memory"),
    ("resources", "memory_reservation"),
    ("resources", "cpus"),
    ("resources", "pids_limit"),
    ("ulimits",),
    ("ulimits", "nofile"),
    ("ulimits", "nofile", "soft"),
    ("ulimits", "nproc"),
    ("user",),
    ("working_dir",),
    ("entrypoint",),
    ("entrypoint", 0),
    ("read_only",),
    ("tmpfs",),
    ("tmpfs", "/tmp"),
    ("cap_drop",),
    ("cap_drop", 0),
    ("cap_add", 0),
    ("security_opt",),
    ("security_opt", 0),
    ("no_new_privileges",),
    ("privileged",),
    ("init",),
    ("stop_signal",),
    ("stop_grace_period",),
    ("networks",),
    ("networks", "backend"),
    ("networks", "backend", "aliases"),
    ("extra_hosts",),
    ("extra_hosts", "db.internal"),
    ("dns",),
    ("dns", 0),
    ("restart_policy",),
    ("logging",),
    ("logging", "driver"),
    ("logging", "options"),
    ("healthcheck",),
    ("healthcheck", "test"),
    ("healthcheck", "interval"),
    ("healthcheck", "timeout"),
    ("healthcheck", "retries"),
    ("healthcheck", "start_period"),
    ("update",),
    ("update", "parallelism"),
    ("update", "order"),
    ("update", "health_timeout"),
    ("update", "min_healthy_time"),
    ("update", "rollback"),
    ("environment",),
    ("no_such_field",),
]
TOP_PATHS: list[tuple[Any, ...]] = [
    ("environment",),
    ("defaults",),
    ("defaults", "restart_policy"),
    ("allowed_host_paths",),
    ("allowed_host_paths", 0),
    ("services",),
    ("environment_short",),
    ("registries",),
    ("registries", "registry.example.com"),
    ("registries", "registry.example.com", "password"),
    ("etcd",),
    ("etcd", "endpoints"),
    ("etcd", "endpoints", 0),
    ("etcd", "password"),
    ("etcd", "timeout"),
]


def set_path(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


@st.composite
def mutated_pillar(draw: st.DrawFn, image: str = "registry.example.com/web") -> dict[str, Any]:
    """The base service (and pillar top) with random values at random fields."""
    service = base_service(image)
    top: dict[str, Any] = {
        "environment": "test",
        "defaults": {"restart_policy": "always"},
        "allowed_host_paths": ["/srv/dockerops"],
        "services": {"web": service},
        "environment_short": "prd",
        "registries": {"registry.example.com": {"username": "ci", "password": "r3g-s3cret-pw"}},
        "etcd": {
            "endpoints": ["http://127.0.0.1:2379"],
            "username": "web",
            "password": "3tcd-s3cret-pw",
            "timeout": "5s",
        },
    }
    for path in draw(st.lists(st.sampled_from(FIELD_PATHS), min_size=1, max_size=4)):
        # An earlier mutation may have replaced the parent: then nothing is set.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            set_path(service, path, draw(values))
    if draw(st.integers(0, 9)) == 0:
        path = draw(st.sampled_from(TOP_PATHS))
        with contextlib.suppress(KeyError, IndexError, TypeError):
            set_path(top, path, draw(values))
    return {"dockerops": copy.deepcopy(top)}


# Whole random shapes, from the top: dockerops itself, services, one service.
random_shapes = st.one_of(
    values.map(lambda v: {"dockerops": v}),
    values.map(lambda v: {"dockerops": {"services": v}}),
    st.dictionaries(keys, values, max_size=3).map(lambda s: {"dockerops": {"services": s}}),
    values.map(lambda v: {"dockerops": {"services": {"web": v}}}),
)
pillars = st.one_of(random_shapes, mutated_pillar())
