"""A real master drives minions on separate Docker hosts."""

from __future__ import annotations

import urllib.request

import pytest

from tests.integration.conftest import ENV_MINIONS, ENV_TGT, write_pillar

pytestmark = pytest.mark.docker


def _env_pillar(repository: str, env: str, tag: str, replicas: int, port: int) -> dict:
    return {
        "dockerops": {
            "environment": env,
            "services": {
                "web": {
                    "image": repository,
                    "tag": tag,
                    "replicas": replicas,
                    "env": {"ENVIRONMENT": env},
                    # All hosts here share one loopback, so environments use
                    # different host ports; on real machines they need not.
                    "ports": [{"container": 8080, "host": port}],
                }
            },
        }
    }


def test_each_minion_manages_only_its_own_docker_host(
    salt_cli, salt_minions, docker_hosts, pillar_dir, demo_images, free_ports
):
    repo = demo_images["repository"]
    int_port, stg_port = free_ports(4), free_ports(6)
    write_pillar(
        pillar_dir,
        {
            "integration": _env_pillar(repo, "integration", "1.1", 2, int_port),
            "staging": _env_pillar(repo, "staging", "1.0", 3, stg_port),
        },
    )
    refreshed = salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=ENV_TGT)
    assert refreshed.returncode == 0

    applied = salt_cli.run("state.apply", "dockerops", minion_tgt=ENV_TGT)
    assert applied.returncode == 0, applied.stdout
    for minion_id in ENV_MINIONS:
        (state,) = applied.data[minion_id].values()
        assert state["result"] is True, state["comment"]

    # Each minion's own daemon holds exactly its environment's replicas...
    seen = {}
    for minion_id, daemon in docker_hosts.items():
        client = daemon.client()
        seen[minion_id] = sorted(
            (c.name, c.labels["io.dockerops.image"], c.labels["io.dockerops.environment"])
            for c in client.containers.list(
                ignore_removed=True, filters={"label": "io.dockerops.service=web"}
            )
        )
        client.close()
    assert seen["int-m1"] == [
        ("web-1", f"{repo}:1.1", "integration"),
        ("web-2", f"{repo}:1.1", "integration"),
    ]
    assert seen["stg-m2"] == [(f"web-{i}", f"{repo}:1.0", "staging") for i in (1, 2, 3)]

    # ... and each minion's dockerops.status reports only its own host.
    status = salt_cli.run("dockerops.status", "web", minion_tgt=ENV_TGT)
    assert [r["image"] for r in status.data["int-m1"]["web"]] == [f"{repo}:1.1"] * 2
    assert [r["image"] for r in status.data["stg-m2"]["web"]] == [f"{repo}:1.0"] * 3
    version = salt_cli.run("dockerops.version", minion_tgt=ENV_TGT)
    assert version.data["int-m1"]["docker_url"] == docker_hosts["int-m1"].url
    assert version.data["stg-m2"]["docker_url"] == docker_hosts["stg-m2"].url

    # Images were really pulled from the registry by each host.
    with urllib.request.urlopen(f"http://127.0.0.1:{stg_port + 2}/version", timeout=10) as resp:
        assert resp.read().decode() == "1.0\n"

    # A second highstate changes nothing anywhere.
    again = salt_cli.run("state.apply", "dockerops", minion_tgt=ENV_TGT)
    for minion_id in ENV_MINIONS:
        (state,) = again.data[minion_id].values()
        assert state["changes"] == {}

    cleaned = salt_cli.run("state.apply", "dockerops.clean", minion_tgt=ENV_TGT)
    assert cleaned.returncode == 0
    for daemon in docker_hosts.values():
        client = daemon.client()
        assert (
            client.containers.list(
                ignore_removed=True, all=True, filters={"label": "io.dockerops.managed=true"}
            )
            == []
        )
        client.close()
