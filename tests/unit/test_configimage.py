"""dockerops.configimage (tag, layer, image config, manifest) and the pure parts
of dockerops.registry (references, challenges, schemes, errors)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

import pytest

from dockerops.config import RenderedConfig, RenderedFile, version_of
from dockerops.configimage import (
    DOCKER_LAYER,
    LABEL_BASE_DIGEST,
    LABEL_BASE_NAME,
    LABEL_CONFIG_PATH,
    LABEL_CONFIG_VERSION,
    LABEL_VERSION,
    LAYER_MTIME,
    OCI_LAYER,
    OPAQUE_MARKER,
    _differs,
    assemble,
    compress,
    config_tag,
    file_ids,
    for_image,
    image_config,
    image_labels,
    image_manifest,
    layer_tar,
)
from dockerops.configmode import here
from dockerops.errors import NotFound, SpecError
from dockerops.registry import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    Manifest,
    Reference,
    RegistryClient,
    is_loopback,
    parse_challenge,
    parse_reference,
    settings_for,
    sha256_digest,
)
from dockerops.spec import RegistrySettings, load_service

VERSION = "16ba0012ab34cdef"


def rendered(*files: RenderedFile) -> RenderedConfig:
    return RenderedConfig(tuple(files), version_of(files))


FILES = rendered(
    RenderedFile("web.conf", b"listen 80\n", 0o644),
    RenderedFile("conf.d/b.conf", b"b\n", 0o640, owner=101, group="102"),
    RenderedFile("conf.d/a.conf", b"a\n", 0o600, owner="33"),
    RenderedFile("a.conf", b"first\n", 0o444),
)


def members(tar: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return archive.getmembers()


def contents(tar: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        out = {}
        for member in archive.getmembers():
            if member.isfile():
                extracted = archive.extractfile(member)
                assert extracted is not None
                out[member.name] = extracted.read()
        return out


# -- tag ------------------------------------------------------------------------


def test_tag_is_app_tag_env_short_and_twelve_hex():
    assert config_tag("1.0", "prod", VERSION) == "1.0-prod-16ba0012ab34"
    assert config_tag("v2_rc.1", "eu-west.1", "0" * 16) == "v2_rc.1-eu-west.1-000000000000"


@pytest.mark.parametrize(
    ("app_tag", "env_short", "version", "expected"),
    [
        ("-1.0", "prod", VERSION, "dockerops:services:web:tag: '-1.0' is not a valid image tag"),
        ("1.0", "pr/od", VERSION, "dockerops:environment_short: 'pr/od' is not a valid"),
        ("1.0", "", VERSION, "dockerops:environment_short: '' is not a valid"),
        ("1.0", "p" * 33, VERSION, "dockerops:environment_short:"),
        ("1.0", "prod", "16ba00", "config version '16ba00' is not a hex hash"),
        ("1.0", "prod", "16BA0012AB34CDEF", "config version '16BA0012AB34CDEF' is not a hex"),
    ],
)
def test_tag_grammar_is_checked(app_tag: str, env_short: str, version: str, expected: str):
    with pytest.raises(SpecError) as err:
        config_tag(app_tag, env_short, version, service="web")
    assert any(problem.startswith(expected) for problem in err.value.problems), err.value


def test_tag_length_limit_names_the_room_left():
    # 128 is Docker's limit: "-prod-" + 12 hex leave 110 for the app tag.
    assert len(config_tag("a" * 110, "prod", VERSION)) == 128
    with pytest.raises(SpecError) as err:
        config_tag("a" * 111, "prod", VERSION, service="web")
    (problem,) = err.value.problems
    assert problem.startswith("dockerops:services:web:tag: the config image tag")
    assert "is 129 characters, Docker allows 128" in problem
    assert "the app tag may have 110" in problem


# -- layer ------------------------------------------------------------------------


def test_layer_entries_sorted_with_modes_owners_and_fixed_times():
    tar = layer_tar("/etc/web/", FILES, "web")
    got = [
        (m.name, m.type, oct(m.mode), m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members(tar)
    ]
    d, f = tarfile.DIRTYPE, tarfile.REGTYPE
    t = LAYER_MTIME
    assert got == [
        ("etc/web", d, "0o755", 0, 0, "", "", t),
        (f"etc/web/{OPAQUE_MARKER}", f, "0o644", 0, 0, "", "", t),
        ("etc/web/a.conf", f, "0o444", 0, 0, "", "", t),
        ("etc/web/conf.d", d, "0o755", 0, 0, "", "", t),
        ("etc/web/conf.d/a.conf", f, "0o600", 33, 0, "", "", t),
        ("etc/web/conf.d/b.conf", f, "0o640", 101, 102, "", "", t),
        ("etc/web/web.conf", f, "0o644", 0, 0, "", "", t),
    ]
    assert contents(tar) == {
        f"etc/web/{OPAQUE_MARKER}": b"",
        "etc/web/a.conf": b"first\n",
        "etc/web/conf.d/a.conf": b"a\n",
        "etc/web/conf.d/b.conf": b"b\n",
        "etc/web/web.conf": b"listen 80\n",
    }


def test_layer_has_no_pax_headers_and_no_parents_above_the_path():
    tar = layer_tar("/srv/app/config", FILES, "web")
    names = [m.name for m in members(tar)]
    assert not [n for n in names if not n.startswith("srv/app/config")]
    assert all(not m.pax_headers for m in members(tar))
    # No pax (x/g) header blocks: the type flag of every 512-byte header.
    flags = {tar[m.offset + 156 : m.offset + 157] for m in members(tar)}
    assert flags == {tarfile.REGTYPE, tarfile.DIRTYPE}


def test_long_names_are_kept_without_pax():
    deep = "/".join(["d" * 60] * 3) + "/file.conf"
    tar = layer_tar("/etc/app", rendered(RenderedFile(deep, b"x", 0o644)), "web")
    assert contents(tar) == {f"etc/app/{OPAQUE_MARKER}": b"", f"etc/app/{deep}": b"x"}
    assert all(not m.pax_headers for m in members(tar))


def test_layer_is_deterministic_and_pinned(monkeypatch: pytest.MonkeyPatch):
    first = layer_tar("/etc/web", FILES, "web")
    # Order of the rendered files, the clock and the umask play no part.
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)
    shuffled = rendered(*reversed(FILES.files))
    assert layer_tar("/etc/web", shuffled, "web") == first
    # Pinned: a change of format is a change of every config image's ID.
    assert hashlib.sha256(first).hexdigest() == PINNED_DIFF_ID


PINNED_DIFF_ID = "060334da0f751fe9326eaeb2729c67a7bb40d5ea6d0af816e179e5de24a66128"


def test_numeric_owner_ids_and_names_refused_with_their_paths():
    assert file_ids(FILES, "web")["conf.d/b.conf"] == (101, 102)
    named = rendered(
        RenderedFile("a.conf", b"", 0o644, owner="www-data"),
        RenderedFile("b.conf", b"", 0o644, owner=0, group="adm"),
    )
    with pytest.raises(SpecError) as err:
        layer_tar("/etc/web", named, "web")
    assert [p.split(": ")[0] for p in err.value.problems] == [
        "dockerops:services:web:config:files:a.conf:owner",
        "dockerops:services:web:config:files:b.conf:group",
    ]
    assert "'www-data' is a name" in err.value.problems[0]


def test_gzip_carries_no_time_and_no_name():
    tar = layer_tar("/etc/web", FILES, "web")
    blob = compress(tar)
    assert blob[:4] == b"\x1f\x8b\x08\x00"  # no FNAME flag
    assert blob[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(blob) == tar
    assert compress(tar) == blob


# -- image config and manifest --------------------------------------------------------

BASE_CONFIG: dict[str, Any] = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2026-01-02T03:04:05.123456789Z",
    "config": {
        "Env": ["PATH=/bin"],
        "Cmd": ["/bin/serve"],
        "Labels": {"org.opencontainers.image.version": "1.0", "team": "web"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]},
    "history": [
        {"created": "2026-01-02T03:04:00Z", "created_by": "COPY busybox"},
        {"created": "2026-01-02T03:04:05Z", "created_by": "LABEL", "empty_layer": True},
        {"created": "2026-01-02T03:04:05Z", "created_by": "COPY serve"},
    ],
}
LABELS = image_labels(
    "1.0-prod-16ba0012ab34", "reg/web:1.0", "sha256:" + "b" * 64, VERSION, "/etc/web"
)


def test_label_set():
    assert LABELS == {
        LABEL_VERSION: "1.0-prod-16ba0012ab34",
        LABEL_BASE_NAME: "reg/web:1.0",
        LABEL_BASE_DIGEST: "sha256:" + "b" * 64,
        LABEL_CONFIG_VERSION: VERSION,
        LABEL_CONFIG_PATH: "/etc/web",
    }
    assert LABEL_VERSION == "org.opencontainers.image.version"
    assert LABEL_BASE_NAME == "org.opencontainers.image.base.name"
    assert LABEL_BASE_DIGEST == "org.opencontainers.image.base.digest"
    assert LABEL_CONFIG_VERSION == "io.dockerops.config.version"
    assert LABEL_CONFIG_PATH == "io.dockerops.config.path"


def test_image_config_derived_from_the_base():
    diff_id = "sha256:" + "3" * 64
    raw = image_config(json.dumps(BASE_CONFIG).encode(), LABELS, diff_id, "dockerops: config")
    config = json.loads(raw)
    assert config["created"] == BASE_CONFIG["created"]
    assert config["config"]["Labels"] == {"team": "web", **LABELS}
    assert config["config"]["Cmd"] == ["/bin/serve"] and config["config"]["Env"] == ["PATH=/bin"]
    assert config["rootfs"]["diff_ids"] == [*BASE_CONFIG["rootfs"]["diff_ids"], diff_id]
    assert config["history"] == [
        *BASE_CONFIG["history"],
        {
            "created": BASE_CONFIG["created"],
            "created_by": "dockerops: config",
            "comment": "dockerops config image",
        },
    ]
    assert {k: v for k, v in config.items() if k not in ("config", "rootfs", "history")} == {
        k: v for k, v in BASE_CONFIG.items() if k not in ("config", "rootfs", "history")
    }
    # Canonical: the base's key order and spacing do not matter.
    reordered = json.dumps(dict(reversed(BASE_CONFIG.items())), indent=2).encode()
    assert image_config(reordered, LABELS, diff_id, "dockerops: config") == raw
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_image_config_of_a_base_without_labels_or_history():
    base = {"created": "2026-01-01T00:00:00Z", "config": {"Labels": None}, "rootfs": {}}
    config = json.loads(image_config(json.dumps(base).encode(), LABELS, "sha256:x", "c"))
    assert config["config"]["Labels"] == LABELS
    assert config["rootfs"]["diff_ids"] == ["sha256:x"]
    assert [h["created"] for h in config["history"]] == ["2026-01-01T00:00:00Z"]


def base_manifest(media_type: str) -> Manifest:
    config_type = (
        "application/vnd.oci.image.config.v1+json"
        if media_type == OCI_MANIFEST
        else "application/vnd.docker.container.image.v1+json"
    )
    data = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": 3, "digest": "sha256:" + "c" * 64},
        "layers": [{"mediaType": "x", "size": 10, "digest": "sha256:" + "d" * 64}],
        "annotations": {"a": "b"},
    }
    raw = json.dumps(data).encode()
    return Manifest(media_type, sha256_digest(raw), raw)


@pytest.mark.parametrize(
    ("media_type", "layer_type"), [(DOCKER_MANIFEST, DOCKER_LAYER), (OCI_MANIFEST, OCI_LAYER)]
)
def test_manifest_appends_the_layer_in_the_base_format(media_type: str, layer_type: str):
    base = base_manifest(media_type)
    manifest = json.loads(image_manifest(base, b"{config}", b"layer!"))
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": base.data["config"]["mediaType"],
            "size": 8,
            "digest": sha256_digest(b"{config}"),
        },
        "layers": [
            *base.data["layers"],
            {"mediaType": layer_type, "size": 6, "digest": sha256_digest(b"layer!")},
        ],
    }


def spec_of(files: dict[str, Any]) -> Any:
    service = {
        "image": "registry.example.com/web",
        "tag": "1.0",
        "config": {"path": "/etc/web", "mode": "image", "files": files},
    }
    pillar = {"dockerops": {"environment": "production", "environment_short": "prod"}}
    pillar["dockerops"]["services"] = {"web": service}
    return load_service(pillar, "web")


def test_assemble_same_inputs_same_image_changed_content_new_image():
    spec = spec_of({"web.conf": {"contents": "x"}})
    base = base_manifest(DOCKER_MANIFEST)
    raw_base = json.dumps(BASE_CONFIG).encode()
    tag = config_tag(spec.tag, spec.env_short, FILES.version)
    one = assemble(spec, FILES, tag, base, raw_base)
    assert assemble(spec, FILES, tag, base, raw_base) == one
    assert one.image_id == sha256_digest(one.config)
    config = json.loads(one.config)
    assert config["config"]["Labels"][LABEL_BASE_NAME] == "registry.example.com/web:1.0"
    assert config["config"]["Labels"][LABEL_BASE_DIGEST] == base.digest
    assert config["rootfs"]["diff_ids"][-1] == sha256_digest(gzip.decompress(one.layer))
    assert json.loads(one.manifest)["layers"][-1]["digest"] == sha256_digest(one.layer)
    changed = rendered(*FILES.files[:-1], RenderedFile("a.conf", b"second\n", 0o444))
    other = assemble(spec, changed, tag, base, raw_base)
    assert other.image_id != one.image_id and other.digest != one.digest


# -- registry: pure parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/dockerops/demo:1.0", Reference("127.0.0.1:5000", "dockerops/demo", "1.0")),
        ("registry.example.com/web", Reference("registry.example.com", "web", None)),
        ("localhost/a/b:x", Reference("localhost", "a/b", "x")),
        ("nginx:1.27", Reference("docker.io", "library/nginx", "1.27")),
        ("team/app:2", Reference("docker.io", "team/app", "2")),
        ("[::1]:5000/a:1", Reference("[::1]:5000", "a", "1")),
    ],
)
def test_parse_reference(ref: str, expected: Reference):
    assert parse_reference(ref) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.9.8.7", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def test_scheme_plain_http_for_loopback_and_insecure_only():
    assert RegistryClient("127.0.0.1:5000", "a").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("reg.example.com", "a").base_url == "https://reg.example.com"
    insecure = RegistrySettings(insecure=True)
    assert RegistryClient("reg.example.com", "a", insecure).base_url == "http://reg.example.com"
    assert RegistryClient("docker.io", "library/x").base_url == "https://registry-1.docker.io"


def test_settings_by_registry_host_and_docker_hub_names():
    hub = RegistrySettings(username="u", password="p")
    assert settings_for("docker.io", {"index.docker.io": hub}) is hub
    assert settings_for("reg:5000", {"reg": hub}) is None
    assert settings_for("reg:5000", {"reg:5000": hub}) is hub


def test_parse_challenge():
    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:a/b:pull,push"'
    )
    assert parse_challenge(header) == (
        "bearer",
        {
            "realm": "https://auth.example.com/token",
            "service": "registry.example.com",
            "scope": "repository:a/b:pull,push",
        },
    )
    assert parse_challenge('Basic realm="x \\"y\\""') == ("basic", {"realm": 'x "y"'})
    assert parse_challenge("") == ("", {})


def test_errors_name_registry_and_repository_never_the_password():
    password = "hunter2-very-secret"
    client = RegistryClient(
        "reg.example.com", "team/web", RegistrySettings(username="u", password=password)
    )
    err = client._error(f"echoed {password} back")
    assert str(err).startswith("registry reg.example.com, team/web: ")
    assert password not in str(err)


# -- configmode.here: a local image is trusted only when it is this one ------------------


class FakeHost:
    """inspect_image of one local image (here() reads nothing else)."""

    def __init__(self, ref: str, labels: dict[str, str]) -> None:
        self.ref = ref
        self.details = {"Id": "sha256:" + "1" * 64, "Config": {"Labels": labels}}

    def inspect_image(self, ref: str) -> dict[str, Any]:
        if ref != self.ref:
            raise NotFound(f"no image {ref}")
        return self.details


def here_case(tag: str, env_short: str) -> tuple[Any, RenderedConfig, str, str]:
    pillar = {
        "dockerops": {
            "environment": "production",
            "environment_short": env_short,
            "services": {
                "web": {
                    "image": "registry.example.com/web",
                    "tag": tag,
                    "config": {
                        "path": "/etc/web",
                        "mode": "image",
                        "files": {"a": {"contents": ""}},
                    },
                }
            },
        }
    }
    spec = load_service(pillar, "web")
    files = rendered(RenderedFile("a", b"", 0o644))
    version = for_image(files, "/etc/web").version
    ref = f"{spec.image}:{config_tag(spec.tag, spec.env_short, version)}"
    return spec, files, version, ref


def test_here_trusts_a_local_image_of_this_app_image():
    spec, files, version, ref = here_case("1.0", "a-b")
    host = FakeHost(ref, {LABEL_CONFIG_VERSION: version, LABEL_BASE_NAME: spec.image_ref})
    found = here(host, spec, files)  # type: ignore[arg-type]
    assert found is not None and found.ref == ref and found.present
    assert found.base_ref == spec.image_ref


def test_here_does_not_trust_the_config_version_alone():
    # App tag 1.0 in environment a-b and app tag 1.0-a in environment b make
    # the same config image tag, with the same config version.
    spec, files, version, ref = here_case("1.0", "a-b")
    other, _, other_version, other_ref = here_case("1.0-a", "b")
    assert (other_ref, other_version) == (ref, version)
    host = FakeHost(ref, {LABEL_CONFIG_VERSION: version, LABEL_BASE_NAME: other.image_ref})
    assert here(host, spec, files) is None  # type: ignore[arg-type]
    host.details["Config"]["Labels"].pop(LABEL_BASE_NAME)
    assert here(host, spec, files) is None  # type: ignore[arg-type]
    host = FakeHost(ref, {LABEL_CONFIG_VERSION: "0" * 16, LABEL_BASE_NAME: spec.image_ref})
    assert here(host, spec, files) is None  # type: ignore[arg-type]


def test_an_image_under_the_config_tag_that_differs_is_named_never_replaced():
    spec = spec_of({"web.conf": {"contents": "x"}})
    wanted = {
        LABEL_CONFIG_VERSION: VERSION,
        LABEL_CONFIG_PATH: "/etc/web",
        LABEL_BASE_NAME: spec.image_ref,
        LABEL_BASE_DIGEST: "sha256:" + "a" * 64,
    }
    old = {**wanted, LABEL_BASE_DIGEST: "sha256:" + "b" * 64}
    message = _differs(spec, "r/web:t", old, wanted)
    assert message.startswith(
        f"the app tag 1.0 was pushed again (digest sha256:{'a' * 64}, the config image "
        f"r/web:t was built on sha256:{'b' * 64}): give the app a new tag"
    )
    foreign = {LABEL_CONFIG_VERSION: VERSION}
    message = _differs(spec, "r/web:t", foreign, wanted)
    assert message.startswith("r/web:t in the registry is another image (")
    assert f"{LABEL_BASE_NAME} is unset, not {spec.image_ref}" in message
    assert "never overwritten" in message
