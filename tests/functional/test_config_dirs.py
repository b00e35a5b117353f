"""Config directories: versions, mounts, on_change policies, rollback, watch."""

from __future__ import annotations

import os
import time

import pytest

from tests.functional.helpers import (
    container_events,
    containers,
    first,
    http_get,
    lowest_healthy,
    service_pillar,
    state_return,
)

pytestmark = pytest.mark.docker

HEALTH_FROM_CONFIG = {
    # Healthy only while the mounted config says so: a bad config version never
    # becomes healthy, which is what a rolling restart must catch.
    "test": "grep -q ok /etc/app/health.conf",
    "interval": "500ms",
    "timeout": "1s",
    "retries": 2,
}


@pytest.fixture
def config_pillar(demo_images, service_name, host_root):
    """``config_pillar(files, on_change, service=..., **fields)``: a pillar with one service.

    The service (``service_name`` unless named) runs 2 replicas of demo-http
    1.0 with ``files`` as its config directory, mounted at /etc/app, under
    ``host_root`` (the allowed host path).
    """

    def make(files, on_change="rolling", *, service=service_name, **fields):
        spec = {
            "image": demo_images["repository"],
            "tag": "1.0",
            "replicas": 2,
            "config": {
                "path": "/etc/app",
                "root": str(host_root / service / "config"),
                "on_change": on_change,
                "files": files,
            },
            "update": {"health_timeout": "15s"},
            **fields,
        }
        return {
            "dockerops": {
                "environment": "integration",
                "allowed_host_paths": [str(host_root)],
                "services": {service: spec},
            }
        }

    return make


def deployed(salt, pillar, name):
    """Load ``pillar`` and bring service ``name`` up; the state's return."""
    salt.set_pillar(pillar)
    ret = running(salt, name)
    assert ret["result"] is True, ret["comment"]
    return ret


def edit_file(salt, pillar, service, name, contents):
    """Change one config file in ``pillar`` and load the new pillar."""
    pillar["dockerops"]["services"][service]["config"]["files"][name] = {"contents": contents}
    salt.set_pillar(pillar)


def running(salt, name, **kwargs):
    return state_return(salt.states.dockerops.running(name=name, **kwargs))


def ids(client, name):
    return {n: (c.id, c.attrs["State"]["StartedAt"]) for n, c in containers(client, name).items()}


def exec_cat(client, container_name, path):
    result = client.containers.get(container_name).exec_run(["cat", path])
    return result.output.decode()


def test_first_apply_mounts_an_immutable_version_read_only(
    salt, docker_client, config_pillar, service_name, host_root, free_ports
):
    port = free_ports(4)
    pillar = config_pillar(
        {"app.conf": {"contents": "color=blue\n"}, "conf.d/extra.conf": {"contents": "x=1\n"}},
        ports=[{"container": 8080, "host": port}],
    )
    ret = deployed(salt, pillar, service_name)
    version = ret["changes"]["config"]["version"]["new"]
    assert ret["changes"]["config"]["version"]["old"] is None
    assert set(ret["changes"]["config"]["files"]) == {"app.conf", "conf.d/extra.conf"}

    root = host_root / service_name / "config"
    assert os.readlink(root / "..data") == f"..{version}"
    assert (root / f"..{version}" / "app.conf").read_text() == "color=blue\n"
    assert (root / "app.conf").read_text() == "color=blue\n"  # through ..data
    for container in containers(docker_client, service_name).values():
        (mount,) = container.attrs["Mounts"]
        assert mount["Source"] == str(root / f"..{version}")
        assert mount["Destination"] == "/etc/app"
        assert mount["RW"] is False
        assert container.labels["io.dockerops.config-version"] == version
    assert "color=blue" in http_get(port + 1, "/cgi-bin/config")

    again = running(salt, service_name)
    assert again["changes"] == {}, again
    assert again["result"] is True


def test_config_change_restarts_exactly_that_services_replicas(
    salt, docker_client, config_pillar, service_name, extra_service, host_root
):
    other = extra_service("o")
    pillar = config_pillar({"app.conf": {"contents": "v=1\n"}})
    other_pillar = config_pillar({"app.conf": {"contents": "o=1\n"}}, service=other)
    pillar["dockerops"]["services"].update(other_pillar["dockerops"]["services"])
    deployed(salt, pillar, service_name)
    assert running(salt, other)["result"] is True
    mine_before, other_before = ids(docker_client, service_name), ids(docker_client, other)
    since = time.time()
    old_version = containers(docker_client, service_name)[f"{service_name}-1"].labels[
        "io.dockerops.config-version"
    ]

    edit_file(salt, pillar, service_name, "app.conf", "v=2\n")
    ret = running(salt, service_name)
    assert ret["result"] is True, ret["comment"]
    new_version = ret["changes"]["config"]["version"]["new"]
    assert ret["changes"]["config"]["version"]["old"] == old_version
    diff = ret["changes"]["config"]["files"]["app.conf"]["diff"]
    assert "-v=1" in diff and "+v=2" in diff
    # Keyed by what runs now: start-first replaced -1 and -2 in the spare slots 3 and 4.
    for replaced, now in ((1, 3), (2, 4)):
        assert ret["changes"][f"{service_name}-{now}"] == {
            "recreated": {"changed": ["config"]},
            "config_version": {"old": old_version, "new": new_version},
            "container": {"old": f"{service_name}-{replaced}", "new": f"{service_name}-{now}"},
        }
    mine_after = ids(docker_client, service_name)
    assert len(mine_after) == 2
    old_ids = {v[0] for v in mine_before.values()}
    assert not old_ids & {v[0] for v in mine_after.values()}
    for name in mine_after:
        assert exec_cat(docker_client, name, "/etc/app/app.conf") == "v=2\n"
    # The other service: same containers, never restarted.
    assert ids(docker_client, other) == other_before
    # Rolling, start-first: never fewer than 2 healthy replicas.
    events = container_events(docker_client, service_name, since)
    assert lowest_healthy(events, old_ids) == 2
    # The previous version is kept for rollback.
    assert (host_root / service_name / "config" / f"..{old_version}").is_dir()


def test_test_mode_reports_a_config_change_and_touches_nothing(
    salt, docker_client, config_pillar, service_name, host_root
):
    pillar = config_pillar({"app.conf": {"contents": "a\n"}})
    deployed(salt, pillar, service_name)
    before = ids(docker_client, service_name)
    root = host_root / service_name / "config"
    versions_before = sorted(p.name for p in root.iterdir())

    edit_file(salt, pillar, service_name, "app.conf", "b\n")
    dry = running(salt, service_name, test=True)
    assert dry["result"] is None
    assert "+b" in dry["changes"]["config"]["files"]["app.conf"]["diff"]
    # Keyed by what will run: start-first replaces -1 and -2 in the spare slots 3 and 4.
    assert set(dry["changes"]) == {"config", f"{service_name}-3", f"{service_name}-4"}
    dry_config = state_return(salt.states.dockerops.config_managed(name=service_name, test=True))
    assert dry_config["result"] is None
    assert dry_config["changes"] == dry["changes"]["config"]
    assert ids(docker_client, service_name) == before
    assert sorted(p.name for p in root.iterdir()) == versions_before

    salt.context.clear()  # a new run
    real = running(salt, service_name)
    assert real["changes"] == dry["changes"]


def test_formula_flow_reports_the_same_changes_under_test(
    salt, docker_client, config_pillar, service_name, state_tree
):
    """config_managed then running (as services.sls does): test=True == real."""
    pillar = config_pillar({"app.conf": {"contents": "a\n"}})
    sls = f"""
config:
  dockerops.config_managed:
    - name: {service_name}
service:
  dockerops.running:
    - name: {service_name}
    - require:
      - dockerops: config
"""

    (state_tree / f"{service_name}.sls").write_text(sls)

    def run(test):
        return {r.id: r.changes for r in salt.modules.state.sls(service_name, test=test)}

    salt.set_pillar(pillar)
    assert run(False)["service"]
    edit_file(salt, pillar, service_name, "app.conf", "b\n")
    before = ids(docker_client, service_name)
    dry = run(True)
    assert ids(docker_client, service_name) == before
    assert set(dry["config"]) == {"version", "files"}
    # The config change is reported once, by config_managed.
    # Keyed by what will run: start-first replaces -1 and -2 in the spare slots 3 and 4.
    assert set(dry["service"]) == {f"{service_name}-3", f"{service_name}-4"}
    assert run(False) == dry


def test_signal_policy_reloads_without_restarting(
    salt, docker_client, config_pillar, service_name, free_ports
):
    port = free_ports(4)
    pillar = config_pillar(
        {"app.conf": {"contents": "one\n"}},
        on_change="signal:SIGHUP",
        ports=[{"container": 8080, "host": port}],
    )
    deployed(salt, pillar, service_name)
    before = ids(docker_client, service_name)

    edit_file(salt, pillar, service_name, "app.conf", "two\n")
    ret = running(salt, service_name)
    assert ret["result"] is True, ret["comment"]
    new = ret["changes"]["config"]["version"]["new"]
    for replica in (1, 2):
        change = ret["changes"][f"{service_name}-{replica}"]
        assert change["signaled"] == "SIGHUP"
        assert change["config_version"]["new"] == new
    # Same containers, never restarted; they see the new file and got the signal.
    assert ids(docker_client, service_name) == before
    for replica, replica_port in ((1, port), (2, port + 1)):
        assert exec_cat(docker_client, f"{service_name}-{replica}", "/etc/app/app.conf") == "two\n"
        assert http_get(replica_port, "/reloads").strip() == "1"
    assert "two" in http_get(port, "/cgi-bin/config")
    # Signalled once: the next run has nothing to do.
    again = running(salt, service_name)
    assert again["changes"] == {}, again


def test_none_policy_updates_files_and_nothing_else(
    salt, docker_client, config_pillar, service_name
):
    pillar = config_pillar({"app.conf": {"contents": "one\n"}}, on_change="none", replicas=1)
    deployed(salt, pillar, service_name)
    before = ids(docker_client, service_name)
    edit_file(salt, pillar, service_name, "app.conf", "two\n")
    ret = running(salt, service_name)
    assert set(ret["changes"]) == {"config"}
    assert ids(docker_client, service_name) == before
    assert exec_cat(docker_client, f"{service_name}-1", "/etc/app/app.conf") == "two\n"


def test_restart_policy_replaces_all_replicas_at_once(
    salt, docker_client, config_pillar, service_name
):
    pillar = config_pillar({"app.conf": {"contents": "one\n"}}, on_change="restart")
    deployed(salt, pillar, service_name)
    before = ids(docker_client, service_name)
    edit_file(salt, pillar, service_name, "app.conf", "two\n")
    since = time.time()
    ret = running(salt, service_name)
    assert ret["result"] is True, ret["comment"]
    after = ids(docker_client, service_name)
    assert all(after[n][0] != before[n][0] for n in before)
    # All at once: both old replicas were gone before the first replacement
    # was created (rolling would create replica 1's before stopping replica 2).
    events = container_events(docker_client, service_name, since)
    old_ids, new_ids = {v[0] for v in before.values()}, {v[0] for v in after.values()}
    destroyed = [i for i, e in enumerate(events) if e[0] == "destroy" and e[2] in old_ids]
    created = [i for i, e in enumerate(events) if e[0] == "create" and e[2] in new_ids]
    assert len(destroyed) == 2 and len(created) == 2
    assert max(destroyed) < min(created)


@pytest.mark.parametrize("order", ["start-first", "stop-first"])
def test_a_bad_config_version_is_rolled_back(
    salt, docker_client, config_pillar, service_name, host_root, order
):
    pillar = config_pillar(
        {"health.conf": {"contents": "ok\n"}},
        healthcheck=HEALTH_FROM_CONFIG,
        update={"health_timeout": "6s", "order": order},
    )
    initial = deployed(salt, pillar, service_name)
    good = initial["changes"]["config"]["version"]["new"]
    before = ids(docker_client, service_name)

    edit_file(salt, pillar, service_name, "health.conf", "bad\n")
    started = time.monotonic()
    since = time.time()
    ret = running(salt, service_name)
    assert ret["result"] is False
    assert "not healthy" in ret["comment"] or "unhealthy" in ret["comment"]
    assert time.monotonic() - started < 30
    after = containers(docker_client, service_name)
    assert sorted(after) == sorted(before)
    if order == "start-first":
        # The replacement never became healthy, so no replica was stopped:
        # the very same containers still run.
        assert "rolled_back" not in ret["changes"]
        assert {n: c.id for n, c in after.items()} == {n: v[0] for n, v in before.items()}
        events = container_events(docker_client, service_name, since)
        assert lowest_healthy(events, {v[0] for v in before.values()}) == 2
    else:
        # Replica 1 was replaced in place, then put back; replica 2 untouched.
        assert ret["changes"]["rolled_back"] == [f"{service_name}-1"]
        assert after[f"{service_name}-2"].id == before[f"{service_name}-2"][0]
    for container in after.values():
        assert container.labels["io.dockerops.config-version"] == good
        assert container.attrs["State"]["Health"]["Status"] in ("healthy", "starting")
    root = host_root / service_name / "config"
    assert os.readlink(root / "..data") == f"..{good}"
    status = salt.modules.dockerops.status(service_name)[service_name]
    assert {r["config_version"] for r in status} == {good}


def test_watch_restarts_per_policy_but_not_fresh_replicas(
    salt, docker_client, demo_images, service_name, tmp_path
):
    salt.set_pillar(service_pillar(service_name, demo_images["repository"], replicas=2))
    trigger = tmp_path / "trigger.conf"
    sls = """
trigger:
  file.managed:
    - name: {path}
    - contents: {contents}

service:
  dockerops.running:
    - name: {name}
    - watch:
      - file: trigger
"""
    initial = salt.modules.state.template_str(
        sls.format(path=trigger, contents="one", name=service_name)
    )
    results = {r.id: r for r in initial}
    assert results["service"].result is True, results["service"].comment
    # Created by this run: the watch must not restart them a second time.
    assert set(results["service"].changes) == {f"{service_name}-1", f"{service_name}-2"}
    assert all("created" in c for c in results["service"].changes.values())
    before = ids(docker_client, service_name)

    since = time.time()
    second = salt.modules.state.template_str(
        sls.format(path=trigger, contents="two", name=service_name)
    )
    results = {r.id: r for r in second}
    assert results["service"].result is True, results["service"].comment
    assert results["service"].changes == {
        f"{service_name}-1": {"restarted": True},
        f"{service_name}-2": {"restarted": True},
    }
    after = ids(docker_client, service_name)
    # Same containers, restarted (rolling): new StartedAt, replica 1 first.
    assert {n: v[0] for n, v in after.items()} == {n: v[0] for n, v in before.items()}
    assert all(after[n][1] != before[n][1] for n in before)
    events = container_events(docker_client, service_name, since)
    one, two = f"{service_name}-1", f"{service_name}-2"
    assert first(events, "health_status: healthy", one) < first(events, "kill", two)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("files", {"../escape": {"contents": "x"}}, "config:files: '../escape'"),
        ("files", {"/etc/passwd": {"contents": "x"}}, "config:files: '/etc/passwd'"),
        ("root", "/etc", "config:root: /etc is outside"),
        ("path", "relative/path", "config:path: container paths must be absolute"),
        ("on_change", "sometimes", "config:on_change: expected rolling"),
    ],
)
def test_bad_config_is_refused_with_nothing_touched(
    salt, docker_client, config_pillar, service_name, host_root, field, value, expected
):
    pillar = config_pillar({"app.conf": {"contents": "x"}})
    pillar["dockerops"]["services"][service_name]["config"][field] = value
    salt.set_pillar(pillar)
    ret = running(salt, service_name)
    assert ret["result"] is False
    assert f"dockerops:services:{service_name}:{expected}" in ret["comment"]
    assert containers(docker_client, service_name) == {}
    assert not (host_root / service_name).exists()


def test_data_mount_outside_the_allowlist_is_refused(
    salt, docker_client, config_pillar, service_name
):
    pillar = config_pillar({"app.conf": {"contents": "x"}})
    pillar["dockerops"]["services"][service_name]["data"] = [{"host": "/", "container": "/host"}]
    salt.set_pillar(pillar)
    ret = running(salt, service_name)
    assert ret["result"] is False
    assert f"dockerops:services:{service_name}:data:0:host: / is outside" in ret["comment"]
    assert containers(docker_client, service_name) == {}


def test_restart_module_is_rolling_and_health_gated(
    salt, docker_client, config_pillar, service_name
):
    pillar = config_pillar({"app.conf": {"contents": "x\n"}})
    deployed(salt, pillar, service_name)
    before = ids(docker_client, service_name)
    dry = salt.modules.dockerops.restart(service_name, test=True)
    assert (dry["result"], dry["test"]) == (True, True)
    assert ids(docker_client, service_name) == before
    since = time.time()
    out = salt.modules.dockerops.restart(service_name)
    assert out["result"] is True, out["comment"]
    assert out["changes"] == {
        f"{service_name}-1": {"restarted": True},
        f"{service_name}-2": {"restarted": True},
    }
    after = ids(docker_client, service_name)
    assert {n: v[0] for n, v in after.items()} == {n: v[0] for n, v in before.items()}
    # Replica 2 was only restarted once replica 1 was healthy again.
    events = container_events(docker_client, service_name, since)
    one, two = f"{service_name}-1", f"{service_name}-2"
    assert first(events, "health_status: healthy", one) < first(events, "kill", two)


def test_status_reports_the_version_a_signalled_replica_loaded(
    salt, docker_client, config_pillar, service_name
):
    pillar = config_pillar(
        {"app.conf": {"contents": "one\n"}}, on_change="signal:SIGHUP", replicas=1
    )
    deployed(salt, pillar, service_name)
    edit_file(salt, pillar, service_name, "app.conf", "two\n")
    new = running(salt, service_name)["changes"]["config"]["version"]["new"]
    (replica,) = salt.modules.dockerops.status(service_name)[service_name]
    assert replica["config_version"] == new


def test_absent_can_remove_the_config_directory(
    salt, docker_client, config_pillar, service_name, host_root
):
    pillar = config_pillar({"app.conf": {"contents": "x\n"}})
    deployed(salt, pillar, service_name)
    root = host_root / service_name / "config"
    kept = state_return(salt.states.dockerops.absent(name=service_name))
    assert "config" not in kept["changes"] and root.is_dir()
    assert running(salt, service_name)["result"] is True
    dry = state_return(
        salt.states.dockerops.absent(name=service_name, remove_config=True, test=True)
    )
    assert dry["result"] is None and root.is_dir()
    gone = state_return(salt.states.dockerops.absent(name=service_name, remove_config=True))
    assert gone["result"] is True
    assert gone["changes"]["config"] == {"removed": str(root)}
    assert not root.exists()
    assert containers(docker_client, service_name) == {}
