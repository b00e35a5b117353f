"""The repository's example pillar, applied by a real master to two environments."""

from __future__ import annotations

import pytest

from tests.integration.conftest import ENV_MINIONS, ENV_TGT, use_repo_pillar

pytestmark = pytest.mark.docker


def test_highstate_lands_each_environments_differences(
    salt_cli, salt_minions, docker_hosts, pillar_dir, demo_images, free_ports, tmp_path
):
    repo = demo_images["repository"]
    overrides = {}
    for env, minion_id in (("integration", "int-m1"), ("staging", "stg-m2")):
        overrides[env] = {
            "dockerops": {
                "allowed_host_paths": [str(tmp_path)],
                "services": {
                    "web": {
                        "image": repo,
                        "ports": [{"container": 8080, "host": free_ports(6)}],
                        "config": {"root": str(tmp_path / minion_id / "web" / "config")},
                        # Lists are replaced when pillar merges: the example's data mount
                        # moves under this test's allowed path.
                        "data": [
                            {
                                "host": str(tmp_path / minion_id / "web" / "data"),
                                "container": "/data",
                            }
                        ],
                    }
                },
            }
        }
    use_repo_pillar(pillar_dir, overrides)
    assert salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=ENV_TGT).returncode == 0

    applied = salt_cli.run("state.apply", "dockerops", minion_tgt=ENV_TGT)
    assert applied.returncode == 0, applied.stdout
    for minion_id in ENV_MINIONS:
        for state in applied.data[minion_id].values():
            assert state["result"] is True, state["comment"]

    def web_containers(minion_id):
        client = docker_hosts[minion_id].client()
        found = client.containers.list(
            ignore_removed=True, filters={"label": "io.dockerops.service=web"}
        )
        out = {c.name: c.attrs for c in found}
        conf = {c.name: c.exec_run(["cat", "/etc/app/web.conf"]).output.decode() for c in found}
        client.close()
        return out, conf

    integration, int_conf = web_containers("int-m1")
    staging, stg_conf = web_containers("stg-m2")
    # pillar/dockerops/integration.sls: 1.1, two replicas, debug, 1m logs.
    assert sorted(integration) == ["web-1", "web-2"]
    for attrs in integration.values():
        assert attrs["Config"]["Image"] == f"{repo}:1.1"
        assert "LOG_LEVEL=debug" in attrs["Config"]["Env"]
        assert "GREETING=hello" in attrs["Config"]["Env"]  # from common.sls
        assert attrs["HostConfig"]["LogConfig"] == {
            "Type": "json-file",
            "Config": {"max-size": "1m", "max-file": "3"},
        }
        assert attrs["Config"]["Labels"]["io.dockerops.environment"] == "integration"
    assert all(
        "environment = integration" in c and "log_level = debug" in c for c in int_conf.values()
    )
    # pillar/dockerops/staging.sls: 1.0, two replicas, info, default 10m logs.
    assert sorted(staging) == ["web-1", "web-2"]
    for attrs in staging.values():
        assert attrs["Config"]["Image"] == f"{repo}:1.0"
        assert "LOG_LEVEL=info" in attrs["Config"]["Env"]
        assert attrs["HostConfig"]["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "3"}
    assert all("environment = staging" in c for c in stg_conf.values())
    # The example secret reached the containers but not the job returns.
    assert "API_TOKEN=change-me" in staging["web-1"]["Config"]["Env"]
    assert "change-me" not in applied.stdout

    cleaned = salt_cli.run("state.apply", "dockerops.clean", minion_tgt=ENV_TGT)
    assert cleaned.returncode == 0
