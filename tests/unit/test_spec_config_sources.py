"""Pillar for the other config approaches: files from etcd, config images,
registries, the store's address as env vars."""

from __future__ import annotations

import pytest

from dockerops.config import RenderedConfig, RenderedFile
from dockerops.configimage import LABEL_BASE_NAME, LABEL_CONFIG_VERSION, config_tag, for_image
from dockerops.configmode import Running, exact, here, image_spec, running, uses_image
from dockerops.errors import NotFound, SpecError
from dockerops.spec import load_root, load_service
from tests.support.builders import WEB, config_dir, one_problem, pillar, web_pillar

ETCD_FILE = {"etcd": {"prefix": "/web/prod/", "required": ["db/host"]}}


def test_an_etcd_file_is_read():
    spec = load_service(web_pillar(config=config_dir(files={"app.json": ETCD_FILE})), "web")
    source = spec.etcd_files["app.json"]
    assert (source.prefix, source.format, source.required) == ("/web/prod/", "json", ["db/host"])


@pytest.mark.parametrize(
    ("item", "where", "says"),
    [
        ({"etcd": {"prefix": "web/"}}, "app.json:etcd:prefix", "absolute key"),
        ({"etcd": {"prefix": "/w\n/"}}, "app.json:etcd:prefix", "absolute key"),
        ({"etcd": {"prefix": "/w/", "format": "toml"}}, "app.json:etcd:format", "json"),
        ({"etcd": {"prefix": "/w/", "format": "template"}}, "app.json:etcd", "needs a template"),
        (
            {"etcd": {"prefix": "/w/", "template": "salt://t.j2"}},
            "app.json:etcd",
            "needs a template",
        ),
        (
            {"etcd": {"prefix": "/w/", "format": "template", "template": "/t.j2"}},
            "app.json:etcd:template",
            "salt:// URL",
        ),
        ({"etcd": {"prefix": "/w/", "required": [""]}}, "app.json:etcd:required", "a key"),
        ({"etcd": {"prefix": "/w/"}, "contents": "x"}, "app.json", "exactly one of"),
        ({"etcd": {"prefix": "/w/"}, "template": "jinja"}, "app.json", "etcd:format: template"),
    ],
)
def test_a_bad_etcd_file_names_its_path(item, where, says):
    problem = one_problem(web_pillar(config=config_dir(files={"app.json": item})))
    assert problem.startswith(f"{WEB}:config:files:{where}"), problem
    assert says in problem


def test_image_mode_rolls_and_has_no_root():
    spec = load_service(web_pillar(config=config_dir(mode="image")), "web")
    assert uses_image(spec)
    assert spec.config is not None and spec.config.build is True
    problem = one_problem(web_pillar(config=config_dir(mode="image", on_change="signal:HUP")))
    assert problem.startswith(f"{WEB}:config") and "on_change is rolling" in problem
    problem = one_problem(web_pillar(config=config_dir(mode="image", root="/srv/dockerops/x")))
    assert "has no host directory" in problem
    assert "mount" in one_problem(web_pillar(config=config_dir(mode="layer")))
    files = {"a": {"contents": "x", "owner": "www-data"}, "b": {"contents": "y", "group": 33}}
    problem = one_problem(web_pillar(config=config_dir(mode="image", files=files)))
    assert problem.endswith("mode: image takes numeric owner and group ids only (a:owner)")
    files["a"]["owner"] = "33"
    assert load_service(web_pillar(config=config_dir(mode="image", files=files)), "web")


def test_environment_short_comes_from_pillar_and_defaults_to_the_environment():
    data = pillar({"web": {"image": "web"}}, environment="production")
    assert load_service(data, "web").env_short == "production"
    data["dockerops"]["environment_short"] = "prod"
    assert load_service(data, "web").env_short == "prod"
    data["dockerops"]["environment_short"] = "pr od"
    with pytest.raises(SpecError, match=r"dockerops:environment_short: .*short name"):
        load_service(data, "web")


def test_registries_hold_credentials_as_pairs():
    root = load_root(
        pillar(registries={"127.0.0.1:5000": {"username": "ci", "password": "s3cret-pass"}})
    )
    assert root.registries["127.0.0.1:5000"].username == "ci"
    with pytest.raises(SpecError) as caught:
        load_root(pillar(registries={"reg.example.com": {"password": "s3cret-pass"}}))
    assert "both username and password" in str(caught.value)
    assert "s3cret-pass" not in str(caught.value)
    with pytest.raises(SpecError, match="a registry is host or host:port"):
        load_root(pillar(registries={"http://reg": {}}))


@pytest.mark.parametrize(
    ("etcd", "says"),
    [
        ({"endpoints": ["127.0.0.1:2379"]}, "http(s)://host:port"),
        ({"endpoints": ["ftp://127.0.0.1:2379"]}, "http(s)://host:port"),
        ({"username": "u"}, "both username and password"),
        ({"cert_file": "/c.pem"}, "both cert_file and key_file"),
        ({"ca_file": "ca.pem"}, "absolute path"),
        ({"timeout": "0s"}, "more than 0"),
        ({"timeout": "2m"}, "at most"),
    ],
)
def test_bad_etcd_settings_are_refused(etcd, says):
    with pytest.raises(SpecError) as caught:
        load_root(pillar(etcd=etcd))
    assert "dockerops:etcd" in str(caught.value) and says in str(caught.value)


def test_etcd_env_gives_the_container_the_store_and_environment():
    data = pillar(
        {"web": {"image": "web", "etcd_env": True, "env": {"A": "1"}}},
        environment="staging",
        etcd={"endpoints": ["http://127.0.0.1:2379", "https://etcd-2:2379/"]},
    )
    spec = load_service(data, "web")
    assert spec.env == {
        "DOCKEROPS_ETCD_ENDPOINTS": "http://127.0.0.1:2379,https://etcd-2:2379",
        "DOCKEROPS_ENVIRONMENT": "staging",
        "A": "1",
    }
    # Pillar's own env wins over the defaults it is given.
    data["dockerops"]["services"]["web"]["env"] = {"DOCKEROPS_ENVIRONMENT": "stg"}
    assert load_service(data, "web").env["DOCKEROPS_ENVIRONMENT"] == "stg"
    problem = one_problem(web_pillar(etcd_env=True))
    assert problem == (
        f"{WEB}:etcd_env: needs dockerops:etcd:endpoints (the store's address the container gets)"
    )


class _Image:
    def __init__(self, tag):
        self.tag = tag


class _Host:
    """A host with the images in ``images`` (ref -> inspect)."""

    api = "api"

    def __init__(self, images=None):
        self.images = images or {}

    def inspect_image(self, ref):
        if ref not in self.images:
            raise NotFound(f"no image {ref}")
        return self.images[ref]


def test_a_config_image_service_runs_its_final_image_with_nothing_mounted():
    spec = load_service(web_pillar(tag="1.0", config=config_dir(mode="image")), "web")
    calls = []

    def ensure(api, spec_, rendered, registries, build, test):
        assert api == "api"
        calls.append((spec_.name, rendered, build, test))
        return _Image("1.0-default-0123456789ab")

    host = _Host()
    rendered = RenderedConfig((RenderedFile("web.conf", b"x", 0o644),), "0123456789abcdef")
    run = running(host, spec, rendered, {}, "/nonexistent", test=True, ensure=ensure)
    assert calls == [("web", rendered, True, True)]
    assert run.spec.image_ref == "web:1.0-default-0123456789ab"
    assert run.spec.config is None and run.rendered is None
    # A mounted config is left as it is, and nothing is built.
    mounted = load_service(web_pillar(config=config_dir()), "web")
    assert running(host, mounted, rendered, {}, "/nonexistent", ensure=ensure) == Running(
        mounted, rendered
    )
    assert len(calls) == 1
    # A rollback names the final image: it runs as it is.
    back = exact(image_spec(spec, "1.0-default-aaaaaaaaaaaa"), None)
    assert back.spec.image_ref == "web:1.0-default-aaaaaaaaaaaa" and back.spec.config is None


@pytest.mark.parametrize(
    "top",
    [
        {"registries": {"r.example.com": {"username": "u", "password": "s3cret\nvalue"}}},
        {"etcd": {"username": "u", "password": "s3cret\nvalue"}},
        {"etcd": {"username": "u", "password": ["s3cret", "value"]}},
    ],
)
def test_a_bad_password_is_never_echoed(top):
    with pytest.raises(SpecError) as caught:
        load_root(pillar(**top))
    assert "password" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_config_image_this_host_has_is_not_asked_of_the_registry():
    spec = load_service(web_pillar(tag="1.0", config=config_dir(mode="image")), "web")
    rendered = RenderedConfig((RenderedFile("web.conf", b"x", 0o644),), "0123456789abcdef")
    version = for_image(rendered, "/etc/web").version
    ref = "web:" + config_tag("1.0", "default", version)
    inspect = {
        "Id": "sha256:feed",
        "RepoDigests": ["web@sha256:beef"],
        "Config": {"Labels": {LABEL_CONFIG_VERSION: version, LABEL_BASE_NAME: "web:1.0"}},
    }

    def ensure(*args, **kwargs):
        raise AssertionError("the registry was asked")

    run = running(_Host({ref: inspect}), spec, rendered, {}, "/nonexistent", True, ensure=ensure)
    assert run.spec.image_ref == ref
    assert run.image is not None and (run.image.present, run.image.built) == (True, False)
    assert (run.image.image_id, run.image.digest) == ("sha256:feed", "sha256:beef")
    # Another image under that tag (its label differs), or none: the registry decides.
    other = {**inspect, "Config": {"Labels": {LABEL_CONFIG_VERSION: "f" * 16}}}
    assert here(_Host({ref: other}), spec, rendered) is None
    # Built on another app image (the same tag can come of tag 1.0-a in env b).
    labels = {LABEL_CONFIG_VERSION: version, LABEL_BASE_NAME: "web:1.0-x"}
    assert here(_Host({ref: {**inspect, "Config": {"Labels": labels}}}), spec, rendered) is None
    assert here(_Host(), spec, rendered) is None


def test_a_file_from_etcd_hides_its_diff_unless_told():
    files = {
        "a.json": ETCD_FILE,
        "b.json": {**ETCD_FILE, "show_diff": True},
        "c.conf": {"contents": "x"},
    }
    spec = load_service(web_pillar(config=config_dir(files=files)), "web")
    assert spec.config is not None
    shown = {name: item.diff_shown for name, item in spec.config.files.items()}
    assert shown == {"a.json": False, "b.json": True, "c.conf": True}


@pytest.mark.parametrize("value", ["true", 1, "yes"])
def test_etcd_env_is_a_boolean(value):
    data = pillar(
        {"web": {"image": "web", "etcd_env": value}}, etcd={"endpoints": ["http://127.0.0.1:2379"]}
    )
    problem = one_problem(data)
    assert problem.startswith(f"{WEB}:etcd_env: Input should be a valid boolean"), problem


def test_etcd_credentials_travel_only_over_tls_or_loopback():
    creds = {"username": "web", "password": "s3cret-pass"}
    for endpoint in ("https://etcd.example.com:2379", "http://127.0.0.1:2379", "http://[::1]:2379"):
        assert load_root(pillar(etcd={"endpoints": [endpoint], **creds})).etcd.endpoints
    with pytest.raises(SpecError) as caught:
        load_root(pillar(etcd={"endpoints": ["http://etcd.example.com:2379"], **creds}))
    assert "http://etcd.example.com:2379 would carry the password in clear text" in str(
        caught.value
    )
    assert "s3cret-pass" not in str(caught.value)
    # Without credentials plain http is the operator's choice.
    assert load_root(pillar(etcd={"endpoints": ["http://etcd.example.com:2379"]}))


def test_no_password_shows_in_the_settings_repr():
    root = load_root(
        pillar(
            registries={"r.example.com": {"username": "u", "password": "r3g-pw-value"}},
            etcd={"endpoints": ["https://e:2379"], "username": "u", "password": "etcd-pw-value"},
            backup={"repository": "sftp:u:repo-pw-value@h:/r", "password": "bk-pw-value"},
        )
    )
    shown = repr(root)
    for secret in ("r3g-pw-value", "etcd-pw-value", "repo-pw-value", "bk-pw-value"):
        assert secret not in shown
