"""Config files rendered from a real etcd (Debian's etcd-server) into real
containers (the test bed's dockerd), through Salt's loader: a key change seen
by the ``dockerops_etcd`` beacon and applied the way
``salt/reactor/dockerops_etcd.sls`` says; etcd going away mid-render, a
missing required key and a failing ``config.check`` leaving the running
replicas alone; and Debian's nginx serving a server block rendered from keys.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any

import pytest
from salt.beacons import Beacon
from salt.loader import render as renderers_loader
from salt.minion import load_args_and_kwargs
from salt.modules.state import sls_id as salt_sls_id
from salt.state import Compiler
from salt.utils.args import condition_input
from salt.utils.reactor import Reactor, ReactWrap

from dockerops.etcd import EtcdClient
from tests.functional.helpers import (
    container_events,
    containers,
    http_get,
    lowest_healthy,
    state_return,
)
from tests.support import nginx
from tests.support.etcd import Etcd

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
REACTOR = "salt://reactor/dockerops_etcd.sls"  # as README's master config names it
FORMULA = "dockerops.services"

# Healthy only while the config from etcd says so (a key, STATUS=ok).
HEALTH_FROM_ETCD = {
    "test": "grep -qx STATUS=ok /etc/app/app.env",
    "interval": "500ms",
    "timeout": "1s",
    "retries": 2,
}
# A config.check that refuses one value of one key.
REFUSE_BAD_MODE = (
    "if grep -qx MODE=bad /etc/app/app.env; then echo 'MODE=bad is refused' >&2; exit 1; fi"
)


# -- pillar --------------------------------------------------------------------


def etcd_file(prefix: str, fmt: str = "env", **fields: Any) -> dict[str, Any]:
    return {"etcd": {"prefix": prefix, "format": fmt, **fields}}


def pillar_of(etcd: Etcd, host_root: Path, service: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "dockerops": {
            "environment": "integration",
            "allowed_host_paths": [str(host_root)],
            "etcd": {"endpoints": [etcd.url], "timeout": "2s"},
            "services": {service: spec},
        }
    }


def demo_service(
    repository: str, host_root: Path, service: str, files: dict[str, Any], **config: Any
) -> dict[str, Any]:
    """2 replicas of demo-http 1.0, config from ``files`` at /etc/app, rolling."""
    return {
        "image": repository,
        "tag": "1.0",
        "replicas": 2,
        "healthcheck": HEALTH_FROM_ETCD,
        "config": {
            "path": "/etc/app",
            "root": str(host_root / service / "config"),
            "on_change": "rolling",
            "files": files,
            **config,
        },
        "update": {"health_timeout": "15s"},
    }


# -- what a test reads back ----------------------------------------------------


def ids(docker_client: Any, service: str) -> dict[str, str]:
    return {name: c.id for name, c in containers(docker_client, service).items()}


def exec_cat(docker_client: Any, name: str, path: str) -> str:
    result = docker_client.containers.get(name).exec_run(["cat", path])
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def config_root(host_root: Path, service: str) -> Path:
    return host_root / service / "config"


def on_disk(host_root: Path, service: str) -> tuple[str, list[str]]:
    """Where ``..data`` points, and every version directory."""
    root = config_root(host_root, service)
    versions = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    return os.readlink(root / "..data"), versions


def status(salt: Any, service: str) -> list[dict[str, Any]]:
    return list(salt.modules.dockerops.status(service)[service])


def running(salt: Any, service: str) -> dict[str, Any]:
    salt.context.clear()  # a new state run: the config is rendered from etcd again
    return state_return(salt.states.dockerops.running(name=service))


def config_managed(salt: Any, service: str) -> dict[str, Any]:
    salt.context.clear()
    return state_return(salt.states.dockerops.config_managed(name=service))


def deploy(salt: Any, pillar: dict[str, Any], service: str) -> str:
    """Load ``pillar``, bring ``service`` up; its config version."""
    salt.set_pillar(pillar)
    ret = running(salt, service)
    assert ret["result"] is True, ret["comment"]
    version = ret["changes"]["config"]["version"]["new"]
    assert isinstance(version, str)
    return version


# -- the beacon and the reactor, as a minion and a master run them ---------------


def beacon_pass(
    minion_opts: dict[str, Any], pillar: dict[str, Any], state_dir: Path, service: str
) -> list[dict[str, Any]]:
    """One pass of the minion's beacons with ``dockerops_etcd`` configured for
    ``service`` (Salt's ``Beacon.process``: it adds the tag prefix and the
    minion id); the events as the minion fires them, without their time."""
    opts = dict(
        minion_opts,
        pillar=pillar,
        beacons_dirs=[str(REPO / "_beacons")],
        # The beacon remembers the revision it saw here: a memory of this test's own.
        **{"dockerops.state_dir": str(state_dir)},
    )
    found = Beacon(opts, {}).process({"dockerops_etcd": [{"services": [service]}]}, {})
    for event in found:
        assert isinstance(event["data"].pop("time"), float)
    return list(found)


class _ReactorCompiler(Compiler):
    """The reactor's compiler without its event loop (Reactor is a process)."""

    aliases = Reactor.aliases
    resolve_aliases = Reactor.resolve_aliases


class _RecordingReactWrap(ReactWrap):
    """Salt's ReactWrap turning a reaction into a client call; the LocalClient
    publish is recorded instead of sent (there is no master here)."""

    def __init__(self) -> None:  # no worker pool: only ``local`` is used
        self.published: list[dict[str, Any]] = []

    def populate_client_cache(self, low: dict[str, Any]) -> None:
        pass

    def local(self, fun: str, tgt: str, **kwargs: Any) -> None:
        self.published.append({"fun": fun, "tgt": tgt, **kwargs})


def react(salt: Any, tag: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """What the master's reactor publishes for event ``tag``/``data`` with
    README's reactor set-up: the SLS rendered and compiled as
    ``Reactor.reactions`` does, each chunk run through ``ReactWrap.run``."""
    path = salt.modules.cp.cache_file(REACTOR)
    assert path, f"{REACTOR} not found in file_roots"
    opts = salt.modules.config.items()
    compiler = _ReactorCompiler(opts, renderers_loader(opts, salt.modules))
    high = compiler.render_template(path, tag=tag, data=data)
    for name in high:
        high[name]["__sls__"] = path
    assert compiler.verify_high(high) == []
    chunks, errors = compiler.compile_high_data(high)
    assert errors == []
    compiler.resolve_aliases(chunks)
    wrap = _RecordingReactWrap()
    for chunk in chunks:
        wrap.run(chunk)
    return wrap.published


def minion_call(salt: Any, published: dict[str, Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The function, args and kwargs a minion runs for a LocalClient publish
    (``condition_input`` on the master, ``load_args_and_kwargs`` on the minion)."""
    func = salt.modules[published["fun"]]
    payload = condition_input(published.get("arg") or (), published.get("kwarg") or {})
    args, kwargs = load_args_and_kwargs(func, payload)
    return func, args, kwargs


def by_state_id(ret: Any) -> dict[str, dict[str, Any]]:
    """A state run's results by state id (saltfactories wraps ``state.sls_id``
    as if it returned one state: ``raw`` holds them all)."""
    raw = getattr(ret, "raw", ret)
    assert isinstance(raw, dict), raw
    return {result["__id__"]: result for result in raw.values()}


# -- the tests -----------------------------------------------------------------


def test_a_key_change_is_seen_by_the_beacon_and_the_reaction_rolls_every_replica(
    salt, minion_opts, etcd, docker_client, demo_images, service_name, host_root, tmp_path
):
    prefix = f"/{service_name}/app/"
    etcd.put(prefix + "STATUS", "ok")
    etcd.put(prefix + "VERSION", "1")
    pillar = pillar_of(
        etcd,
        host_root,
        service_name,
        demo_service(
            demo_images["repository"], host_root, service_name, {"app.env": etcd_file(prefix)}
        ),
    )
    old = deploy(salt, pillar, service_name)
    before = ids(docker_client, service_name)
    assert len(before) == 2
    for name in before:
        assert exec_cat(docker_client, name, "/etc/app/app.env") == "STATUS=ok\nVERSION=1\n"

    minion = minion_opts["id"]
    beacon_state = tmp_path / "beacon-state"
    assert beacon_pass(minion_opts, pillar, beacon_state, service_name) == []  # the baseline
    revision = etcd.put(prefix + "VERSION", "2")
    events = beacon_pass(minion_opts, pillar, beacon_state, service_name)
    assert events == [
        {
            "tag": f"salt/beacon/{minion}/dockerops_etcd/{service_name}/changed",
            "data": {
                "event": "changed",
                "service": service_name,
                "files": ["app.env"],
                "keys": [prefix + "VERSION"],
                "keys_total": 1,
                "revision": revision,
                "compacted": False,
                "id": minion,
            },
            "beacon_name": "dockerops_etcd",
        }
    ]
    assert beacon_pass(minion_opts, pillar, beacon_state, service_name) == []  # once

    # The master's reaction: state.sls_id of this service's running state, on this minion.
    (published,) = react(salt, events[0]["tag"], events[0]["data"])
    assert (published["fun"], published["tgt"], published.get("tgt_type", "glob")) == (
        "state.sls_id",
        minion,
        "glob",
    )
    func, args, kwargs = minion_call(salt, published)
    try:
        bound = inspect.signature(salt_sls_id).bind(*args, **kwargs)
    except TypeError as err:
        pytest.fail(f"the minion cannot call state.sls_id with {args} {kwargs}: {err}")
    assert (bound.arguments["id_"], bound.arguments["mods"]) == (
        f"dockerops-service-{service_name}-running",
        FORMULA,
    )

    since = time.time()
    results = by_state_id(func(*args, **kwargs))
    config_id = f"dockerops-service-{service_name}-config-managed"
    running_id = f"dockerops-service-{service_name}-running"
    assert set(results) == {config_id, running_id}  # the running state and what it requires
    for result in results.values():
        assert result["result"] is True, result["comment"]
    new = results[config_id]["changes"]["version"]["new"]
    assert results[config_id]["changes"]["version"]["old"] == old
    # A file from etcd keeps its values out of the job's return unless told.
    assert results[config_id]["changes"]["files"]["app.env"]["diff"] == (
        "(hidden: show_diff is false)"
    )

    # Rolling, start-first: -1 and -2 replaced in the spare slots 3 and 4.
    changes = results[running_id]["changes"]
    for replaced, now in ((1, 3), (2, 4)):
        change = changes[f"{service_name}-{now}"]
        assert change["recreated"] == {"changed": ["config"]}
        assert change["container"] == {
            "old": f"{service_name}-{replaced}",
            "new": f"{service_name}-{now}",
        }
    after = ids(docker_client, service_name)
    assert sorted(after) == [f"{service_name}-3", f"{service_name}-4"]
    assert not set(after.values()) & set(before.values())
    for name in after:
        assert exec_cat(docker_client, name, "/etc/app/app.env") == "STATUS=ok\nVERSION=2\n"
    rows = status(salt, service_name)
    assert [(r["container"], r["config_version"], r["health"]) for r in rows] == [
        (name, new, "healthy") for name in sorted(after)
    ]
    assert on_disk(host_root, service_name)[0] == f"..{new}"
    # Never fewer than 2 healthy replicas while it rolled.
    assert (
        lowest_healthy(container_events(docker_client, service_name, since), set(before.values()))
        == 2
    )


def test_etcd_stopping_mid_render_leaves_the_running_config_untouched(
    salt, etcd, docker_client, demo_images, service_name, host_root, monkeypatch
):
    app, db = f"/{service_name}/app/", f"/{service_name}/db/"
    etcd.put(app + "STATUS", "ok")
    etcd.put(db + "host", "db1")
    files = {"app.env": etcd_file(app), "db.json": etcd_file(db, "json")}
    pillar = pillar_of(
        etcd,
        host_root,
        service_name,
        demo_service(demo_images["repository"], host_root, service_name, files),
    )
    version = deploy(salt, pillar, service_name)
    before, disk = ids(docker_client, service_name), on_disk(host_root, service_name)
    etcd.put(app + "LEVEL", "2")  # a render that finished would make a new version
    etcd.put(db + "host", "db2")

    read = EtcdClient.get_prefix
    calls: list[str] = []

    def etcd_stops_after_the_first_read(
        self: EtcdClient, prefix: str, revision: int | None = None
    ) -> Any:
        calls.append(prefix)
        snapshot = read(self, prefix, revision)
        if len(calls) == 1:
            etcd.stop()
        return snapshot

    monkeypatch.setattr(EtcdClient, "get_prefix", etcd_stops_after_the_first_read)
    try:
        ret = running(salt, service_name)
        assert sorted(calls) == [app, db]  # the first prefix was read, the second was not
        assert ret["result"] is False
        assert f"etcd unreachable ({etcd.url}: connection refused)" in ret["comment"]
        assert ret["changes"] == {}
        # etcd still away: config_managed says the same, and changes nothing either.
        managed = config_managed(salt, service_name)
        assert managed["result"] is False
        assert "etcd unreachable" in managed["comment"] and managed["changes"] == {}
    finally:
        if etcd.process is None:
            etcd.start()  # the session's etcd: other tests need it
    assert ids(docker_client, service_name) == before
    assert on_disk(host_root, service_name) == disk
    assert {r["config_version"] for r in status(salt, service_name)} == {version}
    for name in before:
        assert exec_cat(docker_client, name, "/etc/app/db.json") == '{\n  "host": "db1"\n}\n'


def test_a_missing_required_key_fails_the_state_and_changes_nothing(
    salt, etcd, docker_client, demo_images, service_name, host_root
):
    prefix = f"/{service_name}/app/"
    etcd.put(prefix + "STATUS", "ok")
    etcd.put(prefix + "DB_HOST", "db1")
    files = {"app.env": etcd_file(prefix, required=["STATUS", "DB_HOST"])}
    pillar = pillar_of(
        etcd,
        host_root,
        service_name,
        demo_service(demo_images["repository"], host_root, service_name, files),
    )
    version = deploy(salt, pillar, service_name)
    before, disk = ids(docker_client, service_name), on_disk(host_root, service_name)

    etcd.delete(prefix + "DB_HOST")
    etcd.put(prefix + "LEVEL", "2")
    expected = (
        f"dockerops:services:{service_name}:config:files:app.env:etcd:required: "
        "DB_HOST is not in etcd"
    )
    for state in (config_managed, running):
        ret = state(salt, service_name)
        assert ret["result"] is False
        assert expected in ret["comment"]
        assert ret["changes"] == {}
    assert ids(docker_client, service_name) == before
    assert on_disk(host_root, service_name) == disk
    assert {r["config_version"] for r in status(salt, service_name)} == {version}


def test_a_value_config_check_refuses_blocks_the_rollout(
    salt, etcd, docker_client, demo_images, service_name, host_root
):
    prefix = f"/{service_name}/app/"
    etcd.put(prefix + "STATUS", "ok")
    etcd.put(prefix + "MODE", "fast")
    spec = demo_service(
        demo_images["repository"],
        host_root,
        service_name,
        {"app.env": etcd_file(prefix)},
        check=REFUSE_BAD_MODE,
    )
    version = deploy(salt, pillar_of(etcd, host_root, service_name, spec), service_name)
    before = ids(docker_client, service_name)
    data_before = on_disk(host_root, service_name)[0]

    etcd.put(prefix + "MODE", "bad")
    for state in (config_managed, running):
        ret = state(salt, service_name)
        assert ret["result"] is False
        assert "failed its check" in ret["comment"]
        assert "MODE=bad is refused" in ret["comment"]
    assert ids(docker_client, service_name) == before
    assert on_disk(host_root, service_name)[0] == data_before
    assert {r["config_version"] for r in status(salt, service_name)} == {version}
    for name in before:
        assert "MODE=fast" in exec_cat(docker_client, name, "/etc/app/app.env")


SITE_TEMPLATE = """\
server {
    listen {{ values["listen"] }};
    location = /healthz { return 200 'ok'; }
    location / { return 200 '{{ values["body"] }}\\n'; }
}
"""


def sighups(docker_client: Any, name: str) -> int:
    logs = docker_client.containers.get(name).logs().decode(errors="replace")
    return logs.count("signal 1 (SIGHUP) received")


def test_nginx_serves_a_server_block_rendered_from_etcd_and_reloads_on_a_key_change(
    salt, etcd, docker_client, nginx_image, service_name, host_root, state_tree, free_ports
):
    (state_tree / service_name).mkdir()
    (state_tree / service_name / "site.conf.j2").write_text(SITE_TEMPLATE)
    prefix = f"/{service_name}/site/"
    etcd.put(prefix + "listen", "80")
    etcd.put(prefix + "body", "from etcd v1")
    port = free_ports(1)
    repository, tag = nginx_image.rsplit(":", 1)
    spec = {
        "image": repository,
        "tag": tag,
        "replicas": 1,
        "ports": [{"container": 80, "host": port}],
        "healthcheck": nginx.HEALTHCHECK,
        "update": {"health_timeout": "20s", "min_healthy_time": "1s"},
        "config": {
            "path": "/etc/nginx/conf.d",
            "root": str(config_root(host_root, service_name)),
            "on_change": "signal:SIGHUP",
            "check": "nginx -t",
            "files": {
                "default.conf": etcd_file(
                    prefix,
                    "template",
                    template=f"salt://{service_name}/site.conf.j2",
                    required=["listen", "body"],
                )
            },
        },
    }
    salt.set_pillar(pillar_of(etcd, host_root, service_name, spec))

    def apply() -> dict[str, dict[str, Any]]:
        """What the reactor runs: the service's running state of the formula."""
        by_id = by_state_id(
            salt.modules.state.sls_id(f"dockerops-service-{service_name}-running", FORMULA)
        )
        return {
            "config": by_id[f"dockerops-service-{service_name}-config-managed"],
            "service": by_id[f"dockerops-service-{service_name}-running"],
        }

    first = apply()
    assert first["service"]["result"] is True, first["service"]["comment"]
    assert http_get(port, "/") == "from etcd v1\n"
    name = f"{service_name}-1"
    (container_id,) = ids(docker_client, service_name).values()
    hups = sighups(docker_client, name)

    etcd.put(prefix + "body", "from etcd v2")
    second = apply()
    assert all(r["result"] is True for r in second.values()), second
    new = second["config"]["changes"]["version"]["new"]
    assert second["service"]["changes"][name]["signaled"] == "SIGHUP"
    assert f"sent SIGHUP to {name} (healthy" in second["service"]["comment"]
    assert ids(docker_client, service_name) == {name: container_id}
    assert sighups(docker_client, name) == hups + 1
    assert http_get(port, "/") == "from etcd v2\n"
    assert [r["config_version"] for r in status(salt, service_name)] == [new]

    # A value that makes an invalid directive: nginx -t stops it, nothing reloads.
    etcd.put(prefix + "listen", "80 no_such_option")
    third = apply()
    assert third["config"]["result"] is False
    assert "failed its check (nginx -t in" in third["config"]["comment"]
    assert "[emerg]" in third["config"]["comment"]
    assert "no_such_option" in third["config"]["comment"]
    assert third["service"]["result"] is False  # its requisite failed
    assert on_disk(host_root, service_name)[0] == f"..{new}"
    assert ids(docker_client, service_name) == {name: container_id}
    assert sighups(docker_client, name) == hups + 1
    assert http_get(port, "/") == "from etcd v2\n"
    assert [r["config_version"] for r in status(salt, service_name)] == [new]
