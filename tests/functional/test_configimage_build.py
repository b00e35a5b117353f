"""Config images built in a real registry, pulled and run by a real dockerd.

The app image is demo-http 1.0 (busybox) in the session registry; every test
uses its own environment short name, so its config image tags are its own.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from dockerops.config import RenderedConfig, render
from dockerops.configimage import (
    LABEL_BASE_DIGEST,
    LABEL_BASE_NAME,
    LABEL_CONFIG_VERSION,
    LABEL_VERSION,
    LAYER_MTIME,
    ConfigImageError,
    ensure_config_image,
    for_image,
)
from dockerops.errors import SpecError
from dockerops.registry import RegistryError
from dockerops.spec import RegistrySettings, ServiceSpec, load_service
from tests.support.registry import Registry, free_port

pytestmark = pytest.mark.docker

FILES = {
    "app.conf": {"contents": "listen 8080\n", "mode": "0644"},
    "secret.key": {"contents": "k3y\n", "mode": "0600", "owner": 1000, "group": "1001"},
    "conf.d/extra.conf": {"contents": "extra\n", "mode": "0640"},
}


def service(repository: str, files: dict[str, Any] | None = None) -> ServiceSpec:
    """A service of demo-http 1.0 with a config image, in an environment of its own."""
    pillar = {
        "dockerops": {
            "environment": "functional",
            "environment_short": f"t{secrets.token_hex(4)}",
            "services": {
                "web": {
                    "image": repository,
                    "tag": "1.0",
                    "config": {"path": "/etc/app", "mode": "image", "files": files or FILES},
                }
            },
        }
    }
    return load_service(pillar, "web")


def rendered_of(spec: ServiceSpec) -> RenderedConfig:
    assert spec.config is not None
    return render(spec.config, lambda source: "", lambda text, engine, name: text)


def storage_state(registry: Registry) -> dict[str, tuple[int, int, int]]:
    """Every file the registry stores: (inode, mtime, size). A blob or manifest
    upload, a tag written again, an upload session: each changes this."""
    root = registry.base / "storage"
    state = {}
    for path in root.rglob("*"):
        info = path.lstat()
        state[str(path.relative_to(root))] = (info.st_ino, info.st_mtime_ns, info.st_size)
    return state


def blob_state(registry: Registry) -> dict[str, tuple[int, int, int]]:
    """The storage of blobs and their links to repositories: all but manifests and tags."""
    return {k: v for k, v in storage_state(registry).items() if "/_manifests" not in k}


def registry_delete(registry: Registry, repository: str, kind: str, digest: str) -> None:
    """DELETE a manifest (and so every tag of it) or a blob link of a repository."""
    path = repository.split("/", 1)[1]
    req = urllib.request.Request(
        f"http://{registry.address}/v2/{path}/{kind}/{digest}", method="DELETE"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202


def in_container(client: docker.DockerClient, image: str, script: str) -> str:
    out = client.containers.run(image, ["/bin/sh", "-c", script], remove=True, entrypoint=[])
    return bytes(out).decode()


def test_build_once_then_present_nothing_sent(registry: Registry, demo_images: dict[str, str]):
    spec = service(demo_images["repository"])
    rendered = rendered_of(spec)

    preview = ensure_config_image(None, spec, rendered, {}, test=True)
    assert (preview.built, preview.pushed, preview.present) == (False, False, False)
    assert "would be built" in preview.comment

    first = ensure_config_image(None, spec, rendered, {})
    # The config version of an image: its files and where they go.
    assert spec.config is not None
    version = for_image(rendered, spec.config.path).version
    assert first.version == version != rendered.version
    assert first.tag == f"1.0-{spec.env_short}-{version[:12]}"
    assert first.ref == f"{demo_images['repository']}:{first.tag}"
    assert (first.built, first.pushed, first.present) == (True, True, False)
    # test=True predicted the very image (config digest and manifest digest).
    assert (first.image_id, first.digest) == (preview.image_id, preview.digest)

    before = storage_state(registry)
    second = ensure_config_image(None, spec, rendered, {})
    assert (second.built, second.pushed, second.present) == (False, False, True)
    assert (second.tag, second.image_id, second.digest) == (first.tag, first.image_id, first.digest)
    # The registry wrote nothing: no blob, no manifest, no tag link, no upload session.
    assert storage_state(registry) == before

    # build=False finds it there too.
    third = ensure_config_image(None, spec, rendered, {}, build=False)
    assert third.present and third.image_id == first.image_id


def test_rebuilt_after_deletion_is_the_same_image_and_runs(
    registry: Registry, demo_images: dict[str, str], docker_client: docker.DockerClient
):
    repository = demo_images["repository"]
    spec = service(repository)
    rendered = rendered_of(spec)
    first = ensure_config_image(None, spec, rendered, {})
    manifest = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{registry.address}/v2/{repository.split('/', 1)[1]}/manifests/{first.tag}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            ),
            timeout=10,
        ).read()
    )
    ours = [manifest["config"]["digest"], manifest["layers"][-1]["digest"]]

    # The tag gone, the blobs kept: rebuilt by tagging again, no blob sent
    # (an upload would touch the repository's _uploads and _layers).
    registry_delete(registry, repository, "manifests", first.digest)
    blobs = blob_state(registry)
    again = ensure_config_image(None, spec, rendered, {})
    assert again.built and (again.image_id, again.digest) == (first.image_id, first.digest)
    assert blob_state(registry) == blobs

    # The blobs gone from the repository too: sent again, the same image.
    registry_delete(registry, repository, "manifests", first.digest)
    for digest in ours:
        registry_delete(registry, repository, "blobs", digest)
    with pytest.raises(ConfigImageError, match=r"dockerops\.build_config_image"):
        ensure_config_image(None, spec, rendered, {}, build=False)

    again = ensure_config_image(None, spec, rendered, {})
    assert again.built and not again.present
    assert (again.image_id, again.digest) == (first.image_id, first.digest)

    pulled = docker_client.images.pull(repository, tag=first.tag)
    try:
        assert pulled.id == first.image_id
        labels = pulled.attrs["Config"]["Labels"]
        base_digest = docker_client.images.get_registry_data(demo_images["1.0"]).id
        assert labels[LABEL_BASE_NAME] == demo_images["1.0"]
        assert labels[LABEL_BASE_DIGEST] == base_digest == first.base_digest
        assert labels[LABEL_CONFIG_VERSION] == first.version
        assert labels[LABEL_VERSION] == first.tag
        # The app image's own config is kept.
        assert pulled.attrs["Config"]["Cmd"] == ["/bin/serve"]
        assert (
            pulled.attrs["Created"] == docker_client.images.get(demo_images["1.0"]).attrs["Created"]
        )

        listing = in_container(
            docker_client,
            first.ref,
            "cd /etc/app && find . | sort | while read f; do stat -c '%n %a %u %g %Y' \"$f\"; done"
            " && cat app.conf secret.key conf.d/extra.conf",
        )
        lines = listing.splitlines()
        mtime = str(LAYER_MTIME)
        assert lines[:5] == [
            f". 755 0 0 {mtime}",
            f"./app.conf 644 0 0 {mtime}",
            f"./conf.d 755 0 0 {mtime}",
            f"./conf.d/extra.conf 640 0 0 {mtime}",
            f"./secret.key 600 1000 1001 {mtime}",
        ]
        assert lines[5:] == ["listen 8080", "k3y", "extra"]
    finally:
        docker_client.images.remove(first.ref, force=True)


def test_changed_content_is_a_new_tag(demo_images: dict[str, str]):
    spec = service(demo_images["repository"])
    first = ensure_config_image(None, spec, rendered_of(spec), {})
    changed = {**FILES, "app.conf": {"contents": "listen 9090\n", "mode": "0644"}}
    other = spec.model_copy(update={"config": service("x/y", changed).config})
    second = ensure_config_image(None, other, rendered_of(other), {})
    assert second.built and second.tag != first.tag
    assert second.tag.startswith(f"1.0-{spec.env_short}-")
    assert second.image_id != first.image_id
    assert second.base_digest == first.base_digest

    # The same files at another path are another config version and tag: a
    # host that has the first tag never pulls it again.
    assert spec.config is not None
    moved = spec.model_copy(update={"config": spec.config.model_copy(update={"path": "/srv"})})
    third = ensure_config_image(None, moved, rendered_of(moved), {})
    assert third.tag != first.tag and third.built
    assert third.image_id != first.image_id


def push_as(client: docker.DockerClient, source: str, repository: str, tag: str) -> None:
    """Push the local image ``source`` as ``repository:tag`` (untagged locally after)."""
    client.images.get(source).tag(repository, tag)
    try:
        for line in client.api.push(repository, tag=tag, stream=True, decode=True):
            assert "error" not in line, line
    finally:
        client.images.remove(f"{repository}:{tag}")


def manifest_digest(registry: Registry, repository: str, tag: str) -> str:
    path = repository.split("/", 1)[1]
    req = urllib.request.Request(
        f"http://{registry.address}/v2/{path}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.headers["Docker-Content-Digest"])


def test_app_tag_pushed_again_never_overwrites_the_config_image(
    registry: Registry, demo_images: dict[str, str], docker_client: docker.DockerClient
):
    # A repository of this test's own: the app tag is pushed again below.
    repository = f"{registry.address}/t{secrets.token_hex(4)}/app"
    push_as(docker_client, demo_images["1.0"], repository, "1.0")
    spec = service(repository)
    rendered = rendered_of(spec)
    first = ensure_config_image(None, spec, rendered, {})
    assert first.built

    # Another image under the app tag: its config image would be another
    # image under the same config image tag.
    push_as(docker_client, demo_images["1.1"], repository, "1.0")
    pushed_again = manifest_digest(registry, repository, "1.0")
    assert pushed_again != first.base_digest
    before = storage_state(registry)
    for kwargs in ({}, {"test": True}, {"build": False}):
        with pytest.raises(ConfigImageError) as err:
            ensure_config_image(None, spec, rendered, {}, **kwargs)
        message = str(err.value)
        assert (
            f"the app tag 1.0 was pushed again (digest {pushed_again}, the config image "
            f"{first.ref} was built on {first.base_digest}): give the app a new tag"
        ) in message, message
    # Nothing written: the config image tag still names the first image.
    assert storage_state(registry) == before
    assert manifest_digest(registry, repository, first.tag) == first.digest


def test_manifest_list_is_refused(registry: Registry, demo_images: dict[str, str]):
    # A manifest list of the demo image, under its own tag.
    repository = demo_images["repository"]
    path = repository.split("/", 1)[1]
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    url = f"http://{registry.address}/v2/{path}/manifests"
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}/1.0", headers=accept), timeout=10
    ) as resp:
        raw = resp.read()
        digest = resp.headers["Docker-Content-Digest"]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": len(raw),
                "digest": digest,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    tag = f"multi-{secrets.token_hex(3)}"
    req = urllib.request.Request(
        f"{url}/{tag}",
        data=json.dumps(index).encode(),
        method="PUT",
        headers={"Content-Type": index["mediaType"]},
    )
    urllib.request.urlopen(req, timeout=10).close()
    spec = service(repository).model_copy(update={"tag": tag})
    with pytest.raises(RegistryError, match="manifest list") as err:
        ensure_config_image(None, spec, rendered_of(spec), {})
    assert registry.address in str(err.value) and "dockerops/demo-http" in str(err.value)


# -- a registry with Basic auth -------------------------------------------------

USER = "builder"
PASSWORD = "pw-" + secrets.token_hex(8)


def bcrypt_line(user: str, password: str) -> str:
    """An htpasswd line, bcrypt at the lowest cost (the registry checks it on
    every request): libxcrypt's through the crypt module, else htpasswd -B."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # removed in Python 3.13

        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
        if hashed and hashed.startswith("$2"):
            return f"{user}:{hashed}"
    except ImportError:
        pass
    out = subprocess.run(
        ["htpasswd", "-nbB", "-C", "4", user, password],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def serve_registry(base: Path, auth: str) -> Iterator[str]:
    """docker-registry on 127.0.0.1 with ``auth`` (its YAML flow mapping); its address."""
    address = f"127.0.0.1:{free_port()}"
    (base / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {base / 'storage'}}}}}\n"
        f"http: {{addr: '{address}'}}\n"
        f"auth: {auth}\n"
    )
    with open(base / "registry.log", "wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(base / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=2).close()
            except urllib.error.HTTPError as err:
                if err.code == 401:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((base / "registry.log").read_text()[-2000:])
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second registry, with htpasswd (Basic) auth."""
    base = tmp_path_factory.mktemp("basic-registry")
    (base / "htpasswd").write_text(bcrypt_line(USER, PASSWORD) + "\n")
    yield from serve_registry(
        base, f"{{htpasswd: {{realm: dockerops-test, path: {base / 'htpasswd'}}}}}"
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService(http.server.ThreadingHTTPServer):
    """The registry token flow's token service: Basic credentials in, a JWT
    (ES256, its certificate in ``x5c``) granting what the scopes ask out."""

    issuer = "dockerops-test"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), TokenHandler)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockerops test tokens")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .sign(self.key, hashes.SHA256())
        )
        self.asked: list[str] = []

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/token"

    def token(self, service: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": USER,
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenHandler(http.server.BaseHTTPRequestHandler):
    server: TokenService

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        given = self.headers.get("Authorization", "")
        self.server.asked.extend(query.get("scope", []))
        if given != "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode():
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps(
            {"token": self.server.token(query["service"][0], query.get("scope", []))}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bearer_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second registry, with token (Bearer) auth and its token service."""
    base = tmp_path_factory.mktemp("bearer-registry")
    tokens = TokenService()
    (base / "root.pem").write_bytes(tokens.cert.public_bytes(Encoding.PEM))
    thread = threading.Thread(target=tokens.serve_forever, daemon=True)
    thread.start()
    try:
        yield from serve_registry(
            base,
            f"{{token: {{realm: '{tokens.realm}', service: dockerops-registry, "
            f"issuer: {tokens.issuer}, rootcertbundle: {base / 'root.pem'}}}}}",
        )
    finally:
        tokens.shutdown()
        tokens.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("kind", ["basic", "bearer"])
def test_registry_with_auth(
    kind: str,
    request: pytest.FixtureRequest,
    demo_images: dict[str, str],
    docker_client: docker.DockerClient,
):
    auth_registry: str = request.getfixturevalue(f"{kind}_registry")
    auth = {"username": USER, "password": PASSWORD}
    repository = f"{auth_registry}/dockerops/demo-http"
    image = docker_client.images.get(demo_images["1.0"])
    image.tag(repository, "1.0")
    try:
        for line in docker_client.api.push(
            repository, tag="1.0", auth_config=auth, stream=True, decode=True
        ):
            assert "error" not in line, line
    finally:
        docker_client.images.remove(f"{repository}:1.0")
    spec = service(repository)
    rendered = rendered_of(spec)

    with pytest.raises(RegistryError, match="dockerops:registries:" + auth_registry):
        ensure_config_image(None, spec, rendered, {})
    wrong = "wrong-" + PASSWORD
    with pytest.raises(RegistryError) as err:
        ensure_config_image(
            None, spec, rendered, {auth_registry: RegistrySettings(username=USER, password=wrong)}
        )
    message = str(err.value)
    assert "refused" in message and USER in message and auth_registry in message
    assert PASSWORD not in message and wrong not in message

    right = {auth_registry: RegistrySettings(username=USER, password=PASSWORD)}
    built = ensure_config_image(None, spec, rendered, right)
    assert built.built and built.pushed
    again = ensure_config_image(None, spec, rendered, right)
    assert again.present and not again.pushed

    with pytest.raises(docker.errors.APIError):
        docker_client.images.pull(repository, tag=built.tag)
    pulled = docker_client.images.pull(repository, tag=built.tag, auth_config=auth)
    try:
        assert pulled.id == built.image_id
    finally:
        docker_client.images.remove(built.ref, force=True)


def test_owner_names_are_refused_before_any_request(demo_images: dict[str, str]):
    files = {"a.conf": {"contents": "x", "mode": "0644", "owner": "www-data"}}
    # The pillar is refused as it is loaded...
    with pytest.raises(SpecError, match=r"dockerops:services:web:config: .*a\.conf:owner"):
        service(demo_images["repository"], files)
    # ...and a spec that got past that (validation skipped here) by the builder.
    spec = service(demo_images["repository"])
    assert spec.config is not None
    named = spec.config.model_copy(
        update={
            "files": {
                "a.conf": spec.config.files["app.conf"].model_copy(update={"owner": "www-data"})
            }
        }
    )
    # A registry that does not exist: a request would fail differently.
    unreachable = spec.model_copy(update={"image": f"127.0.0.1:{free_port()}/x/y", "config": named})
    with pytest.raises(SpecError, match=r"dockerops:services:web:config:files:a\.conf:owner"):
        ensure_config_image(None, unreachable, rendered_of(unreachable), {})
