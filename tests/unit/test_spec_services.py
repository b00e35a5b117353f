"""dockerops.spec: config directories, data mounts, secrets, logging, healthcheck, update."""

from __future__ import annotations

from typing import Any

import pytest

from dockerops.errors import SpecError
from dockerops.spec import ConfigSpec, ServiceSpec, UpdateSpec, load_service, parse_duration
from tests.support.builders import WEB, config_dir, one_problem, pillar, problems_of, web_pillar

SECRET = "s3cr3t-Pa55word"
CONTENTS = "password = t0p-s3cr3t-c0nfig"


def load(**fields: Any) -> ServiceSpec:
    return load_service(web_pillar(**fields), "web")


def load_config(**fields: Any) -> ConfigSpec:
    """The config directory of ``web`` loaded from ``config_dir(**fields)``."""
    spec = load(config=config_dir(**fields))
    assert spec.config is not None
    return spec.config


# --- config: valid ---------------------------------------------------------------------------


def test_config_defaults() -> None:
    spec = load(config=config_dir())

    assert spec.config is not None
    assert spec.config.path == "/etc/web"
    assert spec.config.on_change == "rolling"
    assert spec.config.keep == 3
    assert spec.config.root is None
    assert spec.config_root == "/srv/dockerops/web/config"
    (item,) = spec.config.files.values()
    assert (item.contents, item.source, item.template) == ("x", None, None)
    assert (item.mode, item.owner, item.group, item.diff_shown) == ("0644", None, None, True)


def test_no_config_means_no_config_root() -> None:
    spec = load()

    assert spec.config is None
    assert spec.config_root is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/etc/web", "/etc/web"), ("/etc/web/", "/etc/web"), ("/etc//web/./conf", "/etc/web/conf")],
)
def test_config_path_is_normalised(path: str, expected: str) -> None:
    config = load_config(path=path)

    assert config.path == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("web.conf", "web.conf"),
        (".hidden", ".hidden"),
        ("conf.d/x.conf", "conf.d/x.conf"),
        ("./web.conf", "web.conf"),
        ("conf.d//x.conf", "conf.d/x.conf"),
        ("conf.d/./x.conf", "conf.d/x.conf"),
        ("a/b/c/d", "a/b/c/d"),
    ],
)
def test_config_file_names_are_normalised(name: str, expected: str) -> None:
    config = load_config(files={name: {"contents": "x"}})

    assert list(config.files) == [expected]


def test_config_file_from_a_salt_source_with_a_template() -> None:
    item = {"source": "salt://web/web.conf.jinja", "template": "jinja", "owner": "www-data"}

    config = load_config(files={"web.conf": item})

    loaded = config.files["web.conf"]
    assert (loaded.source, loaded.contents, loaded.template) == (item["source"], None, "jinja")
    assert loaded.owner == "www-data"


def test_empty_inline_contents_are_a_file() -> None:
    config = load_config(files={"empty": {"contents": ""}})

    assert config.files["empty"].contents == ""


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("644", "0644"),
        (644, "0644"),
        ("0644", "0644"),
        ("0600", "0600"),
        (600, "0600"),
        ("755", "0755"),
        ("0000", "0000"),
        ("0777", "0777"),
    ],
)
def test_config_file_modes_are_normalised(mode: object, expected: str) -> None:
    config = load_config(files={"f": {"contents": "x", "mode": mode}})

    assert config.files["f"].mode == expected


@pytest.mark.parametrize(
    ("on_change", "expected", "signal", "live"),
    [
        ("rolling", "rolling", None, False),
        ("restart", "restart", None, False),
        ("none", "none", None, True),
        ("signal:SIGHUP", "signal:SIGHUP", "SIGHUP", True),
        ("signal:hup", "signal:SIGHUP", "SIGHUP", True),
        ("signal:HUP", "signal:SIGHUP", "SIGHUP", True),
        ("signal:sighup", "signal:SIGHUP", "SIGHUP", True),
        ("signal:usr1", "signal:SIGUSR1", "SIGUSR1", True),
        ("signal:SIGUSR2", "signal:SIGUSR2", "SIGUSR2", True),
    ],
)
def test_on_change_policies(on_change: str, expected: str, signal: str | None, live: bool) -> None:
    config = load_config(on_change=on_change)

    assert config.on_change == expected
    assert config.signal == signal
    assert config.live is live


@pytest.mark.parametrize("keep", [1, 3, 50])
def test_config_keep_bounds_are_inclusive(keep: int) -> None:
    config = load_config(keep=keep)

    assert config.keep == keep


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("/srv/dockerops/web/cfg", "/srv/dockerops/web/cfg"),
        ("/srv/dockerops/shared/web/", "/srv/dockerops/shared/web"),
        ("/srv/dockerops/a/../web/cfg", "/srv/dockerops/web/cfg"),
        ("/var/log/dockerops/odd-but-allowed", "/var/log/dockerops/odd-but-allowed"),
    ],
)
def test_explicit_config_root_under_allowed_host_paths(root: str, expected: str) -> None:
    spec = load(config=config_dir(root=root))

    assert spec.config is not None
    assert spec.config.root == expected
    assert spec.config_root == expected


def test_config_root_under_custom_allowed_host_paths() -> None:
    data = pillar(
        {"web": {"image": "web", "config": config_dir(root="/opt/apps/web/config")}},
        allowed_host_paths=["/opt/apps"],
    )

    assert load_service(data, "web").config_root == "/opt/apps/web/config"


def test_default_config_root_outside_custom_allowed_host_paths_is_refused() -> None:
    data = pillar(
        {"web": {"image": "web", "config": config_dir()}}, allowed_host_paths=["/opt/apps"]
    )

    assert problems_of(data) == [
        f"{WEB}:config:root: /srv/dockerops/web/config is outside "
        "dockerops:allowed_host_paths (/opt/apps)"
    ]


# --- config: invalid -------------------------------------------------------------------------

_BAD_NAME = "config file names are relative paths without '..'"
_BAD_MODE = "expected an octal mode such as '0644'"
_ONE_OF = "give exactly one of contents, source or etcd"
_BAD_POLICY = "expected rolling, restart, signal:<SIGNAL> or none"


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        # path
        ({"path": "etc/web"}, "config:path", "container paths must be absolute"),
        ({"path": ""}, "config:path", "container paths must be absolute"),
        ({"path": "/"}, "config:path", "cannot mount over the container's root"),
        ({"path": "/etc/.."}, "config:path", "cannot mount over the container's root"),
        # files
        ({"files": {}}, "config:files", "a config directory needs at least one file"),
        ({"files": {"/etc/passwd": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"../x": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"a/../b": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"a/../../b": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"..data": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"..3f2a9c0d1e2b4a5c/x": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"conf.d/..x": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {".": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"": {"contents": "x"}}}, "config:files", _BAD_NAME),
        ({"files": {"a\0b": {"contents": "x"}}}, "config:files", _BAD_NAME),
        (
            {"files": {"conf.d": {"contents": "x"}, "conf.d/x": {"contents": "y"}}},
            "config:files",
            "'conf.d' is both a file and a directory",
        ),
        (
            {"files": {"a/b": {"contents": "x"}, "a/b/c/d": {"contents": "y"}}},
            "config:files",
            "'a/b' is both a file and a directory",
        ),
        # contents XOR source
        ({"files": {"f": {}}}, "config:files:f", _ONE_OF),
        ({"files": {"f": {"mode": "0600"}}}, "config:files:f", _ONE_OF),
        ({"files": {"f": {"contents": "x", "source": "salt://f"}}}, "config:files:f", _ONE_OF),
        (
            {"files": {"f": {"source": "http://example.com/f"}}},
            "config:files:f:source",
            "sources are salt:// URLs",
        ),
        ({"files": {"f": {"source": "/etc/f"}}}, "config:files:f:source", "salt:// URLs"),
        ({"files": {"f": {"source": "salt:/f"}}}, "config:files:f:source", "salt:// URLs"),
        # modes
        ({"files": {"f": {"contents": "x", "mode": "999"}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": "0o644"}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": "00644"}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": "4755"}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": "64"}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": 8}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": "rw-r--r--"}}}, "config:files:f:mode", "octal"),
        ({"files": {"f": {"contents": "x", "mode": ""}}}, "config:files:f:mode", _BAD_MODE),
        ({"files": {"f": {"contents": "x", "mode": True}}}, "config:files:f:mode", _BAD_MODE),
        # template
        (
            {"files": {"f": {"contents": "x", "template": "mako"}}},
            "config:files:f:template",
            "'jinja'",
        ),
        # on_change
        ({"on_change": "restart-all"}, "config:on_change", _BAD_POLICY),
        ({"on_change": "Rolling"}, "config:on_change", _BAD_POLICY),
        ({"on_change": ""}, "config:on_change", _BAD_POLICY),
        ({"on_change": "SIGHUP"}, "config:on_change", _BAD_POLICY),
        ({"on_change": "signal:FOO"}, "config:on_change", "unknown signal 'FOO'"),
        ({"on_change": "signal:"}, "config:on_change", "unknown signal ''"),
        ({"on_change": "signal:1"}, "config:on_change", "unknown signal '1'"),
        # keep
        ({"keep": 0}, "config:keep", "greater than or equal to 1"),
        ({"keep": 51}, "config:keep", "less than or equal to 50"),
        # root
        ({"root": "/etc/web"}, "config:root", "/etc/web is outside dockerops:allowed_host_paths"),
        (
            {"root": "/srv/dockerops/../etc"},
            "config:root",
            "/etc is outside dockerops:allowed_host_paths",
        ),
        ({"root": "/srv/dockerops2/web"}, "config:root", "outside dockerops:allowed_host_paths"),
        ({"root": "srv/dockerops/web"}, "config:root", "host paths must be absolute"),
        # unknown keys
        ({"on_chnage": "restart"}, "config:on_chnage", "unknown key; did you mean 'on_change'?"),
    ],
)
def test_invalid_config(fields: dict[str, Any], path: str, message: str) -> None:
    problem = one_problem(web_pillar(config=config_dir(**fields)))

    assert problem.startswith(f"{WEB}:{path}: "), problem
    assert message in problem, problem


def test_a_file_that_is_also_a_directory_is_refused_whatever_sorts_between() -> None:
    # 'a-b' and 'a.conf' sort between 'a' and 'a/x' ('-' and '.' come before '/'),
    # so comparing only neighbouring names misses the conflict; writing the
    # version would then fail on the host instead of in validation.
    files = {"a": {"contents": "1"}, "a-b": {"contents": "2"}, "a/x": {"contents": "3"}}

    problem = one_problem(web_pillar(config=config_dir(files=files)))

    assert problem.startswith(f"{WEB}:config:files: "), problem
    assert "'a' is both a file and a directory" in problem


def test_two_names_for_the_same_file_are_refused() -> None:
    # 'web.conf' and './web.conf' are one file on the host: keeping only one of
    # the two declared contents silently would deploy whichever came last.
    files = {"web.conf": {"contents": "one"}, "./web.conf": {"contents": "two"}}

    problem = one_problem(web_pillar(config=config_dir(files=files)))

    assert problem.startswith(f"{WEB}:config:files: "), problem


def test_config_path_given_as_two_slashes_is_the_container_root() -> None:
    # POSIX normpath keeps exactly two leading slashes, but '//' is still '/'.
    problem = one_problem(web_pillar(config=config_dir(path="//")))

    assert problem.startswith(f"{WEB}:config:path: "), problem


# --- data mounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        ({"host": "/srv/dockerops/web/data", "container": "/data"}, ("/srv/dockerops/web/data",)),
        ({"host": "/srv/dockerops", "container": "/data"}, ("/srv/dockerops",)),
        ({"host": "/srv/dockerops/web/", "container": "/data/"}, ("/srv/dockerops/web",)),
        ({"host": "/srv/dockerops/a/../web", "container": "/data"}, ("/srv/dockerops/web",)),
        (
            {"host": "/var/log/dockerops/web", "container": "/var/log/web"},
            ("/var/log/dockerops/web",),
        ),
    ],
)
def test_data_mounts_under_the_default_allowed_host_paths(
    mount: dict[str, Any], expected: tuple[str]
) -> None:
    (data,) = load(data=[mount]).data

    assert (data.host,) == expected
    assert data.container == mount["container"].rstrip("/")
    assert data.read_only is False


def test_data_mount_read_only() -> None:
    (data,) = load(data=[{"host": "/srv/dockerops/x", "container": "/x", "read_only": True}]).data

    assert data.read_only is True


_OUTSIDE = "is outside dockerops:allowed_host_paths (/srv/dockerops, /var/log/dockerops)"


@pytest.mark.parametrize(
    ("mount", "path", "message"),
    [
        ({"host": "/etc", "container": "/x"}, "data:0:host", f"/etc {_OUTSIDE}"),
        ({"host": "/", "container": "/x"}, "data:0:host", f"/ {_OUTSIDE}"),
        ({"host": "/srv/dockerops/../etc", "container": "/x"}, "data:0:host", f"/etc {_OUTSIDE}"),
        (
            {"host": "/srv/dockerops/web/../../../etc/shadow", "container": "/x"},
            "data:0:host",
            f"/etc/shadow {_OUTSIDE}",
        ),
        ({"host": "/srv/dockerops2", "container": "/x"}, "data:0:host", _OUTSIDE),
        ({"host": "/srv", "container": "/x"}, "data:0:host", _OUTSIDE),
        ({"host": "/var/log", "container": "/x"}, "data:0:host", _OUTSIDE),
        ({"host": "srv/dockerops/x", "container": "/x"}, "data:0:host", "must be absolute"),
        ({"host": "", "container": "/x"}, "data:0:host", "must be absolute"),
        ({"host": "/srv/dockerops/a\0b", "container": "/x"}, "data:0:host", "cannot contain NUL"),
        ({"host": "/srv/dockerops/x", "container": "x"}, "data:0:container", "must be absolute"),
        ({"host": "/srv/dockerops/x", "container": "/"}, "data:0:container", "container's root"),
        ({"container": "/x"}, "data:0:host", "Field required"),
        ({"host": "/srv/dockerops/x"}, "data:0:container", "Field required"),
        ({"host": "/srv/dockerops/x", "container": "/x", "ro": True}, "data:0:ro", "unknown key"),
    ],
)
def test_invalid_data_mounts(mount: dict[str, Any], path: str, message: str) -> None:
    problem = one_problem(web_pillar(data=[mount]))

    assert problem.startswith(f"{WEB}:{path}: "), problem
    assert message in problem, problem


def test_data_mounts_with_custom_allowed_host_paths() -> None:
    data = pillar(
        {
            "web": {
                "image": "web",
                "data": [
                    {"host": "/opt/apps/web", "container": "/a"},
                    {"host": "/srv/dockerops/web", "container": "/b"},
                ],
            }
        },
        allowed_host_paths=["/opt/apps/"],
    )

    (problem,) = problems_of(data)

    # The custom list replaces the default one.
    assert problem.startswith(f"{WEB}:data:1:host: /srv/dockerops/web is outside ")
    assert "(/opt/apps)" in problem


@pytest.mark.parametrize(
    ("data_targets", "config_path", "twice"),
    [
        (["/data", "/data"], None, "/data"),
        (["/data", "/data/"], None, "/data"),
        (["/data", "/other/../data"], None, "/data"),
        (["/etc/web"], "/etc/web/", "/etc/web"),
        (["/etc/web/conf/.."], "/etc/web", "/etc/web"),
    ],
)
def test_a_container_path_mounted_twice_is_refused(
    data_targets: list[str], config_path: str | None, twice: str
) -> None:
    fields: dict[str, Any] = {
        "data": [
            {"host": f"/srv/dockerops/web/{index}", "container": target}
            for index, target in enumerate(data_targets)
        ]
    }
    if config_path is not None:
        fields["config"] = config_dir(path=config_path)

    problem = one_problem(web_pillar(**fields))

    assert problem.startswith(f"{WEB}: {twice} mounted twice in the container"), problem


def test_nested_container_paths_are_distinct_mounts() -> None:
    spec = load(
        data=[{"host": "/srv/dockerops/web/data", "container": "/etc/web/data"}],
        config=config_dir(path="/etc/web"),
    )

    assert [m.container for m in spec.data] == ["/etc/web/data"]


# --- allowed_host_paths ----------------------------------------------------------------------


def _with_allowed(allowed: list[str], **fields: Any) -> dict[str, Any]:
    return pillar({"web": {"image": "web", **fields}}, allowed_host_paths=allowed)


@pytest.mark.parametrize("allowed", [["/"], ["relative/path"], [""], ["/srv", "/./"], ["/.."]])
def test_allowed_host_paths_are_absolute_and_not_the_root(allowed: list[str]) -> None:
    (problem,) = problems_of(_with_allowed(allowed))

    assert problem.startswith("dockerops:allowed_host_paths: "), problem
    assert "allowed host paths are absolute and not /" in problem


def test_allowed_host_path_of_two_slashes_is_the_root_and_refused() -> None:
    # posixpath.normpath("//") == "//" (POSIX keeps two leading slashes), which
    # passes the "not /" check and then allows every host path (/etc included).
    (problem,) = problems_of(_with_allowed(["//"], data=[{"host": "/etc", "container": "/x"}]))

    assert problem.startswith("dockerops:allowed_host_paths: "), problem


def test_allowed_host_paths_are_normalised() -> None:
    data = _with_allowed(
        ["/opt/apps/", "/data//x/./"],
        data=[
            {"host": "/opt/apps/web", "container": "/a"},
            {"host": "/data/x/web", "container": "/b"},
        ],
    )

    spec = load_service(data, "web")

    assert [m.host for m in spec.data] == ["/opt/apps/web", "/data/x/web"]


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_are_kept_apart_from_env() -> None:
    spec = load(env={"A": "1"}, secrets={"DB_PASSWORD": SECRET, "PORT": 5432, "ON": True})

    assert spec.secrets == {"DB_PASSWORD": SECRET, "PORT": "5432", "ON": "true"}
    assert spec.env == {"A": "1"}
    assert spec.all_env == {"A": "1", "DB_PASSWORD": SECRET, "PORT": "5432", "ON": "true"}
    assert sorted(spec.secret_values) == sorted([SECRET, "5432", "true"])


def test_empty_secret_values_are_not_secret_values() -> None:
    spec = load(secrets={"EMPTY": "", "PW": SECRET})

    assert spec.secret_values == [SECRET]


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ({"bad-name": "x"}, "'bad-name' is not a valid environment variable name"),
        ({"1ABC": "x"}, "'1ABC' is not a valid environment variable name"),
        ({"": "x"}, "'' is not a valid environment variable name"),
        ({"A": None}, "A: values must be strings or numbers"),
        ({"A": ["x"]}, "A: values must be strings or numbers"),
        ({"A": {"b": "x"}}, "A: values must be strings or numbers"),
    ],
)
def test_secret_names_follow_the_env_rules(secrets: dict[Any, Any], message: str) -> None:
    problem = one_problem(web_pillar(secrets=secrets))

    assert problem.startswith(f"{WEB}:secrets: "), problem
    assert message in problem
    assert " (got " not in problem


def test_a_name_in_both_env_and_secrets_is_refused() -> None:
    problem = one_problem(
        web_pillar(env={"DB_PASSWORD": "x", "B": "1"}, secrets={"DB_PASSWORD": "y"})
    )

    assert problem.startswith(f"{WEB}: DB_PASSWORD set in both env and secrets"), problem


# Each of these is a bad pillar holding SECRET as a secret value: whatever is
# wrong, the error (what Salt prints and logs) must not carry it.
_SECRET_LEAKS = [
    pytest.param({"secrets": {"PW": SECRET, "bad-name": "x"}}, id="bad-secret-name"),
    pytest.param({"secrets": {"PW": SECRET, "NESTED": {"x": 1}}}, id="bad-secret-value"),
    pytest.param({"secrets": {"PW": [SECRET]}}, id="secret-value-a-list"),
    pytest.param({"secrets": f"PW={SECRET}"}, id="secrets-not-a-mapping"),
    pytest.param({"secrets": [SECRET]}, id="secrets-a-list"),
    pytest.param({"secrets": {"PW": SECRET}, "replicas": "x"}, id="other-bad-field"),
    pytest.param({"secrets": {"PW": SECRET}, "tag": "bad tag"}, id="bad-tag"),
    pytest.param({"secrets": {"PW": SECRET}, "imgae": "web"}, id="unknown-key"),
    pytest.param({"secrets": {"PW": SECRET}, "env": {"PW": "x"}}, id="name-in-env-and-secrets"),
    pytest.param(
        {
            "secrets": {"PW": SECRET},
            "data": [
                {"host": "/srv/dockerops/a", "container": "/d"},
                {"host": "/srv/dockerops/b", "container": "/d"},
            ],
        },
        id="container-path-mounted-twice",
    ),
    pytest.param({"secrets": {"PW": SECRET}, "image": None}, id="missing-image"),
]


@pytest.mark.parametrize("fields", _SECRET_LEAKS)
def test_secret_values_never_appear_in_errors(fields: dict[str, Any]) -> None:
    # Secrets first: pillar keeps the operator's key order, and a value dumped
    # in an error is cut at 80 characters. image None: no image at all.
    service = {**fields, "image": fields.get("image", "web")}
    service = {key: value for key, value in service.items() if value is not None}

    with pytest.raises(SpecError) as caught:
        load_service(pillar({"web": service}), "web")

    assert caught.value.problems
    assert SECRET not in str(caught.value)
    assert all(SECRET not in problem for problem in caught.value.problems)


def test_secret_values_in_defaults_never_appear_in_errors() -> None:
    data = pillar({"web": {"image": "web"}}, defaults={"secrets": {"PW": SECRET, "bad-name": 1}})

    (problem,) = problems_of(data)

    assert problem.startswith("dockerops:defaults:secrets: 'bad-name' is not a valid")
    assert SECRET not in problem


# --- config contents never in errors ---------------------------------------------------------

_FILE = {"f": {"contents": CONTENTS}}
_DATA_AT_ETC_WEB = [{"host": "/srv/dockerops/web/data", "container": "/etc/web"}]

# (config, other service fields): each a bad pillar whose config file holds CONTENTS.
_CONTENT_LEAKS = [
    pytest.param({"files": {"f": {"contents": CONTENTS, "source": "salt://f"}}}, {}, id="both"),
    pytest.param({"files": {"f": {"contents": CONTENTS, "mode": "999"}}}, {}, id="bad-mode"),
    pytest.param({"files": {"f": {"contents": CONTENTS, "template": "m"}}}, {}, id="template"),
    pytest.param({"files": {"../f": {"contents": CONTENTS}}}, {}, id="bad-name"),
    pytest.param({"files": {"f": {"contents": CONTENTS, "x": 1}}}, {}, id="unknown-key"),
    pytest.param({"files": {"a": _FILE["f"], "a/b": _FILE["f"]}}, {}, id="file-and-dir"),
    pytest.param({"path": "rel"}, {}, id="bad-path"),
    pytest.param({"on_change": "x"}, {}, id="bad-on-change"),
    pytest.param({"keep": 0}, {}, id="bad-keep"),
    pytest.param({"root": "/etc"}, {}, id="bad-root"),
    pytest.param({"path": None}, {}, id="missing-path"),
    pytest.param({}, {"data": _DATA_AT_ETC_WEB}, id="config-path-mounted-twice"),
    pytest.param({}, {"replicas": "x"}, id="other-bad-field"),
    pytest.param({}, {"image": None}, id="missing-image"),
]


@pytest.mark.parametrize(("config_fields", "fields"), _CONTENT_LEAKS)
def test_config_contents_never_appear_in_errors(
    config_fields: dict[str, Any], fields: dict[str, Any]
) -> None:
    # Files first, as an operator may write them: a dumped value is cut at 80 characters.
    cfg = {"files": _FILE, "path": "/etc/web", **config_fields}
    cfg = {key: value for key, value in cfg.items() if value is not None}
    service = {"config": cfg, "image": "web", **fields}
    service = {key: value for key, value in service.items() if value is not None}

    with pytest.raises(SpecError) as caught:
        load_service(pillar({"web": service}), "web")

    assert caught.value.problems
    assert CONTENTS not in str(caught.value)


# --- logging ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logging", "driver", "options"),
    [
        (None, "json-file", {"max-size": "10m", "max-file": "3"}),
        ({}, "json-file", {"max-size": "10m", "max-file": "3"}),
        ({"options": {"max-size": "50m"}}, "json-file", {"max-size": "50m", "max-file": "3"}),
        (
            {"options": {"max-file": 5, "compress": True}},
            "json-file",
            {"max-size": "10m", "max-file": "5", "compress": "true"},
        ),
        ({"options": {"max-size": 1024}}, "json-file", {"max-size": "1024", "max-file": "3"}),
        ({"driver": "local"}, "local", {}),
        ({"driver": "local", "options": {"max-size": "20m"}}, "local", {"max-size": "20m"}),
        (
            {"driver": "syslog", "options": {"tag": "web"}},
            "syslog",
            {"tag": "web"},
        ),
        ({"driver": "none"}, "none", {}),
    ],
)
def test_logging(logging: dict[str, Any] | None, driver: str, options: dict[str, str]) -> None:
    spec = load() if logging is None else load(logging=logging)

    assert spec.logging.driver == driver
    assert spec.logging.effective_options == options
    assert all(isinstance(v, str) for v in spec.logging.options.values())


@pytest.mark.parametrize(
    ("logging", "path"),
    [
        ({"options": "max-size=10m"}, "logging:options"),
        ({"driver": 5}, "logging:driver"),
        ({"drvier": "local"}, "logging:drvier"),
    ],
)
def test_invalid_logging(logging: dict[str, Any], path: str) -> None:
    problem = one_problem(web_pillar(logging=logging))

    assert problem.startswith(f"{WEB}:{path}: "), problem


# --- healthcheck -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test", "docker_test"),
    [
        ("curl -f http://localhost/", ["CMD-SHELL", "curl -f http://localhost/"]),
        (["curl", "-f", "http://localhost/"], ["CMD", "curl", "-f", "http://localhost/"]),
        (["CMD", "curl", "-f"], ["CMD", "curl", "-f"]),
        (["CMD-SHELL", "curl -f || exit 1"], ["CMD-SHELL", "curl -f || exit 1"]),
    ],
)
def test_healthcheck_test(test: Any, docker_test: list[str]) -> None:
    spec = load(healthcheck={"test": test})

    assert spec.healthcheck is not None
    assert spec.healthcheck.docker_test == docker_test


def test_healthcheck_defaults() -> None:
    spec = load(healthcheck={"test": "true"})

    assert spec.healthcheck is not None
    check = spec.healthcheck
    assert (check.interval, check.timeout, check.retries, check.start_period) == (5.0, 3.0, 3, 0.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("1.5", 1.5),
        (" 2s ", 2.0),
        ("10", 10.0),
        (3, 3.0),
        (0.25, 0.25),
        ("1ms", 0.001),
    ],
)
def test_healthcheck_durations(value: object, seconds: float) -> None:
    spec = load(
        healthcheck={"test": "true", "interval": value, "timeout": value, "start_period": value}
    )

    assert spec.healthcheck is not None
    assert spec.healthcheck.interval == pytest.approx(seconds)
    assert spec.healthcheck.timeout == pytest.approx(seconds)
    assert spec.healthcheck.start_period == pytest.approx(seconds)


_BAD_DURATION = "expected a duration such as 2s, 500ms or 1m"


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"interval": "-1s"}, "interval", _BAD_DURATION),
        ({"interval": -1}, "interval", "a duration cannot be negative"),
        ({"timeout": -0.5}, "timeout", "a duration cannot be negative"),
        ({"start_period": -2}, "start_period", "a duration cannot be negative"),
        ({"interval": "abc"}, "interval", _BAD_DURATION),
        ({"interval": "2 weeks"}, "interval", _BAD_DURATION),
        ({"interval": "2d"}, "interval", _BAD_DURATION),
        ({"interval": "1m30s"}, "interval", _BAD_DURATION),
        ({"interval": ""}, "interval", _BAD_DURATION),
        ({"interval": True}, "interval", _BAD_DURATION),
        ({"interval": 0}, "interval", "must be at least 1ms"),
        ({"timeout": "0s"}, "timeout", "must be at least 1ms"),
        ({"retries": 0}, "retries", "greater than or equal to 1"),
        ({"retries": 101}, "retries", "less than or equal to 100"),
        ({"intervall": "2s"}, "intervall", "unknown key; did you mean 'interval'?"),
    ],
)
def test_invalid_healthcheck(fields: dict[str, Any], path: str, message: str) -> None:
    problem = one_problem(web_pillar(healthcheck={"test": "true", **fields}))

    assert problem.startswith(f"{WEB}:healthcheck:{path}: "), problem
    assert message in problem, problem


def test_healthcheck_needs_a_test() -> None:
    problem = one_problem(web_pillar(healthcheck={"interval": "2s"}))

    assert problem.startswith(f"{WEB}:healthcheck:test: Field required"), problem


@pytest.mark.parametrize(("value", "seconds"), [("250ms", 0.25), (7, 7.0), ("2m", 120.0)])
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [False, -1, "-1", "x", "1 s", None])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# --- update ----------------------------------------------------------------------------------


def test_update_defaults() -> None:
    update = load().update

    assert (update.health_timeout, update.min_healthy_time, update.rollback) == (60.0, None, True)
    assert (update.parallelism, update.order, update.spares(1)) == (1, "start-first", 1)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"health_timeout": "2m"}, (120.0, None, True)),
        ({"health_timeout": 30, "min_healthy_time": "500ms"}, (30.0, 0.5, True)),
        ({"min_healthy_time": "5s", "rollback": False}, (60.0, 5.0, False)),
        ({"rollback": "no"}, (60.0, None, False)),
    ],
)
def test_update(fields: dict[str, Any], expected: tuple[float, float | None, bool]) -> None:
    update = load(update=fields).update

    assert (update.health_timeout, update.min_healthy_time, update.rollback) == expected


@pytest.mark.parametrize(
    ("replicas", "fields", "spares"),
    [
        pytest.param(1, {}, 1, id="one-replica-one-batch"),
        pytest.param(2, {}, 2, id="two-batches-both-in-flight"),
        pytest.param(3, {}, 3, id="three-batches"),
        pytest.param(10, {}, 3, id="at-most-three-batches-in-flight"),
        pytest.param(4, {"parallelism": 2}, 4, id="two-batches-of-two"),
        pytest.param(7, {"parallelism": 2}, 6, id="three-of-four-batches-of-two"),
        pytest.param(2, {"parallelism": 5}, 2, id="a-batch-is-at-most-the-replicas"),
        pytest.param(100, {"parallelism": 100}, 100, id="all-at-once"),
        pytest.param(4, {"order": "stop-first"}, 0, id="stop-first"),
        pytest.param(4, {"parallelism": 5, "order": "stop-first"}, 0, id="stop-first-wide"),
    ],
)
def test_update_spares(replicas: int, fields: dict[str, Any], spares: int) -> None:
    spec = load(replicas=replicas, update=fields)

    assert spec.update.spares(replicas) == spares
    assert UpdateSpec(**fields).spares(replicas) == spares
    assert spec.slots == replicas + spares


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({"health_timeout": "-5s"}, "health_timeout", _BAD_DURATION),
        ({"health_timeout": -5}, "health_timeout", "a duration cannot be negative"),
        ({"min_healthy_time": "soon"}, "min_healthy_time", _BAD_DURATION),
        ({"rollback": "maybe"}, "rollback", "valid boolean"),
        ({"rolback": False}, "rolback", "unknown key; did you mean 'rollback'?"),
        ({"parallelism": 0}, "parallelism", "greater than or equal to 1"),
        ({"parallelism": 101}, "parallelism", "less than or equal to 100"),
        ({"order": "blue-green"}, "order", "'start-first' or 'stop-first'"),
    ],
)
def test_invalid_update(fields: dict[str, Any], path: str, message: str) -> None:
    problem = one_problem(web_pillar(update=fields))

    assert problem.startswith(f"{WEB}:update:{path}: "), problem
    assert message in problem, problem
