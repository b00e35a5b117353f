"""dockerops.logdrivers and the logging/logs fields of the spec: driver options
checked per driver, values made Docker's strings, blocking set-ups named, and
file logs validated (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops import filelogs, inputs, layout
from dockerops.logdrivers import blocking_warning
from dockerops.spec import load_service
from tests.support.builders import WEB, one_problem, pillar, problems_of, web_pillar

GELF = {"gelf-address": "udp://127.0.0.1:12201"}


def logging_of(logging: dict[str, Any]) -> tuple[str, dict[str, str]]:
    spec = load_service(web_pillar(logging=logging), "web")
    return spec.logging.driver, spec.logging.options


@pytest.mark.parametrize(
    ("logging", "options"),
    [
        # Booleans as Docker parses them, numbers as strings.
        ({"options": {"compress": True}}, {"compress": "true"}),
        ({"options": {"compress": False, "max-file": 5}}, {"compress": "false", "max-file": "5"}),
        ({"driver": "local", "options": {"max-size": 1024}}, {"max-size": "1024"}),
        (
            {"options": {"mode": "non-blocking", "max-buffer-size": "4m"}},
            {"mode": "non-blocking", "max-buffer-size": "4m"},
        ),
        (
            {"driver": "gelf", "options": {**GELF, "gelf-compression-level": 1, "tag": "web"}},
            {**GELF, "gelf-compression-level": "1", "tag": "web"},
        ),
        (
            {"driver": "syslog", "options": {"syslog-address": "tcp+tls://10.0.0.1:6514"}},
            {"syslog-address": "tcp+tls://10.0.0.1:6514"},
        ),
        (
            {"driver": "fluentd", "options": {"fluentd-async": True, "env-regex": "^APP_"}},
            {"fluentd-async": "true", "env-regex": "^APP_"},
        ),
        ({"driver": "journald", "options": {"labels": "team"}}, {"labels": "team"}),
        ({"driver": "none", "options": {"mode": "blocking"}}, {"mode": "blocking"}),
    ],
)
def test_valid_logging(logging: dict[str, Any], options: dict[str, str]) -> None:
    assert logging_of(logging)[1] == options


@pytest.mark.parametrize(
    ("logging", "path", "says"),
    [
        ({"driver": "awslogs"}, "logging:driver", "unknown logging driver 'awslogs'"),
        ({"driver": "myplugin/logger:1"}, "logging:driver", "unknown logging driver"),
        ({"options": {"max-szie": "10m"}}, "logging:options", "max-szie: unknown option"),
        ({"driver": "local", "options": {"tag": "x"}}, "logging:options", "tag: unknown option"),
        ({"driver": "journald", "options": {"max-size": "1m"}}, "logging:options", "max-size"),
        ({"driver": "gelf"}, "logging:options", "gelf-address: the gelf driver needs it"),
        (
            {"driver": "gelf", "options": {"gelf-address": "http://x:1"}},
            "logging:options",
            "gelf-address: expected udp|tcp://",
        ),
        (
            {"driver": "syslog", "options": {"syslog-address": "10.0.0.1:514"}},
            "logging:options",
            "syslog-address: expected udp|tcp|tcp+tls|unix|unixgram://",
        ),
        ({"options": {"mode": "async"}}, "logging:options", "mode: expected blocking or"),
        (
            {"options": {"max-buffer-size": "4m"}},
            "logging:options",
            "max-buffer-size: only with mode: non-blocking",
        ),
        (
            {"options": {"mode": "non-blocking", "max-buffer-size": "lots"}},
            "logging:options",
            "max-buffer-size: expected a size such as 4m",
        ),
        ({"options": {"max-size": "0"}}, "logging:options", "max-size: expected a size"),
        ({"options": {"compress": "maybe"}}, "logging:options", "compress: expected true or"),
        ({"options": {"tag": "a\nb"}}, "logging:options", "tag: values cannot contain control"),
        ({"options": {"tag": ["a"]}}, "logging:options", "'tag': values are strings, numbers"),
        ({"options": {"tag": float("nan")}}, "logging:options", "'tag': values are finite"),
    ],
)
def test_invalid_logging(logging: dict[str, Any], path: str, says: str) -> None:
    problem = one_problem(web_pillar(logging=logging))

    assert problem.startswith(f"{WEB}:{path}: "), problem
    assert says in problem


def test_defaults_switch_every_service_to_gelf_and_a_service_s_stray_option_is_named() -> None:
    gelf = {"driver": "gelf", "options": GELF}
    data = pillar(
        {"web": {"image": "web"}, "api": {"image": "api", "logging": {"options": {"max-file": 3}}}},
        defaults={"logging": gelf},
    )

    assert load_service(data, "web").logging.driver == "gelf"
    (problem,) = problems_of(data, "api")
    assert problem.startswith("dockerops:services:api:logging:options: max-file: unknown option")


def test_the_default_logging_keeps_the_hash_of_earlier_releases() -> None:
    """json-file, bounded: the digest every existing container's label holds."""
    spec = load_service(web_pillar(), "web")
    made = dict(inputs.service_inputs(spec).digests)

    assert made["logging"] == inputs.digest(["json-file", [["max-file", "3"], ["max-size", "10m"]]])
    assert "logs" not in made


@pytest.mark.parametrize(
    ("driver", "options", "warned"),
    [
        ("json-file", {}, None),
        ("fluentd", {}, "fluentd without fluentd-async: 'true'"),
        ("fluentd", {"fluentd-async": "false"}, "fluentd without fluentd-async: 'true'"),
        ("fluentd", {"fluentd-async": "true"}, None),
        ("fluentd", {"mode": "non-blocking"}, None),
        ("syslog", {"syslog-address": "tcp://h:514"}, "syslog over tcp (tcp://h:514)"),
        ("syslog", {"syslog-address": "tcp+tls://h:6514"}, "syslog over tcp+tls"),
        ("syslog", {"syslog-address": "unix:///dev/log"}, "syslog over unix"),
        ("syslog", {"syslog-address": "udp://h:514"}, None),
        ("syslog", {"syslog-address": "unixgram:///dev/log"}, None),
        ("syslog", {}, None),  # the local unixgram socket
        ("syslog", {"syslog-address": "tcp://h:514", "mode": "non-blocking"}, None),
        ("gelf", {"gelf-address": "tcp://h:12201"}, "gelf over tcp"),
        ("gelf", GELF, None),
    ],
)
def test_drivers_that_can_block_the_container_are_named(
    driver: str, options: dict[str, str], warned: str | None
) -> None:
    warning = blocking_warning(driver, options)

    if warned is None:
        assert warning is None
    else:
        assert warning is not None and warned in warning
        assert "mode: non-blocking" in warning


# --- file logs ---------------------------------------------------------------------------------


def test_file_logs_mount_each_slot_s_own_directory() -> None:
    spec = load_service(web_pillar(logs={"path": "/var/log/app/"}), "web")
    values = inputs.service_inputs(spec).values

    assert spec.log_dir == "/var/log/dockerops/web"
    calls = [inputs.create_call(values, slot) for slot in (1, 2)]
    assert [call.host["binds"] for call in calls] == [
        ["/var/log/dockerops/web/1:/var/log/app:rw"],
        ["/var/log/dockerops/web/2:/var/log/app:rw"],
    ]
    (mount,) = calls[0].mounts
    assert (mount.read_only, mount.trusted_root) == (False, "/var/log/dockerops")


def test_file_logs_add_their_bind_to_the_data_mounts() -> None:
    spec = load_service(
        web_pillar(
            logs={"path": "/logs"}, data=[{"host": "/srv/dockerops/web", "container": "/d"}]
        ),
        "web",
    )
    call = inputs.create_call(inputs.service_inputs(spec).values, 3)

    assert call.host["binds"] == ["/srv/dockerops/web:/d:rw", "/var/log/dockerops/web/3:/logs:rw"]


def test_a_log_root_outside_the_allow_list_is_refused_only_where_logs_are_declared() -> None:
    data = pillar({"web": {"image": "web"}}, allowed_host_paths=["/srv/dockerops"])
    assert load_service(data, "web").log_dir is None
    data["dockerops"]["services"]["web"]["logs"] = {"path": "/logs"}

    (problem,) = problems_of(data, "web")

    assert problem == (
        "dockerops:logs:root: /var/log/dockerops (where services:web:logs go) is outside "
        "dockerops:allowed_host_paths (/srv/dockerops)"
    )


@pytest.mark.parametrize(
    ("fields", "top", "path", "says"),
    [
        ({"logs": {"path": "var/log"}}, {}, f"{WEB}:logs:path", "must be absolute"),
        ({"logs": {"path": "/"}}, {}, f"{WEB}:logs:path", "cannot mount over"),
        ({"logs": {"path": "/a:b"}}, {}, f"{WEB}:logs:path", "cannot contain ':'"),
        ({"logs": {}}, {}, f"{WEB}:logs:path", "Field required"),
        (
            {"logs": {"path": "/d"}, "data": [{"host": "/srv/dockerops/x", "container": "/d"}]},
            {},
            WEB,
            "/d mounted twice",
        ),
        ({"logs": {"path": "/t"}, "tmpfs": ["/t"]}, {}, WEB, "/t is both a tmpfs and a mount"),
        ({"logs": {"path": "/l"}}, {"logs": {"root": "/etc"}}, "dockerops:logs:root", "outside"),
        ({"logs": {"path": "/l"}}, {"logs": {"rotate": 0}}, "dockerops:logs:rotate", "greater"),
        ({"logs": {"path": "/l"}}, {"logs": {"maxsize": "big"}}, "dockerops:logs:maxsize", "size"),
        (
            {"logs": {"path": "/l"}},
            {"logs": {"rsyslog_dir": "rel"}},
            "dockerops:logs:rsyslog_dir",
            "",
        ),
    ],
)
def test_invalid_file_logs(
    fields: dict[str, Any], top: dict[str, Any], path: str, says: str
) -> None:
    data = web_pillar(**fields)
    data["dockerops"].update(top)

    problem = one_problem(data)

    assert problem.startswith(f"{path}: "), problem
    assert says in problem


def test_a_log_directory_never_nests_with_another_service_s_writable_mount() -> None:
    data = pillar(
        {
            "web": {"image": "web", "logs": {"path": "/logs"}},
            "db": {"image": "db", "data": [{"host": "/var/log/dockerops", "container": "/d"}]},
        }
    )

    (problem,) = problems_of(data, "web")
    assert problem.startswith(f"{WEB}:logs:path: /var/log/dockerops/web lies inside")
    spec = load_service(pillar({"web": {"image": "web", "logs": {"path": "/logs"}}}), "web")
    (path,) = layout.footprint(spec).paths
    assert (path.path, path.kind, path.writable) == (
        "/var/log/dockerops/web",
        "log directory",
        True,
    )


def test_what_the_formula_writes_for_file_logs() -> None:
    data = pillar(
        {
            "web": {"image": "web", "replicas": 2, "logs": {"path": "/logs"}},
            "plain": {"image": "plain"},
            "broken": {"image": "BAD", "logs": {"path": "/logs"}},
        },
        environment="production",
        logs={"filebeat_dir": "/etc/fb", "rotate": 14},
    )

    made = filelogs.formula_file_logs(data)

    assert made["problems"] == []
    assert made["rsyslog_module_file"] == "/etc/rsyslog.d/00-dockerops-imfile.conf"
    assert made["services"] == {
        "web": {
            "dir": "/var/log/dockerops/web",
            "path": "/logs",
            "environment": "production",
            "slots": [1, 2, 3, 4],
            "filebeat_file": "/etc/fb/dockerops-web.yml",
            "rsyslog_file": "/etc/rsyslog.d/dockerops-web.conf",
            "logrotate_file": "/etc/logrotate.d/dockerops-web",
            "rotate": {"frequency": "daily", "rotate": 14, "maxsize": "100M"},
        }
    }
    data["dockerops"]["logs"]["rsyslog_load_imfile"] = False
    assert filelogs.formula_file_logs(data)["rsyslog_module_file"] is None
    # A service whose logs cannot go where pillar says is left out (its state fails)...
    data["dockerops"]["logs"]["root"] = "/etc"
    assert filelogs.formula_file_logs(data)["services"] == {}
    # ...and a pillar whose top is invalid renders one failing state.
    data["dockerops"]["logs"] = {"rotate": 0}
    refused = filelogs.formula_file_logs(data)
    assert refused["services"] == {}
    assert refused["problems"][0].startswith("dockerops:logs:rotate: ")


@pytest.mark.parametrize(
    ("container", "wanted", "old"),
    [
        ({"logging": "a", "image": "x"}, {"logging": "a"}, False),
        ({"logging": "a"}, {"logging": "b"}, True),
        ({"logging": "a"}, {"logging": "a", "logs": "l"}, True),
        ({"logging": "a", "logs": "l"}, {"logging": "a"}, True),
        ({}, {"logging": "a"}, None),  # an early release's container: unknown
    ],
)
def test_old_log_settings(
    container: dict[str, str], wanted: dict[str, str], old: bool | None
) -> None:
    assert filelogs.old_log_settings(container, wanted) is old


def test_pillar_log_settings_leave_invalid_services_out() -> None:
    data = pillar({"web": {"image": "web"}, "bad": {"image": "BAD"}})

    settings = filelogs.pillar_log_settings(data)

    assert list(settings) == ["web"]
    spec = load_service(data, "web")
    assert settings["web"] == {
        k: v for k, v in inputs.service_inputs(spec).digests if k in ("logging", "logs")
    }
    assert filelogs.pillar_log_settings({"dockerops": "oops"}) == {}
