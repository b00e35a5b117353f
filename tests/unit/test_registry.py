"""dockerops.registry against hostile or broken registries: small HTTP servers
on 127.0.0.1 that redirect, hand out foreign URLs, ask for credentials where
they should not, or answer without end. And DockerHost.auth_config, which
finds a reference's registry as the registry client does."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from dockerops.host import DockerHost
from dockerops.registry import (
    CONFIG_BLOB_MAX,
    DOCKER_MANIFEST,
    ERROR_BODY_MAX,
    MANIFEST_MAX,
    TOKEN_MAX,
    RegistryClient,
    RegistryError,
    sha256_digest,
)
from dockerops.spec import RegistrySettings

USER = "builder"
PASSWORD = "pw-hunter2-secret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CREDS = RegistrySettings(username=USER, password=PASSWORD)
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "x", "size": 2, "digest": sha256_digest(b"{}")},
        "layers": [],
    }
).encode()
TIMEOUT = 5.0

# (status, headers, body) for a request (method, path, headers).
Answer = tuple[int, dict[str, str], bytes]
Route = Callable[[str, str, dict[str, str]], Answer]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Server:
    """An HTTP server on 127.0.0.1: ``route`` answers, ``seen`` records."""

    route: Route = field(default=lambda method, path, headers: (404, {}, b""))
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            headers = {k: v for k, v in self.headers.items()}
            server.seen.append(Seen(self.command, self.path, headers))
            status, out_headers, body = server.route(self.command, self.path, headers)
            self.send_response(status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_PUT = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def servers() -> Iterator[Callable[[], Server]]:
    """Starts servers on demand; all stopped at the end of the test."""
    running: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start() -> Server:
        server = Server()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
        httpd.daemon_threads = True
        server.port = httpd.server_address[1]
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((httpd, thread))
        return server

    yield start
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def client(server: Server, settings: RegistrySettings | None = None) -> RegistryClient:
    return RegistryClient(server.address, "team/web", settings, push=True, timeout=TIMEOUT)


def bearer(realm: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'}


# -- 1. nothing but http(s) is opened ----------------------------------------------------


def test_opener_opens_no_file_ftp_or_data_urls(servers: Callable[[], Server]):
    opener = client(servers())._opener
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "data:,root"):
        with pytest.raises(urllib.error.URLError, match="unknown url type"):
            opener.open(url, timeout=TIMEOUT)


def test_file_realm_is_refused_and_nothing_local_is_quoted(servers: Callable[[], Server]):
    registry = servers()
    registry.route = lambda method, path, headers: (401, bearer("file:///etc/passwd#"), b"")
    with pytest.raises(RegistryError) as err:
        client(registry, CREDS).manifest("1.0")
    message = str(err.value)
    assert "refusing the token realm file://" in message
    assert "root:" not in message and PASSWORD not in message


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "ftp://127.0.0.1:{port}/x", "http://0.0.0.0:{port}/x"],
)
def test_redirect_to_another_scheme_or_plain_foreign_host_is_refused(
    servers: Callable[[], Server], location: str
):
    registry = servers()
    location = location.format(port=registry.port)
    registry.route = lambda method, path, headers: (
        (302, {"Location": location}, b"") if path.startswith("/v2/") else (200, {}, b"root:x")
    )
    with pytest.raises(RegistryError, match=r"refusing a redirect to (file|ftp|http)://") as err:
        client(registry).manifest("1.0")
    assert "root:" not in str(err.value)
    assert len(registry.seen) == 1


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/up", "http://0.0.0.0:{port}/up"]
)
def test_upload_location_of_another_scheme_or_plain_foreign_host_is_refused(
    servers: Callable[[], Server], location: str
):
    registry = servers()
    location = location.format(port=registry.port)

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if method == "POST":
            return 202, {"Location": location}, b""
        return 404, {}, b""

    registry.route = route
    with pytest.raises(RegistryError, match="refusing") as err:
        client(registry, CREDS).upload_blob(b"blob")
    assert "root:" not in str(err.value)
    assert [s.method for s in registry.seen] == ["HEAD", "POST"]


# -- 2. credentials go to the registry alone ---------------------------------------------


def test_authorization_is_not_sent_to_an_upload_location_elsewhere(
    servers: Callable[[], Server],
):
    registry, storage = servers(), servers()

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="reg"'}, b""
        if method == "POST":
            return 202, {"Location": f"{storage.url}/bucket/upload?sig=1"}, b""
        return 404, {}, b""

    registry.route = route
    storage.route = lambda method, path, headers: (201, {}, b"")
    assert client(registry, CREDS).upload_blob(b"blob") is True
    assert [s.method for s in storage.seen] == ["PUT"]
    assert "Authorization" not in storage.seen[0].headers
    assert storage.seen[0].path.startswith("/bucket/upload?sig=1&digest=sha256%3A")


def test_upload_location_on_the_registry_gets_the_credentials(servers: Callable[[], Server]):
    registry = servers()

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != BASIC:
            return 401, {"WWW-Authenticate": 'Basic realm="reg"'}, b""
        if method == "POST":
            return 202, {"Location": f"{registry.url}/v2/team/web/blobs/uploads/u1"}, b""
        if method == "PUT":
            return 201, {}, b""
        return 404, {}, b""

    registry.route = route
    assert client(registry, CREDS).upload_blob(b"blob") is True
    put = [s for s in registry.seen if s.method == "PUT"]
    assert len(put) == 1 and put[0].headers["Authorization"] == BASIC


def test_plain_http_realm_on_a_non_loopback_host_gets_no_password(
    servers: Callable[[], Server],
):
    registry, tokens = servers(), servers()
    # 0.0.0.0 reaches this host, but is no loopback address: a stand-in for
    # a plain-http token service elsewhere.
    realm = f"http://0.0.0.0:{tokens.port}/token"
    registry.route = lambda method, path, headers: (401, bearer(realm), b"")
    tokens.route = lambda method, path, headers: (200, {}, b'{"token": "t"}')
    with pytest.raises(RegistryError, match=r"refusing the token realm http://0\.0\.0\.0") as err:
        client(registry, CREDS).manifest("1.0")
    assert tokens.seen == []
    assert PASSWORD not in str(err.value)


def test_a_challenge_after_a_redirect_elsewhere_is_not_answered(
    servers: Callable[[], Server],
):
    registry, foreign = servers(), servers()
    registry.route = lambda method, path, headers: (
        307,
        {"Location": f"{foreign.url}/elsewhere"},
        b"",
    )

    def foreign_route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/token"):
            return 200, {}, b'{"token": "t"}'
        return 401, bearer(f"{foreign.url}/token"), b""

    foreign.route = foreign_route
    with pytest.raises(RegistryError, match=f"HTTP 401 from {foreign.url}"):
        client(registry, CREDS).blob(sha256_digest(b"x"))
    assert [s.path for s in foreign.seen] == ["/elsewhere"]
    assert all("Authorization" not in s.headers for s in foreign.seen)


def test_bearer_flow_with_a_loopback_token_service_works(servers: Callable[[], Server]):
    registry, tokens = servers(), servers()

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != "Bearer t0k":
            return 401, bearer(f"{tokens.url}/token"), b""
        return 200, {"Content-Type": DOCKER_MANIFEST}, MANIFEST

    registry.route = route
    tokens.route = lambda method, path, headers: (
        (200, {}, b'{"token": "t0k"}') if headers.get("Authorization") == BASIC else (401, {}, b"")
    )
    manifest = client(registry, CREDS).manifest("1.0")
    assert manifest is not None and manifest.raw == MANIFEST
    assert len(tokens.seen) == 1 and "scope=repository%3Ateam%2Fweb%3Apull%2Cpush" in (
        tokens.seen[0].path
    )


@pytest.mark.parametrize(
    ("registry", "settings", "url", "allowed"),
    [
        # Docker Hub's token service is another https host.
        ("docker.io", None, "https://auth.docker.io/token", True),
        ("docker.io", None, "http://auth.docker.io/token", False),
        ("reg.example.com", None, "https://s3.example.net/b?sig=1", True),
        ("reg.example.com", None, "http://reg.example.com/x", False),
        ("reg.example.com", None, "http://127.0.0.1:5001/token", False),
        ("reg.example.com", RegistrySettings(insecure=True), "http://reg.example.com:5001/t", True),
        ("reg.example.com", RegistrySettings(insecure=True), "http://other.example.com/t", False),
        ("127.0.0.1:5000", None, "http://127.0.0.1:5001/token", True),
        ("127.0.0.1:5000", None, "http://[::1]:5001/token", True),
        ("127.0.0.1:5000", None, "http://10.0.0.1/token", False),
        ("127.0.0.1:5000", None, "file:///etc/passwd", False),
        ("127.0.0.1:5000", None, "data:,x", False),
        ("127.0.0.1:5000", None, "/relative", False),
        ("127.0.0.1:5000", None, "http://127.0.0.1:x/", False),
    ],
)
def test_which_urls_a_registry_may_hand_out(
    registry: str, settings: RegistrySettings | None, url: str, allowed: bool
):
    refusal = RegistryClient(registry, "a", settings)._refusal(url)
    assert (refusal is None) is allowed, refusal


# -- 3. bounded reads ----------------------------------------------------------------------


@pytest.mark.parametrize("fits", [True, False])
def test_manifest_larger_than_the_cap_is_refused(servers: Callable[[], Server], fits: bool):
    registry = servers()
    padded = MANIFEST[:-1] + b" " * (MANIFEST_MAX - len(MANIFEST) + (0 if fits else 1)) + b"}"
    registry.route = lambda method, path, headers: (200, {"Content-Type": DOCKER_MANIFEST}, padded)
    if fits:
        manifest = client(registry).manifest("1.0")
        assert manifest is not None and len(manifest.raw) == MANIFEST_MAX
    else:
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            client(registry).manifest("1.0")


def test_config_blob_larger_than_the_cap_is_refused(servers: Callable[[], Server]):
    registry = servers()
    big = b"x" * (CONFIG_BLOB_MAX + 1)
    registry.route = lambda method, path, headers: (200, {}, big)
    with pytest.raises(RegistryError, match="larger than 8 MiB"):
        client(registry).blob(sha256_digest(big))


def test_token_answer_larger_than_the_cap_is_refused(servers: Callable[[], Server]):
    registry, tokens = servers(), servers()
    registry.route = lambda method, path, headers: (401, bearer(f"{tokens.url}/token"), b"")
    answer = b'{"token": "' + b"t" * TOKEN_MAX + b'"}'
    tokens.route = lambda method, path, headers: (200, {}, answer)
    with pytest.raises(RegistryError, match=r"token service .* larger than 1 MiB"):
        client(registry, CREDS).manifest("1.0")


def test_error_body_is_capped_and_a_small_one_quoted(servers: Callable[[], Server]):
    registry = servers()
    body = json.dumps({"errors": [{"code": "DENIED", "message": "no"}]}).encode()
    registry.route = lambda method, path, headers: (500, {}, body)
    with pytest.raises(RegistryError, match="HTTP 500: DENIED: no"):
        client(registry).manifest("1.0")
    registry.route = lambda method, path, headers: (500, {}, b"e" * (ERROR_BODY_MAX + 1))
    with pytest.raises(RegistryError, match="larger than 64 KiB"):
        client(registry).manifest("1.0")


# -- 5. DockerHost.auth_config ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "key"),
    [
        ("org/app:1.0", "docker.io"),
        ("org/app:1.0", "index.docker.io"),
        ("nginx:1.27", "registry-1.docker.io"),
        ("reg.example.com:5000/org/app:1.0", "reg.example.com:5000"),
        ("localhost/app:1", "localhost"),
    ],
)
def test_auth_config_finds_the_registry_as_docker_does(ref: str, key: str):
    host = DockerHost(SimpleNamespace(api=None))  # type: ignore[arg-type]
    host.registries = {key: CREDS, "org": RegistrySettings(username="wrong", password="wrong")}
    assert host.auth_config(ref) == {"username": USER, "password": PASSWORD}


def test_auth_config_none_without_credentials():
    host = DockerHost(SimpleNamespace(api=None))  # type: ignore[arg-type]
    host.registries = {"org": CREDS, "reg.example.com": RegistrySettings(insecure=True)}
    assert host.auth_config("org/app:1.0") is None
    assert host.auth_config("reg.example.com/app:1.0") is None
