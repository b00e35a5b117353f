"""Secrets never shown; one broken service does not stop the others."""

from __future__ import annotations

import json

import pytest

from tests.functional.helpers import containers, service_pillar, state_return

pytestmark = pytest.mark.docker

SECRET = "pa55-w0rd-that-must-never-show"


def test_secrets_reach_the_container_but_no_output(
    salt, docker_client, demo_images, service_name, host_root, caplog
):
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        secrets={"DB_PASSWORD": SECRET},
        config={
            "path": "/etc/app",
            "root": str(host_root / "config"),
            "files": {
                # A template that writes the secret into a config file.
                "db.conf": {
                    "contents": "password = {{ pillar['dockerops']['services']['"
                    + service_name
                    + "']['secrets']['DB_PASSWORD'] }}\n",
                    "template": "jinja",
                }
            },
        },
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    salt.set_pillar(pillar)
    outputs = []
    outputs.append(state_return(salt.states.dockerops.config_managed(name=service_name)))
    outputs.append(state_return(salt.states.dockerops.running(name=service_name)))
    assert all(o["result"] is True for o in outputs), outputs
    container = containers(docker_client, service_name)[f"{service_name}-1"]
    assert f"DB_PASSWORD={SECRET}" in container.attrs["Config"]["Env"]
    assert container.exec_run(["cat", "/etc/app/db.conf"]).output.decode() == (
        f"password = {SECRET}\n"
    )

    # A changed secret: recreated, with the change named but never shown.
    pillar["dockerops"]["services"][service_name]["secrets"]["DB_PASSWORD"] = SECRET + "-2"
    salt.set_pillar(pillar)
    changed = state_return(salt.states.dockerops.running(name=service_name))
    outputs.append(changed)
    # The secret is in the env and in db.conf: both inputs changed.
    # Keyed by what runs now: the replacement of -1 runs in the spare slot 2.
    assert changed["changes"][f"{service_name}-2"]["recreated"]["changed"] == ["config", "secrets"]
    assert "only masked secrets changed" in json.dumps(changed["changes"]["config"]["files"])

    outputs.append(salt.modules.dockerops.status(service_name))
    outputs.append(salt.modules.dockerops.services())
    outputs.append(salt.modules.dockerops.apply(service_name, test=True))
    # A failure whose error text would contain the env: an image that is missing.
    pillar["dockerops"]["services"][service_name]["tag"] = "missing"
    salt.set_pillar(pillar)
    failed = state_return(salt.states.dockerops.running(name=service_name))
    assert failed["result"] is False
    outputs.append(failed)
    # Bad pillar that contains the secret next to the error.
    pillar["dockerops"]["services"][service_name]["secrets"] = {"bad name": SECRET}
    salt.set_pillar(pillar)
    invalid = state_return(salt.states.dockerops.running(name=service_name))
    assert invalid["result"] is False
    outputs.append(invalid)

    text = json.dumps(outputs, default=str)
    where = text.find(SECRET)
    assert where == -1, text[max(0, where - 300) : where + 50]
    assert SECRET not in caplog.text


def test_one_broken_service_does_not_stop_the_others(
    salt, docker_client, demo_images, service_name, extra_service
):
    good, bad = extra_service("g"), service_name
    pillar = service_pillar(bad, demo_images["repository"], tag="missing")
    pillar["dockerops"]["services"][good] = {"image": demo_images["repository"], "tag": "1.0"}
    salt.set_pillar(pillar)
    out = salt.modules.dockerops.apply()
    assert out[bad]["result"] is False
    assert f"service {bad} replica 1" in out[bad]["comment"]
    assert out[good]["result"] is True
    assert sorted(containers(docker_client, good)) == [f"{good}-1"]
