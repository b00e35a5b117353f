"""Secrets never shown in shapes other than their literal value: indented, renamed,
escaped, quoted by a template error; bad values refused before anything is touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.functional.helpers import containers, service_pillar, state_return

pytestmark = pytest.mark.docker

KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
    "Zq1cXk9vT2yJ8aP0eR4mN6sL3uW5oB7dF1gH2jK4lM9nQ0rS8tV\n"
    "-----END PRIVATE KEY-----"
)
OLD_TOKEN = "old-t0ken-that-must-never-show"
NEW_TOKEN = "new-t0ken-that-must-never-show"


def key_lines(text: str, secret: str) -> list[str]:
    return [line for line in secret.splitlines() if line.strip() and line.strip() in text]


def pillar_with(
    service: str, repository: str, host_root: Path, secrets: dict[str, str], template: str
) -> dict[str, Any]:
    pillar = service_pillar(
        service,
        repository,
        secrets=secrets,
        config={
            "path": "/etc/app",
            "root": str(host_root / "config"),
            "files": {"app.yaml": {"contents": template, "template": "jinja"}},
        },
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    return pillar


def secret_ref(service: str, key: str) -> str:
    return "pillar['dockerops']['services']['" + service + "']['secrets']['" + key + "']"


def test_an_indented_multi_line_secret_is_masked_in_a_test_diff(
    salt, demo_images, service_name, host_root, caplog
):
    template = (
        "tls:\n  key: |\n{{ " + secret_ref(service_name, "TLS_KEY") + " | indent(4, true) }}\n"
    )
    pillar = pillar_with(
        service_name, demo_images["repository"], host_root, {"TLS_KEY": KEY}, template
    )
    salt.set_pillar(pillar)

    dry = state_return(salt.states.dockerops.config_managed(name=service_name, test=True))

    assert dry["result"] is None, dry
    text = json.dumps(dry)
    assert "tls:" in text
    assert key_lines(text, KEY) == [], text
    assert key_lines(caplog.text, KEY) == []


def test_a_renamed_secret_key_keeps_the_old_value_masked(
    salt, docker_client, demo_images, service_name, host_root
):
    template = "token = {{ " + secret_ref(service_name, "API_TOKEN") + " }}\n"
    pillar = pillar_with(
        service_name, demo_images["repository"], host_root, {"API_TOKEN": OLD_TOKEN}, template
    )
    salt.set_pillar(pillar)
    assert state_return(salt.states.dockerops.config_managed(name=service_name))["result"]
    assert state_return(salt.states.dockerops.running(name=service_name))["result"]
    (container,) = containers(docker_client, service_name).values()
    assert container.labels["io.dockerops.secret-keys"] == "API_TOKEN"

    renamed = pillar_with(
        service_name,
        demo_images["repository"],
        host_root,
        {"API_TOKEN_V2": NEW_TOKEN},
        "token = {{ " + secret_ref(service_name, "API_TOKEN_V2") + " }}\n",
    )
    salt.set_pillar(renamed)
    outputs = [
        state_return(salt.states.dockerops.config_managed(name=service_name, test=True)),
        state_return(salt.states.dockerops.running(name=service_name, test=True)),
        salt.modules.dockerops.apply(service_name, test=True),
    ]

    assert outputs[0]["result"] is None, outputs[0]
    assert outputs[0]["changes"]["files"]["app.yaml"] == {"diff": "(only masked secrets changed)"}
    text = json.dumps(outputs, default=str)
    for secret in (OLD_TOKEN, NEW_TOKEN):
        assert secret not in text, text


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\r"])
def test_control_characters_in_secrets_are_refused_before_anything_is_touched(
    salt, docker_client, demo_images, service_name, char, caplog
):
    value = OLD_TOKEN + char + "tail"
    salt.set_pillar(
        service_pillar(service_name, demo_images["repository"], secrets={"API_TOKEN": value})
    )

    ret = state_return(salt.states.dockerops.running(name=service_name))

    assert ret["result"] is False
    assert f"dockerops:services:{service_name}:secrets: API_TOKEN: values cannot" in ret["comment"]
    assert containers(docker_client, service_name) == {}
    assert OLD_TOKEN not in json.dumps(ret) and OLD_TOKEN not in caplog.text


@pytest.mark.parametrize(
    "template",
    [
        "password = PASTED-s3cret-in-source {{ oops }\n",
        "a\nb\npassword = PASTED-s3cret-in-source\n{% if x %}\n",
        "{{ PASTED-s3cret-in-source | nosuchfilter }}\n",
        "x = {{ salt['no.such_function']('PASTED-s3cret-in-source') }}\n",
    ],
)
def test_template_errors_never_quote_the_template(
    salt, docker_client, demo_images, service_name, host_root, caplog, template
):
    pillar = pillar_with(service_name, demo_images["repository"], host_root, {}, template)
    salt.set_pillar(pillar)

    outputs = [
        state_return(salt.states.dockerops.config_managed(name=service_name)),
        state_return(salt.states.dockerops.running(name=service_name, test=True)),
    ]

    for ret in outputs:
        assert ret["result"] is False, ret
        assert (
            f"dockerops:services:{service_name}:config:files:app.yaml: template failed: line"
            in (ret["comment"])
        ), ret
    assert "s3cret" not in json.dumps(outputs)
    assert "s3cret" not in caplog.text
    assert containers(docker_client, service_name) == {}


def test_a_source_that_is_not_utf8_is_a_clear_error(
    salt, docker_client, demo_images, service_name, host_root, state_tree
):
    (state_tree / f"{service_name}.bin").write_bytes(b"ok\n\xff\xfe binary\n")
    pillar = service_pillar(
        service_name,
        demo_images["repository"],
        config={
            "path": "/etc/app",
            "root": str(host_root / "config"),
            "files": {"app.bin": {"source": f"salt://{service_name}.bin"}},
        },
    )
    pillar["dockerops"]["allowed_host_paths"] = [str(host_root)]
    salt.set_pillar(pillar)

    ret = state_return(salt.states.dockerops.config_managed(name=service_name))

    assert ret["result"] is False
    assert ret["comment"].endswith(
        f"dockerops:services:{service_name}:config:files:app.bin:source: "
        f"salt://{service_name}.bin is not UTF-8 text (byte 3); config files are rendered as text"
    ), ret
    assert containers(docker_client, service_name) == {}
